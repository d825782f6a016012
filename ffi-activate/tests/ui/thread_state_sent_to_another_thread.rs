// A thread state is bound to the thread that created it.
use tstate_ffi_activate::rust::{RUNTIME, ThreadState};

fn main() {
    let main = RUNTIME.main_interpreter().unwrap();
    let ts = ThreadState::new(main).unwrap();
    std::thread::spawn(move || drop(ts)).join().unwrap();
}
