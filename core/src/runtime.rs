//! The public API every facade calls: [`Runtime`], over a backend.
//!
//! The top of the core: it calls the per-thread span machine
//! (`thread.rs`) and the registry (`registry.rs`), which never call back up.

use crate::backend::Backend;
#[cfg(not(loom))]
use crate::cpython::CPython;
use crate::error::{Error, Result};
use crate::interp::Interp;
use crate::model::{Model, ModelInterp};
use crate::registry::Registry;
use crate::sync::{Arc, Deadline};
use crate::thread::{self, with_ctx, with_existing};
use crate::types::{
    BackendKind, Diagnostics, GuardId, Holder, InterpreterId, InterpreterState, LockMode,
    RuntimeOptions, ThreadStateId, Ticket, ViewId,
};
use std::time::Duration;

/// Why finalize did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("finalizing interpreter {interpreter:?}: {error} ({} holder(s))", holders.len())]
pub struct FinalizeError {
    /// The kind: [`Error::Timeout`] (holders listed), or why it could not
    /// start (`NoSuchInterpreter`, `Busy`: another thread is finalizing it).
    pub error: Error,
    /// The interpreter that did not finalize (a subinterpreter when
    /// finalizing main).
    pub interpreter: InterpreterId,
    /// The threads that held it open when the bound passed.
    pub holders: Vec<Holder>,
}

impl From<FinalizeError> for Error {
    fn from(e: FinalizeError) -> Error {
        e.error
    }
}

fn start_error(error: Error, interpreter: InterpreterId) -> FinalizeError {
    FinalizeError {
        error,
        interpreter,
        holders: Vec::new(),
    }
}

/// A runtime: a main interpreter, subinterpreters, thread states and the
/// per-thread attach state, over backend `B` (the model by default).
///
/// `Runtime::new()` gives a private model runtime (tests run in parallel,
/// each with its own). A runtime is `Send + Sync`; every method may be
/// called from any thread and acts on the *calling* thread's attach state.
///
/// ```
/// use tstate_core::{Runtime, LockMode, Error};
/// use std::time::Duration;
///
/// let rt = Runtime::new();
/// let sub = rt.create_interpreter(LockMode::Own).unwrap();
/// let t = rt.ensure(sub).unwrap();          // attach (the span holds `sub` open)
/// assert!(rt.is_attached(sub));
/// rt.work(sub).unwrap();                    // "Python work" is legal here
/// rt.release_ticket(t).unwrap();            // exactly what was before: nothing
/// rt.finalize(sub, Some(Duration::from_secs(1))).unwrap();
/// assert_eq!(rt.ensure(sub), Err(Error::NoSuchInterpreter));
/// ```
pub struct Runtime<B: Backend = Model> {
    pub(crate) reg: Arc<Registry<B>>,
}

impl<B: Backend> Drop for Runtime<B> {
    fn drop(&mut self) {
        self.reg.close();
    }
}

impl Default for Runtime<Model> {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime<Model> {
    /// A private model runtime with default options; its main interpreter
    /// exists from the start (the model of a process where Python is
    /// initialized).
    pub fn new() -> Self {
        Self::with_options(RuntimeOptions::default())
    }

    /// A private model runtime with `options`.
    pub fn with_options(options: RuntimeOptions) -> Self {
        let rt = Self {
            reg: Arc::new(Registry::new(Model, options)),
        };
        #[cfg(not(loom))]
        crate::fork::register(&rt.reg);
        // A runtime without a main interpreter is only possible when memory
        // ran out here; `initialize` retries.
        let _ = rt.initialize();
        rt
    }

    /// Creates the main interpreter if there is none (at start, and after a
    /// completed finalization of main: like `Py_Initialize` after
    /// `Py_FinalizeEx`; the old id stays invalid). Returns main's id.
    pub fn initialize(&self) -> Result<InterpreterId> {
        if let Some(m) = self.reg.main() {
            return Ok(m.id);
        }
        let mode = match self.reg.options.main_lock {
            LockMode::None => LockMode::None,
            _ => LockMode::Own,
        };
        let m = self
            .reg
            .insert_interp(mode, true, ModelInterp { lock_owner: None }, None)?;
        Ok(m.id)
    }

    /// The main interpreter's id. Never creates one: `NoSuchInterpreter`
    /// after main was finalized (until [`initialize`](Self::initialize)).
    pub fn main_interpreter(&self) -> Result<InterpreterId> {
        self.reg
            .main()
            .map(|m| m.id)
            .ok_or(Error::NoSuchInterpreter)
    }

    /// Creates a subinterpreter with `mode`. Refused with `Finalizing` while
    /// main is finalizing, `NoSuchInterpreter` without a main, `Unsupported`
    /// for `SharedWithMain` under a free-threaded main (it would have no
    /// lock to share).
    pub fn create_interpreter(&self, mode: LockMode) -> Result<InterpreterId> {
        let main = self.reg.main().ok_or(Error::NoSuchInterpreter)?;
        let lock_owner = crate::model::lock_owner_for(mode, &main)?;
        let i = self
            .reg
            .insert_interp(mode, false, ModelInterp { lock_owner }, Some(&main))?;
        Ok(i.id)
    }
}

impl<B: Backend> Runtime<B> {
    /// The backend's kind.
    pub fn backend_kind(&self) -> BackendKind {
        B::KIND
    }

    /// This runtime's options.
    pub fn options(&self) -> RuntimeOptions {
        self.reg.options
    }

    /// Whether this runtime can create a subinterpreter with `mode`
    /// (`Unsupported` otherwise: see [`Error::Unsupported`]).
    pub fn supports(&self, mode: LockMode) -> Result<()> {
        self.reg.backend.supports(mode)?;
        if mode == LockMode::SharedWithMain
            && self.reg.main().is_some_and(|m| m.mode == LockMode::None)
        {
            return Err(Error::Unsupported);
        }
        Ok(())
    }

    // ----- interpreters ---------------------------------------------------

    /// The interpreter the calling thread is attached to now (on CPython:
    /// also to a thread state the library did not create; that interpreter
    /// is registered on first sight). `NotAttached` if none.
    pub fn current_interpreter(&self) -> Result<InterpreterId> {
        self.query(|c| c.current().map(|(_, i)| i))
            .flatten()
            .ok_or(Error::NotAttached)
    }

    /// Every interpreter this runtime knows and that is not gone (running
    /// or finalizing), main first, then by id; for diagnostics. On CPython
    /// these are the interpreters the runtime has registered (met while
    /// attached, or created through it).
    ///
    /// ```
    /// use tstate_core::{LockMode, Runtime};
    /// let rt = Runtime::new();
    /// let main = rt.main_interpreter().unwrap();
    /// let sub = rt.create_interpreter(LockMode::Own).unwrap();
    /// assert_eq!(rt.interpreters(), vec![main, sub]);
    /// ```
    pub fn interpreters(&self) -> Vec<InterpreterId> {
        let mut v = self.reg.interpreters();
        v.sort_by_key(|i| (!i.is_main, i.id.as_raw()));
        v.iter().map(|i| i.id).collect()
    }

    /// `Running` or `Finalizing`; a gone interpreter gives `NoSuchInterpreter`.
    pub fn interpreter_state(&self, id: InterpreterId) -> Result<InterpreterState> {
        self.reg.lookup(id)?.gate.state()
    }

    /// The lock mode `id` was created with.
    pub fn lock_mode(&self, id: InterpreterId) -> Result<LockMode> {
        Ok(self.reg.lookup(id)?.mode)
    }

    /// Finalizes `id`: refuses new spans at once, waits (sleeping) until no
    /// other thread holds it open, then ends it (deleting all its thread
    /// states); its id never resolves again. Finalizing main finalizes every
    /// subinterpreter first (main refuses new spans during that too).
    ///
    /// The caller's own spans on `id` are not waited for. While it waits,
    /// the caller is detached (so a holder that needs the caller's lock can
    /// always take it and finish), and re-attached afterwards if its
    /// interpreter still exists.
    ///
    /// With `timeout`, gives up at the bound with [`Error::Timeout`] and the
    /// list of holders; the interpreter stays `Finalizing` (still refusing)
    /// and finalize may be called again. The bound covers the re-attach
    /// too: if the caller's lock is still taken when it passes, the caller
    /// is left detached, its thread state saved
    /// ([`saved_thread_state`](Self::saved_thread_state), then
    /// [`restore`](Self::restore)). `None` waits without bound.
    pub fn finalize(
        &self,
        id: InterpreterId,
        timeout: Option<Duration>,
    ) -> std::result::Result<(), FinalizeError> {
        self.finalize_until(id, &Deadline::after(timeout))
    }

    pub(crate) fn finalize_until(
        &self,
        id: InterpreterId,
        deadline: &Deadline,
    ) -> std::result::Result<(), FinalizeError> {
        let interp = self.reg.lookup(id).map_err(|e| start_error(e, id))?;
        let me = thread::finalizer_identity::<B>();
        interp
            .gate
            .begin_finalize(me)
            .map_err(|e| start_error(e, id))?;
        if interp.is_main {
            for sub in self.reg.subinterpreters() {
                match sub.gate.begin_finalize(me) {
                    Ok(()) => {}
                    Err(Error::NoSuchInterpreter) => continue,
                    Err(e) => {
                        interp.gate.end_finalize_attempt();
                        return Err(start_error(e, sub.id));
                    }
                }
                if let Err(e) = self.finalize_one(&sub, deadline) {
                    interp.gate.end_finalize_attempt();
                    return Err(e);
                }
            }
        }
        self.finalize_one(&interp, deadline)
    }

    /// One finalization attempt on `interp`, whose `FINALIZING` bit the
    /// caller already set with `begin_finalize`.
    fn finalize_one(
        &self,
        interp: &Arc<Interp<B>>,
        deadline: &Deadline,
    ) -> std::result::Result<(), FinalizeError> {
        let (own, parked) =
            match with_existing(&self.reg, |c| (c.holds(interp), c.park_for_finalize())) {
                Some((own, parked)) => (own, Some(parked)),
                None => (false, None),
            };
        let mut drained = interp.gate.wait_drained(u32::from(own), deadline);
        // The model's finalizer owns the interpreter's lock while it passes
        // the point of no return (as CPython's finalizer holds the GIL): a
        // daemon's span (guard design: no hold) still attached finishes its
        // step first.
        let lock = B::lock_group(interp).filter(|_| B::LOCK_BITS);
        if drained
            && let Some(g) = lock
            && !g.gate.lock_until(deadline)
        {
            interp.gate.end_finalize_attempt();
            drained = false;
        }
        if drained {
            let (next, mine) = match &parked {
                Some(p) => {
                    with_existing(&self.reg, |c| c.end_inputs(interp, p)).unwrap_or_default()
                }
                None => (0, Vec::new()),
            };
            self.reg.backend.end_interpreter(interp, next, &mine);
            interp.teardown();
            interp.gate.finish_finalize();
            self.reg.remove_interp(interp);
            self.reg.count(|c| &c.finalized);
            if let Some(g) = lock {
                g.gate.unlock();
            }
        }
        if let Some(p) = parked {
            with_existing(&self.reg, |c| c.unpark_after_finalize(interp, p, deadline));
        }
        if drained {
            Ok(())
        } else {
            self.reg.count(|c| &c.finalize_timeouts);
            Err(FinalizeError {
                error: Error::Timeout,
                interpreter: interp.id,
                holders: self.reg.holders(interp),
            })
        }
    }

    /// Finalizes the whole runtime: every subinterpreter, then main (what
    /// `Py_FinalizeEx` does). Does nothing if there is no main.
    pub fn finalize_all(
        &self,
        timeout: Option<Duration>,
    ) -> std::result::Result<(), FinalizeError> {
        match self.reg.main() {
            Some(m) => self.finalize(m.id, timeout),
            None => Ok(()),
        }
    }

    /// What holds `id` open now — threads inside spans, and open guards —
    /// as a timed-out finalize reports it.
    pub fn holders(&self, id: InterpreterId) -> Result<Vec<Holder>> {
        Ok(self.reg.holders(&self.reg.lookup(id)?))
    }

    // ----- the guard design (PEP 788) ------------------------------------

    /// `PyInterpreterGuard_FromCurrent`: a guard on the interpreter the
    /// calling thread is attached to. `NotAttached` if none; `Finalizing`
    /// once it is finalizing; `NoMemory`.
    pub fn guard_from_current(&self) -> Result<GuardId> {
        let id = self.current_interpreter()?;
        self.guard_for(id)
    }

    /// A guard on `id` (what `PyInterpreterGuard_FromView` does with the
    /// view's interpreter): `Finalizing` / `NoSuchInterpreter` once it is
    /// finalizing or gone; `NoMemory`. Any thread; no thread state needed.
    pub fn guard_for(&self, id: InterpreterId) -> Result<GuardId> {
        self.reg.open_guard(&self.reg.lookup(id)?)
    }

    /// `PyInterpreterGuard_FromView`.
    pub fn guard_from_view(&self, v: ViewId) -> Result<GuardId> {
        self.guard_for(self.reg.view_id(v)?)
    }

    /// `PyInterpreterGuard_Close`: releases the guard's hold (a finalizer
    /// waiting for it may proceed). `InvalidHandle` if already closed.
    pub fn close_guard(&self, g: GuardId) -> Result<()> {
        self.reg.close_guard(g)
    }

    /// The interpreter an open guard holds.
    pub fn guard_interpreter(&self, g: GuardId) -> Result<InterpreterId> {
        self.reg.guard_interp(g).map(|i| i.id)
    }

    /// `PyInterpreterView_FromCurrent`: a view of the interpreter the
    /// calling thread is attached to (`NotAttached` if none).
    pub fn view_from_current(&self) -> Result<ViewId> {
        self.reg.open_view(self.current_interpreter()?)
    }

    /// `PyInterpreterView_FromMain`: a view of main (`NoSuchInterpreter` if
    /// there is none).
    pub fn view_from_main(&self) -> Result<ViewId> {
        let id = self
            .reg
            .main()
            .map(|m| m.id)
            .ok_or(Error::NoSuchInterpreter)?;
        self.reg.open_view(id)
    }

    /// A view of `id` (beyond PEP 788, for callers that name interpreters
    /// by id). It may be gone: the view is still made, and turning it into
    /// a guard then fails.
    pub fn view_for(&self, id: InterpreterId) -> Result<ViewId> {
        self.reg.open_view(id)
    }

    /// The interpreter a view names (whether or not it still exists).
    pub fn view_interpreter(&self, v: ViewId) -> Result<InterpreterId> {
        self.reg.view_id(v)
    }

    /// `PyInterpreterView_Close`. `InvalidHandle` if already closed.
    pub fn close_view(&self, v: ViewId) -> Result<()> {
        self.reg.close_view(v)
    }

    /// `PyThreadState_Ensure(guard)`: attaches the calling thread to the
    /// guard's interpreter (nesting and restore as ensure). Never refused
    /// for finalizing: the guard keeps the interpreter from passing its
    /// point of no return. The span takes no hold of its own where the
    /// backend allows it (a daemon's span: once the guard is closed, it
    /// does not keep the interpreter open). `InvalidHandle` for a closed
    /// guard, `Busy` on a thread without a ticket tag (more than 4,095
    /// threads use tstate at once; see [`Ticket`]), `NoMemory`.
    #[inline(always)]
    pub fn ensure_with_guard(&self, g: GuardId) -> Result<Ticket> {
        match self.ensure_with_guard_nested(g) {
            Some(t) => Ok(t),
            None => self.ensure_with_guard_slow(g),
        }
    }

    /// [`ensure_with_guard`](Self::ensure_with_guard) for the C facades' full bodies: the
    /// slow path alone (the facades tried the fast path before their panic
    /// boundary, `c_abi::fast_global!`).
    #[doc(hidden)]
    #[inline(always)]
    pub fn ensure_with_guard_past_fast_path(&self, g: GuardId) -> Result<Ticket> {
        self.ensure_with_guard_slow(g)
    }

    /// `ensure_with_guard` past its fast path: the guard's interpreter from
    /// the thread's cache, else from the guard table (then cached).
    #[inline(always)]
    fn ensure_with_guard_slow(&self, g: GuardId) -> Result<Ticket> {
        let gr = g.as_raw();
        if let Some(interp) = thread::cached_guard(&self.reg, gr) {
            return self.ensure_guarded(InterpreterId::from_raw(interp));
        }
        let (id, epoch) = self.reg.guard_interp_id(g)?;
        let t = with_ctx(&self.reg, |c| c.ensure_guarded(id, 0))?;
        thread::cache_guard(&self.reg, gr, epoch, id.as_raw());
        Ok(t)
    }

    /// `Ensure(guard)` on the guard's cached interpreter `id`: the re-attach
    /// fast path, else the slow path. (Not after a guard-table look-up,
    /// which happens once per guard and thread: trying it there too made
    /// the cached case's B 31 and C 25 instructions dearer, from code
    /// generation, `bench/callgrind.sh guard-B guard-C`.)
    #[inline(always)]
    fn ensure_guarded(&self, id: InterpreterId) -> Result<Ticket> {
        thread::with_ctx_reattach(&self.reg, id.as_raw(), true, |c| c.ensure_guarded(id, 0))
    }

    /// `PyThreadState_EnsureFromView`: takes a guard from the view, keeps it
    /// until the matching [`release_token`](Self::release_token), and
    /// ensures under it. `Finalizing` / `NoSuchInterpreter` /
    /// `InvalidHandle` (closed view) / `Busy` (no ticket tag, as for
    /// [`ensure_with_guard`](Self::ensure_with_guard)) / `NoMemory`.
    pub fn ensure_from_view(&self, v: ViewId) -> Result<Ticket> {
        // the guard's interpreter is the one just looked up: no second
        // look-up in the guard table
        let (id, g) = {
            let interp = self.reg.lookup(self.reg.view_id(v)?)?;
            (interp.id, self.reg.open_guard(&interp)?)
        };
        match with_ctx(&self.reg, |c| c.ensure_guarded(id, g.as_raw())) {
            Ok(t) => Ok(t),
            Err(e) => {
                let _ = self.reg.close_guard(g);
                Err(e)
            }
        }
    }

    /// `PyThreadState_Release(token)`: undoes the ensure of `t`, which must
    /// be the calling thread's innermost, restoring what was attached before
    /// it (across interpreters), and closes the guard an ensure-from-view
    /// took. `OutOfOrder`, `WrongThread`, `InvalidHandle` as for tickets.
    #[inline(always)]
    pub fn release_token(&self, t: Ticket) -> Result<()> {
        // a counted span never owns a guard (ensure-from-view's do)
        if self.release_ticket_nested(t) {
            return Ok(());
        }
        self.release_token_slow(t)
    }

    /// [`release_token`](Self::release_token) for the C facades' full bodies: the
    /// slow path alone (the facades tried the fast path before their panic
    /// boundary, `c_abi::fast_global!`).
    #[doc(hidden)]
    #[inline(always)]
    pub fn release_token_past_fast_path(&self, t: Ticket) -> Result<()> {
        self.release_token_slow(t)
    }

    #[inline(always)]
    fn release_token_slow(&self, t: Ticket) -> Result<()> {
        // a re-attach span counted by the fast path owns no guard (0)
        let g = thread::with_ctx_release(&self.reg, Some(t), 0, |c| c.release_token(t))?;
        if g != 0 {
            let _ = self.reg.close_guard(GuardId::from_raw(g));
        }
        Ok(())
    }

    // ----- ensure / release ------------------------------------------------

    /// Ensures the calling thread is attached to `id`, and returns the
    /// ticket of this span.
    ///
    /// * already attached to `id`: counted in the thread-local stack (no
    ///   atomic read-modify-write, no lock, never refused);
    /// * this thread already holds `id` open through a detached thread state
    ///   (after [`save`](Self::save), or switched away to another
    ///   interpreter): that one is re-attached (never refused);
    /// * otherwise the thread takes its hold on `id` through the gate —
    ///   refused with `Finalizing` / `NoSuchInterpreter` — and attaches its
    ///   kept thread state for `id` (created the first time; see
    ///   [`ReusePolicy`](crate::ReusePolicy)).
    ///
    /// Attached to another interpreter, that one is detached first and
    /// re-attached by the matching release. Errors leave everything as it
    /// was.
    #[inline(always)]
    pub fn ensure(&self, id: InterpreterId) -> Result<Ticket> {
        match self.ensure_nested(id, false) {
            Some(t) => Ok(t),
            None => self.ensure_slow(id),
        }
    }

    /// [`ensure`](Self::ensure) for the C facades' full bodies: the
    /// slow path alone (the facades tried the fast path before their panic
    /// boundary, `c_abi::fast_global!`).
    #[doc(hidden)]
    #[inline(always)]
    pub fn ensure_past_fast_path(&self, id: InterpreterId) -> Result<Ticket> {
        self.ensure_slow(id)
    }

    #[inline(always)]
    fn ensure_slow(&self, id: InterpreterId) -> Result<Ticket> {
        thread::with_ctx_reattach(&self.reg, id.as_raw(), false, |c| c.ensure(id))
    }

    /// As [`ensure`](Self::ensure), for designs that hand the ticket to the
    /// caller: `Busy` on a thread that got no handle tag (more than 4,095
    /// threads use tstate at once; see [`Ticket`]).
    #[inline(always)]
    pub fn ensure_ticket(&self, id: InterpreterId) -> Result<Ticket> {
        match self.ensure_nested(id, true) {
            Some(t) => Ok(t),
            None => self.ensure_ticket_slow(id),
        }
    }

    /// [`ensure_ticket`](Self::ensure_ticket) for the C facades' full bodies: the
    /// slow path alone (the facades tried the fast path before their panic
    /// boundary, `c_abi::fast_global!`).
    #[doc(hidden)]
    #[inline(always)]
    pub fn ensure_ticket_past_fast_path(&self, id: InterpreterId) -> Result<Ticket> {
        self.ensure_ticket_slow(id)
    }

    #[inline(always)]
    fn ensure_ticket_slow(&self, id: InterpreterId) -> Result<Ticket> {
        thread::with_ctx_reattach(&self.reg, id.as_raw(), true, |c| c.ensure_ticket(id))
    }

    /// The nested fast path of [`ensure`](Self::ensure) alone: `Some` (the
    /// span is counted, exactly as `ensure` would) when the calling thread
    /// is attached to `id` through this runtime already, else `None` and
    /// nothing changed (call `ensure`). Never allocates, locks or panics;
    /// the guard facade tries it before its panic boundary (the ensure and
    /// handle facades try their inline block's check instead, and where a
    /// block numbers spans this answers `None` while it is open:
    /// [`crate::c_abi::InlineState`]). `need_ticket`: as
    /// [`ensure_ticket`](Self::ensure_ticket) (`None` on a thread without a
    /// handle tag, whose ticket ensure refuses).
    #[inline(always)]
    pub fn ensure_nested(&self, id: InterpreterId, need_ticket: bool) -> Option<Ticket> {
        thread::fast_ensure(&self.reg, id.as_raw(), need_ticket)
    }

    /// Exports each thread's inline block ([`crate::c_abi::InlineState`]),
    /// found with `export.slot`, so that a header's `static inline` nested path
    /// can count and uncount nested spans without calling the library. Set
    /// it before any thread's first call on this runtime: a thread whose
    /// context of it exists already keeps no block (its inline calls all go
    /// to the exported functions, which stays correct). `Busy` if it was set
    /// already. A facade sets it on creating its runtime
    /// ([`crate::c_abi::Global::choose_with`]).
    pub fn export_inline_state(&self, export: crate::thread::InlineExport) -> Result<()> {
        if self.reg.set_inline_export(export) {
            Ok(())
        } else {
            Err(Error::Busy)
        }
    }

    /// The fast path of [`release`](Self::release) alone: `true` if it
    /// undid this thread's innermost span (a nested one), else `false` and
    /// nothing changed (call `release`). Never allocates, locks or panics.
    #[inline(always)]
    pub fn release_nested(&self) -> bool {
        thread::fast_release(&self.reg)
    }

    /// The fast path of [`release_ticket`](Self::release_ticket) and
    /// [`release_token`](Self::release_token) alone: `true` if `t` was the
    /// innermost span, a nested one, and is released; else `false` and
    /// nothing changed (call the full function, which also reports misuse).
    #[inline(always)]
    pub fn release_ticket_nested(&self, t: Ticket) -> bool {
        thread::fast_release_ticket(&self.reg, t)
    }

    /// The fast path of [`ensure_with_guard`](Self::ensure_with_guard)
    /// alone: `Some` when the calling thread looked `g` up last (and no
    /// guard was closed since) and is attached to its interpreter; else
    /// `None` and nothing changed.
    #[inline(always)]
    pub fn ensure_with_guard_nested(&self, g: GuardId) -> Option<Ticket> {
        thread::fast_ensure_guarded(&self.reg, g.as_raw())
    }

    /// The fast path of [`is_attached`](Self::is_attached) alone: `None`
    /// when it cannot tell without the slow path.
    #[inline(always)]
    pub fn is_attached_fast(&self, id: InterpreterId) -> Option<bool> {
        thread::fast_is_attached(&self.reg, id.as_raw())
    }

    /// Undoes this thread's innermost ensure (the thread-stored design).
    /// `NotAttached` if nothing is ensured; `OutOfOrder` if the innermost
    /// span is an activation, or a save inside it is still open.
    #[inline(always)]
    pub fn release(&self) -> Result<()> {
        if self.release_nested() {
            return Ok(());
        }
        self.release_slow()
    }

    /// [`release`](Self::release) for the C facades' full bodies: the
    /// slow path alone (the facades tried the fast path before their panic
    /// boundary, `c_abi::fast_global!`).
    #[doc(hidden)]
    #[inline(always)]
    pub fn release_past_fast_path(&self) -> Result<()> {
        self.release_slow()
    }

    #[inline(always)]
    fn release_slow(&self) -> Result<()> {
        thread::with_ctx_release(&self.reg, None, (), |c| c.release())
    }

    /// Undoes the ensure of ticket `t`, which must be this thread's innermost
    /// (the int-handle design). `WrongThread`, `OutOfOrder` or
    /// `InvalidHandle` otherwise (see [`Ticket`]).
    #[inline(always)]
    pub fn release_ticket(&self, t: Ticket) -> Result<()> {
        if self.release_ticket_nested(t) {
            return Ok(());
        }
        self.release_ticket_slow(t)
    }

    /// [`release_ticket`](Self::release_ticket) for the C facades' full bodies: the
    /// slow path alone (the facades tried the fast path before their panic
    /// boundary, `c_abi::fast_global!`).
    #[doc(hidden)]
    #[inline(always)]
    pub fn release_ticket_past_fast_path(&self, t: Ticket) -> Result<()> {
        self.release_ticket_slow(t)
    }

    #[inline(always)]
    fn release_ticket_slow(&self, t: Ticket) -> Result<()> {
        thread::with_ctx_release(&self.reg, Some(t), (), |c| c.release_ticket(t))
    }

    /// Ensures and returns a guard that releases on drop (not `Send`: the
    /// span belongs to this thread).
    pub fn ensure_guard(&self, id: InterpreterId) -> Result<crate::EnsureGuard<'_, B>> {
        let t = self.ensure(id)?;
        Ok(crate::EnsureGuard::new(self, t))
    }

    // ----- explicit lifecycle -----------------------------------------------

    /// Creates a detached thread state of `id` owned by the calling thread
    /// (an allocation point). `Finalizing` / `NoSuchInterpreter` as ensure.
    pub fn new_thread_state(&self, id: InterpreterId) -> Result<ThreadStateId> {
        with_ctx(&self.reg, |c| c.new_thread_state(id))
    }

    /// Attaches `ts` inside a new span (the thread's first span on its
    /// interpreter goes through the gate). `WrongThread` from another thread,
    /// `InvalidHandle` after delete, `Busy` if already active or in use.
    pub fn activate(&self, ts: ThreadStateId) -> Result<()> {
        with_ctx(&self.reg, |c| c.activate(ts))
    }

    /// Ends the innermost activation, which must be of `ts`; re-attaches what
    /// was attached before activate. `OutOfOrder` if an inner span is open,
    /// `NotAttached` if `ts` is not active.
    pub fn deactivate(&self, ts: ThreadStateId) -> Result<()> {
        with_ctx(&self.reg, |c| c.deactivate(ts))
    }

    /// Deletes `ts`. `Busy` while it is active, saved or re-attached.
    pub fn delete_thread_state(&self, ts: ThreadStateId) -> Result<()> {
        with_ctx(&self.reg, |c| c.delete(ts))
    }

    /// The calling thread's attached thread state and its interpreter.
    pub fn current(&self) -> Option<(ThreadStateId, InterpreterId)> {
        self.query(|c| c.current()).flatten()
    }

    /// Whether the calling thread is attached to `id` (exact per
    /// interpreter, unlike CPython's `PyGILState_Check`).
    #[inline(always)]
    pub fn is_attached(&self, id: InterpreterId) -> bool {
        match self.is_attached_fast(id) {
            Some(a) => a,
            None => self.is_attached_slow(id),
        }
    }

    /// [`is_attached`](Self::is_attached) for the C facades' full bodies: the
    /// slow path alone (the facades tried the fast path before their panic
    /// boundary, `c_abi::fast_global!`).
    #[doc(hidden)]
    #[inline(always)]
    pub fn is_attached_past_fast_path(&self, id: InterpreterId) -> bool {
        self.is_attached_slow(id)
    }

    #[inline(always)]
    fn is_attached_slow(&self, id: InterpreterId) -> bool {
        self.query(|c| c.is_attached_to(id)).unwrap_or(false)
    }

    /// Runs a query on the calling thread's context. On the model a thread
    /// without one has nothing attached, so none is created (a query never
    /// allocates); on CPython the thread may be attached through a thread
    /// state the library did not create, so the context is created.
    fn query<R>(&self, f: impl FnOnce(&mut thread::RtCtx<B>) -> R) -> Option<R> {
        if B::EXTERNAL_SWITCHES {
            with_ctx(&self.reg, |c| Ok(f(c))).ok()
        } else {
            with_existing(&self.reg, f)
        }
    }

    /// The calling thread's innermost saved thread state (from
    /// [`save`](Self::save), or left saved by a finalize whose bound passed
    /// before the caller's lock was free) and its interpreter.
    pub fn saved_thread_state(&self) -> Option<(ThreadStateId, InterpreterId)> {
        with_existing(&self.reg, |c| c.saved_top()).flatten()
    }

    // ----- save / restore ------------------------------------------------------

    /// `PyEval_SaveThread` / `Py_BEGIN_ALLOW_THREADS`: detaches the current
    /// thread state (its span stays open) and returns it. `NotAttached` if
    /// none.
    pub fn save(&self) -> Result<ThreadStateId> {
        with_ctx(&self.reg, |c| c.save())
    }

    /// `PyEval_RestoreThread` / `Py_END_ALLOW_THREADS`: re-attaches the
    /// innermost saved thread state. Always succeeds for it, even while its
    /// interpreter is finalizing. `Busy` if something is attached,
    /// `OutOfOrder` if it is not the innermost saved one, `NotAttached` if it
    /// was not saved.
    pub fn restore(&self, ts: ThreadStateId) -> Result<()> {
        with_ctx(&self.reg, |c| c.restore(ts))
    }

    // ----- Python work ---------------------------------------------------------

    /// "Python work" on `id`: legal only while the calling thread is attached
    /// to `id` (`NotAttached` otherwise). Increments the interpreter's work
    /// counter with a racy load + store, so lost updates show any failure of
    /// mutual exclusion; also counts exclusion and liveness violations in
    /// [`Diagnostics`]. Returns the counter after the increment.
    pub fn work(&self, id: InterpreterId) -> Result<u64> {
        with_ctx(&self.reg, |c| c.work(id))
    }

    /// The work counter of `id`.
    pub fn work_count(&self, id: InterpreterId) -> Result<u64> {
        Ok(self.reg.lookup(id)?.work_count())
    }

    /// Sets the attached thread state's scratch value (its "thread-local
    /// Python data"), to test that nothing leaks between top-level ensures.
    pub fn set_scratch(&self, v: u64) -> Result<()> {
        with_ctx(&self.reg, |c| {
            let ts = c.current_ts()?;
            self.reg.backend.set_scratch(&ts, v)
        })
    }

    /// The attached thread state's scratch value.
    pub fn scratch(&self) -> Result<u64> {
        with_ctx(&self.reg, |c| {
            let ts = c.current_ts()?;
            self.reg.backend.scratch(&ts)
        })
    }

    // ----- faults, diagnostics -------------------------------------------------

    /// Makes the next `n` allocations (thread states, interpreters, span
    /// stack growth, per-thread tables) fail with `NoMemory`. 0 turns it off.
    pub fn fail_next_allocations(&self, n: u32) {
        self.fail_allocations(0, n);
    }

    /// Lets the next `skip` allocations through, then fails the `fail` after
    /// them (to inject a failure at each allocation point of a scenario in
    /// turn). `fail == 0` turns injection off.
    pub fn fail_allocations(&self, skip: u32, fail: u32) {
        self.reg.set_faults(skip, fail);
    }

    /// A snapshot of the runtime's counters.
    pub fn diagnostics(&self) -> Diagnostics {
        self.reg.diagnostics()
    }
}

/// The CPython runtimes made in this process by this copy of the library
/// (leaked: CPython's hooks refer to them until the process ends).
#[cfg(not(loom))]
static CPYTHON_RUNTIMES: parking_lot::Mutex<Vec<&'static Runtime<CPython>>> =
    parking_lot::Mutex::new(Vec::new());

#[cfg(not(loom))]
impl Runtime<CPython> {
    /// A new runtime on the process's CPython (`Unsupported` when no
    /// libpython 3.9+ is loaded in this process). It lives for the rest of
    /// the process (CPython's hooks refer to it), so make one and keep it:
    /// a facade makes its own, once ([`crate::c_abi::Facade`]). Several may
    /// coexist, one per facade library: each registers its own hooks (its
    /// `atexit` gate) on the interpreters it meets, and none sees the
    /// others' spans or ids.
    pub fn for_this_process() -> Result<&'static Runtime<CPython>> {
        let b = CPython::new()?;
        let rt: &'static Runtime<CPython> = Box::leak(Box::new(Runtime {
            reg: Arc::new(Registry::new(b, RuntimeOptions::default())),
        }));
        crate::fork::register(&rt.reg);
        CPYTHON_RUNTIMES.lock().push(rt);
        Ok(rt)
    }

    /// The runtime whose registry is `reg`.
    pub(crate) fn of(reg: &Arc<Registry<CPython>>) -> Option<&'static Runtime<CPython>> {
        CPYTHON_RUNTIMES
            .lock()
            .iter()
            .copied()
            .find(|r| Arc::ptr_eq(&r.reg, reg))
    }

    /// Every CPython runtime of this copy of the library.
    pub(crate) fn all() -> Vec<&'static Runtime<CPython>> {
        CPYTHON_RUNTIMES.lock().clone()
    }

    fn api(&self) -> &'static crate::cpython::ffi::Api {
        self.reg.backend.api
    }

    /// The running CPython's `(major, minor)`.
    pub fn python_version(&self) -> (u32, u32) {
        self.api().version
    }

    /// Registers the interpreter the calling thread is attached to (main
    /// after `Py_Initialize`, or the interpreter importing an extension),
    /// initializing CPython first if it is not (`Py_InitializeEx(0)`: the
    /// caller is then left attached to main, as `Py_Initialize` leaves it).
    /// Returns main's id. Call it early — right after `Py_Initialize`, or in
    /// module init — so that the gate is in place before finalization can
    /// start (`docs/cpython-backend.md`).
    pub fn initialize(&self) -> Result<InterpreterId> {
        let a = self.api();
        // SAFETY: plain queries / initialization of the loaded libpython.
        unsafe {
            if (a.Py_IsInitialized)() == 0 {
                (a.Py_InitializeEx)(0);
            }
        }
        // naming the current interpreter registers it (and main first)
        let main = self.main_interpreter()?;
        let _ = self.current_interpreter();
        Ok(main)
    }

    /// The main interpreter's id. Never creates an interpreter; registers
    /// main when the calling thread is attached to it and it is not yet
    /// registered. `NoSuchInterpreter` after main was finalized, or when it
    /// was never registered and the caller is not attached to it.
    pub fn main_interpreter(&self) -> Result<InterpreterId> {
        if let Some(m) = self.reg.main() {
            return Ok(m.id);
        }
        let a = self.api();
        // SAFETY: reads CPython's state; `cur` is this thread's attached
        // thread state (checked), so its interpreter is alive.
        let main_ptr = unsafe {
            let cur = a.current();
            if cur.is_null()
                || (a.Py_IsInitialized)() == 0
                || (a.PyThreadState_GetInterpreter)(cur) != (a.PyInterpreterState_Main)()
                || (!a.current_is_thread_local() && cur != (a.PyGILState_GetThisThreadState)())
            {
                return Err(Error::NoSuchInterpreter);
            }
            (a.PyInterpreterState_Main)() as usize
        };
        let m = self.reg.backend.register_attached(&self.reg, main_ptr)?;
        Ok(m.id)
    }

    /// Registers the interpreter of the thread state attached now — main
    /// or a subinterpreter — trusting the caller that it is the calling
    /// thread's, and returns its id. For a module's exec slot, which
    /// CPython's import runs attached: on 3.9–3.11 the library cannot
    /// otherwise tell that the GIL holder is the calling thread when its
    /// thread state is not the thread's `PyGILState` one (a subinterpreter
    /// entered with `PyThreadState_Swap`, as `_xxsubinterpreters.run_string`
    /// does), so [`Runtime::current_interpreter`] answers `NotAttached`
    /// there. `NotAttached` if no thread state is attached at all.
    ///
    /// # Safety
    /// The calling thread must be attached: the thread state CPython holds
    /// as current is the calling thread's.
    pub unsafe fn register_attached_interpreter(&self) -> Result<InterpreterId> {
        let a = self.api();
        // SAFETY: the current thread state is the caller's (contract), so it
        // and its interpreter are alive while it stays attached.
        let ip = unsafe {
            let cur = a.current();
            if cur.is_null() || (a.Py_IsInitialized)() == 0 {
                return Err(Error::NotAttached);
            }
            (a.PyThreadState_GetInterpreter)(cur) as usize
        };
        if ip == 0 {
            return Err(Error::NotAttached);
        }
        Ok(self.reg.backend.register_attached(&self.reg, ip)?.id)
    }

    /// Creates a subinterpreter: `SharedWithMain` (`Py_NewInterpreter`, any
    /// CPython) or `Own` (`Py_NewInterpreterFromConfig` with its own GIL,
    /// 3.12+); `Unsupported` otherwise (and for `None`: no free-threaded
    /// build). Refused with `Finalizing` while main is finalizing,
    /// `NoSuchInterpreter` while main is not registered. The calling thread
    /// may be attached to anything; it is attached to main for the call and
    /// restored afterwards.
    pub fn create_interpreter(&self, mode: LockMode) -> Result<InterpreterId> {
        self.reg.backend.supports(mode)?;
        let main = self.reg.main().ok_or(Error::NoSuchInterpreter)?;
        let t = self.ensure(main.id)?;
        let main_ts = with_ctx(&self.reg, |c| Ok(c.current_raw_now())).unwrap_or(0);
        // SAFETY: the ensure above attached `main_ts` of main on this thread.
        let r = unsafe {
            self.reg
                .backend
                .create(&self.reg, &main, mode, main_ts as *mut _)
        };
        let _ = self.release_ticket(t);
        r
    }

    /// Sets the bound on the wait of a finalization that CPython starts
    /// (the atexit callback). Default 5 s.
    pub fn set_exit_bound(&self, bound: Duration) {
        self.reg.exit_bound_ms.store(
            u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The bound on the wait of a finalization that CPython starts.
    pub fn exit_bound(&self) -> Duration {
        Duration::from_millis(
            self.reg
                .exit_bound_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The atexit callback of interpreter `id`: CPython is finalizing it
    /// (or, for main, the whole runtime). Closes its gate (main's closes
    /// every gate), then waits, with the GIL released, until no other
    /// thread holds them open or the bound passes (the holders are then
    /// reported on stderr); a subinterpreter's keeper is freed so that
    /// `Py_EndInterpreter` finds its thread state the last one. A
    /// finalization the library itself runs (finalize) returns at once.
    pub(crate) fn on_atexit(&self, id: InterpreterId) {
        let Ok(i) = self.reg.lookup(id) else { return };
        let me = thread::finalizer_identity::<CPython>();
        if i.gate.finalizer() == me {
            // the library's own finalize is ending it (already drained)
            self.free_keeper(&i);
            return;
        }
        let targets = if i.is_main {
            self.reg.interpreters()
        } else {
            vec![i.clone()]
        };
        for t in &targets {
            if Arc::ptr_eq(t, &i) {
                // CPython (or another runtime) is ending `i` and frees it
                // once the callbacks return: no finalize of this runtime may
                // claim it after this (it answers BUSY)
                t.gate.close_external();
            } else {
                t.gate.close();
            }
        }
        let deadline = Deadline::after(Some(self.exit_bound()));
        let a = self.api();
        // SAFETY: the callback runs attached on the finalizing thread; the
        // thread state saved here is restored below.
        let saved = unsafe { (a.PyEval_SaveThread)() };
        for t in &targets {
            let own = with_existing(&self.reg, |c| c.holds(t)).unwrap_or(false);
            if !t.gate.wait_drained(u32::from(own), &deadline) {
                self.reg.count(|c| &c.finalize_timeouts);
                report_exit_holders(t, self.exit_bound());
            }
        }
        // 3.13+ ends the remaining subinterpreters itself after this, and
        // frees each one's first thread state (our keeper) on the way
        if i.is_main && a.version >= (3, 13) {
            for sub in self.reg.subinterpreters() {
                sub.data
                    .keeper
                    .store(0, std::sync::atomic::Ordering::Release);
            }
        }
        // CPython ≤ 3.12 does not end subinterpreters at exit (it aborts
        // with "remaining subinterpreters"): end the ones created through
        // the library, as the model's finalize of main does
        if i.is_main && a.version < (3, 13) {
            for sub in self.reg.subinterpreters() {
                if !sub.data.created || sub.gate.begin_finalize(me).is_err() {
                    continue;
                }
                // SAFETY: detached (saved above); `sub` is drained (its
                // gate closed and waited for with main's) or past the bound.
                unsafe { self.reg.backend.end(&sub, saved, &[]) };
                sub.gate.finish_finalize();
                self.reg.remove_interp(&sub);
                self.reg.count(|c| &c.finalized);
            }
        }
        // SAFETY: re-attaches the finalizing thread's own thread state.
        unsafe { (a.PyEval_RestoreThread)(saved) };
        self.free_keeper(&i);
    }

    /// Frees a subinterpreter's keeper thread state, from its atexit
    /// callback: after `threading._shutdown` (the keeper carries the
    /// subinterpreter's `threading` main-thread lock) and before
    /// `Py_EndInterpreter` checks that its thread state is the last.
    fn free_keeper(&self, i: &Interp<CPython>) {
        if i.is_main {
            return;
        }
        let k = i.data.keeper.swap(0, std::sync::atomic::Ordering::AcqRel);
        if k != 0 {
            let a = self.api();
            // SAFETY: the atexit callback runs attached to the
            // subinterpreter; the keeper is a detached thread state of it
            // that no thread uses.
            unsafe {
                (a.PyThreadState_Clear)(k as *mut _);
                (a.PyThreadState_Delete)(k as *mut _);
            }
        }
    }

    /// CPython has finished with interpreter `id` (`None`: with all of
    /// them): its records are retired (ids never resolve again, its thread
    /// states are never touched again).
    pub(crate) fn retire(&self, id: Option<InterpreterId>) {
        let list = match id {
            Some(id) => self.reg.lookup(id).into_iter().collect(),
            None => self.reg.interpreters(),
        };
        for i in list {
            i.gate.close();
            i.gate.finish_finalize();
            self.reg.remove_interp(&i);
        }
    }
}

/// Prints who kept `i` open past a CPython-started finalization's bound.
#[cfg(not(loom))]
fn report_exit_holders(i: &Interp<CPython>, bound: Duration) {
    let hs = i.holders();
    let mut msg = format!(
        "tstate: interpreter {:#x} is being finalized by CPython with {} thread(s) still inside spans after {} ms; they will be stopped by CPython when they next attach:\n",
        i.id.as_raw(),
        hs.len(),
        bound.as_millis()
    );
    for h in hs {
        msg.push_str(&format!(
            "  thread {} (os tid {}{}) {:?} x{} for {:?}\n",
            h.thread_number,
            h.os_thread_id,
            h.thread_name
                .map(|n| format!(", {n:?}"))
                .unwrap_or_default(),
            h.kind,
            h.spans,
            h.held_for
        ));
    }
    eprint!("{msg}");
}
