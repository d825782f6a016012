/* The explicit-lifecycle design (tstate-ffi-activate) used from C: the same
 * scenarios as ensure.c, written as this design's users would — the caller
 * creates, activates, deactivates and deletes the thread state it owns, and
 * asks `Get` first where it cannot know whether it already holds one. */
#include "check.h"
#define TSTATE_ACTIVATE_DISCUSSION_NAMES
#include "tstate_activate.h"

TSTATE_HELPERS(tsa)

/* ---- 1. the discussion's New/Activate/Deactivate/Delete sketch ---------- */

typedef struct {
    int (*callable)(uint64_t interp);
    uint64_t interp;
} pyrun_t;

static int call_python(uint64_t interp) { return tsa_work(interp, NULL); }

/* The discussion's sketch, with its pseudo-code made C: print -> fprintf,
 * exit -> return -1 (a refusal is reported, never fatal), the second
 * `int err` renamed, the id type. */
/* tstate:pattern fresh-thread */
static int
c_thread_func(pyrun_t *to_run)
{
    PyThreadState *ts;
    int err = PyThreadState_New(to_run->interp, &ts);
    if (err) {
        fprintf(stderr, "%s\n", PyThreadState_GetErrorMessage(err));
        return -1;
    }

    int err2 = PyThreadState_Activate(ts);
    if (!err2) {
        CHECK_EQ(to_run->callable(to_run->interp), 0);
        PyThreadState_Deactivate(ts);
    } else {
        fprintf(stderr, "%s\n", PyThreadState_GetErrorMessage(err2));
    }

    // when done
    PyThreadState_Delete(ts);
    return err2 ? -1 : 0;
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
    TSA_Diagnostics d;
    CHECK_EQ(tsa_diagnostics(&d), 0);
    CHECK_EQ(d.thread_states, 0);
}

/* ---- 2. Cython-generated `with gil` in a nogil function --------------- */

/* Generated code cannot know whether the thread holds the interpreter: it
 * asks first, and otherwise owns a new thread state for the block. After
 * `with nogil:` that is a second thread state on this thread. */
static void cython_with_gil(uint64_t interp) {
    /* tstate:pattern nested-call */
    if (tsa_is_attached(interp)) {
        CHECK_EQ(tsa_work(interp, NULL), 0);
    } else {
        TSA_ThreadState *ts;
        int err = tsa_new(interp, &ts);
        if (err) {
            fprintf(stderr, "with gil: %s\n", tsa_error_message(err));
            return;
        }
        if (tsa_activate(ts) == 0) {
            CHECK_EQ(tsa_work(interp, NULL), 0);
            tsa_deactivate(ts);
        }
        tsa_delete(ts);
    }
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
    uint64_t interp = *(uint64_t *)arg, saved;
    TSA_ThreadState *mine, *cur = NULL;
    CHECK_EQ(tsa_new(interp, &mine), 0); /* a Python thread's own state */
    CHECK_EQ(tsa_activate(mine), 0);
    cython_with_gil(interp);
    CHECK_EQ(tsa_get(&cur), 1);
    CHECK(cur == mine);
    /* tstate:pattern nogil-reentry */
    tsa_save_thread(&saved);
    cython_with_gil(interp);
    tsa_restore_thread(saved);
    /* tstate:end */
    CHECK_EQ(tsa_get(&cur), 1);
    CHECK(cur == mine);
    CHECK_EQ(tsa_deactivate(mine), 0);
    CHECK_EQ(tsa_delete(mine), 0);
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
    if (tsa_is_attached(interp)) {
        CHECK_EQ(tsa_work(interp, &pos), 0);
        return (int64_t)pos;
    }
    TSA_ThreadState *ts;
    if (tsa_new(interp, &ts) != 0)
        return -1;
    if (tsa_activate(ts) == 0) {
        CHECK_EQ(tsa_work(interp, &pos), 0);
        CHECK_EQ(tsa_deactivate(ts), 0);
    }
    CHECK_EQ(tsa_delete(ts), 0);
    return pos ? (int64_t)pos : -1;
}

static void *python_thread_reading(void *arg) {
    uint64_t interp = *(uint64_t *)arg, saved;
    TSA_ThreadState *mine;
    CHECK_EQ(tsa_new(interp, &mine), 0);
    CHECK_EQ(tsa_activate(mine), 0);
    CHECK(py_file_tell(interp) > 0);
    CHECK_EQ(tsa_save_thread(&saved), 0);
    CHECK(py_file_tell(interp) > 0);
    CHECK_EQ(tsa_restore_thread(saved), 0);
    CHECK_EQ(tsa_deactivate(mine), 0);
    CHECK_EQ(tsa_delete(mine), 0);
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

/* Each task owns a new thread state: nothing of the previous task's can be
 * there (the discussion's argument for this design). */
static void *pool_worker(void *arg) {
    pool_t *p = arg;
    for (int task; (task = take_task(&p->q)) >= 0;) {
        /* tstate:pattern pool-task */
        TSA_ThreadState *ts;
        int err = tsa_new(p->interp, &ts);
        if (err) {
            fprintf(stderr, "task %d: %s\n", task, tsa_error_message(err));
            continue; /* task dropped; the scenario counts */
        }
        if (tsa_activate(ts) == 0) {
            uint64_t leaked = 1;
            CHECK_EQ(tsa_scratch_get(&leaked), 0);
            CHECK_EQ(leaked, 0);
            CHECK_EQ(tsa_scratch_set((uint64_t)task + 1), 0);
            CHECK_EQ(tsa_work(p->interp, NULL), 0);
            tsa_deactivate(ts);
        }
        tsa_delete(ts);
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
    TSA_Diagnostics d;
    CHECK_EQ(tsa_diagnostics(&d), 0);
    CHECK_EQ(d.exclusion_violations, 0);
    CHECK_EQ(d.open_holds, 0);
    CHECK_EQ(d.thread_states, 0);
    CHECK_EQ(d.exit_cleanups, 0); /* every task cleaned up after itself */
}

/* ---- 5. a subinterpreter's thread calls back into it ------------------ */

static void *sub_thread(void *arg) {
    uint64_t sub = *(uint64_t *)arg, on = 0;
    /* tstate:pattern subinterpreter-callback */
    TSA_ThreadState *ts;
    if (tsa_new(sub, &ts) != 0)
        return NULL;
    if (tsa_activate(ts) == 0) {
        CHECK_EQ(tsa_work(sub, NULL), 0);
        CHECK_EQ(tsa_current(NULL, &on), 1);
        CHECK_EQ(on, sub);
        CHECK_EQ(tsa_is_attached(main_interp()), 0);
        tsa_deactivate(ts);
    }
    tsa_delete(ts);
    /* tstate:end */
    return NULL;
}

static void scenario_subinterpreter_thread(void) {
    uint64_t main = main_interp(), sub = new_interp(TSA_LOCK_OWN), saved;
    TSA_ThreadState *mine;
    CHECK_EQ(tsa_new(sub, &mine), 0);
    CHECK_EQ(tsa_activate(mine), 0);
    CHECK_EQ(tsa_save_thread(&saved), 0);
    run_on_native_thread(sub_thread, &sub);
    CHECK_EQ(tsa_restore_thread(saved), 0);
    CHECK_EQ(tsa_deactivate(mine), 0);
    CHECK_EQ(tsa_delete(mine), 0);
    CHECK_EQ(work_count(sub), 1);
    CHECK_EQ(work_count(main), 0);
    CHECK_EQ(tsa_finalize(sub, 5000), 0);
}

/* ---- 6. calling in while another thread finalizes --------------------- */

typedef struct {
    uint64_t interp;
    volatile int go, saved_ok, stop;
    int new_code, activate_code;
    TSA_ThreadState *precreated;
} race_t;

static void *holder_thread(void *arg) {
    race_t *r = arg;
    uint64_t saved;
    TSA_ThreadState *ts;
    CHECK_EQ(tsa_new(r->interp, &ts), 0);
    CHECK_EQ(tsa_activate(ts), 0);
    CHECK_EQ(tsa_save_thread(&saved), 0);
    __atomic_store_n(&r->saved_ok, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&r->go, __ATOMIC_SEQ_CST))
        sleep_ms(1);
    CHECK_EQ(tsa_restore_thread(saved), 0);
    CHECK_EQ(tsa_work(r->interp, NULL), 0);
    CHECK_EQ(tsa_deactivate(ts), 0);
    /* finalization may complete (freeing every thread state of the
     * interpreter) as soon as this thread's span is gone; the handle is
     * still ours to delete */
    CHECK_EQ(tsa_delete(ts), 0);
    return NULL;
}

static void *finalizer_thread(void *arg) {
    race_t *r = arg;
    CHECK_EQ(tsa_finalize(r->interp, 10000), 0);
    return NULL;
}

static void *late_caller(void *arg) {
    race_t *r = arg;
    TSA_ThreadState *ts = NULL;
    r->new_code = tsa_new(r->interp, &ts);
    CHECK(r->new_code < 0 && ts == NULL); /* nothing written on failure */
    return NULL;
}

/* A thread that created its thread state before finalization began. */
static void *early_creator(void *arg) {
    race_t *r = arg;
    CHECK_EQ(tsa_new(r->interp, &r->precreated), 0);
    while (!__atomic_load_n(&r->stop, __ATOMIC_SEQ_CST))
        sleep_ms(1);
    r->activate_code = tsa_activate(r->precreated);
    return NULL;
}

static void *looping_caller(void *arg) {
    race_t *r = arg;
    while (!__atomic_load_n(&r->stop, __ATOMIC_SEQ_CST)) {
        TSA_ThreadState *ts;
        int c = tsa_new(r->interp, &ts);
        if (c == 0) {
            int a = tsa_activate(ts);
            if (a == 0) {
                CHECK_EQ(tsa_work(r->interp, NULL), 0);
                CHECK_EQ(tsa_deactivate(ts), 0);
            } else {
                /* refused: finalizing, or already gone */
                CHECK(a == TSA_ERR_FINALIZING || a == TSA_ERR_NO_SUCH_INTERPRETER);
            }
            CHECK_EQ(tsa_delete(ts), 0);
        } else {
            CHECK(c == TSA_ERR_FINALIZING || c == TSA_ERR_NO_SUCH_INTERPRETER);
            if (c == TSA_ERR_NO_SUCH_INTERPRETER)
                break;
        }
    }
    return NULL;
}

static void scenario_finalize_race(void) {
    race_t r = {0};
    r.interp = new_interp(TSA_LOCK_OWN);
    pthread_t h, f, e;
    CHECK_EQ(pthread_create(&e, NULL, early_creator, &r), 0);
    CHECK_EQ(pthread_create(&h, NULL, holder_thread, &r), 0);
    while (!__atomic_load_n(&r.saved_ok, __ATOMIC_SEQ_CST) || !r.precreated)
        sleep_ms(1);
    CHECK_EQ(pthread_create(&f, NULL, finalizer_thread, &r), 0);
    while (tsa_interpreter_state(r.interp) != 1)
        sleep_ms(1);
    run_on_native_thread(late_caller, &r);
    CHECK_EQ(r.new_code, TSA_ERR_FINALIZING);
    __atomic_store_n(&r.stop, 1, __ATOMIC_SEQ_CST);
    CHECK_EQ(pthread_join(e, NULL), 0);
    CHECK_EQ(r.activate_code, TSA_ERR_FINALIZING);
    __atomic_store_n(&r.go, 1, __ATOMIC_SEQ_CST);
    CHECK_EQ(pthread_join(h, NULL), 0);
    CHECK_EQ(pthread_join(f, NULL), 0);
    run_on_native_thread(late_caller, &r);
    CHECK_EQ(r.new_code, TSA_ERR_NO_SUCH_INTERPRETER);

    for (int round = 0; round < 20; round++) {
        race_t q = {0};
        q.interp = new_interp(TSA_LOCK_OWN);
        pthread_t c;
        CHECK_EQ(pthread_create(&c, NULL, looping_caller, &q), 0);
        sleep_ms(round % 3);
        CHECK_EQ(tsa_finalize(q.interp, 10000), 0);
        __atomic_store_n(&q.stop, 1, __ATOMIC_SEQ_CST);
        CHECK_EQ(pthread_join(c, NULL), 0);
    }
    TSA_Diagnostics d;
    CHECK_EQ(tsa_diagnostics(&d), 0);
    CHECK_EQ(d.work_after_finalize, 0);
    CHECK_EQ(d.open_holds, 0);
}

/* ---- 7. misuse: each a documented code, state unchanged --------------- */

static void *foreign_use(void *arg) {
    TSA_ThreadState *ts = arg;
    CHECK_EQ(tsa_activate(ts), TSA_ERR_WRONG_THREAD);
    CHECK_EQ(tsa_delete(ts), TSA_ERR_WRONG_THREAD);
    return NULL;
}

static void scenario_misuse(void) {
    uint64_t interp = main_interp();
    TSA_ThreadState *a, *b, *cur;
    CHECK_EQ(tsa_new(interp, NULL), TSA_ERR_INVALID_ARGUMENT);
    CHECK_EQ(tsa_activate(NULL), TSA_ERR_INVALID_ARGUMENT);
    CHECK_EQ(tsa_get(NULL), TSA_ERR_INVALID_ARGUMENT);
    CHECK_EQ(tsa_new(0, &a), TSA_ERR_NO_SUCH_INTERPRETER);
    CHECK_EQ(tsa_new(interp, &a), 0);
    CHECK_EQ(tsa_new(interp, &b), 0);
    run_on_native_thread(foreign_use, a);
    CHECK_EQ(tsa_deactivate(a), TSA_ERR_NOT_ATTACHED);
    CHECK_EQ(tsa_activate(a), 0);
    CHECK_EQ(tsa_activate(a), TSA_ERR_BUSY);
    CHECK_EQ(tsa_delete(a), TSA_ERR_BUSY);
    CHECK_EQ(tsa_activate(b), 0);
    CHECK_EQ(tsa_deactivate(a), TSA_ERR_OUT_OF_ORDER);
    CHECK_EQ(tsa_get(&cur), 1);
    CHECK(cur == b);
    CHECK_EQ(tsa_deactivate(b), 0);
    CHECK_EQ(tsa_deactivate(a), 0);
    CHECK_EQ(tsa_delete(a), 0);
    CHECK_EQ(tsa_activate(a), TSA_ERR_INVALID_HANDLE); /* use after delete */
    CHECK_EQ(tsa_delete(a), TSA_ERR_INVALID_HANDLE);
    CHECK_EQ(tsa_delete(b), 0);
    CHECK_EQ(tsa_get(&cur), 0);
    CHECK(cur == NULL);
    const char *msg = NULL;
    CHECK_EQ(tsa_get_error_message(TSA_ERR_BUSY, &msg), 0);
    CHECK(strstr(msg, "busy") != NULL);
    tsa_inject_panics(1);
    CHECK_EQ(tsa_new(interp, &a), TSA_ERR_PANIC);
    CHECK_EQ(tsa_new(interp, &a), 0);
    CHECK_EQ(tsa_delete(a), 0);
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
