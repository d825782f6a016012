//! The `tstate` Python package, built and used as an extension author
//! would: one abi3 wheel (maturin), installed into a fresh virtual
//! environment per CPython found, extensions built against
//! `tstate.get_include()` with the compiler, and the exit race run through
//! them.
//!
//! Per CPython:
//! * **checks** (`conformance/cpython/wheel_checks.py`): version and
//!   include directory, the read-only diagnostics, the exit bound set from
//!   Python, one runtime shared by two independent extensions (a span
//!   opened through one is released through the other), `import_tstate()`
//!   failing with ImportError when the package is missing and when the
//!   table is older than the header, the README's C and Cython examples,
//!   and the import into subinterpreters (shared GIL; own GIL on 3.12+);
//! * **the exit race** (`conformance/cpython/wheel_main.py`): three
//!   independent extensions — `exitrace_ext.c` built twice (ensure and
//!   guard designs) and `wheel_cy.pyx` (Cython) — each with native threads
//!   calling Python while the interpreter exits; a run is clean when all
//!   three report every thread refused cleanly (`exitrace` classifies each).
//!
//! The tools (maturin, Cython; pinned) are installed with pip into a
//! virtual environment under the target directory, once.

use crate::exitrace::{
    CFLAGS, Outcome, Raw, Run, classify_exit, first_line, gcc, parallel_map, run_process, sources,
    workspace,
};
use crate::pythons::Python;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The maturin the wheel is built with (pip requirement).
pub const MATURIN: &str = "maturin==1.16.0";
/// The Cython the Cython extensions are translated with.
pub const CYTHON: &str = "cython==3.3.1";
/// Native threads per extension in the exit race.
pub const THREADS: usize = 4;
/// The extensions of the exit race, by module name.
pub const RACE_MODULES: [&str; 3] = ["wheel_a", "wheel_b", "wheel_cy"];

/// Where everything is built: `<target>/tstate-wheel`.
pub fn default_root() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("tstate-wheel")
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let o = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The build tools' virtual environment.
#[derive(Debug, Clone)]
pub struct Tools {
    /// Its Python.
    pub python: PathBuf,
    /// `maturin`.
    pub maturin: PathBuf,
    /// `cython`.
    pub cython: PathBuf,
}

/// Makes (once) the tools' virtual environment under `root` with `base`'s
/// Python and installs [`MATURIN`] and [`CYTHON`] into it with pip.
pub fn tools(root: &Path, base: &Python) -> Result<Tools, String> {
    let venv = root.join("tools");
    let bin = venv.join("bin");
    let t = Tools {
        python: bin.join("python"),
        maturin: bin.join("maturin"),
        cython: bin.join("cython"),
    };
    let stamp = venv.join("tstate-tools.txt");
    let want = format!("{MATURIN} {CYTHON}");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str())
        && t.maturin.exists()
        && t.cython.exists()
    {
        return Ok(t);
    }
    std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
    run(
        Command::new(&base.exe)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
        "python -m venv (tools)",
    )?;
    run(
        Command::new(&t.python).args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            MATURIN,
            CYTHON,
        ]),
        "pip install maturin cython",
    )?;
    std::fs::write(&stamp, want).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(t)
}

/// Builds the wheel with maturin (release, its own cargo target directory
/// under `root`); returns its path.
pub fn build_wheel(root: &Path, tools: &Tools) -> Result<PathBuf, String> {
    let dist = root.join("dist");
    let _ = std::fs::remove_dir_all(&dist);
    run(
        Command::new(&tools.maturin)
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(workspace().join("python/Cargo.toml"))
            .arg("--out")
            .arg(&dist)
            .arg("--interpreter")
            .arg(&tools.python)
            .env("CARGO_TARGET_DIR", root.join("cargo"))
            .env_remove("CARGO_BUILD_TARGET_DIR"),
        "maturin build",
    )?;
    let wheels: Vec<PathBuf> = std::fs::read_dir(&dist)
        .map_err(|e| format!("{}: {e}", dist.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    match wheels.as_slice() {
        [w] => Ok(w.clone()),
        _ => Err(format!(
            "maturin left {} wheels in {}",
            wheels.len(),
            dist.display()
        )),
    }
}

/// The Cython sources translated to C: (module name, `.c` file).
pub fn cythonize(root: &Path, tools: &Tools) -> Result<Vec<(String, PathBuf)>, String> {
    let include = workspace().join("python/py/tstate/include");
    let out = root.join("cython");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut v = Vec::new();
    for (module, pyx) in [
        ("wheel_cy", sources().join("wheel_cy.pyx")),
        (
            "cy_callback",
            workspace().join("examples/python/cy_callback.pyx"),
        ),
    ] {
        let c = out.join(format!("{module}.c"));
        run(
            Command::new(&tools.cython)
                .arg("-I")
                .arg(&include)
                .arg(&pyx)
                .arg("-o")
                .arg(&c),
            "cython",
        )?;
        v.push((module.to_string(), c));
    }
    Ok(v)
}

/// One CPython's environment: the wheel installed, the extensions built.
#[derive(Debug, Clone)]
pub struct Env {
    /// The CPython.
    pub py: Python,
    /// The virtual environment's Python.
    pub python: PathBuf,
    /// `tstate.get_include()` there.
    pub include: PathBuf,
    /// The directory of the built extensions.
    pub ext: PathBuf,
}

/// A fresh virtual environment for `py` under `root` with `wheel`
/// installed (pip, no index), and the extensions built against it.
pub fn prepare(
    root: &Path,
    py: &Python,
    wheel: &Path,
    cython_c: &[(String, PathBuf)],
) -> Result<Env, String> {
    let venv = root.join(format!("venv-{}", py.short()));
    run(
        Command::new(&py.exe)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
        "python -m venv",
    )?;
    let python = venv.join("bin/python");
    run(
        Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .args(["--no-index", "--no-deps"])
            .arg(wheel),
        "pip install the wheel",
    )?;
    let include = PathBuf::from(
        run(
            Command::new(&python).args(["-c", "import tstate; print(tstate.get_include())"]),
            "tstate.get_include()",
        )?
        .trim(),
    );
    let ext = root.join(format!("ext-{}", py.short()));
    let base = |strict: bool| -> Vec<String> {
        let mut a: Vec<String> = if strict {
            CFLAGS.iter().map(|s| s.to_string()).collect()
        } else {
            vec!["-O1".into(), "-g".into()]
        };
        a.extend(["-shared".into(), "-fPIC".into()]);
        a.extend(py.cflags());
        a.push(format!("-I{}", include.display()));
        a
    };
    let header = include.join("tstate_capi.h");
    let exitrace = sources().join("exitrace_ext.c");
    for (module, design, extra) in [
        ("wheel_a", "ENSURE", None),
        ("wheel_b", "GUARD", None),
        (
            "wheel_new",
            "ENSURE",
            Some("-DTSTATE_CAPI_REQUIRED_VERSION=999"),
        ),
    ] {
        let mut a = base(true);
        a.push(format!("-I{}", sources().display()));
        a.extend([
            "-DTSTATE_CAPI".to_string(),
            format!("-DDESIGN_{design}"),
            format!("-DEXITRACE_MODULE={module}"),
        ]);
        a.extend(extra.map(str::to_string));
        a.push(exitrace.display().to_string());
        a.push("-lpthread".into());
        let inputs = [exitrace.clone(), sources().join("design.h"), header.clone()];
        gcc(&a, &inputs, &ext.join(format!("{module}.so")))?;
    }
    let example = workspace().join("examples/python/callback.c");
    let mut a = base(true);
    a.push(example.display().to_string());
    a.push("-lpthread".into());
    gcc(
        &a,
        &[example.clone(), header.clone()],
        &ext.join("callback_demo.so"),
    )?;
    for (module, c) in cython_c {
        // Cython's generated C is not warning-clean: not -Werror
        let mut a = base(false);
        a.push(c.display().to_string());
        a.push("-lpthread".into());
        gcc(
            &a,
            &[c.clone(), header.clone()],
            &ext.join(format!("{module}.so")),
        )?;
    }
    Ok(Env {
        py: py.clone(),
        python,
        include,
        ext,
    })
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct Check {
    /// Its name (`one_runtime`).
    pub name: String,
    /// `Ok(detail)` or `Err(why)`.
    pub result: Result<String, String>,
}

/// The checks every CPython must pass (`wheel_checks.py` prints them); a
/// check that is missing from the output is reported failed.
pub fn expected_checks(minor: u32) -> Vec<&'static str> {
    let mut v = vec![
        "version",
        "get_include",
        "diagnostics",
        "exit_bound",
        "one_runtime",
        "inline_path",
        "missing_package",
        "model_backend_refused",
        "table_older_than_header",
        "example_c",
        "example_cython",
        "subinterpreter_legacy",
    ];
    if minor >= 12 {
        v.push("subinterpreter_own_gil");
    }
    v
}

/// Runs `wheel_checks.py` in `env` (its own process, under a watchdog).
pub fn checks(env: &Env) -> Vec<Check> {
    let mut cmd = Command::new(&env.python);
    cmd.arg(sources().join("wheel_checks.py"))
        .arg(&env.ext)
        .arg(env!("CARGO_PKG_VERSION"));
    let raw = run_process(cmd, Duration::from_secs(120));
    let mut out: Vec<Check> = Vec::new();
    for line in raw.stdout.lines() {
        let mut it = line.splitn(4, ' ');
        if it.next() != Some("CHECK") {
            continue;
        }
        let name = it.next().unwrap_or_default().to_string();
        let status = it.next().unwrap_or_default();
        let detail = it.next().unwrap_or_default().to_string();
        out.push(Check {
            name,
            result: if status == "ok" {
                Ok(detail)
            } else {
                Err(detail)
            },
        });
    }
    for name in expected_checks(env.py.version.1) {
        if !out.iter().any(|c| c.name == name) {
            let why = if raw.hung {
                "the check process hung".to_string()
            } else {
                format!(
                    "not run (exit {:?}): {}",
                    raw.status.and_then(|s| s.code()),
                    first_line(&raw.stderr, 160)
                )
            };
            out.push(Check {
                name: name.into(),
                result: Err(why),
            });
        }
    }
    out
}

/// The exit race's runs on one CPython.
#[derive(Debug, Clone)]
pub struct Race {
    /// `3.11.7`.
    pub python: String,
    /// Each run: the worst of its three modules' verdicts.
    pub runs: Vec<Run>,
    /// Wall time of all runs.
    pub wall: Duration,
}

impl Race {
    /// Runs that ended as `o`.
    pub fn count(&self, o: Outcome) -> usize {
        self.runs.iter().filter(|r| r.outcome == o).count()
    }
}

/// One run's stdout restricted to `module`'s result line (and everything
/// that is not a result line), so that each module is classified alone.
fn only_module(raw: &Raw, module: &str) -> Raw {
    let tag = format!("module={module}");
    let keep = |l: &&str| !l.starts_with("EXITRACE") || l.split_whitespace().any(|kv| kv == tag);
    let mut r = raw.clone();
    r.stdout = raw
        .stdout
        .lines()
        .filter(keep)
        .collect::<Vec<_>>()
        .join("\n");
    r
}

/// Classifies one run: every module must be clean; else the worst.
fn classify(raw: &Raw) -> Run {
    let verdicts: Vec<Run> = RACE_MODULES
        .iter()
        .map(|m| {
            let mut r = classify_exit(&only_module(raw, m), THREADS);
            if r.outcome != Outcome::Clean {
                r.detail = format!("{m}: {}", r.detail);
            }
            r
        })
        .collect();
    let mut worst = verdicts
        .iter()
        .max_by_key(|r| r.outcome)
        .cloned()
        .expect("three modules");
    worst.calls = verdicts.iter().map(|r| r.calls).sum();
    worst.refused_finalizing = verdicts.iter().map(|r| r.refused_finalizing).sum();
    worst.refused_gone = verdicts.iter().map(|r| r.refused_gone).sum();
    worst
}

/// Runs the exit race `runs` times in `env`, two processes at a time, each
/// under a 30 s watchdog.
pub fn race(env: &Env, runs: usize) -> Race {
    let t0 = Instant::now();
    let idx: Vec<usize> = (0..runs).collect();
    let out = parallel_map(&idx, 2, |_| {
        let mut cmd = Command::new(&env.python);
        cmd.arg(sources().join("wheel_main.py"))
            .arg(&env.ext)
            .arg(THREADS.to_string());
        classify(&run_process(cmd, Duration::from_secs(30)))
    });
    Race {
        python: env.py.full_version.clone(),
        runs: out,
        wall: t0.elapsed(),
    }
}

/// Everything for one CPython.
#[derive(Debug, Clone)]
pub struct Row {
    /// `3.11.7`.
    pub python: String,
    /// Why the environment could not be prepared, if so.
    pub error: Option<String>,
    /// The checks.
    pub checks: Vec<Check>,
    /// The exit race (`None` if not prepared).
    pub race: Option<Race>,
}

impl Row {
    /// Whether everything passed: prepared, every check ok, every run clean.
    pub fn ok(&self) -> bool {
        self.error.is_none()
            && self.checks.iter().all(|c| c.result.is_ok())
            && self
                .race
                .as_ref()
                .is_some_and(|r| r.count(Outcome::Clean) == r.runs.len() && !r.runs.is_empty())
    }
}

/// The whole measurement.
#[derive(Debug, Clone)]
pub struct Report {
    /// The wheel's file name.
    pub wheel: String,
    /// One row per CPython.
    pub rows: Vec<Row>,
    /// Runs per CPython.
    pub runs: usize,
    /// Wall time.
    pub wall: Duration,
}

/// Builds the tools and the wheel, then for every CPython in `pythons`
/// prepares an environment and runs the checks and `runs` exit races.
pub fn measure(root: &Path, pythons: &[Python], runs: usize) -> Result<Report, String> {
    let t0 = Instant::now();
    let base = pythons
        .iter()
        .find(|p| p.version == (3, 11))
        .or_else(|| pythons.first())
        .ok_or("no CPython 3.9-3.13 found")?;
    let tools = tools(root, base)?;
    let wheel = build_wheel(root, &tools)?;
    let cython_c = cythonize(root, &tools)?;
    let mut rows = Vec::new();
    for py in pythons {
        let mut row = Row {
            python: py.full_version.clone(),
            error: None,
            checks: Vec::new(),
            race: None,
        };
        match prepare(root, py, &wheel, &cython_c) {
            Ok(env) => {
                row.checks = checks(&env);
                row.race = Some(race(&env, runs));
            }
            Err(e) => row.error = Some(e),
        }
        rows.push(row);
    }
    Ok(Report {
        wheel: wheel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        rows,
        runs,
        wall: t0.elapsed(),
    })
}

/// The report as a Markdown table (`docs/python.md`) followed by the
/// failures, if any.
pub fn render_markdown(rep: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Wheel `{}`; {} exit-race runs per CPython (3 extensions × {THREADS} native threads \
         each); {:.1} s in all.\n",
        rep.wheel,
        rep.runs,
        rep.wall.as_secs_f64()
    );
    s.push_str(
        "| CPython | checks passed | exit race: clean / killed / crashed / hung / stuck / other | \
         threads refused (finalizing / gone) | median calls per run |\n|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    for r in &rep.rows {
        if let Some(e) = &r.error {
            let _ = writeln!(s, "| {} | not prepared | — | — | — |", r.python);
            failures.push(format!("{}: {}", r.python, first_line(e, 300)));
            continue;
        }
        let passed = r.checks.iter().filter(|c| c.result.is_ok()).count();
        for c in &r.checks {
            if let Err(e) = &c.result {
                failures.push(format!("{} check {}: {e}", r.python, c.name));
            }
        }
        let race = r.race.as_ref().expect("prepared rows have a race");
        let mut calls: Vec<u64> = race.runs.iter().filter_map(|x| x.calls).collect();
        calls.sort_unstable();
        let median = calls
            .get(calls.len() / 2)
            .map_or("—".to_string(), u64::to_string);
        let rf: u64 = race.runs.iter().map(|x| x.refused_finalizing).sum();
        let rg: u64 = race.runs.iter().map(|x| x.refused_gone).sum();
        let _ = writeln!(
            s,
            "| {} | {passed} of {} | {} / {} / {} / {} / {} / {} | {rf} / {rg} | {median} |",
            r.python,
            r.checks.len(),
            race.count(Outcome::Clean),
            race.count(Outcome::Killed),
            race.count(Outcome::Crashed),
            race.count(Outcome::Hung),
            race.count(Outcome::Stuck),
            race.count(Outcome::Other),
        );
        for x in race.runs.iter().filter(|x| x.outcome != Outcome::Clean) {
            failures.push(format!(
                "{} run {}: {}",
                r.python,
                x.outcome.label(),
                x.detail
            ));
        }
    }
    if !failures.is_empty() {
        s.push_str("\nFailures:\n");
        for f in failures.iter().take(40) {
            let _ = writeln!(s, "- {f}");
        }
    }
    s
}
