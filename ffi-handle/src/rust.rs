//! The safe Rust API of the int-handle design, over this facade's C
//! functions (the same ABI path and the same runtime as C callers).
//!
//! Two forms: the closure [`attach`] (PyO3's `Python::attach`), and the
//! design's own idiom, a guard owning its handle: [`ensure`] opens a
//! top-level span, [`Ensured::ensure`] a nested one that mutably borrows
//! its outer guard — so releasing the outer first, or sending a guard to
//! another thread, does not compile. A guard dereferences to its
//! [`Attached`] token (`work`, `detach`, `save`).
//!
//! Releasing never panics: [`Ensured::release`] returns the design's
//! answer; two *unconnected* top-level guards dropped in the wrong order are
//! refused by the design (`OutOfOrder`) and the outer release is deferred
//! until the inner one is released (see `tstate_core::rust_api`).
//!
//! ```
//! use tstate_core::LockMode;
//! use tstate_ffi_handle::rust::{RUNTIME, ensure};
//! let main = RUNTIME.main_interpreter().unwrap();
//! let sub = RUNTIME.create_interpreter(LockMode::SharedWithMain).unwrap();
//! let mut a = ensure(main).unwrap();
//! {
//!     let b = a.ensure(sub).unwrap(); // borrows `a`: `drop(a)` here does not compile
//!     assert!(b.is_attached() && !RUNTIME.is_attached(main));
//!     b.release().unwrap();
//! }
//! assert!(a.is_attached());
//! a.release().unwrap();
//! RUNTIME.finalize(sub, None).unwrap();
//! ```

use crate::*;
use std::marker::PhantomData;
pub use tstate_core::rust_api::{Attached, BackendInfo, FacadeRuntime, Saved};
pub use tstate_core::{
    Diagnostics, Error, FinalizeError, Holder, InterpreterId, InterpreterState, LockMode,
};

use tstate_core::c_abi::check;
use tstate_core::rust_api::{finish, scoped};

/// This facade's runtime. See [`FacadeRuntime`].
///
/// ```
/// assert!(tstate_ffi_handle::rust::RUNTIME.main_interpreter().is_ok());
/// ```
pub const RUNTIME: FacadeRuntime = FacadeRuntime::new(&SHARED_ABI);

fn open(interp: InterpreterId) -> Result<c_int, Error> {
    // SAFETY: NULL `errmsg` is allowed.
    check(unsafe { tsh_ensure(interp.as_raw(), std::ptr::null_mut()) })
}

fn close(handle: c_int) -> Result<(), Error> {
    check(tsh_release(handle)).map(drop)
}

/// Releases `handle`, deferring it while an inner span is open.
fn end(handle: c_int) -> Result<(), Error> {
    finish(close(handle), move || close(handle))
}

/// Runs `f` attached to `interp` (`tsh_ensure` … `tsh_release`). Refused
/// at once, `f` not run: [`Error::Finalizing`],
/// [`Error::NoSuchInterpreter`], [`Error::NoMemory`]. The span closes when
/// `f` returns or panics.
///
/// ```
/// use tstate_ffi_handle::rust::{RUNTIME, attach};
/// let main = RUNTIME.main_interpreter().unwrap();
/// assert!(attach(main, |t| t.work().unwrap()).unwrap() >= 1);
/// ```
pub fn attach<R>(
    interp: InterpreterId,
    f: impl for<'a> FnOnce(&Attached<'a>) -> R,
) -> Result<R, Error> {
    scoped(RUNTIME, interp, || open(interp), close, f)
}

/// Opens a top-level span on `interp`; the guard releases it on drop.
/// Refused as [`attach`] is.
///
/// ```
/// use tstate_ffi_handle::rust::{RUNTIME, ensure};
/// let main = RUNTIME.main_interpreter().unwrap();
/// let g = ensure(main).unwrap();
/// assert_eq!(g.interpreter(), main);
/// drop(g);
/// assert!(!RUNTIME.is_attached(main));
/// ```
pub fn ensure(interp: InterpreterId) -> Result<Ensured<'static>, Error> {
    let handle = open(interp)?;
    Ok(Ensured {
        handle,
        token: Attached::for_open_span(RUNTIME, interp),
        _outer: PhantomData,
    })
}

/// An open span and its handle. Dereferences to its [`Attached`] token. Not
/// `Send`: the handle belongs to the thread that opened it. `'o` is the
/// borrow of the outer guard of a nested span (`'static` at top level).
///
/// ```compile_fail,E0505
/// use tstate_ffi_handle::rust::{RUNTIME, ensure};
/// let main = RUNTIME.main_interpreter().unwrap();
/// let mut a = ensure(main).unwrap();
/// let b = a.ensure(main).unwrap();
/// drop(a); // error[E0505]: cannot move out of `a` because it is borrowed
/// drop(b);
/// ```
#[must_use = "dropping the guard releases the span at once"]
pub struct Ensured<'o> {
    handle: c_int,
    token: Attached<'static>,
    _outer: PhantomData<&'o mut ()>,
}

impl std::fmt::Debug for Ensured<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ensured")
            .field("handle", &self.handle)
            .field("interpreter", &self.token.interpreter())
            .finish()
    }
}

impl Ensured<'_> {
    /// The span's C handle (`>= 0`).
    ///
    /// ```
    /// let main = tstate_ffi_handle::rust::RUNTIME.main_interpreter().unwrap();
    /// assert!(tstate_ffi_handle::rust::ensure(main).unwrap().handle() >= 0);
    /// ```
    pub fn handle(&self) -> c_int {
        self.handle
    }

    /// Opens a span nested in this one (on `interp`, any interpreter); it
    /// borrows this guard until released, so this one cannot be released
    /// first.
    ///
    /// ```
    /// use tstate_ffi_handle::rust::{RUNTIME, ensure};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// let mut a = ensure(main).unwrap();
    /// let outer = a.handle();
    /// let b = a.ensure(main).unwrap(); // nested on the same interpreter: counted
    /// assert_ne!(b.handle(), outer);
    /// ```
    pub fn ensure(&mut self, interp: InterpreterId) -> Result<Ensured<'_>, Error> {
        let handle = open(interp)?;
        Ok(Ensured {
            handle,
            token: Attached::for_open_span(RUNTIME, interp),
            _outer: PhantomData,
        })
    }

    /// Releases the span (`tsh_release`), restoring what was attached
    /// before it; what `Drop` does, with the answer. `Err(OutOfOrder)`: an
    /// unconnected span opened later is still open — the release is
    /// deferred until it closes (and happens then). Other errors: the span
    /// is gone already (its thread finalized the interpreter).
    ///
    /// ```
    /// use tstate_core::{Error, rust_api::deferred};
    /// use tstate_ffi_handle::rust::{RUNTIME, ensure};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// let a = ensure(main).unwrap();
    /// let b = ensure(main).unwrap(); // unconnected: not a borrow of `a`
    /// assert_eq!(a.release(), Err(Error::OutOfOrder)); // deferred
    /// assert_eq!(deferred(), 1);
    /// b.release().unwrap(); // releases b, then the deferred a
    /// assert_eq!(deferred(), 0);
    /// assert!(!RUNTIME.is_attached(main));
    /// ```
    pub fn release(self) -> Result<(), Error> {
        end(std::mem::ManuallyDrop::new(self).handle)
    }
}

tstate_core::span_guard!(
    Ensured,
    token,
    handle,
    end,
    r#"```
use tstate_ffi_handle::rust::{RUNTIME, ensure};
let main = RUNTIME.main_interpreter().unwrap();
let mut g = ensure(main).unwrap();
let s = g.save().unwrap();
assert!(!RUNTIME.is_attached(main));
s.restore().unwrap();
assert!(g.is_attached());
```"#
);
