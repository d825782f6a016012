//! A callback from a thread Python did not create, with the thread-stored
//! design: attach, work, `with nogil:` inside, and a typed refusal once the
//! interpreter is finalizing or gone — instead of a crash or a hang.
//! `cargo run -p tstate-ffi-ensure --example ensure`
use tstate_ffi_ensure::rust::{Error, InterpreterId, LockMode, RUNTIME, attach};

fn on_event(interp: InterpreterId) -> Result<u64, Error> {
    attach(interp, |py| {
        let n = py.work()?; // your Python calls go here
        py.detach(std::thread::yield_now)?; // `with nogil:` (cannot touch `py`)
        Ok(n)
    })? // Err: Finalizing, NoSuchInterpreter or NoMemory; the closure did not run
}

/// The program (`pub` so that `tests/rust_api.rs` runs it too).
pub fn main() {
    RUNTIME.initialize().unwrap();
    let interp = RUNTIME
        .create_interpreter(LockMode::SharedWithMain)
        .unwrap();
    let before = std::thread::spawn(move || on_event(interp)).join().unwrap();
    RUNTIME.finalize(interp, None).unwrap(); // the interpreter shuts down
    let after = std::thread::spawn(move || on_event(interp)).join().unwrap();
    println!("before shutdown: {before:?}, after: {after:?}");
    assert!(before.is_ok());
    assert_eq!(after, Err(Error::NoSuchInterpreter));
}
