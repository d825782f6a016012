// A token borrows its guard: the guard cannot be closed while the span is
// open.
use tstate_ffi_guard::rust::View;

fn main() {
    let g = View::from_main().unwrap().guard().unwrap();
    let t = g.ensure().unwrap();
    g.close().unwrap();
    drop(t);
}
