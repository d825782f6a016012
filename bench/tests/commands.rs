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
