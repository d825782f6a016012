/* The guard design (tstate-ffi-guard, PEP 788) used from C, as its users
 * would: the discussion's c_thread_func, a Cython `with gil` block, a
 * PyArrow I/O callback, a native thread pool, a subinterpreter's thread, a
 * caller racing finalization, misuse — and PEP 788's own examples, written
 * with its spellings (TSTATE_GUARD_PEP788_NAMES). Build: see check.h.
 *
 * A refusal (NULL: the interpreter is finalizing or gone) is handled as a
 * finalization-safe caller should: report it and return, never abort. */
#include "check.h"
#define TSTATE_GUARD_PEP788_NAMES
#include "tstate_guard.h"

TSTATE_HELPERS(tsg)

/* ---- 1. the discussion's c_thread_func ------------------------------- */

typedef struct {
    int (*callable)(uint64_t interp); /* stands for a PyObject * */
    uint64_t interp;                  /* for the callable's work */
    PyInterpreterView *view;          /* what the thread attaches through */
} pyrun_t;

static int call_python(uint64_t interp) { return tsg_work(interp, NULL); }

/* The discussion's function in PEP 788's spelling: a view handed to the
 * thread, EnsureFromView (which takes a guard until Release), and a clean
 * return when the interpreter is going away. */
/* tstate:pattern fresh-thread */
static int
c_thread_func(pyrun_t *to_run)
{
    PyThreadStateToken *token = PyThreadState_EnsureFromView(to_run->view);
    if (token == NULL) {
        fprintf(stderr, "Python is finalizing or gone: %s\n",
                tsg_error_message(tsg_last_error()));
        return -1;
    }

    /* Run the function */
    CHECK_EQ(to_run->callable(to_run->interp), 0);
    PyThreadState_Release(token);
    return 0;
}
/* tstate:end */

static void *c_thread_main(void *arg) {
    CHECK(!is_attached_anywhere());
    CHECK_EQ(c_thread_func(arg), 0);
    CHECK(!is_attached_anywhere());
    return NULL;
}

static void scenario_c_thread_func(void) {
    pyrun_t r = {call_python, main_interp(), NULL};
    r.view = PyInterpreterView_FromMain();
    CHECK(r.view != NULL);
    run_on_native_thread(c_thread_main, &r);
    PyInterpreterView_Close(r.view);
    CHECK_EQ(work_count(r.interp), 1);
}

/* ---- 2. Cython-generated `with gil` in a nogil function --------------- */

/* What a code generator emits for `with gil:` given the module's view. */
static void cython_with_gil(PyInterpreterView *view, uint64_t interp) {
    /* tstate:pattern nested-call */
    PyThreadStateToken *gil = PyThreadState_EnsureFromView(view);
    if (gil == NULL) {
        fprintf(stderr, "with gil: %s\n", tsg_error_message(tsg_last_error()));
        return; /* Cython would raise/propagate here */
    }
    CHECK_EQ(tsg_work(interp, NULL), 0); /* the block's body */
    PyThreadState_Release(gil);
    /* tstate:end */
}

typedef struct {
    PyInterpreterView *view;
    uint64_t interp;
} where_t;

static void *cython_fresh(void *arg) {
    where_t *w = arg;
    CHECK(!is_attached_anywhere()); /* (a) never had a thread state */
    cython_with_gil(w->view, w->interp);
    CHECK(!is_attached_anywhere());
    return NULL;
}

static void *cython_holding_then_nogil(void *arg) {
    where_t *w = arg;
    uint64_t ts_before = 0, ts_after = 0, saved;
    PyThreadStateToken *outer = PyThreadState_EnsureFromView(w->view);
    CHECK(outer != NULL); /* a Python thread holding it */
    CHECK_EQ(tsg_current(&ts_before, NULL), 1);
    cython_with_gil(w->view, w->interp); /* (b) called while holding */
    CHECK_EQ(tsg_current(&ts_after, NULL), 1);
    CHECK_EQ(ts_after, ts_before);
    /* tstate:pattern nogil-reentry */
    tsg_save_thread(&saved);             /* with nogil: */
    cython_with_gil(w->view, w->interp); /* (c) after nogil released it */
    tsg_restore_thread(saved);           /* end of with nogil: */
    /* tstate:end */
    CHECK_EQ(tsg_is_attached(w->interp), 1);
    PyThreadState_Release(outer);
    CHECK(!is_attached_anywhere());
    return NULL;
}

static void scenario_cython_with_gil(void) {
    where_t w = {tsg_view_from_interpreter(main_interp()), main_interp()};
    CHECK(w.view != NULL);
    run_on_native_thread(cython_fresh, &w);
    run_on_native_thread(cython_holding_then_nogil, &w);
    tsg_view_close(w.view);
    CHECK_EQ(work_count(w.interp), 3);
}

/* ---- 3. PyArrow-style I/O callback ------------------------------------ */

/* Arrow's SafeCallIntoPython around a Python file object's tell(). */
static int64_t py_file_tell(where_t *w) {
    uint64_t pos = 0;
    PyThreadStateToken *t = PyThreadState_EnsureFromView(w->view);
    if (t == NULL)
        return -1; /* an I/O error for the caller: Python is going away */
    CHECK_EQ(tsg_work(w->interp, &pos), 0);
    PyThreadState_Release(t);
    return (int64_t)pos;
}

static void *python_thread_reading(void *arg) {
    where_t *w = arg;
    uint64_t saved;
    PyThreadStateToken *t = PyThreadState_EnsureFromView(w->view);
    CHECK(t != NULL);                     /* a Python-created thread */
    CHECK(py_file_tell(w) > 0);           /* synchronous read: nested */
    CHECK_EQ(tsg_save_thread(&saved), 0); /* Arrow releases the GIL... */
    CHECK(py_file_tell(w) > 0);           /* ...and its IO calls back */
    CHECK_EQ(tsg_restore_thread(saved), 0);
    PyThreadState_Release(t);
    return NULL;
}

static void *pool_thread_reading(void *arg) {
    for (int i = 0; i < 10; i++)
        CHECK(py_file_tell(arg) > 0);
    CHECK(!is_attached_anywhere());
    return NULL;
}

static void scenario_pyarrow_callback(void) {
    where_t w = {tsg_view_from_interpreter(main_interp()), main_interp()};
    run_on_native_thread(python_thread_reading, &w);
    run_on_native_thread(pool_thread_reading, &w);
    tsg_view_close(w.view);
    CHECK_EQ(work_count(w.interp), 12);
}

/* ---- 4. a native thread pool ----------------------------------------- */

#define POOL_WORKERS 4
#define POOL_TASKS 400

typedef struct {
    task_queue q;
    where_t w;
} pool_t;

static void *pool_worker(void *arg) {
    pool_t *p = arg;
    int task;
    while ((task = take_task(&p->q)) >= 0) {
        /* tstate:pattern pool-task */
        PyThreadStateToken *t = PyThreadState_EnsureFromView(p->w.view);
        if (t == NULL) {
            fprintf(stderr, "task %d: %s\n", task,
                    tsg_error_message(tsg_last_error()));
            return NULL;
        }
        uint64_t leaked = 1;
        CHECK_EQ(tsg_scratch_get(&leaked), 0);
        CHECK_EQ(leaked, 0);
        CHECK_EQ(tsg_scratch_set((uint64_t)task + 1), 0);
        CHECK_EQ(tsg_work(p->w.interp, NULL), 0);
        PyThreadState_Release(t);
        /* tstate:end */
        CHECK(!is_attached_anywhere());
    }
    return NULL;
}

static void scenario_thread_pool(void) {
    pool_t p = {{PTHREAD_MUTEX_INITIALIZER, 0, POOL_TASKS},
                {tsg_view_from_interpreter(main_interp()), main_interp()}};
    pthread_t w[POOL_WORKERS];
    for (int i = 0; i < POOL_WORKERS; i++)
        CHECK_EQ(pthread_create(&w[i], NULL, pool_worker, &p), 0);
    for (int i = 0; i < POOL_WORKERS; i++)
        CHECK_EQ(pthread_join(w[i], NULL), 0);
    tsg_view_close(p.w.view);
    CHECK_EQ(work_count(p.w.interp), POOL_TASKS);
    TSG_Diagnostics d;
    CHECK_EQ(tsg_diagnostics(&d), 0);
    CHECK_EQ(d.exclusion_violations, 0);
    CHECK_EQ(d.open_holds, 0);
}

/* ---- 5. a subinterpreter's thread calls back into it ------------------ */

static void *sub_thread(void *arg) {
    where_t *w = arg;
    uint64_t on = 0;
    /* tstate:pattern subinterpreter-callback */
    PyThreadStateToken *t = PyThreadState_EnsureFromView(w->view);
    if (t == NULL)
        return NULL;
    CHECK_EQ(tsg_work(w->interp, NULL), 0);
    CHECK_EQ(tsg_current(NULL, &on), 1);
    CHECK_EQ(on, w->interp);
    CHECK_EQ(tsg_is_attached(main_interp()), 0);
    PyThreadState_Release(t);
    /* tstate:end */
    return NULL;
}

static void scenario_subinterpreter_thread(void) {
    uint64_t main = main_interp(), sub = new_interp(TSG_LOCK_OWN), saved;
    where_t w = {tsg_view_from_interpreter(sub), sub};
    /* the subinterpreter's own thread, then a thread it spawns */
    PyThreadStateToken *t = PyThreadState_EnsureFromView(w.view);
    CHECK(t != NULL);
    /* PEP 788: a view of the current interpreter, for the new thread */
    PyInterpreterView *mine = PyInterpreterView_FromCurrent();
    CHECK(mine != NULL);
    where_t spawned = {mine, sub};
    CHECK_EQ(tsg_save_thread(&saved), 0);
    run_on_native_thread(sub_thread, &spawned);
    CHECK_EQ(tsg_restore_thread(saved), 0);
    PyThreadState_Release(t);
    PyInterpreterView_Close(mine);
    tsg_view_close(w.view);
    CHECK_EQ(work_count(sub), 1);
    CHECK_EQ(work_count(main), 0);
    CHECK_EQ(tsg_finalize(sub, 5000), 0);
}

/* ---- 6. calling in while another thread finalizes --------------------- */

typedef struct {
    uint64_t interp;
    PyInterpreterView *view;
    volatile int go, saved_ok, stop;
    int last_code;
} race_t;

static void *holder_thread(void *arg) {
    race_t *r = arg;
    uint64_t saved;
    PyThreadStateToken *t = PyThreadState_EnsureFromView(r->view);
    CHECK(t != NULL);
    CHECK_EQ(tsg_save_thread(&saved), 0);
    __atomic_store_n(&r->saved_ok, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&r->go, __ATOMIC_SEQ_CST))
        sleep_ms(1);
    CHECK_EQ(tsg_restore_thread(saved), 0);
    CHECK_EQ(tsg_work(r->interp, NULL), 0);
    PyThreadState_Release(t);
    return NULL;
}

static void *finalizer_thread(void *arg) {
    race_t *r = arg;
    CHECK_EQ(tsg_finalize(r->interp, 10000), 0);
    return NULL;
}

static void *late_caller(void *arg) {
    race_t *r = arg;
    PyThreadStateToken *t = PyThreadState_EnsureFromView(r->view);
    r->last_code = t == NULL ? tsg_last_error() : 0;
    if (t != NULL)
        PyThreadState_Release(t);
    return NULL;
}

static void *looping_caller(void *arg) {
    race_t *r = arg;
    while (!__atomic_load_n(&r->stop, __ATOMIC_SEQ_CST)) {
        PyThreadStateToken *t = PyThreadState_EnsureFromView(r->view);
        if (t != NULL) {
            CHECK_EQ(tsg_work(r->interp, NULL), 0);
            PyThreadState_Release(t);
        } else {
            int c = tsg_last_error();
            CHECK(c == TSG_ERR_FINALIZING || c == TSG_ERR_NO_SUCH_INTERPRETER);
            if (c == TSG_ERR_NO_SUCH_INTERPRETER)
                break;
        }
    }
    return NULL;
}

static void scenario_finalize_race(void) {
    race_t r = {0};
    r.interp = new_interp(TSG_LOCK_OWN);
    r.view = tsg_view_from_interpreter(r.interp);
    pthread_t h, f;
    CHECK_EQ(pthread_create(&h, NULL, holder_thread, &r), 0);
    while (!__atomic_load_n(&r.saved_ok, __ATOMIC_SEQ_CST))
        sleep_ms(1);
    CHECK_EQ(pthread_create(&f, NULL, finalizer_thread, &r), 0);
    while (tsg_interpreter_state(r.interp) != 1)
        sleep_ms(1);
    run_on_native_thread(late_caller, &r);
    CHECK_EQ(r.last_code, TSG_ERR_FINALIZING);
    __atomic_store_n(&r.go, 1, __ATOMIC_SEQ_CST);
    CHECK_EQ(pthread_join(h, NULL), 0);
    CHECK_EQ(pthread_join(f, NULL), 0);
    run_on_native_thread(late_caller, &r);
    CHECK_EQ(r.last_code, TSG_ERR_NO_SUCH_INTERPRETER);
    tsg_view_close(r.view); /* a view stays valid after its interpreter */

    for (int round = 0; round < 20; round++) {
        race_t q = {0};
        q.interp = new_interp(TSG_LOCK_OWN);
        q.view = tsg_view_from_interpreter(q.interp);
        pthread_t c;
        CHECK_EQ(pthread_create(&c, NULL, looping_caller, &q), 0);
        sleep_ms(round % 3);
        CHECK_EQ(tsg_finalize(q.interp, 10000), 0);
        __atomic_store_n(&q.stop, 1, __ATOMIC_SEQ_CST);
        CHECK_EQ(pthread_join(c, NULL), 0);
        tsg_view_close(q.view);
    }
    TSG_Diagnostics d;
    CHECK_EQ(tsg_diagnostics(&d), 0);
    CHECK_EQ(d.work_after_finalize, 0);
    CHECK_EQ(d.open_holds, 0);
}

/* ---- 7. misuse is detected, state unchanged --------------------------- */

static int hook_code;
static void record_hook(int code, const char *message) {
    (void)message;
    hook_code = code;
}

static void *foreign_release(void *arg) {
    hook_code = 0;
    PyThreadState_Release((PyThreadStateToken *)arg);
    CHECK(hook_code == TSG_ERR_WRONG_THREAD);
    return NULL;
}

static void scenario_misuse(void) {
    uint64_t interp = main_interp(), sub = new_interp(TSG_LOCK_OWN), on = 0;
    tsg_set_fatal_hook(record_hook);
    PyInterpreterView *vm = tsg_view_from_interpreter(interp);
    PyInterpreterView *vs = tsg_view_from_interpreter(sub);
    /* NULL arguments: NULL back, and the code */
    CHECK(PyInterpreterGuard_FromView(NULL) == NULL);
    CHECK_EQ(tsg_last_error(), TSG_ERR_INVALID_ARGUMENT);
    CHECK(PyThreadState_Ensure(NULL) == NULL);
    CHECK_EQ(tsg_last_error(), TSG_ERR_INVALID_ARGUMENT);
    /* no attached thread state: no guard or view from current */
    CHECK(PyInterpreterGuard_FromCurrent() == NULL);
    CHECK_EQ(tsg_last_error(), TSG_ERR_NOT_ATTACHED);
    /* a closed guard is detected (PEP 788: undefined) */
    PyInterpreterGuard *g = PyInterpreterGuard_FromView(vs);
    CHECK(g != NULL);
    PyInterpreterGuard_Close(g);
    CHECK(PyThreadState_Ensure(g) == NULL);
    CHECK_EQ(tsg_last_error(), TSG_ERR_INVALID_HANDLE);
    hook_code = 0;
    PyInterpreterGuard_Close(g); /* double close */
    CHECK_EQ(hook_code, TSG_ERR_INVALID_HANDLE);
    /* out-of-order, foreign and double releases */
    PyThreadStateToken *a = PyThreadState_EnsureFromView(vm);
    PyThreadStateToken *b = PyThreadState_EnsureFromView(vs);
    CHECK(a != NULL && b != NULL);
    hook_code = 0;
    PyThreadState_Release(a);
    CHECK_EQ(hook_code, TSG_ERR_OUT_OF_ORDER);
    run_on_native_thread(foreign_release, b);
    CHECK_EQ(tsg_current(NULL, &on), 1);
    CHECK_EQ(on, sub); /* unchanged by the refused releases */
    PyThreadState_Release(b);
    hook_code = 0;
    PyThreadState_Release(b); /* released more often than ensured */
    CHECK_EQ(hook_code, TSG_ERR_INVALID_HANDLE);
    CHECK_EQ(tsg_current(NULL, &on), 1);
    CHECK_EQ(on, interp);
    PyThreadState_Release(a);
    CHECK(!is_attached_anywhere());
    hook_code = 0;
    PyThreadState_Release((PyThreadStateToken *)(uintptr_t)0x12345); /* forged */
    CHECK_EQ(hook_code, TSG_ERR_INVALID_HANDLE);
    tsg_view_close(vm);
    tsg_view_close(vs);
    hook_code = 0;
    tsg_view_close(vs);
    CHECK_EQ(hook_code, TSG_ERR_INVALID_HANDLE);
    tsg_inject_panics(1);
    CHECK(tsg_view_from_main() == NULL);
    CHECK_EQ(tsg_last_error(), TSG_ERR_PANIC);
    tsg_set_fatal_hook(NULL);
}

/* ---- 8. PEP 788's own examples, in its spelling ----------------------- */

/* "Example: A Daemon Thread": the thread ensures with a guard, then closes
 * the guard, so it never blocks the interpreter's finalization. */
static void *daemon_thread(void *arg) {
    PyInterpreterGuard *guard = arg;
    PyThreadStateToken *token = PyThreadState_Ensure(guard);
    PyInterpreterGuard_Close(guard); /* the daemon no longer holds it */
    if (token == NULL)
        return NULL;
    CHECK_EQ(tsg_work(main_interp(), NULL), 0);
    PyThreadState_Release(token);
    return NULL;
}

/* "Example: Calling Python from a Native Callback": the callback holds a
 * view; each call attaches through it and handles a refusal. */
static int native_callback(PyInterpreterView *view, uint64_t interp) {
    PyThreadStateToken *token = PyThreadState_EnsureFromView(view);
    if (token == NULL)
        return -1; /* the interpreter has shut down: nothing to call */
    int r = tsg_work(interp, NULL);
    PyThreadState_Release(token);
    return r;
}

static void scenario_pep788_examples(void) {
    uint64_t interp = main_interp();
    /* the guard is taken by the creating thread, while attached */
    PyInterpreterView *main_view = PyInterpreterView_FromMain();
    PyThreadStateToken *me = PyThreadState_EnsureFromView(main_view);
    CHECK(me != NULL);
    PyInterpreterGuard *guard = PyInterpreterGuard_FromCurrent();
    CHECK(guard != NULL);
    uint64_t saved;
    CHECK_EQ(tsg_save_thread(&saved), 0);
    run_on_native_thread(daemon_thread, guard);
    CHECK_EQ(tsg_restore_thread(saved), 0);
    PyThreadState_Release(me);
    PyInterpreterView_Close(main_view);
    /* the callback: works while the interpreter runs, refuses after */
    uint64_t sub = new_interp(TSG_LOCK_OWN);
    PyInterpreterView *view = tsg_view_from_interpreter(sub);
    CHECK_EQ(native_callback(view, sub), 0);
    CHECK_EQ(tsg_finalize(sub, 5000), 0);
    CHECK_EQ(native_callback(view, sub), -1);
    CHECK_EQ(tsg_last_error(), TSG_ERR_NO_SUCH_INTERPRETER);
    PyInterpreterView_Close(view);
    CHECK_EQ(work_count(interp), 1);
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
        {"pep788_examples", scenario_pep788_examples},
    };
    return run_scenario(list, sizeof list / sizeof list[0], argc, argv);
}
