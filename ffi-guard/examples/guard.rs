//! The guard design (PEP 788) from Rust: a view names an interpreter
//! without holding it, a guard holds it open (and may be shared with other
//! threads), a token is a span borrowing its guard.
//! `cargo run -p tstate-ffi-guard --example guard`
use std::time::Duration;
use tstate_ffi_guard::rust::{Error, LockMode, RUNTIME, View};

/// The program (`pub` so that `tests/rust_api.rs` runs it too).
pub fn main() -> Result<(), Error> {
    RUNTIME.initialize()?;
    let sub = RUNTIME.create_interpreter(LockMode::SharedWithMain)?;
    let view = View::for_interpreter(sub)?; // weak: never blocks finalization
    let guard = view.guard()?; // holds `sub` open until dropped
    let work = std::thread::scope(|s| {
        let worker = s.spawn(|| guard.ensure()?.work()); // a token per span
        worker.join().unwrap()
    })?;
    let held = RUNTIME
        .finalize(sub, Some(Duration::from_millis(10)))
        .unwrap_err();
    println!("guard: work {work}; finalize while guarded: {held}");
    drop(guard); // now `sub` can finalize
    RUNTIME.finalize(sub, None)?;
    assert_eq!(view.ensure().err(), Some(Error::NoSuchInterpreter));
    Ok(())
}
