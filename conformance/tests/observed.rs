//! The fifteen observed scenarios on every CPython 3.9–3.13 found, for
//! CPython's own PyGILState API and for each facade on its CPython backend
//! (`conformance/cpython/observed.c`, driven by
//! `tstate_conformance::observed`).
//!
//! Asserts the contract — every facade passes every scenario on every
//! version — and that the classifier is not vacuous: CPython's own API
//! comes out, in the scenarios below, the way it was measured here (one
//! scenario per outcome class the harness claims to detect).
//!
//! Bounded: a 10 s watchdog per process, two processes (or compilers) at
//! work at once; 1,820 processes in about 40 s on two cores (racy
//! scenarios 20×). `TSTATE_OBSERVED_REPEATS=N` changes the repeats,
//! `TSTATE_PYTHONS=3.11,3.13` the versions, `TSTATE_OBSERVED_MARKDOWN=1`
//! also prints the markdown of `docs/cpython-observed.md`.

use tstate_conformance::observed::{self, Outcome};
use tstate_conformance::pythons;

/// What CPython's own API does, measured on 3.9.18, 3.10.13, 3.11.7,
/// 3.12.1 and 3.13.0: (scenario, versions, outcome every run must have).
/// One scenario per class the classifier claims to detect (THREAD-KILLED:
/// see [`KILLED`]).
const GILSTATE_MEASURED: [(&str, &[&str], Outcome); 7] = [
    // PyGILState_Ensure after Py_FinalizeEx returned
    ("2", &ALL, Outcome::Segfault),
    // Fatal Python error: PyGILState_Release: auto-releasing thread-state,
    // but no thread-state for this thread
    ("6", &ALL, Outcome::Abort),
    // main re-attaches to a GIL a dead thread holds
    ("9", &ALL, Outcome::Hang),
    // the ensure on the main thread waits for the GIL it holds (<= 3.11);
    // 3.12+ rebinds the gilstate on swap and attaches the subinterpreter
    ("8", &["3.9", "3.10", "3.11"], Outcome::Hang),
    ("8", &["3.12", "3.13"], Outcome::WrongInterpreter),
    // PyGILState_Check answers 1 once a subinterpreter exists
    ("5", &ALL, Outcome::WrongAnswer),
    // nested ensure / allow-threads / ensure: exact restore
    ("7", &ALL, Outcome::Pass),
];

const ALL: [&str; 5] = ["3.9", "3.10", "3.11", "3.12", "3.13"];

/// Scenario 1 on CPython's own API: the worker looping in
/// PyGILState_Ensure is killed by `pthread_exit` in most runs (11 to 19 of
/// 20 measured per version); in the others it was between calls when
/// finalization began, and its next Ensure, after Py_FinalizeEx returned,
/// segfaults or aborts ("init_threadstate: thread state already
/// initialized", 3.12+ "gilstate_tss_set: failed to set current tstate").
/// Asserted: killed at least once, and nothing but these three.
const KILLED: (&str, [Outcome; 3]) = (
    "1",
    [Outcome::ThreadKilled, Outcome::Segfault, Outcome::Abort],
);

#[test]
fn observed_scenarios_on_every_cpython() {
    let found = pythons::find();
    if found.is_empty() {
        println!(
            "CPython: {}\nno CPython 3.9-3.13 with a shared libpython found: skipped",
            pythons::summary(&found)
        );
        return;
    }
    let mut opts =
        observed::Options::new(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("observed"));
    opts.pythons = found;
    if let Some(n) = std::env::var("TSTATE_OBSERVED_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        opts.repeats = n;
    }
    let report = observed::run_all(&opts);
    println!("{}", observed::render_terminal(&report));
    if std::env::var_os("TSTATE_OBSERVED_MARKDOWN").is_some() {
        println!("{}", observed::render_scenarios_markdown());
        println!("{}", observed::render_markdown(&report, true));
    }
    assert!(
        report.build_failures.is_empty(),
        "{}",
        report.build_failures.join("\n")
    );

    let mut problems = Vec::new();
    // the contract: every facade passes every scenario on every version
    for r in observed::facade_failures(&report) {
        problems.push(format!(
            "CONTRACT: {} scenario {} on CPython {}: {} — {}",
            r.design,
            r.scenario,
            r.python_full,
            r.cell(),
            r.detail()
        ));
    }
    for d in observed::DESIGNS.iter().filter(|d| d.facade.is_some()) {
        for py in &report.pythons {
            for sc in &observed::SCENARIOS {
                if report.get(d.name, &py.short(), sc.id).is_none() {
                    problems.push(format!(
                        "{} {} on {}: did not run",
                        d.name,
                        sc.id,
                        py.short()
                    ));
                }
            }
        }
    }
    // the classifier is not vacuous: CPython's own API as measured
    for (sc, versions, want) in GILSTATE_MEASURED {
        for v in versions {
            let Some(r) = report.get("gilstate", v, sc) else {
                continue; // that version was not found
            };
            if !r.all(want) {
                problems.push(format!(
                    "CLASSIFIER: gilstate scenario {sc} on CPython {}: {} (measured: {} every run) — {}",
                    r.python_full,
                    r.cell(),
                    want.label(),
                    r.detail()
                ));
            }
        }
    }
    let (sc, allowed) = KILLED;
    for py in &report.pythons {
        let Some(r) = report.get("gilstate", &py.short(), sc) else {
            continue;
        };
        let others = r.runs - allowed.iter().map(|&o| r.count(o)).sum::<usize>();
        if r.count(Outcome::ThreadKilled) == 0 || others > 0 {
            problems.push(format!(
                "CLASSIFIER: gilstate scenario {sc} on CPython {}: {} (measured: mostly \
                 THREAD-KILLED, else SEGFAULT or ABORT) — {}",
                r.python_full,
                r.cell(),
                r.detail()
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// The fifteen scenarios through every facade once more, built with
/// `-fsanitize=address,undefined` (leak detection off: CPython keeps its
/// allocations until exit by design; every other report aborts the run,
/// which then fails it), on CPython 3.11 (else the first version found),
/// racy scenarios 3 times.
#[test]
fn observed_scenarios_through_the_facades_under_asan_and_ubsan() {
    let found = pythons::find();
    let Some(py) = found
        .iter()
        .find(|p| p.version == (3, 11))
        .or(found.first())
        .cloned()
    else {
        println!("no CPython 3.9-3.13 with a shared libpython found: skipped");
        return;
    };
    let mut opts = observed::Options::new(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("observed-asan"),
    );
    opts.pythons = vec![py];
    opts.sanitize = true;
    opts.repeats = 3;
    opts.designs = observed::DESIGNS
        .iter()
        .filter(|d| d.facade.is_some())
        .map(|d| d.name.to_string())
        .collect();
    let report = observed::run_all(&opts);
    println!("{}", observed::render_terminal(&report));
    assert!(
        report.build_failures.is_empty(),
        "{}",
        report.build_failures.join("\n")
    );
    let ran = report.results.len();
    assert_eq!(
        ran,
        4 * observed::SCENARIOS.len(),
        "every facade × scenario ran"
    );
    let bad: Vec<String> = observed::facade_failures(&report)
        .iter()
        .map(|r| format!("{} {}: {} — {}", r.design, r.scenario, r.cell(), r.detail()))
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
