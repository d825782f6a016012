//! The conformance suite on real CPython: every case × every facade × every
//! CPython 3.9–3.13 found on this machine, each in its own process under a
//! watchdog (see `tstate_conformance::child`). A version that is absent is
//! skipped and said so; at least one must be present (3.11 always is on
//! this machine kind).
//!
//! A case fails here exactly when it would fail on the model; n/a only from
//! the design's declared capabilities or what the running CPython cannot do
//! (own lock before 3.12, no free-threaded build), with the reason.

use tstate_conformance::child::{self, ChildOutcome};
use tstate_conformance::pythons;
use tstate_conformance::report::{self, CPY_BEGIN, CPY_END, Report};

#[test]
fn every_case_on_every_cpython_found() {
    let found = pythons::find();
    eprintln!("CPython versions: {}", pythons::summary(&found));
    assert!(
        !found.is_empty(),
        "no CPython 3.9-3.13 with a shared libpython found (3.11 is expected on this machine kind)"
    );
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_tstate-compare"));
    let cases = child::case_names();
    let t0 = std::time::Instant::now();
    let results = child::run_all(exe, &found, &child::FACADES, &cases, 2, &mut |_| {});
    let mut failures = Vec::new();
    for py in &found {
        let v = py.short();
        for f in child::FACADES {
            let mine: Vec<_> = results
                .iter()
                .filter(|r| r.python == v && r.facade == f)
                .collect();
            let pass = mine
                .iter()
                .filter(|r| r.outcome == ChildOutcome::Pass)
                .count();
            let na = mine
                .iter()
                .filter(|r| matches!(r.outcome, ChildOutcome::NotApplicable(_)))
                .count();
            eprintln!(
                "CPython {v} {f:>8}: {pass} pass, {na} n/a, {} fail of {}",
                mine.len() - pass - na,
                mine.len()
            );
            for r in mine {
                if r.outcome.failed() {
                    failures.push(format!(
                        "CPython {v} {f} {}: {} {}",
                        r.case,
                        r.outcome.class(),
                        r.outcome.detail()
                    ));
                }
            }
        }
    }
    eprintln!(
        "{} runs in {:.1} s",
        results.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // docs/comparison.md's matrix of the designs on CPython is this run's,
    // when the doc was written on the same set of CPython versions
    let r = Report {
        pythons: found.iter().map(|p| p.short()).collect(),
        cpython: results,
        ..Report::default()
    };
    let want = report::cpython_designs_markdown(&r);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/comparison.md");
    let doc = std::fs::read_to_string(path).expect("docs/comparison.md exists");
    let have = doc
        .split_once(CPY_BEGIN)
        .and_then(|(_, rest)| rest.split_once(CPY_END))
        .map(|(mid, _)| mid.trim_start_matches('\n'))
        .expect("docs/comparison.md has the CPython markers");
    let heading = |s: &str| s.lines().next().unwrap_or("").to_string();
    if heading(have) == heading(&want) {
        assert!(
            have == want,
            "docs/comparison.md's CPython matrix is out of date; regenerate it with\n  cargo run --release -p tstate-conformance -- --markdown > docs/comparison.md\n--- expected ---\n{want}"
        );
    } else {
        eprintln!(
            "docs/comparison.md was written on other CPython versions ({}); this machine has {}: its matrix is not compared",
            heading(have),
            heading(&want)
        );
    }
}
