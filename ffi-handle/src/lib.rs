//! # tstate-ffi-handle — the int-handle ensure/release design
//!
//! The discussion's int-handle variant, as a C ABI over `tstate-core`:
//!
//! ```c
//! int h = tsh_ensure(uint64_t interp, const char **errmsg); // >= 0, or a negative code
//! int     tsh_release(int h);                               // 0, or a negative code
//! ```
//!
//! The handle names one span. It is generation-tagged (a per-thread tag and
//! sequence number, see `tstate_core::Ticket`), so a double, forged,
//! foreign-thread or out-of-order release is detected and refused with
//! state unchanged — and, unlike the thread-stored design, `tsh_release` can
//! report it to its caller.
//!
//! C symbols carry the prefix `tsh_` (types `TSH_`). Define
//! `TSTATE_HANDLE_DISCUSSION_NAMES` before including `tstate_handle.h` to get
//! `PyThreadState_Ensure` / `PyThreadState_Release`.
//!
//! Rust users: [`rust::attach`] runs a closure attached; [`rust::ensure`]
//! returns a guard owning its handle (see `docs/rust-api.md`).

use std::ffi::{c_char, c_int};
use tstate_core::c_abi::{self, InlineState, InlineStep};
use tstate_core::{InterpreterId, Ticket, with_global};

pub mod rust;
mod shared;

pub use shared::*;

c_abi::inline_block!();

/// The runtime exports its inline block, which hands out handles
/// (`shared.rs` passes this to `Global::choose_with`).
const INLINE_STATE: Option<c_abi::InlineExport> = Some(c_abi::InlineExport {
    slot: inline_slot,
    tickets: true,
});

/// Sequence numbers of handles wrap at this mask (`tsh_ensure_inline`
/// numbers the spans it counts; the library's own rule).
pub const INLINE_SEQ_MASK: u32 = 0x7FFFF;
const _: () = assert!(INLINE_SEQ_MASK == c_abi::TICKET_SEQ_MASK);

/// The calling thread's inline block, read and written by the header's
/// `tsh_ensure_inline` / `tsh_release_inline` (which cache this address in
/// a thread-local of their own): never NULL, valid for the calling thread's
/// whole life, to be used by that thread only. Its fields and their states
/// are documented in `docs/performance.md` ("The inline path"); code other
/// than the header's inline functions must not write it.
///
/// Thread: any; each thread gets its own block.
#[unsafe(no_mangle)]
pub extern "C" fn tsh_inline_state() -> *mut InlineState {
    // no panic possible: a const thread-local without a destructor is
    // always accessible
    inline_slot()
}

/// The nested fast path: the header's inline ensure on this thread's block,
/// as far as it goes without a call: `Ok(handle)`, or `Err(Check)` (on
/// CPython: continue with [`ensure_checked`]) or `Err(Library)`.
#[inline(always)]
fn ensure_fast(interp: u64) -> Result<c_int, InlineStep> {
    // SAFETY: this thread's block, filled by the library only; no library
    // call runs on this thread (an exported function's start), and no
    // reference to the block outlives this statement. A handle is in
    // 1..=i32::MAX (a tag is never 0; documented layout).
    unsafe { (*inline_slot()).ticket_uncalled(interp) }.map(|t| t as c_int)
}

/// The nested fast path where the backend's thread state must be checked,
/// else the slow path (reached by a tail call: the exported function saves
/// no registers).
///
/// # Safety
/// As `tsh_ensure`.
#[inline(never)]
unsafe fn ensure_checked(interp: u64, errmsg: *mut *const c_char) -> c_int {
    // SAFETY: as in `ensure_fast`; `current` is the backend's C function.
    match unsafe { (*inline_slot()).try_ticket(interp) } {
        Some(t) => t as c_int,
        // SAFETY: forwarded contract.
        None => unsafe { ensure_slow(interp, errmsg) },
    }
}

/// `tsh_release` where the backend's thread state must be checked first.
#[inline(never)]
fn release_checked(handle: c_int) -> c_int {
    // SAFETY: as in `ensure_checked`.
    if unsafe { (*inline_slot()).try_release_ticket(handle as u32) } {
        0
    } else {
        release_slow(handle)
    }
}

/// Ensures the calling thread is attached to `interp` and returns the handle
/// of this span (`>= 0`), to pass to [`tsh_release`] on the same thread.
///
/// Same rules as the thread-stored design: already attached to `interp` —
/// counted, never refused; holding `interp` open through a detached thread
/// state — re-attached; otherwise the thread's kept thread state is
/// attached, refused at once if `interp` is finalizing or gone. Attached to
/// another interpreter: detached, and re-attached by the matching release.
///
/// Returns the handle, or a negative code with `*errmsg` set to its static
/// message (`errmsg` may be NULL): `TSH_ERR_FINALIZING`,
/// `TSH_ERR_NO_SUCH_INTERPRETER`, `TSH_ERR_NO_MEMORY`, `TSH_ERR_PANIC`.
///
/// Thread: any; the span and its handle belong to the calling thread.
///
/// # Safety
/// `errmsg` must be NULL or valid for writing a `const char *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsh_ensure(interp: u64, errmsg: *mut *const c_char) -> c_int {
    match ensure_fast(interp) {
        Ok(h) => h,
        // SAFETY: forwarded contract.
        Err(InlineStep::Check) => unsafe { ensure_checked(interp, errmsg) },
        // SAFETY: forwarded contract.
        Err(_) => unsafe { ensure_slow(interp, errmsg) },
    }
}

/// `tsh_ensure` past its fast path.
///
/// # Safety
/// As `tsh_ensure`.
#[inline(never)]
unsafe extern "C" fn ensure_slow(interp: u64, errmsg: *mut *const c_char) -> c_int {
    let r = c_abi::boundary(|| {
        let t = with_global!(ThisFacade, rt => rt.ensure_ticket_past_fast_path(InterpreterId::from_raw(interp)))?;
        // A ticket is always in 1..=i32::MAX (documented layout).
        Ok(t.to_raw() as c_int)
    });
    if r < 0 && !errmsg.is_null() {
        // SAFETY: non-NULL; validity is the caller's contract.
        unsafe { errmsg.write(c_abi::error_message(r)) };
    }
    r
}

/// Releases the span of `handle`, which must be the calling thread's
/// innermost open one; restores exactly what was attached before it.
///
/// Returns 0, or with nothing changed: `TSH_ERR_OUT_OF_ORDER` (an inner span
/// is still open, or a save inside it), `TSH_ERR_INVALID_HANDLE` (negative,
/// already released, or never issued), `TSH_ERR_WRONG_THREAD` (issued on
/// another thread — detected for 126 of 127 foreign handles; the rest read
/// as invalid), `TSH_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsh_release(handle: c_int) -> c_int {
    // the header's inline release on this thread's block (a negative
    // handle never matches: counted handles are in 1..=i32::MAX)
    // SAFETY: as in `ensure_fast`.
    match unsafe { (*inline_slot()).release_ticket_uncalled(handle as u32) } {
        InlineStep::Done => 0,
        InlineStep::Check => release_checked(handle),
        InlineStep::Library => release_slow(handle),
    }
}

/// `tsh_release` past its fast path.
#[inline(never)]
extern "C" fn release_slow(handle: c_int) -> c_int {
    c_abi::boundary(|| {
        let raw = u32::try_from(handle).map_err(|_| tstate_core::Error::InvalidHandle)?;
        with_global!(ThisFacade, rt => rt.release_ticket_past_fast_path(Ticket::from_raw(raw)))?;
        Ok(0)
    })
}
