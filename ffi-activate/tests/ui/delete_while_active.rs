// An activation borrows its thread state: the thread state cannot be
// deleted (dropped) while it is active.
use tstate_ffi_activate::rust::{RUNTIME, ThreadState};

fn main() {
    let main = RUNTIME.main_interpreter().unwrap();
    let mut ts = ThreadState::new(main).unwrap();
    let a = ts.activate().unwrap();
    drop(ts);
    drop(a);
}
