//! A Rust layer over this facade's C functions (so Rust users exercise the
//! same ABI path as C users).
//!
//! ```
//! use tstate_ffi_ensure::rust;
//! let main = rust::main_interpreter().unwrap();
//! {
//!     let _gil = rust::ensure(main).unwrap();      // like `with gil:`
//!     assert!(rust::is_attached(main));
//!     rust::work(main).unwrap();
//!     let _inner = rust::ensure(main).unwrap();    // nested: counted
//! } // both released, innermost first
//! assert!(!rust::is_attached(main));
//! ```

use crate::*;
use std::marker::PhantomData;
pub use tstate_core::Error;

use tstate_core::c_abi::check;

/// An open ensure span; dropping it calls `tse_release`. Not `Send`: the span
/// belongs to the thread that opened it. Guards must be dropped innermost
/// first (Rust's scoping does that).
#[must_use = "dropping the guard releases at once"]
pub struct Ensured {
    _not_send: PhantomData<*const ()>,
}

impl Drop for Ensured {
    fn drop(&mut self) {
        tse_release();
    }
}

/// Ensures the calling thread is attached to `interp` (see `tse_ensure`).
pub fn ensure(interp: u64) -> Result<Ensured, Error> {
    // SAFETY: NULL `err` is allowed.
    check(unsafe { tse_ensure_ex(interp, std::ptr::null_mut()) })?;
    Ok(Ensured {
        _not_send: PhantomData,
    })
}

/// The main interpreter's id.
pub fn main_interpreter() -> Result<u64, Error> {
    let mut id = 0;
    // SAFETY: `id` is a valid out-pointer.
    check(unsafe { tse_main_interpreter(&mut id) })?;
    Ok(id)
}

/// Whether the calling thread is attached to `interp`.
pub fn is_attached(interp: u64) -> bool {
    tse_is_attached(interp) == 1
}

/// "Python work" on `interp` (must be attached to it); returns the counter.
pub fn work(interp: u64) -> Result<u64, Error> {
    let mut v = 0;
    // SAFETY: `v` is a valid out-pointer.
    check(unsafe { tse_work(interp, &mut v) })?;
    Ok(v)
}
