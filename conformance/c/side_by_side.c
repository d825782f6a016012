/* All three facades (as shared libraries) and a real libpython3.11 in one
 * process: their symbols do not collide (every facade symbol carries its
 * own prefix) and each works next to CPython's own PyGILState API. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "check.h"
#include "tstate_activate.h"
#include "tstate_ensure.h"
#include "tstate_handle.h"

static void scenario_side_by_side(void) {
    Py_Initialize();
    uint64_t me = 0, mh = 0, ma = 0;
    CHECK_EQ(tse_main_interpreter(&me), 0);
    CHECK_EQ(tsh_main_interpreter(&mh), 0);
    CHECK_EQ(tsa_main_interpreter(&ma), 0);

    /* CPython's API and each facade, interleaved on one thread */
    PyGILState_STATE g = PyGILState_Ensure();
    CHECK_EQ(PyRun_SimpleString("x = sum(range(10))"), 0);
    CHECK_EQ(tse_ensure(me, NULL), 0);
    int h = tsh_ensure(mh, NULL);
    CHECK(h >= 0);
    TSA_ThreadState *ts;
    CHECK_EQ(tsa_new(ma, &ts), 0);
    CHECK_EQ(tsa_activate(ts), 0);
    CHECK_EQ(tse_work(me, NULL), 0);
    CHECK_EQ(tsh_work(mh, NULL), 0);
    CHECK_EQ(tsa_work(ma, NULL), 0);
    CHECK_EQ(tsa_deactivate(ts), 0);
    CHECK_EQ(tsa_delete(ts), 0);
    CHECK_EQ(tsh_release(h), 0);
    tse_release();
    PyGILState_Release(g);

    /* the facades are independent runtimes: finalizing one leaves the
     * others (and CPython) running */
    CHECK_EQ(tse_finalize_all(1000), 0);
    CHECK_EQ(tse_interpreter_state(me), TSE_ERR_NO_SUCH_INTERPRETER);
    CHECK_EQ(tsh_interpreter_state(mh), 0);
    CHECK_EQ(tsa_interpreter_state(ma), 0);
    CHECK_EQ(Py_FinalizeEx(), 0);
}

int main(int argc, char **argv) {
    static const scenario list[] = {{"side_by_side", scenario_side_by_side}};
    return run_scenario(list, 1, argc, argv);
}
