// A thread state is active at most once at a time.
use tstate_ffi_activate::rust::{RUNTIME, ThreadState};

fn main() {
    let main = RUNTIME.main_interpreter().unwrap();
    let mut ts = ThreadState::new(main).unwrap();
    let a = ts.activate().unwrap();
    let b = ts.activate().unwrap();
    drop((a, b));
}
