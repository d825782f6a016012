//! Run-time tests of the thread-stored design's Rust API (issue 15); the
//! misuses its types forbid are the compile-fail cases (`compile_fail.rs`).

use tstate_ffi_ensure::rust::{Error, LockMode, RUNTIME, attach};

#[path = "../examples/ensure.rs"]
mod example;

#[test]
fn the_example_runs() {
    example::main();
}

/// Issue 15: with guards `a` (main) then `b` (a subinterpreter), `drop(a)`
/// released `b`'s span. Spans are closures now: the inner one is open, and
/// attached, until its closure returns; then main is attached again.
#[test]
fn nested_attach_keeps_the_inner_span_until_its_closure_returns() {
    let main = RUNTIME.main_interpreter().unwrap();
    let sub = RUNTIME
        .create_interpreter(LockMode::SharedWithMain)
        .unwrap();
    let seen = attach(main, |a| {
        let inner = attach(sub, |b| {
            (
                RUNTIME.is_attached(main),
                RUNTIME.is_attached(sub),
                b.work().is_ok(),
                a.work(),
            )
        })
        .unwrap();
        (inner, RUNTIME.is_attached(main), RUNTIME.is_attached(sub))
    })
    .unwrap();
    assert_eq!(
        seen,
        ((false, true, true, Err(Error::NotAttached)), true, false)
    );
    assert!(!RUNTIME.is_attached(main));
    RUNTIME.finalize(sub, None).unwrap();
}

#[test]
fn a_panic_in_the_closure_still_closes_the_span() {
    let main = RUNTIME.main_interpreter().unwrap();
    let r = std::panic::catch_unwind(|| {
        attach(main, |_| panic!("inside")).unwrap();
    });
    assert!(r.is_err());
    assert!(!RUNTIME.is_attached(main));
    assert_eq!(RUNTIME.current(), None);
}

#[test]
fn refusals_are_typed() {
    let sub = RUNTIME
        .create_interpreter(LockMode::SharedWithMain)
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        attach(sub, |t| {
            t.detach(move || {
                tx.send(()).unwrap();
                go_rx.recv().unwrap();
            })
        })
    });
    rx.recv().unwrap();
    let e = RUNTIME
        .finalize(sub, Some(std::time::Duration::from_millis(20)))
        .unwrap_err();
    assert_eq!(e.error, Error::Timeout);
    assert_eq!(e.holders.len(), 1);
    assert_eq!(attach(sub, |_| ()), Err(Error::Finalizing));
    go_tx.send(()).unwrap();
    holder.join().unwrap().unwrap().unwrap();
    RUNTIME.finalize(sub, None).unwrap();
    assert_eq!(attach(sub, |_| ()), Err(Error::NoSuchInterpreter));
}
