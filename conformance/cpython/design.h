/* The facade a program is built with, selected by one -DDESIGN_* macro, and
 * its attach idiom: the span a native thread opens on an explicit
 * interpreter, as that design's callers write it (the discussion's
 * `c_thread_func`, one span per call). Shared by exitrace_ext.c and
 * subinterp.c (conformance/src/exitrace.rs builds both).
 *
 *   -DDESIGN_ENSURE    tse_ensure_ex(interp, &err) ... tse_release()
 *   -DDESIGN_HANDLE    h = tsh_ensure(interp, &msg) ... tsh_release(h)
 *   -DDESIGN_ACTIVATE  tsa_new + tsa_activate ... tsa_deactivate + tsa_delete
 *   -DDESIGN_GUARD     v = tsg_view_from_interpreter(interp);
 *                      t = tsg_ensure_from_view(v) ... tsg_release(t)
 *   -DDESIGN_GILSTATE  no facade: each program writes its own baseline
 *
 * With -DTSTATE_CAPI the facade's functions are the `tstate` Python
 * package's (tstate_capi.h) rather than a linked library's.
 *
 * For a facade, TS(name) is its function `<prefix>_name` and TST(NAME) its
 * type or constant `<PREFIX>_NAME`; the shared functions (initialize,
 * current_interpreter, create_interpreter, finalize, work, backend_info,
 * error_message) have the same signature and meaning in every facade. */
#ifndef TSTATE_EXITRACE_DESIGN_H
#define TSTATE_EXITRACE_DESIGN_H

#include <stdint.h>

#define TS_CAT_(a, b) a##b
#define TS_CAT(a, b) TS_CAT_(a, b)

/* What an attach attempt came to. */
enum { ATTACH_OK = 0, ATTACH_REFUSED = 1, ATTACH_FAILED = 2 };

#if defined(DESIGN_GILSTATE)
#define DESIGN_NAME "gilstate"
#define DESIGN_IS_FACADE 0

#else
#define DESIGN_IS_FACADE 1

/* -DTSTATE_CAPI: the functions come from the `tstate` Python package's
 * capsule (tstate_capi.h, import_tstate() in module init) instead of a
 * linked facade library (conformance/src/wheel.rs builds it so). */
#if defined(TSTATE_CAPI)
#include "tstate_capi.h"
#endif

#if defined(DESIGN_ENSURE)
#ifndef TSTATE_CAPI
#include "tstate_ensure.h"
#endif
#define DESIGN_NAME "ensure"
#define TS_PFX tse_
#define TST_PFX TSE_

#elif defined(DESIGN_HANDLE)
#ifndef TSTATE_CAPI
#include "tstate_handle.h"
#endif
#define DESIGN_NAME "handle"
#define TS_PFX tsh_
#define TST_PFX TSH_

#elif defined(DESIGN_ACTIVATE)
#ifndef TSTATE_CAPI
#include "tstate_activate.h"
#endif
#define DESIGN_NAME "activate"
#define TS_PFX tsa_
#define TST_PFX TSA_

#elif defined(DESIGN_GUARD)
#ifndef TSTATE_CAPI
#include "tstate_guard.h"
#endif
#define DESIGN_NAME "guard"
#define TS_PFX tsg_
#define TST_PFX TSG_

#else
#error "define one of DESIGN_GILSTATE, DESIGN_ENSURE, DESIGN_HANDLE, DESIGN_ACTIVATE, DESIGN_GUARD"
#endif

#define TS(name) TS_CAT(TS_PFX, name)
#define TST(name) TS_CAT(TST_PFX, name)

/* A refusal the contract promises instead of a crash: the interpreter is
 * finalizing, or already gone. */
static inline int design_is_refusal(int code) {
    return code == TST(ERR_FINALIZING) || code == TST(ERR_NO_SUCH_INTERPRETER);
}

/* One span's state, as the design's caller keeps it. */
typedef struct {
#if defined(DESIGN_HANDLE)
    int handle;
#elif defined(DESIGN_ACTIVATE)
    TSA_ThreadState *ts;
#elif defined(DESIGN_GUARD)
    TSG_Token *token;
#else
    int unused;
#endif
} span_t;

/* Opens a span on `interp` on the calling thread: ATTACH_OK, or
 * ATTACH_REFUSED / ATTACH_FAILED with the design's code in *code. */
static inline int design_attach(uint64_t interp, span_t *s, int *code) {
#if defined(DESIGN_ENSURE)
    TSE_Error err;
    (void)s;
    if (tse_ensure_ex(interp, &err) < 0) {
        *code = err.code;
        return design_is_refusal(err.code) ? ATTACH_REFUSED : ATTACH_FAILED;
    }
    return ATTACH_OK;
#elif defined(DESIGN_HANDLE)
    const char *msg = 0;
    s->handle = tsh_ensure(interp, &msg);
    if (s->handle < 0) {
        *code = s->handle;
        return design_is_refusal(s->handle) ? ATTACH_REFUSED : ATTACH_FAILED;
    }
    return ATTACH_OK;
#elif defined(DESIGN_ACTIVATE)
    int err = tsa_new(interp, &s->ts);
    if (err) {
        *code = err;
        return design_is_refusal(err) ? ATTACH_REFUSED : ATTACH_FAILED;
    }
    err = tsa_activate(s->ts);
    if (err) {
        *code = err;
        tsa_delete(s->ts);
        return design_is_refusal(err) ? ATTACH_REFUSED : ATTACH_FAILED;
    }
    return ATTACH_OK;
#elif defined(DESIGN_GUARD)
    /* PEP 788's idiom from an id: a view (weak: it never blocks
     * finalization), then ensure-from-view (a guard kept until release) */
    TSG_View *v = tsg_view_from_interpreter(interp);
    if (v == 0) {
        *code = tsg_last_error();
        return ATTACH_FAILED;
    }
    s->token = tsg_ensure_from_view(v);
    *code = s->token == 0 ? tsg_last_error() : 0; /* before the close resets it */
    tsg_view_close(v);
    if (s->token == 0)
        return design_is_refusal(*code) ? ATTACH_REFUSED : ATTACH_FAILED;
    return ATTACH_OK;
#endif
}

/* Closes the span `design_attach` opened: 0, or the design's code. */
static inline int design_detach(span_t *s) {
#if defined(DESIGN_ENSURE)
    (void)s;
    tse_release(); /* misuse would go to the fatal-error hook (abort) */
    return 0;
#elif defined(DESIGN_HANDLE)
    return tsh_release(s->handle);
#elif defined(DESIGN_ACTIVATE)
    int err = tsa_deactivate(s->ts);
    int err2 = tsa_delete(s->ts);
    return err ? err : err2;
#elif defined(DESIGN_GUARD)
    tsg_release(s->token); /* misuse would go to the fatal-error hook */
    return 0;
#else
    (void)s;
    return 0;
#endif
}

#endif /* DESIGN_GILSTATE */

#endif /* TSTATE_EXITRACE_DESIGN_H */
