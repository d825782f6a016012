/* A subinterpreter one facade's runtime registered and another ended: the
 * first runtime must never touch it again (CPython frees it when
 * Py_EndInterpreter returns). Ensure creates `sub`; a thread attached to it
 * names it through activate (activate registers it, with its own atexit
 * gate); ensure finalizes it; activate's finalize and new-thread-state of
 * its id are then refused instead of calling into freed memory. Built and
 * run by conformance/tests/c_programs.rs (CPython 3.11). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "check.h"
#include "tstate_activate.h"
#include "tstate_ensure.h"

static uint64_t sub, sub_a;

static void *name_it(void *arg) {
    (void)arg;
    CHECK_EQ(tse_ensure(sub, NULL), 0);
    CHECK_EQ(tsa_current_interpreter(&sub_a), 0); /* activate registers it */
    CHECK_EQ(tsa_is_attached(sub_a), 1);
    tse_release();
    return NULL;
}

int main(void) {
    Py_InitializeEx(0);
    CHECK_EQ(tse_initialize(), 0);
    CHECK_EQ(tsa_initialize(), 0);
    CHECK_EQ(tse_create_interpreter(TSE_LOCK_SHARED_WITH_MAIN, &sub), 0);
    PyThreadState *main_ts = PyEval_SaveThread();
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, name_it, NULL), 0);
    CHECK_EQ(pthread_join(t, NULL), 0);
    PyEval_RestoreThread(main_ts);
    CHECK(sub_a != 0 && sub_a != sub);

    CHECK_EQ(tse_finalize(sub, 2000), 0); /* Py_EndInterpreter, by ensure */
    int f = tsa_finalize(sub_a, 2000);
    CHECK(f == TSA_ERR_BUSY || f == TSA_ERR_NO_SUCH_INTERPRETER);
    TSA_ThreadState *ts = NULL;
    int n = tsa_new(sub_a, &ts);
    CHECK(n == TSA_ERR_FINALIZING || n == TSA_ERR_NO_SUCH_INTERPRETER);
    CHECK_EQ(PyRun_SimpleString("x = 1"), 0);
    CHECK_EQ(Py_FinalizeEx(), 0);
    printf("ok ended_elsewhere (activate's finalize: %d, new: %d)\n", f, n);
    return 0;
}
