// A save borrows its span's guard: the span cannot be released while the
// save is open.
use tstate_ffi_handle::rust::{RUNTIME, ensure};

fn main() {
    let main = RUNTIME.main_interpreter().unwrap();
    let mut g = ensure(main).unwrap();
    let s = g.save().unwrap();
    drop(g);
    drop(s);
}
