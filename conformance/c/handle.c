/* The int-handle design (tstate-ffi-handle) used from C: the same
 * scenarios as ensure.c, written as this design's users would. */
#include "check.h"
#define TSTATE_HANDLE_DISCUSSION_NAMES
#include "tstate_handle.h"

TSTATE_HELPERS(tsh)

/* ---- 1. the discussion's c_thread_func, int-handle form --------------- */

typedef struct {
    int (*callable)(uint64_t interp); /* stands for a PyObject * */
    uint64_t interp;                  /* was PyInterpreterState * */
} pyrun_t;

static int call_python(uint64_t interp) { return tsh_work(interp, NULL); }

/* The discussion's code, unchanged but for the id type, the call in the
 * body, the `return 0` that -Werror=return-type requires, and a refusal
 * (finalizing, gone) that returns -1 instead of aborting. */
/* tstate:pattern fresh-thread */
static int
c_thread_func(pyrun_t *to_run)
{
    const char *err;
    int state = PyThreadState_Ensure(to_run->interp, &err);
    if (state < 0) {
        fprintf(stderr, "Failed to talk to Python: %s\n", err);
        return -1;
    }
    CHECK_EQ(to_run->callable(to_run->interp), 0);
    PyThreadState_Release(state);
    return 0;
}
/* tstate:end */

static void *c_thread_main(void *arg) {
    CHECK(!is_attached_anywhere());
    CHECK_EQ(c_thread_func(arg), 0); /* this scenario must see success */
    CHECK(!is_attached_anywhere());
    return NULL;
}

static void scenario_c_thread_func(void) {
    pyrun_t r = {call_python, main_interp()};
    run_on_native_thread(c_thread_main, &r);
    CHECK_EQ(work_count(r.interp), 1);
}

/* ---- 2. Cython-generated `with gil` in a nogil function --------------- */

static void cython_with_gil(uint64_t interp) {
    /* tstate:pattern nested-call */
    const char *err;
    int h = tsh_ensure(interp, &err);
    if (h < 0) {
        fprintf(stderr, "with gil: %s\n", err);
        return;
    }
    CHECK_EQ(tsh_work(interp, NULL), 0);
    tsh_release(h);
    /* tstate:end */
}

static void *cython_fresh(void *arg) {
    uint64_t interp = *(uint64_t *)arg;
    CHECK(!is_attached_anywhere());
    cython_with_gil(interp);
    CHECK(!is_attached_anywhere());
    return NULL;
}

static void *cython_holding_then_nogil(void *arg) {
    uint64_t interp = *(uint64_t *)arg, ts_before = 0, ts_after = 0, saved;
    int outer = tsh_ensure(interp, NULL);
    CHECK(outer >= 0);
    CHECK_EQ(tsh_current(&ts_before, NULL), 1);
    cython_with_gil(interp);
    CHECK_EQ(tsh_current(&ts_after, NULL), 1);
    CHECK_EQ(ts_after, ts_before);
    /* tstate:pattern nogil-reentry */
    tsh_save_thread(&saved);
    cython_with_gil(interp);
    tsh_restore_thread(saved);
    /* tstate:end */
    CHECK_EQ(tsh_release(outer), 0);
    CHECK(!is_attached_anywhere());
    return NULL;
}

static void scenario_cython_with_gil(void) {
    uint64_t interp = main_interp();
    run_on_native_thread(cython_fresh, &interp);
    run_on_native_thread(cython_holding_then_nogil, &interp);
    CHECK_EQ(work_count(interp), 3);
}

/* ---- 3. PyArrow-style I/O callback ------------------------------------ */

static int64_t py_file_tell(uint64_t interp) {
    uint64_t pos = 0;
    int h = tsh_ensure(interp, NULL);
    if (h < 0)
        return -1;
    CHECK_EQ(tsh_work(interp, &pos), 0);
    CHECK_EQ(tsh_release(h), 0);
    return (int64_t)pos;
}

static void *python_thread_reading(void *arg) {
    uint64_t interp = *(uint64_t *)arg, saved;
    int h = tsh_ensure(interp, NULL);
    CHECK(h >= 0);
    CHECK(py_file_tell(interp) > 0);
    CHECK_EQ(tsh_save_thread(&saved), 0);
    CHECK(py_file_tell(interp) > 0);
    CHECK_EQ(tsh_restore_thread(saved), 0);
    CHECK_EQ(tsh_release(h), 0);
    return NULL;
}

static void *pool_thread_reading(void *arg) {
    uint64_t interp = *(uint64_t *)arg;
    for (int i = 0; i < 10; i++)
        CHECK(py_file_tell(interp) > 0);
    CHECK(!is_attached_anywhere());
    return NULL;
}

static void scenario_pyarrow_callback(void) {
    uint64_t interp = main_interp();
    run_on_native_thread(python_thread_reading, &interp);
    run_on_native_thread(pool_thread_reading, &interp);
    CHECK_EQ(work_count(interp), 12);
}

/* ---- 4. native thread pool: 1,000 queued tasks ------------------------ */

#define POOL_WORKERS 4
#define POOL_TASKS 1000

typedef struct {
    task_queue q;
    uint64_t interp;
} pool_t;

static void *pool_worker(void *arg) {
    pool_t *p = arg;
    for (int task; (task = take_task(&p->q)) >= 0;) {
        /* tstate:pattern pool-task */
        const char *err;
        int h = tsh_ensure(p->interp, &err);
        if (h < 0) {
            fprintf(stderr, "task %d: %s\n", task, err);
            continue; /* task dropped; the scenario counts */
        }
        uint64_t leaked = 1;
        CHECK_EQ(tsh_scratch_get(&leaked), 0);
        CHECK_EQ(leaked, 0);
        CHECK_EQ(tsh_scratch_set((uint64_t)task + 1), 0);
        CHECK_EQ(tsh_work(p->interp, NULL), 0);
        tsh_release(h);
        /* tstate:end */
        CHECK(!is_attached_anywhere());
    }
    return NULL;
}

static void scenario_thread_pool(void) {
    pool_t p = {{PTHREAD_MUTEX_INITIALIZER, 0, POOL_TASKS}, main_interp()};
    pthread_t w[POOL_WORKERS];
    for (int i = 0; i < POOL_WORKERS; i++)
        CHECK_EQ(pthread_create(&w[i], NULL, pool_worker, &p), 0);
    for (int i = 0; i < POOL_WORKERS; i++)
        CHECK_EQ(pthread_join(w[i], NULL), 0);
    CHECK_EQ(work_count(p.interp), POOL_TASKS);
    TSH_Diagnostics d;
    CHECK_EQ(tsh_diagnostics(&d), 0);
    CHECK_EQ(d.exclusion_violations, 0);
    CHECK_EQ(d.open_holds, 0);
    CHECK_EQ(d.thread_states, 0);
}

/* ---- 5. a subinterpreter's thread calls back into it ------------------ */

static void *sub_thread(void *arg) {
    uint64_t sub = *(uint64_t *)arg, on = 0;
    /* tstate:pattern subinterpreter-callback */
    int h = tsh_ensure(sub, NULL);
    if (h < 0)
        return NULL;
    CHECK_EQ(tsh_work(sub, NULL), 0);
    CHECK_EQ(tsh_current(NULL, &on), 1);
    CHECK_EQ(on, sub);
    CHECK_EQ(tsh_is_attached(main_interp()), 0);
    tsh_release(h);
    /* tstate:end */
    return NULL;
}

static void scenario_subinterpreter_thread(void) {
    uint64_t main = main_interp(), sub = new_interp(TSH_LOCK_OWN), saved;
    int h = tsh_ensure(sub, NULL);
    CHECK(h >= 0);
    CHECK_EQ(tsh_save_thread(&saved), 0);
    run_on_native_thread(sub_thread, &sub);
    CHECK_EQ(tsh_restore_thread(saved), 0);
    CHECK_EQ(tsh_release(h), 0);
    CHECK_EQ(work_count(sub), 1);
    CHECK_EQ(work_count(main), 0);
    CHECK_EQ(tsh_finalize(sub, 5000), 0);
}

/* ---- 6. calling in while another thread finalizes --------------------- */

typedef struct {
    uint64_t interp;
    volatile int go, saved_ok, stop;
    int last_code;
} race_t;

static void *holder_thread(void *arg) {
    race_t *r = arg;
    uint64_t saved;
    int h = tsh_ensure(r->interp, NULL);
    CHECK(h >= 0);
    CHECK_EQ(tsh_save_thread(&saved), 0);
    __atomic_store_n(&r->saved_ok, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&r->go, __ATOMIC_SEQ_CST))
        sleep_ms(1);
    CHECK_EQ(tsh_restore_thread(saved), 0);
    CHECK_EQ(tsh_work(r->interp, NULL), 0);
    CHECK_EQ(tsh_release(h), 0);
    return NULL;
}

static void *finalizer_thread(void *arg) {
    race_t *r = arg;
    CHECK_EQ(tsh_finalize(r->interp, 10000), 0);
    return NULL;
}

static void *late_caller(void *arg) {
    race_t *r = arg;
    const char *msg = NULL;
    r->last_code = tsh_ensure(r->interp, &msg);
    if (r->last_code < 0)
        CHECK(msg != NULL);
    return NULL;
}

static void *looping_caller(void *arg) {
    race_t *r = arg;
    while (!__atomic_load_n(&r->stop, __ATOMIC_SEQ_CST)) {
        int h = tsh_ensure(r->interp, NULL);
        if (h >= 0) {
            CHECK_EQ(tsh_work(r->interp, NULL), 0);
            CHECK_EQ(tsh_release(h), 0);
        } else {
            CHECK(h == TSH_ERR_FINALIZING || h == TSH_ERR_NO_SUCH_INTERPRETER);
            if (h == TSH_ERR_NO_SUCH_INTERPRETER)
                break;
        }
    }
    return NULL;
}

static void scenario_finalize_race(void) {
    race_t r = {0};
    r.interp = new_interp(TSH_LOCK_OWN);
    pthread_t h, f;
    CHECK_EQ(pthread_create(&h, NULL, holder_thread, &r), 0);
    while (!__atomic_load_n(&r.saved_ok, __ATOMIC_SEQ_CST))
        sleep_ms(1);
    CHECK_EQ(pthread_create(&f, NULL, finalizer_thread, &r), 0);
    while (tsh_interpreter_state(r.interp) != 1)
        sleep_ms(1);
    run_on_native_thread(late_caller, &r);
    CHECK_EQ(r.last_code, TSH_ERR_FINALIZING);
    __atomic_store_n(&r.go, 1, __ATOMIC_SEQ_CST);
    CHECK_EQ(pthread_join(h, NULL), 0);
    CHECK_EQ(pthread_join(f, NULL), 0);
    run_on_native_thread(late_caller, &r);
    CHECK_EQ(r.last_code, TSH_ERR_NO_SUCH_INTERPRETER);

    for (int round = 0; round < 20; round++) {
        race_t q = {0};
        q.interp = new_interp(TSH_LOCK_OWN);
        pthread_t c;
        CHECK_EQ(pthread_create(&c, NULL, looping_caller, &q), 0);
        sleep_ms(round % 3);
        CHECK_EQ(tsh_finalize(q.interp, 10000), 0);
        __atomic_store_n(&q.stop, 1, __ATOMIC_SEQ_CST);
        CHECK_EQ(pthread_join(c, NULL), 0);
    }
    TSH_Diagnostics d;
    CHECK_EQ(tsh_diagnostics(&d), 0);
    CHECK_EQ(d.work_after_finalize, 0);
    CHECK_EQ(d.open_holds, 0);
}

/* ---- 7. misuse is reported to the caller, state unchanged ------------- */

static void *foreign_release(void *arg) {
    int h = *(int *)arg;
    int c = tsh_release(h);
    CHECK(c == TSH_ERR_WRONG_THREAD || c == TSH_ERR_INVALID_HANDLE);
    return NULL;
}

static void scenario_misuse(void) {
    uint64_t interp = main_interp(), sub = new_interp(TSH_LOCK_OWN), on = 0;
    CHECK_EQ(tsh_release(0), TSH_ERR_INVALID_HANDLE);
    CHECK_EQ(tsh_release(-5), TSH_ERR_INVALID_HANDLE);
    int a = tsh_ensure(interp, NULL), b = tsh_ensure(sub, NULL);
    CHECK(a >= 0 && b >= 0);
    CHECK_EQ(tsh_release(a), TSH_ERR_OUT_OF_ORDER);
    run_on_native_thread(foreign_release, &b);
    CHECK_EQ(tsh_current(NULL, &on), 1);
    CHECK_EQ(on, sub); /* unchanged by the refused releases */
    CHECK_EQ(tsh_release(b), 0);
    CHECK_EQ(tsh_release(b), TSH_ERR_INVALID_HANDLE); /* double release */
    CHECK_EQ(tsh_current(NULL, &on), 1);
    CHECK_EQ(on, interp);
    CHECK_EQ(tsh_release(a), 0);
    CHECK(!is_attached_anywhere());
    tsh_inject_panics(1);
    CHECK_EQ(tsh_ensure(interp, NULL), TSH_ERR_PANIC);
    int h = tsh_ensure(interp, NULL);
    CHECK(h >= 0);
    CHECK_EQ(tsh_release(h), 0);
}

int main(int argc, char **argv) {
    static const scenario list[] = {
        {"c_thread_func", scenario_c_thread_func},
        {"cython_with_gil", scenario_cython_with_gil},
        {"pyarrow_callback", scenario_pyarrow_callback},
        {"thread_pool", scenario_thread_pool},
        {"subinterpreter_thread", scenario_subinterpreter_thread},
        {"finalize_race", scenario_finalize_race},
        {"misuse", scenario_misuse},
    };
    return run_scenario(list, sizeof list / sizeof list[0], argc, argv);
}
