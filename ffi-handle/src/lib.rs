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
use tstate_core::c_abi;
use tstate_core::{InterpreterId, Ticket, fast_global, with_global};

pub mod rust;
mod shared;

/// This facade exports no inline block (only the ensure design's header has
/// an inline nested path: `docs/performance.md`, "The inline path").
const INLINE_STATE: Option<tstate_core::c_abi::InlineSlot> = None;
pub use shared::*;

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
    // the nested fast path (see `Runtime::ensure_nested`); a ticket is
    // always in 1..=i32::MAX (documented layout)
    if let Some(t) =
        fast_global!(ThisFacade, rt => rt.ensure_nested(InterpreterId::from_raw(interp), true))
    {
        return t.to_raw() as c_int;
    }
    // SAFETY: forwarded contract.
    unsafe { ensure_slow(interp, errmsg) }
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
    if handle > 0
        && fast_global!(ThisFacade, rt => rt.release_ticket_nested(Ticket::from_raw(handle as u32)).then_some(())).is_some()
    {
        return 0;
    }
    release_slow(handle)
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
