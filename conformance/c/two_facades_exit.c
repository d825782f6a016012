/* Two facades linked statically into one embedder (one copy of the core,
 * two runtimes), each with a native thread calling Python through it
 * while the main thread runs Py_FinalizeEx: each runtime's own atexit gate
 * must keep its thread alive and refuse it cleanly (no thread killed, no
 * crash, no hang). Built and run by conformance/tests/c_programs.rs. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdatomic.h>
#include "check.h"
#include "tstate_ensure.h"
#include "tstate_handle.h"

static uint64_t me, mh;
static atomic_int calls_e, calls_h, refused_e, refused_h, alive;

static int refusal(int code) {
    return code == TSE_ERR_FINALIZING || code == TSE_ERR_NO_SUCH_INTERPRETER;
}

static void *worker_ensure(void *arg) {
    (void)arg;
    atomic_fetch_add(&alive, 1);
    for (;;) {
        TSE_Error err;
        int r = tse_ensure_ex(me, &err);
        if (r != 0) {
            CHECK(refusal(r));
            atomic_store(&refused_e, 1);
            break;
        }
        CHECK_EQ(PyRun_SimpleString("x = sum(range(20))"), 0);
        atomic_fetch_add(&calls_e, 1);
        tse_release();
    }
    atomic_fetch_sub(&alive, 1);
    return NULL;
}

static void *worker_handle(void *arg) {
    (void)arg;
    atomic_fetch_add(&alive, 1);
    for (;;) {
        int h = tsh_ensure(mh, NULL);
        if (h < 0) {
            CHECK(refusal(h));
            atomic_store(&refused_h, 1);
            break;
        }
        CHECK_EQ(PyRun_SimpleString("y = sum(range(20))"), 0);
        atomic_fetch_add(&calls_h, 1);
        CHECK_EQ(tsh_release(h), 0);
    }
    atomic_fetch_sub(&alive, 1);
    return NULL;
}

int main(void) {
    Py_InitializeEx(0);
    CHECK_EQ(tse_initialize(), 0);
    CHECK_EQ(tsh_initialize(), 0);
    CHECK_EQ(tse_main_interpreter(&me), 0);
    CHECK_EQ(tsh_main_interpreter(&mh), 0);
    CHECK(me != mh); /* two runtimes over one interpreter */
    PyThreadState *main_ts = PyEval_SaveThread();
    pthread_t te, th;
    CHECK_EQ(pthread_create(&te, NULL, worker_ensure, NULL), 0);
    CHECK_EQ(pthread_create(&th, NULL, worker_handle, NULL), 0);
    while (atomic_load(&calls_e) < 50 || atomic_load(&calls_h) < 50) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    PyEval_RestoreThread(main_ts);
    CHECK_EQ(Py_FinalizeEx(), 0);
    /* both threads end by a clean refusal, neither killed inside CPython */
    CHECK_EQ(pthread_join(te, NULL), 0);
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_EQ(atomic_load(&alive), 0);
    CHECK(atomic_load(&refused_e) && atomic_load(&refused_h));
    printf("ok two_facades_exit (ensure %d calls, handle %d calls)\n",
           atomic_load(&calls_e), atomic_load(&calls_h));
    return 0;
}
