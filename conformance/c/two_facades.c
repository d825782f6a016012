/* Two facades in one program: each has a runtime of its own, whether the
 * libraries are linked statically or dynamically (the rule every header
 * states). Built both ways by conformance/tests/c_programs.rs; runs on the
 * model (no libpython). */
#include "check.h"
#include "tstate_ensure.h"
#include "tstate_handle.h"

int main(void) {
    uint64_t me = 0, mh = 0, x = 0;
    CHECK_EQ(tse_initialize(), 0);
    CHECK_EQ(tsh_initialize(), 0);
    CHECK_EQ(tse_main_interpreter(&me), 0);
    CHECK_EQ(tsh_main_interpreter(&mh), 0);
    /* two runtimes, two main interpreters, ids that do not cross */
    CHECK(me != mh);
    CHECK_EQ(tsh_interpreter_state(me), TSH_ERR_NO_SUCH_INTERPRETER);
    CHECK_EQ(tse_interpreter_state(mh), TSE_ERR_NO_SUCH_INTERPRETER);
    const char *err = NULL;
    CHECK_EQ(tsh_ensure(me, &err), TSH_ERR_NO_SUCH_INTERPRETER);
    CHECK(err != NULL);

    /* a span through one is not the other's */
    CHECK_EQ(tse_ensure(me, NULL), 0);
    CHECK_EQ(tse_is_attached(me), 1);
    CHECK_EQ(tsh_is_attached(mh), 0);
    uint64_t ts = 0, in = 0;
    CHECK_EQ(tsh_current(&ts, &in), 0);
    CHECK_EQ(in, 0);
    tse_release();

    /* finalizing one runtime's interpreters leaves the other's alone */
    CHECK_EQ(tse_finalize_all(1000), 0);
    CHECK_EQ(tse_main_interpreter(&x), TSE_ERR_NO_SUCH_INTERPRETER);
    CHECK_EQ(tsh_main_interpreter(&x), 0);
    CHECK_EQ(x, mh);
    int h = tsh_ensure(mh, &err);
    CHECK(h >= 0);
    CHECK_EQ(tsh_work(mh, NULL), 0);
    CHECK_EQ(tsh_release(h), 0);
    printf("ok two_facades (ensure main %#llx, handle main %#llx)\n",
           (unsigned long long)me, (unsigned long long)mh);
    return 0;
}
