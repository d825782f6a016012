//! The safe Rust API of the thread-stored design, over this facade's C
//! functions (the same ABI path and the same runtime as C callers of this
//! library in the process).
//!
//! The design's release names no span (`tse_release` pops the thread's
//! innermost), so its Rust form is a closure, as PyO3's `Python::attach`:
//! [`attach`] opens a span, runs the closure with a token ([`Attached`])
//! that proves attachment, and closes the span when the closure returns —
//! spans close in the order closures return, so an outer span can never be
//! released while an inner one is open. There is no guard to drop out of
//! order (the earlier `ensure() -> Ensured` guard is gone: dropping an outer
//! one released the inner span). Nesting is a nested `attach`, across
//! interpreters too; [`Attached::detach`] is `with nogil:`.
//!
//! ```
//! use tstate_core::LockMode;
//! use tstate_ffi_ensure::rust::{RUNTIME, attach};
//! let main = RUNTIME.main_interpreter().unwrap();
//! let sub = RUNTIME.create_interpreter(LockMode::SharedWithMain).unwrap();
//! attach(main, |t| {
//!     t.work().unwrap();
//!     attach(sub, |u| {
//!         assert!(u.is_attached() && !t.is_attached()); // main detached meanwhile
//!     }).unwrap();
//!     assert!(t.is_attached()); // main restored
//! }).unwrap();
//! assert!(!RUNTIME.is_attached(main));
//! RUNTIME.finalize(sub, None).unwrap();
//! ```
//!
//! See `docs/rust-api.md` for all four designs side by side.

use crate::*;
pub use tstate_core::rust_api::{Attached, BackendInfo, FacadeRuntime, Saved};
pub use tstate_core::{
    Diagnostics, Error, FinalizeError, Holder, InterpreterId, InterpreterState, LockMode,
};

use tstate_core::c_abi::check;

/// This facade's runtime: interpreters (main, current, create, finalize),
/// the attached check, diagnostics. See [`FacadeRuntime`].
///
/// ```
/// let main = tstate_ffi_ensure::rust::RUNTIME.main_interpreter().unwrap();
/// assert_ne!(main.as_raw(), 0);
/// ```
pub const RUNTIME: FacadeRuntime = FacadeRuntime::new(&SHARED_ABI);

/// Runs `f` attached to `interp` (`tse_ensure` … `tse_release`): already
/// attached to it — counted; holding it through a save — re-attached;
/// attached elsewhere — that is detached now and restored afterwards.
///
/// Refused at once, `f` not run, with the typed reason:
/// [`Error::Finalizing`], [`Error::NoSuchInterpreter`] (unknown or gone),
/// [`Error::NoMemory`]. The span is closed when `f` returns or panics
/// (if `f` left a save open through the C API, the release is deferred
/// until it is restored: see `tstate_core::rust_api`).
///
/// ```
/// use tstate_core::{Error, InterpreterId};
/// use tstate_ffi_ensure::rust::{RUNTIME, attach};
/// let main = RUNTIME.main_interpreter().unwrap();
/// assert_eq!(attach(main, |t| t.interpreter()), Ok(main));
/// let gone = InterpreterId::from_raw(12345);
/// assert_eq!(attach(gone, |_| unreachable!()), Err(Error::NoSuchInterpreter));
/// ```
pub fn attach<R>(
    interp: InterpreterId,
    f: impl for<'a> FnOnce(&Attached<'a>) -> R,
) -> Result<R, Error> {
    tstate_core::rust_api::scoped(
        RUNTIME,
        interp,
        // SAFETY: NULL `err` is allowed.
        || check(unsafe { tse_ensure_ex(interp.as_raw(), std::ptr::null_mut()) }).map(drop),
        |()| check(release_code()).map(drop),
        f,
    )
}
