//! The one place that names concurrency primitives.
//!
//! Every atomic, lock, condition variable, shared pointer, deadline and the
//! modelled "Python data" the core uses comes from here, so that
//! `RUSTFLAGS="--cfg loom"` swaps them all for [loom]'s model-checked
//! versions (the pattern of tokio's `src/loom/`). Normal builds use
//! `parking_lot` and `std`.
//!
//! Not modelled under loom, because they carry no synchronisation the core
//! relies on: the allocator of per-thread numbers ([`next_thread_number`], a
//! unique-id counter), the OS thread id and the coarse clock (diagnostics).
//!
//! `--cfg tstate_weak_orderings` weakens every ordering of the gate and the
//! model's lock to `Relaxed` ([`ord`]): the loom models must then fail (the
//! data race on [`PyData`] is reported), which shows they check the
//! orderings (`docs/reliability.md`).
//!
//! [loom]: https://docs.rs/loom

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use std::time::Duration;

/// The address of `counter` as a plain 64-bit word, for a C reader that
/// loads it atomically (a guard-close count in an inline block:
/// [`crate::thread::InlineState`]); read it back with [`load_counter`].
pub(crate) fn counter_ptr(counter: &AtomicU64) -> *const u64 {
    // std's `AtomicU64` has the layout of a `u64` (documented); under loom
    // the pointer is only ever read back by `load_counter`
    (counter as *const AtomicU64).cast()
}

/// An acquire load of the counter at `p` (from [`counter_ptr`]).
///
/// # Safety
/// `p` comes from [`counter_ptr`] of a counter that is still alive.
#[inline(always)]
pub(crate) unsafe fn load_counter(p: *const u64) -> u64 {
    // SAFETY: `p` is a live `AtomicU64`'s address (the contract); only
    // atomic operations touch it.
    unsafe { (*p.cast::<AtomicU64>()).load(Ordering::Acquire) }
}

/// Orderings of the gate word and the model's lock, in one place so that
/// `--cfg tstate_weak_orderings` can weaken them all (to show that the loom
/// models notice).
pub(crate) mod ord {
    use super::Ordering;
    #[cfg(not(tstate_weak_orderings))]
    mod o {
        use super::Ordering;
        pub const ACQ_REL: Ordering = Ordering::AcqRel;
        pub const ACQUIRE: Ordering = Ordering::Acquire;
        pub const RELEASE: Ordering = Ordering::Release;
    }
    #[cfg(tstate_weak_orderings)]
    mod o {
        use super::Ordering;
        pub const ACQ_REL: Ordering = Ordering::Relaxed;
        pub const ACQUIRE: Ordering = Ordering::Relaxed;
        pub const RELEASE: Ordering = Ordering::Relaxed;
    }
    /// Read-modify-writes that both take and publish (a hold, the lock).
    pub const ACQ_REL: Ordering = o::ACQ_REL;
    /// Loads and RMWs that take (the lock, "is it gone?").
    pub const ACQUIRE: Ordering = o::ACQUIRE;
    /// Stores and RMWs that publish (unlock).
    pub const RELEASE: Ordering = o::RELEASE;
    /// Failure ordering of a compare-exchange / a plain re-read.
    pub const RELAXED: Ordering = Ordering::Relaxed;
}

/// A mutex with parking_lot's shape (no poisoning) under both backends.
pub(crate) struct Mutex<T> {
    #[cfg(not(loom))]
    inner: parking_lot::Mutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

/// Guard of [`Mutex`].
pub(crate) struct MutexGuard<'a, T> {
    #[cfg(not(loom))]
    inner: parking_lot::MutexGuard<'a, T>,
    #[cfg(loom)]
    inner: Option<loom::sync::MutexGuard<'a, T>>,
    #[cfg(loom)]
    mutex: &'a loom::sync::Mutex<T>,
}

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(not(loom))]
            inner: parking_lot::Mutex::new(value),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        {
            MutexGuard {
                inner: self.inner.lock(),
            }
        }
        #[cfg(loom)]
        {
            MutexGuard {
                inner: Some(self.inner.lock().unwrap_or_else(|p| p.into_inner())),
                mutex: &self.inner,
            }
        }
    }

    /// The protected data, for the at-fork prepare step (which holds the
    /// lock already).
    #[cfg(not(loom))]
    pub(crate) fn data_ptr(&self) -> *mut T {
        self.inner.data_ptr()
    }

    /// Leaves the mutex locked until [`fork_unlock`](Self::fork_unlock)
    /// (the at-fork prepare handler: no other thread may be inside while the
    /// process forks, so the child inherits consistent data).
    #[cfg(not(loom))]
    pub(crate) fn fork_lock(&self) {
        std::mem::forget(self.inner.lock());
    }

    /// Unlocks a mutex locked by [`fork_lock`](Self::fork_lock), in the
    /// parent or the child after `fork()`.
    ///
    /// # Safety
    /// The mutex must be locked by `fork_lock` on this thread (in the child:
    /// on the thread that forked, the only one there).
    #[cfg(not(loom))]
    pub(crate) unsafe fn fork_unlock(&self) {
        // SAFETY: locked by `fork_lock` and never unlocked since (contract).
        unsafe { self.inner.force_unlock() };
    }
}

impl<T> std::ops::Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        #[cfg(not(loom))]
        {
            &self.inner
        }
        #[cfg(loom)]
        {
            self.inner.as_ref().expect("guard present")
        }
    }
}

impl<T> std::ops::DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        #[cfg(not(loom))]
        {
            &mut self.inner
        }
        #[cfg(loom)]
        {
            self.inner.as_mut().expect("guard present")
        }
    }
}

/// When a bounded wait gives up.
///
/// Outside loom a point in time. Under loom time does not pass and loom
/// 0.7's `Condvar::wait_timeout` never times out, so a deadline is a flag
/// that a modelled timer thread sets ([`Deadline::manual`]): loom then
/// explores the bound passing at every point of the wait.
#[derive(Clone)]
pub struct Deadline {
    #[cfg(not(loom))]
    at: Option<std::time::Instant>,
    #[cfg(loom)]
    flag: Option<Arc<AtomicBool>>,
}

/// Sets a loom [`Deadline`] (the modelled timer).
#[cfg(loom)]
pub(crate) struct Timer(Arc<AtomicBool>);

#[cfg(loom)]
impl Timer {
    /// The bound passes now.
    pub(crate) fn fire(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Deadline {
    /// No bound.
    pub(crate) const fn never() -> Self {
        Self {
            #[cfg(not(loom))]
            at: None,
            #[cfg(loom)]
            flag: None,
        }
    }

    /// `timeout` from now (`None`: no bound). Under loom a bound never
    /// passes by itself: use [`Deadline::manual`].
    pub(crate) fn after(timeout: Option<Duration>) -> Self {
        #[cfg(not(loom))]
        {
            Self {
                at: timeout.map(|t| std::time::Instant::now() + t),
            }
        }
        #[cfg(loom)]
        {
            let _ = timeout;
            Self::never()
        }
    }

    /// A deadline and the timer that makes it pass (loom models).
    #[cfg(loom)]
    pub(crate) fn manual() -> (Self, Timer) {
        let f = Arc::new(AtomicBool::new(false));
        (
            Self {
                flag: Some(f.clone()),
            },
            Timer(f),
        )
    }

    /// Whether there is a bound at all.
    #[cfg(loom)]
    pub(crate) fn is_bounded(&self) -> bool {
        #[cfg(not(loom))]
        {
            self.at.is_some()
        }
        #[cfg(loom)]
        {
            self.flag.is_some()
        }
    }

    /// Whether the bound has passed.
    pub(crate) fn passed(&self) -> bool {
        #[cfg(not(loom))]
        {
            self.at.is_some_and(|d| std::time::Instant::now() >= d)
        }
        #[cfg(loom)]
        {
            self.flag.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
        }
    }
}

/// A condition variable paired with [`Mutex`].
pub(crate) struct Condvar {
    #[cfg(not(loom))]
    inner: parking_lot::Condvar,
    #[cfg(loom)]
    inner: loom::sync::Condvar,
}

impl Condvar {
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(not(loom))]
            inner: parking_lot::Condvar::new(),
            #[cfg(loom)]
            inner: loom::sync::Condvar::new(),
        }
    }

    /// Sleeps until notified or `deadline` passes (spurious wake-ups
    /// possible: callers re-check their condition, and [`Deadline::passed`]).
    ///
    /// Under loom a bounded wait does not sleep on the condition variable:
    /// it releases the mutex and yields, so that loom schedules the other
    /// threads (and the timer) before the caller re-checks.
    pub(crate) fn wait_until<T>(&self, guard: &mut MutexGuard<'_, T>, deadline: &Deadline) {
        #[cfg(not(loom))]
        {
            match deadline.at {
                None => self.inner.wait(&mut guard.inner),
                Some(d) => {
                    self.inner.wait_until(&mut guard.inner, d);
                }
            }
        }
        #[cfg(loom)]
        {
            let g = guard.inner.take().expect("guard present");
            if deadline.is_bounded() {
                drop(g);
                loom::thread::yield_now();
                guard.inner = Some(guard.mutex.lock().unwrap_or_else(|p| p.into_inner()));
            } else {
                guard.inner = Some(self.inner.wait(g).unwrap_or_else(|p| p.into_inner()));
            }
        }
    }

    pub(crate) fn notify_all(&self) {
        self.inner.notify_all();
    }
}

/// The modelled "Python data" of an interpreter: what only an attached
/// thread may touch. Outside loom a racy load + store on an atomic (two
/// threads inside at once lose an update, which the tests see, without
/// undefined behaviour); under loom a `loom::cell::UnsafeCell`, so that loom
/// reports any access not ordered by the lock (the models then check the
/// lock's and the gate's orderings, not only their logic).
pub(crate) struct PyData {
    #[cfg(not(loom))]
    v: AtomicU64,
    #[cfg(loom)]
    v: loom::cell::UnsafeCell<u64>,
}

// SAFETY: under loom, every access goes through `with`/`with_mut`, which
// loom checks for concurrent access (it reports a race instead of letting
// one happen); outside loom the data is an atomic.
#[cfg(loom)]
unsafe impl Sync for PyData {}

impl PyData {
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(not(loom))]
            v: AtomicU64::new(0),
            #[cfg(loom)]
            v: loom::cell::UnsafeCell::new(0),
        }
    }

    /// Increments and returns the new value (only legal while attached).
    pub(crate) fn increment(&self) -> u64 {
        #[cfg(not(loom))]
        {
            let v = self.v.load(Ordering::Relaxed) + 1;
            self.v.store(v, Ordering::Relaxed);
            v
        }
        #[cfg(loom)]
        {
            // SAFETY: loom checks that no other access to this cell is
            // concurrent (it panics on a data race instead of UB).
            self.v.with_mut(|p| unsafe {
                *p += 1;
                *p
            })
        }
    }

    /// The finalizer's write after the last span (the value is kept).
    pub(crate) fn teardown(&self) {
        #[cfg(not(loom))]
        {
            let v = self.v.load(Ordering::Relaxed);
            self.v.store(v, Ordering::Release);
        }
        #[cfg(loom)]
        {
            // SAFETY: as `increment`.
            self.v.with_mut(|p| unsafe { *p = *p })
        }
    }

    /// Reads the value (a racy snapshot outside loom).
    pub(crate) fn get(&self) -> u64 {
        #[cfg(not(loom))]
        {
            self.v.load(Ordering::Acquire)
        }
        #[cfg(loom)]
        {
            // SAFETY: as `increment`.
            self.v.with(|p| unsafe { *p })
        }
    }
}

/// Allocates a process-unique, never-zero number for a thread.
pub(crate) fn next_thread_number() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The operating system's id of the calling thread (Linux `gettid`): never
/// 0, unique among live threads, available even while the thread's
/// thread-locals are being destroyed. 0 under loom (whose threads share OS
/// threads).
pub(crate) fn os_thread_id() -> u64 {
    #[cfg(not(loom))]
    {
        // SAFETY: gettid takes no arguments, cannot fail and touches no memory.
        let tid = unsafe { libc::gettid() };
        u64::try_from(tid).unwrap_or(0)
    }
    #[cfg(loom)]
    {
        0
    }
}

/// A monotonic timestamp in nanoseconds, cheap and coarse (a few ms of
/// resolution on Linux: `CLOCK_MONOTONIC_COARSE` reads one vDSO word). Used
/// only to say how long a holder has held an interpreter open.
pub(crate) fn coarse_now_ns() -> u64 {
    #[cfg(not(loom))]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the
        // call; CLOCK_MONOTONIC_COARSE is supported by every Linux since 2.6.32.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        if rc != 0 {
            return 0;
        }
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64)
    }
    #[cfg(loom)]
    {
        0
    }
}

/// The calling thread's name, if it has one (`pthread_getname_np`: usable
/// at any point of the thread's life, unlike `std::thread::current()`
/// while its thread-locals are destroyed).
pub(crate) fn thread_name() -> Option<String> {
    #[cfg(not(loom))]
    {
        let mut buf = [0 as libc::c_char; 64];
        // SAFETY: `buf` is valid for `buf.len()` bytes; glibc NUL-terminates.
        let rc =
            unsafe { libc::pthread_getname_np(libc::pthread_self(), buf.as_mut_ptr(), buf.len()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: NUL-terminated by pthread_getname_np on success.
        let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
        let s = s.to_string_lossy();
        (!s.is_empty()).then(|| s.into_owned())
    }
    #[cfg(loom)]
    {
        None
    }
}
