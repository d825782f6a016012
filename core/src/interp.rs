//! An interpreter and its gate: one atomic state word that makes "refuse when
//! finalizing" and "hold the interpreter open" a single atomic step.
//!
//! # The state word
//!
//! ```text
//!  63        36   35     34          33       32       31 ............ 0
//! [  unused  ] [GONE] [FINALIZING] [PARKED] [LOCKED] [ HOLDS: u32      ]
//! ```
//!
//! * `HOLDS` — how many threads hold the interpreter open (each thread with
//!   at least one ensure/activate span on it counts once; a thread's further
//!   spans are counted in its thread-local state, not here).
//! * `LOCKED` — the interpreter's lock is held (only used in the word of an
//!   interpreter that *owns* a lock: [`LockMode::Own`]; a
//!   [`LockMode::SharedWithMain`] interpreter uses the main interpreter's
//!   word for its lock bits, a [`LockMode::None`] one has no lock).
//! * `PARKED` — at least one thread sleeps on the condition variable waiting
//!   for `LOCKED` to clear; the unlocker must wake them.
//! * `FINALIZING` — new holds are refused; a finalizer may be waiting for
//!   `HOLDS` to drain, and every hold release must wake it.
//! * `GONE` — finalization passed its point of no return; the id never
//!   resolves again. Set only when `HOLDS` is at most the finalizer's own.
//!
//! | state | GONE | FIN | LOCKED | PARKED | HOLDS | new hold | re-attach in a hold |
//! |---|:-:|:-:|:-:|:-:|:-:|---|---|
//! | running, idle | 0 | 0 | 0 | 0 | 0 | granted (lock taken in the same CAS) | — |
//! | running, attached | 0 | 0 | 1 | 0 | n≥1 | granted, then waits for the lock | waits for the lock |
//! | running, contended | 0 | 0 | 1 | 1 | n≥1 | granted, then parks | parks |
//! | running, holders detached | 0 | 0 | 0 | 0 | n≥1 | granted with the lock | takes the lock |
//! | finalizing, draining | 0 | 1 | any | any | n>own | **refused: Finalizing** | always succeeds (may wait for the lock) |
//! | finalizing, drained | 0 | 1 | 0 | 0 | ≤own | refused: Finalizing | only the finalizer's own |
//! | gone | 1 | 1 | 0 | 0 | own | **refused: NoSuchInterpreter** | — (its thread states are deleted) |
//!
//! Transitions: a hold is taken by one CAS that checks `GONE`/`FINALIZING`
//! and increments `HOLDS` (and sets `LOCKED` if it was clear and this word
//! carries the lock); released by one CAS that decrements `HOLDS` (and
//! clears `LOCKED`/`PARKED` when the releaser held the lock here).
//! `FINALIZING` is set by `fetch_or` under the slow mutex and never cleared;
//! `GONE` is set by a CAS under the slow mutex that also checks `HOLDS`.
//! Because the check and the increment are one CAS on the same word as the
//! finalizer's CAS, a hold either happens-before the finalizer's read (and
//! is waited for) or sees `FINALIZING` (and is refused): there is no window.
//!
//! Waking: lock waiters and the finalizer sleep on the same condition
//! variable under the slow mutex and re-check the word under it; wakers
//! change the word first and then take the slow mutex to notify, so a
//! sleeper either sees the change before sleeping or is notified after.

use crate::error::{Error, Result};
use crate::sync::{Arc, AtomicU8, AtomicU32, AtomicU64, Condvar, Instant, Mutex, Ordering};
use crate::types::{Holder, InterpreterId, InterpreterState, LockMode, SpanKind};
use std::time::Duration;

const HOLDS_MASK: u64 = 0xffff_ffff;
const LOCKED: u64 = 1 << 32;
const PARKED: u64 = 1 << 33;
const FINALIZING: u64 = 1 << 34;
const GONE: u64 = 1 << 35;

/// The slow-path state guarded by the slow mutex.
struct Slow {
    /// Thread number of the finalizer currently waiting, 0 if none.
    finalizer: u64,
}

/// The shared, cross-thread view of one thread's hold on one interpreter,
/// written only by that thread (plain atomic stores), read by a finalizer
/// that reports holders.
pub(crate) struct HoldCell {
    pub(crate) thread: Arc<ThreadInfo>,
    /// Enter spans (ensure/activate) this thread has open on the interpreter.
    pub(crate) spans: AtomicU32,
    /// Coarse time when `spans` went from 0 to 1.
    pub(crate) since_ns: AtomicU64,
    /// Kind of the outermost span: 0 ensure, 1 activate.
    pub(crate) kind: AtomicU8,
}

/// Identity of a thread, for holder reports.
pub(crate) struct ThreadInfo {
    pub(crate) number: u64,
    pub(crate) os_tid: u64,
    pub(crate) name: Option<String>,
}

/// One interpreter.
pub(crate) struct Interp {
    pub(crate) id: InterpreterId,
    pub(crate) mode: LockMode,
    pub(crate) is_main: bool,
    /// The gate word (see the module docs).
    word: AtomicU64,
    slow: Mutex<Slow>,
    cv: Condvar,
    /// The interpreter whose word carries this one's lock bits:
    /// `Some(main)` for `SharedWithMain`, `None` otherwise.
    lock_owner: Option<Arc<Interp>>,
    /// The "Python work" counter (updated by a racy load + store on purpose).
    work_counter: AtomicU64,
    /// Threads inside "Python work" in this lock group (kept on the group's
    /// lock owner), to detect mutual-exclusion violations.
    in_work: AtomicU32,
    /// Threads that hold or once held this interpreter, for holder reports.
    cells: Mutex<Vec<Arc<HoldCell>>>,
}

/// What one call of "Python work" observed.
pub(crate) struct WorkOutcome {
    pub(crate) value: u64,
    pub(crate) exclusion_violated: bool,
    pub(crate) after_gone: bool,
}

impl Interp {
    pub(crate) fn new(
        id: InterpreterId,
        mode: LockMode,
        is_main: bool,
        lock_owner: Option<Arc<Interp>>,
    ) -> Self {
        Self {
            id,
            mode,
            is_main,
            word: AtomicU64::new(0),
            slow: Mutex::new(Slow { finalizer: 0 }),
            cv: Condvar::new(),
            lock_owner,
            work_counter: AtomicU64::new(0),
            in_work: AtomicU32::new(0),
            cells: Mutex::new(Vec::new()),
        }
    }

    /// Whether this interpreter's own word carries its lock bits.
    fn lock_in_own_word(&self) -> bool {
        self.mode == LockMode::Own
    }

    /// The interpreter whose word carries the lock, if there is a lock.
    fn lock_group(&self) -> Option<&Interp> {
        match self.mode {
            LockMode::Own => Some(self),
            LockMode::SharedWithMain => self.lock_owner.as_deref(),
            LockMode::None => None,
        }
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.word.load(Ordering::Acquire) & GONE != 0
    }

    pub(crate) fn state(&self) -> Result<InterpreterState> {
        let w = self.word.load(Ordering::Acquire);
        if w & GONE != 0 {
            Err(Error::NoSuchInterpreter)
        } else if w & FINALIZING != 0 {
            Ok(InterpreterState::Finalizing)
        } else {
            Ok(InterpreterState::Running)
        }
    }

    pub(crate) fn holds(&self) -> u32 {
        (self.word.load(Ordering::Acquire) & HOLDS_MASK) as u32
    }

    /// The gate: takes this thread's hold unless the interpreter is
    /// finalizing or gone — the check and the increment are one CAS. When
    /// the lock lives in this word and is free, it is taken in that same CAS
    /// and `true` is returned; otherwise the caller takes the lock with
    /// [`lock`](Self::lock) afterwards (the hold already keeps finalization
    /// waiting, so that may block but never fails). Splitting the two lets a
    /// caller switching interpreters release its previous lock between them,
    /// so it never holds one lock while waiting for another.
    pub(crate) fn try_open_hold(&self) -> Result<bool> {
        let with_lock = self.lock_in_own_word();
        let mut w = self.word.load(Ordering::Relaxed);
        loop {
            if w & GONE != 0 {
                return Err(Error::NoSuchInterpreter);
            }
            if w & FINALIZING != 0 {
                return Err(Error::Finalizing);
            }
            if w & HOLDS_MASK == HOLDS_MASK {
                return Err(Error::Busy);
            }
            let take = with_lock && w & LOCKED == 0;
            let new = (w + 1) | if take { LOCKED } else { 0 };
            match self
                .word
                .compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(take),
                Err(x) => w = x,
            }
        }
    }

    pub(crate) fn is_finalizing(&self) -> bool {
        self.word.load(Ordering::Acquire) & (FINALIZING | GONE) != 0
    }

    /// Releases a hold; with `unlock`, also the lock (detaching), in the same
    /// CAS when the lock lives in this word. A hold on a gone interpreter (the
    /// finalizer's own) is forgotten without touching the word.
    pub(crate) fn close_hold(&self, unlock: bool) {
        if self.is_gone() {
            return;
        }
        if unlock && !self.lock_in_own_word() {
            self.unlock();
        }
        let unlock_here = unlock && self.lock_in_own_word();
        let mut w = self.word.load(Ordering::Relaxed);
        loop {
            if w & GONE != 0 || w & HOLDS_MASK == 0 {
                return;
            }
            let mut new = w - 1;
            if unlock_here {
                new &= !(LOCKED | PARKED);
            }
            match self
                .word
                .compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(x) => w = x,
            }
        }
        if w & FINALIZING != 0 || (unlock_here && w & PARKED != 0) {
            self.wake();
        }
    }

    /// Takes the lock of this interpreter's lock group (attaching inside a
    /// hold). Never fails; may block.
    pub(crate) fn lock(&self) {
        if let Some(g) = self.lock_group() {
            g.raw_lock();
        }
    }

    /// Releases the lock of this interpreter's lock group (detaching).
    pub(crate) fn unlock(&self) {
        if let Some(g) = self.lock_group() {
            g.raw_unlock();
        }
    }

    fn raw_lock(&self) {
        let mut w = self.word.load(Ordering::Relaxed);
        while w & LOCKED == 0 {
            match self.word.compare_exchange_weak(
                w,
                w | LOCKED,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(x) => w = x,
            }
        }
        self.raw_lock_slow();
    }

    #[cold]
    fn raw_lock_slow(&self) {
        let mut g = self.slow.lock();
        loop {
            let w = self.word.load(Ordering::Relaxed);
            if w & LOCKED == 0 {
                if self
                    .word
                    .compare_exchange(w, w | LOCKED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            if w & PARKED == 0
                && self
                    .word
                    .compare_exchange(w, w | PARKED, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            self.cv.wait(&mut g);
        }
    }

    fn raw_unlock(&self) {
        let old = self.word.fetch_and(!(LOCKED | PARKED), Ordering::Release);
        debug_assert!(old & LOCKED != 0, "unlock of an unlocked interpreter");
        if old & PARKED != 0 {
            self.wake();
        }
    }

    #[cold]
    fn wake(&self) {
        let _g = self.slow.lock();
        self.cv.notify_all();
    }

    /// Starts (or resumes, after a timeout) finalization: from now on new
    /// holds are refused. `Busy` if another thread is finalizing it now.
    pub(crate) fn begin_finalize(&self, thread_number: u64) -> Result<()> {
        let mut g = self.slow.lock();
        if self.word.load(Ordering::Acquire) & GONE != 0 {
            return Err(Error::NoSuchInterpreter);
        }
        if g.finalizer != 0 && g.finalizer != thread_number {
            return Err(Error::Busy);
        }
        g.finalizer = thread_number;
        self.word.fetch_or(FINALIZING, Ordering::AcqRel);
        Ok(())
    }

    /// Gives up a finalization attempt without waiting (main's attempt when
    /// a subinterpreter's failed): the interpreter stays finalizing.
    pub(crate) fn end_finalize_attempt(&self) {
        self.slow.lock().finalizer = 0;
    }

    /// Waits (sleeping, never spinning) until at most `own` holds remain,
    /// then passes the point of no return (sets `GONE`) and returns `true`;
    /// or returns `false` at `deadline`, leaving the interpreter finalizing
    /// and ready for another attempt.
    pub(crate) fn wait_drained(&self, own: u32, deadline: Option<Instant>) -> bool {
        let mut g = self.slow.lock();
        loop {
            let w = self.word.load(Ordering::Acquire);
            debug_assert!(w & FINALIZING != 0);
            if ((w & HOLDS_MASK) as u32) <= own {
                if self
                    .word
                    .compare_exchange(w, w | GONE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    g.finalizer = 0;
                    return true;
                }
                continue;
            }
            match deadline {
                None => self.cv.wait(&mut g),
                Some(d) => {
                    if Instant::now() >= d {
                        g.finalizer = 0;
                        return false;
                    }
                    self.cv.wait_until(&mut g, d);
                }
            }
        }
    }

    /// "Python work": mutates interpreter-owned state with a racy
    /// load + store, so that two threads inside at once lose updates, and
    /// reports whether exclusion or liveness was violated.
    pub(crate) fn work(&self) -> WorkOutcome {
        let group = self.lock_group().unwrap_or(self);
        let inside = group.in_work.fetch_add(1, Ordering::AcqRel);
        let exclusion_violated = inside != 0 && self.mode != LockMode::None;
        let after_gone = self.is_gone();
        let v = self.work_counter.load(Ordering::Relaxed);
        self.work_counter.store(v + 1, Ordering::Relaxed);
        group.in_work.fetch_sub(1, Ordering::AcqRel);
        WorkOutcome {
            value: v + 1,
            exclusion_violated,
            after_gone,
        }
    }

    pub(crate) fn work_count(&self) -> u64 {
        self.work_counter.load(Ordering::Acquire)
    }

    /// Registers one thread's hold cell (once per thread and interpreter).
    pub(crate) fn add_cell(&self, cell: Arc<HoldCell>) {
        self.cells.lock().push(cell);
    }

    /// Forgets one thread's hold cell (thread exit or prune).
    pub(crate) fn remove_cell(&self, cell: &Arc<HoldCell>) {
        self.cells.lock().retain(|c| !Arc::ptr_eq(c, cell));
    }

    /// The threads holding this interpreter open now.
    pub(crate) fn holders(&self) -> Vec<Holder> {
        let now = crate::sync::coarse_now_ns();
        self.cells
            .lock()
            .iter()
            .filter_map(|c| {
                let spans = c.spans.load(Ordering::Acquire);
                (spans > 0).then(|| Holder {
                    thread_number: c.thread.number,
                    os_thread_id: c.thread.os_tid,
                    thread_name: c.thread.name.clone(),
                    kind: if c.kind.load(Ordering::Relaxed) == 1 {
                        SpanKind::Activate
                    } else {
                        SpanKind::Ensure
                    },
                    spans,
                    held_for: Duration::from_nanos(
                        now.saturating_sub(c.since_ns.load(Ordering::Relaxed)),
                    ),
                })
            })
            .collect()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn own() -> Interp {
        Interp::new(InterpreterId::from_raw(1), LockMode::Own, true, None)
    }

    #[test]
    fn hold_takes_lock_in_one_step_and_release_clears_it() {
        let i = own();
        assert!(i.try_open_hold().unwrap());
        assert_eq!(i.word.load(Ordering::Relaxed), LOCKED | 1);
        i.close_hold(true);
        assert_eq!(i.word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn finalizing_refuses_and_gone_says_no_such_interpreter() {
        let i = own();
        i.begin_finalize(7).unwrap();
        assert_eq!(i.try_open_hold(), Err(Error::Finalizing));
        assert_eq!(i.begin_finalize(8), Err(Error::Busy));
        assert!(i.wait_drained(0, None));
        assert_eq!(i.try_open_hold(), Err(Error::NoSuchInterpreter));
        assert_eq!(i.state(), Err(Error::NoSuchInterpreter));
        assert_eq!(i.begin_finalize(7), Err(Error::NoSuchInterpreter));
    }

    #[test]
    fn drain_waits_for_foreign_holds_but_not_own() {
        let i = own();
        assert!(i.try_open_hold().unwrap());
        i.begin_finalize(1).unwrap();
        let d = Instant::now() + Duration::from_millis(20);
        assert!(
            !i.wait_drained(0, Some(d)),
            "one foreign hold: must time out"
        );
        assert_eq!(i.state(), Ok(InterpreterState::Finalizing));
        i.begin_finalize(1).unwrap();
        assert!(i.wait_drained(1, None), "the only hold is the caller's own");
    }

    #[test]
    fn holds_counter_saturation_is_refused() {
        let i = own();
        i.word.store(HOLDS_MASK, Ordering::Relaxed);
        assert_eq!(i.try_open_hold(), Err(Error::Busy));
    }
}
