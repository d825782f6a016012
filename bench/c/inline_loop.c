/* The inline nested paths (tse_ensure_inline + tse_release_inline from
 * tstate_ensure.h, tsh_ensure_inline + tsh_release_inline from
 * tstate_handle.h, tsg_ensure_inline + tsg_release_inline under a kept
 * guard from tstate_guard.h, and the explicit design's idiom's nested
 * path: tsa_is_attached_inline from tstate_activate.h), looped for tstate-bench's
 * cases <design>-A-inline*. bench/build.rs compiles it three ways:
 *
 *   - into the benchmark executable (TSB_LOOP=tsb_inline_static): its
 *     thread-local is resolved at link time (local-exec), as in a program
 *     that links the library statically;
 *   - as a shared object the benchmark loads with dlopen, in the default
 *     TLS model for position-independent code (TSB_LOOP=tsb_inline_dl):
 *     the thread-local goes through __tls_get_addr, as in an extension
 *     module;
 *   - the same with TSTATE_INLINE_INITIAL_EXEC (TSB_LOOP=tsb_inline_ie).
 *
 * One operation is one ensure + release on a thread attached already; a
 * compiler barrier after each keeps the compiler from merging or hoisting
 * them (a `with gil:` block's body would do the same). Each loop returns
 * how many ensures or releases failed (0 expected); its symbol is
 * TSB_LOOP_<design>. */
#include <stdint.h>
#include "tstate_ensure.h"
#include "tstate_handle.h"
#include "tstate_activate.h"
#include "tstate_guard.h"

#ifndef TSB_LOOP
#error "define TSB_LOOP to the loops' symbol prefix"
#endif
#define TSB_CAT_(a, b) a##_##b
#define TSB_CAT(a, b) TSB_CAT_(a, b)

uint64_t TSB_CAT(TSB_LOOP, ensure)(uint64_t interp, uint64_t iters);
uint64_t TSB_CAT(TSB_LOOP, handle)(uint64_t interp, uint64_t iters);
uint64_t TSB_CAT(TSB_LOOP, activate)(uint64_t interp, uint64_t iters);
uint64_t TSB_CAT(TSB_LOOP, guard)(uint64_t guard, uint64_t iters);

uint64_t TSB_CAT(TSB_LOOP, ensure)(uint64_t interp, uint64_t iters) {
    uint64_t failed = 0;
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t id = interp;
        __asm__ volatile("" : "+r"(id)); /* as black_box: not a constant */
        if (tse_ensure_inline(id, NULL) != 0) {
            failed++;
            continue;
        }
        __asm__ volatile("" ::: "memory");
        tse_release_inline();
        __asm__ volatile("" ::: "memory");
    }
    return failed;
}

uint64_t TSB_CAT(TSB_LOOP, handle)(uint64_t interp, uint64_t iters) {
    uint64_t failed = 0;
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t id = interp;
        __asm__ volatile("" : "+r"(id));
        int h = tsh_ensure_inline(id, NULL);
        if (h < 0) {
            failed++;
            continue;
        }
        __asm__ volatile("" ::: "memory");
        if (tsh_release_inline(h) != 0)
            failed++;
        __asm__ volatile("" ::: "memory");
    }
    return failed;
}

uint64_t TSB_CAT(TSB_LOOP, activate)(uint64_t interp, uint64_t iters) {
    uint64_t failed = 0;
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t id = interp;
        __asm__ volatile("" : "+r"(id));
        if (tsa_is_attached_inline(id) != 1)
            failed++;
        __asm__ volatile("" ::: "memory");
    }
    return failed;
}

/* The guard design's: `guard` is the TSG_Guard pointer the thread keeps
 * (its idiom), passed as an integer; a failed release would go to the
 * fatal hook (the default aborts). */
uint64_t TSB_CAT(TSB_LOOP, guard)(uint64_t guard, uint64_t iters) {
    uint64_t failed = 0;
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t g = guard;
        __asm__ volatile("" : "+r"(g));
        TSG_Token *t = tsg_ensure_inline((TSG_Guard *)(uintptr_t)g);
        if (t == NULL) {
            failed++;
            continue;
        }
        __asm__ volatile("" ::: "memory");
        tsg_release_inline(t);
        __asm__ volatile("" ::: "memory");
    }
    return failed;
}
