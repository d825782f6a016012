//! Run-time tests of the guard design's Rust API (issue 15); the misuses
//! its types forbid are the compile-fail cases (`compile_fail.rs`).

use tstate_core::rust_api::deferred;
use tstate_ffi_guard::rust::{Error, Guard, LockMode, RUNTIME, Token, View, attach};

#[path = "../examples/guard.rs"]
mod example;

static_assertions::assert_impl_all!(Guard: Send, Sync);
static_assertions::assert_impl_all!(View: Send, Sync);
static_assertions::assert_not_impl_any!(Token<'static>: Send, Sync);

#[test]
fn the_example_runs() {
    example::main().unwrap();
}

#[test]
fn unconnected_tokens_out_of_order_are_released_in_order() {
    let main = RUNTIME.main_interpreter().unwrap();
    let sub = RUNTIME
        .create_interpreter(LockMode::SharedWithMain)
        .unwrap();
    let (gm, gs) = (
        View::from_main().unwrap().guard().unwrap(),
        View::for_interpreter(sub).unwrap().guard().unwrap(),
    );
    let a = gm.ensure().unwrap();
    let b = gs.ensure().unwrap();
    assert_eq!(a.release(), Err(Error::OutOfOrder)); // deferred, no fatal error
    assert!(b.is_attached() && !RUNTIME.is_attached(main));
    drop(b);
    assert_eq!((deferred(), RUNTIME.current()), (0, None));
    drop((gm, gs));
    RUNTIME.finalize(sub, None).unwrap();
}

#[test]
fn a_guard_blocks_finalization_and_refusals_are_typed() {
    let sub = RUNTIME
        .create_interpreter(LockMode::SharedWithMain)
        .unwrap();
    let view = View::for_interpreter(sub).unwrap();
    let guard = view.guard().unwrap();
    let e = RUNTIME
        .finalize(sub, Some(std::time::Duration::from_millis(10)))
        .unwrap_err();
    assert_eq!((e.error, e.holders.len()), (Error::Timeout, 1));
    assert_eq!(view.guard().err(), Some(Error::Finalizing));
    assert_eq!(attach(sub, |_| ()), Err(Error::Finalizing));
    guard.ensure().unwrap().work().unwrap(); // the guard rules refusal out
    guard.close().unwrap();
    RUNTIME.finalize(sub, None).unwrap();
    assert_eq!(view.ensure().err(), Some(Error::NoSuchInterpreter));
}
