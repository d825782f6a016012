// `detach` runs a `Send` closure: it cannot use the token (Python is not
// usable while detached).
use tstate_ffi_ensure::rust::{RUNTIME, attach};

fn main() {
    let main = RUNTIME.main_interpreter().unwrap();
    attach(main, |t| t.detach(|| t.work())).unwrap();
}
