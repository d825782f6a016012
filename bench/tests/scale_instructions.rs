//! A thread that uses 1,000 interpreters pays (almost) nothing for the
//! other 999, measured in instructions with valgrind's callgrind
//! (deterministic, not a timing; this test binary's debug build):
//! * its fresh-thread path (case C): the per-op cost of `ensure-C1000` stays
//!   within 1.2× of `ensure-C`. Before the per-thread interpreter index, C
//!   scanned the thread's records (about nine instructions per interpreter
//!   in release builds: 679 → 9,679 per op, `bench/callgrind.sh`);
//! * its first use of a new interpreter (create + ensure + release): the
//!   average over 1,000 stays within 1.2× of the average over 100. Before,
//!   every first use pruned with a scan of every record against every
//!   other (O(n²) per first use: 27 G instructions for 1,000 in a debug
//!   build), then, after the first fix, with O(n) scans (5.9×).
//!
//! Skipped, and said so, when valgrind is not installed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Instructions of `tstate-bench --count CASE N` under callgrind, or why not
/// (`wide`: `TSTATE_BENCH_WIDE`, the number of interpreters a `*1000` case
/// makes its thread use).
fn instructions(case: &str, n: u64) -> Result<u64, String> {
    instructions_wide(case, n, None)
}

fn instructions_wide(case: &str, n: u64, wide: Option<u64>) -> Result<u64, String> {
    let dir = std::env::temp_dir().join(format!(
        "tstate-cg-{}-{case}-{n}-{}",
        std::process::id(),
        wide.unwrap_or(0)
    ));
    let out = dir.with_extension("out");
    let mut cmd = Command::new("valgrind");
    if let Some(w) = wide {
        cmd.env("TSTATE_BENCH_WIDE", w.to_string());
    }
    let mut child = cmd
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(env!("CARGO_BIN_EXE_tstate-bench"))
        .args(["--count", case, &n.to_string()])
        .env("TSTATE_BACKEND", "model")
        .env("PYTHONHASHSEED", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("valgrind: {e}"))?;
    // watchdog: 300 s, then the run is killed and the test fails
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            return Err(format!("{case} {n}: watchdog (300 s)"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        return Err(format!("{case} {n}: valgrind exited {status}"));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("{case} {n}: no totals in the callgrind output"))
}

#[test]
fn fresh_ensure_on_a_thread_using_1000_interpreters_costs_what_it_does_with_one() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("valgrind not installed: skipped");
        return;
    }
    let (n1, n2) = (2_000u64, 4_000u64);
    let per_op = |case: &str| -> f64 {
        let a = instructions(case, n1).unwrap_or_else(|e| panic!("{e}"));
        let b = instructions(case, n2).unwrap_or_else(|e| panic!("{e}"));
        (b as f64 - a as f64) / (n2 - n1) as f64
    };
    let one = per_op("ensure-C");
    let wide = per_op("ensure-C1000");
    eprintln!(
        "ensure-C: {one:.0} instructions per op; ensure-C1000: {wide:.0} ({:.2}×)",
        wide / one
    );
    assert!(one > 0.0 && wide > 0.0);
    assert!(
        wide <= 1.2 * one,
        "a thread using 1,000 interpreters: {wide:.0} instructions per fresh ensure+release against {one:.0} with one ({:.2}×, bound 1.2×)",
        wide / one
    );
}

#[test]
fn a_first_use_among_1000_interpreters_costs_what_it_does_among_100() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("valgrind not installed: skipped");
        return;
    }
    let base = instructions("ensure-C", 0).unwrap_or_else(|e| panic!("{e}"));
    let per_first_use = |w: u64| -> f64 {
        let ir = instructions_wide("ensure-C1000", 0, Some(w)).unwrap_or_else(|e| panic!("{e}"));
        (ir as f64 - base as f64) / w as f64
    };
    let (hundred, thousand) = (per_first_use(100), per_first_use(1000));
    eprintln!(
        "first use (create + ensure + release) among 100: {hundred:.0} instructions; among 1,000: {thousand:.0} ({:.2}×)",
        thousand / hundred
    );
    assert!(hundred > 0.0);
    assert!(
        thousand <= 1.2 * hundred,
        "a first use among 1,000 interpreters costs {thousand:.0} instructions against {hundred:.0} among 100 ({:.2}×, bound 1.2×)",
        thousand / hundred
    );
}
