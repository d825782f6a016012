// Issue 15: `EnsureGuard::allow_threads` returned a `SaveGuard` not tied to
// its `EnsureGuard`; releasing the span with the save open left the thread
// attached with a hold on the interpreter.
use tstate_core::Runtime;

fn main() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    let eg = rt.ensure_guard(main).unwrap();
    let sg = eg.allow_threads().unwrap();
    drop(eg);
    drop(sg);
}
