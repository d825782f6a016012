//! A runtime's shared state: the registries of interpreters and thread
//! states, the main interpreter, fault injection, counters. Below the
//! per-thread span machine (`thread.rs`), which calls into it; it never
//! calls up.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ids::Arena;
use crate::interp::{Interp, ThreadInfo};
use crate::sync::{Arc, AtomicU64 as SyncAtomicU64, Mutex};
use crate::thread::InlineExport;
// Counters, fault injection, the closed flag and the exit bound are
// bookkeeping, not synchronisation the core relies on: plain std atomics
// even under loom (fewer modelled operations, same properties checked).
use crate::tstate::{TState, TsKind};
use crate::types::{
    Diagnostics, GuardId, Holder, InterpreterId, LockMode, RuntimeOptions, SpanKind, ThreadStateId,
    ViewId,
};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

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
    pub(crate) orphaned: AtomicU64,
}

/// An open guard of the guard design: a hold on `interp`.
pub(crate) struct GuardRec<B: Backend> {
    pub(crate) interp: Arc<Interp<B>>,
    /// The thread that took it, for holder reports: its context's record
    /// where it has one (shared, so opening a guard reads no thread name
    /// and allocates nothing but the table slot).
    thread: Arc<ThreadInfo>,
    since_ns: u64,
}

/// Shared state of a runtime.
pub struct Registry<B: Backend> {
    pub(crate) backend: B,
    pub(crate) options: RuntimeOptions,
    /// Interpreters; locked only to create, look up (a thread's first use
    /// of an interpreter), finalize and report — never on ensure/release.
    interps: Mutex<Arena<Arc<Interp<B>>>>,
    main: Mutex<Option<Arc<Interp<B>>>>,
    /// Thread-state records; locked only to create and delete them.
    tstates: Mutex<Arena<Arc<TState<B>>>>,
    /// Open guards (guard design).
    guards: Mutex<Arena<GuardRec<B>>>,
    /// Open views (guard design): weak references by interpreter id.
    views: Mutex<Arena<InterpreterId>>,
    /// Fault injection: high 32 bits = allocations still to let through,
    /// low 32 bits = allocations to fail after those. 0 = off.
    faults: AtomicU64,
    /// 1 once the owning runtime was dropped.
    closed: AtomicU8,
    /// Bound on the wait of a finalization that CPython starts (the atexit
    /// callback), in milliseconds.
    pub(crate) exit_bound_ms: AtomicU64,
    /// Bumped whenever records can have become prunable behind a thread's
    /// back (an interpreter removed, thread-state records marked deleted
    /// by a finalization or after `fork`): a thread's `prune` skips its
    /// scans while this is unchanged since its last one. A hint (Relaxed):
    /// pruning is memory hygiene, never needed for correctness (every
    /// lookup checks the gate and the record's deleted flag itself).
    pub(crate) epoch: AtomicU64,
    /// Guards closed so far, bumped (Release) after each close removed its
    /// record: a thread's cached guard lookup (`thread::Fast`) stays valid
    /// while this is unchanged (Acquire) since before the lookup.
    pub(crate) guard_closes: SyncAtomicU64,
    pub(crate) counters: Counters,
    /// Where each thread's inline block is (`thread::InlineState`), if the
    /// runtime exports one: set once, before any thread's first call
    /// (configuration, not synchronisation the core relies on).
    inline: std::sync::OnceLock<InlineExport>,
}

/// A random first generation in `1..=2³¹` for a runtime's arenas, so that
/// two runtimes in one process (two facades) hand out different ids: an id
/// of one names an object of the other only if that slot happens to be at
/// the same generation (a chance of 2⁻³¹). A slot still serves at least 2³¹
/// reuses before it is retired. Under loom: 1 (executions stay comparable).
fn random_generation_base() -> u32 {
    #[cfg(loom)]
    {
        1
    }
    #[cfg(not(loom))]
    {
        use std::hash::{BuildHasher, Hasher};
        // std's RandomState: keys from the OS, distinct per call
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(&h as *const _ as usize);
        (h.finish() % (1 << 31)) as u32 + 1
    }
}

impl<B: Backend> Registry<B> {
    pub(crate) fn new(backend: B, options: RuntimeOptions) -> Self {
        let first = match options.first_generation {
            0 => random_generation_base(),
            g => g,
        };
        Self {
            backend,
            options,
            interps: Mutex::new(Arena::new(first)),
            main: Mutex::new(None),
            tstates: Mutex::new(Arena::new(first)),
            guards: Mutex::new(Arena::new(first)),
            views: Mutex::new(Arena::new(first)),
            faults: AtomicU64::new(0),
            closed: AtomicU8::new(0),
            exit_bound_ms: AtomicU64::new(5_000),
            epoch: AtomicU64::new(0),
            guard_closes: SyncAtomicU64::new(0),
            counters: Counters::default(),
            inline: std::sync::OnceLock::new(),
        }
    }

    /// Sets where each thread's inline block is; `false` if it was set.
    pub(crate) fn set_inline_export(&self, export: InlineExport) -> bool {
        self.inline.set(export).is_ok()
    }

    /// Where each thread's inline block is, if the runtime exports one.
    pub(crate) fn inline_export(&self) -> Option<InlineExport> {
        self.inline.get().copied()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) != 0
    }

    pub(crate) fn close(&self) {
        self.closed.store(1, Ordering::Release);
    }

    // ----- fault injection, counters ----------------------------------------

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

    pub(crate) fn set_faults(&self, skip: u32, fail: u32) {
        let v = if fail == 0 {
            0
        } else {
            (u64::from(skip) << 32) | u64::from(fail)
        };
        self.faults.store(v, Ordering::Relaxed);
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

    // ----- interpreters -------------------------------------------------------

    /// Resolves an id; forged, unknown and gone ids give `NoSuchInterpreter`.
    pub(crate) fn lookup(&self, id: InterpreterId) -> Result<Arc<Interp<B>>> {
        let i = self
            .interps
            .lock()
            .get(id.as_raw())
            .cloned()
            .ok_or(Error::NoSuchInterpreter)?;
        if i.gate.is_gone() {
            return Err(Error::NoSuchInterpreter);
        }
        Ok(i)
    }

    /// The live interpreter whose data satisfies `pred` (CPython: the one
    /// with a given `PyInterpreterState *`).
    pub(crate) fn find(&self, pred: impl Fn(&Interp<B>) -> bool) -> Option<Arc<Interp<B>>> {
        self.interps
            .lock()
            .values()
            .find(|i| !i.gate.is_gone() && pred(i))
            .cloned()
    }

    /// Registers an interpreter (an allocation point) and returns it.
    /// With `parent`, refused with `Finalizing` when `parent` (main) is
    /// finalizing — checked under the registry lock, under which main's
    /// finalization lists the subinterpreters to end, so a new one is either
    /// refused or ended with main.
    pub(crate) fn insert_interp(
        &self,
        mode: LockMode,
        is_main: bool,
        data: B::Interp,
        parent: Option<&Interp<B>>,
    ) -> Result<Arc<Interp<B>>> {
        self.alloc_point()?;
        let mut map = self.interps.lock();
        if parent.is_some_and(|p| p.gate.is_finalizing()) {
            return Err(Error::Finalizing);
        }
        let id = map
            .insert_with(|id| {
                Arc::new(Interp::new(
                    InterpreterId::from_raw(id),
                    mode,
                    is_main,
                    data,
                ))
            })
            .ok_or(Error::NoMemory)?;
        let i = map.get(id).expect("just inserted").clone();
        drop(map);
        if is_main {
            *self.main.lock() = Some(i.clone());
        }
        Ok(i)
    }

    /// Checks that a registry slot is available (so that a creation that
    /// must not fail half-way can reserve first).
    pub(crate) fn reserve_interp(&self) -> Result<()> {
        self.alloc_point()?;
        if self.interps.lock().reserve_one() {
            Ok(())
        } else {
            Err(Error::NoMemory)
        }
    }

    /// The live main interpreter, if any (never creates).
    pub(crate) fn main(&self) -> Option<Arc<Interp<B>>> {
        self.main.lock().clone().filter(|m| !m.gate.is_gone())
    }

    /// Every live subinterpreter.
    pub(crate) fn subinterpreters(&self) -> Vec<Arc<Interp<B>>> {
        self.interps
            .lock()
            .values()
            .filter(|i| !i.is_main && !i.gate.is_gone())
            .cloned()
            .collect()
    }

    /// Every live interpreter.
    pub(crate) fn interpreters(&self) -> Vec<Arc<Interp<B>>> {
        self.interps
            .lock()
            .values()
            .filter(|i| !i.gate.is_gone())
            .cloned()
            .collect()
    }

    /// After `interp` passed its point of no return: forget it and mark all
    /// its thread-state records deleted (the backend freed or will free
    /// them; nobody touches them again).
    pub(crate) fn remove_interp(&self, interp: &Arc<Interp<B>>) {
        self.interps.lock().remove(interp.id.as_raw());
        self.tstates.lock().retain(|t| {
            let mine = Arc::ptr_eq(&t.interp, interp);
            if mine {
                t.mark_deleted();
            }
            !mine
        });
        // a hint, not synchronization: a thread that reads an old value
        // only prunes later; every lookup checks the gate itself
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    // ----- thread states ----------------------------------------------------

    /// Records a thread state of `interp` for thread `owner`. Refused with
    /// `Finalizing` / `NoSuchInterpreter` when `interp` no longer accepts
    /// new thread states — checked under the registry's lock, under which a
    /// finalization also removes its records, so a record is either refused
    /// or removed by that finalization: it never outlives its interpreter.
    /// `spare`, a record of the caller's that nothing else references (a
    /// deleted one, see `RtCtx::spare_ts`), is rewritten in place instead
    /// of allocating a new one; if it is shared after all it is dropped.
    pub(crate) fn insert_tstate(
        &self,
        interp: &Arc<Interp<B>>,
        owner: u64,
        kind: TsKind,
        data: B::TState,
        spare: Option<Arc<TState<B>>>,
    ) -> Result<Arc<TState<B>>> {
        self.alloc_point()?;
        let mut map = self.tstates.lock();
        if kind != TsKind::Borrowed {
            interp.gate.state().and_then(|s| match s {
                crate::InterpreterState::Running => Ok(()),
                crate::InterpreterState::Finalizing if kind == TsKind::Ensure => Ok(()),
                crate::InterpreterState::Finalizing => Err(Error::Finalizing),
            })?;
        }
        let id = map
            .insert_with(|id| {
                let t = TState::new(
                    ThreadStateId::from_raw(id),
                    interp.clone(),
                    owner,
                    kind,
                    data,
                );
                reuse_or_new(spare, t)
            })
            .ok_or(Error::NoMemory)?;
        Ok(map.get(id).expect("just inserted").clone())
    }

    /// Forgets a thread-state record and marks it deleted.
    pub(crate) fn remove_tstate(&self, ts: &TState<B>) {
        ts.mark_deleted();
        self.tstates.lock().remove(ts.id.as_raw());
    }

    /// The owning thread number of a live thread state, if any.
    pub(crate) fn tstate_owner(&self, id: ThreadStateId) -> Option<u64> {
        self.tstates.lock().get(id.as_raw()).map(|t| t.owner)
    }

    /// Records of threads other than `keep` (after `fork()`: they belong to
    /// threads that do not exist in the child).
    #[cfg(not(loom))]
    pub(crate) fn forget_tstates_not_of(&self, keep: u64) {
        self.tstates.lock().retain(|t| {
            let foreign = t.owner != keep;
            if foreign {
                t.mark_deleted();
            }
            !foreign
        });
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(not(loom))]
    pub(crate) fn fork_lock(&self) {
        self.main.fork_lock();
        self.interps.fork_lock();
        self.tstates.fork_lock();
        for i in self.interps_unlocked() {
            i.fork_lock();
        }
    }

    /// # Safety
    /// Only after [`fork_lock`](Self::fork_lock) on this thread.
    #[cfg(not(loom))]
    pub(crate) unsafe fn fork_unlock(&self) {
        for i in self.interps_unlocked() {
            // SAFETY: locked by fork_lock (contract).
            unsafe { i.fork_unlock() };
        }
        // SAFETY: locked by fork_lock (contract).
        unsafe {
            self.tstates.fork_unlock();
            self.interps.fork_unlock();
            self.main.fork_unlock();
        }
    }

    /// The interpreters, read while the registry lock is held by this
    /// thread's `fork_lock`.
    #[cfg(not(loom))]
    fn interps_unlocked(&self) -> Vec<Arc<Interp<B>>> {
        let p: *const Arena<Arc<Interp<B>>> = self.interps.data_ptr();
        // SAFETY: the interps mutex is held by this thread (fork_lock), so
        // no other thread mutates the arena while it is read here.
        unsafe { &*p }.values().cloned().collect()
    }

    // ----- guards and views (the guard design) ------------------------------

    /// Opens a guard on `interp` (an allocation point): a hold through the
    /// gate, refused with `Finalizing` / `NoSuchInterpreter` once it is
    /// finalizing or gone.
    pub(crate) fn open_guard(&self, interp: &Arc<Interp<B>>) -> Result<GuardId> {
        self.alloc_point()?;
        interp.gate.try_hold(false)?;
        let rec = GuardRec {
            interp: interp.clone(),
            thread: crate::thread::this_thread_info::<B>(),
            since_ns: crate::sync::coarse_now_ns(),
        };
        match self.guards.lock().insert_with(|_| rec) {
            Some(id) => Ok(GuardId::from_raw(id)),
            None => {
                interp.gate.release_hold(false);
                Err(Error::NoMemory)
            }
        }
    }

    /// The interpreter an open guard holds (`InvalidHandle` if closed or
    /// never opened).
    /// As [`guard_interp`](Self::guard_interp), the id only, with the
    /// `guard_closes` count read before the lookup (for a thread's cache).
    pub(crate) fn guard_interp_id(&self, g: GuardId) -> Result<(InterpreterId, u64)> {
        let epoch = self.guard_closes.load(Ordering::Acquire);
        let id = self
            .guards
            .lock()
            .get(g.as_raw())
            .map(|r| r.interp.id)
            .ok_or(Error::InvalidHandle)?;
        Ok((id, epoch))
    }

    pub(crate) fn guard_interp(&self, g: GuardId) -> Result<Arc<Interp<B>>> {
        self.guards
            .lock()
            .get(g.as_raw())
            .map(|r| r.interp.clone())
            .ok_or(Error::InvalidHandle)
    }

    /// Closes a guard: its hold is released (finalization may proceed).
    pub(crate) fn close_guard(&self, g: GuardId) -> Result<()> {
        let rec = self
            .guards
            .lock()
            .remove(g.as_raw())
            .ok_or(Error::InvalidHandle)?;
        self.guard_closes.fetch_add(1, Ordering::Release);
        rec.interp.gate.release_hold(false);
        Ok(())
    }

    /// Opens a view of `id` (an allocation point; it never holds anything).
    pub(crate) fn open_view(&self, id: InterpreterId) -> Result<ViewId> {
        self.alloc_point()?;
        self.views
            .lock()
            .insert_with(|_| id)
            .map(ViewId::from_raw)
            .ok_or(Error::NoMemory)
    }

    /// The interpreter id a view names (it may be gone). `InvalidHandle` if
    /// the view is closed or was never opened.
    pub(crate) fn view_id(&self, v: ViewId) -> Result<InterpreterId> {
        self.views
            .lock()
            .get(v.as_raw())
            .copied()
            .ok_or(Error::InvalidHandle)
    }

    /// Closes a view.
    pub(crate) fn close_view(&self, v: ViewId) -> Result<()> {
        self.views
            .lock()
            .remove(v.as_raw())
            .map(|_| ())
            .ok_or(Error::InvalidHandle)
    }

    /// Who holds `interp` open: threads with spans, and open guards.
    pub(crate) fn holders(&self, interp: &Arc<Interp<B>>) -> Vec<Holder> {
        let mut hs = interp.holders();
        let now = crate::sync::coarse_now_ns();
        for g in self.guards.lock().values() {
            if Arc::ptr_eq(&g.interp, interp) {
                hs.push(Holder {
                    thread_number: 0,
                    os_thread_id: g.thread.os_tid(),
                    thread_name: g.thread.name.clone(),
                    kind: SpanKind::Guard,
                    spans: 1,
                    held_for: std::time::Duration::from_nanos(now.saturating_sub(g.since_ns)),
                });
            }
        }
        hs
    }

    // ----- reports ----------------------------------------------------------

    pub(crate) fn diagnostics(&self) -> Diagnostics {
        let c = &self.counters;
        let interps = self.interps.lock();
        let open_holds = interps.values().map(|i| u64::from(i.gate.holds())).sum();
        let n_interps = interps.len() as u64;
        drop(interps);
        Diagnostics {
            interpreters: n_interps,
            thread_states: self
                .tstates
                .lock()
                .values()
                .filter(|t| t.kind != TsKind::Borrowed)
                .count() as u64,
            open_holds,
            finalized: c.finalized.load(Ordering::Relaxed),
            finalize_timeouts: c.finalize_timeouts.load(Ordering::Relaxed),
            exit_cleanups: c.exit_cleanups.load(Ordering::Relaxed),
            exit_spans_closed: c.exit_spans_closed.load(Ordering::Relaxed),
            exit_thread_states_freed: c.exit_thread_states_freed.load(Ordering::Relaxed),
            injected_faults: c.injected_faults.load(Ordering::Relaxed),
            orphaned_thread_states: c.orphaned.load(Ordering::Relaxed),
            exclusion_violations: c.exclusion_violations.load(Ordering::Relaxed),
            work_after_finalize: c.work_after_finalize.load(Ordering::Relaxed),
        }
    }
}

/// `value` in `spare`'s allocation when nothing else references it
/// (`Arc::get_mut` is the proof), else in a new one.
#[inline(always)]
fn reuse_or_new<T>(spare: Option<Arc<T>>, value: T) -> Arc<T> {
    match spare {
        Some(mut a) => match Arc::get_mut(&mut a) {
            Some(slot) => {
                *slot = value;
                a
            }
            None => Arc::new(value),
        },
        None => Arc::new(value),
    }
}
