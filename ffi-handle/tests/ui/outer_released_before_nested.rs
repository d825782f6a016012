// A nested span borrows its outer guard: the outer cannot be released
// (dropped) first.
use tstate_ffi_handle::rust::{LockMode, RUNTIME, ensure};

fn main() {
    let main = RUNTIME.main_interpreter().unwrap();
    let sub = RUNTIME.create_interpreter(LockMode::SharedWithMain).unwrap();
    let mut a = ensure(main).unwrap();
    let b = a.ensure(sub).unwrap();
    drop(a);
    drop(b);
}
