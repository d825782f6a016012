//! RAII guards over the core's span operations.

use crate::runtime::Runtime;
use crate::types::{ThreadStateId, Ticket};
use std::marker::PhantomData;

/// An open ensure span; dropping it releases the span (restoring exactly
/// what was attached before). Not `Send`/`Sync`: a span belongs to the
/// thread that opened it.
#[must_use = "dropping the guard releases the span at once"]
pub struct EnsureGuard<'rt> {
    rt: &'rt Runtime,
    ticket: Ticket,
    _not_send: PhantomData<*const ()>,
}

impl<'rt> EnsureGuard<'rt> {
    pub(crate) fn new(rt: &'rt Runtime, ticket: Ticket) -> Self {
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

    /// Detaches for the guard's lifetime (`Py_BEGIN_ALLOW_THREADS`), with
    /// the span still open.
    pub fn allow_threads(&self) -> crate::Result<SaveGuard<'rt>> {
        let ts = self.rt.save()?;
        Ok(SaveGuard {
            rt: self.rt,
            ts,
            _not_send: PhantomData,
        })
    }
}

impl Drop for EnsureGuard<'_> {
    fn drop(&mut self) {
        let r = self.rt.release_ticket(self.ticket);
        debug_assert!(r.is_ok(), "EnsureGuard released out of order: {r:?}");
    }
}

/// A detached section (`Py_BEGIN_ALLOW_THREADS` … `Py_END_ALLOW_THREADS`);
/// dropping it re-attaches the saved thread state.
#[must_use = "dropping the guard re-attaches at once"]
pub struct SaveGuard<'rt> {
    rt: &'rt Runtime,
    ts: ThreadStateId,
    _not_send: PhantomData<*const ()>,
}

impl SaveGuard<'_> {
    /// The saved thread state.
    pub fn thread_state(&self) -> ThreadStateId {
        self.ts
    }
}

impl Drop for SaveGuard<'_> {
    fn drop(&mut self) {
        let r = self.rt.restore(self.ts);
        debug_assert!(r.is_ok(), "SaveGuard restored out of order: {r:?}");
    }
}
