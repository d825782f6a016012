//! `tstate-wheel [RUNS]` — the `tstate` Python package end to end (see
//! `tstate_conformance::wheel`): builds the abi3 wheel with maturin,
//! installs it into a fresh virtual environment per CPython found
//! (`TSTATE_PYTHONS=3.11,3.13` limits them), builds the test extensions
//! against `tstate.get_include()`, runs the checks and RUNS exit races
//! (default 200) per CPython, and prints the Markdown table
//! (`docs/python.md`). Exits 1 if anything failed.

use tstate_conformance::{pythons, wheel};

fn main() {
    let runs = match std::env::args().nth(1) {
        None => 200,
        Some(a) => a.parse().unwrap_or_else(|_| {
            eprintln!("usage: tstate-wheel [RUNS]");
            std::process::exit(2)
        }),
    };
    let found = pythons::find();
    eprintln!("CPython: {}", pythons::summary(&found));
    match wheel::measure(&wheel::default_root(), &found, runs) {
        Ok(rep) => {
            print!("{}", wheel::render_markdown(&rep));
            if !rep.rows.iter().all(wheel::Row::ok) {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("tstate-wheel: {e}");
            std::process::exit(1);
        }
    }
}
