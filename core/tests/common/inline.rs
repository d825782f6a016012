//! A runtime that exports an inline block (`c_abi::InlineState`) of the
//! test's own, and the header's `tse_ensure_inline` / `tse_release_inline`
//! (`ffi-ensure/cbindgen.toml`) transliterated line for line.

use std::cell::UnsafeCell;
use tstate_core::c_abi::InlineState;
use tstate_core::{Error, InterpreterId, Runtime};

std::thread_local! {
    static BLOCK: UnsafeCell<InlineState> = const { UnsafeCell::new(InlineState::CLOSED) };
}

pub fn slot() -> *mut InlineState {
    BLOCK.with(|b| b.get())
}

/// A copy of the calling thread's block.
pub fn block() -> (u64, u32, u32) {
    // SAFETY: this thread's block; no library call runs while it is read.
    let b = unsafe { &*slot() };
    (b.open, b.depth, b.limit)
}

/// The header's `b->current == NULL || b->current() == b->expect`.
fn current_is_expected(b: &InlineState) -> bool {
    match b.current {
        None => true,
        // SAFETY: `current`, when set, is the backend's C function that
        // takes no argument (the model sets none).
        Some(f) => (unsafe { f() }) == b.expect,
    }
}

/// The header's `tse_ensure_inline`.
pub fn inline_ensure(rt: &Runtime, id: InterpreterId) -> Result<(), Error> {
    // SAFETY: this thread's block, used between library calls only.
    let b = unsafe { &mut *slot() };
    if b.open == id.as_raw() && b.depth < b.limit && current_is_expected(b) {
        b.depth += 1;
        return Ok(());
    }
    rt.ensure(id).map(|_| ())
}

/// The header's `tse_release_inline`.
pub fn inline_release(rt: &Runtime) -> Result<(), Error> {
    // SAFETY: as in `inline_ensure`.
    let b = unsafe { &mut *slot() };
    if b.depth > 0 && current_is_expected(b) {
        b.depth -= 1;
        return Ok(());
    }
    rt.release()
}

pub fn runtime() -> Runtime {
    let rt = Runtime::new();
    rt.export_inline_state(slot).unwrap();
    rt
}
