//! A thread-state record: belongs to one interpreter and one OS thread.
//!
//! # The state byte
//!
//! | value | state | written by | next |
//! |---:|---|---|---|
//! | 0 | `DETACHED` | owner thread (create, detach) | `ATTACHED`, `DELETED` |
//! | 1 | `ATTACHED` | owner thread (attach) | `DETACHED` |
//! | 2 | `DELETED` | owner thread (delete, thread exit) or the finalizer of its interpreter once it is gone | — (final) |
//!
//! Only the owner thread attaches and detaches, so `ATTACHED` is never seen
//! by the finalizer at its point of no return (an attached thread state lies
//! inside a hold, which the finalizer waits for). The byte is atomic because
//! the finalizer may mark a detached thread state `DELETED` while its owner
//! later reads it.

use crate::backend::Backend;
use crate::interp::Interp;
use crate::sync::{Arc, AtomicU8, Ordering};
use crate::types::ThreadStateId;

const DETACHED: u8 = 0;
const ATTACHED: u8 = 1;
const DELETED: u8 = 2;

/// Who owns a thread state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TsKind {
    /// Created by ensure; reused (reset) or deleted by release.
    Ensure,
    /// Created by `new_thread_state` for the caller, who deletes it.
    Explicit,
    /// Not the library's: a thread state CPython or other code created and
    /// attached on this thread; the library attaches and detaches it but
    /// never frees it.
    Borrowed,
}

/// One thread-state record.
pub struct TState<B: Backend> {
    pub(crate) id: ThreadStateId,
    pub(crate) interp: Arc<Interp<B>>,
    /// Number of the OS thread that created it (affinity).
    pub(crate) owner: u64,
    pub(crate) kind: TsKind,
    state: AtomicU8,
    /// The backend's thread state.
    pub(crate) data: B::TState,
}

impl<B: Backend> TState<B> {
    pub(crate) fn new(
        id: ThreadStateId,
        interp: Arc<Interp<B>>,
        owner: u64,
        kind: TsKind,
        data: B::TState,
    ) -> Self {
        Self {
            id,
            interp,
            owner,
            kind,
            state: AtomicU8::new(DETACHED),
            data,
        }
    }

    pub(crate) fn is_deleted(&self) -> bool {
        self.state.load(Ordering::Acquire) == DELETED
    }

    pub(crate) fn set_attached(&self, attached: bool) {
        self.state.store(
            if attached { ATTACHED } else { DETACHED },
            Ordering::Release,
        );
    }

    pub(crate) fn mark_deleted(&self) {
        self.state.store(DELETED, Ordering::Release);
    }
}
