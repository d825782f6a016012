//! Run-time tests of the explicit-lifecycle design's Rust API (issue 15);
//! the misuses its types forbid are the compile-fail cases
//! (`compile_fail.rs`).

use tstate_core::rust_api::deferred;
use tstate_ffi_activate::rust::{Error, LockMode, RUNTIME, ThreadState, attach};
use tstate_ffi_activate::{ERR_INVALID_HANDLE, tsa_activate};

#[path = "../examples/activate.rs"]
mod example;

#[test]
fn the_example_runs() {
    example::main().unwrap();
}

/// Issue 15: `mem::forget` of an activation, then dropping the thread
/// state, ignored `BUSY` and the thread stayed attached. Now the drop
/// deactivates it (it is the innermost span) and deletes it.
#[test]
fn forgotten_activation_then_dropped_thread_state_is_deactivated_and_deleted() {
    let main = RUNTIME.main_interpreter().unwrap();
    let mut ts = ThreadState::new(main).unwrap();
    let raw = ts.as_ptr();
    std::mem::forget(ts.activate().unwrap());
    assert!(RUNTIME.is_attached(main));
    drop(ts);
    assert_eq!(RUNTIME.current(), None);
    assert_eq!(deferred(), 0);
    assert_eq!(tsa_activate(raw), ERR_INVALID_HANDLE); // deleted
}

/// The same with an inner span open: the delete is deferred (not
/// ignored) and happens when the inner span ends.
#[test]
fn forgotten_activation_under_an_inner_span_is_closed_when_it_ends() {
    let main = RUNTIME.main_interpreter().unwrap();
    let sub = RUNTIME
        .create_interpreter(LockMode::SharedWithMain)
        .unwrap();
    let mut outer = ThreadState::new(main).unwrap();
    let raw = outer.as_ptr();
    std::mem::forget(outer.activate().unwrap());
    let mut inner = ThreadState::new(sub).unwrap();
    let active = inner.activate().unwrap();
    assert_eq!(outer.delete(), Err(Error::OutOfOrder)); // deactivate refused: deferred
    assert_eq!(deferred(), 1);
    assert!(active.is_attached());
    drop(active); // inner ends: outer deactivated and deleted
    assert_eq!((deferred(), RUNTIME.current()), (0, None));
    assert_eq!(tsa_activate(raw), ERR_INVALID_HANDLE);
    drop(inner);
    RUNTIME.finalize(sub, None).unwrap();
}

#[test]
fn unconnected_activations_out_of_order_are_deferred() {
    let main = RUNTIME.main_interpreter().unwrap();
    let (mut x, mut y) = (
        ThreadState::new(main).unwrap(),
        ThreadState::new(main).unwrap(),
    );
    let a = x.activate().unwrap();
    let b = y.activate().unwrap();
    assert_eq!(a.deactivate(), Err(Error::OutOfOrder));
    assert_eq!(b.deactivate(), Ok(()));
    assert_eq!((deferred(), RUNTIME.current()), (0, None));
}

#[test]
fn attach_uses_and_frees_a_thread_state_of_its_own() {
    let main = RUNTIME.main_interpreter().unwrap();
    let ts = attach(main, |_| RUNTIME.current().unwrap().0).unwrap();
    assert_eq!(
        tsa_activate(ts.as_raw() as usize as *mut _),
        ERR_INVALID_HANDLE
    );
    let bad = tstate_ffi_activate::rust::InterpreterId::from_raw(5);
    assert_eq!(attach(bad, |_| ()), Err(Error::NoSuchInterpreter));
}
