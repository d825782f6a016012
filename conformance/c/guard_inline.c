/* The guard design's inline nested path (tsg_ensure_inline /
 * tsg_release_inline, static inline in tstate_guard.h) used from C: under
 * the guard the thread used last, nested spans are counted with tokens of
 * their own, released in order only; closing any guard of the library (on
 * another thread: no call on this one) stops the block from counting under
 * its cached guard, and an ensure under the closed guard is refused by the
 * library; another guard, an out-of-order, stale or forged token goes to
 * the library, which reports it with nothing changed; tsg_last_error()
 * reads 0 after each inline success. Built twice by
 * conformance/tests/c_programs.rs: on the model, and as an embedder of
 * CPython, where it also checks that a thread state detached behind the
 * library's back (PyEval_SaveThread) is never counted as attached. Every
 * scenario runs on a native thread. */
#include "dual_main.h"
#include "tstate_guard.h"

TSTATE_HELPERS(tsg)

static uint64_t m;

static int attached(void) {
#ifdef ON_CPYTHON
    return PyGILState_Check() && tsg_is_attached(m) == 1;
#else
    return tsg_is_attached(m) == 1;
#endif
}

static TSG_Guard *main_guard(void) {
    TSG_View *v = tsg_view_from_interpreter(m);
    CHECK(v != NULL);
    TSG_Guard *g = tsg_guard_from_view(v);
    CHECK(g != NULL);
    tsg_view_close(v);
    return g;
}

static void *nested(void *arg) {
    (void)arg;
    TSG_InlineState *b = tsg_inline_state();
    CHECK(b != NULL);
    TSG_Guard *g = main_guard();
    TSG_Token *outer = tsg_ensure_inline(g); /* not attached: the library */
    CHECK(outer != NULL);
    CHECK_EQ(b->open, m);
    CHECK_EQ(b->guard, (uint64_t)(uintptr_t)g); /* cached by the library */
    CHECK(b->tag_bits != 0);
    b->last_error = -99; /* so that the inline success is seen writing 0 */
    TSG_Token *t1 = tsg_ensure_inline(g);
    CHECK_EQ(tsg_last_error(), 0);
    TSG_Token *t2 = tsg_ensure_inline(g);
    CHECK(t1 != NULL && t2 != NULL && t1 != t2 && t1 != outer && t2 != outer);
    CHECK_EQ(b->depth, 2);
    CHECK(attached());
#ifdef ON_CPYTHON
    CHECK_EQ(PyRun_SimpleString("x = sum(range(10))"), 0);
#endif
    b->last_error = -99;
    tsg_release_inline(t2);
    CHECK_EQ(tsg_last_error(), 0);
    CHECK_EQ(b->depth, 1);
    tsg_release_inline(t1);
    CHECK_EQ(b->depth, 0);
    CHECK(attached());
    tsg_release_inline(outer);
    CHECK(!is_attached_anywhere());
    CHECK_EQ(b->open, 0);
    CHECK_EQ(b->guard, 0);
    tsg_guard_close(g);
    return NULL;
}

static int hook_code;
static void record(int code, const char *message) {
    (void)message;
    hook_code = code;
}

static void *misuse(void *arg) {
    (void)arg;
    TSG_FatalHook old = tsg_set_fatal_hook(record);
    TSG_InlineState *b = tsg_inline_state();
    TSG_Guard *g = main_guard();
    TSG_Token *outer = tsg_ensure_inline(g);
    TSG_Token *t1 = tsg_ensure_inline(g);
    TSG_Token *t2 = tsg_ensure_inline(g);
    CHECK_EQ(b->depth, 2);
    hook_code = 0;
    tsg_release_inline(t1); /* not the innermost: the library reports it */
    CHECK_EQ(hook_code, TSG_ERR_OUT_OF_ORDER);
    CHECK_EQ(tsg_last_error(), TSG_ERR_OUT_OF_ORDER);
    CHECK(attached());
    tsg_release_inline(t2);
    hook_code = 0;
    tsg_release_inline(t2); /* stale */
    CHECK_EQ(hook_code, TSG_ERR_INVALID_HANDLE);
    hook_code = 0;
    tsg_release_inline((TSG_Token *)(uintptr_t)0x7FFFFFFF); /* forged */
    CHECK_EQ(hook_code, TSG_ERR_INVALID_HANDLE);
    hook_code = 0;
    tsg_release_inline((TSG_Token *)(uintptr_t)0x100000000ull); /* forged, wide */
    CHECK_EQ(hook_code, TSG_ERR_INVALID_HANDLE);
    CHECK(tsg_ensure_inline(NULL) == NULL);
    CHECK_EQ(tsg_last_error(), TSG_ERR_INVALID_ARGUMENT);
    tsg_release_inline(t1);
    tsg_release_inline(outer);
    CHECK(!is_attached_anywhere());
    tsg_guard_close(g);
    tsg_set_fatal_hook(old);
    return NULL;
}

/* Closes the guard it is given (another thread: no call on the thread that
 * keeps the block open). */
static void *close_it(void *arg) {
    tsg_guard_close((TSG_Guard *)arg);
    return NULL;
}

static void *a_close_elsewhere_stops_the_cache(void *arg) {
    (void)arg;
    TSG_InlineState *b = tsg_inline_state();
    TSG_Guard *g = main_guard();
    TSG_Guard *other = main_guard();
    TSG_Token *outer = tsg_ensure_inline(g);
    CHECK_EQ(b->guard, (uint64_t)(uintptr_t)g);
    /* another guard closed: the block no longer trusts its lookup */
    run_on_native_thread(close_it, other);
    CHECK_EQ(b->guard, (uint64_t)(uintptr_t)g); /* unchanged: no call here */
    TSG_Token *t1 = tsg_ensure_inline(g); /* the library looks g up again */
    CHECK(t1 != NULL);
    tsg_release_inline(t1);
    /* the guard itself closed: refused, nothing counted */
    run_on_native_thread(close_it, g);
    CHECK(tsg_ensure_inline(g) == NULL);
    CHECK_EQ(tsg_last_error(), TSG_ERR_INVALID_HANDLE);
    CHECK_EQ(b->depth, 0);
    CHECK(attached());
    tsg_release_inline(outer); /* a daemon's span now: still released */
    CHECK(!is_attached_anywhere());
    return NULL;
}

static void *library_call_inside(void *arg) {
    (void)arg;
    TSG_InlineState *b = tsg_inline_state();
    TSG_Guard *g = main_guard();
    TSG_Token *outer = tsg_ensure_inline(g);
    TSG_Token *t1 = tsg_ensure_inline(g);
    TSG_Token *t2 = tsg_ensure_inline(g);
    CHECK_EQ(tsg_work(m, NULL), 0); /* a library call: the spans are frames */
    CHECK_EQ(b->depth, 0);
    CHECK_EQ(b->guard, (uint64_t)(uintptr_t)g); /* reopened with the cache */
    TSG_Token *t3 = tsg_ensure_inline(g); /* numbered on from t2 */
    CHECK_EQ(b->depth, 1);
    CHECK(t3 != NULL && t3 != t1 && t3 != t2 && t3 != outer);
    tsg_release_inline(t3);
    tsg_release_inline(t2);
    tsg_release_inline(t1);
    tsg_release_inline(outer);
    CHECK(!is_attached_anywhere());
    tsg_guard_close(g);
    return NULL;
}

static void *another_interpreter(void *arg) {
    (void)arg;
    TSG_InlineState *b = tsg_inline_state();
    uint64_t sub = new_interp(TSG_LOCK_SHARED_WITH_MAIN);
    TSG_View *v = tsg_view_from_interpreter(sub);
    TSG_Guard *gs = tsg_guard_from_view(v);
    CHECK(gs != NULL);
    TSG_Guard *g = main_guard();
    TSG_Token *outer = tsg_ensure_inline(g);
    TSG_Token *ts = tsg_ensure_inline(gs); /* not the cached guard: the library */
    CHECK(ts != NULL);
    CHECK_EQ(b->depth, 0);
    CHECK_EQ(b->open, sub);
    CHECK_EQ(b->guard, (uint64_t)(uintptr_t)gs);
    TSG_Token *tm = tsg_ensure_inline(g); /* main again: the library */
    CHECK_EQ(b->depth, 0);
    CHECK(attached());
    tsg_release_inline(tm);
    CHECK_EQ(tsg_is_attached(sub), 1);
    tsg_release_inline(ts);
    CHECK(attached());
    tsg_release_inline(outer);
    CHECK(!is_attached_anywhere());
    tsg_guard_close(gs);
    tsg_guard_close(g);
    tsg_view_close(v);
    CHECK_EQ(tsg_finalize(sub, 5000), 0);
    return NULL;
}

#ifdef ON_CPYTHON
static void *external_detach(void *arg) {
    (void)arg;
    TSG_InlineState *b = tsg_inline_state();
    TSG_Guard *g = main_guard();
    TSG_Token *outer = tsg_ensure_inline(g);
    TSG_Token *t1 = tsg_ensure_inline(g);
    PyThreadState *ts = PyEval_SaveThread(); /* behind the library's back */
    CHECK(!PyGILState_Check());
    CHECK(b->open == m);
    TSG_Token *t2 = tsg_ensure_inline(g); /* must not be counted */
    CHECK(t2 != NULL);
    CHECK(PyGILState_Check());
    CHECK_EQ(PyRun_SimpleString("y = sum(range(10))"), 0);
    tsg_release_inline(t2);
    CHECK(!PyGILState_Check());
    PyEval_RestoreThread(ts);
    tsg_release_inline(t1);
    tsg_release_inline(outer);
    CHECK(!is_attached_anywhere());
    tsg_guard_close(g);
    return NULL;
}
#endif

TSTATE_ON_THREAD(nested)
TSTATE_ON_THREAD(misuse)
TSTATE_ON_THREAD(a_close_elsewhere_stops_the_cache)
TSTATE_ON_THREAD(library_call_inside)
TSTATE_ON_THREAD(another_interpreter)
#ifdef ON_CPYTHON
TSTATE_ON_THREAD(external_detach)
#endif

static const scenario list[] = {
    {"nested", scenario_nested},
    {"misuse", scenario_misuse},
    {"a_close_elsewhere_stops_the_cache", scenario_a_close_elsewhere_stops_the_cache},
    {"library_call_inside", scenario_library_call_inside},
    {"another_interpreter", scenario_another_interpreter},
#ifdef ON_CPYTHON
    {"external_detach", scenario_external_detach},
#endif
};

TSTATE_DUAL_MAIN(tsg, list)
