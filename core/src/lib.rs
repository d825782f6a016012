//! # tstate-core — a runtime model of CPython's thread states
//!
//! The semantics every tstate facade shares, held to the project's
//! behavioural contract (`../shared/design/CONTRACT.md`): interpreters
//! addressed by generational `u64` ids, per-interpreter locks (own, shared
//! with main, none), thread states bound to OS threads, attach/detach, and a
//! finalization that refuses new work atomically and waits for open spans.
//!
//! The facades (`tstate-ffi-ensure`, `tstate-ffi-handle`,
//! `tstate-ffi-activate`) only translate calls and errors; every rule is
//! here, once. See `docs/architecture.md` for the objects, their states and
//! the gate protocol.
//!
//! ```
//! use tstate_core::{Runtime, LockMode};
//! let rt = Runtime::new();
//! let main = rt.main_interpreter().unwrap();
//! let sub = rt.create_interpreter(LockMode::Own).unwrap();
//! {
//!     let _outer = rt.ensure_guard(main).unwrap();
//!     let _inner = rt.ensure_guard(sub).unwrap(); // detaches main
//!     assert!(rt.is_attached(sub) && !rt.is_attached(main));
//! } // inner then outer released: main re-attached, then nothing
//! assert_eq!(rt.current(), None);
//! ```

#[cfg(not(loom))]
pub mod c_abi;
mod error;
mod guard;
mod interp;
mod runtime;
mod sync;
mod thread;
mod tstate;
mod types;

pub use error::{Error, Result};
pub use guard::{EnsureGuard, SaveGuard};
pub use runtime::{FinalizeError, Runtime};
pub use types::{
    Diagnostics, Holder, InterpreterId, InterpreterState, LockMode, ReusePolicy, RuntimeOptions,
    SpanKind, ThreadStateId, Ticket,
};

// Compile-time facts the C ABI and the design rely on.
static_assertions::assert_eq_size!(InterpreterId, u64);
static_assertions::assert_eq_size!(ThreadStateId, u64);
static_assertions::assert_eq_size!(Ticket, u32);
static_assertions::assert_eq_size!(Error, i32);
static_assertions::assert_impl_all!(Runtime: Send, Sync);
static_assertions::assert_impl_all!(InterpreterId: Send, Sync, Copy);
static_assertions::assert_not_impl_any!(EnsureGuard<'static>: Send, Sync);
static_assertions::assert_not_impl_any!(SaveGuard<'static>: Send, Sync);

#[cfg(all(test, loom))]
mod loom_models;
