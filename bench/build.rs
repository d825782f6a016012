//! Links libpython3.11 when `python3-config --embed` finds it (then
//! `cfg(has_libpython)` enables the CPython column); otherwise the
//! benchmark builds without it and reports the column as skipped.
//! `TSTATE_BENCH_NO_PYTHON=1` forces the latter.

use std::path::PathBuf;
use std::process::Command;

/// Compiles `c/inline_loop.c` (the headers' inline nested paths, looped) three ways: into the benchmark (`tsb_inline_static`: its
/// thread-local resolved at link time), and as two shared objects the
/// benchmark loads with `dlopen` from `TSB_INLINE_DIR`, in the default TLS
/// model (`libtsb_inline_dl.so`) and with `TSTATE_INLINE_INITIAL_EXEC`
/// (`libtsb_inline_ie.so`). Their calls of the library resolve against the
/// benchmark's own symbols, which `-rdynamic` exports.
fn inline_loops() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    // every facade's header (the loops include all four)
    let facades = [
        ("ensure", "tstate_ensure.h"),
        ("handle", "tstate_handle.h"),
        ("activate", "tstate_activate.h"),
        ("guard", "tstate_guard.h"),
    ];
    let includes: Vec<PathBuf> = facades
        .iter()
        .map(|(f, _)| manifest.join(format!("../ffi-{f}/include")))
        .collect();
    let src = manifest.join("c/inline_loop.c");
    println!("cargo::rerun-if-changed=c/inline_loop.c");
    for (f, h) in facades {
        println!("cargo::rerun-if-changed=../ffi-{f}/include/{h}");
    }
    let mut build = cc::Build::new();
    build.file(&src);
    for i in &includes {
        build.include(i);
    }
    build
        .define("TSB_LOOP", "tsb_inline_static")
        // as a C program is built by default (Debian's gcc: -fPIE), so
        // that its thread-locals are local-exec
        .pic(false)
        .flag("-fPIE")
        .opt_level(2)
        .warnings_into_errors(true)
        .compile("tsb_inline_static");
    let compiler = cc::Build::new().opt_level(2).get_compiler();
    for (name, define) in [("dl", None), ("ie", Some("-DTSTATE_INLINE_INITIAL_EXEC"))] {
        let so = out.join(format!("libtsb_inline_{name}.so"));
        let mut cmd = compiler.to_command();
        cmd.args(["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror"]);
        for i in &includes {
            cmd.arg("-I").arg(i);
        }
        cmd.arg(format!("-DTSB_LOOP=tsb_inline_{name}"))
            .args(define)
            .arg(&src)
            .arg("-o")
            .arg(&so);
        let status = cmd.status().expect("the C compiler runs");
        assert!(status.success(), "building {} failed", so.display());
    }
    println!("cargo::rustc-link-arg-bins=-rdynamic");
    println!("cargo::rustc-env=TSB_INLINE_DIR={}", out.display());
}

fn main() {
    inline_loops();
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
