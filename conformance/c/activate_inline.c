/* The explicit design's inline is-attached check (tsa_is_attached_inline,
 * static inline in tstate_activate.h) used from C: 1 exactly while a
 * thread state of that interpreter is active on the calling thread, 0
 * otherwise (before, after, for another interpreter). Built twice by
 * conformance/tests/c_programs.rs: on the model, and as an embedder of
 * CPython, where it also checks that a thread state detached behind the
 * library's back (PyEval_SaveThread) is not reported attached. Every
 * scenario runs on a native thread. */
#include "dual_main.h"
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

TSTATE_ON_THREAD(attached)
#ifdef ON_CPYTHON
TSTATE_ON_THREAD(external_detach)
#endif

static const scenario list[] = {
    {"attached", scenario_attached},
#ifdef ON_CPYTHON
    {"external_detach", scenario_external_detach},
#endif
};

TSTATE_DUAL_MAIN(tsa, list)
