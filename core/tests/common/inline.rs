//! A runtime that exports an inline block (`c_abi::InlineState`) of the
//! test's own, and the headers' inline functions transliterated line for
//! line: `tse_ensure_inline` / `tse_release_inline`
//! (`ffi-ensure/cbindgen.toml`), for a design with tickets
//! `tsh_ensure_inline` / `tsh_release_inline` (`ffi-handle/cbindgen.toml`),
//! and the guard design's `tsg_ensure_inline` (`ffi-guard/cbindgen.toml`;
//! its release is the handle design's).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, Ordering};
use tstate_core::c_abi::{InlineExport, InlineState};
use tstate_core::{Error, GuardId, InterpreterId, Runtime, Ticket};

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
        return Ok(push_ticket(b));
    }
    rt.ensure_ticket(id)
}

/// The headers' counting of a span with a ticket (`depth < limit` checked).
fn push_ticket(b: &mut InlineState) -> Ticket {
    let seq = b.next_seq;
    b.next_seq = (seq + 1) & SEQ_MASK;
    b.seqs[b.depth as usize] = seq;
    b.depth += 1;
    Ticket::from_raw(b.tag_bits | seq)
}

/// The header's `tsh_release_inline`.
pub fn inline_release_ticket(rt: &Runtime, t: Ticket) -> Result<(), Error> {
    if uncount_ticket(t) {
        return Ok(());
    }
    rt.release_ticket(t)
}

/// The header's `tsg_release_inline` (the guard design's release).
pub fn inline_release_token(rt: &Runtime, t: Ticket) -> Result<(), Error> {
    if uncount_ticket(t) {
        return Ok(());
    }
    rt.release_token(t)
}

/// The inline release's check and uncount, shared by both designs.
fn uncount_ticket(t: Ticket) -> bool {
    // SAFETY: as in `inline_ensure_ticket`.
    let b = unsafe { &mut *ticket_slot() };
    if b.depth > 0
        && t.to_raw() == b.tag_bits | b.seqs[b.depth as usize - 1]
        && current_is_expected(b)
    {
        b.depth -= 1;
        return true;
    }
    false
}

/// The header's `tsg_ensure_inline` (the guard design's block is a ticket
/// block that also caches a guard).
pub fn inline_ensure_guard(rt: &Runtime, g: GuardId) -> Result<Ticket, Error> {
    // SAFETY: this thread's block, used between library calls only.
    let b = unsafe { &mut *ticket_slot() };
    let raw = g.as_raw();
    if raw != 0
        && raw == b.guard
        && b.depth < b.limit
        // SAFETY: `guard` is set, so `guard_closes` is the live runtime's
        // counter, an atomic word (the block's documented layout).
        && unsafe { (*b.guard_closes.cast::<AtomicU64>()).load(Ordering::Acquire) } == b.guard_epoch
        && current_is_expected(b)
    {
        return Ok(push_ticket(b));
    }
    rt.ensure_with_guard(g)
}

/// The guard `rts[0]`'s block trusts (0: none).
pub fn block_guard() -> u64 {
    // SAFETY: as in `ticket_block`.
    unsafe { (*ticket_slot()).guard }
}
