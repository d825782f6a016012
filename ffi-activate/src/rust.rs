//! The safe Rust API of the explicit-lifecycle design, over this facade's
//! C functions (the same ABI path and the same runtime as C callers).
//!
//! [`ThreadState`] owns a thread state (`tsa_new` … `tsa_delete`); its
//! [`activate`](ThreadState::activate) borrows it mutably and returns an
//! [`Activation`] (`tsa_activate` … `tsa_deactivate`), so deleting a thread
//! state while it is active, using it after delete, activating it twice and
//! sending it to another thread do not compile. An activation dereferences
//! to its [`Attached`] token (`work`, `detach`, `save`). The closure
//! [`attach`] does new, activate, deactivate and delete around a closure.
//!
//! Nothing panics in `Drop`. Dropping an [`Activation`] deactivates; if an
//! unconnected activation opened later is still active, the design refuses
//! (`OutOfOrder`) and the deactivate is deferred until it ends. Dropping a
//! [`ThreadState`] deletes; if it is still active — its activation was
//! leaked with `mem::forget`, or is deferred — the policy is: deactivate it
//! first when it is the thread's innermost span, then delete; otherwise
//! defer both until it is (never a silently ignored `BUSY`). A thread that
//! exits first has it freed by the core's thread-exit cleanup.
//!
//! ```
//! use tstate_ffi_activate::rust::{RUNTIME, ThreadState};
//! let main = RUNTIME.main_interpreter().unwrap();
//! let mut ts = ThreadState::new(main).unwrap();
//! let id = ts.id();
//! {
//!     let a = ts.activate().unwrap();
//!     assert_eq!(RUNTIME.current(), Some((id, main)));
//!     a.work().unwrap();
//! } // deactivated
//! assert_eq!(RUNTIME.current(), None);
//! ts.delete().unwrap();
//! ```

use crate::*;
use std::marker::PhantomData;
pub use tstate_core::rust_api::{Attached, BackendInfo, FacadeRuntime, Saved};
pub use tstate_core::{
    Diagnostics, Error, FinalizeError, Holder, InterpreterId, InterpreterState, LockMode,
    ThreadStateId,
};

use tstate_core::c_abi::check;
use tstate_core::rust_api::{finish, scoped};

/// This facade's runtime. See [`FacadeRuntime`].
///
/// ```
/// assert!(tstate_ffi_activate::rust::RUNTIME.main_interpreter().is_ok());
/// ```
pub const RUNTIME: FacadeRuntime = FacadeRuntime::new(&SHARED_ABI);

type Raw = *mut crate::ThreadState;

fn new_raw(interp: InterpreterId) -> Result<Raw, Error> {
    let mut ts = std::ptr::null_mut();
    // SAFETY: `ts` is a valid out-pointer.
    check(unsafe { tsa_new(interp.as_raw(), &mut ts) })?;
    Ok(ts)
}

fn activate_raw(ts: Raw) -> Result<(), Error> {
    check(tsa_activate(ts)).map(drop)
}

fn deactivate_raw(ts: Raw) -> Result<(), Error> {
    check(tsa_deactivate(ts)).map(drop)
}

/// Deletes `ts`; if it is still active (a leaked or deferred activation),
/// deactivates it first when that is allowed (it is the innermost span).
fn delete_raw(ts: Raw) -> Result<(), Error> {
    match check(tsa_delete(ts)) {
        Err(Error::Busy) => {
            deactivate_raw(ts)?;
            check(tsa_delete(ts)).map(drop)
        }
        r => r.map(drop),
    }
}

/// Runs `f` attached to `interp` through a thread state of its own (new,
/// activate, deactivate, delete). Refused, `f` not run:
/// [`Error::Finalizing`], [`Error::NoSuchInterpreter`], [`Error::NoMemory`].
///
/// ```
/// use tstate_ffi_activate::rust::{RUNTIME, attach};
/// let main = RUNTIME.main_interpreter().unwrap();
/// assert!(attach(main, |t| t.work().unwrap()).unwrap() >= 1);
/// assert_eq!(RUNTIME.current(), None);
/// ```
pub fn attach<R>(
    interp: InterpreterId,
    f: impl for<'a> FnOnce(&Attached<'a>) -> R,
) -> Result<R, Error> {
    let open = || {
        let ts = new_raw(interp)?;
        match activate_raw(ts) {
            Ok(()) => Ok(ts),
            Err(e) => {
                let _ = delete_raw(ts);
                Err(e)
            }
        }
    };
    scoped(RUNTIME, interp, open, delete_raw, f)
}

/// An owned thread state of one interpreter, bound to the thread that
/// created it (not `Send`). Deleted on drop (see the [module](self) docs
/// for a thread state still active then).
///
/// ```compile_fail,E0505
/// use tstate_ffi_activate::rust::{RUNTIME, ThreadState};
/// let main = RUNTIME.main_interpreter().unwrap();
/// let mut ts = ThreadState::new(main).unwrap();
/// let a = ts.activate().unwrap();
/// drop(ts); // error[E0505]: cannot move out of `ts` because it is borrowed
/// drop(a);
/// ```
pub struct ThreadState {
    ts: Raw,
    interp: InterpreterId,
}

impl std::fmt::Debug for ThreadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadState")
            .field("id", &self.id())
            .field("interpreter", &self.interp)
            .finish()
    }
}

impl ThreadState {
    /// A detached thread state of `interp` on the calling thread
    /// (`tsa_new`): [`Error::Finalizing`], [`Error::NoSuchInterpreter`],
    /// [`Error::NoMemory`].
    ///
    /// ```
    /// use tstate_ffi_activate::rust::{RUNTIME, ThreadState};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// let ts = ThreadState::new(main).unwrap();
    /// assert_eq!(ts.interpreter(), main);
    /// ```
    pub fn new(interp: InterpreterId) -> Result<Self, Error> {
        Ok(Self {
            ts: new_raw(interp)?,
            interp,
        })
    }

    /// Its interpreter.
    ///
    /// ```
    /// # use tstate_ffi_activate::rust::{RUNTIME, ThreadState};
    /// # let main = RUNTIME.main_interpreter().unwrap();
    /// assert_eq!(ThreadState::new(main).unwrap().interpreter(), main);
    /// ```
    pub fn interpreter(&self) -> InterpreterId {
        self.interp
    }

    /// Its id, as [`FacadeRuntime::current`] names the attached one.
    ///
    /// ```
    /// # use tstate_ffi_activate::rust::{RUNTIME, ThreadState};
    /// # let main = RUNTIME.main_interpreter().unwrap();
    /// let mut ts = ThreadState::new(main).unwrap();
    /// let id = ts.id();
    /// let _a = ts.activate().unwrap();
    /// assert_eq!(RUNTIME.current(), Some((id, main)));
    /// ```
    pub fn id(&self) -> ThreadStateId {
        ThreadStateId::from_raw(self.ts as usize as u64)
    }

    /// The C handle (for passing to C code of this facade; it stays owned
    /// by this value).
    ///
    /// ```
    /// # use tstate_ffi_activate::rust::{RUNTIME, ThreadState};
    /// # let main = RUNTIME.main_interpreter().unwrap();
    /// assert!(!ThreadState::new(main).unwrap().as_ptr().is_null());
    /// ```
    pub fn as_ptr(&self) -> *mut crate::ThreadState {
        self.ts
    }

    /// Attaches it in a new span (`tsa_activate`); the activation borrows
    /// it, so it cannot be deleted, moved or activated again meanwhile.
    /// Refused: [`Error::Finalizing`] (this thread's first span on a
    /// finalizing interpreter), [`Error::NoSuchInterpreter`] (finalized:
    /// delete it), [`Error::NoMemory`].
    ///
    /// ```
    /// # use tstate_ffi_activate::rust::{RUNTIME, ThreadState};
    /// # let main = RUNTIME.main_interpreter().unwrap();
    /// let mut ts = ThreadState::new(main).unwrap();
    /// let a = ts.activate().unwrap();
    /// assert!(a.is_attached());
    /// a.deactivate().unwrap();
    /// ```
    pub fn activate(&mut self) -> Result<Activation<'_>, Error> {
        activate_raw(self.ts)?;
        Ok(Activation::of(self))
    }

    /// Deletes it (`tsa_delete`); what `Drop` does, with the answer. Still
    /// active (only after `mem::forget` of its activation, or a deferred
    /// one): deactivated first when it is the innermost span, else
    /// `Err(Busy)` and deferred until it is.
    ///
    /// ```
    /// # use tstate_ffi_activate::rust::{RUNTIME, ThreadState};
    /// # let main = RUNTIME.main_interpreter().unwrap();
    /// let mut ts = ThreadState::new(main).unwrap();
    /// std::mem::forget(ts.activate().unwrap()); // leaked: still active
    /// ts.delete().unwrap(); // deactivated, then deleted
    /// assert_eq!(RUNTIME.current(), None);
    /// ```
    pub fn delete(self) -> Result<(), Error> {
        end_delete(std::mem::ManuallyDrop::new(self).ts)
    }
}

fn end_delete(ts: Raw) -> Result<(), Error> {
    finish(delete_raw(ts), move || delete_raw(ts))
}

fn end_deactivate(ts: Raw) -> Result<(), Error> {
    finish(deactivate_raw(ts), move || deactivate_raw(ts))
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        let _ = end_delete(self.ts);
    }
}

/// An active thread state (a span); borrows its [`ThreadState`] (and, when
/// nested, the outer activation). Dereferences to its [`Attached`] token.
///
/// ```compile_fail,E0277
/// use tstate_ffi_activate::rust::{RUNTIME, ThreadState};
/// let main = RUNTIME.main_interpreter().unwrap();
/// let mut ts = ThreadState::new(main).unwrap();
/// let a = ts.activate().unwrap();
/// std::thread::scope(|s| { s.spawn(move || drop(a)); }); // cannot be sent between threads safely
/// ```
#[must_use = "dropping the activation deactivates at once"]
pub struct Activation<'ts> {
    ts: Raw,
    token: Attached<'static>,
    _borrow: PhantomData<&'ts mut ThreadState>,
}

impl std::fmt::Debug for Activation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activation")
            .field("interpreter", &self.token.interpreter())
            .finish()
    }
}

impl<'ts> Activation<'ts> {
    fn of(ts: &'ts mut ThreadState) -> Self {
        Self {
            ts: ts.ts,
            token: Attached::for_open_span(RUNTIME, ts.interp),
            _borrow: PhantomData,
        }
    }

    /// Activates `inner` nested in this activation; the result borrows
    /// both, so this one cannot be deactivated first.
    ///
    /// ```
    /// use tstate_core::LockMode;
    /// use tstate_ffi_activate::rust::{RUNTIME, ThreadState};
    /// let main = RUNTIME.main_interpreter().unwrap();
    /// let sub = RUNTIME.create_interpreter(LockMode::SharedWithMain).unwrap();
    /// let (mut a, mut b) = (ThreadState::new(main).unwrap(), ThreadState::new(sub).unwrap());
    /// let mut outer = a.activate().unwrap();
    /// let inner = outer.activate(&mut b).unwrap();
    /// assert!(inner.is_attached() && !RUNTIME.is_attached(main));
    /// drop(inner);
    /// assert!(outer.is_attached());
    /// # drop(outer); drop(b); RUNTIME.finalize(sub, None).unwrap();
    /// ```
    pub fn activate<'b>(&'b mut self, inner: &'b mut ThreadState) -> Result<Activation<'b>, Error> {
        inner.activate()
    }

    /// Deactivates (`tsa_deactivate`), re-attaching what was attached
    /// before; what `Drop` does, with the answer. `Err(OutOfOrder)`: an
    /// unconnected activation opened later is still active — deferred
    /// until it ends.
    ///
    /// ```
    /// # use tstate_ffi_activate::rust::{RUNTIME, ThreadState};
    /// # let main = RUNTIME.main_interpreter().unwrap();
    /// let mut ts = ThreadState::new(main).unwrap();
    /// ts.activate().unwrap().deactivate().unwrap();
    /// assert_eq!(RUNTIME.current(), None);
    /// ```
    pub fn deactivate(self) -> Result<(), Error> {
        end_deactivate(std::mem::ManuallyDrop::new(self).ts)
    }
}

tstate_core::span_guard!(
    Activation,
    token,
    ts,
    end_deactivate,
    r#"```
use tstate_ffi_activate::rust::{RUNTIME, ThreadState};
let main = RUNTIME.main_interpreter().unwrap();
let mut ts = ThreadState::new(main).unwrap();
let mut a = ts.activate().unwrap();
drop(a.save().unwrap()); // detached, then restored
assert!(a.is_attached());
```"#
);
