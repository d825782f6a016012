/* The thread-stored design (tstate-ffi-ensure) used from C, as its users
 * would: the discussion's c_thread_func, a Cython `with gil` block, a
 * PyArrow I/O callback, a native thread pool, a subinterpreter's thread,
 * and a caller racing finalization. Build: see check.h. */
#include "check.h"
#define TSTATE_ENSURE_DISCUSSION_NAMES
#include "tstate_ensure.h"

TSTATE_HELPERS(tse)

/* ---- 1. the discussion's c_thread_func ------------------------------- */

typedef struct {
    int (*callable)(uint64_t interp); /* stands for a PyObject * */
    uint64_t interp;                  /* was PyInterpreterState * */
} pyrun_t;

static int call_python(uint64_t interp) { return tse_work(interp, NULL); }

/* The discussion's code, unchanged but for the id type, the call in the
 * body, the `return 0` that -Werror=return-type requires, and a refusal
 * (finalizing, gone) that returns -1 instead of aborting. */
/* tstate:pattern fresh-thread */
static int
c_thread_func(pyrun_t *to_run)
{
    /* Acquire a thread state so we can call Python */
    const char *err;
    if (PyThreadState_Ensure(to_run->interp, &err) < 0) {
        fprintf(stderr, "Failed to talk to Python: %s\n", err);
        return -1;
    }

    /* Run the function */
    CHECK_EQ(to_run->callable(to_run->interp), 0);
    PyThreadState_Release();
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

/* What Cython generates for `with gil:` inside a `nogil` function. */
static void cython_with_gil(uint64_t interp) {
    /* tstate:pattern nested-call */
    const char *err;
    if (tse_ensure(interp, &err) < 0) {
        fprintf(stderr, "with gil: %s\n", err);
        return; /* Cython would raise/propagate here */
    }
    CHECK_EQ(tse_work(interp, NULL), 0); /* the block's body */
    tse_release();
    /* tstate:end */
}

static void *cython_fresh(void *arg) {
    uint64_t interp = *(uint64_t *)arg;
    CHECK(!is_attached_anywhere()); /* (a) never had a thread state */
    cython_with_gil(interp);
    CHECK(!is_attached_anywhere());
    return NULL;
}

static void *cython_holding_then_nogil(void *arg) {
    uint64_t interp = *(uint64_t *)arg, ts_before = 0, ts_after = 0, saved;
    CHECK_EQ(tse_ensure(interp, NULL), 0); /* a Python thread holding it */
    CHECK_EQ(tse_current(&ts_before, NULL), 1);
    cython_with_gil(interp); /* (b) called while holding */
    CHECK_EQ(tse_current(&ts_after, NULL), 1);
    CHECK_EQ(ts_after, ts_before);
    /* tstate:pattern nogil-reentry */
    tse_save_thread(&saved);    /* with nogil: */
    cython_with_gil(interp);    /* (c) after nogil released it */
    tse_restore_thread(saved);  /* end of with nogil: */
    /* tstate:end */
    CHECK_EQ(tse_is_attached(interp), 1);
    tse_release();
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

/* Arrow's SafeCallIntoPython around a Python file object's tell(). */
static int64_t py_file_tell(uint64_t interp) {
    uint64_t pos = 0;
    if (tse_ensure(interp, NULL) < 0)
        return -1;
    CHECK_EQ(tse_work(interp, &pos), 0);
    tse_release();
    return (int64_t)pos;
}

static void *python_thread_reading(void *arg) {
    uint64_t interp = *(uint64_t *)arg, saved;
    CHECK_EQ(tse_ensure(interp, NULL), 0); /* a Python-created thread */
    CHECK(py_file_tell(interp) > 0);       /* synchronous read: nested */
    CHECK_EQ(tse_save_thread(&saved), 0);  /* Arrow releases the GIL... */
    CHECK(py_file_tell(interp) > 0);       /* ...and its IO calls back */
    CHECK_EQ(tse_restore_thread(saved), 0);
    tse_release();
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
        if (tse_ensure(p->interp, &err) < 0) {
            fprintf(stderr, "task %d: %s\n", task, err);
            continue; /* task dropped; the scenario counts */
        }
        uint64_t leaked = 1;
        CHECK_EQ(tse_scratch_get(&leaked), 0);
        CHECK_EQ(leaked, 0); /* nothing from the previous task */
        CHECK_EQ(tse_scratch_set((uint64_t)task + 1), 0);
        CHECK_EQ(tse_work(p->interp, NULL), 0);
        tse_release();
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
    TSE_Diagnostics d;
    CHECK_EQ(tse_diagnostics(&d), 0);
    CHECK_EQ(d.exclusion_violations, 0);
    CHECK_EQ(d.open_holds, 0);
    CHECK_EQ(d.thread_states, 0); /* the workers' kept states were freed at exit */
}

/* ---- 5. a subinterpreter's thread calls back into it ------------------ */

static void *sub_thread(void *arg) {
    uint64_t sub = *(uint64_t *)arg, on = 0;
    /* tstate:pattern subinterpreter-callback */
    if (tse_ensure(sub, NULL) < 0)
        return NULL;
    CHECK_EQ(tse_work(sub, NULL), 0);
    CHECK_EQ(tse_current(NULL, &on), 1);
    CHECK_EQ(on, sub);
    CHECK_EQ(tse_is_attached(main_interp()), 0);
    tse_release();
    /* tstate:end */
    return NULL;
}

static void scenario_subinterpreter_thread(void) {
    uint64_t main = main_interp(), sub = new_interp(TSE_LOCK_OWN), saved;
    CHECK_EQ(tse_ensure(sub, NULL), 0); /* running in the subinterpreter */
    CHECK_EQ(tse_save_thread(&saved), 0);
    run_on_native_thread(sub_thread, &sub); /* spawned from there */
    CHECK_EQ(tse_restore_thread(saved), 0);
    tse_release();
    CHECK_EQ(work_count(sub), 1);
    CHECK_EQ(work_count(main), 0);
    CHECK_EQ(tse_finalize(sub, 5000), 0);
}

/* ---- 6. calling in while another thread finalizes --------------------- */

typedef struct {
    uint64_t interp;
    volatile int go, saved_ok, stop;
    int granted, refused, last_code;
} race_t;

static void *holder_thread(void *arg) {
    race_t *r = arg;
    uint64_t saved;
    CHECK_EQ(tse_ensure(r->interp, NULL), 0);
    CHECK_EQ(tse_save_thread(&saved), 0);
    __atomic_store_n(&r->saved_ok, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&r->go, __ATOMIC_SEQ_CST))
        sleep_ms(1);
    CHECK_EQ(tse_restore_thread(saved), 0); /* re-attach while finalizing */
    CHECK_EQ(tse_work(r->interp, NULL), 0);
    tse_release();
    return NULL;
}

static void *finalizer_thread(void *arg) {
    race_t *r = arg;
    CHECK_EQ(tse_finalize(r->interp, 10000), 0);
    return NULL;
}

static void *late_caller(void *arg) {
    race_t *r = arg;
    TSE_Error e;
    r->last_code = tse_ensure_ex(r->interp, &e);
    if (r->last_code < 0)
        CHECK_EQ(e.code, r->last_code);
    return NULL;
}

static void *looping_caller(void *arg) {
    race_t *r = arg;
    while (!__atomic_load_n(&r->stop, __ATOMIC_SEQ_CST)) {
        int c = tse_ensure_ex(r->interp, NULL);
        if (c == 0) {
            CHECK_EQ(tse_work(r->interp, NULL), 0);
            tse_release();
            r->granted++;
        } else {
            CHECK(c == TSE_ERR_FINALIZING || c == TSE_ERR_NO_SUCH_INTERPRETER);
            r->refused++;
            if (c == TSE_ERR_NO_SUCH_INTERPRETER)
                break;
        }
    }
    return NULL;
}

static void scenario_finalize_race(void) {
    /* deterministic: a holder keeps the interpreter open, so a caller
     * arriving while it finalizes must get exactly FINALIZING */
    race_t r = {0};
    r.interp = new_interp(TSE_LOCK_OWN);
    pthread_t h, f;
    CHECK_EQ(pthread_create(&h, NULL, holder_thread, &r), 0);
    while (!__atomic_load_n(&r.saved_ok, __ATOMIC_SEQ_CST))
        sleep_ms(1);
    CHECK_EQ(pthread_create(&f, NULL, finalizer_thread, &r), 0);
    while (tse_interpreter_state(r.interp) != 1)
        sleep_ms(1);
    run_on_native_thread(late_caller, &r);
    CHECK_EQ(r.last_code, TSE_ERR_FINALIZING);
    const char *msg;
    CHECK_EQ(tse_ensure(r.interp, &msg), -1);
    CHECK(strstr(msg, "finalizing") != NULL);
    __atomic_store_n(&r.go, 1, __ATOMIC_SEQ_CST);
    CHECK_EQ(pthread_join(h, NULL), 0);
    CHECK_EQ(pthread_join(f, NULL), 0);
    run_on_native_thread(late_caller, &r);
    CHECK_EQ(r.last_code, TSE_ERR_NO_SUCH_INTERPRETER);

    /* racy: a caller looping while finalization happens, 20 rounds */
    for (int round = 0; round < 20; round++) {
        race_t q = {0};
        q.interp = new_interp(TSE_LOCK_OWN);
        pthread_t c;
        CHECK_EQ(pthread_create(&c, NULL, looping_caller, &q), 0);
        sleep_ms(round % 3);
        CHECK_EQ(tse_finalize(q.interp, 10000), 0);
        __atomic_store_n(&q.stop, 1, __ATOMIC_SEQ_CST);
        CHECK_EQ(pthread_join(c, NULL), 0);
    }
    TSE_Diagnostics d;
    CHECK_EQ(tse_diagnostics(&d), 0);
    CHECK_EQ(d.work_after_finalize, 0);
    CHECK_EQ(d.open_holds, 0);
}

/* ---- 7. misuse of the void release goes to the fatal-error hook ------- */

static int hook_code;
static void record_hook(int code, const char *message) {
    hook_code = code;
    CHECK(message != NULL && message[0] != '\0');
}

static void scenario_release_misuse_hook(void) {
    uint64_t interp = main_interp(), ts_before = 0, ts_after = 0;
    CHECK(tse_set_fatal_hook(record_hook) == NULL);
    tse_release(); /* nothing ensured */
    CHECK_EQ(hook_code, TSE_ERR_NOT_ATTACHED);
    CHECK(!is_attached_anywhere());
    CHECK_EQ(tse_ensure(interp, NULL), 0);
    CHECK_EQ(tse_current(&ts_before, NULL), 1);
    uint64_t saved;
    CHECK_EQ(tse_save_thread(&saved), 0);
    hook_code = 0;
    tse_release(); /* a save inside the span is still open */
    CHECK_EQ(hook_code, TSE_ERR_OUT_OF_ORDER);
    CHECK_EQ(tse_restore_thread(saved), 0);
    CHECK_EQ(tse_current(&ts_after, NULL), 1);
    CHECK_EQ(ts_after, ts_before);
    tse_release();
    CHECK(tse_set_fatal_hook(NULL) == record_hook);
    /* a panic inside becomes a code, never an unwind into C */
    tse_inject_panics(1);
    TSE_Error e;
    CHECK_EQ(tse_ensure_ex(interp, &e), TSE_ERR_PANIC);
    CHECK_EQ(tse_ensure(interp, NULL), 0);
    tse_release();
}

/* ---- 8. the default fatal-error hook prints and aborts ----------------- */

/* Expected to die with SIGABRT after printing the message (the test checks
 * both); reaching the end is the failure. */
static void scenario_default_hook_aborts(void) {
    CHECK(tse_set_fatal_hook(NULL) == NULL); /* the default */
    tse_release();                           /* nothing ensured */
    fprintf(stderr, "tse_release returned instead of aborting\n");
    exit(1);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "default_hook_aborts") == 0) {
        scenario_default_hook_aborts();
    }
    static const scenario list[] = {
        {"c_thread_func", scenario_c_thread_func},
        {"cython_with_gil", scenario_cython_with_gil},
        {"pyarrow_callback", scenario_pyarrow_callback},
        {"thread_pool", scenario_thread_pool},
        {"subinterpreter_thread", scenario_subinterpreter_thread},
        {"finalize_race", scenario_finalize_race},
        {"misuse", scenario_release_misuse_hook},
    };
    return run_scenario(list, sizeof list / sizeof list[0], argc, argv);
}
