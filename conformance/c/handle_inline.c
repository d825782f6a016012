/* The handle design's inline nested path (tsh_ensure_inline /
 * tsh_release_inline, static inline in tstate_handle.h) used from C: the
 * spans it counts get handles of their own, released in order only; an
 * out-of-order, stale or foreign release goes to the library, which
 * refuses it with nothing changed; a library call inside turns the counted
 * spans into frames that accept the same handles. Built twice by
 * conformance/tests/c_programs.rs: on the model, and as an embedder of
 * CPython, where it also checks that a thread state detached behind the
 * library's back (PyEval_SaveThread) is never counted as attached. Every
 * scenario runs on a native thread. */
#include "dual_main.h"
#include "tstate_handle.h"

TSTATE_HELPERS(tsh)

static uint64_t m;

static int attached(void) {
#ifdef ON_CPYTHON
    return PyGILState_Check() && tsh_is_attached(m) == 1;
#else
    return tsh_is_attached(m) == 1;
#endif
}

static void *nested(void *arg) {
    (void)arg;
    TSH_InlineState *b = tsh_inline_state();
    CHECK(b != NULL);
    int outer = tsh_ensure_inline(m, NULL); /* not attached: the library */
    CHECK(outer > 0);
    CHECK_EQ(b->open, m);
    CHECK(b->tag_bits != 0);
    int h1 = tsh_ensure_inline(m, NULL);
    int h2 = tsh_ensure_inline(m, NULL);
    CHECK(h1 > 0 && h2 > 0 && h1 != h2 && h1 != outer && h2 != outer);
    CHECK_EQ(b->depth, 2);
    CHECK(attached());
#ifdef ON_CPYTHON
    CHECK_EQ(PyRun_SimpleString("x = sum(range(10))"), 0);
#endif
    CHECK_EQ(tsh_release_inline(h2), 0);
    CHECK_EQ(b->depth, 1);
    CHECK_EQ(tsh_release_inline(h2), TSH_ERR_INVALID_HANDLE); /* stale */
    CHECK_EQ(tsh_release_inline(-3), TSH_ERR_INVALID_HANDLE); /* forged */
    CHECK_EQ(tsh_release_inline(h1), 0); /* a frame by now: the library */
    CHECK(attached());
    CHECK_EQ(tsh_release_inline(outer), 0);
    CHECK(!is_attached_anywhere());
    CHECK_EQ(b->open, 0);
    return NULL;
}

static void *out_of_order(void *arg) {
    (void)arg;
    TSH_InlineState *b = tsh_inline_state();
    int outer = tsh_ensure_inline(m, NULL);
    int h1 = tsh_ensure_inline(m, NULL);
    int h2 = tsh_ensure_inline(m, NULL);
    CHECK_EQ(b->depth, 2);
    CHECK_EQ(tsh_release_inline(h1), TSH_ERR_OUT_OF_ORDER);
    CHECK_EQ(tsh_release_inline(outer), TSH_ERR_OUT_OF_ORDER);
    CHECK(attached());
    CHECK_EQ(tsh_release_inline(h2), 0);
    CHECK_EQ(tsh_release_inline(h1), 0);
    CHECK_EQ(tsh_release_inline(outer), 0);
    CHECK(!is_attached_anywhere());
    return NULL;
}

static void *library_call_inside(void *arg) {
    (void)arg;
    TSH_InlineState *b = tsh_inline_state();
    int outer = tsh_ensure_inline(m, NULL);
    int h1 = tsh_ensure_inline(m, NULL);
    int h2 = tsh_ensure_inline(m, NULL);
    CHECK_EQ(tsh_work(m, NULL), 0); /* a library call: the spans are frames */
    CHECK_EQ(b->depth, 0);
    int h3 = tsh_ensure_inline(m, NULL); /* numbered on from h2 */
    CHECK(h3 > 0 && h3 != h1 && h3 != h2 && h3 != outer);
    CHECK_EQ(tsh_release_inline(h3), 0);
    CHECK_EQ(tsh_release_inline(h2), 0);
    CHECK_EQ(tsh_release_inline(h1), 0);
    CHECK_EQ(tsh_release_inline(outer), 0);
    CHECK(!is_attached_anywhere());
    return NULL;
}

static void *past_the_limit(void *arg) {
    (void)arg;
    enum { N = 60 };
    int h[N + 1];
    h[0] = tsh_ensure_inline(m, NULL);
    CHECK(tsh_inline_state()->limit < N);
    for (int i = 1; i <= N; i++) {
        h[i] = tsh_ensure_inline(m, NULL);
        CHECK(h[i] > 0);
    }
    for (int i = N; i >= 0; i--) {
        CHECK(attached());
        CHECK_EQ(tsh_release_inline(h[i]), 0);
    }
    CHECK(!is_attached_anywhere());
    return NULL;
}

#ifdef ON_CPYTHON
static void *external_detach(void *arg) {
    (void)arg;
    TSH_InlineState *b = tsh_inline_state();
    int outer = tsh_ensure_inline(m, NULL);
    int h1 = tsh_ensure_inline(m, NULL);
    PyThreadState *ts = PyEval_SaveThread(); /* behind the library's back */
    CHECK(!PyGILState_Check());
    CHECK(b->open == m);
    int h2 = tsh_ensure_inline(m, NULL); /* must not be counted */
    CHECK(h2 > 0);
    CHECK(PyGILState_Check());
    CHECK_EQ(PyRun_SimpleString("y = sum(range(10))"), 0);
    CHECK_EQ(tsh_release_inline(h2), 0);
    CHECK(!PyGILState_Check());
    PyEval_RestoreThread(ts);
    CHECK_EQ(tsh_release_inline(h1), 0);
    CHECK_EQ(tsh_release_inline(outer), 0);
    CHECK(!is_attached_anywhere());
    return NULL;
}
#endif

TSTATE_ON_THREAD(nested)
TSTATE_ON_THREAD(out_of_order)
TSTATE_ON_THREAD(library_call_inside)
TSTATE_ON_THREAD(past_the_limit)
#ifdef ON_CPYTHON
TSTATE_ON_THREAD(external_detach)
#endif

static const scenario list[] = {
    {"nested", scenario_nested},
    {"out_of_order", scenario_out_of_order},
    {"library_call_inside", scenario_library_call_inside},
    {"past_the_limit", scenario_past_the_limit},
#ifdef ON_CPYTHON
    {"external_detach", scenario_external_detach},
#endif
};

TSTATE_DUAL_MAIN(tsh, list)
