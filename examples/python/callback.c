/* callback.c -- a C extension that calls Python back from a native thread
 * through the `tstate` package's C API (README: "Using tstate from a C
 * extension"; built and run on every CPython found by
 * conformance/tests/wheel.rs). Build, in an environment where tstate is
 * installed:
 *
 *   gcc -shared -fPIC $(python3-config --includes) \
 *       -I"$(python3 -c 'import tstate; print(tstate.get_include())')" \
 *       callback.c -o callback_demo$(python3-config --extension-suffix) -lpthread
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include "tstate_capi.h"

typedef struct { uint64_t interp; PyObject *fn; int rc; } job_t;

/* The native thread: call fn attached to the interpreter, or, if that is
 * refused (finalizing, gone), say why and stop -- never crash or hang. */
static void *callback(void *arg) {
    job_t *job = arg;
    const char *why = NULL;
    if (tse_ensure(job->interp, &why) != 0) {
        fprintf(stderr, "not calling back: %s\n", why);
        job->rc = -1;
        return NULL;
    }
    PyObject *r = PyObject_CallObject(job->fn, NULL);
    job->rc = r ? 0 : -1;
    if (r == NULL) PyErr_Print();
    Py_XDECREF(r);
    tse_release();
    return NULL;
}

/* call_from_native_thread(fn): runs fn on a new native thread; 0, or -1. */
static PyObject *call_from_native_thread(PyObject *self, PyObject *fn) {
    (void)self;
    job_t job = {0, fn, -1};
    if (tse_current_interpreter(&job.interp) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "tstate: not attached");
        return NULL;
    }
    pthread_t th;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = pthread_create(&th, NULL, callback, &job);
    if (err == 0) pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    if (err != 0) return PyErr_Format(PyExc_OSError, "pthread_create: %d", err);
    return PyLong_FromLong(job.rc);
}

static PyMethodDef methods[] = {
    {"call_from_native_thread", call_from_native_thread, METH_O, "fn() on a native thread"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "callback_demo", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_callback_demo(void) {
    if (import_tstate() < 0)  /* ImportError: tstate missing or too old */
        return NULL;
    return PyModule_Create(&module);
}
