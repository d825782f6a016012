//! The safe Rust API of the guard design (PEP 788), over this facade's C
//! functions (the same ABI path and the same runtime as C callers).
//!
//! * [`View`] — a weak reference to an interpreter (never blocks its
//!   finalization); `Send + Sync`, as views may be used on any thread.
//! * [`Guard`] — holds its interpreter open until closed; `Send + Sync`
//!   (PEP 788: a guard may be taken on one thread and used on another).
//! * [`Token`] — a span from [`Guard::ensure`] or [`View::ensure`]; it
//!   borrows the guard (or view) it came from, so closing the guard with a
//!   span open, or releasing an outer token before the nested one
//!   ([`Token::ensure`]), does not compile. Not `Send`. It dereferences to
//!   its [`Attached`] token (`work`, `detach`, `save`).
//! * [`attach`] — the closure form (a view, ensure, release, close).
//!
//! Closing a guard or view cannot fail (each value is open by
//! construction); a token release refused because an unconnected token
//! opened later is still open is deferred until it closes (see
//! `tstate_core::rust_api`). Beyond the C API's reach by design: PEP 788's
//! daemon idiom (closing the guard while its span stays open) needs the C
//! functions; the Rust types forbid it.
//!
//! ```
//! use tstate_ffi_guard::rust::{RUNTIME, View};
//! let view = View::from_main().unwrap();          // weak: hand it to any thread
//! std::thread::spawn(move || {
//!     match view.ensure() {
//!         Ok(t) => { t.work().unwrap(); }         // released on drop
//!         Err(e) => eprintln!("dropped: {e}"),    // finalizing or gone
//!     }
//! }).join().unwrap();
//! # assert!(RUNTIME.main_interpreter().is_ok());
//! ```

use crate::*;
use std::marker::PhantomData;
pub use tstate_core::rust_api::{Attached, BackendInfo, FacadeRuntime, Saved};
pub use tstate_core::{
    Diagnostics, Error, FinalizeError, Holder, InterpreterId, InterpreterState, LockMode,
};

use tstate_core::c_abi::{self, check};
use tstate_core::rust_api::{finish, scoped};

/// This facade's runtime. See [`FacadeRuntime`].
///
/// ```
/// assert!(tstate_ffi_guard::rust::RUNTIME.main_interpreter().is_ok());
/// ```
pub const RUNTIME: FacadeRuntime = FacadeRuntime::new(&SHARED_ABI);

/// A pointer-returning call's result: the raw id, or the thread's last
/// error.
fn taken<T>(p: *mut T) -> Result<u64, Error> {
    if p.is_null() {
        Err(Error::from_code(tsg_last_error()).unwrap_or(Error::Panic))
    } else {
        Ok(p as usize as u64)
    }
}

fn ptr<T>(raw: u64) -> *mut T {
    raw as usize as *mut T
}

fn release(token: u64) -> Result<(), Error> {
    check(c_abi::boundary(|| release_token(ptr(token)).map(|()| 0))).map(drop)
}

fn end(token: u64) -> Result<(), Error> {
    finish(release(token), move || release(token))
}

/// Runs `f` attached to `interp` (`tsg_view_from_interpreter`,
/// `tsg_ensure_from_view`, … `tsg_release`, `tsg_view_close`). Refused, `f`
/// not run: [`Error::Finalizing`], [`Error::NoSuchInterpreter`],
/// [`Error::NoMemory`].
///
/// ```
/// use tstate_ffi_guard::rust::{RUNTIME, attach};
/// let main = RUNTIME.main_interpreter().unwrap();
/// assert!(attach(main, |t| t.work().unwrap()).unwrap() >= 1);
/// ```
pub fn attach<R>(
    interp: InterpreterId,
    f: impl for<'a> FnOnce(&Attached<'a>) -> R,
) -> Result<R, Error> {
    let view = View::for_interpreter(interp)?;
    let open = || taken(tsg_ensure_from_view(ptr(view.raw)));
    scoped(RUNTIME, interp, open, release, f)
}

/// A view (PEP 788's `PyInterpreterView`): names an interpreter without
/// holding it open; stays safe after it is gone. Closed on drop.
///
/// ```
/// use tstate_core::LockMode;
/// use tstate_ffi_guard::rust::{RUNTIME, View};
/// let sub = RUNTIME.create_interpreter(LockMode::SharedWithMain).unwrap();
/// let view = View::for_interpreter(sub).unwrap();
/// RUNTIME.finalize(sub, None).unwrap(); // a view never blocks finalization
/// assert!(view.guard().is_err());       // and is safe to use afterwards
/// ```
#[derive(Debug)]
pub struct View {
    raw: u64,
}

impl View {
    /// A view of the main interpreter (`tsg_view_from_main`).
    ///
    /// ```
    /// assert!(tstate_ffi_guard::rust::View::from_main().is_ok());
    /// ```
    pub fn from_main() -> Result<View, Error> {
        taken(tsg_view_from_main()).map(|raw| View { raw })
    }

    /// A view of the interpreter the calling thread is attached to
    /// ([`Error::NotAttached`]).
    ///
    /// ```
    /// use tstate_ffi_guard::rust::{RUNTIME, View, attach};
    /// assert!(View::from_current().is_err());
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// attach(main, |_| assert!(View::from_current().is_ok())).unwrap();
    /// ```
    pub fn from_current() -> Result<View, Error> {
        taken(tsg_view_from_current()).map(|raw| View { raw })
    }

    /// A view of `interp` (beyond PEP 788); made even if there is no such
    /// interpreter (using it then fails with `NoSuchInterpreter`).
    ///
    /// ```
    /// use tstate_core::{Error, InterpreterId};
    /// use tstate_ffi_guard::rust::View;
    /// let v = View::for_interpreter(InterpreterId::from_raw(7)).unwrap();
    /// assert_eq!(v.guard().err(), Some(Error::NoSuchInterpreter));
    /// ```
    pub fn for_interpreter(interp: InterpreterId) -> Result<View, Error> {
        taken(tsg_view_from_interpreter(interp.as_raw())).map(|raw| View { raw })
    }

    /// A guard on the viewed interpreter (`tsg_guard_from_view`):
    /// [`Error::Finalizing`], [`Error::NoSuchInterpreter`],
    /// [`Error::NoMemory`].
    ///
    /// ```
    /// use tstate_ffi_guard::rust::View;
    /// let g = View::from_main().unwrap().guard().unwrap(); // the guard outlives the view
    /// g.close().unwrap();
    /// ```
    pub fn guard(&self) -> Result<Guard, Error> {
        taken(tsg_guard_from_view(ptr(self.raw))).map(|raw| Guard { raw })
    }

    /// Attaches through a guard taken from this view and kept until the
    /// token is released (`tsg_ensure_from_view`).
    ///
    /// ```
    /// use tstate_ffi_guard::rust::View;
    /// let v = View::from_main().unwrap();
    /// let t = v.ensure().unwrap();
    /// assert!(t.is_attached());
    /// ```
    pub fn ensure(&self) -> Result<Token<'_>, Error> {
        Token::open(taken(tsg_ensure_from_view(ptr(self.raw))))
    }

    /// Closes the view (what `Drop` does). Cannot fail: a `View` is open.
    ///
    /// ```
    /// tstate_ffi_guard::rust::View::from_main().unwrap().close();
    /// ```
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let raw = self.raw;
        // Never fails: the view is open by construction (only a forged or
        // closed one is refused).
        let _ = c_abi::boundary(|| close_view(raw).map(|()| 0));
    }
}

/// A guard (PEP 788's `PyInterpreterGuard`): its interpreter cannot
/// finalize until it is closed (on drop, or [`close`](Self::close)).
///
/// ```compile_fail,E0505
/// use tstate_ffi_guard::rust::View;
/// let g = View::from_main().unwrap().guard().unwrap();
/// let t = g.ensure().unwrap();
/// g.close().unwrap(); // error[E0505]: cannot move out of `g` because it is borrowed
/// drop(t);
/// ```
#[derive(Debug)]
pub struct Guard {
    raw: u64,
}

impl Guard {
    /// A guard on the interpreter the calling thread is attached to
    /// (`tsg_guard_from_current`): [`Error::NotAttached`],
    /// [`Error::Finalizing`], [`Error::NoMemory`].
    ///
    /// ```
    /// use tstate_core::LockMode;
    /// use tstate_ffi_guard::rust::{RUNTIME, Guard, attach};
    /// let sub = RUNTIME.create_interpreter(LockMode::SharedWithMain).unwrap();
    /// let g = attach(sub, |_| Guard::from_current()).unwrap().unwrap();
    /// assert_eq!(RUNTIME.holders(sub).unwrap().len(), 1); // the guard
    /// drop(g);
    /// RUNTIME.finalize(sub, None).unwrap();
    /// ```
    pub fn from_current() -> Result<Guard, Error> {
        taken(tsg_guard_from_current()).map(|raw| Guard { raw })
    }

    /// Attaches the calling thread to the guard's interpreter
    /// (`tsg_ensure`); never refused for finalizing (the guard rules it
    /// out). The token borrows the guard.
    ///
    /// ```
    /// use tstate_ffi_guard::rust::View;
    /// let g = View::from_main().unwrap().guard().unwrap();
    /// let t = g.ensure().unwrap();
    /// t.work().unwrap();
    /// ```
    pub fn ensure(&self) -> Result<Token<'_>, Error> {
        Token::open(taken(tsg_ensure(ptr(self.raw))))
    }

    /// Closes the guard (what `Drop` does, with the answer; an open `Guard`
    /// is always closed: `Ok`).
    ///
    /// ```
    /// tstate_ffi_guard::rust::View::from_main().unwrap().guard().unwrap().close().unwrap();
    /// ```
    pub fn close(self) -> Result<(), Error> {
        let raw = std::mem::ManuallyDrop::new(self).raw;
        check(c_abi::boundary(|| close_guard(raw).map(|()| 0))).map(drop)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let raw = self.raw;
        // Never fails: the guard is open by construction.
        let _ = c_abi::boundary(|| close_guard(raw).map(|()| 0));
    }
}

/// A span of the guard design (PEP 788's `PyThreadStateToken`); borrows the
/// guard or view it came from (`'g`), or the outer token. Released on drop.
/// Dereferences to its [`Attached`] token. Not `Send`.
///
/// ```compile_fail,E0505
/// use tstate_ffi_guard::rust::View;
/// let g = View::from_main().unwrap().guard().unwrap();
/// let mut outer = g.ensure().unwrap();
/// let inner = outer.ensure(&g).unwrap();
/// drop(outer); // error[E0505]: cannot move out of `outer` because it is borrowed
/// drop(inner);
/// ```
#[must_use = "dropping the token releases the span at once"]
pub struct Token<'g> {
    raw: u64,
    token: Attached<'static>,
    _borrow: PhantomData<&'g ()>,
}

impl std::fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("interpreter", &self.token.interpreter())
            .finish()
    }
}

impl Token<'_> {
    fn open<'g>(raw: Result<u64, Error>) -> Result<Token<'g>, Error> {
        let raw = raw?;
        match RUNTIME.current_interpreter() {
            Ok(interp) => Ok(Token {
                raw,
                token: Attached::for_open_span(RUNTIME, interp),
                _borrow: PhantomData,
            }),
            Err(e) => {
                let _ = release(raw);
                Err(e)
            }
        }
    }

    /// Attaches through `guard` nested in this span; the result borrows
    /// this token, so this one cannot be released first.
    ///
    /// ```
    /// use tstate_core::LockMode;
    /// use tstate_ffi_guard::rust::{RUNTIME, View};
    /// let main = View::from_main().unwrap().guard().unwrap();
    /// let sub_id = RUNTIME.create_interpreter(LockMode::SharedWithMain).unwrap();
    /// let sub = View::for_interpreter(sub_id).unwrap().guard().unwrap();
    /// let mut outer = main.ensure().unwrap();
    /// let inner = outer.ensure(&sub).unwrap();
    /// assert_eq!(inner.interpreter(), sub_id);
    /// drop(inner);
    /// assert!(outer.is_attached());
    /// # drop(outer); drop(sub); RUNTIME.finalize(sub_id, None).unwrap();
    /// ```
    pub fn ensure<'b>(&'b mut self, guard: &'b Guard) -> Result<Token<'b>, Error> {
        guard.ensure()
    }

    /// Releases the span (`tsg_release`), restoring what was attached before
    /// it; what `Drop` does, with the answer. `Err(OutOfOrder)`: an
    /// unconnected token opened later is still open — deferred until it is
    /// released.
    ///
    /// ```
    /// use tstate_ffi_guard::rust::View;
    /// let v = View::from_main().unwrap();
    /// v.ensure().unwrap().release().unwrap();
    /// ```
    pub fn release(self) -> Result<(), Error> {
        end(std::mem::ManuallyDrop::new(self).raw)
    }
}

tstate_core::span_guard!(
    Token,
    token,
    raw,
    end,
    r#"```
use tstate_ffi_guard::rust::{RUNTIME, View};
let g = View::from_main().unwrap().guard().unwrap();
let mut t = g.ensure().unwrap();
let s = t.save().unwrap();
assert_eq!(RUNTIME.current(), None);
s.restore().unwrap();
assert!(t.is_attached());
```"#
);
