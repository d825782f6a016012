// A span's handle belongs to the thread that opened it.
use tstate_ffi_handle::rust::{RUNTIME, ensure};

fn main() {
    let main = RUNTIME.main_interpreter().unwrap();
    let g = ensure(main).unwrap();
    std::thread::spawn(move || drop(g)).join().unwrap();
}
