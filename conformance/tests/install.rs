//! The C install (issue 14): `tstate-capi install --prefix` into a temporary
//! prefix, then C programs built with nothing but
//! `pkg-config --cflags --libs <name>`, shared and static, run; the
//! README's snippet (`examples/c/callback.c`) handles a refusal.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const FACADES: [(&str, &str); 4] = [
    ("ensure", "tse"),
    ("handle", "tsh"),
    ("activate", "tsa"),
    ("guard", "tsg"),
];

/// Installs `facades` (all four when empty) into the fresh prefix
/// `<tmp>/<name>` through the command line, as a user would.
fn installed_prefix(name: &str, facades: &[&str]) -> PathBuf {
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&prefix);
    let mut args = vec!["install", "--prefix", prefix.to_str().unwrap(), "--debug"];
    for f in facades {
        args.extend(["--facade", f]);
    }
    let code = tstate_capi::run_cli(args.into_iter().map(String::from));
    assert_eq!(code, 0, "tstate-capi install failed");
    prefix
}

fn pkg_config(prefix: &Path, name: &str) -> Vec<String> {
    let o = Command::new("pkg-config")
        .args(["--cflags", "--libs", name])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("pkg-config not runnable");
    assert!(
        o.status.success(),
        "pkg-config {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn gcc(src: &Path, flags: &[String], out: &Path) {
    let o = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg(src)
        .args(flags)
        .arg("-o")
        .arg(out)
        .output()
        .expect("gcc not runnable");
    assert!(
        o.status.success(),
        "gcc {} {flags:?}:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `exe` with only the prefix's libdir on the loader's path (nothing
/// else of the build tree) and no libpython: the model backend.
fn run(exe: &Path, libdir: Option<&Path>) -> (i32, String, String) {
    let mut c = Command::new(exe);
    c.env_remove("LD_LIBRARY_PATH").env_remove("TSTATE_BACKEND");
    if let Some(d) = libdir {
        c.env("LD_LIBRARY_PATH", d);
    }
    let o = c.output().expect("program not runnable");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn install_then_pkg_config_shared_and_static_and_the_snippet_handles_refusal() {
    let prefix = installed_prefix("install-prefix", &[]);
    let lib = prefix.join("lib");
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let abi = tstate_capi::abi_version();
    let pc = std::fs::read_to_string(lib.join("pkgconfig/tstate-ffi-ensure.pc")).unwrap();
    assert!(
        pc.contains("\nlibdir=${prefix}/lib\n") && pc.contains("\nincludedir=${prefix}/include\n"),
        "libdir and includedir relative to the prefix:\n{pc}"
    );
    for (f, p) in FACADES {
        // the layout: header, archive, versioned shared library, symlinks
        assert!(prefix.join(format!("include/tstate_{f}.h")).is_file());
        assert!(lib.join(format!("libtstate_ffi_{f}.a")).is_file());
        let real = lib.join(format!("libtstate_ffi_{f}.so.{}", tstate_capi::VERSION));
        assert!(real.is_file());
        assert_eq!(
            std::fs::read_link(lib.join(format!("libtstate_ffi_{f}.so.{abi}"))).unwrap(),
            PathBuf::from(format!("libtstate_ffi_{f}.so.{}", tstate_capi::VERSION))
        );
        let d = Command::new("readelf")
            .arg("-d")
            .arg(&real)
            .output()
            .unwrap();
        let dynamic = String::from_utf8_lossy(&d.stdout);
        assert!(
            dynamic.contains(&format!("Library soname: [libtstate_ffi_{f}.so.{abi}]")),
            "SONAME of {f}:\n{dynamic}"
        );
        // a program per facade, shared and static, from pkg-config alone
        let src = tmp.join(format!("install-{f}.c"));
        std::fs::write(
            &src,
            format!(
                "#include <tstate_{f}.h>\n#include <stdio.h>\nint main(void) {{\n    uint64_t m = 0;\n    int rc = {p}_main_interpreter(&m);\n    printf(\"%d %s\\n\", rc, {p}_error_message(-3));\n    return rc == 0 && m != 0 ? 0 : 1;\n}}\n"
            ),
        )
        .unwrap();
        for (kind, pc) in [
            ("shared", format!("tstate-ffi-{f}")),
            ("static", format!("tstate-ffi-{f}-static")),
        ] {
            let exe = tmp.join(format!("install-{f}-{kind}"));
            gcc(&src, &pkg_config(&prefix, &pc), &exe);
            let needs_so = String::from_utf8_lossy(
                &Command::new("readelf")
                    .arg("-d")
                    .arg(&exe)
                    .output()
                    .unwrap()
                    .stdout,
            )
            .contains(&format!("libtstate_ffi_{f}.so.{abi}"));
            assert_eq!(needs_so, kind == "shared", "{f} {kind}: NEEDED entry");
            let (code, out, err) = run(&exe, (kind == "shared").then_some(lib.as_path()));
            assert_eq!(code, 0, "{f} {kind}: {out}{err}");
        }
    }
    // the README's snippet, both ways: the event before shutdown runs, the
    // one after is refused (NO_SUCH_INTERPRETER) and dropped, exit code 0
    let snippet = workspace().join("examples/c/callback.c");
    for (kind, pc) in [
        ("shared", "tstate-ffi-ensure"),
        ("static", "tstate-ffi-ensure-static"),
    ] {
        let exe = tmp.join(format!("callback-{kind}"));
        gcc(&snippet, &pkg_config(&prefix, pc), &exe);
        let (code, out, err) = run(&exe, (kind == "shared").then_some(lib.as_path()));
        assert_eq!(code, 0, "callback {kind}: {out}{err}");
        assert_eq!(
            out.trim(),
            "before shutdown: 0, after: -3 (no such interpreter (unknown or finalized))"
        );
        assert_eq!(
            err.trim(),
            "event dropped: no such interpreter (unknown or finalized)"
        );
    }
}

#[test]
fn a_shared_program_without_the_prefix_on_its_path_fails_to_load() {
    // the check above is not vacuous: the loader really resolves the
    // SONAME through the prefix
    let prefix = installed_prefix("install-prefix-negative", &["ensure"]);
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let exe = tmp.join("callback-shared-nopath");
    gcc(
        &workspace().join("examples/c/callback.c"),
        &pkg_config(&prefix, "tstate-ffi-ensure"),
        &exe,
    );
    let (code, _, err) = run(&exe, None);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("cannot open shared object file"), "{err}");
}

#[test]
fn the_readme_quotes_the_snippet_verbatim() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let snippet = std::fs::read_to_string(workspace().join("examples/c/callback.c")).unwrap();
    assert!(
        readme.contains(&format!("```c\n{snippet}```")),
        "README.md must quote examples/c/callback.c verbatim in a ```c block"
    );
}

/// Rust dependents do not pay for C artifacts: every facade crate is a plain
/// Rust library (`crate-type = ["lib"]`, which cargo builds as an rlib only),
/// its C libraries made on demand by `tstate-capi`. Fails if a facade asks
/// cargo for a staticlib or cdylib again.
#[test]
fn facade_crates_build_no_c_artifacts_for_rust_dependents() {
    for (f, _) in FACADES {
        let manifest =
            std::fs::read_to_string(workspace().join(format!("ffi-{f}/Cargo.toml"))).unwrap();
        let types: Vec<&str> = manifest
            .lines()
            .filter(|l| l.trim_start().starts_with("crate-type"))
            .collect();
        assert_eq!(types, ["crate-type = [\"lib\"]"], "ffi-{f}/Cargo.toml");
    }
}
