//! # tstate-ffi-activate — the explicit-lifecycle design
//!
//! The ownership-first counter-proposal, as a C ABI over `tstate-core`:
//!
//! ```c
//! TSA_ThreadState *ts;
//! int err = tsa_new(interp, &ts);           // the caller owns ts
//! if (err) { const char *msg; tsa_get_error_message(err, &msg); ... }
//! if (tsa_activate(ts) == 0) {              // attach (a span: holds interp open)
//!     /* Python work */
//!     tsa_deactivate(ts);                   // restore what was attached before
//! }
//! tsa_delete(ts);                           // when done
//! ```
//!
//! `TSA_ThreadState *` is an opaque generational handle (its value encodes a
//! 64-bit thread-state id; it is never dereferenced), so use after delete,
//! activation on another OS thread, delete while active and double activate
//! are errors, not undefined behaviour. `tsa_get` tells whether (and which)
//! thread state is attached on this thread, the "Get before New" the
//! discussion asks code generators to use.
//!
//! C symbols carry the prefix `tsa_` (types `TSA_`). Define
//! `TSTATE_ACTIVATE_DISCUSSION_NAMES` before including `tstate_activate.h` to
//! get `PyThreadState`, `PyThreadState_New`, `_Activate`, `_Deactivate`,
//! `_Delete`, `_Get` and `_GetErrorMessage(code, msg)`.
//!
//! Rust users: [`rust::ThreadState`] owns a thread state and its
//! [`activate`](rust::ThreadState::activate) returns an activation that
//! borrows it (see `docs/rust-api.md`).

use std::ffi::{c_char, c_int};
use tstate_core::c_abi;
use tstate_core::{Error, InterpreterId, ThreadStateId, with_global};

pub mod rust;
mod shared;

pub use shared::*;

c_abi::inline_block!();

/// The runtime exports its inline block, for `tsa_is_attached` (its
/// idiom's nested path) and the header's `tsa_is_attached_inline`; the
/// design counts no spans (`shared.rs` passes this to
/// `Global::choose_with`).
const INLINE_STATE: Option<c_abi::InlineExport> = Some(c_abi::InlineExport {
    slot: inline_slot,
    tickets: false,
});

/// The calling thread's inline block, read by the header's
/// `tsa_is_attached_inline` (which caches this address in a thread-local
/// of its own): never NULL, valid for the calling thread's whole life, to
/// be used by that thread only. Its fields and their states are documented
/// in `docs/performance.md` ("The inline path"); code other than the
/// header's inline functions must not write it.
///
/// Thread: any; each thread gets its own block.
#[unsafe(no_mangle)]
pub extern "C" fn tsa_inline_state() -> *mut c_abi::InlineState {
    inline_slot()
}

/// An opaque thread-state handle. Never dereferenced: its address is a
/// generational 64-bit id (so this ABI needs 64-bit pointers).
pub struct ThreadState {
    _opaque: [u8; 0],
}

static_assertions::const_assert_eq!(std::mem::size_of::<*mut ThreadState>(), 8);

fn to_ptr(id: ThreadStateId) -> *mut ThreadState {
    id.as_raw() as usize as *mut ThreadState
}

fn from_ptr(ts: *mut ThreadState) -> Result<ThreadStateId, Error> {
    c_abi::non_null(ts)?;
    Ok(ThreadStateId::from_raw(ts as usize as u64))
}

/// Creates a detached thread state of `interp`, owned by the caller and
/// bound to the calling OS thread, and writes it to `*ts`. Delete it with
/// [`tsa_delete`] on the same thread.
///
/// Returns 0, or (nothing written): `TSA_ERR_INVALID_ARGUMENT` (`ts` NULL),
/// `TSA_ERR_FINALIZING`, `TSA_ERR_NO_SUCH_INTERPRETER`, `TSA_ERR_NO_MEMORY`,
/// `TSA_ERR_PANIC`.
///
/// # Safety
/// `ts` must be NULL or valid for writing a `TSA_ThreadState *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsa_new(interp: u64, ts: *mut *mut ThreadState) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        c_abi::out_param(ts, || {
            let id = with_global!(ThisFacade, rt => rt.new_thread_state(InterpreterId::from_raw(interp)))?;
            Ok(to_ptr(id))
        })
    }
}

/// Attaches `ts` inside a new span: the span holds its interpreter open
/// until [`tsa_deactivate`]. Whatever was attached on this thread is
/// detached and re-attached by the deactivate.
///
/// Thread: the one that created `ts`. Returns 0, or (nothing changed):
/// `TSA_ERR_INVALID_ARGUMENT` (NULL), `TSA_ERR_WRONG_THREAD`,
/// `TSA_ERR_INVALID_HANDLE` (deleted), `TSA_ERR_BUSY` (already active,
/// saved, or in use), `TSA_ERR_FINALIZING` (this thread's first span on a
/// finalizing interpreter), `TSA_ERR_NO_SUCH_INTERPRETER` (its interpreter
/// was finalized; delete the handle), `TSA_ERR_NO_MEMORY`, `TSA_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsa_activate(ts: *mut ThreadState) -> c_int {
    c_abi::boundary(|| {
        let ts = from_ptr(ts)?;
        with_global!(ThisFacade, rt => rt.activate(ts)).map(|()| 0)
    })
}

/// Ends the span of [`tsa_activate`]; `ts` must be the calling thread's
/// innermost activation. Re-attaches what was attached before it.
///
/// Returns 0, or (nothing changed): `TSA_ERR_INVALID_ARGUMENT`,
/// `TSA_ERR_NOT_ATTACHED` (not active), `TSA_ERR_OUT_OF_ORDER` (an inner
/// span or a save is still open), `TSA_ERR_WRONG_THREAD`,
/// `TSA_ERR_INVALID_HANDLE`, `TSA_ERR_NO_SUCH_INTERPRETER` (its interpreter
/// was finalized), `TSA_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsa_deactivate(ts: *mut ThreadState) -> c_int {
    c_abi::boundary(|| {
        let ts = from_ptr(ts)?;
        with_global!(ThisFacade, rt => rt.deactivate(ts)).map(|()| 0)
    })
}

/// Deletes `ts`; the handle is invalid afterwards (using it gives
/// `TSA_ERR_INVALID_HANDLE`). Thread: the one that created it.
///
/// Returns 0, or (nothing changed): `TSA_ERR_INVALID_ARGUMENT`,
/// `TSA_ERR_BUSY` (active or saved), `TSA_ERR_WRONG_THREAD`,
/// `TSA_ERR_INVALID_HANDLE` (already deleted), `TSA_ERR_PANIC`.
///
/// Finalizing an interpreter frees all its thread states; a handle whose
/// thread state was freed that way stays the owner's to delete: this call
/// then returns 0 and the handle is invalid afterwards.
#[unsafe(no_mangle)]
pub extern "C" fn tsa_delete(ts: *mut ThreadState) -> c_int {
    c_abi::boundary(|| {
        let ts = from_ptr(ts)?;
        with_global!(ThisFacade, rt => rt.delete_thread_state(ts)).map(|()| 0)
    })
}

/// Tells whether a thread state is attached on the calling thread: returns 1
/// and writes it to `*ts`, or returns 0 and writes NULL. The caller does not
/// own a thread state it did not create. Returns `TSA_ERR_INVALID_ARGUMENT`
/// if `ts` is NULL, `TSA_ERR_PANIC`.
///
/// # Safety
/// `ts` must be NULL or valid for writing a `TSA_ThreadState *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsa_get(ts: *mut *mut ThreadState) -> c_int {
    c_abi::boundary(|| {
        c_abi::non_null(ts)?;
        let cur = with_global!(ThisFacade, rt => Ok::<_, Error>(rt.current()))?;
        let p = cur.map_or(std::ptr::null_mut(), |(t, _)| to_ptr(t));
        // SAFETY: caller's contract.
        unsafe { c_abi::put(ts, p) }?;
        Ok(i32::from(cur.is_some()))
    })
}

/// Writes the static message of `code` to `*msg` (any `int`; never NULL,
/// never freed). Returns 0, or `TSA_ERR_INVALID_ARGUMENT` if `msg` is NULL.
///
/// # Safety
/// `msg` must be NULL or valid for writing a `const char *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsa_get_error_message(code: c_int, msg: *mut *const c_char) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { c_abi::out_param(msg, || Ok(c_abi::error_message(code))) }
}
