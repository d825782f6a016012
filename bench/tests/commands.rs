//! The documented commands of this crate still resolve: `cargo run
//! --release -p tstate-bench` (README, docs/performance.md) must pick the
//! benchmark although the crate has a second binary (`tstate-memory`):
//! without `default-run` cargo refuses ("could not determine which binary
//! to run").

use std::process::Command;

/// The part of `out` from the heading `from` to the heading `to`.
fn section<'a>(out: &'a str, from: &str, to: &str) -> &'a str {
    let rest = &out[out.find(from).unwrap_or_else(|| panic!("no {from}: {out}"))..];
    &rest[..rest.find(to).unwrap_or_else(|| panic!("no {to}: {out}"))]
}

/// Column `col` (counted between `|`, the first is 1) of the first row of
/// `table` that starts with `prefix`, as a number.
fn cell(table: &str, prefix: &str, col: usize) -> f64 {
    let row = table
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no row {prefix}: {table}"));
    row.split('|')
        .nth(col)
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or_else(|| panic!("column {col} of {row} is not a number"))
}

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
    let e = section(&stdout, "E: THROUGHPUT", "F: FINALIZATION");
    for design in ["ensure", "handle", "activate", "guard"] {
        for scenario in [
            "main interpreter (the GIL)",
            "two subinterpreters sharing main's lock",
        ] {
            let ops = cell(e, &format!("| {design} | {scenario} |"), 3);
            assert!(ops > 0.0, "{design}, {scenario}: {e}");
        }
    }
    assert!(e.contains("| cpython | one interpreter (the GIL) |"), "{e}");
    // F runs on CPython: a row per design, and CPython's own end of a
    // subinterpreter as its reference, each with a measured median
    let f = section(&stdout, "F: FINALIZATION", "G: SCALE");
    for design in [
        "ensure",
        "handle",
        "activate",
        "guard",
        "cpython: `Py_EndInterpreter`",
    ] {
        let median = cell(f, &format!("| {design}"), 2);
        assert!(median > 0.0, "{design}: {f}");
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
        // columns: live bytes 3, malloc'd bytes 5
        let next = cell(&stdout, "| the next 100,000 rounds", 3);
        assert_eq!(next, 0.0, "{backend}: live bytes grew: {stdout}");
        let interp = cell(&stdout, "| interpreter (created", 5);
        if *backend == "cpython" {
            // a real subinterpreter: CPython's own memory, well beyond the
            // library's record
            assert!(interp > 100_000.0, "{stdout}");
        } else {
            assert!(interp < 10_000.0, "{stdout}");
        }
    }
}
