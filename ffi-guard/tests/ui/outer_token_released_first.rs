// A nested token borrows the outer one: the outer cannot be released first.
use tstate_ffi_guard::rust::View;

fn main() {
    let g = View::from_main().unwrap().guard().unwrap();
    let mut outer = g.ensure().unwrap();
    let inner = outer.ensure(&g).unwrap();
    outer.release().unwrap();
    drop(inner);
}
