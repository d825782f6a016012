//! Builds the facades' C programs (`conformance/c/*.c`), each linked against
//! its own facade's staticlib only, with `-Wall -Wextra -Werror -pedantic`,
//! plainly and with `-fsanitize=address,undefined` (leak detection on), and
//! runs every scenario of every program in its own process under a
//! watchdog. A scenario that exits non-zero, crashes, reports a sanitizer
//! error or hangs fails the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every program must offer exactly these scenarios (none silently dropped).
const SCENARIOS: [&str; 7] = [
    "c_thread_func",
    "cython_with_gil",
    "pyarrow_callback",
    "thread_pool",
    "subinterpreter_thread",
    "finalize_race",
    "misuse",
];

/// Per-scenario bound: the slowest (finalize_race under ASan) takes < 2 s.
const WATCHDOG: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The facade's C libraries, built on demand by `tstate-capi` (the facade
/// crates are plain Rust libraries: cargo builds no C artifact for them).
fn built(facade: &str) -> tstate_capi::Built {
    tstate_capi::build(facade, tstate_capi::Profile::Dev).unwrap_or_else(|e| panic!("{e}"))
}

/// The facade's staticlib.
fn staticlib(facade: &str) -> PathBuf {
    built(facade).staticlib
}

/// Builds `conformance/c/<facade>.c` into `<name>` (+ `-asan`) in the
/// test's temporary directory (distinct names: tests run in parallel).
fn build_as(facade: &str, name: &str, sanitize: bool) -> PathBuf {
    build_program(facade, facade, name, sanitize)
}

/// Builds `conformance/c/<src>.c` against `facade`'s staticlib into
/// `<name>` (+ `-asan`), as [`build_as`].
fn build_program(src: &str, facade: &str, name: &str, sanitize: bool) -> PathBuf {
    let ws = workspace();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}{}", if sanitize { "-asan" } else { "" }));
    let mut cmd = Command::new("gcc");
    cmd.args([
        "-std=c11",
        "-g",
        "-O1",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
    ]);
    if sanitize {
        cmd.args([
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all",
        ]);
    }
    cmd.arg("-I")
        .arg(ws.join(format!("ffi-{facade}/include")))
        .arg("-I")
        .arg(ws.join("conformance/c"))
        .arg(ws.join(format!("conformance/c/{src}.c")))
        .arg(staticlib(facade))
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&out);
    let o = cmd.output().expect("gcc not runnable");
    assert!(
        o.status.success(),
        "building {facade}.c failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn build(facade: &str, sanitize: bool) -> PathBuf {
    build_as(facade, facade, sanitize)
}

/// Runs `prog scenario`, killing it at the watchdog bound.
fn run(prog: &Path, scenario: &str) -> Result<(), String> {
    let mut child = Command::new(prog)
        .arg(scenario)
        .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        .env("UBSAN_OPTIONS", "print_stacktrace=1")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let o = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&o.stdout);
            return if status.success() && stdout.contains(&format!("ok {scenario}")) {
                Ok(())
            } else {
                Err(format!(
                    "{} {scenario}: {status}\n{}{}",
                    prog.display(),
                    stdout,
                    String::from_utf8_lossy(&o.stderr)
                ))
            };
        }
        if t0.elapsed() > WATCHDOG {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} {scenario}: hung (killed after {WATCHDOG:?})",
                prog.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The inline-path programs: (source, facade, scenarios); on CPython each
/// adds `external_detach`.
const INLINE_PROGRAMS: [(&str, &str, &[&str]); 4] = [
    (
        "ensure_inline",
        "ensure",
        &[
            "nested",
            "library_call_inside",
            "past_the_limit",
            "misuse",
            "thread_exit",
        ],
    ),
    (
        "handle_inline",
        "handle",
        &[
            "nested",
            "out_of_order",
            "library_call_inside",
            "past_the_limit",
        ],
    ),
    ("activate_inline", "activate", &["attached"]),
    (
        "guard_inline",
        "guard",
        &[
            "nested",
            "misuse",
            "a_close_elsewhere_stops_the_cache",
            "library_call_inside",
            "another_interpreter",
        ],
    ),
];

/// Runs every scenario `prog --list` names, checking they are `expected`.
fn run_listed(prog: &Path, expected: &[&str]) {
    let list = Command::new(prog).arg("--list").output().unwrap();
    let listed: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        listed,
        expected,
        "{} must offer every scenario",
        prog.display()
    );
    let failures: Vec<String> = expected.iter().filter_map(|s| run(prog, s).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every design's inline path on the model, plainly and
/// sanitized (`-pedantic -Werror`: the headers' inline functions compile
/// cleanly as C11).
#[test]
fn inline_path_c_programs() {
    for (src, facade, scenarios) in INLINE_PROGRAMS {
        for sanitize in [false, true] {
            let prog = build_program(src, facade, &format!("{src}_model"), sanitize);
            run_listed(&prog, scenarios);
        }
    }
}

/// The inline paths on CPython 3.11 (embedders): also a thread state
/// detached behind the library's back (`PyEval_SaveThread`) inside a
/// counted span is re-attached by the next inline ensure, not counted.
#[test]
fn inline_path_c_programs_on_cpython() {
    for (src, facade, scenarios) in INLINE_PROGRAMS {
        let prog = embedder(src, &[facade]);
        let mut expected = scenarios.to_vec();
        expected.push("external_detach");
        run_listed(&prog, &expected);
    }
}

/// Scenarios only one design has (beyond [`SCENARIOS`]).
fn extra_scenarios(facade: &str) -> &'static [&'static str] {
    match facade {
        "guard" => &["pep788_examples"],
        _ => &[],
    }
}

fn build_and_run_all(facade: &str, sanitize: bool) {
    let prog = build(facade, sanitize);
    let expected: Vec<&str> = SCENARIOS
        .iter()
        .chain(extra_scenarios(facade))
        .copied()
        .collect();
    run_listed(&prog, &expected);
}

#[test]
fn ensure_c_programs() {
    build_and_run_all("ensure", false);
}

/// `tse_release`'s default fatal-error hook prints the message and aborts
/// (like `Py_FatalError`), plain and sanitized.
#[test]
fn ensure_default_fatal_hook_prints_and_aborts() {
    use std::os::unix::process::ExitStatusExt;
    for sanitize in [false, true] {
        let prog = build_as("ensure", "ensure-abort", sanitize);
        let o = Command::new(&prog)
            .arg("default_hook_aborts")
            .env("ASAN_OPTIONS", "detect_leaks=0")
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.signal(),
            Some(6),
            "expected SIGABRT: {:?}\n{stderr}",
            o.status
        );
        assert!(
            stderr.contains(
                "Fatal tstate error in tse_release: nothing to release, or not attached (code -5)"
            ),
            "{stderr}"
        );
    }
}

#[test]
fn handle_c_programs() {
    build_and_run_all("handle", false);
}

#[test]
fn activate_c_programs() {
    build_and_run_all("activate", false);
}

#[test]
fn guard_c_programs() {
    build_and_run_all("guard", false);
}

#[test]
fn guard_c_programs_sanitized() {
    build_and_run_all("guard", true);
}

#[test]
fn ensure_c_programs_sanitized() {
    build_and_run_all("ensure", true);
}

#[test]
fn handle_c_programs_sanitized() {
    build_and_run_all("handle", true);
}

#[test]
fn activate_c_programs_sanitized() {
    build_and_run_all("activate", true);
}

/// The directory of the facade's cdylib (the same for every facade).
fn cdylib_dir(facade: &str) -> PathBuf {
    built(facade).cdylib.parent().unwrap().to_path_buf()
}

#[test]
fn each_cdylib_exports_only_its_own_prefix() {
    for (facade, prefix) in [
        ("ensure", "tse_"),
        ("handle", "tsh_"),
        ("activate", "tsa_"),
        ("guard", "tsg_"),
    ] {
        let so = cdylib_dir(facade).join(format!("libtstate_ffi_{facade}.so"));
        let o = Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(&so)
            .output()
            .expect("nm not runnable");
        let text = String::from_utf8_lossy(&o.stdout);
        let funcs: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_, kind, name) = (f.next()?, f.next()?, f.next()?);
                (kind == "T").then_some(name)
            })
            .collect();
        assert!(funcs.len() >= 20, "{facade}: {funcs:?}");
        let foreign: Vec<_> = funcs.iter().filter(|n| !n.starts_with(prefix)).collect();
        assert!(foreign.is_empty(), "{facade} exports {foreign:?}");
    }
}

/// `python3-config --embed` output for compiling against libpython.
fn python_config(flag: &str) -> Vec<String> {
    let o = Command::new("python3-config")
        .args(["--embed", flag])
        .output()
        .expect(
            "python3-config (CPython 3.11 headers and libpython3.11) is required for this test",
        );
    assert!(o.status.success(), "python3-config {flag} failed");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn all_three_facades_and_libpython_link_into_one_process() {
    let ws = workspace();
    // installed as a user would (the run-time name is the SONAME, which
    // only the install's symlinks provide)
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join("prefix-side-by-side");
    let layout = tstate_capi::Layout::new(&prefix);
    for f in ["ensure", "handle", "activate"] {
        tstate_capi::install(&built(f), &layout).unwrap();
    }
    let deps = layout.libdir;
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("side_by_side");
    let mut cmd = Command::new("gcc");
    cmd.args(["-std=c11", "-g", "-Wall", "-Wextra", "-Werror"])
        .args(python_config("--includes"));
    for f in ["ensure", "handle", "activate"] {
        cmd.arg("-I").arg(ws.join(format!("ffi-{f}/include")));
    }
    cmd.arg("-I")
        .arg(ws.join("conformance/c"))
        .arg(ws.join("conformance/c/side_by_side.c"))
        .arg(format!("-L{}", deps.display()))
        .args([
            "-ltstate_ffi_ensure",
            "-ltstate_ffi_handle",
            "-ltstate_ffi_activate",
        ])
        .arg(format!("-Wl,-rpath,{}", deps.display()))
        .args(python_config("--ldflags"))
        .args(["-lpthread", "-o"])
        .arg(&out);
    let o = cmd.output().expect("gcc not runnable");
    assert!(
        o.status.success(),
        "building side_by_side.c failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    run(&out, "side_by_side").unwrap();
}

/// One rule for runtimes, the same however the facades are linked: two
/// facades in one program have a runtime each (ids that do not cross, spans
/// and finalization that do not reach the other), linked statically (one
/// copy of the core) and dynamically (two copies). Regression: linked
/// statically they shared one runtime, and both ways they handed out the
/// same ids (`two_facades.c:16: CHECK failed: me != mh`).
#[test]
fn two_facades_have_a_runtime_each_linked_statically_or_dynamically() {
    let ws = workspace();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let prefix = tmp.join("prefix-two-facades");
    let layout = tstate_capi::Layout::new(&prefix);
    for f in ["ensure", "handle"] {
        tstate_capi::install(&built(f), &layout).unwrap();
    }
    let src = ws.join("conformance/c/two_facades.c");
    for linking in ["static", "dynamic"] {
        let out = tmp.join(format!("two_facades_{linking}"));
        let mut cmd = Command::new("gcc");
        cmd.args(["-std=c11", "-g", "-Wall", "-Wextra", "-Werror", "-I"])
            .arg(&layout.includedir)
            .arg("-I")
            .arg(ws.join("conformance/c"))
            .arg(&src);
        if linking == "static" {
            cmd.arg(staticlib("ensure")).arg(staticlib("handle"));
        } else {
            cmd.arg(format!("-L{}", layout.libdir.display()))
                .args(["-ltstate_ffi_ensure", "-ltstate_ffi_handle"])
                .arg(format!("-Wl,-rpath,{}", layout.libdir.display()));
        }
        cmd.args(["-lpthread", "-ldl", "-lm", "-o"]).arg(&out);
        let o = cmd.output().expect("gcc not runnable");
        assert!(
            o.status.success(),
            "building two_facades.c ({linking}) failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        run(&out, "two_facades").unwrap_or_else(|e| panic!("{linking}: {e}"));
    }
}

/// Two designs' spellings in one translation unit are a clear compile-time
/// error (both define `PyThreadState_Ensure`), for every ordered pair; one
/// design's spellings alone compile.
#[test]
fn two_designs_spellings_in_one_translation_unit_are_an_error() {
    let ws = workspace();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let macros = [
        ("ensure", "TSTATE_ENSURE_DISCUSSION_NAMES"),
        ("handle", "TSTATE_HANDLE_DISCUSSION_NAMES"),
        ("activate", "TSTATE_ACTIVATE_DISCUSSION_NAMES"),
        ("guard", "TSTATE_GUARD_PEP788_NAMES"),
    ];
    let compile = |pair: &[(&str, &str)], n: usize| {
        let mut text = String::new();
        for (f, m) in pair {
            text.push_str(&format!("#define {m}\n#include \"tstate_{f}.h\"\n"));
        }
        text.push_str("int main(void) { return 0; }\n");
        let src = tmp.join(format!("spellings_{n}.c"));
        std::fs::write(&src, text).unwrap();
        let mut cmd = Command::new("gcc");
        cmd.args(["-std=c11", "-fsyntax-only"]);
        for (f, _) in &macros {
            cmd.arg("-I").arg(ws.join(format!("ffi-{f}/include")));
        }
        cmd.arg(&src).output().expect("gcc not runnable")
    };
    let mut n = 0;
    for a in macros {
        n += 1;
        let o = compile(&[a], n);
        assert!(
            o.status.success(),
            "{} alone: {}",
            a.1,
            String::from_utf8_lossy(&o.stderr)
        );
        for b in macros {
            if a.0 == b.0 {
                continue;
            }
            n += 1;
            let o = compile(&[a, b], n);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{} with {} compiled", a.1, b.1);
            assert!(
                err.contains(&format!("#error \"tstate: {}:", b.1))
                    || err.contains(&format!("tstate: {}: another facade's", b.1)),
                "{} with {}: not the clear error:\n{err}",
                a.1,
                b.1
            );
        }
    }
}

/// Two facades linked statically into one embedder have a runtime each on
/// CPython too, each with its own `atexit` gate: native threads calling
/// Python through both while `Py_FinalizeEx` runs end by a clean refusal,
/// none killed (`pthread_join` returns: a killed thread would have left
/// `alive` above 0), no crash, no hang. 10 runs, each under the 60 s
/// watchdog of `run`.
#[test]
fn two_static_facades_survive_interpreter_exit_on_cpython() {
    let out = embedder("two_facades_exit", &["ensure", "handle"]);
    for k in 0..10 {
        run(&out, "two_facades_exit").unwrap_or_else(|e| panic!("run {k}: {e}"));
    }
}

/// A subinterpreter one facade's runtime registered and another ended is
/// never touched again by the first (CPython frees it when
/// `Py_EndInterpreter` returns): its finalize answers BUSY and a new thread
/// state FINALIZING. Regression: the first runtime's finalize called
/// `Py_EndInterpreter` on the freed interpreter (SIGSEGV after "Fatal Python
/// error: Py_EndInterpreter: not the last thread", every run).
#[test]
fn a_subinterpreter_ended_through_another_facade_is_never_touched_again() {
    let out = embedder("ended_elsewhere", &["ensure", "activate"]);
    run(&out, "ended_elsewhere").unwrap();
}

/// Builds `conformance/c/<name>.c` as an embedder of CPython 3.11
/// (`python3-config --embed`) with `facades` linked statically.
fn embedder(name: &str, facades: &[&str]) -> PathBuf {
    let ws = workspace();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let mut cmd = Command::new("gcc");
    cmd.args(["-std=c11", "-g", "-Wall", "-Wextra", "-Werror"])
        .args(python_config("--includes"));
    for f in facades {
        cmd.arg("-I").arg(ws.join(format!("ffi-{f}/include")));
    }
    cmd.arg("-I")
        .arg(ws.join("conformance/c"))
        .arg(ws.join(format!("conformance/c/{name}.c")));
    for f in facades {
        cmd.arg(staticlib(f));
    }
    cmd.args(python_config("--ldflags"))
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&out);
    let o = cmd.output().expect("gcc not runnable");
    assert!(
        o.status.success(),
        "building {name}.c failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}
