/* A callback from a thread Python did not create (a thread pool, an I/O
 * loop): attach, work, release, and when the interpreter is finalizing or
 * gone, drop the event instead of crashing or hanging. */
#include <stdio.h>
#include <tstate_ensure.h>

static uint64_t interp; /* looked up once, at module init */

static int on_event(void) {
    TSE_Error err;
    if (tse_ensure_ex(interp, &err) != 0) { /* FINALIZING, NO_SUCH_INTERPRETER, NO_MEMORY */
        fprintf(stderr, "event dropped: %s\n", err.message);
        return err.code;
    }
    tse_work(interp, NULL); /* your Python calls go here */
    tse_release();
    return 0;
}

int main(void) {
    if (tse_initialize() != 0 || tse_main_interpreter(&interp) != 0) return 1;
    int before = on_event();
    tse_finalize_all(1000); /* Python shuts down */
    int after = on_event();
    printf("before shutdown: %d, after: %d (%s)\n", before, after, tse_error_message(after));
    return before == 0 && after == TSE_ERR_NO_SUCH_INTERPRETER ? 0 : 1;
}
