//! Links libpython3.11 when `python3-config --embed` finds it (then
//! `cfg(has_libpython)` enables the CPython column); otherwise the
//! benchmark builds without it and reports the column as skipped.
//! `TSTATE_BENCH_NO_PYTHON=1` forces the latter.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_libpython)");
    println!("cargo::rerun-if-env-changed=TSTATE_BENCH_NO_PYTHON");
    if std::env::var_os("TSTATE_BENCH_NO_PYTHON").is_some() {
        return;
    }
    let Ok(out) = Command::new("python3-config")
        .args(["--embed", "--ldflags"])
        .output()
    else {
        println!("cargo::warning=python3-config not found: the CPython column will be skipped");
        return;
    };
    if !out.status.success() {
        println!(
            "cargo::warning=python3-config --embed failed: the CPython column will be skipped"
        );
        return;
    }
    let flags = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lib = None;
    for f in flags.split_whitespace() {
        if let Some(dir) = f.strip_prefix("-L") {
            println!("cargo::rustc-link-search=native={dir}");
            println!("cargo::rustc-link-arg=-Wl,-rpath,{dir}");
        } else if let Some(l) = f.strip_prefix("-l")
            && l.starts_with("python3")
        {
            lib = Some(l.to_string());
        }
    }
    match lib {
        Some(l) => {
            println!("cargo::rustc-link-lib=dylib={l}");
            println!("cargo::rustc-cfg=has_libpython");
        }
        None => println!(
            "cargo::warning=no -lpython3.x in python3-config output: CPython column skipped"
        ),
    }
}
