//! What every facade's safe Rust API shares (`tstate_ffi_<design>::rust`).
//!
//! Each facade crate has a runtime of its own (a `static` of that crate:
//! see [`c_abi::Facade`](crate::c_abi::Facade)), so a Rust API must drive the
//! facade it belongs to: it calls that facade's exported C functions, the
//! same path and the same runtime a C caller of that library uses. What is
//! the same for every design lives here, parameterised by the facade's
//! table of C functions ([`SharedAbi`], each facade's `SHARED_ABI`):
//!
//! * [`FacadeRuntime`] — interpreters (main, current, create with a
//!   [`LockMode`], state, finalize with a bound that returns the holders on
//!   timeout), the attached check, diagnostics, the backend;
//! * [`Attached`] — the token that proves the calling thread is attached
//!   (PyO3's `Python<'py>`): `work`, [`detach`](Attached::detach) (`with
//!   nogil:`); the guards add `save`;
//! * [`Saved`] — an open save (`Py_BEGIN_ALLOW_THREADS`), borrowing the span
//!   it detached;
//! * [`defer`] / [`settle`] — the one drop policy of every guard (below).
//!
//! **The drop policy.** No guard panics in `Drop`. What the types cannot
//! rule out is two *unconnected* guards (two top-level spans) dropped in
//! the wrong order: the design refuses the outer one's release
//! (`OutOfOrder`, or `Busy` for a restore while something is attached)
//! with nothing changed. The guard then *defers* it: the release is kept in
//! a per-thread list and retried, innermost first, each time a release of
//! the Rust API on this thread succeeds, so it happens as soon as the inner
//! spans close — never silently lost, never applied out of order. The
//! explicit `release(self)` of each guard does the same and says so with
//! `Err(OutOfOrder)`; [`deferred`] counts what is waiting. A thread that
//! exits with deferred releases has them closed by the core's thread-exit
//! cleanup (counted in [`Diagnostics::exit_spans_closed`]).
//!
//! ```
//! use tstate_ffi_ensure::rust::{RUNTIME, attach};
//! let main = RUNTIME.main_interpreter().unwrap();
//! let n = attach(main, |t| {
//!     let n = t.work().unwrap();
//!     t.detach(|| std::thread::sleep(std::time::Duration::from_millis(1))).unwrap();
//!     n
//! })
//! .unwrap();
//! assert!(n >= 1);
//! ```

use crate::c_abi::{CBackendInfo, CHolder, SharedAbi, check};
use crate::{
    BackendKind, Diagnostics, Error, FinalizeError, Holder, InterpreterId, InterpreterState,
    LockMode, Result, SpanKind, ThreadStateId,
};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::Duration;

/// One facade's runtime, reached through its C functions.
///
/// Every facade's `rust` module has one as `RUNTIME`; they are not
/// interchangeable (each names its own library's runtime: an id of one is
/// refused by another).
///
/// ```
/// use tstate_ffi_ensure::rust::RUNTIME;
/// use tstate_core::{LockMode, InterpreterState};
/// let main = RUNTIME.main_interpreter().unwrap();
/// let sub = RUNTIME.create_interpreter(LockMode::SharedWithMain).unwrap();
/// assert_ne!(main, sub);
/// assert_eq!(RUNTIME.interpreter_state(sub), Ok(InterpreterState::Running));
/// RUNTIME.finalize(sub, None).unwrap();
/// assert!(RUNTIME.interpreter_state(sub).is_err());
/// ```
#[derive(Clone, Copy)]
pub struct FacadeRuntime {
    abi: &'static SharedAbi,
}

impl std::fmt::Debug for FacadeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FacadeRuntime").finish_non_exhaustive()
    }
}

/// Which backend a facade runs on ([`FacadeRuntime::backend`]).
///
/// ```
/// use tstate_core::BackendKind;
/// let b = tstate_ffi_guard::rust::RUNTIME.backend().unwrap();
/// if b.kind == BackendKind::CPython {
///     assert!(b.python_version.unwrap() >= (3, 9));
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendInfo {
    /// The model or CPython.
    pub kind: BackendKind,
    /// CPython's `(major, minor)`; `None` on the model.
    pub python_version: Option<(u32, u32)>,
    lock_modes: u32,
}

impl BackendInfo {
    /// Whether this backend can create interpreters with `mode`.
    ///
    /// ```
    /// use tstate_ffi_handle::rust::RUNTIME;
    /// use tstate_core::LockMode;
    /// assert!(RUNTIME.backend().unwrap().supports(LockMode::SharedWithMain));
    /// ```
    pub fn supports(&self, mode: LockMode) -> bool {
        self.lock_modes & (1 << mode as u32) != 0
    }
}

fn holder(c: &CHolder) -> Holder {
    Holder {
        thread_number: c.thread_number,
        os_thread_id: c.os_thread_id,
        thread_name: None,
        kind: match c.kind {
            0 => SpanKind::Ensure,
            1 => SpanKind::Activate,
            _ => SpanKind::Guard,
        },
        spans: c.spans,
        held_for: Duration::from_micros(c.held_for_us),
    }
}

fn millis(timeout: Option<Duration>) -> i64 {
    timeout.map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Calls an out-parameter C function and reads its value.
fn out<T: Default>(f: impl FnOnce(*mut T) -> i32) -> Result<T> {
    let mut v = T::default();
    check(f(&mut v))?;
    Ok(v)
}

impl FacadeRuntime {
    /// The runtime behind the facade whose C functions are `abi` (each
    /// facade crate makes its `RUNTIME` with this).
    ///
    /// ```
    /// use tstate_core::rust_api::FacadeRuntime;
    /// const MINE: FacadeRuntime = FacadeRuntime::new(&tstate_ffi_ensure::SHARED_ABI);
    /// assert!(MINE.main_interpreter().is_ok());
    /// ```
    pub const fn new(abi: &'static SharedAbi) -> Self {
        Self { abi }
    }

    /// `*_initialize`: on CPython, initializes it if needed and registers
    /// the interpreter the caller is attached to (call it at module init);
    /// on the model, creates a main interpreter if there is none.
    ///
    /// ```
    /// tstate_ffi_ensure::rust::RUNTIME.initialize().unwrap();
    /// ```
    pub fn initialize(&self) -> Result<()> {
        check((self.abi.initialize)()).map(drop)
    }

    /// The main interpreter (never creates one: `NoSuchInterpreter` after it
    /// was finalized).
    ///
    /// ```
    /// let main = tstate_ffi_ensure::rust::RUNTIME.main_interpreter().unwrap();
    /// assert_ne!(main.as_raw(), 0);
    /// ```
    pub fn main_interpreter(&self) -> Result<InterpreterId> {
        // SAFETY: `out` passes a valid pointer to a local.
        out(|p| unsafe { (self.abi.main_interpreter)(p) }).map(InterpreterId::from_raw)
    }

    /// The interpreter the calling thread is attached to (`NotAttached`).
    ///
    /// ```
    /// use tstate_ffi_ensure::rust::{RUNTIME, attach};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// assert!(RUNTIME.current_interpreter().is_err());
    /// attach(main, |_| assert_eq!(RUNTIME.current_interpreter(), Ok(main))).unwrap();
    /// ```
    pub fn current_interpreter(&self) -> Result<InterpreterId> {
        // SAFETY: `out` passes a valid pointer to a local.
        out(|p| unsafe { (self.abi.current_interpreter)(p) }).map(InterpreterId::from_raw)
    }

    /// Creates a subinterpreter with `mode` (`Unsupported` if the backend
    /// cannot: own lock before CPython 3.12, no lock on CPython).
    ///
    /// ```
    /// use tstate_core::LockMode;
    /// use tstate_ffi_ensure::rust::RUNTIME;
    /// let sub = RUNTIME.create_interpreter(LockMode::SharedWithMain).unwrap();
    /// RUNTIME.finalize(sub, None).unwrap();
    /// ```
    pub fn create_interpreter(&self, mode: LockMode) -> Result<InterpreterId> {
        // SAFETY: `out` passes a valid pointer to a local.
        out(|p| unsafe { (self.abi.create_interpreter)(mode as u32, p) })
            .map(InterpreterId::from_raw)
    }

    /// Running or finalizing; `NoSuchInterpreter` once gone.
    ///
    /// ```
    /// use tstate_core::{InterpreterId, Error};
    /// use tstate_ffi_ensure::rust::RUNTIME;
    /// assert_eq!(RUNTIME.interpreter_state(InterpreterId::from_raw(0)), Err(Error::NoSuchInterpreter));
    /// ```
    pub fn interpreter_state(&self, id: InterpreterId) -> Result<InterpreterState> {
        Ok(match check((self.abi.interpreter_state)(id.as_raw()))? {
            0 => InterpreterState::Running,
            _ => InterpreterState::Finalizing,
        })
    }

    /// Finalizes `id` (main: every subinterpreter first, then main): refuses
    /// new spans at once, waits for the open ones (`None`: without bound).
    /// At the bound: `Err` with [`Error::Timeout`] and the holders (the
    /// interpreter stays finalizing; call again). Through the C ABI a holder
    /// has no thread name, and [`FinalizeError::interpreter`] is `id`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tstate_core::{Error, LockMode};
    /// use tstate_ffi_handle::rust::{RUNTIME, ensure};
    /// let sub = RUNTIME.create_interpreter(LockMode::SharedWithMain).unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    /// let holder = std::thread::spawn(move || {
    ///     let g = ensure(sub).unwrap();
    ///     g.detach(move || { tx.send(()).unwrap(); done_rx.recv().unwrap() }).unwrap();
    /// });
    /// rx.recv().unwrap();
    /// let e = RUNTIME.finalize(sub, Some(Duration::from_millis(20))).unwrap_err();
    /// assert_eq!(e.error, Error::Timeout);
    /// assert_eq!(e.holders.len(), 1);
    /// done_tx.send(()).unwrap();
    /// holder.join().unwrap();
    /// RUNTIME.finalize(sub, None).unwrap();
    /// ```
    pub fn finalize(
        &self,
        id: InterpreterId,
        timeout: Option<Duration>,
    ) -> std::result::Result<(), FinalizeError> {
        let mut buf = [CHolder::default(); 32];
        let mut n = 0usize;
        // SAFETY: `buf` is valid for `buf.len()` writes, `n` for one.
        let r = unsafe {
            (self.abi.finalize_report)(id.as_raw(), millis(timeout), buf.as_mut_ptr(), 32, &mut n)
        };
        let Err(error) = check(r) else {
            return Ok(());
        };
        let mut holders: Vec<Holder> = buf[..n.min(buf.len())].iter().map(holder).collect();
        if n > buf.len()
            && let Ok(all) = self.holders(id)
        {
            holders = all;
        }
        Err(FinalizeError {
            error,
            interpreter: id,
            holders,
        })
    }

    /// Finalizes the whole runtime (main, which finalizes every
    /// subinterpreter first), like `Py_FinalizeEx`; `Ok` if there is no main.
    ///
    /// ```no_run
    /// // ends the facade's main interpreter for the rest of the process
    /// tstate_ffi_ensure::rust::RUNTIME.finalize_all(None).unwrap();
    /// ```
    pub fn finalize_all(
        &self,
        timeout: Option<Duration>,
    ) -> std::result::Result<(), FinalizeError> {
        match self.main_interpreter() {
            Ok(main) => self.finalize(main, timeout),
            Err(Error::NoSuchInterpreter) => Ok(()),
            Err(error) => Err(FinalizeError {
                error,
                interpreter: InterpreterId::from_raw(0),
                holders: Vec::new(),
            }),
        }
    }

    /// What holds `id` open now (threads inside spans, open guards).
    ///
    /// ```
    /// use tstate_core::LockMode;
    /// use tstate_ffi_ensure::rust::{RUNTIME, attach};
    /// let sub = RUNTIME.create_interpreter(LockMode::SharedWithMain).unwrap();
    /// attach(sub, |_| assert_eq!(RUNTIME.holders(sub).unwrap().len(), 1)).unwrap();
    /// assert!(RUNTIME.holders(sub).unwrap().is_empty());
    /// RUNTIME.finalize(sub, None).unwrap();
    /// ```
    pub fn holders(&self, id: InterpreterId) -> Result<Vec<Holder>> {
        let mut buf: Vec<CHolder> = Vec::new();
        loop {
            let mut n = 0usize;
            // SAFETY: `buf` is valid for `buf.len()` writes (NULL-safe when
            // empty: the function accepts NULL with cap 0), `n` for one.
            let ptr = if buf.is_empty() {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr()
            };
            // SAFETY: as above.
            check(unsafe { (self.abi.holders)(id.as_raw(), ptr, buf.len(), &mut n) })?;
            if n <= buf.len() {
                return Ok(buf[..n].iter().map(holder).collect());
            }
            buf = vec![CHolder::default(); n];
        }
    }

    /// Whether the calling thread is attached to `id` (exact per
    /// interpreter, unlike `PyGILState_Check`).
    ///
    /// ```
    /// use tstate_ffi_ensure::rust::{RUNTIME, attach};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// assert!(!RUNTIME.is_attached(main));
    /// attach(main, |_| assert!(RUNTIME.is_attached(main))).unwrap();
    /// ```
    pub fn is_attached(&self, id: InterpreterId) -> bool {
        (self.abi.is_attached)(id.as_raw()) == 1
    }

    /// The thread state attached on this thread and its interpreter, if any.
    ///
    /// ```
    /// use tstate_ffi_ensure::rust::{RUNTIME, attach};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// assert_eq!(RUNTIME.current(), None);
    /// attach(main, |_| assert_eq!(RUNTIME.current().unwrap().1, main)).unwrap();
    /// ```
    pub fn current(&self) -> Option<(ThreadStateId, InterpreterId)> {
        let (mut ts, mut id) = (0u64, 0u64);
        // SAFETY: both pointers are valid for a write.
        let r = unsafe { (self.abi.current)(&mut ts, &mut id) };
        (r == 1).then(|| (ThreadStateId::from_raw(ts), InterpreterId::from_raw(id)))
    }

    /// The interpreter's "Python work" counter (any thread).
    ///
    /// ```
    /// use tstate_ffi_ensure::rust::{RUNTIME, attach};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// let n = attach(main, |t| t.work().unwrap()).unwrap();
    /// assert!(RUNTIME.work_count(main).unwrap() >= n);
    /// ```
    pub fn work_count(&self, id: InterpreterId) -> Result<u64> {
        // SAFETY: `out` passes a valid pointer to a local.
        out(|p| unsafe { (self.abi.work_count)(id.as_raw(), p) })
    }

    /// The runtime's counters.
    ///
    /// ```
    /// let d = tstate_ffi_ensure::rust::RUNTIME.diagnostics().unwrap();
    /// assert_eq!(d.exclusion_violations, 0);
    /// ```
    pub fn diagnostics(&self) -> Result<Diagnostics> {
        // SAFETY: `out` passes a valid pointer to a local.
        out(|p| unsafe { (self.abi.diagnostics)(p) })
    }

    /// Which backend the facade runs on (chosen at its first call:
    /// `TSTATE_BACKEND`, else CPython when a libpython is loaded, else the
    /// model).
    ///
    /// ```
    /// use tstate_core::BackendKind;
    /// let b = tstate_ffi_ensure::rust::RUNTIME.backend().unwrap();
    /// assert_eq!(b.kind == BackendKind::Model, b.python_version.is_none());
    /// ```
    pub fn backend(&self) -> Result<BackendInfo> {
        // SAFETY: `out` passes a valid pointer to a local.
        let c: CBackendInfo = out(|p| unsafe { (self.abi.backend_info)(p) })?;
        let kind = if c.kind == 1 {
            BackendKind::CPython
        } else {
            BackendKind::Model
        };
        Ok(BackendInfo {
            kind,
            python_version: (kind == BackendKind::CPython)
                .then_some((c.python_major, c.python_minor)),
            lock_modes: c.lock_modes,
        })
    }

    /// The bound on a finalization CPython itself starts (interpreter exit);
    /// `None` restores the default (5 s). No effect on the model.
    ///
    /// ```
    /// tstate_ffi_ensure::rust::RUNTIME.set_exit_bound(None).unwrap();
    /// ```
    pub fn set_exit_bound(&self, bound: Option<Duration>) -> Result<()> {
        check((self.abi.set_exit_bound)(millis(bound))).map(drop)
    }

    /// Test hook: lets the next `skip` allocations of this facade's runtime
    /// through, then fails `fail` of them with [`Error::NoMemory`]
    /// (`fail == 0` turns it off). Runtime-wide: every thread of the
    /// process using this facade sees it.
    ///
    /// ```no_run
    /// // runtime-wide: not run among the parallel doctests (tested in
    /// // `conformance/tests/rust_api.rs`)
    /// use tstate_core::{Error, LockMode};
    /// use tstate_ffi_activate::rust::{RUNTIME, ThreadState};
    /// let sub = RUNTIME.create_interpreter(LockMode::SharedWithMain).unwrap();
    /// RUNTIME.fail_allocations(0, 1);
    /// let refused = ThreadState::new(sub).err();
    /// RUNTIME.fail_allocations(0, 0);
    /// assert_eq!(refused, Some(Error::NoMemory));
    /// # RUNTIME.finalize(sub, None).unwrap();
    /// ```
    pub fn fail_allocations(&self, skip: u32, fail: u32) {
        (self.abi.fail_allocations)(skip, fail);
    }

    fn restore(&self, ts: ThreadStateId) -> Result<()> {
        check((self.abi.restore_thread)(ts.as_raw())).map(drop)
    }
}

/// Proof that the calling thread is attached to [`interpreter`](Self::interpreter)
/// for as long as the token lives (PyO3's `Python<'py>`).
///
/// A closure receives `&Attached<'_>` from a design's `attach`; a guard of
/// an RAII design dereferences to one. Not `Send`, not `Sync` (an
/// attachment belongs to its thread), and branded with an invariant
/// lifetime, so it cannot leave the closure it was given to.
///
/// ```compile_fail
/// use tstate_ffi_ensure::rust::{RUNTIME, attach};
/// let main = RUNTIME.main_interpreter().unwrap();
/// let t = attach(main, |t| t).unwrap(); // error: lifetime may not live long enough
/// ```
pub struct Attached<'a> {
    rt: FacadeRuntime,
    interp: InterpreterId,
    _brand: PhantomData<(NotSendSync, Invariant<'a>)>,
}

/// Makes a type neither `Send` nor `Sync`.
type NotSendSync = *const ();
/// Makes a type invariant in `'a`.
type Invariant<'a> = fn(&'a ()) -> &'a ();

impl std::fmt::Debug for Attached<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("interpreter", &self.interp)
            .finish()
    }
}

impl Attached<'_> {
    /// For facade crates: the token of a span the caller has just opened on
    /// `interp` through `rt`'s facade. Holding a token proves nothing by
    /// itself — its methods re-check at run time — but handing one out only
    /// for an open span is what makes `attach` and the guards sound.
    ///
    /// ```
    /// use tstate_core::rust_api::Attached;
    /// use tstate_ffi_ensure::rust::{RUNTIME, attach};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// attach(main, |_| {
    ///     let t = Attached::for_open_span(RUNTIME, main);
    ///     assert!(t.is_attached());
    /// }).unwrap();
    /// ```
    pub fn for_open_span(rt: FacadeRuntime, interp: InterpreterId) -> Self {
        Self {
            rt,
            interp,
            _brand: PhantomData,
        }
    }

    /// The interpreter this token is attached to.
    ///
    /// ```
    /// use tstate_ffi_ensure::rust::{RUNTIME, attach};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// attach(main, |t| assert_eq!(t.interpreter(), main)).unwrap();
    /// ```
    pub fn interpreter(&self) -> InterpreterId {
        self.interp
    }

    /// "Python work" on the interpreter; returns its work counter.
    ///
    /// ```
    /// use tstate_ffi_ensure::rust::{RUNTIME, attach};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// attach(main, |t| assert!(t.work().unwrap() >= 1)).unwrap();
    /// ```
    pub fn work(&self) -> Result<u64> {
        // SAFETY: `out` passes a valid pointer to a local.
        out(|p| unsafe { (self.rt.abi.work)(self.interp.as_raw(), p) })
    }

    /// Whether the thread is attached to the interpreter right now (false
    /// inside [`detach`](Self::detach), or after the thread finalized it).
    ///
    /// ```
    /// use tstate_ffi_ensure::rust::{RUNTIME, attach};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// attach(main, |t| {
    ///     assert!(t.is_attached());
    ///     assert!(!t.detach(|| RUNTIME.is_attached(main)).unwrap());
    /// }).unwrap();
    /// ```
    pub fn is_attached(&self) -> bool {
        self.rt.is_attached(self.interp)
    }

    /// Runs `f` detached (`with nogil:`, PyO3's `detach`): the thread state
    /// is saved (the span stays open, so the interpreter stays held), `f`
    /// runs, the thread state is restored — also if `f` panics. `f` must be
    /// `Send`, so it cannot capture this token (or any `&Attached`): Python
    /// cannot be used while detached.
    ///
    /// `Err` if the save was refused (`f` did not run) or the restore was
    /// (`f`'s result is dropped; only if `f` misused the C API or finalized
    /// this interpreter).
    ///
    /// ```compile_fail,E0277
    /// use tstate_ffi_ensure::rust::{RUNTIME, attach};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// attach(main, |t| t.detach(|| t.work())).unwrap(); // `*const ()` cannot be shared between threads safely
    /// ```
    pub fn detach<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
    {
        let saved = save(self.rt)?;
        let r = f();
        saved.restore()?;
        Ok(r)
    }

    /// Detaches until the returned [`Saved`] is restored or dropped
    /// (`Py_BEGIN_ALLOW_THREADS`). Needs `&mut`: a closure's token is
    /// shared (use [`detach`](Self::detach) there); the guards offer it as
    /// their own `save(&mut self)`, which borrows the guard, so the span
    /// cannot be released while the save is open.
    ///
    /// ```
    /// use tstate_ffi_handle::rust::{RUNTIME, ensure};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// let mut g = ensure(main).unwrap();
    /// let s = g.save().unwrap();
    /// assert!(!RUNTIME.is_attached(main));
    /// s.restore().unwrap();
    /// assert!(g.is_attached());
    /// ```
    pub fn save(&mut self) -> Result<Saved<'_>> {
        save(self.rt)
    }
}

fn save<'s>(rt: FacadeRuntime) -> Result<Saved<'s>> {
    // SAFETY: `out` passes a valid pointer to a local.
    let ts = out(|p| unsafe { (rt.abi.save_thread)(p) })?;
    Ok(Saved {
        rt,
        ts: ThreadStateId::from_raw(ts),
        _borrow: PhantomData,
    })
}

/// An open save (`Py_BEGIN_ALLOW_THREADS` … `Py_END_ALLOW_THREADS`) from
/// [`Attached::save`]; it borrows the span's guard. Dropping it restores, as
/// [`restore`](Self::restore) does (a refused restore is deferred: see the
/// [module](self) docs). Not `Send`.
///
/// ```
/// use tstate_ffi_activate::rust::{RUNTIME, ThreadState};
/// let main = RUNTIME.main_interpreter().unwrap();
/// let mut ts = ThreadState::new(main).unwrap();
/// let mut a = ts.activate().unwrap();
/// {
///     let s = a.save().unwrap();
///     assert_eq!(RUNTIME.current(), None);
///     assert_ne!(s.thread_state().as_raw(), 0);
/// } // restored
/// assert!(a.is_attached());
/// ```
#[must_use = "dropping the save re-attaches at once"]
pub struct Saved<'s> {
    rt: FacadeRuntime,
    ts: ThreadStateId,
    _borrow: PhantomData<(&'s mut (), NotSendSync)>,
}

impl Saved<'_> {
    /// The saved thread state.
    ///
    /// ```
    /// use tstate_ffi_handle::rust::{RUNTIME, ensure};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// let mut g = ensure(main).unwrap();
    /// let ts = g.save().unwrap().thread_state();
    /// assert_eq!(RUNTIME.current().unwrap().0, ts);
    /// ```
    pub fn thread_state(&self) -> ThreadStateId {
        self.ts
    }

    /// Re-attaches the saved thread state (`PyEval_RestoreThread`). A
    /// refusal because something is still attached (`Busy`, `OutOfOrder`:
    /// an unconnected span opened during the save is still open) defers the
    /// restore until it closes; other errors (its interpreter was finalized
    /// by this thread meanwhile) are returned as is.
    ///
    /// ```
    /// use tstate_ffi_handle::rust::{RUNTIME, ensure};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// let mut g = ensure(main).unwrap();
    /// g.save().unwrap().restore().unwrap();
    /// assert!(RUNTIME.is_attached(main));
    /// ```
    pub fn restore(self) -> Result<()> {
        let me = ManuallyDrop::new(self);
        let (rt, ts) = (me.rt, me.ts);
        finish(rt.restore(ts), move || rt.restore(ts))
    }
}

impl Drop for Saved<'_> {
    fn drop(&mut self) {
        let (rt, ts) = (self.rt, self.ts);
        let _ = finish(rt.restore(ts), move || rt.restore(ts));
    }
}

/// For facade crates: the common part of a span guard `$guard<'_>` with a
/// token field `$token: Attached<'static>` and a span field `$span`: it
/// dereferences to its token (`work`, `detach`, `is_attached`, …), has
/// `save(&mut self)` (documented with `$save_example`), and its `Drop`
/// calls `$end(self.$span)` (the same function as its explicit
/// `release(self)`), ignoring the answer. No `DerefMut`: a guard's token
/// cannot be swapped with another's.
///
/// ```
/// use tstate_core::rust_api::{Attached, finish};
/// struct MyGuard<'a> { token: Attached<'static>, raw: u64, _outer: std::marker::PhantomData<&'a ()> }
/// fn end(_raw: u64) -> tstate_core::Result<()> { finish(Ok(()), || Ok(())) }
/// tstate_core::span_guard!(MyGuard, token, raw, end, "(no example)");
/// ```
#[macro_export]
macro_rules! span_guard {
    ($guard:ident, $token:ident, $span:ident, $end:path, $save_example:literal) => {
        impl ::std::ops::Deref for $guard<'_> {
            type Target = $crate::rust_api::Attached<'static>;
            fn deref(&self) -> &Self::Target {
                &self.$token
            }
        }
        impl $guard<'_> {
            /// Detaches until the returned [`Saved`](tstate_core::rust_api::Saved)
            /// is restored or dropped (`Py_BEGIN_ALLOW_THREADS`). The save
            /// borrows this guard, so the span cannot be released while it
            /// is open. `Err(NotAttached)` if nothing is attached (the
            /// thread finalized the interpreter meanwhile).
            ///
            #[doc = $save_example]
            pub fn save(&mut self) -> $crate::Result<$crate::rust_api::Saved<'_>> {
                self.$token.save()
            }
        }
        impl Drop for $guard<'_> {
            fn drop(&mut self) {
                let _ = $end(self.$span);
            }
        }
    };
}

/// Whether a refusal means "an inner span is still open: retry later".
fn blocked(e: Error) -> bool {
    matches!(e, Error::OutOfOrder | Error::Busy)
}

/// The end of every release: on success, retries what was deferred; when
/// blocked by an inner span, defers `retry`. Returns `first`.
///
/// ```
/// use tstate_core::{Error, rust_api::{finish, deferred}};
/// assert_eq!(finish(Ok(()), || Ok(())), Ok(()));
/// assert_eq!(finish(Err(Error::InvalidHandle), || Ok(())), Err(Error::InvalidHandle));
/// assert_eq!(deferred(), 0);
/// ```
pub fn finish(first: Result<()>, retry: impl FnMut() -> Result<()> + 'static) -> Result<()> {
    match first {
        Ok(()) => settle(),
        Err(e) if blocked(e) => defer(retry),
        Err(_) => {}
    }
    first
}

type Retry = Box<dyn FnMut() -> Result<()>>;

thread_local! {
    static DEFERRED: RefCell<Vec<Retry>> = const { RefCell::new(Vec::new()) };
}

/// Keeps a refused release on this thread's list, to be retried by
/// [`settle`] (the drop policy: see the [module](self) docs).
///
/// ```
/// use tstate_core::{Error, rust_api::{defer, deferred, settle}};
/// let mut tries = 0;
/// defer(move || { tries += 1; if tries < 2 { Err(Error::OutOfOrder) } else { Ok(()) } });
/// assert_eq!(deferred(), 1);
/// settle(); // refused again: kept
/// assert_eq!(deferred(), 1);
/// settle(); // done
/// assert_eq!(deferred(), 0);
/// ```
pub fn defer(retry: impl FnMut() -> Result<()> + 'static) {
    let _ = DEFERRED.try_with(|d| d.borrow_mut().push(Box::new(retry)));
}

/// Retries this thread's deferred releases, newest first, until none makes
/// progress. One that is still blocked (`OutOfOrder`, `Busy`) is kept; any
/// other result removes it (done, or its object is gone).
///
/// ```
/// tstate_core::rust_api::settle(); // nothing deferred: nothing to do
/// ```
pub fn settle() {
    loop {
        let Ok(mut list) = DEFERRED.try_with(|d| std::mem::take(&mut *d.borrow_mut())) else {
            return;
        };
        if list.is_empty() {
            return;
        }
        let mut kept = Vec::new();
        let mut progress = false;
        while let Some(mut retry) = list.pop() {
            match retry() {
                Err(e) if blocked(e) => kept.push(retry),
                _ => progress = true,
            }
        }
        kept.reverse();
        let _ = DEFERRED.try_with(|d| {
            let mut d = d.borrow_mut();
            let newer = std::mem::replace(&mut *d, kept);
            d.extend(newer);
        });
        if !progress {
            return;
        }
    }
}

/// How many releases are deferred on this thread (0 when every guard was
/// dropped in order).
///
/// ```
/// assert_eq!(tstate_core::rust_api::deferred(), 0);
/// ```
pub fn deferred() -> usize {
    DEFERRED.try_with(|d| d.borrow().len()).unwrap_or(0)
}

/// Runs `f` with the token of a span that `open` opened on `interp`, then
/// closes it with `close` — also when `f` panics (the panic then goes on).
/// The shape of every design's `attach`. `Err` if `open` was refused (`f`
/// did not run), or if `close` failed for another reason than an
/// unconnected span that `f` opened and left open (`f`'s result is then
/// dropped). That one — a guard `f` returned, say — blocks the close, which
/// is deferred until it is released (the drop policy), and `Ok` is
/// returned.
///
/// ```
/// use tstate_core::rust_api::scoped;
/// use tstate_ffi_ensure::rust::RUNTIME;
/// let main = RUNTIME.main_interpreter().unwrap();
/// let r = scoped(RUNTIME, main, || Ok(()), |()| Ok(()), |t| t.interpreter());
/// assert_eq!(r, Ok(main));
/// ```
pub fn scoped<S: Copy + 'static, R>(
    rt: FacadeRuntime,
    interp: InterpreterId,
    open: impl FnOnce() -> Result<S>,
    close: impl Fn(S) -> Result<()> + Copy + 'static,
    f: impl for<'a> FnOnce(&Attached<'a>) -> R,
) -> Result<R> {
    let span = open()?;
    let token = Attached::for_open_span(rt, interp);
    let r = catch_unwind(AssertUnwindSafe(|| f(&token)));
    let closed = finish(close(span), move || close(span));
    match r {
        Ok(v) => match closed {
            Err(e) if !blocked(e) => Err(e),
            _ => Ok(v),
        },
        Err(p) => resume_unwind(p),
    }
}
