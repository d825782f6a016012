//! The timing paths the main job and `tstate-bench` use, run tiny so that a
//! breakage shows here and not only in a 15-minute run: every design's
//! benches on the model in this process, and on CPython in a child process
//! (the main job's `--child-bench`) for every CPython found. Regression:
//! with one runtime per facade, passing one facade's main interpreter to
//! every design's bench made the handle, activate and guard benches fail.

use tstate_conformance::bench::{self, Config};
use tstate_conformance::{child, pythons};

const TINY: Config = Config {
    rounds: 1,
    iters: 50,
};

fn designs_measured(ms: &[bench::Measurement]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = ms.iter().map(|m| m.facade).collect();
    v.dedup();
    v
}

#[test]
fn every_design_times_on_the_model() {
    let ms = bench::run(&bench::comparison_benches(), TINY, &mut |_| {});
    assert_eq!(ms.len(), bench::comparison_benches().len());
    assert!(
        ms.iter()
            .all(|m| m.median_ns.is_finite() && m.median_ns > 0.0)
    );
    assert_eq!(
        designs_measured(&ms),
        ["baseline", "ensure", "handle", "activate", "guard"]
    );
}

#[test]
fn every_design_and_gilstate_time_on_every_cpython_found() {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_tstate-compare"));
    let found = pythons::find();
    assert!(
        !found.is_empty(),
        "no CPython found (3.11 is always present)"
    );
    for py in &found {
        let ms = child::run_bench_in_child(exe, py, TINY)
            .unwrap_or_else(|e| panic!("CPython {}: {e}", py.short()));
        let mut designs = designs_measured(&ms);
        designs.sort_unstable();
        assert_eq!(
            designs,
            [
                "activate", "baseline", "ensure", "gilstate", "guard", "handle"
            ],
            "CPython {}",
            py.short()
        );
        eprintln!("timing child ran on CPython {}", py.short());
    }
}

/// `--facade` limits the timing table to the designs asked for (and the
/// unit). Regression: the table timed every design whatever was asked.
#[test]
fn the_main_jobs_timing_follows_facade() {
    let exe = env!("CARGO_BIN_EXE_tstate-compare");
    let o = std::process::Command::new(exe)
        .args([
            "--backend",
            "model",
            "--facade",
            "handle",
            "--no-observed",
            "--no-exit-race",
            "--reps",
            "1",
            "--rounds",
            "1",
            "--iters",
            "50",
            "--markdown",
        ])
        .output()
        .expect("tstate-compare not runnable");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let timing = &text[text.find("## Timing").expect("a timing section")..];
    let rows: Vec<&str> = timing
        .lines()
        .filter(|l| l.starts_with("| model |"))
        .map(|l| l.split('|').nth(2).unwrap_or("").trim())
        .collect();
    assert!(rows.contains(&"handle"), "{rows:?}");
    assert!(
        rows.iter().all(|d| *d == "handle" || *d == "baseline"),
        "{rows:?}"
    );
}
