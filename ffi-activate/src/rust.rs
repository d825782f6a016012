//! A Rust layer over this facade's C functions.
//!
//! ```
//! use tstate_ffi_activate::rust::{self, ThreadState};
//! let main = rust::main_interpreter().unwrap();
//! let ts = ThreadState::new(main).unwrap();    // owned: deleted on drop
//! {
//!     let _active = ts.activate().unwrap();    // deactivated on drop
//!     assert_eq!(rust::current(), Some(ts.as_ptr()));
//!     assert_eq!(ts.activate().err(), Some(rust::Error::Busy));
//! }
//! assert_eq!(rust::current(), None);
//! ```

use crate::*;
use std::marker::PhantomData;
pub use tstate_core::Error;

use tstate_core::c_abi::check;

/// An owned thread state; dropping it calls `tsa_delete`. Not `Send`: it is
/// bound to the thread that created it.
pub struct ThreadState {
    ts: *mut crate::ThreadState,
    _not_send: PhantomData<*const ()>,
}

impl ThreadState {
    /// `tsa_new` on the calling thread.
    pub fn new(interp: u64) -> Result<Self, Error> {
        let mut ts = std::ptr::null_mut();
        // SAFETY: `ts` is a valid out-pointer.
        check(unsafe { tsa_new(interp, &mut ts) })?;
        Ok(Self {
            ts,
            _not_send: PhantomData,
        })
    }

    /// The C handle.
    pub fn as_ptr(&self) -> *mut crate::ThreadState {
        self.ts
    }

    /// `tsa_activate`; the returned guard calls `tsa_deactivate` on drop.
    pub fn activate(&self) -> Result<Active<'_>, Error> {
        check(tsa_activate(self.ts))?;
        Ok(Active { ts: self })
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        let r = tsa_delete(self.ts);
        debug_assert_eq!(r, 0, "delete");
    }
}

/// An activation; dropping it deactivates.
#[must_use = "dropping the guard deactivates at once"]
pub struct Active<'a> {
    ts: &'a ThreadState,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let r = tsa_deactivate(self.ts.ts);
        debug_assert_eq!(r, 0, "deactivated out of order");
    }
}

/// The thread state attached on this thread (`tsa_get`), if any.
pub fn current() -> Option<*mut crate::ThreadState> {
    let mut ts = std::ptr::null_mut();
    // SAFETY: `ts` is a valid out-pointer.
    let r = unsafe { tsa_get(&mut ts) };
    (r == 1).then_some(ts)
}

/// The main interpreter's id.
pub fn main_interpreter() -> Result<u64, Error> {
    let mut id = 0;
    // SAFETY: `id` is a valid out-pointer.
    check(unsafe { tsa_main_interpreter(&mut id) })?;
    Ok(id)
}
