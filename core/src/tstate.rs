//! A thread state: belongs to one interpreter and one OS thread.
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

use crate::interp::Interp;
use crate::sync::{Arc, AtomicU8, AtomicU64, Ordering};
use crate::types::ThreadStateId;

const DETACHED: u8 = 0;
const ATTACHED: u8 = 1;
const DELETED: u8 = 2;

/// One thread state.
pub(crate) struct TState {
    pub(crate) id: ThreadStateId,
    pub(crate) interp: Arc<Interp>,
    /// Number of the OS thread that created it (affinity).
    pub(crate) owner: u64,
    /// Created by ensure (reused or deleted by release), not by `new`.
    pub(crate) by_ensure: bool,
    state: AtomicU8,
    /// Per-thread-state data ("the thread state's dict / error indicator"):
    /// what must not leak from one top-level ensure into the next.
    scratch: AtomicU64,
}

impl TState {
    pub(crate) fn new(id: ThreadStateId, interp: Arc<Interp>, owner: u64, by_ensure: bool) -> Self {
        Self {
            id,
            interp,
            owner,
            by_ensure,
            state: AtomicU8::new(DETACHED),
            scratch: AtomicU64::new(0),
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

    /// Clears everything a previous user left in it.
    pub(crate) fn reset(&self) {
        self.scratch.store(0, Ordering::Relaxed);
    }

    pub(crate) fn scratch(&self) -> u64 {
        self.scratch.load(Ordering::Relaxed)
    }

    pub(crate) fn set_scratch(&self, v: u64) {
        self.scratch.store(v, Ordering::Relaxed);
    }
}
