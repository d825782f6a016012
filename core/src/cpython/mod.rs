//! The CPython backend: the same machine over real libpython 3.9–3.13.
//!
//! * An interpreter is a `PyInterpreterState *` the library has
//!   *registered*: named while attached to it (main, the interpreter a
//!   thread is attached to, one created through the facade). Registration
//!   puts a C function into that interpreter's `atexit` list: the one hook
//!   that runs before CPython starts finalizing it, with it intact
//!   (`docs/cpython-backend.md`). The callback closes the gate.
//! * A thread state is a `PyThreadState *`; attach is
//!   `PyEval_RestoreThread`, detach `PyEval_SaveThread`, free is
//!   `PyThreadState_Clear` + `PyThreadState_DeleteCurrent` on the owner
//!   thread. Main's thread states are kept between spans (reset: their dict
//!   cleared, the error indicator cleared); subinterpreters' ones are freed
//!   at the outermost release, on their own thread (CPython cannot free a
//!   thread state of another live thread safely).
//! * The lock is the GIL: main's, shared by legacy subinterpreters; an
//!   own-GIL subinterpreter (3.12+) has its own.
//! * Other code can attach and detach thread states (Python threads,
//!   `Py_BEGIN_ALLOW_THREADS` in Cython-generated code), so the span
//!   machine checks the real attached thread state before trusting its
//!   record (`EXTERNAL_SWITCHES`).

pub mod ffi;
pub(crate) mod hooks;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::interp::Interp;
use crate::registry::Registry;
use crate::sync::Arc;
use crate::thread::{CtxSlot, ctx_slot};
use crate::tstate::TState;
use crate::types::{BackendKind, InterpreterId, LockMode, ReusePolicy};
use ffi::{Api, PyInterpreterState, PyThreadState};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The CPython backend.
pub struct CPython {
    pub(crate) api: &'static Api,
    /// Serializes registrations (two threads naming one new interpreter at
    /// once register it once).
    pub(crate) registering: parking_lot::Mutex<()>,
}

impl CPython {
    /// The backend, if a libpython is loaded in this process.
    pub(crate) fn new() -> Result<CPython> {
        let api = ffi::api().map_err(|_| Error::Unsupported)?;
        if api.version < (3, 9) {
            return Err(Error::Unsupported);
        }
        Ok(CPython {
            api,
            registering: parking_lot::Mutex::new(()),
        })
    }
}

/// A registered interpreter.
pub struct CpyInterp {
    /// Its `PyInterpreterState *`; dereferenced (passed to CPython) only
    /// while a hold keeps it from being ended, or on a thread attached to
    /// it.
    pub(crate) ptr: usize,
    /// `PyInterpreterState_GetID` (monotonic: tells a reused address apart).
    pub(crate) py_id: i64,
    /// Created with its own GIL (3.12+).
    pub(crate) own_gil: bool,
    /// Created through the library (not only registered).
    pub(crate) created: bool,
    /// Main, for a subinterpreter that shares main's GIL.
    pub(crate) main: Option<Arc<Interp<CPython>>>,
    /// A subinterpreter's first thread state, made by `Py_NewInterpreter`
    /// and kept (detached, never attached again) until the interpreter is
    /// ended, so that its thread list never becomes empty: CPython 3.11 and
    /// 3.12 abort ("thread state already initialized") when a thread state
    /// is created in an interpreter whose last one was deleted. 0 if none.
    pub(crate) keeper: AtomicUsize,
    /// The OS thread that created the subinterpreter (and its keeper). The
    /// subinterpreter's `threading` module was imported on the keeper, so
    /// its `_MainThread` lock is the keeper's; `threading._shutdown` (run
    /// by `Py_EndInterpreter` before the atexit callbacks) releases that
    /// lock itself on this thread, but on any other thread it waits for it
    /// (3.10–3.12): ended from another thread, the keeper must go first.
    pub(crate) keeper_thread: u64,
}

/// A thread state's `PyThreadState *` (0: not materialized).
pub struct CpyTState {
    pub(crate) ptr: AtomicUsize,
}

ctx_slot!(fn cpython_slot, fn cpython_ctx_ptr);

impl CpyTState {
    fn get(&self) -> *mut PyThreadState {
        self.ptr.load(Ordering::Relaxed) as *mut PyThreadState
    }
}

impl Backend for CPython {
    type Interp = CpyInterp;
    type TState = CpyTState;
    const KIND: BackendKind = BackendKind::CPython;
    const EXTERNAL_SWITCHES: bool = true;
    const LOCK_BITS: bool = false;

    fn ctx_slot() -> &'static CtxSlot {
        cpython_slot()
    }

    #[inline(always)]
    fn ctx_ptr() -> Option<*mut ()> {
        cpython_ctx_ptr()
    }

    fn lock_group(i: &Interp<Self>) -> Option<&Interp<Self>> {
        if i.is_main || i.data.own_gil {
            Some(i)
        } else {
            i.data.main.as_deref().or(Some(i))
        }
    }

    fn lock_in_gate(_: &Interp<Self>) -> bool {
        false
    }

    fn reuse(i: &Interp<Self>, option: ReusePolicy) -> ReusePolicy {
        if i.is_main {
            option
        } else {
            ReusePolicy::DeleteOnRelease
        }
    }

    fn keep_between_spans(i: &Interp<Self>) -> bool {
        i.is_main
    }

    fn daemon_spans(i: &Interp<Self>) -> bool {
        i.is_main
    }

    fn new_tstate_data(&self) -> CpyTState {
        CpyTState {
            ptr: AtomicUsize::new(0),
        }
    }

    fn borrowed_data(&self, ts_raw: usize) -> CpyTState {
        CpyTState {
            ptr: AtomicUsize::new(ts_raw),
        }
    }

    fn materialize(&self, i: &Interp<Self>, ts: &TState<Self>) -> Result<()> {
        if !ts.data.get().is_null() {
            return Ok(());
        }
        // SAFETY: `i` is held open by the caller (a span's or a short hold),
        // so its PyInterpreterState is alive; PyThreadState_New may be
        // called without the GIL (PyGILState_Ensure does).
        let p = unsafe { (self.api.PyThreadState_New)(i.data.ptr as *mut PyInterpreterState) };
        if p.is_null() {
            return Err(Error::NoMemory);
        }
        ts.data.ptr.store(p as usize, Ordering::Relaxed);
        Ok(())
    }

    fn attach(&self, _: &Interp<Self>, ts: &TState<Self>, _: bool) {
        // SAFETY: `ts` is this thread's materialized, detached thread state
        // of an interpreter held open; RestoreThread takes its GIL.
        unsafe { (self.api.PyEval_RestoreThread)(ts.data.get()) };
    }

    fn detach(&self, _: &Interp<Self>, ts: &TState<Self>) {
        // SAFETY: `ts` is attached on this thread (the span machine checked
        // the real attached thread state); SaveThread releases the GIL.
        let was = unsafe { (self.api.PyEval_SaveThread)() };
        debug_assert_eq!(
            was,
            ts.data.get(),
            "detached a thread state that was not current"
        );
    }

    fn dematerialize(&self, _: &Interp<Self>, ts: &TState<Self>, attached: bool) {
        let p = ts.data.get();
        if p.is_null() {
            return;
        }
        // SAFETY: `p` is this thread's own thread state of an interpreter
        // held open; it is attached (RestoreThread if it was not) so that
        // Clear may release its objects under the GIL, and DeleteCurrent
        // frees it and releases the GIL.
        unsafe {
            if !attached {
                (self.api.PyEval_RestoreThread)(p);
            }
            (self.api.PyThreadState_Clear)(p);
            (self.api.PyThreadState_DeleteCurrent)();
        }
        ts.data.ptr.store(0, Ordering::Relaxed);
    }

    fn reset(&self, _: &TState<Self>) {
        // SAFETY: `ts` is attached on this thread: GetDict returns its dict
        // (borrowed), and both calls run under its GIL.
        unsafe {
            let d = (self.api.PyThreadState_GetDict)();
            if !d.is_null() {
                (self.api.PyDict_Clear)(d);
            }
            (self.api.PyErr_Clear)();
        }
    }

    fn scratch(&self, _: &TState<Self>) -> Result<u64> {
        // SAFETY: attached (see `reset`); GetItemString returns a borrowed
        // reference or NULL without setting an error.
        unsafe {
            let d = (self.api.PyThreadState_GetDict)();
            if d.is_null() {
                return Err(Error::NoMemory);
            }
            let v = (self.api.PyDict_GetItemString)(d, SCRATCH_KEY.as_ptr());
            if v.is_null() {
                return Ok(0);
            }
            Ok((self.api.PyLong_AsUnsignedLongLong)(v))
        }
    }

    fn set_scratch(&self, _: &TState<Self>, v: u64) -> Result<()> {
        // SAFETY: attached (see `reset`); the new int is released after
        // SetItemString took its own reference.
        unsafe {
            let d = (self.api.PyThreadState_GetDict)();
            let o = (self.api.PyLong_FromUnsignedLongLong)(v);
            if d.is_null() || o.is_null() {
                (self.api.PyErr_Clear)();
                return Err(Error::NoMemory);
            }
            let r = (self.api.PyDict_SetItemString)(d, SCRATCH_KEY.as_ptr(), o);
            (self.api.Py_DecRef)(o);
            if r < 0 {
                (self.api.PyErr_Clear)();
                return Err(Error::NoMemory);
            }
        }
        Ok(())
    }

    fn python_work(&self, i: &Interp<Self>, ts: &TState<Self>) -> bool {
        // SAFETY: `current` only reads CPython's state; the int is made and
        // freed under the GIL of the thread state checked to be current.
        unsafe {
            let cur = self.api.current();
            if cur.is_null()
                || cur != ts.data.get()
                || (self.api.PyThreadState_GetInterpreter)(cur) as usize != i.data.ptr
            {
                return false;
            }
            let o = (self.api.PyLong_FromLong)(
                0x7fff_0000 + (i.id.as_raw() as std::ffi::c_long & 0xff),
            );
            if o.is_null() {
                (self.api.PyErr_Clear)();
                return false;
            }
            (self.api.Py_DecRef)(o);
        }
        true
    }

    fn current_raw(&self) -> usize {
        // SAFETY: reads CPython's current thread state only.
        unsafe { self.api.current() as usize }
    }

    fn current_fn(&self) -> Option<unsafe extern "C" fn() -> *mut std::ffi::c_void> {
        self.api.current_fn()
    }

    fn is_this_threads(&self, raw: usize) -> bool {
        if self.api.current_is_thread_local() {
            return raw != 0;
        }
        // 3.9–3.11: `current` is the GIL holder, whichever thread it is; it
        // is this thread's when it is this thread's gilstate-bound one
        // SAFETY: reads this thread's gilstate binding only.
        raw != 0 && unsafe { (self.api.PyGILState_GetThisThreadState)() } as usize == raw
    }

    fn raw(ts: &TState<Self>) -> usize {
        ts.data.ptr.load(Ordering::Relaxed)
    }

    fn is_materialized(ts: &TState<Self>) -> bool {
        Self::raw(ts) != 0
    }

    fn supports(&self, mode: LockMode) -> Result<()> {
        match mode {
            LockMode::SharedWithMain => Ok(()),
            LockMode::Own
                if self.api.version >= (3, 12)
                    && self.api.Py_NewInterpreterFromConfig.is_some() =>
            {
                Ok(())
            }
            _ => Err(Error::Unsupported),
        }
    }

    fn adopt(&self, reg: &Arc<Registry<Self>>, ts_raw: usize) -> Option<Arc<Interp<Self>>> {
        // SAFETY: `ts_raw` is the thread state attached on this thread now,
        // so it and its interpreter are alive.
        let ip = unsafe { (self.api.PyThreadState_GetInterpreter)(ts_raw as *mut PyThreadState) };
        if ip.is_null() {
            return None;
        }
        self.register_attached(reg, ip as usize).ok()
    }

    fn own_detached(&self, i: &Interp<Self>) -> usize {
        // SAFETY: this thread's gilstate thread state, if any, is alive (a
        // thread state is unbound when it is deleted on its thread); it is
        // only compared and its interpreter read.
        unsafe {
            let g = (self.api.PyGILState_GetThisThreadState)();
            if g.is_null() || g == self.api.current() {
                return 0;
            }
            if (self.api.PyThreadState_GetInterpreter)(g) as usize == i.data.ptr {
                g as usize
            } else {
                0
            }
        }
    }

    fn end_interpreter(&self, i: &Interp<Self>, next: usize, own: &[usize]) {
        // SAFETY: the caller (the finalizing thread) is detached and the
        // interpreter drained; `next` and `own` are this thread's (contract
        // of the trait method); see `end`.
        unsafe { self.end(i, next as *mut PyThreadState, own) };
    }
}

/// The key of the scratch word in a thread state's dict.
const SCRATCH_KEY: &std::ffi::CStr = c"tstate.scratch";

impl CPython {
    /// The registered interpreter whose `PyInterpreterState *` is `ip`, or
    /// a new registration of it. The calling thread must be attached to it
    /// (registration calls `atexit.register` in it).
    pub(crate) fn register_attached(
        &self,
        reg: &Arc<Registry<Self>>,
        ip: usize,
    ) -> Result<Arc<Interp<Self>>> {
        // SAFETY: attached to `ip` (contract), so it is alive.
        let py_id = unsafe { (self.api.PyInterpreterState_GetID)(ip as *mut PyInterpreterState) };
        let find = || reg.find(|i| i.data.ptr == ip && i.data.py_id == py_id);
        if let Some(i) = find() {
            return Ok(i);
        }
        let _one = self.registering.lock();
        if let Some(i) = find() {
            return Ok(i);
        }
        // SAFETY: reads CPython's main interpreter pointer.
        let is_main = unsafe { (self.api.PyInterpreterState_Main)() } as usize == ip;
        let main = if is_main { None } else { reg.main() };
        let data = CpyInterp {
            ptr: ip,
            py_id,
            own_gil: false,
            created: false,
            main,
            keeper: AtomicUsize::new(0),
            keeper_thread: 0,
        };
        let mode = if is_main {
            LockMode::Own
        } else {
            LockMode::SharedWithMain
        };
        let i = reg.insert_interp(mode, is_main, data, None)?;
        // SAFETY: attached to `ip` (contract).
        if let Err(e) = unsafe { hooks::install(self.api, reg, &i) } {
            reg.remove_interp(&i);
            return Err(e);
        }
        Ok(i)
    }

    /// Creates a subinterpreter: the calling thread must be attached to
    /// main through `main_ts` (current). Registers it while attached to it,
    /// keeps its first thread state as the keeper, and re-attaches
    /// `main_ts` before returning.
    ///
    /// # Safety
    /// `main_ts` must be the calling thread's attached thread state of
    /// main.
    pub(crate) unsafe fn create(
        &self,
        reg: &Arc<Registry<Self>>,
        main: &Arc<Interp<Self>>,
        mode: LockMode,
        main_ts: *mut PyThreadState,
    ) -> Result<InterpreterId> {
        self.supports(mode)?;
        reg.reserve_interp()?;
        let a = self.api;
        let mut t0: *mut PyThreadState = std::ptr::null_mut();
        let own_gil = mode == LockMode::Own;
        // SAFETY: attached to main (contract): both create functions must be
        // called with an attached thread state; they return with the new
        // interpreter's first thread state attached.
        unsafe {
            if own_gil {
                let f = a.Py_NewInterpreterFromConfig.ok_or(Error::Unsupported)?;
                let st = f(&mut t0, &ffi::ISOLATED_OWN_GIL);
                if st.kind != 0 || t0.is_null() {
                    (a.PyErr_Clear)();
                    restore_after_failed_create(a, main_ts);
                    return Err(Error::NoMemory);
                }
            } else {
                t0 = (a.Py_NewInterpreter)();
                if t0.is_null() {
                    (a.PyErr_Clear)();
                    restore_after_failed_create(a, main_ts);
                    return Err(Error::NoMemory);
                }
            }
        }
        // SAFETY: t0 is attached on this thread.
        let ip = unsafe { (a.PyThreadState_GetInterpreter)(t0) } as usize;
        // SAFETY: as above.
        let py_id = unsafe { (a.PyInterpreterState_GetID)(ip as *mut PyInterpreterState) };
        let data = CpyInterp {
            ptr: ip,
            py_id,
            own_gil,
            created: true,
            main: (!own_gil).then(|| main.clone()),
            keeper: AtomicUsize::new(t0 as usize),
            keeper_thread: crate::sync::os_thread_id(),
        };
        let registered = reg
            .insert_interp(mode, false, data, Some(main))
            .and_then(|i| {
                // SAFETY: attached to the new interpreter through t0.
                match unsafe { hooks::install(a, reg, &i) } {
                    Ok(()) => Ok(i),
                    Err(e) => {
                        reg.remove_interp(&i);
                        Err(e)
                    }
                }
            });
        match registered {
            Ok(i) => {
                // SAFETY: keep t0 detached (the keeper), then back to main.
                unsafe {
                    (a.PyEval_SaveThread)();
                    (a.PyEval_RestoreThread)(main_ts);
                }
                Ok(i.id)
            }
            Err(e) => {
                // SAFETY: t0 is attached and the interpreter's only thread
                // state: end it, then back to main.
                unsafe {
                    (a.Py_EndInterpreter)(t0);
                    self.after_end_interpreter(main_ts);
                    (a.PyEval_RestoreThread)(main_ts);
                }
                Err(e)
            }
        }
    }

    /// After `Py_EndInterpreter`: on 3.9–3.11 the GIL is still held with no
    /// thread state current (3.12+ released it). Leaves the thread detached
    /// with the GIL released, `next` (NULL or a detached thread state of
    /// this thread) ready to be re-attached.
    ///
    /// # Safety
    /// Called right after `Py_EndInterpreter` on the same thread; `next`
    /// is NULL or a detached thread state of this thread.
    unsafe fn after_end_interpreter(&self, next: *mut PyThreadState) {
        let a = self.api;
        if a.version >= (3, 12) {
            return;
        }
        // SAFETY: per the contract: the GIL is held, nothing is current;
        // swapping a thread state in and saving it releases the GIL.
        unsafe {
            if !next.is_null() {
                (a.PyThreadState_Swap)(next);
                (a.PyEval_SaveThread)();
            } else {
                let h = (a.PyThreadState_New)((a.PyInterpreterState_Main)());
                if !h.is_null() {
                    (a.PyThreadState_Swap)(h);
                    (a.PyThreadState_Clear)(h);
                    (a.PyThreadState_DeleteCurrent)();
                }
            }
        }
    }

    /// Ends the drained interpreter `i` on the calling, detached thread:
    /// `Py_EndInterpreter` with a temporary thread state (after freeing the
    /// calling thread's own thread states of `i`; the keeper goes now when
    /// this is not the thread that created `i`, else in `i`'s atexit
    /// callback: see `CpyInterp::keeper_thread`), or `Py_FinalizeEx` for
    /// main. Leaves the thread detached.
    ///
    /// # Safety
    /// The calling thread has nothing attached; `i` is drained (no other
    /// thread holds it) and finalizing through the library on this thread;
    /// `next` is NULL or a detached thread state of this thread of another
    /// interpreter; `own` are detached thread states of `i` of this thread.
    pub(crate) unsafe fn end(&self, i: &Interp<Self>, next: *mut PyThreadState, own: &[usize]) {
        let a = self.api;
        // SAFETY: `i` is alive (not yet ended); the thread is detached.
        unsafe {
            let tmp = (a.PyThreadState_New)(i.data.ptr as *mut PyInterpreterState);
            if tmp.is_null() {
                return;
            }
            (a.PyEval_RestoreThread)(tmp);
            for &t in own {
                (a.PyThreadState_Clear)(t as *mut PyThreadState);
                (a.PyThreadState_Delete)(t as *mut PyThreadState);
            }
            if !i.is_main && i.data.keeper_thread != crate::sync::os_thread_id() {
                // see `CpyInterp::keeper_thread`
                let k = i.data.keeper.swap(0, Ordering::AcqRel) as *mut PyThreadState;
                if !k.is_null() {
                    (a.PyThreadState_Clear)(k);
                    (a.PyThreadState_Delete)(k);
                }
            }
            if i.is_main {
                (a.Py_FinalizeEx)();
                return;
            }
            (a.Py_EndInterpreter)(tmp);
            self.after_end_interpreter(next);
        }
    }
}

/// Back to `main_ts` after a failed `Py_NewInterpreter*` (which restores
/// the previous thread state itself on failure in 3.12+, swaps back on
/// ≤ 3.11).
///
/// # Safety
/// Right after the failed call, on the same thread.
unsafe fn restore_after_failed_create(a: &Api, main_ts: *mut PyThreadState) {
    // SAFETY: per the contract.
    unsafe {
        if a.current() != main_ts {
            (a.PyThreadState_Swap)(main_ts);
        }
    }
}
