//! The explicit-lifecycle design from Rust: a pool thread owns one thread
//! state and activates it per task; an activation borrows its thread state,
//! so it cannot be deleted while active.
//! `cargo run -p tstate-ffi-activate --example activate`
use tstate_ffi_activate::rust::{Error, RUNTIME, ThreadState};

/// The program (`pub` so that `tests/rust_api.rs` runs it too).
pub fn main() -> Result<(), Error> {
    RUNTIME.initialize()?;
    let main = RUNTIME.main_interpreter()?;
    let pool = std::thread::spawn(move || -> Result<usize, Error> {
        let mut ts = ThreadState::new(main)?; // one per pool thread
        let mut tasks = 0;
        for _task in 0..3 {
            let active = ts.activate()?; // attached: a span holding `main` open
            active.work()?; // the task's Python calls
            active.deactivate()?; // or let it drop
            tasks += 1;
        }
        ts.delete()?; // or let it drop
        Ok(tasks)
    });
    println!(
        "activate: {} tasks on one thread state",
        pool.join().unwrap()?
    );
    Ok(())
}
