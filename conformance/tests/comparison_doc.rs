//! `docs/comparison.md` is the main job's markdown output. Its conformance
//! part (matrix, reasons, boilerplate; not the timings, which vary by run
//! and machine) must match what the suite produces now.

use tstate_conformance::facade::{Activate, Ensure, Handle};
use tstate_conformance::report::{self, BEGIN, END, Report};

#[test]
fn comparison_doc_conformance_part_is_current() {
    let r = Report {
        facades: vec![
            report::run_suite::<Ensure>(None, &mut |_| {}),
            report::run_suite::<Handle>(None, &mut |_| {}),
            report::run_suite::<Activate>(None, &mut |_| {}),
        ],
        timings: None,
        timing_method: String::new(),
    };
    let want = report::conformance_markdown(&r);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/comparison.md");
    let doc = std::fs::read_to_string(path).expect("docs/comparison.md exists");
    let have = doc
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(mid, _)| mid.trim_start_matches('\n'))
        .expect("docs/comparison.md has the conformance markers");
    assert!(
        have == want,
        "docs/comparison.md is out of date; regenerate it with\n  cargo run --release -p tstate-conformance -- --markdown > docs/comparison.md\n--- expected ---\n{want}"
    );
}
