/* The explicit design's inline is-attached check (tsa_is_attached_inline,
 * static inline in tstate_activate.h) used from C: 1 exactly while a
 * thread state of that interpreter is active on the calling thread, 0
 * otherwise (before, after, for another interpreter). Built twice by
 * conformance/tests/c_programs.rs: on the model, and as an embedder of
 * CPython, where it also checks that a thread state detached behind the
 * library's back (PyEval_SaveThread) is not reported attached. Every
 * scenario runs on a native thread. */
#if defined(__has_include)
#if __has_include(<Python.h>)
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define ON_CPYTHON 1
#endif
#endif
#include "check.h"
#include "tstate_activate.h"

TSTATE_HELPERS(tsa)

static uint64_t m;

static void *attached(void *arg) {
    (void)arg;
    TSA_ThreadState *ts = NULL;
    CHECK_EQ(tsa_is_attached_inline(0), 0); /* the closed block's open is 0 */
    CHECK_EQ(tsa_is_attached_inline(m), 0);
    CHECK_EQ(tsa_new(m, &ts), 0);
    CHECK_EQ(tsa_is_attached_inline(m), 0); /* created, not active */
    CHECK_EQ(tsa_activate(ts), 0);
    CHECK_EQ(tsa_inline_state()->open, m);
    CHECK_EQ(tsa_is_attached_inline(m), 1);
    CHECK_EQ(tsa_is_attached_inline(m + 1), 0); /* another id */
    CHECK_EQ(tsa_is_attached_inline(0), 0);
#ifdef ON_CPYTHON
    CHECK(PyGILState_Check());
#endif
    CHECK_EQ(tsa_deactivate(ts), 0);
    CHECK_EQ(tsa_is_attached_inline(m), 0);
    CHECK_EQ(tsa_delete(ts), 0);
    CHECK_EQ(tsa_is_attached_inline(m), 0);
    return NULL;
}

#ifdef ON_CPYTHON
static void *external_detach(void *arg) {
    (void)arg;
    TSA_ThreadState *ts = NULL;
    CHECK_EQ(tsa_new(m, &ts), 0);
    CHECK_EQ(tsa_activate(ts), 0);
    CHECK_EQ(tsa_is_attached_inline(m), 1);
    PyThreadState *py = PyEval_SaveThread(); /* behind the library's back */
    CHECK(tsa_inline_state()->open == m);    /* the block cannot know ... */
    CHECK_EQ(tsa_is_attached_inline(m), 0);  /* ... but must not say so */
    PyEval_RestoreThread(py);
    CHECK_EQ(tsa_is_attached_inline(m), 1);
    CHECK_EQ(tsa_deactivate(ts), 0);
    CHECK_EQ(tsa_delete(ts), 0);
    return NULL;
}
#endif

#define ON_THREAD(fn)                                                          \
    static void scenario_##fn(void) { run_on_native_thread(fn, NULL); }
ON_THREAD(attached)
#ifdef ON_CPYTHON
ON_THREAD(external_detach)
#endif

int main(int argc, char **argv) {
    static const scenario list[] = {
        {"attached", scenario_attached},
#ifdef ON_CPYTHON
        {"external_detach", scenario_external_detach},
#endif
    };
    int n = (int)(sizeof list / sizeof list[0]);
    (void)new_interp; /* the harness's helpers this program does not need */
    (void)work_count;
    (void)is_attached_anywhere;
#ifdef ON_CPYTHON
    Py_InitializeEx(0);
#endif
    CHECK_EQ(tsa_initialize(), 0);
    m = main_interp();
#ifdef ON_CPYTHON
    PyThreadState *main_ts = PyEval_SaveThread(); /* native threads attach */
#endif
    int rc = run_scenario(list, n, argc, argv);
#ifdef ON_CPYTHON
    PyEval_RestoreThread(main_ts);
    if (Py_FinalizeEx() < 0)
        rc = 1;
#endif
    return rc;
}
