//! The model backend: the reference every other backend is compared with.
//!
//! An interpreter's lock is a pair of bits in a gate word (its own, or
//! main's for `SharedWithMain`, or none for a free-threaded interpreter);
//! a thread state is a record with one "thread-local Python data" word.
//! Nothing outside the library can attach or detach a thread state, so the
//! span machine's per-thread record is the truth.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::interp::Interp;
use crate::sync::{Arc, AtomicU64, Deadline, Ordering};
use crate::thread::{CtxSlot, ctx_slot};
use crate::tstate::TState;
use crate::types::{BackendKind, LockMode, ReusePolicy};

/// The model backend (zero-sized).
#[derive(Debug, Default, Clone, Copy)]
pub struct Model;

/// A model interpreter's data.
pub struct ModelInterp {
    /// `SharedWithMain`: the main interpreter, whose gate word carries the
    /// lock.
    pub(crate) lock_owner: Option<Arc<Interp<Model>>>,
}

/// A model thread state's data.
pub struct ModelTState {
    /// The thread state's "thread-local Python data" (its dict, its error
    /// indicator): what must not leak from one top-level ensure into the
    /// next.
    scratch: AtomicU64,
}

ctx_slot!(fn model_slot, fn model_ctx_ptr);

impl Backend for Model {
    type Interp = ModelInterp;
    type TState = ModelTState;
    const KIND: BackendKind = BackendKind::Model;
    const EXTERNAL_SWITCHES: bool = false;
    const LOCK_BITS: bool = true;

    fn ctx_slot() -> &'static CtxSlot {
        model_slot()
    }

    #[inline(always)]
    fn ctx_ptr() -> Option<*mut ()> {
        model_ctx_ptr()
    }

    fn lock_group(i: &Interp<Self>) -> Option<&Interp<Self>> {
        match i.mode {
            LockMode::Own => Some(i),
            LockMode::SharedWithMain => i.data.lock_owner.as_deref(),
            LockMode::None => None,
        }
    }

    fn lock_in_gate(i: &Interp<Self>) -> bool {
        i.mode == LockMode::Own
    }

    fn reuse(_: &Interp<Self>, option: ReusePolicy) -> ReusePolicy {
        option
    }

    fn keep_between_spans(_: &Interp<Self>) -> bool {
        true
    }

    fn daemon_spans(_: &Interp<Self>) -> bool {
        true
    }

    fn new_tstate_data(&self) -> ModelTState {
        ModelTState {
            scratch: AtomicU64::new(0),
        }
    }

    fn materialize(&self, _: &Interp<Self>, _: &TState<Self>) -> Result<()> {
        Ok(())
    }

    fn attach(&self, i: &Interp<Self>, _: &TState<Self>, locked: bool) {
        if !locked && let Some(g) = Self::lock_group(i) {
            g.gate.lock();
        }
    }

    fn attach_until(&self, i: &Interp<Self>, _: &TState<Self>, deadline: &Deadline) -> bool {
        match Self::lock_group(i) {
            Some(g) => g.gate.lock_until(deadline),
            None => true,
        }
    }

    fn detach(&self, i: &Interp<Self>, _: &TState<Self>) {
        if let Some(g) = Self::lock_group(i) {
            g.gate.unlock();
        }
    }

    fn dematerialize(&self, i: &Interp<Self>, ts: &TState<Self>, attached: bool) {
        if attached {
            self.detach(i, ts);
        }
    }

    fn reset(&self, ts: &TState<Self>) {
        ts.data.scratch.store(0, Ordering::Relaxed);
    }

    fn scratch(&self, ts: &TState<Self>) -> Result<u64> {
        Ok(ts.data.scratch.load(Ordering::Relaxed))
    }

    fn set_scratch(&self, ts: &TState<Self>, v: u64) -> Result<()> {
        ts.data.scratch.store(v, Ordering::Relaxed);
        Ok(())
    }

    fn python_work(&self, _: &Interp<Self>, _: &TState<Self>) -> bool {
        true
    }

    fn supports(&self, _: LockMode) -> Result<()> {
        Ok(())
    }
}

/// The model's rule for a new subinterpreter's lock: `SharedWithMain` needs
/// a main with a lock to share (a free-threaded main has none: the
/// combination is refused with `Unsupported`).
pub(crate) fn lock_owner_for(
    mode: LockMode,
    main: &Arc<Interp<Model>>,
) -> Result<Option<Arc<Interp<Model>>>> {
    match mode {
        LockMode::SharedWithMain if main.mode == LockMode::None => Err(Error::Unsupported),
        LockMode::SharedWithMain => Ok(Some(main.clone())),
        _ => Ok(None),
    }
}
