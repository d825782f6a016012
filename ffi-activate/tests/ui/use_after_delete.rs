// `delete` consumes the thread state: it cannot be used afterwards.
use tstate_ffi_activate::rust::{RUNTIME, ThreadState};

fn main() {
    let main = RUNTIME.main_interpreter().unwrap();
    let mut ts = ThreadState::new(main).unwrap();
    ts.delete().unwrap();
    let _ = ts.activate();
}
