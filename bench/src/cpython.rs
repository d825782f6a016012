//! Real CPython 3.11 through libpython3.11, for the baseline column.
//! Compiled only with `cfg(has_libpython)` (see build.rs).

use std::ffi::{c_int, c_void};
use std::hint::black_box;
use std::time::{Duration, Instant};

type PyThreadState = c_void;
type PyInterpreterState = c_void;

unsafe extern "C" {
    fn Py_InitializeEx(initsigs: c_int);
    fn PyGILState_Ensure() -> c_int;
    fn PyGILState_Release(state: c_int);
    fn PyEval_SaveThread() -> *mut PyThreadState;
    fn PyEval_RestoreThread(ts: *mut PyThreadState);
    fn PyThreadState_New(interp: *mut PyInterpreterState) -> *mut PyThreadState;
    fn PyThreadState_Clear(ts: *mut PyThreadState);
    fn PyThreadState_DeleteCurrent();
    fn PyInterpreterState_Main() -> *mut PyInterpreterState;
    fn PyThreadState_Get() -> *mut PyThreadState;
    fn PyThreadState_Swap(ts: *mut PyThreadState) -> *mut PyThreadState;
    fn Py_NewInterpreter() -> *mut PyThreadState;
    fn Py_EndInterpreter(ts: *mut PyThreadState);
    fn Py_IncRef(o: *mut c_void);
    fn Py_DecRef(o: *mut c_void);
    static mut _Py_NoneStruct: u8;
}

/// Initializes CPython on the calling (main) thread and releases the GIL,
/// so that benchmark threads can take it with `PyGILState_Ensure`. CPython
/// stays initialized until the process exits.
pub fn init() {
    // SAFETY: called once, on the main thread, before any other CPython
    // call; the returned main thread state is intentionally kept detached.
    unsafe {
        Py_InitializeEx(0);
    }
    // with TSTATE_BACKEND=cpython the facades run on this CPython: each
    // (its own runtime) registers main while the main thread is attached
    crate::init_facades();
    // SAFETY: as above.
    unsafe {
        let _main = PyEval_SaveThread();
    }
}

fn none() -> *mut c_void {
    (&raw mut _Py_NoneStruct).cast()
}

/// A: Ensure + Release on a thread that already holds the GIL.
pub fn nested(iters: u64, _: u64) -> Duration {
    // SAFETY: the GIL/thread-state protocol is followed: every Ensure is
    // paired with a Release on the same thread, innermost first.
    unsafe {
        let g0 = PyGILState_Ensure();
        let t0 = Instant::now();
        for _ in 0..iters {
            let g = PyGILState_Ensure();
            PyGILState_Release(black_box(g));
        }
        let d = t0.elapsed();
        PyGILState_Release(g0);
        d
    }
}

/// B: Ensure + Release after `PyEval_SaveThread` (Py_BEGIN_ALLOW_THREADS).
pub fn reattach(iters: u64, _: u64) -> Duration {
    // SAFETY: as `nested`; the saved thread state is restored before the
    // outer Release.
    unsafe {
        let g0 = PyGILState_Ensure();
        let ts = PyEval_SaveThread();
        let t0 = Instant::now();
        for _ in 0..iters {
            let g = PyGILState_Ensure();
            PyGILState_Release(black_box(g));
        }
        let d = t0.elapsed();
        PyEval_RestoreThread(ts);
        PyGILState_Release(g0);
        d
    }
}

/// C: Ensure + Release on a thread with no thread state (each pair creates
/// and deletes one).
pub fn fresh(iters: u64, _: u64) -> Duration {
    // SAFETY: as `nested`.
    unsafe {
        let t0 = Instant::now();
        for _ in 0..iters {
            let g = PyGILState_Ensure();
            PyGILState_Release(black_box(g));
        }
        t0.elapsed()
    }
}

/// D: PyThreadState_New + PyEval_RestoreThread + PyThreadState_Clear +
/// PyThreadState_DeleteCurrent (the explicit lifecycle CPython has today).
pub fn explicit(iters: u64, _: u64) -> Duration {
    // SAFETY: the thread holds no GIL; each new thread state is attached,
    // cleared while attached, and deleted as the current one.
    unsafe {
        let interp = PyInterpreterState_Main();
        let t0 = Instant::now();
        for _ in 0..iters {
            let ts = PyThreadState_New(interp);
            PyEval_RestoreThread(ts);
            PyThreadState_Clear(ts);
            PyThreadState_DeleteCurrent();
        }
        t0.elapsed()
    }
}

/// `PyEval_SaveThread` + `PyEval_RestoreThread` while attached.
pub fn save_restore(iters: u64, _: u64) -> Duration {
    // SAFETY: as `nested`; each save is restored at once.
    unsafe {
        let g0 = PyGILState_Ensure();
        let t0 = Instant::now();
        for _ in 0..iters {
            let ts = PyEval_SaveThread();
            PyEval_RestoreThread(black_box(ts));
        }
        let d = t0.elapsed();
        PyGILState_Release(g0);
        d
    }
}

/// One E operation: Ensure, touch a Python object, Release.
pub fn ensure_work_release() {
    // SAFETY: as `nested`; None's refcount is only touched under the GIL.
    unsafe {
        let g = PyGILState_Ensure();
        Py_IncRef(none());
        Py_DecRef(none());
        PyGILState_Release(g);
    }
}

/// F's reference, CPython's own part of a finalization: on a fresh thread,
/// `Py_NewInterpreter` (a subinterpreter sharing the main interpreter's
/// lock, as F's on this backend), then `Py_EndInterpreter` of it, timed
/// alone. `None` if the subinterpreter could not be created.
pub fn end_interpreter() -> Option<Duration> {
    std::thread::spawn(|| {
        // SAFETY: the thread-state protocol of CPython 3.11: the GIL is
        // taken with a thread state of main, `Py_NewInterpreter` makes the
        // new interpreter's thread state current, `Py_EndInterpreter` is
        // called with it current and leaves none current with the GIL held,
        // and main's thread state is swapped back in before the GIL is
        // released by the matching `PyGILState_Release`.
        unsafe {
            let g = PyGILState_Ensure();
            let main_ts = PyThreadState_Get();
            let sub = Py_NewInterpreter();
            if sub.is_null() {
                PyThreadState_Swap(main_ts);
                PyGILState_Release(g);
                return None;
            }
            let t0 = Instant::now();
            Py_EndInterpreter(sub);
            let d = t0.elapsed();
            PyThreadState_Swap(main_ts);
            PyGILState_Release(g);
            Some(d)
        }
    })
    .join()
    .ok()
    .flatten()
}
