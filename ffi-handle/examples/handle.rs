//! The int-handle design from Rust: a guard owns its span's handle, a
//! nested span borrows its outer guard (so it cannot outlive it), and a
//! save borrows its span. `cargo run -p tstate-ffi-handle --example handle`
use std::time::Duration;
use tstate_ffi_handle::rust::{Error, LockMode, RUNTIME, ensure};

/// The program (`pub` so that `tests/rust_api.rs` runs it too).
pub fn main() -> Result<(), Error> {
    RUNTIME.initialize()?;
    let main = RUNTIME.main_interpreter()?;
    let sub = RUNTIME.create_interpreter(LockMode::SharedWithMain)?;
    let mut outer = ensure(main)?; // like `with gil:`
    outer.work()?;
    {
        let inner = outer.ensure(sub)?; // borrows `outer`: released first
        inner.work()?;
        assert!(!RUNTIME.is_attached(main)); // main is detached meanwhile
        inner.release()?; // or let it drop
    }
    {
        let _nogil = outer.save()?; // Py_BEGIN_ALLOW_THREADS to the end of the block
        assert!(!RUNTIME.is_attached(main));
    }
    assert!(outer.is_attached());
    outer.release()?;
    RUNTIME.finalize(sub, Some(Duration::from_secs(5)))?;
    println!("handle: nested, saved and released in order");
    Ok(())
}
