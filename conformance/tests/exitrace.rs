//! The exit race on every CPython found (`tstate_conformance::exitrace`):
//! A, a real extension module's native threads calling Python through each
//! design while the interpreter exits (20 runs per CPython and design, the
//! raw `PyGILState` baseline included); B, a subinterpreter's own threads
//! calling back into it while it is ended (5 runs per CPython, facade and
//! lock mode, and of the baseline). Every facade must be clean in every run
//! on every version; the baseline's numbers are printed, and only checked
//! to show the classifier is not vacuous. The longer command:
//! `cargo run --release -p tstate-conformance --bin tstate-exitrace -- 200`.

use std::path::Path;
use std::time::Instant;
use tstate_conformance::exitrace::{Config, Experiment, Outcome, measure, render_terminal};
use tstate_conformance::pythons;

#[test]
fn exit_race_and_subinterpreter_end_on_every_cpython() {
    let t0 = Instant::now();
    let found = pythons::find();
    if found.is_empty() {
        eprintln!(
            "CPython: {}\nno CPython 3.9-3.13 with a shared libpython and headers: skipped",
            pythons::summary(&found)
        );
        return;
    }
    let mut cfg = Config::new(20, Path::new(env!("CARGO_TARGET_TMPDIR")).join("exitrace"));
    cfg.runs_sub = 5;
    cfg.runs_sub_baseline = 5;
    let rep = measure(&cfg, &found);
    eprintln!("{}", render_terminal(&rep));
    eprintln!("test wall time {:.1?}", t0.elapsed());

    let builds: Vec<String> = rep
        .rows
        .iter()
        .filter_map(|r| {
            r.build_error
                .as_ref()
                .map(|e| format!("{} {}: {e}", r.python, r.design.name))
        })
        .collect();
    assert!(builds.is_empty(), "builds failed:\n{}", builds.join("\n"));

    let bad: Vec<String> = rep
        .facade_failures()
        .iter()
        .map(|r| {
            format!(
                "{} {} {}: {} of {} clean (killed {}, crashed {}, hung {}, stuck {}, other {}): {}",
                r.python,
                r.experiment.label(),
                r.design.name,
                r.count(Outcome::Clean),
                r.runs.len(),
                r.count(Outcome::Killed),
                r.count(Outcome::Crashed),
                r.count(Outcome::Hung),
                r.count(Outcome::Stuck),
                r.count(Outcome::Other),
                r.notes()
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "facade runs that were not clean:\n{}",
        bad.join("\n")
    );

    // the classifier is not vacuous: what the baseline measured here
    let baseline_bad = |exp: Experiment, o: Outcome| -> usize {
        rep.rows
            .iter()
            .filter(|r| r.experiment == exp && !r.design.is_facade())
            .map(|r| r.count(o))
            .sum()
    };
    assert!(
        baseline_bad(Experiment::ExitRace, Outcome::Killed) > 0,
        "gilstate was never killed in A on any version: the detection of killed threads proves nothing"
    );
    let sub_crashed = baseline_bad(Experiment::SubShared, Outcome::Crashed)
        + baseline_bad(Experiment::SubOwn, Outcome::Crashed);
    assert!(
        sub_crashed > 0,
        "the B baseline never crashed on any version: the crash detection proves nothing"
    );
}
