/* observed.c -- the fifteen "observed" scenarios, on real CPython 3.9-3.13,
 * once per design.
 *
 * The scenario code below is written once, against a small per-design
 * layer chosen at compile time:
 *
 *   -DDESIGN_GILSTATE   CPython's own PyGILState_Ensure / PyGILState_Release
 *                       (and Py_NewInterpreter / Py_EndInterpreter,
 *                       _Py_IsFinalizing, PyGILState_Check)
 *   -DDESIGN_ENSURE     tstate-ffi-ensure   (tse_*: thread-stored ensure/release)
 *   -DDESIGN_HANDLE     tstate-ffi-handle   (tsh_*: int-handle ensure/release)
 *   -DDESIGN_ACTIVATE   tstate-ffi-activate (tsa_*: new/activate/deactivate/delete)
 *   -DDESIGN_GUARD      tstate-ffi-guard (tsg_*: PEP 788 views, guards, tokens)
 *
 * Every facade design runs on its CPython backend (libpython is linked in,
 * and the driver sets TSTATE_BACKEND=cpython): <prefix>_initialize() is
 * called right after CPython's initialization, so the facade registers main and
 * installs its finalization gate (an atexit callback) before anything can
 * finalize; interpreters are always passed explicitly (ids from
 * <prefix>_main_interpreter, <prefix>_create_interpreter(LOCK_SHARED_WITH_MAIN)
 * and <prefix>_current_interpreter).
 *
 * The layer (what a design block provides; to add a design -- e.g.
 * DESIGN_GUARD with prefix tsg_ -- write one more block that defines these):
 *
 *   DESIGN                      the design's name (a string)
 *   interp_t                    how the design names an interpreter
 *   span_t                      what one ensure hands to its release
 *   d_init()                    py_initialize() -- Py_InitializeEx(0) without
 *                               `site` -- (+ the facade's initialize)
 *   d_main(), d_new_sub(), d_end_sub(sub)
 *                               main; a subinterpreter sharing main's GIL
 *                               (the caller's attach state is unchanged);
 *                               ending it
 *   d_same(a, b)                whether two interp_t name one interpreter
 *   d_ensure(i, &s) -> code     attach the calling thread to i (gilstate:
 *                               PyGILState_Ensure, which cannot take i)
 *   d_release(&s)   -> code     undo it
 *   d_enter_sub / d_leave_sub   make a subinterpreter current on this thread
 *                               the design's way (gilstate: swap to its
 *                               first thread state, as code does after
 *                               Py_NewInterpreter; facades: an ensure)
 *   d_check(i)                  the design's "am I attached (to i)?"
 *                               (gilstate: PyGILState_Check(), no argument)
 *   d_current(&i) -> 0 | 1      the design's "which interpreter am I
 *                               attached to?" (1: none)
 *   d_finalizing(i)             the design's "is i finalizing?" check
 *   d_release_unmatched(m)      a release with nothing ensured
 *   d_release_twice(m, ...)     ensure once, release twice
 *   d_exit_spans_closed()       spans closed by thread-exit cleanup (-1: the
 *                               design has no such counter)
 *   CODE_NONE                   "the call has no result" (void functions)
 *
 * Usage: observed SCENARIO | --list. Each scenario prints "NOTE ..." lines
 * as it goes (so a later crash still shows what was seen) and one final
 *   RESULT <scenario> design=<d> py=<X.Y> key=value ...
 * (or "RESULT <scenario> na reason=\"...\"") and exits 0. Crashes, aborts,
 * killed threads that take the process down, and hangs are observed from
 * outside by the driver (conformance/src/observed.rs), which also decides
 * pass or fail from the keys. A native thread killed by CPython
 * (pthread_exit inside PyGILState_Ensure / take_gil) is seen by a
 * pthread_cleanup_push handler in every native thread: killed=1.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- design-independent helpers (raw CPython: the ground truth) -------- */

#define CODE_NONE 1 /* "no result": the call returns void */

static PyInterpreterState *g_main_raw, *g_sub_raw;
static const char *g_scenario = "?";

/* The calling thread's attached thread state, or NULL. On 3.12+ CPython's
 * "current" is per thread; on 3.9-3.11 it is the runtime-wide GIL holder,
 * which is this thread's only if the thread state is this thread's own
 * (every thread state here is created on the thread that uses it). */
static PyThreadState *raw_current(void) {
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked();
#elif PY_VERSION_HEX >= 0x030C0000
    return _PyThreadState_UncheckedGet();
#else
    PyThreadState *ts = _PyThreadState_UncheckedGet();
    return ts != NULL && ts->thread_id == PyThread_get_thread_ident() ? ts : NULL;
#endif
}

/* Which interpreter the calling thread's current thread state belongs to,
 * read from CPython itself. */
static const char *raw_name(void) {
    PyThreadState *ts = raw_current();
    if (ts == NULL)
        return "none";
    PyInterpreterState *ip = PyThreadState_GetInterpreter(ts);
    if (ip == g_main_raw)
        return "main";
    if (g_sub_raw != NULL && ip == g_sub_raw)
        return "sub";
    return "other";
}

/* A little real Python work, legal only while attached. */
static int raw_work(void) {
    PyObject *a = PyLong_FromLong(123456789);
    if (a == NULL)
        return -1;
    PyObject *b = PyNumber_Add(a, a);
    Py_DECREF(a);
    if (b == NULL)
        return -1;
    Py_DECREF(b);
    return 0;
}

/* Py_InitializeEx(0), without importing `site`: the scenarios need no
 * site-packages, and an installation's .pth files (which may import whole
 * packages) would only add start-up time and noise. Nothing here depends on
 * `site`; thread states, the GIL and finalization are the same. */
static void py_initialize(void) {
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.site_import = 0;
    config.install_signal_handlers = 0; /* as Py_InitializeEx(0) */
    PyStatus st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st)) {
        printf("RESULT ? error reason=\"Py_InitializeFromConfig failed\"\n");
        exit(3);
    }
}

static int python_ok(void) { return PyRun_SimpleString("x = sum(range(10))") == 0; }

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000L, (us % 1000000L) * 1000L};
    nanosleep(&ts, NULL);
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void out(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fflush(stdout);
}

static void fail(const char *what) {
    out("RESULT %s error reason=\"%s\"\n", g_scenario, what);
    exit(3);
}

/* ---- native threads that notice being killed ---------------------------- */

enum { W_RUNNING = 0, W_RETURNED = 1, W_KILLED = 2 };

typedef struct worker {
    void (*fn)(struct worker *);
    void *arg;
    pthread_t th;
    _Atomic int state;
    int joined;
} worker;

static void on_killed(void *p) { atomic_store(&((worker *)p)->state, W_KILLED); }

static void *worker_main(void *p) {
    worker *w = p;
    /* Runs if CPython ends this thread with pthread_exit (take_gil while
     * the runtime finalizes): the forced unwind runs cleanup handlers. */
    pthread_cleanup_push(on_killed, w);
    w->fn(w);
    pthread_cleanup_pop(0);
    atomic_store(&w->state, W_RETURNED);
    return NULL;
}

static void start(worker *w, void (*fn)(worker *), void *arg) {
    w->fn = fn;
    w->arg = arg;
    w->joined = 0;
    atomic_store(&w->state, W_RUNNING);
    if (pthread_create(&w->th, NULL, worker_main, w) != 0)
        fail("pthread_create");
}

/* Waits up to `ms` for the worker to return or be killed (joins it then). */
static int wait_worker(worker *w, long ms) {
    long end = now_ms() + ms;
    while (atomic_load(&w->state) == W_RUNNING && now_ms() < end)
        sleep_us(500);
    int st = atomic_load(&w->state);
    if (st != W_RUNNING && !w->joined) {
        pthread_join(w->th, NULL);
        w->joined = 1;
    }
    return st;
}

static const char *state_name(int st) {
    return st == W_RETURNED ? "returned" : st == W_KILLED ? "killed" : "stuck";
}

/* Runs fn on a new native thread and waits for it (bounded). */
static int run_native(void (*fn)(worker *), void *arg, long ms) {
    worker w;
    start(&w, fn, arg);
    return wait_worker(&w, ms);
}

/* ======================================================================== */
/* ---- the designs -------------------------------------------------------- */
/* ======================================================================== */

#if defined(DESIGN_GILSTATE)

#define DESIGN "gilstate"

typedef struct {
    PyInterpreterState *raw;
    PyThreadState *ts0; /* a subinterpreter's first thread state */
} interp_t;

typedef struct {
    PyGILState_STATE g;
    PyThreadState *prev; /* d_enter_sub */
} span_t;

static void d_init(void) { py_initialize(); }

static interp_t d_main(void) {
    interp_t i = {PyInterpreterState_Main(), NULL};
    return i;
}

static int d_same(interp_t a, interp_t b) { return a.raw == b.raw; }

/* Called attached to main; leaves the caller attached to main again. */
static interp_t d_new_sub(void) {
    PyThreadState *cur = PyThreadState_Get();
    PyThreadState *ts0 = Py_NewInterpreter();
    if (ts0 == NULL)
        fail("Py_NewInterpreter");
    PyThreadState_Swap(cur);
    interp_t i = {PyThreadState_GetInterpreter(ts0), ts0};
    return i;
}

/* Called attached to main; leaves it attached to main again. */
static int d_end_sub(interp_t sub) {
    PyThreadState *cur = PyThreadState_Swap(sub.ts0);
    Py_EndInterpreter(sub.ts0);
#if PY_VERSION_HEX >= 0x030C0000
    /* 3.12+ returns with the GIL released and nothing current */
    PyEval_RestoreThread(cur);
#else
    /* 3.9-3.11 return with the GIL held and nothing current */
    PyThreadState_Swap(cur);
#endif
    return 0;
}

/* PyGILState_Ensure cannot name an interpreter: it attaches whatever the
 * thread's gilstate binding says (main, for a fresh thread). */
static int d_ensure(interp_t i, span_t *s) {
    (void)i;
    s->g = PyGILState_Ensure();
    return 0;
}

static int d_release(span_t *s) {
    PyGILState_Release(s->g);
    return 0;
}

static int d_enter_sub(interp_t sub, span_t *s) {
    s->prev = PyThreadState_Swap(sub.ts0);
    return 0;
}

static int d_leave_sub(interp_t sub, span_t *s) {
    (void)sub;
    PyThreadState_Swap(s->prev);
    return 0;
}

static int d_work(interp_t i) {
    (void)i;
    return raw_work();
}

static int d_check(interp_t i) {
    (void)i;
    return PyGILState_Check();
}

static int d_current(interp_t *out_i) {
    PyThreadState *ts = raw_current();
    if (ts == NULL)
        return 1;
    out_i->raw = PyThreadState_GetInterpreter(ts);
    out_i->ts0 = NULL;
    return 0;
}

/* The check every extension does before PyGILState_Ensure. */
static int d_finalizing(interp_t i) {
    (void)i;
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

/* PyGILState_Release with nothing ensured: a PyGILState_STATE the caller
 * never got from Ensure (UNLOCKED). Returns void. */
static int d_release_unmatched(interp_t m) {
    (void)m;
    PyGILState_Release(PyGILState_UNLOCKED);
    return CODE_NONE;
}

static void d_release_twice(interp_t m, int *first, int *second, int *extra) {
    PyGILState_STATE g = PyGILState_Ensure();
    if (d_work(m) != 0)
        fail("work");
    PyGILState_Release(g);
    *first = 0;
    out("NOTE first_release_done=1 current_after_first=%s\n", raw_name());
    PyGILState_Release(g);
    *second = CODE_NONE;
    *extra = CODE_NONE;
}

static long d_exit_spans_closed(void) { return -1; }

static const char *code_name(int c) { return c == 0 ? "ok" : c == CODE_NONE ? "none" : "?"; }

#else /* ---- the facades: what they share --------------------------------- */

#if defined(DESIGN_ENSURE)
#include "tstate_ensure.h"
#define DESIGN "ensure"
#define P(name) tse_##name
#define T(name) TSE_##name
#define E(name) TSE_ERR_##name
#elif defined(DESIGN_HANDLE)
#include "tstate_handle.h"
#define DESIGN "handle"
#define P(name) tsh_##name
#define T(name) TSH_##name
#define E(name) TSH_ERR_##name
#elif defined(DESIGN_ACTIVATE)
#include "tstate_activate.h"
#define DESIGN "activate"
#define P(name) tsa_##name
#define T(name) TSA_##name
#define E(name) TSA_ERR_##name
#elif defined(DESIGN_GUARD)
#include "tstate_guard.h"
#define DESIGN "guard"
#define P(name) tsg_##name
#define T(name) TSG_##name
#define E(name) TSG_ERR_##name
#else
#error "define one of DESIGN_GILSTATE, DESIGN_ENSURE, DESIGN_HANDLE, DESIGN_ACTIVATE, DESIGN_GUARD"
#endif

typedef struct {
    uint64_t id;
} interp_t;

static void d_init(void) {
    py_initialize();
    if (P(initialize)() != 0)
        fail("initialize");
    T(BackendInfo) bi;
    if (P(backend_info)(&bi) != 0 || bi.kind != T(BACKEND_CPYTHON) ||
        bi.python_major != PY_MAJOR_VERSION || bi.python_minor != PY_MINOR_VERSION)
        fail("the facade is not on the CPython backend of this libpython");
}

static interp_t d_main(void) {
    interp_t i = {0};
    if (P(main_interpreter)(&i.id) != 0)
        fail("main_interpreter");
    return i;
}

static int d_same(interp_t a, interp_t b) { return a.id == b.id; }

/* The new subinterpreter's PyInterpreterState is found by CPython's own
 * list (the one interpreter that was not there before), so that the raw
 * ground truth does not depend on the facade. */
static interp_t d_new_sub(void) {
    PyInterpreterState *before[16];
    int n = 0;
    for (PyInterpreterState *p = PyInterpreterState_Head(); p && n < 16; p = PyInterpreterState_Next(p))
        before[n++] = p;
    interp_t i = {0};
    if (P(create_interpreter)(T(LOCK_SHARED_WITH_MAIN), &i.id) != 0)
        fail("create_interpreter");
    for (PyInterpreterState *p = PyInterpreterState_Head(); p; p = PyInterpreterState_Next(p)) {
        int old = 0;
        for (int k = 0; k < n; k++)
            old |= before[k] == p;
        if (!old)
            g_sub_raw = p;
    }
    if (g_sub_raw == NULL)
        fail("new subinterpreter not in CPython's list");
    return i;
}

static int d_end_sub(interp_t sub) { return P(finalize)(sub.id, 5000); }

static int d_check(interp_t i) { return P(is_attached)(i.id); }

static int d_current(interp_t *out_i) { return P(current_interpreter)(&out_i->id) == 0 ? 0 : 1; }

/* The facades' check: the interpreter's state (0 running, 1 finalizing,
 * NO_SUCH_INTERPRETER gone). Racy as a check, like _Py_IsFinalizing; the
 * ensure after it is what refuses atomically. */
static int d_finalizing(interp_t i) { return P(interpreter_state)(i.id) != 0; }

static int d_work(interp_t i) { return P(work)(i.id, NULL) == 0 && raw_work() == 0 ? 0 : -1; }

static long d_exit_spans_closed(void) {
    T(Diagnostics) d;
    if (P(diagnostics)(&d) != 0)
        return -2;
    return (long)d.exit_spans_closed;
}

static const char *code_name(int c) {
    switch (c) {
    case 0: return "ok";
    case CODE_NONE: return "none";
    case E(NO_MEMORY): return "NO_MEMORY";
    case E(FINALIZING): return "FINALIZING";
    case E(NO_SUCH_INTERPRETER): return "NO_SUCH_INTERPRETER";
    case E(WRONG_THREAD): return "WRONG_THREAD";
    case E(NOT_ATTACHED): return "NOT_ATTACHED";
    case E(INVALID_HANDLE): return "INVALID_HANDLE";
    case E(OUT_OF_ORDER): return "OUT_OF_ORDER";
    case E(INVALID_ARGUMENT): return "INVALID_ARGUMENT";
    case E(BUSY): return "BUSY";
    case E(TIMEOUT): return "TIMEOUT";
    case E(PANIC): return "PANIC";
    case E(UNSUPPORTED): return "UNSUPPORTED";
    default: return "UNKNOWN_CODE";
    }
}

/* ---- the facades: spans and misuse, per design ---------------------------- */

#if defined(DESIGN_ENSURE)

typedef struct {
    int unused; /* the span is stored on the thread */
} span_t;

static int d_ensure(interp_t i, span_t *s) {
    (void)s;
    TSE_Error e;
    return tse_ensure_ex(i.id, &e);
}

/* tse_release returns void; its misuse goes to the fatal-error hook (the
 * default prints and aborts, like Py_FatalError). A span release here is
 * never misuse, so the default hook stays: a library bug would abort. */
static int d_release(span_t *s) {
    (void)s;
    tse_release();
    return 0;
}

/* Misuse of the void tse_release is reported to the fatal-error hook; the
 * contract lets a caller (here: the test) install one that records the code
 * and returns, which makes the misused call a no-op. */
static _Atomic int g_hook_code = CODE_NONE;
static void record_hook(int code, const char *message) {
    (void)message;
    atomic_store(&g_hook_code, code);
}

static int hooked_release(void) {
    atomic_store(&g_hook_code, CODE_NONE);
    TSE_FatalHook prev = tse_set_fatal_hook(record_hook);
    tse_release();
    tse_set_fatal_hook(prev);
    return atomic_load(&g_hook_code);
}

static int d_release_unmatched(interp_t m) {
    (void)m;
    return hooked_release();
}

static void d_release_twice(interp_t m, int *first, int *second, int *extra) {
    span_t s;
    if (d_ensure(m, &s) != 0 || d_work(m) != 0)
        fail("ensure");
    *first = hooked_release();
    if (*first == CODE_NONE)
        *first = 0; /* the hook was not called: a good release */
    *second = hooked_release();
    *extra = CODE_NONE;
}

#elif defined(DESIGN_HANDLE)

typedef struct {
    int h;
} span_t;

static int d_ensure(interp_t i, span_t *s) {
    int h = tsh_ensure(i.id, NULL);
    if (h < 0)
        return h;
    s->h = h;
    return 0;
}

static int d_release(span_t *s) { return tsh_release(s->h); }

/* Closest equivalent of "release with nothing ensured": releasing a handle
 * variable that no ensure ever set (zero-initialized). */
static int d_release_unmatched(interp_t m) {
    (void)m;
    span_t never = {0};
    return tsh_release(never.h);
}

static void d_release_twice(interp_t m, int *first, int *second, int *extra) {
    span_t s;
    if (d_ensure(m, &s) != 0 || d_work(m) != 0)
        fail("ensure");
    *first = tsh_release(s.h);
    *second = tsh_release(s.h);
    *extra = CODE_NONE;
}

#elif defined(DESIGN_ACTIVATE)

/* One ensure is New + Activate, its release Deactivate + Delete (the
 * fresh-thread shape of this design). */
typedef struct {
    TSA_ThreadState *ts;
} span_t;

static int d_ensure(interp_t i, span_t *s) {
    int r = tsa_new(i.id, &s->ts);
    if (r != 0)
        return r;
    r = tsa_activate(s->ts);
    if (r != 0)
        tsa_delete(s->ts);
    return r;
}

static int d_release(span_t *s) {
    int r = tsa_deactivate(s->ts);
    int d = tsa_delete(s->ts);
    return r != 0 ? r : d;
}

/* Closest equivalent of "release with nothing ensured": deactivating a
 * thread state this thread created but never activated. */
static int d_release_unmatched(interp_t m) {
    TSA_ThreadState *ts;
    if (tsa_new(m.id, &ts) != 0)
        fail("tsa_new");
    int r = tsa_deactivate(ts);
    if (tsa_delete(ts) != 0)
        fail("tsa_delete");
    return r;
}

/* "Release twice" has two shapes here: Deactivate twice (second: *second),
 * then Delete twice (second: *extra). */
static void d_release_twice(interp_t m, int *first, int *second, int *extra) {
    TSA_ThreadState *ts;
    if (tsa_new(m.id, &ts) != 0 || tsa_activate(ts) != 0 || d_work(m) != 0)
        fail("new/activate");
    *first = tsa_deactivate(ts);
    *second = tsa_deactivate(ts);
    out("NOTE deactivate=%s deactivate_again=%s deleting=1\n", code_name(*first),
        code_name(*second));
    int del = tsa_delete(ts);
    if (*first == 0 && del != 0)
        *first = del;
    *extra = tsa_delete(ts);
}

#elif defined(DESIGN_GUARD)

/* One ensure is PEP 788's idiom from an id: a view, EnsureFromView (which
 * keeps a guard until the release), the view closed; its release is
 * Release(token). */
typedef struct {
    TSG_Token *t;
} span_t;

static int d_ensure(interp_t i, span_t *s) {
    TSG_View *v = tsg_view_from_interpreter(i.id);
    if (v == NULL)
        return tsg_last_error();
    s->t = tsg_ensure_from_view(v);
    int code = s->t == NULL ? tsg_last_error() : 0;
    tsg_view_close(v);
    return code;
}

/* tsg_release returns void: misuse goes to the fatal-error hook (default:
 * abort), which the misuse scenarios replace with a recorder. */
static _Atomic int g_hook_code = CODE_NONE;
static void record_hook(int code, const char *message) {
    (void)message;
    atomic_store(&g_hook_code, code);
}

static int hooked_release_token(TSG_Token *t) {
    atomic_store(&g_hook_code, CODE_NONE);
    TSG_FatalHook prev = tsg_set_fatal_hook(record_hook);
    tsg_release(t);
    tsg_set_fatal_hook(prev);
    return atomic_load(&g_hook_code);
}

static int d_release(span_t *s) {
    tsg_release(s->t);
    return 0;
}

/* Closest equivalent of "release with nothing ensured": releasing a token
 * value no ensure returned (a stale or made-up one; NULL would be refused
 * as an invalid argument instead). */
static int d_release_unmatched(interp_t m) {
    (void)m;
    return hooked_release_token((TSG_Token *)(uintptr_t)0x0123);
}

static void d_release_twice(interp_t m, int *first, int *second, int *extra) {
    span_t s;
    if (d_ensure(m, &s) != 0 || d_work(m) != 0)
        fail("ensure");
    *first = hooked_release_token(s.t);
    if (*first == CODE_NONE)
        *first = 0;
    *second = hooked_release_token(s.t);
    *extra = CODE_NONE;
}

#endif /* per facade */

static int d_enter_sub(interp_t sub, span_t *s) { return d_ensure(sub, s); }
static int d_leave_sub(interp_t sub, span_t *s) {
    (void)sub;
    return d_release(s);
}

#endif /* facades */

/* ======================================================================== */
/* ---- the scenarios (written once) -------------------------------------- */
/* ======================================================================== */

static interp_t g_m, g_sub;
static int g_has_sub;

static void result(const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    out("RESULT %s design=%s py=%d.%d %s\n", g_scenario, DESIGN, PY_MAJOR_VERSION,
        PY_MINOR_VERSION, buf);
}

static void init(void) {
    d_init();
    g_main_raw = PyInterpreterState_Main();
    g_m = d_main();
}

static void new_sub(void) {
    g_sub = d_new_sub();
#if defined(DESIGN_GILSTATE)
    g_sub_raw = g_sub.raw;
#endif
    g_has_sub = 1;
}

/* The design's own answer to "which interpreter am I attached to?". */
static const char *design_current(void) {
    interp_t c;
    if (d_current(&c) != 0)
        return "none";
    if (d_same(c, g_m))
        return "main";
    if (g_has_sub && d_same(c, g_sub))
        return "sub";
    return "other";
}

/* ---- 1, 1c, 3, 3b: a native thread loops ensure/work/release while the
 * main thread runs Py_FinalizeEx ------------------------------------------ */

typedef struct {
    long pause_us;
    int check_first;
    _Atomic long spans;
    _Atomic int stop;
    int refused;
    const char *refused_by;
    long work_errors, release_errors, check_said_running_then_refused;
} race_t;

static _Atomic int g_finalize_returned;
static _Atomic long g_spans_after_finalize;

static void race_worker(worker *w) {
    race_t *r = w->arg;
    while (!atomic_load(&r->stop)) {
        /* 3, 3b: the check callers do first (gilstate: _Py_IsFinalizing;
         * facades: <prefix>_interpreter_state) */
        if (r->check_first && d_finalizing(g_m)) {
            r->refused_by = "check";
            break;
        }
        span_t s;
        int rc = d_ensure(g_m, &s);
        if (rc != 0) {
            r->refused = rc;
            r->refused_by = "ensure";
            if (r->check_first)
                r->check_said_running_then_refused++;
            break;
        }
        if (d_work(g_m) != 0)
            r->work_errors++;
        if (atomic_load(&g_finalize_returned))
            atomic_fetch_add(&g_spans_after_finalize, 1);
        if (d_release(&s) != 0)
            r->release_errors++;
        atomic_fetch_add(&r->spans, 1);
        if (r->pause_us)
            sleep_us(r->pause_us);
    }
}

static void finalize_race(long pause_us, int check_first) {
    static race_t r;
    r.pause_us = pause_us;
    r.check_first = check_first;
    r.refused = CODE_NONE;
    r.refused_by = "none";
    init();
    PyThreadState *t0 = PyEval_SaveThread();
    worker w;
    start(&w, race_worker, &r);
    long end = now_ms() + 2000;
    while (atomic_load(&r.spans) < 3 && atomic_load(&w.state) == W_RUNNING && now_ms() < end)
        sleep_us(200);
    PyEval_RestoreThread(t0);
    int rc = Py_FinalizeEx();
    atomic_store(&g_finalize_returned, 1);
    out("NOTE finalize_returned=1 finalize_rc=%d\n", rc);
    /* an unkilled gilstate worker now calls PyGILState_Ensure after
     * Py_FinalizeEx returned; a facade worker is refused */
    int st = wait_worker(&w, 100);
    if (st == W_RUNNING) {
        atomic_store(&r.stop, 1);
        st = wait_worker(&w, 1000);
    }
    result("killed=%d worker=%s spans=%ld refused_by=%s refused=%s work_errors=%ld "
           "release_errors=%ld spans_after_finalize=%ld check_said_running_then_refused=%ld "
           "finalize_rc=%d",
           st == W_KILLED, state_name(st), atomic_load(&r.spans), r.refused_by,
           code_name(r.refused), r.work_errors, r.release_errors,
           atomic_load(&g_spans_after_finalize), r.check_said_running_then_refused, rc);
}

static void s1(void) { finalize_race(0, 0); }
/* 1c: the worker pauses 10 ms between calls, so some of its ensures come
 * after Py_FinalizeEx returned */
static void s1c(void) { finalize_race(10000, 0); }
/* 3: check-then-act. gilstate checks _Py_IsFinalizing() (Py_IsFinalizing()
 * on 3.13); a facade's closest honest equivalent is the same pattern with
 * its own check (<prefix>_interpreter_state): the check is just as racy,
 * but the ensure after it refuses atomically, so the race is harmless. */
static void s3(void) { finalize_race(0, 1); }
static void s3b(void) { finalize_race(300, 1); }

/* ---- 2: a new native thread calls ensure after Py_FinalizeEx returned --- */

static int g_code;
static const char *g_attached = "none";

static void late_ensure(worker *w) {
    (void)w;
    span_t s;
    g_code = d_ensure(g_m, &s); /* the id a callback stored at init */
    if (g_code == 0) {
        g_attached = raw_name();
        d_release(&s);
    }
}

static void s2(void) {
    init();
    int rc = Py_FinalizeEx();
    out("NOTE finalize_rc=%d\n", rc);
    int st = run_native(late_ensure, NULL, 2000);
    result("killed=%d worker=%s code=%s attached=%s finalize_rc=%d", st == W_KILLED,
           state_name(st), code_name(g_code), g_attached, rc);
}

/* ---- 4: a thread started while a subinterpreter is current ensures the
 * interpreter its starter was in ------------------------------------------ */

static interp_t g_target;
static int g_r, g_check_main, g_check_sub, g_work;
static const char *g_current = "none";

static void ensure_target(worker *w) {
    (void)w;
    span_t s;
    g_r = d_ensure(g_target, &s);
    if (g_r != 0)
        return;
    g_attached = raw_name();
    g_current = design_current();
    g_check_main = d_check(g_m);
    g_check_sub = d_check(g_sub);
    g_work = d_work(g_target) == 0;
    g_r = d_release(&s);
}

static void s4(void) {
    init();
    new_sub();
    span_t setup;
    if (d_enter_sub(g_sub, &setup) != 0)
        fail("enter sub");
    const char *starter = raw_name();
    /* the spawner names the interpreter it is in (gilstate: it cannot be
     * passed; PyGILState_Ensure ignores it) */
    if (d_current(&g_target) != 0)
        fail("current");
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = run_native(ensure_target, NULL, 3000);
    Py_END_ALLOW_THREADS
    d_leave_sub(g_sub, &setup);
    int end = d_end_sub(g_sub);
    int rc = Py_FinalizeEx();
    result("killed=%d worker=%s starter_in=%s code=%s attached=%s current=%s check_main=%d "
           "check_sub=%d work_ok=%d end_sub=%s finalize_rc=%d",
           st == W_KILLED, state_name(st), starter, code_name(g_r), g_attached, g_current,
           g_check_main, g_check_sub, g_work, code_name(end), rc);
}

/* ---- 5: the attached check on threads not attached, before, while and
 * after a subinterpreter exists; and on a thread attached to main -------- */

static int g_c_main, g_c_sub;

static void check_unattached(worker *w) {
    (void)w;
    g_c_main = d_check(g_m);
    g_c_sub = g_has_sub ? d_check(g_sub) : 0;
}

static void check_attached_main(worker *w) {
    (void)w;
    span_t s;
    g_r = d_ensure(g_m, &s);
    if (g_r != 0)
        return;
    g_c_main = d_check(g_m);
    g_c_sub = d_check(g_sub);
    g_r = d_release(&s);
}

static void s5(void) {
    init();
    PyThreadState *t0 = PyEval_SaveThread();
    run_native(check_unattached, NULL, 2000);
    int before = g_c_main;
    PyEval_RestoreThread(t0);
    new_sub();
    t0 = PyEval_SaveThread();
    run_native(check_unattached, NULL, 2000);
    int during_main = g_c_main, during_sub = g_c_sub;
    run_native(check_attached_main, NULL, 2000);
    int held_main = g_c_main, held_sub = g_c_sub, held_code = g_r;
    PyEval_RestoreThread(t0);
    int end = d_end_sub(g_sub);
    t0 = PyEval_SaveThread();
    run_native(check_unattached, NULL, 2000); /* g_sub: the ended one */
    int after_main = g_c_main, after_sub = g_c_sub;
    PyEval_RestoreThread(t0);
    int rc = Py_FinalizeEx();
    result("unattached_before=%d unattached_during_main=%d unattached_during_sub=%d "
           "attached_main_asks_main=%d attached_main_asks_sub=%d unattached_after_main=%d "
           "unattached_after_sub=%d code=%s end_sub=%s finalize_rc=%d",
           before, during_main, during_sub, held_main, held_sub, after_main, after_sub,
           code_name(held_code), code_name(end), rc);
}

/* ---- 6, 6b: release with nothing ensured --------------------------------- */

static int g_reuse;

static void reuse_span(void) {
    span_t s;
    g_reuse = d_ensure(g_m, &s) == 0 && d_work(g_m) == 0 && d_release(&s) == 0;
}

static void unmatched_on_native(worker *w) {
    (void)w;
    g_code = d_release_unmatched(g_m);
    out("NOTE misuse_returned=1 code=%s\n", code_name(g_code));
    g_attached = raw_name();
    reuse_span();
}

static void s6(void) {
    init();
    PyThreadState *t0 = PyEval_SaveThread();
    int st = run_native(unmatched_on_native, NULL, 2000);
    PyEval_RestoreThread(t0);
    int ok = python_ok();
    int rc = Py_FinalizeEx();
    result("killed=%d worker=%s code=%s attached_after=%s reuse_ok=%d python_ok=%d "
           "finalize_rc=%d",
           st == W_KILLED, state_name(st), code_name(g_code), g_attached, g_reuse, ok, rc);
}

static void s6b(void) {
    init();
    PyThreadState *t0 = raw_current();
    int code = d_release_unmatched(g_m);
    int same = raw_current() == t0;
    const char *attached = raw_name();
    out("NOTE misuse_returned=1 code=%s same_ts=%d attached_after=%s\n", code_name(code), same,
        attached);
    int ok = python_ok();
    out("NOTE python_ok=%d\n", ok);
    int rc = Py_FinalizeEx();
    result("code=%s attached_after=%s same_ts=%d python_ok=%d finalize_rc=%d",
           code_name(code), attached, same, ok, rc);
}

/* ---- 7: nested ensure / Py_BEGIN_ALLOW_THREADS / ensure / release /
 * Py_END_ALLOW_THREADS / release on a native thread ------------------------ */

static char g_steps[256];
static int g_same_ts;

static void step(const char *what) {
    if (g_steps[0])
        strcat(g_steps, ",");
    strcat(g_steps, what);
}

static void nested(worker *w) {
    (void)w;
    span_t outer, inner;
    step(raw_name());
    if (d_ensure(g_m, &outer) != 0)
        return;
    step(raw_name());
    PyThreadState *t1 = raw_current();
    Py_BEGIN_ALLOW_THREADS
    step(raw_name());
    if (d_ensure(g_m, &inner) == 0) {
        step(raw_name());
        d_release(&inner);
        step(raw_name());
    }
    Py_END_ALLOW_THREADS
    step(raw_name());
    g_same_ts = raw_current() == t1;
    g_work = d_work(g_m) == 0;
    d_release(&outer);
    step(raw_name());
}

static void s7(void) {
    init();
    PyThreadState *t0 = PyEval_SaveThread();
    int st = run_native(nested, NULL, 2000);
    PyEval_RestoreThread(t0);
    int rc = Py_FinalizeEx();
    result("killed=%d worker=%s steps=%s same_ts=%d work_ok=%d finalize_rc=%d", st == W_KILLED,
           state_name(st), g_steps, g_same_ts, g_work, rc);
}

/* ---- 8: ensure(main) while a subinterpreter's thread state is current on
 * this (the main) thread --------------------------------------------------- */

static void s8(void) {
    init();
    new_sub();
    PyThreadState *t0 = raw_current();
    span_t setup, s;
    if (d_enter_sub(g_sub, &setup) != 0)
        fail("enter sub");
    const char *before = raw_name();
    out("NOTE before=%s calling_ensure_main=1\n", before);
    int r = d_ensure(g_m, &s);
    const char *inside = "none", *cur = "none";
    int cm = -1, cs = -1, wk = 0;
    const char *after = "none";
    if (r == 0) {
        inside = raw_name();
        cur = design_current();
        cm = d_check(g_m);
        cs = d_check(g_sub);
        wk = d_work(g_m) == 0;
        out("NOTE ensured attached=%s releasing=1\n", inside);
        r = d_release(&s);
        after = raw_name();
        out("NOTE released=%s after_release=%s\n", code_name(r), after);
    }
    d_leave_sub(g_sub, &setup);
    const char *last = raw_name();
    int same = raw_current() == t0;
    int end = d_end_sub(g_sub);
    int rc = Py_FinalizeEx();
    result("before=%s code=%s attached=%s current=%s check_main=%d check_sub=%d work_ok=%d "
           "after_release=%s after_setup=%s same_ts=%d end_sub=%s finalize_rc=%d",
           before, code_name(r), inside, cur, cm, cs, wk, after, last, same, code_name(end), rc);
}

/* ---- 8b: a thread whose first thread state was a subinterpreter's (made
 * and kept with plain CPython calls, as a pool thread that served the
 * subinterpreter would) later ensures main ----------------------------- */

static void history_then_main(worker *w) {
    (void)w;
    PyThreadState *ts = PyThreadState_New(g_sub_raw);
    PyEval_RestoreThread(ts);
    raw_work();
    PyEval_SaveThread(); /* the thread keeps its thread state */
    span_t s;
    g_r = d_ensure(g_m, &s);
    if (g_r == 0) {
        g_attached = raw_name();
        g_current = design_current();
        g_check_main = d_check(g_m);
        g_work = d_work(g_m) == 0;
        g_r = d_release(&s);
    }
    PyEval_RestoreThread(ts);
    PyThreadState_Clear(ts);
    PyThreadState_DeleteCurrent();
}

static void s8b(void) {
    init();
    new_sub();
    PyThreadState *t0 = PyEval_SaveThread();
    int st = run_native(history_then_main, NULL, 3000);
    PyEval_RestoreThread(t0);
    int end = d_end_sub(g_sub);
    int rc = Py_FinalizeEx();
    result("killed=%d worker=%s code=%s attached=%s current=%s check_main=%d work_ok=%d "
           "end_sub=%s finalize_rc=%d",
           st == W_KILLED, state_name(st), code_name(g_r), g_attached, g_current, g_check_main,
           g_work, code_name(end), rc);
}

/* ---- 9: a native thread ensures and exits without release; main
 * re-attaches -------------------------------------------------------------- */

static void ensure_and_exit(worker *w) {
    (void)w;
    span_t s;
    g_r = d_ensure(g_m, &s);
    g_work = g_r == 0 && d_work(g_m) == 0;
    /* returns with the span open */
}

static void s9(void) {
    init();
    PyThreadState *t0 = PyEval_SaveThread();
    int st = run_native(ensure_and_exit, NULL, 2000);
    out("NOTE worker=%s code=%s reattaching_main=1\n", state_name(st), code_name(g_r));
    PyEval_RestoreThread(t0);
    out("NOTE main_reattached=1\n");
    int ok = python_ok();
    long closed = d_exit_spans_closed();
    int rc = Py_FinalizeEx();
    result("killed=%d worker=%s code=%s work_ok=%d main_reattached=1 python_ok=%d "
           "exit_spans_closed=%ld finalize_rc=%d",
           st == W_KILLED, state_name(st), code_name(g_r), g_work, ok, closed, rc);
}

/* ---- 10, 10b: ensure once, release twice --------------------------------- */

static int g_first, g_second, g_extra;

static void twice_on_native(worker *w) {
    (void)w;
    d_release_twice(g_m, &g_first, &g_second, &g_extra);
    out("NOTE misuse_returned=1 second=%s\n", code_name(g_second));
    g_attached = raw_name();
    reuse_span();
}

static void s10(void) {
    init();
    PyThreadState *t0 = PyEval_SaveThread();
    int st = run_native(twice_on_native, NULL, 2000);
    PyEval_RestoreThread(t0);
    int ok = python_ok();
    int rc = Py_FinalizeEx();
    result("killed=%d worker=%s first=%s second=%s extra=%s attached_after=%s reuse_ok=%d "
           "python_ok=%d finalize_rc=%d",
           st == W_KILLED, state_name(st), code_name(g_first), code_name(g_second),
           code_name(g_extra), g_attached, g_reuse, ok, rc);
}

static void s10b(void) {
    init();
    PyThreadState *t0 = raw_current();
    d_release_twice(g_m, &g_first, &g_second, &g_extra);
    int same = raw_current() == t0;
    const char *attached = raw_name();
    out("NOTE misuse_returned=1 second=%s same_ts=%d attached_after=%s\n", code_name(g_second),
        same, attached);
    int ok = python_ok();
    out("NOTE python_ok=%d\n", ok);
    int rc = Py_FinalizeEx();
    result("first=%s second=%s extra=%s attached_after=%s same_ts=%d python_ok=%d "
           "finalize_rc=%d",
           code_name(g_first), code_name(g_second), code_name(g_extra), attached, same, ok, rc);
}

/* ---- the list -------------------------------------------------------------- */

static const struct {
    const char *name;
    void (*run)(void);
} scenarios[] = {
    {"1", s1},   {"1c", s1c}, {"2", s2},   {"3", s3},   {"3b", s3b},
    {"4", s4},   {"5", s5},   {"6", s6},   {"6b", s6b}, {"7", s7},
    {"8", s8},   {"8b", s8b}, {"9", s9},   {"10", s10}, {"10b", s10b},
};

int main(int argc, char **argv) {
    int n = (int)(sizeof scenarios / sizeof scenarios[0]);
    if (argc != 2) {
        fprintf(stderr, "usage: %s SCENARIO | --list\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < n; i++)
            printf("%s\n", scenarios[i].name);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(argv[1], scenarios[i].name) == 0) {
            g_scenario = scenarios[i].name;
            scenarios[i].run();
            return 0;
        }
    }
    fprintf(stderr, "unknown scenario %s\n", argv[1]);
    return 2;
}
