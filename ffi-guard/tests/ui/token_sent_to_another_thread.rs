// A token (a span) belongs to the thread that opened it; guards and views
// may cross threads, tokens may not.
use tstate_ffi_guard::rust::View;

fn main() {
    let g = View::from_main().unwrap().guard().unwrap();
    std::thread::scope(|s| {
        let t = g.ensure().unwrap();
        s.spawn(move || drop(t));
    });
}
