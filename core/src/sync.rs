//! The one place that names concurrency primitives.
//!
//! Every atomic, lock, condition variable, shared pointer and thread-local
//! the core uses comes from here, so that `RUSTFLAGS="--cfg loom"` swaps them
//! all for [loom]'s model-checked versions (the pattern of tokio's
//! `src/loom/`). Normal builds use `parking_lot` and `std`.
//!
//! Two things are deliberately *not* modelled under loom, because they carry
//! no synchronisation the core relies on: the allocator of per-thread
//! numbers ([`next_thread_number`], a unique-id counter) and the coarse clock
//! ([`coarse_now_ns`], used only for "held for" diagnostics).
//!
//! [loom]: https://docs.rs/loom

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

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
            }
        }
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

    /// Blocks until notified (spurious wake-ups possible: callers re-check).
    pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        #[cfg(not(loom))]
        {
            self.inner.wait(&mut guard.inner);
        }
        #[cfg(loom)]
        {
            let g = guard.inner.take().expect("guard present");
            guard.inner = Some(self.inner.wait(g).unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Blocks until notified or `deadline`; returns `true` when it timed out.
    pub(crate) fn wait_until<T>(&self, guard: &mut MutexGuard<'_, T>, deadline: Instant) -> bool {
        #[cfg(not(loom))]
        {
            self.inner
                .wait_until(&mut guard.inner, deadline)
                .timed_out()
        }
        #[cfg(loom)]
        {
            // loom does not model time: a timed wait is a wait that may also
            // return "timed out" (loom explores both).
            let g = guard.inner.take().expect("guard present");
            let left = deadline.saturating_duration_since(Instant::now());
            let (g, r) = self
                .inner
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner());
            guard.inner = Some(g);
            r.timed_out()
        }
    }

    pub(crate) fn notify_all(&self) {
        self.inner.notify_all();
    }
}

pub(crate) use std::time::Instant;

/// Declares a thread-local with the backend's macro (const-initialized
/// outside loom: no lazy-initialization check on every access).
macro_rules! thread_local_ctx {
    ($(#[$m:meta])* static $name:ident: $t:ty = $init:expr;) => {
        #[cfg(not(loom))]
        std::thread_local! { $(#[$m])* static $name: $t = const { $init }; }
        #[cfg(loom)]
        loom::thread_local! { $(#[$m])* static $name: $t = $init; }
    };
}
pub(crate) use thread_local_ctx;

/// Allocates a process-unique, never-zero number for a thread.
///
/// Not modelled under loom: it is an id allocator, not synchronisation.
pub(crate) fn next_thread_number() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The operating system's id of the calling thread (Linux `gettid`), or 0
/// where there is none.
pub(crate) fn os_thread_id() -> u64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid takes no arguments, cannot fail and touches no memory.
        let tid = unsafe { libc::gettid() };
        u64::try_from(tid).unwrap_or(0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// A monotonic timestamp in nanoseconds, cheap and coarse (a few ms of
/// resolution on Linux: `CLOCK_MONOTONIC_COARSE` reads one vDSO word).
///
/// Used only to say how long a holder has held an interpreter open; it is on
/// the path of a thread's first span on an interpreter, where a precise clock
/// (`Instant::now`, ~20 ns) would cost more than the span itself.
pub(crate) fn coarse_now_ns() -> u64 {
    #[cfg(all(target_os = "linux", not(loom)))]
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
    #[cfg(not(all(target_os = "linux", not(loom))))]
    {
        0
    }
}
