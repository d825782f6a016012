//! # tstate-ffi-ensure — the thread-stored ensure/release design
//!
//! The discussion's original proposal, as a C ABI over `tstate-core`:
//!
//! ```c
//! int  tse_ensure(uint64_t interp, const char **errmsg); // 0, or -1 + static message
//! void tse_release(void);                                // pops this thread's last ensure
//! int  tse_ensure_ex(uint64_t interp, TSE_Error *err);   // 0, or the code; {code, message}
//! ```
//!
//! Nesting is kept per thread: each release undoes this thread's innermost
//! ensure, restoring exactly what was attached before (across interpreters
//! too). `tse_release` returns `void`, so its misuse (nothing ensured, an
//! inner span still open) goes to a replaceable fatal-error hook
//! ([`tse_set_fatal_hook`]) whose default prints and aborts, like
//! `Py_FatalError`.
//!
//! C symbols carry the prefix `tse_` (types `TSE_`), so this facade, the other
//! two and a real libpython link into one process side by side. Define
//! `TSTATE_ENSURE_DISCUSSION_NAMES` before including `tstate_ensure.h` to get
//! the discussion's spellings (`PyThreadState_Ensure`, `PyThreadState_Release`).
//!
//! Rust users: [`rust::attach`] runs a closure attached (see `docs/rust-api.md`).

use std::ffi::{c_char, c_int};
use tstate_core::c_abi::{self, FatalHookCell, InlineState, InlineStep};
use tstate_core::{Error, InterpreterId, with_global};

pub mod rust;
mod shared;
pub use shared::*;

/// The discussion's alternative error style: a code and its static message.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnsureError {
    /// One of the negative `TSE_ERR_*` codes.
    pub code: c_int,
    /// Its static, NUL-terminated message (never freed by the caller).
    pub message: *const c_char,
}

/// A fatal-error hook: receives the code and its static message. If it
/// returns, the misused call returns having changed nothing.
pub type FatalHook = Option<extern "C" fn(code: c_int, message: *const c_char)>;

static FATAL: FatalHookCell = FatalHookCell::new("tse_release");

c_abi::inline_block!();

/// The runtime exports its inline block (`shared.rs` passes this to
/// `Global::choose_with`).
const INLINE_STATE: Option<tstate_core::c_abi::InlineExport> =
    Some(tstate_core::c_abi::InlineExport {
        slot: inline_slot,
        tickets: false,
    });

/// The calling thread's inline block, read and written by the header's
/// `tse_ensure_inline` / `tse_release_inline` (which cache this address in
/// a thread-local of their own): never NULL, valid for the calling thread's
/// whole life, to be used by that thread only. Its fields and their states
/// are documented in `docs/performance.md` ("The inline path"); code other
/// than the header's inline functions must not write it.
///
/// Thread: any; each thread gets its own block.
#[unsafe(no_mangle)]
pub extern "C" fn tse_inline_state() -> *mut InlineState {
    // no panic possible: a const thread-local without a destructor is
    // always accessible
    inline_slot()
}

/// The nested fast path: the header's inline ensure on this thread's
/// block, as far as it goes without a call ([`InlineStep::Check`]: on
/// CPython, continue with [`ensure_checked`]).
#[inline(always)]
fn ensure_fast(interp: u64) -> InlineStep {
    // SAFETY: this thread's block, filled by the library only; no library
    // call runs on this thread (an exported function's start), and no
    // reference to the block outlives this statement.
    unsafe { (*inline_slot()).count_uncalled(interp) }
}

/// The nested fast path where the backend's thread state must be checked
/// (`InlineState::try_count`), else `full` (so that the exported function
/// reaches it by a tail call and saves no registers).
#[inline(never)]
fn ensure_checked(interp: u64, full: impl FnOnce() -> c_int) -> c_int {
    // SAFETY: as in `ensure_fast`; `current` is the backend's C function.
    if unsafe { (*inline_slot()).try_count(interp) } {
        0
    } else {
        full()
    }
}

/// The nested release fast path, as far as it goes without a call.
#[inline(always)]
fn release_fast() -> InlineStep {
    // SAFETY: as in `ensure_fast`.
    unsafe { (*inline_slot()).uncount_uncalled() }
}

/// `tse_release` where the backend's thread state must be checked first.
#[inline(never)]
fn release_checked() {
    // SAFETY: as in `ensure_checked`.
    if !unsafe { (*inline_slot()).try_uncount() } {
        release_full();
    }
}

#[inline(always)]
fn ensure_code(interp: u64) -> c_int {
    c_abi::boundary(|| {
        with_global!(ThisFacade, rt => rt.ensure_past_fast_path(InterpreterId::from_raw(interp)))
            .map(|_| 0)
    })
}

/// `tse_release`'s body, returning the code instead of reporting misuse
/// (the Rust API surfaces it).
#[inline(always)]
fn release_code() -> c_int {
    c_abi::boundary(|| with_global!(ThisFacade, rt => rt.release_past_fast_path()).map(|()| 0))
}

/// Ensures the calling thread is attached to `interp`; undo with
/// [`tse_release`] on the same thread.
///
/// Already attached to `interp`: counted (no lock, never refused). Holding
/// `interp` open through a detached thread state (after
/// `tse_save_thread`): that one is re-attached. Otherwise the thread's kept
/// thread state for `interp` is attached — refused at once, never hanging,
/// if `interp` is finalizing or gone. Attached to another interpreter: that
/// one is detached and re-attached by the matching release.
///
/// Returns 0, or -1 with `*errmsg` set to a static message (`errmsg` may be
/// NULL if the caller does not want it). The message says which of:
/// finalizing, no such interpreter (0, forged, gone), out of memory,
/// internal panic. For the code, use [`tse_ensure_ex`].
///
/// Thread: any; the span belongs to the calling thread.
///
/// # Safety
/// `errmsg` must be NULL or valid for writing a `const char *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tse_ensure(interp: u64, errmsg: *mut *const c_char) -> c_int {
    match ensure_fast(interp) {
        InlineStep::Done => 0,
        // SAFETY: forwarded contract.
        InlineStep::Check => ensure_checked(interp, || unsafe { ensure_full(interp, errmsg) }),
        // SAFETY: forwarded contract.
        InlineStep::Library => unsafe { ensure_full(interp, errmsg) },
    }
}

/// `tse_ensure` past its fast path (a separate function, so that the fast
/// path saves no registers).
///
/// # Safety
/// As `tse_ensure`.
#[inline(never)]
unsafe extern "C" fn ensure_full(interp: u64, errmsg: *mut *const c_char) -> c_int {
    let r = ensure_code(interp);
    if r < 0 {
        if !errmsg.is_null() {
            // SAFETY: non-NULL; validity is the caller's contract.
            unsafe { errmsg.write(c_abi::error_message(r)) };
        }
        return -1;
    }
    0
}

/// As [`tse_ensure`], in the `{ code, message }` style: returns 0, or the
/// negative `TSE_ERR_*` code with `*err` filled (if `err` is not NULL):
/// `TSE_ERR_FINALIZING`, `TSE_ERR_NO_SUCH_INTERPRETER`, `TSE_ERR_NO_MEMORY`,
/// `TSE_ERR_PANIC`.
///
/// # Safety
/// `err` must be NULL or valid for writing a `TSE_Error`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tse_ensure_ex(interp: u64, err: *mut EnsureError) -> c_int {
    match ensure_fast(interp) {
        InlineStep::Done => 0,
        // SAFETY: forwarded contract.
        InlineStep::Check => ensure_checked(interp, || unsafe { ensure_ex_full(interp, err) }),
        // SAFETY: forwarded contract.
        InlineStep::Library => unsafe { ensure_ex_full(interp, err) },
    }
}

/// `tse_ensure_ex` past its fast path.
///
/// # Safety
/// As `tse_ensure_ex`.
#[inline(never)]
unsafe extern "C" fn ensure_ex_full(interp: u64, err: *mut EnsureError) -> c_int {
    let r = ensure_code(interp);
    if r < 0 && !err.is_null() {
        let e = EnsureError {
            code: r,
            message: c_abi::error_message(r),
        };
        // SAFETY: non-NULL; validity is the caller's contract.
        unsafe { err.write(e) };
    }
    r
}

/// Undoes the calling thread's innermost ensure, restoring exactly what was
/// attached before it.
///
/// Misuse — nothing ensured on this thread (`TSE_ERR_NOT_ATTACHED`), or a
/// save or an activation inside the span still open (`TSE_ERR_OUT_OF_ORDER`)
/// — is reported to the fatal-error hook; the default prints the message
/// and aborts. A hook that returns makes this call a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn tse_release() {
    match release_fast() {
        InlineStep::Done => {}
        InlineStep::Check => release_checked(),
        InlineStep::Library => release_full(),
    }
}

/// `tse_release` past its fast path.
#[inline(never)]
extern "C" fn release_full() {
    let r = release_code();
    if r < 0 {
        FATAL.report(Error::from_code(r).unwrap_or(Error::Panic));
    }
}

/// Installs the fatal-error hook for misuse of `void` functions
/// (`tse_release`); NULL restores the default (print, abort). Returns the
/// previous hook (NULL for the default). Process-wide; thread: any.
#[unsafe(no_mangle)]
pub extern "C" fn tse_set_fatal_hook(hook: FatalHook) -> FatalHook {
    c_abi::boundary_or(None, || FATAL.set(hook))
}
