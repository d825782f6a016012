//! A Rust layer over this facade's C functions.
//!
//! ```
//! use tstate_ffi_handle::rust;
//! let main = rust::main_interpreter().unwrap();
//! let outer = rust::ensure(main).unwrap();
//! let inner = rust::ensure(main).unwrap();
//! assert!(inner.handle() >= 0 && inner.handle() != outer.handle());
//! // releasing the outer span first is refused, not undefined:
//! assert_eq!(rust::release_raw(outer.handle()), Err(rust::Error::OutOfOrder));
//! drop(inner);
//! drop(outer);
//! assert!(!rust::is_attached(main));
//! ```

use crate::*;
use std::marker::PhantomData;
pub use tstate_core::Error;

use tstate_core::c_abi::check;

/// An open span and its handle; dropping it calls `tsh_release(handle)`.
/// Not `Send`: the handle belongs to the thread that opened it.
#[must_use = "dropping the guard releases at once"]
pub struct Ensured {
    handle: c_int,
    _not_send: PhantomData<*const ()>,
}

impl Ensured {
    /// The span's handle.
    pub fn handle(&self) -> c_int {
        self.handle
    }
}

impl Drop for Ensured {
    fn drop(&mut self) {
        let r = tsh_release(self.handle);
        debug_assert_eq!(r, 0, "handle released out of order");
    }
}

/// Ensures the calling thread is attached to `interp` (see `tsh_ensure`).
pub fn ensure(interp: u64) -> Result<Ensured, Error> {
    // SAFETY: NULL `errmsg` is allowed.
    let handle = check(unsafe { tsh_ensure(interp, std::ptr::null_mut()) })?;
    Ok(Ensured {
        handle,
        _not_send: PhantomData,
    })
}

/// `tsh_release` on a raw handle (for handles managed by hand).
pub fn release_raw(handle: c_int) -> Result<(), Error> {
    check(tsh_release(handle)).map(|_| ())
}

/// The main interpreter's id.
pub fn main_interpreter() -> Result<u64, Error> {
    let mut id = 0;
    // SAFETY: `id` is a valid out-pointer.
    check(unsafe { tsh_main_interpreter(&mut id) })?;
    Ok(id)
}

/// Whether the calling thread is attached to `interp`.
pub fn is_attached(interp: u64) -> bool {
    tsh_is_attached(interp) == 1
}
