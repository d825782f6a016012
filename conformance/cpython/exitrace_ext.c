/* exitrace_ext.c -- the discussion's `c_thread_func` in a real CPython
 * extension module: native threads call a Python callable through one
 * facade (or through raw PyGILState, the baseline) while the interpreter
 * exits.
 *
 * Built once per (CPython, design) by conformance/src/exitrace.rs:
 *   gcc -shared -fPIC -I<python include> -I<ffi-X/include> -DDESIGN_X \
 *       exitrace_ext.c libtstate_ffi_X.a -o <dir>/exitrace_ext.so
 * (not linked with libpython: its symbols resolve from the interpreter that
 * loads the module; the facade finds them with dlsym at run time).
 * conformance/src/wheel.rs builds it against the `tstate` Python package
 * instead: -DTSTATE_CAPI (no library; tstate_capi.h, import_tstate() in
 * init, and handle_open/handle_release to show that every such module
 * shares one runtime) and -DEXITRACE_MODULE=name (two builds in one
 * process; the EXITRACE line ends with module=name).
 *
 * Single-phase init (PyInit_exitrace_ext returns the module): the module's
 * state is process-wide by nature -- native threads, one C atexit report,
 * one facade registration of the importing interpreter -- so it does not
 * claim the per-interpreter isolation that multi-phase init advertises, and
 * CPython refuses to import it into an isolated subinterpreter rather than
 * sharing that state silently. It is imported once, by the main
 * interpreter (exitrace_main.py).
 *
 * Module init calls <prefix>_initialize() (which registers the importing
 * interpreter: its finalization gate) and takes that interpreter's id with
 * <prefix>_current_interpreter. start(callable, nthreads[, max_calls])
 * starts nthreads native pthreads; each loops c_thread_func: attach (the
 * design's idiom, interpreter explicit) -> call the callable -> release,
 * until a refusal (FINALIZING / NO_SUCH_INTERPRETER: it stops and records
 * "refused") or max_calls (> 0) calls ("finished"). A thread CPython kills
 * (pthread_exit inside take_gil, CPython <= 3.13) is recorded "killed" by
 * its pthread cleanup handler. A C atexit() handler -- it runs after
 * Py_FinalizeEx, at process exit -- waits up to EXITRACE_SETTLE_MS
 * (default 500) for the threads to settle, then prints one line:
 *
 *   EXITRACE design=D py=3.X threads=8 refused=R killed=K finished=F
 *            running=U failed=E calls=N pyerrors=P refused_finalizing=RF
 *            refused_gone=RG settle_us=S
 *
 * running = threads neither refused, finished, killed nor failed when the
 * process exits (stuck in an attach, or still looping). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "design.h"

/* The module's name (-DEXITRACE_MODULE=name: several builds of this file
 * in one process, as conformance/src/wheel.rs imports two). */
#ifndef EXITRACE_MODULE
#define EXITRACE_MODULE exitrace_ext
#endif
#define XSTR_(x) #x
#define XSTR(x) XSTR_(x)
#define MODULE_NAME XSTR(EXITRACE_MODULE)
#define PYINIT_(m) PyInit_##m
#define PYINIT(m) PYINIT_(m)

enum {
    T_STARTING = 0,
    T_RUNNING,
    T_REFUSED,
    T_FINISHED,
    T_KILLED,
    T_FAILED, /* an attach failed with a code that is not a refusal */
};

#define MAX_THREADS 64

typedef struct {
    PyObject *callable;
    uint64_t interp; /* the facade's id of the interpreter (unused by gilstate) */
} pyrun_t;

typedef struct {
    pthread_t th;
    _Atomic int state;
    _Atomic long calls;
    _Atomic long pyerrors;
    _Atomic int code; /* the refusal's (or failure's) code */
} worker_t;

static worker_t workers[MAX_THREADS];
static _Atomic int nworkers;
static long max_calls;
static pyrun_t to_run;
static int started;

static long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

/* The body of the span: the Python call. 0, or -1 after a Python error. */
static int call_python(PyObject *callable) {
    PyObject *r = PyObject_CallObject(callable, NULL);
    if (r == NULL) {
        PyErr_Clear();
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* The discussion's c_thread_func, one span per call: ATTACH_OK (the
 * callable ran; *pyerr set if it raised), ATTACH_REFUSED or
 * ATTACH_FAILED with *code. */
static int c_thread_func(pyrun_t *run, int *code, int *pyerr) {
#if DESIGN_IS_FACADE
    span_t s;
    int r = design_attach(run->interp, &s, code);
    if (r != ATTACH_OK)
        return r;
    *pyerr = call_python(run->callable) < 0;
    int d = design_detach(&s);
    if (d != 0) {
        *code = d;
        return ATTACH_FAILED;
    }
    return ATTACH_OK;
#else
    /* The baseline: PyGILState_Ensure cannot fail -- while the interpreter
     * finalizes it kills the calling thread, hangs or crashes instead. */
    (void)code;
    PyGILState_STATE g = PyGILState_Ensure();
    *pyerr = call_python(run->callable) < 0;
    PyGILState_Release(g);
    return ATTACH_OK;
#endif
}

/* Runs only if the thread is terminated inside the loop (pthread_exit in
 * CPython's take_gil): the thread was killed. */
static void on_killed(void *arg) {
    worker_t *w = arg;
    atomic_store(&w->state, T_KILLED);
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    pthread_cleanup_push(on_killed, w);
    atomic_store(&w->state, T_RUNNING);
    for (;;) {
        if (max_calls > 0 && atomic_load(&w->calls) >= max_calls) {
            atomic_store(&w->state, T_FINISHED);
            break;
        }
        int code = 0, pyerr = 0;
        int r = c_thread_func(&to_run, &code, &pyerr);
        if (r == ATTACH_REFUSED) {
            atomic_store(&w->code, code);
            atomic_store(&w->state, T_REFUSED);
            break;
        }
        if (r == ATTACH_FAILED) {
            atomic_store(&w->code, code);
            atomic_store(&w->state, T_FAILED);
            break;
        }
        if (pyerr)
            atomic_fetch_add(&w->pyerrors, 1);
        atomic_fetch_add(&w->calls, 1);
    }
    pthread_cleanup_pop(0);
    return NULL;
}

static int settled(int state) { return state != T_STARTING && state != T_RUNNING; }

/* The C atexit handler: runs after Py_FinalizeEx, when the process exits. */
static void report_at_exit(void) {
    long settle_ms = 500;
    const char *e = getenv("EXITRACE_SETTLE_MS");
    if (e && *e)
        settle_ms = atol(e);
    int n = atomic_load(&nworkers);
    long t0 = now_us();
    for (;;) {
        int all = 1;
        for (int i = 0; i < n; i++)
            all &= settled(atomic_load(&workers[i].state));
        if (all || now_us() - t0 >= settle_ms * 1000)
            break;
        usleep(1000);
    }
    long settle_us = now_us() - t0;
    int refused = 0, killed = 0, finished = 0, running = 0, failed = 0, rf = 0, rg = 0;
    long calls = 0, pyerrors = 0;
    for (int i = 0; i < n; i++) {
        worker_t *w = &workers[i];
        calls += atomic_load(&w->calls);
        pyerrors += atomic_load(&w->pyerrors);
        switch (atomic_load(&w->state)) {
        case T_REFUSED:
            refused++;
#if DESIGN_IS_FACADE
            if (atomic_load(&w->code) == TST(ERR_FINALIZING))
                rf++;
            else
                rg++;
#endif
            break;
        case T_KILLED: killed++; break;
        case T_FINISHED: finished++; break;
        case T_FAILED: failed++; break;
        default: running++; break;
        }
    }
    fprintf(stdout,
            "EXITRACE design=%s py=%d.%d threads=%d refused=%d killed=%d finished=%d "
            "running=%d failed=%d calls=%ld pyerrors=%ld refused_finalizing=%d "
            "refused_gone=%d settle_us=%ld module=%s\n",
            DESIGN_NAME, PY_MAJOR_VERSION, PY_MINOR_VERSION, n, refused, killed, finished,
            running, failed, calls, pyerrors, rf, rg, settle_us, MODULE_NAME);
    for (int i = 0; i < n; i++) {
        int st = atomic_load(&workers[i].state);
        if (st == T_FAILED)
            fprintf(stdout, "EXITRACE-FAILED thread=%d code=%d\n", i, atomic_load(&workers[i].code));
    }
    fflush(stdout);
}

/* start(callable, nthreads, max_calls=0) */
static PyObject *start(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *callable;
    int n;
    long maxc = 0;
    if (!PyArg_ParseTuple(args, "Oi|l", &callable, &n, &maxc))
        return NULL;
    if (!PyCallable_Check(callable)) {
        PyErr_SetString(PyExc_TypeError, "start: callable expected");
        return NULL;
    }
    if (n < 1 || n > MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "start: 1 to %d threads", MAX_THREADS);
        return NULL;
    }
    if (started) {
        PyErr_SetString(PyExc_RuntimeError, "start: already started");
        return NULL;
    }
    started = 1;
    Py_INCREF(callable); /* kept for the threads; never released */
    to_run.callable = callable;
    max_calls = maxc;
    for (int i = 0; i < n; i++) {
        int rc = pthread_create(&workers[i].th, NULL, worker_main, &workers[i]);
        if (rc != 0) {
            PyErr_Format(PyExc_OSError, "pthread_create: %d", rc);
            return NULL;
        }
        pthread_detach(workers[i].th);
        atomic_fetch_add(&nworkers, 1);
    }
    Py_RETURN_NONE;
}

/* min_calls(): the fewest calls any started thread has made. */
static PyObject *min_calls(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    int n = atomic_load(&nworkers);
    long m = n ? LONG_MAX : 0;
    for (int i = 0; i < n; i++) {
        long c = atomic_load(&workers[i].calls);
        if (c < m)
            m = c;
    }
    return PyLong_FromLong(m);
}

/* design(): the design's name. */
static PyObject *design(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyUnicode_FromString(DESIGN_NAME);
}

#if defined(TSTATE_CAPI)
/* Through the package's handle design, whatever this module's design: the
 * same runtime in every extension that imports tstate, so a span opened
 * through one module can be released through another. */

/* handle_open(): opens a handle span on main on the calling (attached)
 * thread; returns the handle. */
static PyObject *handle_open(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    uint64_t main_id = 0;
    const char *msg = NULL;
    int rc = tsh_main_interpreter(&main_id);
    int h = rc == 0 ? tsh_ensure(main_id, &msg) : rc;
    if (h < 0) {
        PyErr_Format(PyExc_RuntimeError, "handle_open: %s (%d)", tsh_error_message(h), h);
        return NULL;
    }
    return PyLong_FromLong(h);
}

/* inline_nested(n): on the calling (attached) thread, through the
 * package's ensure design: one tse_ensure_inline on main, then n nested
 * ones, then n + 1 tse_release_inline; returns (depth after the nested
 * ones, depth after releasing them, attached after the last release) from
 * the thread's inline block, reached through the capsule. */
static PyObject *inline_nested(PyObject *self, PyObject *arg) {
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    uint64_t main_id = 0;
    const char *msg = NULL;
    int rc = tse_main_interpreter(&main_id);
    if (rc == 0)
        rc = tse_ensure_inline(main_id, &msg);
    if (rc != 0) {
        PyErr_Format(PyExc_RuntimeError, "inline_nested: %s (%d)", tse_error_message(rc), rc);
        return NULL;
    }
    for (long i = 0; i < n; i++)
        if (tse_ensure_inline(main_id, &msg) != 0)
            return PyErr_Format(PyExc_RuntimeError, "inline_nested: %s", msg);
    TSE_InlineState *b = tse_inline_state();
    long counted = b ? (long)b->depth : -1;
    for (long i = 0; i < n; i++)
        tse_release_inline();
    long left = b ? (long)b->depth : -1;
    tse_release_inline();
    return Py_BuildValue("(lli)", counted, left, tse_is_attached(main_id));
}

/* guard_inline_nested(n): as inline_nested, through the package's guard
 * design under a guard of main kept for the call (tsg_inline_state is the
 * table's version-3 entry); returns (depth counted, depth after, attached
 * after, tsg_last_error after). */
static PyObject *guard_inline_nested(PyObject *self, PyObject *arg) {
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    TSG_View *v = tsg_view_from_main();
    TSG_Guard *g = v ? tsg_guard_from_view(v) : NULL;
    TSG_Token *outer = g ? tsg_ensure_inline(g) : NULL;
    if (outer == NULL) {
        int rc = tsg_last_error();
        if (g)
            tsg_guard_close(g);
        if (v)
            tsg_view_close(v);
        return PyErr_Format(PyExc_RuntimeError, "guard_inline_nested: %s (%d)",
                            tsg_error_message(rc), rc);
    }
    TSG_Token *tokens[64];
    if (n < 0 || n > 64)
        n = 64;
    long made = 0;
    for (; made < n; made++)
        if ((tokens[made] = tsg_ensure_inline(g)) == NULL)
            break;
    TSG_InlineState *b = tsg_inline_state();
    long counted = b ? (long)b->depth : -1;
    while (made > 0)
        tsg_release_inline(tokens[--made]);
    long left = b ? (long)b->depth : -1;
    tsg_release_inline(outer);
    uint64_t main_id = 0;
    int attached = tsg_main_interpreter(&main_id) == 0 ? tsg_is_attached(main_id) : -1;
    int last = tsg_last_error();
    tsg_guard_close(g);
    tsg_view_close(v);
    return Py_BuildValue("(llii)", counted, left, attached, last);
}

/* handle_release(h): tsh_release's code (0, or a negative TSH_ERR_*). */
static PyObject *handle_release(PyObject *self, PyObject *arg) {
    (void)self;
    long h = PyLong_AsLong(arg);
    if (h == -1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromLong(tsh_release((int)h));
}
#endif

static PyMethodDef methods[] = {
#if defined(TSTATE_CAPI)
    {"handle_open", handle_open, METH_NOARGS, "open a handle span on main; its handle"},
    {"handle_release", handle_release, METH_O, "tsh_release(handle): its code"},
    {"inline_nested", inline_nested, METH_O,
     "inline_nested(n): (depth counted, depth after, attached after) of the inline path"},
    {"guard_inline_nested", guard_inline_nested, METH_O,
     "guard_inline_nested(n): the same for the guard design, and its last error"},
#endif
    {"start", start, METH_VARARGS,
     "start(callable, nthreads, max_calls=0): native threads calling callable"},
    {"min_calls", min_calls, METH_NOARGS, "the fewest calls any thread has made"},
    {"design", design, METH_NOARGS, "the design this module was built with"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, MODULE_NAME,
    "native threads calling Python through a facade while the interpreter exits", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PYINIT(EXITRACE_MODULE)(void) {
#if defined(TSTATE_CAPI)
    if (import_tstate() < 0)
        return NULL;
#endif
#if DESIGN_IS_FACADE
    int rc = TS(initialize)();
    if (rc != 0) {
        PyErr_Format(PyExc_ImportError, DESIGN_NAME " initialize: %s (%d)", TS(error_message)(rc), rc);
        return NULL;
    }
    TST(BackendInfo) b;
    rc = TS(backend_info)(&b);
    if (rc != 0 || b.kind != TST(BACKEND_CPYTHON) || b.python_major != PY_MAJOR_VERSION ||
        b.python_minor != PY_MINOR_VERSION) {
        PyErr_Format(PyExc_ImportError, DESIGN_NAME " backend: rc=%d kind=%u python=%u.%u", rc,
                     b.kind, b.python_major, b.python_minor);
        return NULL;
    }
    rc = TS(current_interpreter)(&to_run.interp);
    if (rc != 0) {
        PyErr_Format(PyExc_ImportError, DESIGN_NAME " current_interpreter: %s (%d)",
                     TS(error_message)(rc), rc);
        return NULL;
    }
#endif
    if (atexit(report_at_exit) != 0) {
        PyErr_SetString(PyExc_ImportError, "atexit() failed");
        return NULL;
    }
    return PyModule_Create(&module);
}
