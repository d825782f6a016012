// An attachment belongs to its thread: the token cannot be used on another.
use tstate_ffi_ensure::rust::{RUNTIME, attach};

fn main() {
    let main = RUNTIME.main_interpreter().unwrap();
    attach(main, |t| {
        std::thread::scope(|s| {
            s.spawn(|| t.work());
        })
    })
    .unwrap();
}
