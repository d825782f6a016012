/* Test harness shared by the facades' C programs (design-independent).
 *
 * Each program takes one scenario name as argv[1], runs it, and exits 0 on
 * success; any failed CHECK prints where and exits 1. The Rust test
 * conformance/tests/c_programs.rs builds every program (plain, and with
 * -fsanitize=address,undefined) and runs every scenario under a watchdog.
 *
 * Regions marked
 *     / * tstate:pattern NAME * /  ...  / * tstate:end * /
 * are the lines a caller writes for a common pattern in that design; the
 * comparison program counts them (non-blank, non-comment lines).
 */
#ifndef TSTATE_CHECK_H
#define TSTATE_CHECK_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* nanosleep, pthreads under -std=c11 */
#endif

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

#define CHECK_EQ(a, b)                                                         \
    do {                                                                       \
        long long a_ = (long long)(a), b_ = (long long)(b);                    \
        if (a_ != b_) {                                                        \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld\n",\
                    __FILE__, __LINE__, #a, a_, #b, b_);                       \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

typedef void *(*thread_fn)(void *);

/* Runs fn(arg) on a new native thread (one Python never created) and
 * joins it. */
static inline void run_on_native_thread(thread_fn fn, void *arg) {
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, fn, arg), 0);
    CHECK_EQ(pthread_join(t, NULL), 0);
}

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A fixed-size task queue for the thread-pool scenario. */
typedef struct {
    pthread_mutex_t mu;
    int next, total;
} task_queue;

static inline int take_task(task_queue *q) {
    pthread_mutex_lock(&q->mu);
    int t = q->next < q->total ? q->next++ : -1;
    pthread_mutex_unlock(&q->mu);
    return t;
}

/* The harness's helpers over a facade's shared functions; P is its
 * prefix (tse, tsh, tsa). */
#define TSTATE_HELPERS(P)                                                      \
    static uint64_t main_interp(void) {                                        \
        uint64_t id = 0;                                                       \
        CHECK_EQ(P##_main_interpreter(&id), 0);                                \
        return id;                                                             \
    }                                                                          \
    static uint64_t new_interp(uint32_t mode) {                                \
        uint64_t id = 0;                                                       \
        CHECK_EQ(P##_create_interpreter(mode, &id), 0);                        \
        return id;                                                             \
    }                                                                          \
    static uint64_t work_count(uint64_t interp) {                              \
        uint64_t v = 0;                                                        \
        CHECK_EQ(P##_work_count(interp, &v), 0);                               \
        return v;                                                              \
    }                                                                          \
    static int is_attached_anywhere(void) { return P##_current(NULL, NULL); }

typedef struct {
    const char *name;
    void (*run)(void);
} scenario;

static inline int run_scenario(const scenario *list, int n, int argc,
                               char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SCENARIO|--list\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(argv[1], "--list") == 0) {
            printf("%s\n", list[i].name);
        } else if (strcmp(argv[1], list[i].name) == 0) {
            list[i].run();
            printf("ok %s\n", list[i].name);
            return 0;
        }
    }
    if (strcmp(argv[1], "--list") == 0)
        return 0;
    fprintf(stderr, "unknown scenario %s\n", argv[1]);
    return 2;
}

#endif /* TSTATE_CHECK_H */
