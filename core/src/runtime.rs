//! The runtime: registries of interpreters and thread states, finalization,
//! fault injection and diagnostics; and the public API every facade calls.

use crate::error::{Error, Result};
use crate::interp::Interp;
use crate::sync::{Arc, AtomicU8, AtomicU64, Instant, Mutex, Ordering};
use crate::thread::{self, with_ctx, with_existing};
use crate::tstate::TState;
use crate::types::{
    Diagnostics, Holder, InterpKey, InterpreterId, InterpreterState, LockMode, RuntimeOptions,
    ThreadStateId, Ticket, TsKey,
};
use slotmap::SlotMap;
use std::time::Duration;

/// Counters kept in [`Diagnostics`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) finalized: AtomicU64,
    pub(crate) finalize_timeouts: AtomicU64,
    pub(crate) exit_cleanups: AtomicU64,
    pub(crate) exit_spans_closed: AtomicU64,
    pub(crate) exit_thread_states_freed: AtomicU64,
    pub(crate) injected_faults: AtomicU64,
    pub(crate) exclusion_violations: AtomicU64,
    pub(crate) work_after_finalize: AtomicU64,
}

/// Shared state of a runtime.
pub(crate) struct Inner {
    pub(crate) options: RuntimeOptions,
    /// Interpreters; locked only to create, look up (a thread's first use
    /// of an interpreter), finalize and report — never on ensure/release.
    interps: Mutex<SlotMap<InterpKey, Arc<Interp>>>,
    main: Mutex<Option<Arc<Interp>>>,
    /// Thread states; locked only to create and delete them.
    tstates: Mutex<SlotMap<TsKey, Arc<TState>>>,
    /// Fault injection: high 32 bits = allocations still to let through,
    /// low 32 bits = allocations to fail after those. 0 = off.
    faults: AtomicU64,
    /// 1 once the owning [`Runtime`] was dropped.
    closed: AtomicU8,
    pub(crate) counters: Counters,
}

impl Inner {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) != 0
    }

    /// An allocation point: fails with `NoMemory` while faults are injected.
    #[inline]
    pub(crate) fn alloc_point(&self) -> Result<()> {
        if self.faults.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        self.alloc_point_slow()
    }

    #[cold]
    fn alloc_point_slow(&self) -> Result<()> {
        let mut f = self.faults.load(Ordering::Relaxed);
        while f != 0 {
            let (skip, fail) = (f >> 32, f & 0xffff_ffff);
            let next = if skip > 0 { f - (1 << 32) } else { f - 1 };
            match self
                .faults
                .compare_exchange(f, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) if skip > 0 => return Ok(()),
                Ok(_) => {
                    debug_assert!(fail > 0);
                    self.count(|c| &c.injected_faults);
                    return Err(Error::NoMemory);
                }
                Err(x) => f = x,
            }
        }
        Ok(())
    }

    pub(crate) fn count(&self, f: impl FnOnce(&Counters) -> &AtomicU64) {
        f(&self.counters).fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_exit(&self, spans: u64, freed: u64) {
        if spans + freed > 0 {
            self.count(|c| &c.exit_cleanups);
            self.counters
                .exit_spans_closed
                .fetch_add(spans, Ordering::Relaxed);
            self.counters
                .exit_thread_states_freed
                .fetch_add(freed, Ordering::Relaxed);
        }
    }

    /// Resolves an id; forged, unknown and gone ids give `NoSuchInterpreter`.
    pub(crate) fn lookup(&self, id: InterpreterId) -> Result<Arc<Interp>> {
        let key = id.key().ok_or(Error::NoSuchInterpreter)?;
        let i = self
            .interps
            .lock()
            .get(key)
            .cloned()
            .ok_or(Error::NoSuchInterpreter)?;
        if i.is_gone() {
            return Err(Error::NoSuchInterpreter);
        }
        Ok(i)
    }

    pub(crate) fn new_tstate(
        &self,
        interp: &Arc<Interp>,
        owner: u64,
        by_ensure: bool,
    ) -> Result<Arc<TState>> {
        self.alloc_point()?;
        let mut map = self.tstates.lock();
        map.try_reserve(1).map_err(|_| Error::NoMemory)?;
        let key = map.insert_with_key(|k| {
            Arc::new(TState::new(
                ThreadStateId::from_key(k),
                interp.clone(),
                owner,
                by_ensure,
            ))
        });
        Ok(map[key].clone())
    }

    pub(crate) fn delete_tstate(&self, ts: &TState) {
        ts.mark_deleted();
        if let Some(k) = ts.id.key() {
            self.tstates.lock().remove(k);
        }
    }

    /// The owning thread number of a live thread state, if any.
    pub(crate) fn tstate_owner(&self, id: ThreadStateId) -> Option<u64> {
        let k = id.key()?;
        self.tstates.lock().get(k).map(|t| t.owner)
    }

    fn main(&self) -> Result<Arc<Interp>> {
        let mut main = self.main.lock();
        if let Some(m) = main.as_ref().filter(|m| !m.is_gone()) {
            return Ok(m.clone());
        }
        let mode = match self.options.main_lock {
            LockMode::None => LockMode::None,
            _ => LockMode::Own,
        };
        let m = self.insert_interp(mode, true, None)?;
        *main = Some(m.clone());
        Ok(m)
    }

    fn insert_interp(
        &self,
        mode: LockMode,
        is_main: bool,
        lock_owner: Option<Arc<Interp>>,
    ) -> Result<Arc<Interp>> {
        self.alloc_point()?;
        let mut map = self.interps.lock();
        if let Some(owner) = &lock_owner
            && owner.is_finalizing()
        {
            return Err(Error::Finalizing);
        }
        map.try_reserve(1).map_err(|_| Error::NoMemory)?;
        let key = map.insert_with_key(|k| {
            Arc::new(Interp::new(
                InterpreterId::from_key(k),
                mode,
                is_main,
                lock_owner,
            ))
        });
        Ok(map[key].clone())
    }

    fn create_interpreter(&self, mode: LockMode) -> Result<InterpreterId> {
        let main = self.main()?;
        // Every subinterpreter records main so that creation is refused once
        // main finalizes; only SharedWithMain uses its lock.
        let i = self.insert_interp(mode, false, Some(main))?;
        Ok(i.id)
    }

    fn subinterpreters(&self) -> Vec<Arc<Interp>> {
        self.interps
            .lock()
            .values()
            .filter(|i| !i.is_main)
            .cloned()
            .collect()
    }

    /// Runs one finalization attempt on `interp`, whose `FINALIZING` bit the
    /// caller already set with `begin_finalize`.
    fn finalize_one(
        this: &Arc<Self>,
        interp: &Arc<Interp>,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), FinalizeError> {
        let (own, parked) = match with_existing(this, |c| (c.holds(interp), c.park_for_finalize()))
        {
            Some((own, parked)) => (own, Some(parked)),
            None => (false, None),
        };
        let drained = interp.wait_drained(u32::from(own), deadline);
        if drained {
            if let Some(k) = interp.id.key() {
                this.interps.lock().remove(k);
            }
            let mut map = this.tstates.lock();
            map.retain(|_, t| {
                let mine = Arc::ptr_eq(&t.interp, interp);
                if mine {
                    t.mark_deleted();
                }
                !mine
            });
            drop(map);
            this.count(|c| &c.finalized);
        }
        if let Some(p) = parked {
            with_existing(this, |c| c.unpark_after_finalize(interp, p));
        }
        if drained {
            Ok(())
        } else {
            this.count(|c| &c.finalize_timeouts);
            Err(FinalizeError {
                error: Error::Timeout,
                interpreter: interp.id,
                holders: interp.holders(),
            })
        }
    }
}

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

/// A model of a CPython runtime: a main interpreter, subinterpreters, thread
/// states and the per-thread attach state.
///
/// `Runtime::new()` gives a private runtime (tests run in parallel, each with
/// its own); [`Runtime::global`] is the one the C facades use. A runtime is
/// `Send + Sync`; every method may be called from any thread and acts on the
/// *calling* thread's attach state.
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
pub struct Runtime {
    inner: Arc<Inner>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.inner.closed.store(1, Ordering::Release);
    }
}

impl Runtime {
    /// A private runtime with default options.
    pub fn new() -> Self {
        Self::with_options(RuntimeOptions::default())
    }

    /// A private runtime with `options`.
    pub fn with_options(options: RuntimeOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                options,
                interps: Mutex::new(SlotMap::with_key()),
                main: Mutex::new(None),
                tstates: Mutex::new(SlotMap::with_key()),
                faults: AtomicU64::new(0),
                closed: AtomicU8::new(0),
                counters: Counters::default(),
            }),
        }
    }

    /// The process-wide runtime used by the C facades (created on first
    /// use; its main interpreter is created lazily by
    /// [`main_interpreter`](Self::main_interpreter)).
    #[cfg(not(loom))]
    pub fn global() -> &'static Runtime {
        static GLOBAL: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(Runtime::new)
    }

    /// This runtime's options.
    pub fn options(&self) -> RuntimeOptions {
        self.inner.options
    }

    // ----- interpreters ---------------------------------------------------

    /// The main interpreter, created on first call — and created anew after
    /// a completed finalization of the previous one (like `Py_Initialize`
    /// after `Py_FinalizeEx`; the old id stays invalid).
    pub fn main_interpreter(&self) -> Result<InterpreterId> {
        self.inner.main().map(|m| m.id)
    }

    /// Creates a subinterpreter with `mode` (creating main first if needed).
    /// Refused with `Finalizing` while main is finalizing.
    pub fn create_interpreter(&self, mode: LockMode) -> Result<InterpreterId> {
        self.inner.create_interpreter(mode)
    }

    /// `Running` or `Finalizing`; a gone interpreter gives `NoSuchInterpreter`.
    pub fn interpreter_state(&self, id: InterpreterId) -> Result<InterpreterState> {
        self.inner.lookup(id)?.state()
    }

    /// The lock mode `id` was created with.
    pub fn lock_mode(&self, id: InterpreterId) -> Result<LockMode> {
        Ok(self.inner.lookup(id)?.mode)
    }

    /// Finalizes `id`: refuses new spans at once, waits (sleeping) until no
    /// other thread holds it open, then deletes it and all its thread states;
    /// its id never resolves again. Finalizing main finalizes every
    /// subinterpreter first (main refuses new spans during that too).
    ///
    /// The caller's own spans on `id` are not waited for; while it waits the
    /// caller is detached (so a holder that detached can always re-attach and
    /// finish) and re-attached afterwards if its interpreter still exists.
    ///
    /// With `timeout`, gives up at the bound with [`Error::Timeout`] and the
    /// list of holders; the interpreter stays `Finalizing` (still refusing)
    /// and finalize may be called again. `None` waits without bound.
    pub fn finalize(
        &self,
        id: InterpreterId,
        timeout: Option<Duration>,
    ) -> std::result::Result<(), FinalizeError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let interp = self.inner.lookup(id).map_err(|e| start_error(e, id))?;
        let me = thread::thread_number();
        interp.begin_finalize(me).map_err(|e| start_error(e, id))?;
        if interp.is_main {
            for sub in self.inner.subinterpreters() {
                if sub.is_gone() {
                    continue;
                }
                match sub.begin_finalize(me) {
                    Ok(()) => {}
                    Err(Error::NoSuchInterpreter) => continue,
                    Err(e) => {
                        interp.end_finalize_attempt();
                        return Err(start_error(e, sub.id));
                    }
                }
                if let Err(e) = Inner::finalize_one(&self.inner, &sub, deadline) {
                    interp.end_finalize_attempt();
                    return Err(e);
                }
            }
        }
        Inner::finalize_one(&self.inner, &interp, deadline)
    }

    /// Finalizes the whole runtime: every subinterpreter, then main (what
    /// `Py_FinalizeEx` does). Does nothing if main was never created.
    pub fn finalize_all(
        &self,
        timeout: Option<Duration>,
    ) -> std::result::Result<(), FinalizeError> {
        let main = self.inner.main.lock().clone();
        match main {
            Some(m) if !m.is_gone() => self.finalize(m.id, timeout),
            _ => Ok(()),
        }
    }

    /// The threads holding `id` open now (what a timed-out finalize reports).
    pub fn holders(&self, id: InterpreterId) -> Result<Vec<Holder>> {
        Ok(self.inner.lookup(id)?.holders())
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
    #[inline]
    pub fn ensure(&self, id: InterpreterId) -> Result<Ticket> {
        with_ctx(&self.inner, |c| c.ensure(id))
    }

    /// Undoes this thread's innermost ensure (the thread-stored design).
    /// `NotAttached` if nothing is ensured; `OutOfOrder` if the innermost
    /// span is an activation, or a save inside it is still open.
    #[inline]
    pub fn release(&self) -> Result<()> {
        with_ctx(&self.inner, |c| c.release())
    }

    /// Undoes the ensure of ticket `t`, which must be this thread's innermost
    /// (the int-handle design). `WrongThread`, `OutOfOrder` or
    /// `InvalidHandle` otherwise (see [`Ticket`]).
    #[inline]
    pub fn release_ticket(&self, t: Ticket) -> Result<()> {
        with_ctx(&self.inner, |c| c.release_ticket(t))
    }

    /// Ensures and returns a guard that releases on drop (not `Send`: the
    /// span belongs to this thread).
    pub fn ensure_guard(&self, id: InterpreterId) -> Result<crate::EnsureGuard<'_>> {
        let t = self.ensure(id)?;
        Ok(crate::EnsureGuard::new(self, t))
    }

    // ----- explicit lifecycle -----------------------------------------------

    /// Creates a detached thread state of `id` owned by the calling thread
    /// (an allocation point). `Finalizing` / `NoSuchInterpreter` as ensure.
    pub fn new_thread_state(&self, id: InterpreterId) -> Result<ThreadStateId> {
        with_ctx(&self.inner, |c| c.new_thread_state(id))
    }

    /// Attaches `ts` inside a new span (the thread's first span on its
    /// interpreter goes through the gate). `WrongThread` from another thread,
    /// `InvalidHandle` after delete, `Busy` if already active or in use.
    pub fn activate(&self, ts: ThreadStateId) -> Result<()> {
        with_ctx(&self.inner, |c| c.activate(ts))
    }

    /// Ends the innermost activation, which must be of `ts`; re-attaches what
    /// was attached before activate. `OutOfOrder` if an inner span is open,
    /// `NotAttached` if `ts` is not active.
    pub fn deactivate(&self, ts: ThreadStateId) -> Result<()> {
        with_ctx(&self.inner, |c| c.deactivate(ts))
    }

    /// Deletes `ts`. `Busy` while it is active, saved or re-attached.
    pub fn delete_thread_state(&self, ts: ThreadStateId) -> Result<()> {
        with_ctx(&self.inner, |c| c.delete(ts))
    }

    /// The calling thread's attached thread state and its interpreter.
    pub fn current(&self) -> Option<(ThreadStateId, InterpreterId)> {
        with_existing(&self.inner, |c| c.current()).flatten()
    }

    /// Whether the calling thread is attached to `id` (exact per
    /// interpreter, unlike CPython's `PyGILState_Check`).
    pub fn is_attached(&self, id: InterpreterId) -> bool {
        with_existing(&self.inner, |c| c.is_attached_to(id)).unwrap_or(false)
    }

    // ----- save / restore ------------------------------------------------------

    /// `PyEval_SaveThread` / `Py_BEGIN_ALLOW_THREADS`: detaches the current
    /// thread state (its span stays open) and returns it. `NotAttached` if
    /// none.
    pub fn save(&self) -> Result<ThreadStateId> {
        with_ctx(&self.inner, |c| c.save())
    }

    /// `PyEval_RestoreThread` / `Py_END_ALLOW_THREADS`: re-attaches the
    /// innermost saved thread state. Always succeeds for it, even while its
    /// interpreter is finalizing. `Busy` if something is attached,
    /// `OutOfOrder` if it is not the innermost saved one, `NotAttached` if it
    /// was not saved.
    pub fn restore(&self, ts: ThreadStateId) -> Result<()> {
        with_ctx(&self.inner, |c| c.restore(ts))
    }

    // ----- Python work ---------------------------------------------------------

    /// "Python work" on `id`: legal only while the calling thread is attached
    /// to `id` (`NotAttached` otherwise). Increments the interpreter's work
    /// counter with a racy load + store, so lost updates show any failure of
    /// mutual exclusion; also counts exclusion and liveness violations in
    /// [`Diagnostics`]. Returns the counter after the increment.
    pub fn work(&self, id: InterpreterId) -> Result<u64> {
        with_ctx(&self.inner, |c| c.work(id))
    }

    /// The work counter of `id`.
    pub fn work_count(&self, id: InterpreterId) -> Result<u64> {
        Ok(self.inner.lookup(id)?.work_count())
    }

    /// Sets the attached thread state's scratch value (its "thread-local
    /// Python data"), to test that nothing leaks between top-level ensures.
    pub fn set_scratch(&self, v: u64) -> Result<()> {
        with_ctx(&self.inner, |c| c.current_ts().map(|t| t.set_scratch(v)))
    }

    /// The attached thread state's scratch value.
    pub fn scratch(&self) -> Result<u64> {
        with_ctx(&self.inner, |c| c.current_ts().map(|t| t.scratch()))
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
        let v = if fail == 0 {
            0
        } else {
            (u64::from(skip) << 32) | u64::from(fail)
        };
        self.inner.faults.store(v, Ordering::Relaxed);
    }

    /// A snapshot of the runtime's counters.
    pub fn diagnostics(&self) -> Diagnostics {
        let c = &self.inner.counters;
        let interps = self.inner.interps.lock();
        let open_holds = interps.values().map(|i| u64::from(i.holds())).sum();
        let n_interps = interps.len() as u64;
        drop(interps);
        Diagnostics {
            interpreters: n_interps,
            thread_states: self.inner.tstates.lock().len() as u64,
            open_holds,
            finalized: c.finalized.load(Ordering::Relaxed),
            finalize_timeouts: c.finalize_timeouts.load(Ordering::Relaxed),
            exit_cleanups: c.exit_cleanups.load(Ordering::Relaxed),
            exit_spans_closed: c.exit_spans_closed.load(Ordering::Relaxed),
            exit_thread_states_freed: c.exit_thread_states_freed.load(Ordering::Relaxed),
            injected_faults: c.injected_faults.load(Ordering::Relaxed),
            exclusion_violations: c.exclusion_violations.load(Ordering::Relaxed),
            work_after_finalize: c.work_after_finalize.load(Ordering::Relaxed),
        }
    }
}
