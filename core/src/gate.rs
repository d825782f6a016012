//! The gate: one atomic state word per interpreter that makes "refuse when
//! finalizing" and "hold the interpreter open" a single atomic step.
//!
//! # The state word
//!
//! ```text
//!  63        36   35     34          33       32       31 ............ 0
//! [  unused  ] [GONE] [FINALIZING] [PARKED] [LOCKED] [ HOLDS: u32      ]
//! ```
//!
//! * `HOLDS` — how many holds keep the interpreter open: each thread with
//!   at least one span on it counts once (its further spans are counted in
//!   its thread-local state), and so does each open guard of the guard
//!   design and each short internal hold (creating or deleting a thread
//!   state).
//! * `LOCKED` / `PARKED` — the model backend's interpreter lock, when this
//!   word carries it (an own-lock interpreter of the model): held / someone
//!   sleeps waiting for it. Kept in this word so that a thread's first span
//!   takes its hold and the lock in one CAS. The CPython backend never sets
//!   them (its lock is the GIL).
//! * `FINALIZING` — new holds are refused; a finalizer may be waiting for
//!   `HOLDS` to drain, and every hold release must wake it.
//! * `GONE` — finalization passed its point of no return; the id never
//!   resolves again.
//!
//! | state | GONE | FIN | LOCKED | PARKED | HOLDS | new hold | lock (re-attach inside a hold) |
//! |---|:-:|:-:|:-:|:-:|:-:|---|---|
//! | running, idle | 0 | 0 | 0 | 0 | 0 | granted (the lock too, in the same CAS, if this word carries it) | — |
//! | running, attached | 0 | 0 | 1 | 0 | n≥1 | granted, then waits for the lock | waits |
//! | running, contended | 0 | 0 | 1 | 1 | n≥1 | granted, then parks | parks |
//! | running, holders detached | 0 | 0 | 0 | 0 | n≥1 | granted with the lock | takes it |
//! | finalizing, draining | 0 | 1 | any | any | n>own | **refused: Finalizing** | always succeeds (may wait) |
//! | finalizing, drained | 0 | 1 | 0 | 0 | ≤own | refused: Finalizing | the finalizer's own only |
//! | gone | 1 | 1 | 0 | 0 | own | **refused: NoSuchInterpreter** | — (thread states deleted) |
//!
//! Transitions: a hold is taken by one CAS that checks `GONE`/`FINALIZING`
//! and increments `HOLDS` (and sets `LOCKED` if asked and clear); released
//! by one CAS that decrements `HOLDS` (and clears `LOCKED`/`PARKED` when
//! asked). `FINALIZING` is set by `fetch_or` under the slow mutex and never
//! cleared; `GONE` is set by a CAS under the slow mutex that also checks
//! `HOLDS`. Because the check and the increment are one CAS on the same
//! word as the finalizer's, a hold either happens-before the finalizer's
//! read (and is waited for) or sees `FINALIZING` (and is refused): there is
//! no window.
//!
//! Waking: lock waiters and the finalizer sleep on one condition variable
//! under the slow mutex and re-check the word under it; wakers change the
//! word first and then take the slow mutex to notify, so a sleeper either
//! sees the change before sleeping or is notified after.

use crate::error::{Error, Result};
use crate::sync::{AtomicU64, Condvar, Deadline, Mutex, ord};
use crate::types::InterpreterState;

const HOLDS_MASK: u64 = 0xffff_ffff;
const LOCKED: u64 = 1 << 32;
const PARKED: u64 = 1 << 33;
const FINALIZING: u64 = 1 << 34;
const GONE: u64 = 1 << 35;

/// The finalizer identity of a finalization run outside this runtime
/// (CPython's, or another runtime's): never a thread's identity.
pub(crate) const EXTERNAL_FINALIZER: u64 = u64::MAX;

/// State guarded by the slow mutex.
struct Slow {
    /// Identity of the finalizer currently running, 0 if none.
    finalizer: u64,
}

/// One interpreter's gate (see the module docs).
pub(crate) struct Gate {
    word: AtomicU64,
    slow: Mutex<Slow>,
    cv: Condvar,
}

impl Gate {
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
            slow: Mutex::new(Slow { finalizer: 0 }),
            cv: Condvar::new(),
        }
    }

    fn load(&self) -> u64 {
        self.word.load(ord::ACQUIRE)
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.load() & GONE != 0
    }

    /// Finalizing or gone.
    pub(crate) fn is_finalizing(&self) -> bool {
        self.load() & (FINALIZING | GONE) != 0
    }

    pub(crate) fn state(&self) -> Result<InterpreterState> {
        let w = self.load();
        if w & GONE != 0 {
            Err(Error::NoSuchInterpreter)
        } else if w & FINALIZING != 0 {
            Ok(InterpreterState::Finalizing)
        } else {
            Ok(InterpreterState::Running)
        }
    }

    pub(crate) fn holds(&self) -> u32 {
        (self.load() & HOLDS_MASK) as u32
    }

    /// Takes a hold unless the interpreter is finalizing or gone — the check
    /// and the increment are one CAS. With `lock`, also takes the lock bits
    /// in the same CAS when they are free, and says whether it did (else the
    /// caller takes the lock afterwards: the hold already keeps finalization
    /// waiting, so that may block but never fails).
    pub(crate) fn try_hold(&self, lock: bool) -> Result<bool> {
        self.hold::<true>(lock)
    }

    /// Takes a hold even while finalizing (not once gone): for a caller that
    /// holds a guard on the interpreter already, which keeps it from
    /// passing its point of no return. Lock bits as [`try_hold`](Self::try_hold).
    pub(crate) fn force_hold(&self, lock: bool) -> Result<bool> {
        self.hold::<false>(lock)
    }

    /// The one CAS loop of both holds; `REFUSE_FINALIZING` is the only
    /// difference (a constant: each caller compiles to its own loop).
    #[inline(always)]
    fn hold<const REFUSE_FINALIZING: bool>(&self, lock: bool) -> Result<bool> {
        let mut w = self.word.load(ord::RELAXED);
        loop {
            if w & GONE != 0 {
                return Err(Error::NoSuchInterpreter);
            }
            if REFUSE_FINALIZING && w & FINALIZING != 0 {
                return Err(Error::Finalizing);
            }
            if w & HOLDS_MASK == HOLDS_MASK {
                return Err(Error::Busy);
            }
            let take = lock && w & LOCKED == 0;
            let new = (w + 1) | if take { LOCKED } else { 0 };
            match self
                .word
                .compare_exchange_weak(w, new, ord::ACQ_REL, ord::RELAXED)
            {
                Ok(_) => return Ok(take),
                Err(x) => w = x,
            }
        }
    }

    /// Releases a hold; with `unlock`, also the lock bits, in the same CAS.
    /// A hold on a gone interpreter (the finalizer's own) is forgotten.
    pub(crate) fn release_hold(&self, unlock: bool) {
        let mut w = self.word.load(ord::RELAXED);
        loop {
            if w & GONE != 0 || w & HOLDS_MASK == 0 {
                return;
            }
            let mut new = w - 1;
            if unlock {
                new &= !(LOCKED | PARKED);
            }
            match self
                .word
                .compare_exchange_weak(w, new, ord::ACQ_REL, ord::RELAXED)
            {
                Ok(_) => break,
                Err(x) => w = x,
            }
        }
        if w & FINALIZING != 0 || (unlock && w & PARKED != 0) {
            self.wake();
        }
    }

    /// Takes the lock bits (attaching inside a hold). Never fails; may block.
    pub(crate) fn lock(&self) {
        if !self.lock_fast() {
            self.lock_slow(&Deadline::never());
        }
    }

    /// Takes the lock bits unless `deadline` passes first; `false` then.
    pub(crate) fn lock_until(&self, deadline: &Deadline) -> bool {
        self.lock_fast() || self.lock_slow(deadline)
    }

    #[inline]
    fn lock_fast(&self) -> bool {
        let mut w = self.word.load(ord::RELAXED);
        while w & LOCKED == 0 {
            match self
                .word
                .compare_exchange_weak(w, w | LOCKED, ord::ACQUIRE, ord::RELAXED)
            {
                Ok(_) => return true,
                Err(x) => w = x,
            }
        }
        false
    }

    #[cold]
    fn lock_slow(&self, deadline: &Deadline) -> bool {
        let mut g = self.slow.lock();
        loop {
            let w = self.word.load(ord::RELAXED);
            if w & LOCKED == 0 {
                if self
                    .word
                    .compare_exchange(w, w | LOCKED, ord::ACQUIRE, ord::RELAXED)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if deadline.passed() {
                return false;
            }
            if w & PARKED == 0
                && self
                    .word
                    .compare_exchange(w, w | PARKED, ord::RELAXED, ord::RELAXED)
                    .is_err()
            {
                continue;
            }
            self.cv.wait_until(&mut g, deadline);
        }
    }

    /// Releases the lock bits (detaching).
    pub(crate) fn unlock(&self) {
        let old = self.word.fetch_and(!(LOCKED | PARKED), ord::RELEASE);
        debug_assert!(old & LOCKED != 0, "unlock of an unlocked interpreter");
        if old & PARKED != 0 {
            self.wake();
        }
    }

    #[cold]
    pub(crate) fn wake(&self) {
        let _g = self.slow.lock();
        self.cv.notify_all();
    }

    /// Starts (or resumes, after a timeout) finalization by `who` (a thread
    /// identity, never 0): from now on new holds are refused. `Busy` if
    /// another finalizer is running now, `NoSuchInterpreter` if gone.
    pub(crate) fn begin_finalize(&self, who: u64) -> Result<()> {
        debug_assert!(who != 0);
        let mut g = self.slow.lock();
        if self.load() & GONE != 0 {
            return Err(Error::NoSuchInterpreter);
        }
        if g.finalizer != 0 && g.finalizer != who {
            return Err(Error::Busy);
        }
        g.finalizer = who;
        self.word.fetch_or(FINALIZING, ord::ACQ_REL);
        Ok(())
    }

    /// Closes the gate without claiming finalization (CPython's own
    /// finalization closing every gate at once: main's atexit callback).
    pub(crate) fn close(&self) {
        let _g = self.slow.lock();
        self.word.fetch_or(FINALIZING, ord::ACQ_REL);
    }

    /// Closes the gate for a finalization that someone else runs (CPython,
    /// or another runtime's finalize: this interpreter's atexit callback)
    /// and takes the finalizer's claim for good, unless a finalizer of this
    /// runtime holds it: a later [`begin_finalize`](Self::begin_finalize)
    /// answers `Busy` instead of ending, through freed memory, an
    /// interpreter CPython frees when the callback returns.
    #[cfg(not(loom))]
    pub(crate) fn close_external(&self) {
        let mut g = self.slow.lock();
        self.word.fetch_or(FINALIZING, ord::ACQ_REL);
        if g.finalizer == 0 {
            g.finalizer = EXTERNAL_FINALIZER;
        }
    }

    /// Gives up a finalization attempt without waiting: the interpreter
    /// stays finalizing (refusing).
    pub(crate) fn end_finalize_attempt(&self) {
        self.slow.lock().finalizer = 0;
    }

    /// Waits (sleeping, never spinning) until at most `own` holds remain and
    /// returns `true`; or returns `false` once `deadline` passes, leaving the
    /// interpreter finalizing and ready for another attempt (the finalizer
    /// claim is given up). Holds only decrease once `FINALIZING` is set, so
    /// "drained" stays true until [`finish_finalize`](Self::finish_finalize).
    pub(crate) fn wait_drained(&self, own: u32, deadline: &Deadline) -> bool {
        let mut g = self.slow.lock();
        loop {
            let w = self.word.load(ord::ACQUIRE);
            debug_assert!(w & FINALIZING != 0);
            if ((w & HOLDS_MASK) as u32) <= own {
                return true;
            }
            if deadline.passed() {
                if g.finalizer != EXTERNAL_FINALIZER {
                    g.finalizer = 0;
                }
                return false;
            }
            self.cv.wait_until(&mut g, deadline);
        }
    }

    /// Passes the point of no return after a drained wait: sets `GONE` (the
    /// id never resolves again) and ends the finalizer's claim.
    pub(crate) fn finish_finalize(&self) {
        let mut g = self.slow.lock();
        self.word.fetch_or(GONE, ord::ACQ_REL);
        g.finalizer = 0;
    }

    /// The identity of the finalizer running now (0 if none).
    pub(crate) fn finalizer(&self) -> u64 {
        self.slow.lock().finalizer
    }

    /// After `fork()`, in the child: only the forking thread survives, so
    /// the word keeps its flags and exactly `holds` holds (the forking
    /// thread's own) and the lock only if it was attached here (`locked`).
    /// No finalizer is running (the forking thread was calling `fork`).
    #[cfg(not(loom))]
    pub(crate) fn reset_after_fork(&self, holds: u32, locked: bool) {
        let w = self.word.load(ord::RELAXED);
        let mut new = (w & (FINALIZING | GONE)) | u64::from(holds);
        if locked {
            new |= LOCKED;
        }
        self.word.store(new, ord::RELEASE);
        self.slow.lock().finalizer = 0;
    }

    /// The at-fork prepare step: no other thread may be inside the slow
    /// mutex while the process forks.
    #[cfg(not(loom))]
    pub(crate) fn fork_lock(&self) {
        self.slow.fork_lock();
    }

    /// Undoes [`fork_lock`](Self::fork_lock).
    ///
    /// # Safety
    /// Only after `fork_lock` on this thread.
    #[cfg(not(loom))]
    pub(crate) unsafe fn fork_unlock(&self) {
        // SAFETY: forwarded contract.
        unsafe { self.slow.fork_unlock() };
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn raw(&self) -> u64 {
        self.word.load(ord::RELAXED)
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn set_raw(&self, v: u64) {
        self.word.store(v, ord::RELAXED);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hold_takes_lock_in_one_step_and_release_clears_it() {
        let g = Gate::new();
        assert!(g.try_hold(true).unwrap());
        assert_eq!(g.raw(), LOCKED | 1);
        g.release_hold(true);
        assert_eq!(g.raw(), 0);
        assert!(!g.try_hold(false).unwrap());
        assert_eq!(g.raw(), 1);
    }

    #[test]
    fn finalizing_refuses_and_gone_says_no_such_interpreter() {
        let g = Gate::new();
        g.begin_finalize(7).unwrap();
        assert_eq!(g.try_hold(true), Err(Error::Finalizing));
        assert_eq!(g.begin_finalize(8), Err(Error::Busy));
        assert!(g.wait_drained(0, &Deadline::never()));
        assert_eq!(
            g.try_hold(true),
            Err(Error::Finalizing),
            "drained, not yet gone"
        );
        g.finish_finalize();
        assert_eq!(g.try_hold(true), Err(Error::NoSuchInterpreter));
        assert_eq!(g.state(), Err(Error::NoSuchInterpreter));
        assert_eq!(g.begin_finalize(7), Err(Error::NoSuchInterpreter));
    }

    #[test]
    fn drain_waits_for_foreign_holds_but_not_own() {
        let g = Gate::new();
        assert!(g.try_hold(true).unwrap());
        g.begin_finalize(1).unwrap();
        let d = Deadline::after(Some(Duration::from_millis(20)));
        assert!(!g.wait_drained(0, &d), "one foreign hold: must time out");
        assert_eq!(g.state(), Ok(InterpreterState::Finalizing));
        g.begin_finalize(1).unwrap();
        assert!(
            g.wait_drained(1, &Deadline::never()),
            "only the caller's own"
        );
    }

    #[test]
    fn holds_counter_saturation_is_refused() {
        let g = Gate::new();
        g.set_raw(HOLDS_MASK);
        assert_eq!(g.try_hold(false), Err(Error::Busy));
    }

    #[test]
    fn lock_until_gives_up_at_the_deadline() {
        let g = Gate::new();
        g.lock();
        let t0 = std::time::Instant::now();
        assert!(!g.lock_until(&Deadline::after(Some(Duration::from_millis(30)))));
        assert!(t0.elapsed() >= Duration::from_millis(30));
        g.unlock();
        assert!(g.lock_until(&Deadline::after(Some(Duration::from_millis(30)))));
    }
}
