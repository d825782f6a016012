//! # tstate-ffi-guard — the guard design (PEP 788)
//!
//! The design CPython 3.15 shipped, as a C ABI over `tstate-core`, for
//! CPython 3.9–3.13 (and the model):
//!
//! ```c
//! TSG_View *view = tsg_view_from_main();         // weak: never blocks finalization
//! ...                                             // later, on any thread:
//! TSG_Token *t = tsg_ensure_from_view(view);      // NULL: refused (tsg_last_error())
//! if (t) { /* Python work */ tsg_release(t); }    // restores what was attached
//! tsg_view_close(view);
//! ```
//!
//! * A **guard** (`TSG_Guard *`) holds its interpreter open: finalization
//!   waits until every guard is closed, and once it has started no new
//!   guard is granted. Taking one needs no thread state.
//! * A **view** (`TSG_View *`) is a weak reference: it never blocks
//!   finalization and stays safe to use after the interpreter is gone
//!   (turning it into a guard then fails).
//! * A **token** (`TSG_Token *`) stands for the thread state attached
//!   before an ensure (or none); releasing it restores exactly that, across
//!   interpreters. `tsg_ensure(guard)` is never refused for finalizing (the
//!   guard rules it out); closing the guard afterwards makes the span a
//!   daemon's (it no longer blocks finalization: PEP 788's daemon idiom).
//!
//! Beyond PEP 788, and documented as such: finalization waits for guards
//! with the caller's bound and names them in its holder report (PEP 788
//! waits forever for a leaked guard); every pointer the PEP leaves
//! undefined to misuse (a closed guard, a forged or stale pointer, a
//! release on the wrong thread, out-of-order tokens) is detected: a
//! function returning a pointer returns NULL and records the code in
//! [`tsg_last_error`]; a `void` function reports it to the replaceable
//! fatal-error hook ([`tsg_set_fatal_hook`]; default: print and abort, as
//! CPython's fatal errors).
//!
//! Guards, views and tokens are opaque: their addresses are generational
//! ids, never dereferenced (so this ABI needs 64-bit pointers).
//!
//! Rust users: [`rust::View`], [`rust::Guard`] and [`rust::Token`], or the
//! closure [`rust::attach`] (see `docs/rust-api.md`).
//!
//! C symbols carry the prefix `tsg_` (types `TSG_`). Define
//! `TSTATE_GUARD_PEP788_NAMES` before including `tstate_guard.h` to get the
//! PEP's spellings (`PyInterpreterGuard_FromView`,
//! `PyThreadState_EnsureFromView`, …).

use std::ffi::{c_char, c_int};
use tstate_core::c_abi::{self, FatalHookCell, InlineState, InlineStep};
use tstate_core::{Error, GuardId, InterpreterId, Ticket, ViewId, with_global};

pub mod rust;
mod shared;

pub use shared::*;

c_abi::inline_block!();

/// The runtime exports its inline block, which hands out tokens (tickets)
/// and caches the guard the thread used last (`shared.rs` passes this to
/// `Global::choose_with`).
const INLINE_STATE: Option<c_abi::InlineExport> = Some(c_abi::InlineExport {
    slot: inline_slot,
    tickets: true,
});

/// Sequence numbers of tokens wrap at this mask (`tsg_ensure_inline`
/// numbers the spans it counts; the library's own rule).
pub const INLINE_SEQ_MASK: u32 = 0x7FFFF;
const _: () = assert!(INLINE_SEQ_MASK == c_abi::TICKET_SEQ_MASK);

/// The calling thread's inline block, read and written by the header's
/// `tsg_ensure_inline` / `tsg_release_inline` (which cache this address in
/// a thread-local of their own): never NULL, valid for the calling thread's
/// whole life, to be used by that thread only. Its fields and their states
/// are documented in `docs/performance.md` ("The inline path"); code other
/// than the header's inline functions must not write it.
///
/// Thread: any; each thread gets its own block.
#[unsafe(no_mangle)]
pub extern "C" fn tsg_inline_state() -> *mut InlineState {
    // no panic possible: a const thread-local without a destructor is
    // always accessible
    inline_slot()
}

/// An opaque guard (PEP 788's `PyInterpreterGuard`). Never dereferenced.
pub struct Guard {
    _opaque: [u8; 0],
}

/// An opaque view (PEP 788's `PyInterpreterView`). Never dereferenced.
pub struct View {
    _opaque: [u8; 0],
}

/// An opaque thread-state token (PEP 788's `PyThreadStateToken`). Never
/// dereferenced.
pub struct Token {
    _opaque: [u8; 0],
}

static_assertions::const_assert_eq!(std::mem::size_of::<*mut Guard>(), 8);

/// A fatal-error hook: receives the code and its static message. If it
/// returns, the misused call returns having changed nothing.
pub type FatalHook = Option<extern "C" fn(code: c_int, message: *const c_char)>;

static FATAL: FatalHookCell = FatalHookCell::new("the guard facade");

/// Records the code of this thread's last call (0 after a success) in its
/// inline block, where the header's inline ensure writes its 0 too.
#[inline(always)]
fn set_last(code: c_int) {
    // SAFETY: this thread's block; the library is not inside a call here
    // (the boundary returned), and no reference to the block outlives this
    // statement.
    unsafe { (*inline_slot()).last_error = code };
}

/// Runs `f` across the panic boundary: a pointer on success; NULL with the
/// code recorded in the thread's last error otherwise.
fn pointer<T>(f: impl FnOnce() -> Result<u64, Error>) -> *mut T {
    let mut out = 0u64;
    let r = c_abi::boundary(|| {
        out = f()?;
        Ok(0)
    });
    set_last(r.min(0));
    if r < 0 {
        std::ptr::null_mut()
    } else {
        out as usize as *mut T
    }
}

/// Runs the body of a `void` function: misuse goes to the fatal hook.
fn void(f: impl FnOnce() -> Result<(), Error>) {
    let r = c_abi::boundary(|| f().map(|()| 0));
    set_last(r.min(0));
    if r < 0 {
        FATAL.report(Error::from_code(r).unwrap_or(Error::Panic));
    }
}

fn raw<T>(p: *mut T) -> Result<u64, Error> {
    c_abi::non_null(p)?;
    Ok(p as usize as u64)
}

/// A guard on the interpreter the calling thread is attached to.
///
/// Thread: one attached to an interpreter. Returns the guard (close it
/// with [`tsg_guard_close`]), or NULL with [`tsg_last_error`] set to
/// `TSG_ERR_NOT_ATTACHED`, `TSG_ERR_FINALIZING` (it started finalizing:
/// no new guards), `TSG_ERR_NO_MEMORY`, `TSG_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsg_guard_from_current() -> *mut Guard {
    pointer(|| with_global!(ThisFacade, rt => rt.guard_from_current()).map(GuardId::as_raw))
}

/// A guard on the interpreter `view` names. No thread state needed; any
/// thread.
///
/// Returns the guard, or NULL with [`tsg_last_error`] set to
/// `TSG_ERR_FINALIZING`, `TSG_ERR_NO_SUCH_INTERPRETER` (gone),
/// `TSG_ERR_INVALID_ARGUMENT` (NULL), `TSG_ERR_INVALID_HANDLE` (a closed or
/// forged view), `TSG_ERR_NO_MEMORY`, `TSG_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsg_guard_from_view(view: *mut View) -> *mut Guard {
    pointer(|| {
        let v = ViewId::from_raw(raw(view)?);
        with_global!(ThisFacade, rt => rt.guard_from_view(v)).map(GuardId::as_raw)
    })
}

/// Closes `guard`: its interpreter may finalize once no other guard or
/// span holds it. The guard is invalid afterwards. NULL is a no-op. Any
/// thread.
///
/// Misuse (a closed or forged guard: `TSG_ERR_INVALID_HANDLE`) is reported
/// to the fatal-error hook.
#[unsafe(no_mangle)]
pub extern "C" fn tsg_guard_close(guard: *mut Guard) {
    if guard.is_null() {
        set_last(0);
        return;
    }
    void(|| close_guard(guard as usize as u64))
}

/// `tsg_guard_close`'s body for a non-NULL guard.
fn close_guard(guard: u64) -> Result<(), Error> {
    with_global!(ThisFacade, rt => rt.close_guard(GuardId::from_raw(guard)))
}

/// A view of the interpreter the calling thread is attached to.
///
/// Returns the view (close it with [`tsg_view_close`]), or NULL with
/// [`tsg_last_error`] set to `TSG_ERR_NOT_ATTACHED`, `TSG_ERR_NO_MEMORY`,
/// `TSG_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsg_view_from_current() -> *mut View {
    pointer(|| with_global!(ThisFacade, rt => rt.view_from_current()).map(ViewId::as_raw))
}

/// A view of the main interpreter. Any thread.
///
/// Returns the view, or NULL with [`tsg_last_error`] set to
/// `TSG_ERR_NO_SUCH_INTERPRETER` (no main: finalized, or on CPython never
/// registered — call `tsg_initialize` at module init), `TSG_ERR_NO_MEMORY`,
/// `TSG_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsg_view_from_main() -> *mut View {
    pointer(|| {
        // naming main registers it on CPython when the caller is attached
        let _ = with_global!(ThisFacade, rt => rt.main_interpreter());
        with_global!(ThisFacade, rt => rt.view_from_main()).map(ViewId::as_raw)
    })
}

/// A view of the interpreter with id `interp` (beyond PEP 788: for callers
/// that hold interpreter ids, as the other facades' callers do). The
/// interpreter need not exist: the view is made, and turning it into a
/// guard fails with `TSG_ERR_NO_SUCH_INTERPRETER`. Any thread.
///
/// Returns the view, or NULL with [`tsg_last_error`] set to
/// `TSG_ERR_NO_MEMORY`, `TSG_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsg_view_from_interpreter(interp: u64) -> *mut View {
    pointer(|| {
        with_global!(ThisFacade, rt => rt.view_for(InterpreterId::from_raw(interp)))
            .map(ViewId::as_raw)
    })
}

/// Closes `view`; it is invalid afterwards. NULL is a no-op. Any thread.
///
/// Misuse (a closed or forged view: `TSG_ERR_INVALID_HANDLE`) is reported
/// to the fatal-error hook.
#[unsafe(no_mangle)]
pub extern "C" fn tsg_view_close(view: *mut View) {
    if view.is_null() {
        set_last(0);
        return;
    }
    void(|| close_view(view as usize as u64))
}

/// `tsg_view_close`'s body for a non-NULL view.
fn close_view(view: u64) -> Result<(), Error> {
    with_global!(ThisFacade, rt => rt.close_view(ViewId::from_raw(view)))
}

/// Attaches the calling thread to `guard`'s interpreter, as PEP 788's
/// `PyThreadState_Ensure(guard)`: if a thread state of it is attached,
/// counts it; else re-attaches this thread's thread state of it; else
/// creates one (freed by the matching release). Whatever was attached
/// before (another interpreter's thread state, or none) is what
/// [`tsg_release`] restores. Never refused for finalizing — the guard rules
/// it out; closing the guard while the span is open makes the span a
/// daemon's (it does not keep the interpreter open).
///
/// Returns the token, or NULL with [`tsg_last_error`] set to
/// `TSG_ERR_INVALID_ARGUMENT` (NULL), `TSG_ERR_INVALID_HANDLE` (a closed or
/// forged guard), `TSG_ERR_BUSY` (more than 4,095 threads use the library
/// at once: this thread has no token tag), `TSG_ERR_NO_MEMORY`,
/// `TSG_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsg_ensure(guard: *mut Guard) -> *mut Token {
    // the header's inline ensure on this thread's block
    // SAFETY: this thread's block, filled by the library only; no library
    // call runs on this thread (an exported function's start), and no
    // reference to the block outlives this statement.
    let b = unsafe { &mut *inline_slot() };
    match b.guard_ticket_uncalled(guard as usize as u64) {
        Ok(t) => {
            b.last_error = 0;
            t as usize as *mut Token
        }
        Err(InlineStep::Check) => ensure_checked(guard),
        Err(_) => ensure_slow(guard),
    }
}

/// The nested fast path where the backend's thread state must be checked,
/// else the slow path (reached by a tail call: the exported function saves
/// no registers).
#[inline(never)]
fn ensure_checked(guard: *mut Guard) -> *mut Token {
    // SAFETY: as in `tsg_ensure`.
    let b = unsafe { &mut *inline_slot() };
    // SAFETY: the library filled the block (`current` is the backend's C
    // function) and no library call runs on this thread.
    match unsafe { b.try_guard_ticket(guard as usize as u64) } {
        Some(t) => {
            b.last_error = 0;
            t as usize as *mut Token
        }
        None => ensure_slow(guard),
    }
}

/// `tsg_ensure` past its fast path.
#[inline(never)]
extern "C" fn ensure_slow(guard: *mut Guard) -> *mut Token {
    pointer(|| {
        let g = GuardId::from_raw(raw(guard)?);
        with_global!(ThisFacade, rt => rt.ensure_with_guard_past_fast_path(g))
            .map(|t| u64::from(t.to_raw()))
    })
}

/// As [`tsg_ensure`], taking a guard from `view` (PEP 788's
/// `PyThreadState_EnsureFromView`): the guard is kept until the matching
/// [`tsg_release`], so the interpreter cannot finalize in between.
///
/// Returns the token, or NULL with [`tsg_last_error`] set to
/// `TSG_ERR_FINALIZING`, `TSG_ERR_NO_SUCH_INTERPRETER`,
/// `TSG_ERR_INVALID_ARGUMENT`, `TSG_ERR_INVALID_HANDLE`, `TSG_ERR_BUSY`
/// (as for [`tsg_ensure`]), `TSG_ERR_NO_MEMORY`, `TSG_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsg_ensure_from_view(view: *mut View) -> *mut Token {
    pointer(|| {
        let v = ViewId::from_raw(raw(view)?);
        with_global!(ThisFacade, rt => rt.ensure_from_view(v)).map(|t| u64::from(t.to_raw()))
    })
}

/// Undoes the ensure of `token`, which must be the calling thread's
/// innermost: restores exactly the thread state attached before it (or
/// none), and closes the guard an ensure-from-view took.
///
/// Misuse — NULL (`TSG_ERR_INVALID_ARGUMENT`), an inner ensure still open
/// (`TSG_ERR_OUT_OF_ORDER`), another thread's token
/// (`TSG_ERR_WRONG_THREAD`), a released or forged one
/// (`TSG_ERR_INVALID_HANDLE`) — is reported to the fatal-error hook (PEP
/// 788: releasing more often than ensuring is fatal); a hook that returns
/// makes this call a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn tsg_release(token: *mut Token) {
    // a token is a ticket (in 1..=i32::MAX); anything else takes the slow
    // path, which reports it
    let raw = token as usize;
    if raw > i32::MAX as usize {
        return release_slow(token);
    }
    // the header's inline release on this thread's block (0 never
    // matches: counted tokens are in 1..=i32::MAX)
    // SAFETY: as in `tsg_ensure`.
    let b = unsafe { &mut *inline_slot() };
    match b.release_ticket_uncalled(raw as u32) {
        InlineStep::Done => b.last_error = 0,
        InlineStep::Check => release_checked(token),
        InlineStep::Library => release_slow(token),
    }
}

/// `tsg_release` where the backend's thread state must be checked first.
#[inline(never)]
fn release_checked(token: *mut Token) {
    // SAFETY: as in `tsg_ensure`.
    let b = unsafe { &mut *inline_slot() };
    // SAFETY: as in `ensure_checked`; the token is at most i32::MAX
    // (checked by `tsg_release`), so the cast keeps it.
    if unsafe { b.try_release_ticket(token as usize as u32) } {
        b.last_error = 0;
    } else {
        release_slow(token)
    }
}

/// `tsg_release` past its fast path.
#[inline(never)]
extern "C" fn release_slow(token: *mut Token) {
    void(|| release_token(token))
}

/// `tsg_release`'s body, returning the error instead of reporting misuse
/// (the Rust API surfaces it).
fn release_token(token: *mut Token) -> Result<(), Error> {
    let t = u32::try_from(raw(token)?).map_err(|_| Error::InvalidHandle)?;
    with_global!(ThisFacade, rt => rt.release_token_past_fast_path(Ticket::from_raw(t)))
}

/// The code of the calling thread's last failed call of this facade's
/// pointer-returning or `void` functions (a `TSG_ERR_*`), 0 if the last one
/// succeeded. Read it right after a NULL. Thread: any (answers for itself).
#[unsafe(no_mangle)]
pub extern "C" fn tsg_last_error() -> c_int {
    // SAFETY: as in `set_last`.
    unsafe { (*inline_slot()).last_error }
}

/// Installs the fatal-error hook for misuse of the `void` functions
/// (`tsg_release`, `tsg_guard_close`, `tsg_view_close`); NULL restores the
/// default (print, abort). Returns the previous hook (NULL for the
/// default). Process-wide; thread: any.
#[unsafe(no_mangle)]
pub extern "C" fn tsg_set_fatal_hook(hook: FatalHook) -> FatalHook {
    c_abi::boundary_or(None, || FATAL.set(hook))
}
