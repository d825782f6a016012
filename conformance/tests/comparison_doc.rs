//! `docs/comparison.md` is the main job's markdown output. Its model part
//! (matrix with descriptions, reasons, boilerplate: deterministic) must match
//! what the suite produces now; the parts from real CPython are checked by
//! `cpython_suite.rs` (the designs' matrix) or are measurements of the run
//! that wrote the file (the baseline's counts, the exit race, the timings).

use tstate_conformance::facade::{Activate, Ensure, Guard, Handle};
use tstate_conformance::report::{self, BEGIN, END, Report, VERDICT_BEGIN, VERDICT_END};

/// The text between `begin` and `end` in `doc`.
fn section<'a>(doc: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    doc.split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(mid, _)| mid.trim_start_matches('\n'))
}

#[test]
fn comparison_doc_model_part_is_current() {
    let r = Report {
        model: vec![
            report::run_suite::<Ensure>(None, &mut |_| {}),
            report::run_suite::<Handle>(None, &mut |_| {}),
            report::run_suite::<Activate>(None, &mut |_| {}),
            report::run_suite::<Guard>(None, &mut |_| {}),
        ],
        ..Report::default()
    };
    let want = report::model_markdown(&r);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/comparison.md");
    let doc = std::fs::read_to_string(path).expect("docs/comparison.md exists");
    let have = section(&doc, BEGIN, END).expect("docs/comparison.md has the model markers");
    assert!(
        have == want,
        "docs/comparison.md is out of date; regenerate it with\n  cargo run --release -p tstate-conformance -- --markdown > docs/comparison.md\n--- expected ---\n{want}"
    );
}

/// `docs/choosing.md` takes its figures from the generated report: the
/// verdict section it quotes is the one in `docs/comparison.md`.
#[test]
fn choosing_doc_quotes_the_current_verdicts() {
    let read = |f: &str| {
        std::fs::read_to_string(format!("{}/../docs/{f}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("docs/{f}: {e}"))
    };
    let (cmp, choosing) = (read("comparison.md"), read("choosing.md"));
    let want =
        section(&cmp, VERDICT_BEGIN, VERDICT_END).expect("comparison.md has the verdict markers");
    let have = section(&choosing, VERDICT_BEGIN, VERDICT_END)
        .expect("choosing.md has the verdict markers");
    assert!(
        have == want,
        "docs/choosing.md quotes other verdicts than docs/comparison.md; copy the section between the verdict markers from comparison.md\n--- comparison.md ---\n{want}"
    );
}
