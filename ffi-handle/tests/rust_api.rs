//! Run-time tests of the int-handle design's Rust API (issue 15); the
//! misuses its types forbid are the compile-fail cases (`compile_fail.rs`).

use tstate_core::rust_api::deferred;
use tstate_ffi_handle::rust::{Error, LockMode, RUNTIME, attach, ensure};

#[path = "../examples/handle.rs"]
mod example;

#[test]
fn the_example_runs() {
    example::main().unwrap();
}

/// Issue 15: an out-of-order drop panicked inside `Drop` (debug) or leaked
/// the span (release). Two unconnected guards dropped in the wrong order
/// now neither panic nor leak: the outer release is deferred, and happens
/// when the inner guard is released.
#[test]
fn unconnected_guards_dropped_out_of_order_are_released_not_leaked() {
    let first = RUNTIME
        .create_interpreter(LockMode::SharedWithMain)
        .unwrap();
    let sub = RUNTIME
        .create_interpreter(LockMode::SharedWithMain)
        .unwrap();
    let a = ensure(first).unwrap();
    let b = ensure(sub).unwrap();
    drop(a); // refused by the design (OutOfOrder): deferred, no panic
    assert_eq!(deferred(), 1);
    assert!(b.is_attached() && !RUNTIME.is_attached(first));
    assert_eq!(RUNTIME.holders(first).unwrap().len(), 1); // a's span still open
    drop(b); // releases b, then a
    assert_eq!(deferred(), 0);
    assert_eq!(RUNTIME.current(), None);
    assert!(RUNTIME.holders(first).unwrap().is_empty());
    assert!(RUNTIME.holders(sub).unwrap().is_empty());
    RUNTIME.finalize(sub, None).unwrap();
    RUNTIME.finalize(first, None).unwrap();
}

#[test]
fn release_reports_what_drop_does() {
    let main = RUNTIME.main_interpreter().unwrap();
    let a = ensure(main).unwrap();
    let b = ensure(main).unwrap();
    assert_eq!(a.release(), Err(Error::OutOfOrder));
    assert_eq!(b.release(), Ok(()));
    assert_eq!((deferred(), RUNTIME.current()), (0, None));
}

#[test]
fn a_save_dropped_while_an_unconnected_span_is_open_restores_later() {
    let main = RUNTIME.main_interpreter().unwrap();
    let mut a = ensure(main).unwrap();
    let s = a.save().unwrap();
    let b = ensure(main).unwrap(); // re-attaches the saved thread state
    drop(s); // restore refused while b is open: deferred
    assert_eq!(deferred(), 1);
    drop(b); // b released (detached again), then the save restored
    assert_eq!(deferred(), 0);
    assert!(a.is_attached());
    drop(a);
    assert_eq!(RUNTIME.current(), None);
}

/// A guard opened inside `attach` and returned from it is an unconnected
/// inner span: `attach`'s own release is deferred until it is dropped.
#[test]
fn a_guard_returned_from_attach_defers_the_attach_release() {
    let main = RUNTIME.main_interpreter().unwrap();
    let g = attach(main, |_| ensure(main).unwrap()).unwrap();
    assert_eq!(deferred(), 1, "{:?}", RUNTIME.current());
    assert!(g.is_attached());
    drop(g);
    assert_eq!((deferred(), RUNTIME.current()), (0, None));
}

#[test]
fn attach_is_refused_with_the_reason() {
    let bad = tstate_ffi_handle::rust::InterpreterId::from_raw(3);
    assert_eq!(attach(bad, |_| ()), Err(Error::NoSuchInterpreter));
    assert_eq!(ensure(bad).err(), Some(Error::NoSuchInterpreter));
}
