//! A runtime that exports an inline block (`c_abi::InlineState`) of the
//! test's own, and the headers' inline functions transliterated line for
//! line: `tse_ensure_inline` / `tse_release_inline`
//! (`ffi-ensure/cbindgen.toml`), and for a design with tickets
//! `tsh_ensure_inline` / `tsh_release_inline` (`ffi-handle/cbindgen.toml`).

use std::cell::UnsafeCell;
use tstate_core::c_abi::{InlineExport, InlineState};
use tstate_core::{Error, InterpreterId, Runtime, Ticket};

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

/// The block of a design without tickets.
pub fn export() -> InlineExport {
    InlineExport {
        slot,
        tickets: false,
    }
}

pub fn runtime() -> Runtime {
    let rt = Runtime::new();
    rt.export_inline_state(export()).unwrap();
    rt
}

std::thread_local! {
    static TICKET_BLOCK: UnsafeCell<InlineState> = const { UnsafeCell::new(InlineState::CLOSED) };
}

fn ticket_slot() -> *mut InlineState {
    TICKET_BLOCK.with(|b| b.get())
}

/// A copy of the calling thread's block of [`ticket_runtime`]s.
pub fn ticket_block() -> (u64, u32, u32) {
    // SAFETY: this thread's block; no library call runs while it is read.
    let b = unsafe { &*ticket_slot() };
    (b.open, b.depth, b.limit)
}

/// A runtime whose block hands out tickets (the handle design's).
pub fn ticket_runtime() -> Runtime {
    let rt = Runtime::new();
    rt.export_inline_state(InlineExport {
        slot: ticket_slot,
        tickets: true,
    })
    .unwrap();
    rt
}

/// `TSH_INLINE_SEQ_MASK`.
const SEQ_MASK: u32 = 0x7FFFF;

/// The header's `tsh_ensure_inline`.
pub fn inline_ensure_ticket(rt: &Runtime, id: InterpreterId) -> Result<Ticket, Error> {
    // SAFETY: this thread's block, used between library calls only.
    let b = unsafe { &mut *ticket_slot() };
    if b.open == id.as_raw() && b.depth < b.limit && current_is_expected(b) {
        let seq = b.next_seq;
        b.next_seq = (seq + 1) & SEQ_MASK;
        b.seqs[b.depth as usize] = seq;
        b.depth += 1;
        return Ok(Ticket::from_raw(b.tag_bits | seq));
    }
    rt.ensure_ticket(id)
}

/// The header's `tsh_release_inline`.
pub fn inline_release_ticket(rt: &Runtime, t: Ticket) -> Result<(), Error> {
    // SAFETY: as in `inline_ensure_ticket`.
    let b = unsafe { &mut *ticket_slot() };
    if b.depth > 0
        && t.to_raw() == b.tag_bits | b.seqs[b.depth as usize - 1]
        && current_is_expected(b)
    {
        b.depth -= 1;
        return Ok(());
    }
    rt.release_ticket(t)
}
