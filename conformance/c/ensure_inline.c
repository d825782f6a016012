/* The ensure design's inline nested path (tse_ensure_inline,
 * tse_ensure_ex_inline, tse_release_inline: static inline in
 * tstate_ensure.h) used from C: nested
 * spans are counted in the thread's inline block, a library call inside
 * turns them into frames, nesting past the block's limit goes to the
 * library, misuse is reported as by tse_release, thread exit closes counted
 * spans. Built twice by conformance/tests/c_programs.rs: on the model (no
 * Python.h on the include path) and as an embedder of CPython, where it
 * also checks that a thread state detached behind the library's back
 * (PyEval_SaveThread) is never counted as attached. Every scenario runs on
 * a native thread. */
#include "dual_main.h"
#include "tstate_ensure.h"

TSTATE_HELPERS(tse)

static uint64_t m;

/* The calling thread holds the GIL (CPython) / is attached (both). */
static int attached(void) {
#ifdef ON_CPYTHON
    return PyGILState_Check() && tse_is_attached(m) == 1;
#else
    return tse_is_attached(m) == 1;
#endif
}

static void *nested(void *arg) {
    (void)arg;
    TSE_InlineState *b = tse_inline_state();
    CHECK(b != NULL);
    CHECK_EQ(b->open, 0); /* closed before the thread's first call */
    CHECK_EQ(tse_ensure_inline(m, NULL), 0); /* not attached: the library */
    CHECK_EQ(b->open, m);                    /* opened by the call's end */
    CHECK(b->limit >= 2);
#ifdef ON_CPYTHON
    CHECK(b->current != NULL); /* CPython: checked on every inline call */
#else
    CHECK(b->current == NULL); /* the model: nothing switches behind it */
#endif
    CHECK_EQ(tse_ensure_inline(m, NULL), 0);
    CHECK_EQ(b->depth, 1);
    CHECK_EQ(tse_ensure_inline(m, NULL), 0);
    CHECK_EQ(b->depth, 2);
    /* the {code, message} variant counts the same way ... */
    TSE_Error err = {0, NULL};
    CHECK_EQ(tse_ensure_ex_inline(m, &err), 0);
    CHECK_EQ(b->depth, 3);
    /* ... and a refusal gives its code, with nothing counted */
    CHECK_EQ(tse_ensure_ex_inline(0, &err), TSE_ERR_NO_SUCH_INTERPRETER);
    CHECK_EQ(err.code, TSE_ERR_NO_SUCH_INTERPRETER);
    CHECK(err.message != NULL);
    CHECK_EQ(b->depth, 0); /* that library call made the counted spans frames */
    CHECK(attached());
#ifdef ON_CPYTHON
    CHECK_EQ(PyRun_SimpleString("x = sum(range(10))"), 0);
#endif
    tse_release_inline();
    tse_release_inline();
    tse_release_inline();
    CHECK_EQ(b->depth, 0);
    CHECK(attached()); /* the outer span */
    tse_release_inline();
    CHECK(!is_attached_anywhere());
    CHECK_EQ(b->open, 0);
    return NULL;
}

static void *library_call_inside(void *arg) {
    (void)arg;
    TSE_InlineState *b = tse_inline_state();
    CHECK_EQ(tse_ensure_inline(m, NULL), 0);
    CHECK_EQ(tse_ensure_inline(m, NULL), 0);
    CHECK_EQ(tse_ensure_inline(m, NULL), 0);
    CHECK_EQ(b->depth, 2);
    CHECK_EQ(tse_work(m, NULL), 0); /* a library call: the spans are frames */
    CHECK_EQ(b->depth, 0);
    CHECK_EQ(b->open, m);
    tse_release_inline(); /* frames now: through the library */
    CHECK(attached());
    tse_release_inline();
    CHECK(attached());
    tse_release_inline();
    CHECK(!is_attached_anywhere());
    return NULL;
}

static void *past_the_limit(void *arg) {
    (void)arg;
    TSE_InlineState *b = tse_inline_state();
    CHECK_EQ(tse_ensure_inline(m, NULL), 0);
    uint32_t n = b->limit + 20;
    for (uint32_t i = 0; i < n; i++)
        CHECK_EQ(tse_ensure_inline(m, NULL), 0);
    for (uint32_t i = 0; i < n; i++) {
        tse_release_inline();
        CHECK(attached());
    }
    tse_release_inline();
    CHECK(!is_attached_anywhere());
    return NULL;
}

static int hook_code;
static void record(int code, const char *message) {
    (void)message;
    hook_code = code;
}

static void *misuse(void *arg) {
    (void)arg;
    uint64_t saved = 0;
    TSE_FatalHook old = tse_set_fatal_hook(record);
    tse_release_inline(); /* nothing ensured */
    CHECK_EQ(hook_code, TSE_ERR_NOT_ATTACHED);
    hook_code = 0;
    CHECK_EQ(tse_ensure_inline(m, NULL), 0);
    CHECK_EQ(tse_ensure_inline(m, NULL), 0); /* counted */
    CHECK_EQ(tse_save_thread(&saved), 0);
    tse_release_inline(); /* a save inside the span is still open */
    CHECK_EQ(hook_code, TSE_ERR_OUT_OF_ORDER);
    CHECK_EQ(tse_restore_thread(saved), 0);
    tse_release_inline();
    tse_release_inline();
    CHECK(!is_attached_anywhere());
    tse_set_fatal_hook(old);
    return NULL;
}

static void *exits_holding(void *arg) {
    (void)arg;
    CHECK_EQ(tse_ensure_inline(m, NULL), 0);
    CHECK_EQ(tse_ensure_inline(m, NULL), 0);
    CHECK_EQ(tse_ensure_inline(m, NULL), 0);
    CHECK_EQ(tse_inline_state()->depth, 2);
    return NULL; /* three spans open, two counted in the block */
}

static void *thread_exit(void *arg) {
    (void)arg;
    TSE_Diagnostics d0, d1;
    CHECK_EQ(tse_diagnostics(&d0), 0);
    run_on_native_thread(exits_holding, NULL);
    CHECK_EQ(tse_diagnostics(&d1), 0);
    CHECK_EQ(d1.exit_spans_closed - d0.exit_spans_closed, 3);
    return NULL;
}

#ifdef ON_CPYTHON
static void *external_detach(void *arg) {
    (void)arg;
    TSE_InlineState *b = tse_inline_state();
    CHECK_EQ(tse_ensure_inline(m, NULL), 0);
    CHECK_EQ(tse_ensure_inline(m, NULL), 0);
    PyThreadState *ts = PyEval_SaveThread(); /* behind the library's back */
    CHECK(!PyGILState_Check());
    CHECK(b->open == m); /* the block cannot know ... */
    CHECK_EQ(tse_ensure_inline(m, NULL), 0); /* ... but must not count it */
    CHECK(PyGILState_Check());
    CHECK_EQ(PyRun_SimpleString("y = sum(range(10))"), 0);
    tse_release_inline(); /* back to what it found: detached */
    CHECK(!PyGILState_Check());
    /* again in the same nogil block: the library's record now agrees that
       nothing is attached (the re-attach fast path) */
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(tse_ensure_inline(m, NULL), 0);
        CHECK(PyGILState_Check());
        CHECK(PyThreadState_Get() == ts);
        CHECK_EQ(PyRun_SimpleString("y = sum(range(10))"), 0);
        tse_release_inline();
        CHECK(!PyGILState_Check());
    }
    PyEval_RestoreThread(ts);
    CHECK(PyGILState_Check());
    tse_release_inline();
    tse_release_inline();
    CHECK(!is_attached_anywhere());
    return NULL;
}
#endif

TSTATE_ON_THREAD(nested)
TSTATE_ON_THREAD(library_call_inside)
TSTATE_ON_THREAD(past_the_limit)
TSTATE_ON_THREAD(misuse)
TSTATE_ON_THREAD(thread_exit)
#ifdef ON_CPYTHON
TSTATE_ON_THREAD(external_detach)
#endif

static const scenario list[] = {
    {"nested", scenario_nested},
    {"library_call_inside", scenario_library_call_inside},
    {"past_the_limit", scenario_past_the_limit},
    {"misuse", scenario_misuse},
    {"thread_exit", scenario_thread_exit},
#ifdef ON_CPYTHON
    {"external_detach", scenario_external_detach},
#endif
};

TSTATE_DUAL_MAIN(tse, list)
