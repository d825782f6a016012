//! `pip install tstate` end to end on every CPython found
//! (`tstate_conformance::wheel`): the wheel is built with maturin and
//! installed into a fresh virtual environment per CPython; two independent
//! C extensions and a Cython one are built against `tstate.get_include()`;
//! every check passes and 20 exit-race runs per CPython are all clean (0
//! killed, crashed, hung, stuck). The longer command:
//! `cargo run --release -p tstate-conformance --bin tstate-wheel -- 200`.

use std::time::Instant;
use tstate_conformance::{pythons, wheel};

#[test]
fn the_wheel_serves_every_extension_on_every_cpython() {
    let t0 = Instant::now();
    let found = pythons::find();
    eprintln!("CPython: {}", pythons::summary(&found));
    if found.is_empty() {
        eprintln!("no CPython 3.9-3.13 with a shared libpython and headers: skipped");
        return;
    }
    let rep = wheel::measure(&wheel::default_root(), &found, 20).unwrap_or_else(|e| panic!("{e}"));
    let table = wheel::render_markdown(&rep);
    eprintln!("{table}\ntest wall time {:.1?}", t0.elapsed());
    assert_eq!(rep.rows.len(), found.len());
    for row in &rep.rows {
        let race = row.race.as_ref();
        assert!(
            race.is_some_and(|r| r.runs.len() == 20),
            "{}: not prepared: {:?}",
            row.python,
            row.error
        );
        let names: Vec<&str> = row.checks.iter().map(|c| c.name.as_str()).collect();
        assert!(names.contains(&"one_runtime"), "{}: {names:?}", row.python);
    }
    assert!(rep.rows.iter().all(wheel::Row::ok), "{table}");
}
