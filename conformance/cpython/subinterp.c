/* subinterp.c -- a subinterpreter's own native threads call back into it
 * while the main thread ends it (Py_EndInterpreter).
 *
 *   subinterp shared|own [NTHREADS [TIMEOUT_MS]]
 *
 * An embedding program (linked with libpython and one facade's static
 * library; conformance/src/exitrace.rs builds it per CPython and design):
 * Py_InitializeEx(0); <prefix>_initialize(); a subinterpreter made with
 * <prefix>_create_interpreter(<PREFIX>_LOCK_SHARED_WITH_MAIN) ("shared") or
 * <PREFIX>_LOCK_OWN ("own", where backend_info's lock_modes has it: 3.12+);
 * NTHREADS (default 4) native threads loop attach(sub) -> <prefix>_work(sub)
 * and a line of Python run in it -> release, until refused; once every
 * thread has made a call, the main thread (detached) calls
 * <prefix>_finalize(sub, TIMEOUT_MS) (default 10000), which runs
 * Py_EndInterpreter. Then, checked: finalize returned 0; each thread ended
 * with a clean refusal (FINALIZING / NO_SUCH_INTERPRETER), none killed,
 * none stuck; every span ran attached to the subinterpreter (never main);
 * afterwards each thread's PyGILState_GetThisThreadState() is NULL or a
 * live thread state of main -- never one of the subinterpreter's thread
 * states it used (recorded while attached), which Py_EndInterpreter freed;
 * Py_FinalizeEx() returns 0.
 *
 * -DDESIGN_GILSTATE: PyGILState cannot target a subinterpreter (on a fresh
 * thread PyGILState_Ensure attaches to main), so the baseline is the closest
 * thing callers write today without a facade: the raw thread-state API --
 * per span PyThreadState_New(sub) + PyEval_RestoreThread, then
 * PyThreadState_Clear + PyThreadState_DeleteCurrent -- with a C flag the
 * main thread sets before Py_EndInterpreter, checked before each span (the
 * check-then-act every "is it finalizing?" test is).
 *
 * Prints, at the end:
 *   RESULT design=D py=3.X mode=M threads=N refused=R killed=K stuck=S
 *          failed=F calls=C work_errors=W wrong_interp=X dangling=G
 *          finalize_rc=RC finalize_us=US py_finalize_rc=PRC main_gilstate=G1
 *          main_gilstate_reattached=G2
 * G1 / G2: the main thread's PyGILState_GetThisThreadState() right after the
 * finalize, and after it re-attached its thread state: same (its own thread
 * state of main), null or other -- reported, not judged.
 * (and "PROGRESS ..." before Py_FinalizeEx, in case that does not return). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "design.h"

enum { T_STARTING = 0, T_RUNNING, T_REFUSED, T_KILLED, T_FAILED };

#define MAX_THREADS 64

typedef struct {
    pthread_t th;
    _Atomic int state;
    _Atomic long calls;
    _Atomic int code;
    long work_errors, wrong_interp;
    PyThreadState **seen; /* distinct thread states this thread ran on */
    size_t nseen, capseen;
    PyThreadState *gilstate_after; /* PyGILState_GetThisThreadState() at the end */
    _Atomic int done;
} worker_t;

static worker_t workers[MAX_THREADS];
static int nthreads = 4;
#if DESIGN_IS_FACADE
static uint64_t sub_id; /* the facade's id of the subinterpreter */
#else
static PyInterpreterState *sub_ptr; /* the baseline's subinterpreter */
static _Atomic int stop_flag;       /* the baseline's "it is ending" flag */
#endif

static long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

static void remember(worker_t *w, PyThreadState *ts) {
    for (size_t i = 0; i < w->nseen; i++)
        if (w->seen[i] == ts)
            return;
    if (w->nseen == w->capseen) {
        size_t cap = w->capseen ? w->capseen * 2 : 64;
        PyThreadState **p = realloc(w->seen, cap * sizeof *p);
        if (!p)
            return;
        w->seen = p;
        w->capseen = cap;
    }
    w->seen[w->nseen++] = ts;
}

/* The span's body, attached: records the thread state, checks it is the
 * subinterpreter's, runs Python in it. */
static void body(worker_t *w) {
    PyThreadState *ts = PyThreadState_Get();
    remember(w, ts);
    if (PyThreadState_GetInterpreter(ts) == PyInterpreterState_Main())
        w->wrong_interp++;
#if DESIGN_IS_FACADE
    if (TS(work)(sub_id, NULL) != 0)
        w->work_errors++;
#endif
    if (PyRun_SimpleString("_exitrace = sum(i * i for i in range(32))") != 0)
        w->work_errors++;
}

static void on_killed(void *arg) {
    worker_t *w = arg;
    atomic_store(&w->state, T_KILLED);
    atomic_store(&w->done, 1);
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    pthread_cleanup_push(on_killed, w);
    atomic_store(&w->state, T_RUNNING);
    for (;;) {
#if DESIGN_IS_FACADE
        span_t s;
        int code = 0;
        int r = design_attach(sub_id, &s, &code);
        if (r != ATTACH_OK) {
            atomic_store(&w->code, code);
            atomic_store(&w->state, r == ATTACH_REFUSED ? T_REFUSED : T_FAILED);
            break;
        }
        body(w);
        int d = design_detach(&s);
        if (d != 0) {
            atomic_store(&w->code, d);
            atomic_store(&w->state, T_FAILED);
            break;
        }
#else
        if (atomic_load(&stop_flag)) { /* "is it ending?" -- then act */
            atomic_store(&w->state, T_REFUSED);
            break;
        }
        PyThreadState *ts = PyThreadState_New(sub_ptr);
        PyEval_RestoreThread(ts);
        body(w);
        PyThreadState_Clear(ts);
        PyThreadState_DeleteCurrent();
#endif
        atomic_fetch_add(&w->calls, 1);
    }
    w->gilstate_after = PyGILState_GetThisThreadState();
    atomic_store(&w->done, 1);
    pthread_cleanup_pop(0);
    return NULL;
}

#if !DESIGN_IS_FACADE
/* The baseline's create: returns the subinterpreter's first thread state,
 * detached, with the caller detached too (main_ts saved). */
static PyThreadState *raw_create(int own, PyThreadState *main_ts) {
    PyThreadState *t0 = NULL;
    if (own) {
#if PY_VERSION_HEX >= 0x030C0000
        PyInterpreterConfig cfg = {
            .use_main_obmalloc = 0,
            .allow_fork = 0,
            .allow_exec = 0,
            .allow_threads = 1,
            .allow_daemon_threads = 0,
            .check_multi_interp_extensions = 1,
            .gil = PyInterpreterConfig_OWN_GIL,
        };
        PyStatus st = Py_NewInterpreterFromConfig(&t0, &cfg);
        if (PyStatus_Exception(st))
            t0 = NULL;
#endif
    } else {
        t0 = Py_NewInterpreter();
    }
    if (!t0) {
        PyThreadState_Swap(main_ts);
        return NULL;
    }
    sub_ptr = PyThreadState_GetInterpreter(t0);
    PyEval_SaveThread(); /* t0 detached; main_ts stays detached */
    return t0;
}

/* Ends the subinterpreter through t0, as an embedder does; leaves the
 * caller detached with main_ts saved. */
static void raw_end(PyThreadState *t0, PyThreadState *main_ts) {
    PyEval_RestoreThread(t0);
    Py_EndInterpreter(t0);
#if PY_VERSION_HEX >= 0x030C0000
    (void)main_ts; /* 3.12+: returns detached */
#else
    PyThreadState_Swap(main_ts); /* <= 3.11: the GIL is still held, nothing current */
    PyEval_SaveThread();
#endif
}
#endif

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *mode = argc > 1 ? argv[1] : "shared";
    int own = strcmp(mode, "own") == 0;
    if (!own && strcmp(mode, "shared") != 0) {
        fprintf(stderr, "usage: %s shared|own [NTHREADS [TIMEOUT_MS]]\n", argv[0]);
        return 2;
    }
    if (argc > 2)
        nthreads = atoi(argv[2]);
    if (nthreads < 1 || nthreads > MAX_THREADS)
        return 2;
    long timeout_ms = argc > 3 ? atol(argv[3]) : 10000;

    Py_InitializeEx(0);
    PyThreadState *main_ts = PyThreadState_Get();
#if DESIGN_IS_FACADE
    int rc = TS(initialize)();
    if (rc != 0) {
        printf("RESULT design=%s py=%d.%d mode=%s setup=initialize:%d\n", DESIGN_NAME,
               PY_MAJOR_VERSION, PY_MINOR_VERSION, mode, rc);
        return 1;
    }
    TST(BackendInfo) b;
    if (TS(backend_info)(&b) != 0 || b.kind != TST(BACKEND_CPYTHON)) {
        printf("RESULT design=%s py=%d.%d mode=%s setup=backend\n", DESIGN_NAME,
               PY_MAJOR_VERSION, PY_MINOR_VERSION, mode);
        return 1;
    }
    uint32_t lock = own ? TST(LOCK_OWN) : TST(LOCK_SHARED_WITH_MAIN);
    if (!(b.lock_modes & (1u << lock))) {
        printf("RESULT design=%s py=%d.%d mode=%s unsupported lock_modes=%u\n", DESIGN_NAME,
               PY_MAJOR_VERSION, PY_MINOR_VERSION, mode, b.lock_modes);
        return 0;
    }
    rc = TS(create_interpreter)(lock, &sub_id);
    if (rc != 0) {
        printf("RESULT design=%s py=%d.%d mode=%s setup=create_interpreter:%d\n", DESIGN_NAME,
               PY_MAJOR_VERSION, PY_MINOR_VERSION, mode, rc);
        return 1;
    }
    PyEval_SaveThread(); /* the embedder lets the threads in */
#else
    if (own && PY_VERSION_HEX < 0x030C0000) {
        printf("RESULT design=%s py=%d.%d mode=%s unsupported\n", DESIGN_NAME, PY_MAJOR_VERSION,
               PY_MINOR_VERSION, mode);
        return 0;
    }
    PyThreadState *t0 = raw_create(own, main_ts);
    if (!t0) {
        printf("RESULT design=%s py=%d.%d mode=%s setup=create\n", DESIGN_NAME, PY_MAJOR_VERSION,
               PY_MINOR_VERSION, mode);
        return 1;
    }
#endif

    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&workers[i].th, NULL, worker_main, &workers[i]) != 0)
            return 3;
    long t0us = now_us();
    for (;;) { /* until every thread has made a call (or ended) */
        int all = 1;
        for (int i = 0; i < nthreads; i++)
            all &= atomic_load(&workers[i].calls) > 0 || atomic_load(&workers[i].done);
        if (all || now_us() - t0us > 5000000)
            break;
        usleep(200);
    }
    usleep(5000);

    long f0 = now_us();
#if DESIGN_IS_FACADE
    int finalize_rc = TS(finalize)(sub_id, timeout_ms);
#else
    (void)timeout_ms;
    atomic_store(&stop_flag, 1);
    raw_end(t0, main_ts);
    int finalize_rc = 0;
#endif
    long finalize_us = now_us() - f0;

    /* the threads see the refusal; wait (bounded) for them to end */
    int stuck = 0;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 5;
    for (int i = 0; i < nthreads; i++) {
        int e = pthread_timedjoin_np(workers[i].th, NULL, &dl);
        if (e == ETIMEDOUT)
            stuck++;
    }
    PyThreadState *g_main = PyGILState_GetThisThreadState();
    const char *main_gilstate = g_main == main_ts ? "same" : g_main == NULL ? "null" : "other";

    int refused = 0, killed = 0, failed = 0, dangling = 0;
    long calls = 0, work_errors = 0, wrong_interp = 0;
    const char *main_gilstate_reattached = "skipped";
    if (!stuck) {
        PyEval_RestoreThread(main_ts); /* to read main's thread list */
        g_main = PyGILState_GetThisThreadState();
        main_gilstate_reattached = g_main == main_ts ? "same" : g_main == NULL ? "null" : "other";
    }
    for (int i = 0; i < nthreads; i++) {
        worker_t *w = &workers[i];
        calls += atomic_load(&w->calls);
        work_errors += w->work_errors;
        wrong_interp += w->wrong_interp;
        int st = atomic_load(&w->state);
        refused += st == T_REFUSED;
        killed += st == T_KILLED;
        failed += st == T_FAILED;
        if (st == T_FAILED)
            printf("FAILED thread=%d code=%d\n", i, atomic_load(&w->code));
        PyThreadState *g = w->gilstate_after;
        if (stuck || !atomic_load(&w->done) || g == NULL)
            continue;
        int live_main = 0;
        for (PyThreadState *t = PyInterpreterState_ThreadHead(PyInterpreterState_Main()); t;
             t = PyThreadState_Next(t))
            live_main |= t == g;
        if (live_main)
            continue;
        dangling++; /* neither NULL nor a live thread state of main */
        int used = 0;
        for (size_t k = 0; k < w->nseen; k++)
            used |= w->seen[k] == g;
        printf("DANGLING thread=%d gilstate=%p %s\n", i, (void *)g,
               used ? "(a freed thread state of the subinterpreter it used)" : "(unknown)");
    }
    char line[512];
    snprintf(line, sizeof line,
             "design=%s py=%d.%d mode=%s threads=%d refused=%d killed=%d stuck=%d failed=%d "
             "calls=%ld work_errors=%ld wrong_interp=%ld dangling=%d finalize_rc=%d "
             "finalize_us=%ld",
             DESIGN_NAME, PY_MAJOR_VERSION, PY_MINOR_VERSION, mode, nthreads, refused, killed,
             stuck, failed, calls, work_errors, wrong_interp, dangling, finalize_rc, finalize_us);
    printf("PROGRESS %s\n", line);
    if (stuck) {
        printf("RESULT %s py_finalize_rc=skipped main_gilstate=%s main_gilstate_reattached=%s\n",
               line, main_gilstate, main_gilstate_reattached);
        _exit(0); /* stuck threads: Py_FinalizeEx would wait on them or crash */
    }
    int py_finalize_rc = Py_FinalizeEx();
    printf("RESULT %s py_finalize_rc=%d main_gilstate=%s main_gilstate_reattached=%s\n", line,
           py_finalize_rc, main_gilstate, main_gilstate_reattached);
    return 0;
}
