//! The documented commands of this crate still resolve: `cargo run
//! --release -p tstate-bench` (README, docs/performance.md) must pick the
//! benchmark although the crate has a second binary (`tstate-memory`):
//! without `default-run` cargo refuses ("could not determine which binary
//! to run").

use std::process::Command;

#[test]
fn cargo_run_of_the_package_runs_the_benchmark() {
    let out = Command::new(env!("CARGO"))
        .args(["run", "-q", "-p", "tstate-bench", "--", "--help"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("usage: tstate-bench"),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `TSTATE_BACKEND=cpython tstate-bench` times the designs on CPython:
/// the latency tables run, and every section it cannot run there says
/// why (before, it panicked creating an own-lock interpreter for W:
/// UNSUPPORTED on CPython 3.11). One round of 200 operations: a few
/// seconds. Only where the benchmark links libpython.
#[test]
fn the_benchmark_runs_with_the_designs_on_cpython() {
    if !cfg!(has_libpython) {
        eprintln!("built without libpython3.11: skipped");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tstate-bench"))
        .args(["--rounds", "1", "--iters", "200", "--e-iters", "200"])
        .env("TSTATE_BACKEND", "cpython")
        .output()
        .expect("tstate-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Designs on the CPython 3.11 backend."),
        "{stdout}"
    );
    assert!(stdout.contains("| ensure | A |"), "{stdout}");
    assert_eq!(
        stdout
            .matches("Skipped with the designs on the CPython backend")
            .count(),
        2,
        "G and W are skipped: {stdout}"
    );
    // E runs on CPython: every design on main and on two subinterpreters
    // sharing its lock, and CPython's own row, each with a measured ratio
    let e = &stdout[stdout.find("E: THROUGHPUT").expect("E section")..];
    let e = &e[..e.find("F: FINALIZATION").expect("F section")];
    for design in ["ensure", "handle", "activate", "guard"] {
        for scenario in [
            "main interpreter (the GIL)",
            "two subinterpreters sharing main's lock",
        ] {
            let row = e
                .lines()
                .find(|l| l.starts_with(&format!("| {design} | {scenario} |")))
                .unwrap_or_else(|| panic!("no E row for {design}, {scenario}: {e}"));
            let ops: f64 = row
                .split('|')
                .nth(3)
                .unwrap()
                .trim()
                .parse()
                .unwrap_or_else(|err| panic!("{row}: {err}"));
            assert!(ops > 0.0, "{row}");
        }
    }
    assert!(e.contains("| cpython | one interpreter (the GIL) |"), "{e}");
    // F runs on CPython: a row per design, and CPython's own end of a
    // subinterpreter as its reference, each with a measured median
    let f = &stdout[stdout.find("F: FINALIZATION").expect("F section")..];
    let f = &f[..f.find("G: SCALE").expect("G section")];
    for design in [
        "ensure",
        "handle",
        "activate",
        "guard",
        "cpython: `Py_EndInterpreter`",
    ] {
        let row = f
            .lines()
            .find(|l| l.starts_with(&format!("| {design}")))
            .unwrap_or_else(|| panic!("no F row for {design}: {f}"));
        let median: f64 = row
            .split('|')
            .nth(2)
            .unwrap()
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{row}: {e}"));
        assert!(median > 0.0, "{row}");
    }
}

/// `tstate-memory` measures the backend it is asked for, and on both the
/// library's memory does not grow with the number of operations (the
/// second window of 100,000 rounds leaves 0 live bytes).
#[test]
fn the_memory_measurement_runs_on_both_backends() {
    let backends: &[&str] = if cfg!(has_libpython) {
        &["model", "cpython"]
    } else {
        eprintln!("built without libpython3.11: the CPython run is skipped");
        &["model"]
    };
    for backend in backends {
        let out = Command::new(env!("CARGO_BIN_EXE_tstate-memory"))
            .arg("--markdown")
            .env("TSTATE_BACKEND", backend)
            .output()
            .expect("tstate-memory");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{backend}: exit {:?}\n{stdout}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        let name = if *backend == "cpython" {
            "CPython 3.11"
        } else {
            "model"
        };
        assert!(
            stdout.contains(&format!("designs on the {name} backend")),
            "{stdout}"
        );
        let cells = |prefix: &str| -> Vec<f64> {
            let row = stdout
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("{backend}: no row {prefix}: {stdout}"));
            row.split('|')
                .skip(3)
                .filter_map(|c| c.trim().parse().ok())
                .collect()
        };
        let next = cells("| the next 100,000 rounds");
        assert_eq!(next[0], 0.0, "{backend}: live bytes grew: {stdout}");
        let interp = cells("| interpreter (created");
        if *backend == "cpython" {
            // a real subinterpreter: CPython's own memory, well beyond the
            // library's record
            assert!(interp[2] > 100_000.0, "{stdout}");
        } else {
            assert!(interp[2] < 10_000.0, "{stdout}");
        }
    }
}
