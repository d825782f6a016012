//! RAII guards over the core's span operations.

use crate::backend::Backend;
use crate::runtime::Runtime;
use crate::types::{ThreadStateId, Ticket};
use std::marker::PhantomData;

/// An open ensure span; dropping it releases the span (restoring exactly
/// what was attached before). Not `Send`/`Sync`: a span belongs to the
/// thread that opened it.
#[must_use = "dropping the guard releases the span at once"]
pub struct EnsureGuard<'rt, B: Backend = crate::Model> {
    rt: &'rt Runtime<B>,
    ticket: Ticket,
    _not_send: PhantomData<*const ()>,
}

impl<'rt, B: Backend> EnsureGuard<'rt, B> {
    pub(crate) fn new(rt: &'rt Runtime<B>, ticket: Ticket) -> Self {
        Self {
            rt,
            ticket,
            _not_send: PhantomData,
        }
    }

    /// The ticket of this span.
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }

    /// Detaches for the returned guard's lifetime (`Py_BEGIN_ALLOW_THREADS`),
    /// with the span still open. The [`SaveGuard`] borrows this guard, so the
    /// span cannot be released while its save is open:
    ///
    /// ```
    /// use tstate_core::Runtime;
    /// let rt = Runtime::new();
    /// let main = rt.main_interpreter().unwrap();
    /// let eg = rt.ensure_guard(main).unwrap();
    /// {
    ///     let sg = eg.allow_threads().unwrap();
    ///     assert!(!rt.is_attached(main));
    ///     drop(sg); // re-attaches
    /// }
    /// assert!(rt.is_attached(main));
    /// drop(eg);
    /// assert!(!rt.is_attached(main));
    /// ```
    ///
    /// Releasing the span first does not compile (the regression test is
    /// `core/tests/ui/save_outlives_ensure_guard.rs`):
    ///
    /// ```compile_fail,E0505
    /// # use tstate_core::Runtime;
    /// # let rt = Runtime::new();
    /// # let main = rt.main_interpreter().unwrap();
    /// let eg = rt.ensure_guard(main).unwrap();
    /// let sg = eg.allow_threads().unwrap();
    /// drop(eg); // error[E0505]: cannot move out of `eg` because it is borrowed
    /// drop(sg);
    /// ```
    pub fn allow_threads(&self) -> crate::Result<SaveGuard<'_, B>> {
        let ts = self.rt.save()?;
        Ok(SaveGuard {
            rt: self.rt,
            ts,
            _not_send: PhantomData,
        })
    }
}

impl<B: Backend> Drop for EnsureGuard<'_, B> {
    fn drop(&mut self) {
        let _ = self.rt.release_ticket(self.ticket);
    }
}

/// A detached section (`Py_BEGIN_ALLOW_THREADS` … `Py_END_ALLOW_THREADS`);
/// dropping it re-attaches the saved thread state.
#[must_use = "dropping the guard re-attaches at once"]
pub struct SaveGuard<'rt, B: Backend = crate::Model> {
    rt: &'rt Runtime<B>,
    ts: ThreadStateId,
    _not_send: PhantomData<*const ()>,
}

impl<B: Backend> SaveGuard<'_, B> {
    /// The saved thread state.
    pub fn thread_state(&self) -> ThreadStateId {
        self.ts
    }
}

impl<B: Backend> Drop for SaveGuard<'_, B> {
    fn drop(&mut self) {
        let _ = self.rt.restore(self.ts);
    }
}
