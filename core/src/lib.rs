//! # tstate-core — one machine for attaching native threads to interpreters
//!
//! The semantics every tstate facade shares, held to the project's
//! behavioural contract (`docs/contract.md`): interpreters addressed by
//! generational `u64` ids, per-interpreter locks (own, shared with main,
//! none), thread states bound to OS threads, attach/detach, and a
//! finalization that refuses new work atomically and waits for open spans.
//!
//! One machine — ids, the gate, spans and frames, the per-thread context,
//! nesting and restore, thread-exit cleanup, error codes, holder reports —
//! over two backends ([`Backend`]): the [`Model`] (the reference,
//! loom-checked) and, outside loom, real CPython 3.9–3.13 (`cpython`). The
//! facades (`tstate-ffi-ensure`, `-handle`, `-activate`, `-guard`) only
//! translate calls and errors. See `docs/architecture.md` for the objects,
//! their states and the gate protocol, `docs/cpython-backend.md` for the
//! CPython backend.
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

// Under loom only the model is built; CPython-only helpers go unused.
#![cfg_attr(loom, allow(dead_code))]

mod backend;
#[cfg(not(loom))]
pub mod c_abi;
#[cfg(not(loom))]
pub mod cpython;
mod error;
#[cfg(not(loom))]
mod fork;
mod gate;
mod guard;
mod ids;
mod interp;
mod model;
mod registry;
mod runtime;
#[cfg(not(loom))]
pub mod rust_api;
mod sync;
mod thread;
mod tstate;
mod types;

pub use backend::Backend;
#[cfg(not(loom))]
pub use cpython::CPython;
pub use error::{Error, Result};
pub use guard::{EnsureGuard, SaveGuard};
pub use model::Model;
pub use runtime::{FinalizeError, Runtime};
pub use types::{
    BackendKind, Diagnostics, GuardId, Holder, InterpreterId, InterpreterState, LockMode,
    ReusePolicy, RuntimeOptions, SpanKind, ThreadStateId, Ticket, ViewId,
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
