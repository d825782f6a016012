//! `fork()`: what the child inherits.
//!
//! Only the thread that called `fork()` exists in the child. Every other
//! thread's spans, holds, lock ownership and thread states would otherwise
//! survive there with nobody to release them: a child's ensure would wait
//! forever for a lock held by a thread that does not exist, and its
//! finalize would time out naming it (CPython has `PyOS_AfterFork_Child`
//! for its own state; this is ours).
//!
//! One `pthread_atfork` registration covers every runtime (model or
//! CPython):
//!
//! * **prepare** (parent, before the fork): takes every runtime's locks, so
//!   no other thread is half-way through changing a registry when the
//!   address space is copied;
//! * **parent** (after): releases them;
//! * **child** (after): releases them, then for each runtime keeps only the
//!   forking thread's state: each gate keeps its flags and exactly the
//!   forking thread's hold (if it had one), the model's lock only if the
//!   forking thread was attached under it, no finalizer in progress; every
//!   other thread's hold report and thread-state record is dropped.
//!
//! The child therefore inherits: every interpreter and its state
//! (running / finalizing), the forking thread's spans, saves and thread
//! states exactly as they were, and nothing of any other thread.

use crate::backend::Backend;
use crate::registry::Registry;
use crate::sync::Arc;
use std::sync::{Once, Weak};

/// A runtime's part in the at-fork protocol.
pub(crate) trait ForkAware: Send + Sync {
    fn prepare(&self);
    /// # Safety
    /// Only after `prepare` on this thread (the forking one).
    unsafe fn parent(&self);
    /// # Safety
    /// Only in the child, after `prepare` in the parent on the forking thread.
    unsafe fn child(&self);
}

static RUNTIMES: parking_lot::Mutex<Vec<Weak<dyn ForkAware>>> = parking_lot::Mutex::new(Vec::new());

/// Adds a runtime to the at-fork protocol (installing the handlers once).
pub(crate) fn register<B: Backend>(reg: &Arc<Registry<B>>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: the three handlers are `extern "C" fn()` that live for the
        // whole program.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    });
    let weak: Weak<dyn ForkAware> = Arc::downgrade(reg) as Weak<dyn ForkAware>;
    let mut list = RUNTIMES.lock();
    list.retain(|w| w.strong_count() > 0);
    list.push(weak);
}

fn live() -> Vec<Arc<dyn ForkAware>> {
    let p: *mut Vec<Weak<dyn ForkAware>> = RUNTIMES.data_ptr();
    // SAFETY: `prepare` holds RUNTIMES' lock on this (the forking) thread
    // until `parent`/`child` release it, so nothing else touches the list.
    unsafe { &*p }.iter().filter_map(Weak::upgrade).collect()
}

extern "C" fn prepare() {
    std::mem::forget(RUNTIMES.lock());
    crate::thread::fork_lock_tags();
    for r in live() {
        r.prepare();
    }
}

extern "C" fn parent() {
    for r in live() {
        // SAFETY: `prepare` ran on this thread just before the fork.
        unsafe { r.parent() };
    }
    // SAFETY: locked by `prepare` on this thread.
    unsafe {
        crate::thread::fork_unlock_tags(false);
        RUNTIMES.force_unlock();
    }
}

extern "C" fn child() {
    for r in live() {
        // SAFETY: the child of a fork whose `prepare` ran on this thread.
        unsafe { r.child() };
    }
    // SAFETY: locked by `prepare` on the thread that forked, which is this
    // one in the child.
    unsafe {
        crate::thread::fork_unlock_tags(true);
        RUNTIMES.force_unlock();
    }
}

impl<B: Backend> ForkAware for Registry<B> {
    fn prepare(&self) {
        self.fork_lock();
    }

    unsafe fn parent(&self) {
        // SAFETY: forwarded contract.
        unsafe { self.fork_unlock() };
    }

    unsafe fn child(&self) {
        // SAFETY: forwarded contract.
        unsafe { self.fork_unlock() };
        crate::thread::fork_child_new_thread_id::<B>();
        // only this thread exists now: its view of each interpreter is
        // the whole truth
        let view = crate::thread::fork_child_view(self);
        let me = view.thread_number;
        for i in self.interpreters() {
            let holds = view.holds.iter().any(|h| std::ptr::eq(*h, Arc::as_ptr(&i)));
            let locked = view
                .locked
                .is_some_and(|l| std::ptr::eq(l, Arc::as_ptr(&i)));
            i.gate.reset_after_fork(u32::from(holds), locked);
            i.keep_cells_of(me);
        }
        self.forget_tstates_not_of(me);
    }
}
