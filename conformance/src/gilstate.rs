//! `gilstate`: CPython's own API as a pseudo-design, so that the suite's
//! cases measure what callers use today — `PyGILState_Ensure` /
//! `PyGILState_Release`, `PyEval_SaveThread` / `PyEval_RestoreThread`,
//! `Py_NewInterpreter` / `Py_EndInterpreter`, `Py_FinalizeEx`,
//! `PyGILState_Check` — on real libpython, with no library in between.
//!
//! It runs only on CPython, in child processes (`crate::child`). Where the
//! API has no equivalent of a shared function, the closest thing a caller
//! has is used and said so:
//!
//! * interpreter ids are `PyInterpreterState *` values (CPython has no
//!   generational id: a stale one is whatever is at that address now);
//! * ensure takes no interpreter (`PyGILState_Ensure` attaches to the
//!   thread's gilstate interpreter, normally main);
//! * "am I attached to X?" is `PyGILState_Check()` (what extensions call);
//! * finalize is `Py_EndInterpreter` / `Py_FinalizeEx`, which wait for no
//!   one and report no holders; the timeout is ignored;
//! * there is no fault injection, panic injection or diagnostics (zeros).
//!
//! A thread that CPython ends with `pthread_exit` inside one of its calls
//! (finalization kills attaching threads on 3.9–3.13) is reported: a guard
//! around each such call prints `THREAD-KILLED` on stdout when the forced
//! unwind passes it (the process then aborts: the unwind cannot leave a
//! Rust thread), and the parent classifies the run as THREAD-KILLED.

use crate::facade::{Code, Facade};
use std::collections::HashMap;
use std::ffi::{c_char, c_int};
use std::sync::Mutex;
use tstate_core::Diagnostics;
use tstate_core::c_abi::{CBackendInfo, CHolder, SharedAbi};
use tstate_core::cpython::ffi::{self, Api, PyThreadState};

const OK: c_int = 0;
const NO_SUCH: c_int = -3;
const NOT_ATTACHED: c_int = -5;
const INVALID_ARGUMENT: c_int = -8;
const NO_MEMORY: c_int = -1;
const UNSUPPORTED: c_int = -12;

fn api() -> &'static Api {
    ffi::api().expect("gilstate runs only in a process with libpython")
}

/// Prints `THREAD-KILLED` if dropped by a forced unwind (CPython's
/// `pthread_exit`) rather than disarmed after the call returned.
struct KillWatch;

impl Drop for KillWatch {
    fn drop(&mut self) {
        let msg = b"THREAD-KILLED\n";
        // SAFETY: writes a static buffer to stdout; async-signal-safe.
        unsafe { libc::write(1, msg.as_ptr().cast(), msg.len()) };
    }
}

/// Calls `f` (a CPython call that may end the thread), watching for it.
fn watched<R>(f: impl FnOnce() -> R) -> R {
    let w = KillWatch;
    let r = f();
    std::mem::forget(w);
    r
}

fn ensure_c_unwind() -> unsafe extern "C-unwind" fn() -> c_int {
    // SAFETY: the same function with the unwinding ABI: CPython's
    // `pthread_exit` inside it is a forced unwind through our frames.
    unsafe { std::mem::transmute(api().PyGILState_Ensure as *const ()) }
}

fn restore_c_unwind() -> unsafe extern "C-unwind" fn(*mut PyThreadState) {
    // SAFETY: as `ensure_c_unwind`.
    unsafe { std::mem::transmute(api().PyEval_RestoreThread as *const ()) }
}

/// Per-interpreter bookkeeping the API does not keep: work counters, and a
/// subinterpreter's thread state (to end it with).
struct Books {
    work: HashMap<u64, u64>,
    subs: HashMap<u64, usize>,
}

static BOOKS: Mutex<Option<Books>> = Mutex::new(None);

fn books<R>(f: impl FnOnce(&mut Books) -> R) -> R {
    let mut g = BOOKS.lock().unwrap_or_else(|p| p.into_inner());
    let b = g.get_or_insert_with(|| Books {
        work: HashMap::new(),
        subs: HashMap::new(),
    });
    f(b)
}

// SAFETY (for every function below): each is called by the suite in a
// process where libpython is loaded and initialized (see `crate::child`);
// out-pointers come from the suite and are valid or NULL (checked).

extern "C" fn initialize() -> c_int {
    let a = api();
    // SAFETY: see above.
    unsafe {
        if (a.Py_IsInitialized)() == 0 {
            (a.Py_InitializeEx)(0);
        }
    }
    OK
}

unsafe extern "C" fn main_interpreter(out: *mut u64) -> c_int {
    if out.is_null() {
        return INVALID_ARGUMENT;
    }
    // SAFETY: see above.
    unsafe { out.write((api().PyInterpreterState_Main)() as u64) };
    OK
}

unsafe extern "C" fn current_interpreter(out: *mut u64) -> c_int {
    if out.is_null() {
        return INVALID_ARGUMENT;
    }
    let a = api();
    // SAFETY: see above.
    unsafe {
        if (a.PyGILState_Check)() == 0 {
            return NOT_ATTACHED;
        }
        let t = (a.PyGILState_GetThisThreadState)();
        out.write((a.PyThreadState_GetInterpreter)(t) as u64);
    }
    OK
}

unsafe extern "C" fn create_interpreter(mode: u32, out: *mut u64) -> c_int {
    if out.is_null() {
        return INVALID_ARGUMENT;
    }
    if mode > 2 {
        return INVALID_ARGUMENT;
    }
    let a = api();
    if mode == 2 || (mode == 0 && a.version < (3, 12)) {
        return UNSUPPORTED;
    }
    // SAFETY: see above. Py_NewInterpreter needs an attached thread state:
    // PyGILState_Ensure gives one (main's); the new interpreter's first
    // thread state is kept (detached) to end it with.
    unsafe {
        let g = watched(|| ensure_c_unwind()());
        let before = a.current();
        let t0 = if mode == 0 {
            let Some(f) = a.Py_NewInterpreterFromConfig else {
                (a.PyGILState_Release)(g);
                return UNSUPPORTED;
            };
            let mut t: *mut PyThreadState = std::ptr::null_mut();
            let st = f(&mut t, &ffi::ISOLATED_OWN_GIL);
            if st.kind != 0 {
                t = std::ptr::null_mut();
            }
            t
        } else {
            (a.Py_NewInterpreter)()
        };
        if t0.is_null() {
            (a.PyThreadState_Swap)(before);
            (a.PyGILState_Release)(g);
            return NO_MEMORY;
        }
        let id = (a.PyThreadState_GetInterpreter)(t0) as u64;
        // back to the thread state PyGILState_Ensure attached
        if a.version >= (3, 12) {
            (a.PyEval_SaveThread)();
            watched(|| restore_c_unwind()(before));
        } else {
            (a.PyThreadState_Swap)(before);
        }
        (a.PyGILState_Release)(g);
        books(|b| b.subs.insert(id, t0 as usize));
        out.write(id);
    }
    OK
}

extern "C" fn interpreter_state(id: u64) -> c_int {
    // CPython has no query: known subinterpreters and main are "running"
    // SAFETY: see above.
    let main = unsafe { (api().PyInterpreterState_Main)() } as u64;
    if id == main || books(|b| b.subs.contains_key(&id)) {
        OK
    } else {
        NO_SUCH
    }
}

extern "C" fn finalize(id: u64, _timeout_ms: i64) -> c_int {
    let a = api();
    // SAFETY: see above.
    let main = unsafe { (a.PyInterpreterState_Main)() } as u64;
    if id == main {
        // SAFETY: Py_FinalizeEx on a thread attached through PyGILState.
        unsafe {
            let _g = watched(|| ensure_c_unwind()());
            return if (a.Py_FinalizeEx)() == 0 { OK } else { -10 };
        }
    }
    let Some(t0) = books(|b| b.subs.remove(&id)) else {
        return NO_SUCH;
    };
    // SAFETY: the subinterpreter's own first thread state is swapped in
    // (with the GIL of main through PyGILState) and ended, as an embedder
    // would; no one is waited for.
    unsafe {
        let g = watched(|| ensure_c_unwind()());
        let before = a.current();
        if a.version >= (3, 12) {
            (a.PyEval_SaveThread)();
            watched(|| restore_c_unwind()(t0 as *mut PyThreadState));
        } else {
            (a.PyThreadState_Swap)(t0 as *mut PyThreadState);
        }
        (a.Py_EndInterpreter)(t0 as *mut PyThreadState);
        if a.version >= (3, 12) {
            watched(|| restore_c_unwind()(before));
        } else {
            (a.PyThreadState_Swap)(before);
        }
        (a.PyGILState_Release)(g);
    }
    OK
}

unsafe extern "C" fn finalize_report(
    id: u64,
    timeout_ms: i64,
    _buf: *mut CHolder,
    _cap: usize,
    count: *mut usize,
) -> c_int {
    if count.is_null() {
        return INVALID_ARGUMENT;
    }
    // SAFETY: valid out-pointer (checked).
    unsafe { count.write(0) };
    finalize(id, timeout_ms)
}

extern "C" fn finalize_all(timeout_ms: i64) -> c_int {
    // SAFETY: see above.
    finalize(
        unsafe { (api().PyInterpreterState_Main)() } as u64,
        timeout_ms,
    )
}

unsafe extern "C" fn holders(_: u64, _: *mut CHolder, _: usize, count: *mut usize) -> c_int {
    // CPython reports no holders
    if count.is_null() {
        return INVALID_ARGUMENT;
    }
    // SAFETY: valid out-pointer (checked).
    unsafe { count.write(0) };
    OK
}

unsafe extern "C" fn save_thread(out: *mut u64) -> c_int {
    if out.is_null() {
        return INVALID_ARGUMENT;
    }
    let a = api();
    // SAFETY: see above; PyEval_SaveThread is fatal without a thread state,
    // which is what a caller gets.
    unsafe {
        let t = (a.PyEval_SaveThread)();
        out.write(t as u64);
    }
    OK
}

extern "C" fn restore_thread(ts: u64) -> c_int {
    // SAFETY: see above; whatever the caller passes goes to CPython.
    watched(|| unsafe { restore_c_unwind()(ts as *mut PyThreadState) });
    OK
}

unsafe extern "C" fn work(id: u64, value: *mut u64) -> c_int {
    let a = api();
    // SAFETY: see above.
    unsafe {
        if (a.PyGILState_Check)() == 0 {
            return NOT_ATTACHED;
        }
        let t = (a.PyGILState_GetThisThreadState)();
        let cur = a.current();
        // attached, but to which interpreter? (the thread's own one)
        let on = if cur.is_null() { t } else { cur };
        if on.is_null() || (a.PyThreadState_GetInterpreter)(on) as u64 != id {
            return NOT_ATTACHED;
        }
        let o = (a.PyLong_FromLong)(0x7fff_1234);
        if !o.is_null() {
            (a.Py_DecRef)(o);
        }
    }
    let v = books(|b| {
        let c = b.work.entry(id).or_insert(0);
        *c += 1;
        *c
    });
    if !value.is_null() {
        // SAFETY: non-NULL out-pointer from the suite.
        unsafe { value.write(v) };
    }
    OK
}

unsafe extern "C" fn work_count(id: u64, value: *mut u64) -> c_int {
    if value.is_null() {
        return INVALID_ARGUMENT;
    }
    if interpreter_state(id) < 0 {
        return NO_SUCH;
    }
    let v = books(|b| b.work.get(&id).copied().unwrap_or(0));
    // SAFETY: valid out-pointer (checked).
    unsafe { value.write(v) };
    OK
}

extern "C" fn is_attached(_: u64) -> c_int {
    // what extensions ask today: PyGILState_Check (no interpreter argument)
    // SAFETY: see above.
    unsafe { (api().PyGILState_Check)() }
}

unsafe extern "C" fn current(ts: *mut u64, interp: *mut u64) -> c_int {
    let a = api();
    // SAFETY: see above.
    unsafe {
        if (a.PyGILState_Check)() == 0 {
            return 0;
        }
        let t = (a.PyGILState_GetThisThreadState)();
        if t.is_null() {
            return 0;
        }
        if !ts.is_null() {
            ts.write(t as u64);
        }
        if !interp.is_null() {
            interp.write((a.PyThreadState_GetInterpreter)(t) as u64);
        }
    }
    1
}

extern "C" fn error_message(code: c_int) -> *const c_char {
    tstate_core::Error::c_message_for_code(code).as_ptr()
}

const SCRATCH: &std::ffi::CStr = c"tstate.scratch";

extern "C" fn scratch_set(v: u64) -> c_int {
    let a = api();
    // SAFETY: see above (the thread's dict, under the GIL it holds).
    unsafe {
        if (a.PyGILState_Check)() == 0 {
            return NOT_ATTACHED;
        }
        let d = (a.PyThreadState_GetDict)();
        let o = (a.PyLong_FromUnsignedLongLong)(v);
        if d.is_null() || o.is_null() {
            return NO_MEMORY;
        }
        (a.PyDict_SetItemString)(d, SCRATCH.as_ptr(), o);
        (a.Py_DecRef)(o);
    }
    OK
}

unsafe extern "C" fn scratch_get(v: *mut u64) -> c_int {
    if v.is_null() {
        return INVALID_ARGUMENT;
    }
    let a = api();
    // SAFETY: see above.
    unsafe {
        if (a.PyGILState_Check)() == 0 {
            return NOT_ATTACHED;
        }
        let d = (a.PyThreadState_GetDict)();
        let o = if d.is_null() {
            std::ptr::null_mut()
        } else {
            (a.PyDict_GetItemString)(d, SCRATCH.as_ptr())
        };
        v.write(if o.is_null() {
            0
        } else {
            (a.PyLong_AsUnsignedLongLong)(o)
        });
    }
    OK
}

extern "C" fn fail_allocations(_: u32, _: u32) {}

extern "C" fn inject_panics(_: u32) {}

unsafe extern "C" fn diagnostics(out: *mut Diagnostics) -> c_int {
    if out.is_null() {
        return INVALID_ARGUMENT;
    }
    // SAFETY: valid out-pointer (checked).
    unsafe { out.write(Diagnostics::default()) };
    OK
}

unsafe extern "C" fn backend_info(out: *mut CBackendInfo) -> c_int {
    if out.is_null() {
        return INVALID_ARGUMENT;
    }
    let a = api();
    let own = if a.version >= (3, 12) { 1 } else { 0 };
    // SAFETY: valid out-pointer (checked).
    unsafe {
        out.write(CBackendInfo {
            kind: 1,
            python_major: a.version.0,
            python_minor: a.version.1,
            lock_modes: own | 2,
        })
    };
    OK
}

extern "C" fn set_exit_bound(_: i64) -> c_int {
    OK
}

/// The shared functions over CPython's own API.
pub static SHARED: SharedAbi = SharedAbi {
    initialize,
    main_interpreter,
    current_interpreter,
    create_interpreter,
    interpreter_state,
    finalize,
    finalize_report,
    finalize_all,
    holders,
    save_thread,
    restore_thread,
    work,
    work_count,
    is_attached,
    current,
    error_message,
    scratch_set,
    scratch_get,
    fail_allocations,
    inject_panics,
    diagnostics,
    backend_info,
    set_exit_bound,
};

/// CPython's own API (`PyGILState_*`) as a pseudo-design.
pub struct GilState;

impl Facade for GilState {
    const NAME: &'static str = "gilstate";
    const TITLE: &'static str = "CPython's PyGILState_Ensure/Release (the API in use today)";
    const RELEASE_NAMES_SPAN: bool = false;
    const EXPLICIT_LIFECYCLE: bool = false;
    const RELEASE_RETURNS_CODE: bool = false;
    type Span = c_int;

    fn enter(_interp: u64) -> Result<c_int, Code> {
        // no interpreter argument; never refuses
        // SAFETY: see above.
        Ok(watched(|| unsafe { ensure_c_unwind()() }))
    }
    fn leave(state: c_int) -> Result<(), Code> {
        // SAFETY: the state PyGILState_Ensure returned (or whatever the
        // case passes: misuse is CPython's fatal error).
        unsafe { (api().PyGILState_Release)(state) };
        Ok(())
    }
    fn release_nothing() -> Result<(), Code> {
        Self::leave(1) // PyGILState_UNLOCKED on a thread that never ensured
    }
    fn forged_span() -> Option<c_int> {
        None
    }
    fn null_pointer_probes() -> Vec<(&'static str, Code)> {
        Vec::new()
    }
    fn abi() -> &'static SharedAbi {
        &SHARED
    }
}
