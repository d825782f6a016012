// The token proves attachment only inside the closure: it cannot leave it
// (so no span can be released while a token of it is still usable).
use tstate_ffi_ensure::rust::{RUNTIME, attach};

fn main() {
    let main = RUNTIME.main_interpreter().unwrap();
    let t = attach(main, |t| t).unwrap();
    let _ = t.work();
}
