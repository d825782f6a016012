//! The exit race on real CPython, per CPython version and design.
//!
//! **A (exit race).** `conformance/cpython/exitrace_ext.c` is a real
//! extension module: the discussion's `c_thread_func` on native threads,
//! calling a Python callable through one facade (or through raw
//! `PyGILState_Ensure`, the baseline) while the interpreter exits.
//! `conformance/cpython/exitrace_main.py` imports it, starts the threads and
//! returns, so `Py_FinalizeEx` runs while they call in; the module's C
//! `atexit` handler prints one `EXITRACE` line after it.
//!
//! **B (subinterpreter end).** `conformance/cpython/subinterp.c` embeds
//! CPython: a subinterpreter's own native threads call back into it while
//! the main thread finalizes it (`Py_EndInterpreter`), shared GIL and (3.12+)
//! own GIL; it prints one `RESULT` line.
//!
//! Everything is built with `gcc` once per (CPython, design) into a build
//! directory (rebuilt only when a source, a header, the facade's static
//! library or the command changes) and run in separate processes — each in
//! its own process group, under a watchdog that kills the whole group —,
//! two at a time. Each run is classified: [`Outcome`].

use crate::pythons::Python;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// One design a program is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Design {
    /// `gilstate`, `ensure`, `handle`, `activate`.
    pub name: &'static str,
    /// The facade crate's suffix (`libtstate_ffi_<facade>.a`,
    /// `ffi-<facade>/include`), `None` for the baseline.
    pub facade: Option<&'static str>,
}

impl Design {
    /// The `-DDESIGN_*` macro.
    pub fn define(&self) -> String {
        format!("-DDESIGN_{}", self.name.to_ascii_uppercase())
    }

    /// Whether this is a facade (not the baseline).
    pub fn is_facade(&self) -> bool {
        self.facade.is_some()
    }
}

/// The designs measured, baseline first.
pub const DESIGNS: [Design; 5] = [
    Design {
        name: "gilstate",
        facade: None,
    },
    Design {
        name: "ensure",
        facade: Some("ensure"),
    },
    Design {
        name: "handle",
        facade: Some("handle"),
    },
    Design {
        name: "activate",
        facade: Some("activate"),
    },
    Design {
        name: "guard",
        facade: Some("guard"),
    },
];

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Experiment {
    /// A: the extension module's threads while the interpreter exits.
    ExitRace,
    /// B: a subinterpreter sharing main's GIL, ended while its threads call in.
    SubShared,
    /// B: a subinterpreter with its own GIL (3.12+).
    SubOwn,
}

impl Experiment {
    /// Short label for tables.
    pub fn label(&self) -> &'static str {
        match self {
            Experiment::ExitRace => "A exit",
            Experiment::SubShared => "B shared",
            Experiment::SubOwn => "B own",
        }
    }

    /// Whether the experiment can run on CPython `minor` (own GIL: 3.12+).
    pub fn applies(&self, minor: u32) -> bool {
        *self != Experiment::SubOwn || minor >= 12
    }
}

/// How one run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Exit 0, the result line present, every thread refused cleanly (or
    /// finished), none killed, nothing else wrong.
    Clean,
    /// At least one thread was killed by CPython (`pthread_exit` in
    /// `take_gil`).
    Killed,
    /// A signal (SIGSEGV, SIGABRT, …) or "Fatal Python error".
    Crashed,
    /// The watchdog killed the process group.
    Hung,
    /// The process exited, but threads were still inside an attach or
    /// looping (neither refused, finished nor killed) when it did.
    Stuck,
    /// Anything else (a non-zero exit, a missing result line, a failed
    /// check); the detail says what.
    Other,
}

impl Outcome {
    /// Lower-case label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Clean => "clean",
            Outcome::Killed => "killed",
            Outcome::Crashed => "crashed",
            Outcome::Hung => "hung",
            Outcome::Stuck => "stuck",
            Outcome::Other => "other",
        }
    }
}

/// One run's verdict.
#[derive(Debug, Clone)]
pub struct Run {
    /// The class.
    pub outcome: Outcome,
    /// Why (empty for a clean run).
    pub detail: String,
    /// Python calls (A) or spans (B) the threads made, if reported.
    pub calls: Option<u64>,
    /// Threads refused with FINALIZING (facades).
    pub refused_finalizing: u64,
    /// Threads refused with NO_SUCH_INTERPRETER (facades).
    pub refused_gone: u64,
    /// Wall time of the process.
    pub wall: Duration,
}

/// The runs of one (CPython, experiment, design).
#[derive(Debug, Clone)]
pub struct Row {
    /// The full CPython version (`3.11.7`).
    pub python: String,
    /// Its minor version.
    pub minor: u32,
    /// What was measured.
    pub experiment: Experiment,
    /// With which design.
    pub design: Design,
    /// Why the program could not be built, if it could not.
    pub build_error: Option<String>,
    /// The runs.
    pub runs: Vec<Run>,
}

impl Row {
    /// Runs of outcome `o`.
    pub fn count(&self, o: Outcome) -> usize {
        self.runs.iter().filter(|r| r.outcome == o).count()
    }

    /// Every run clean, and at least one run.
    pub fn all_clean(&self) -> bool {
        self.build_error.is_none()
            && !self.runs.is_empty()
            && self.count(Outcome::Clean) == self.runs.len()
    }

    /// The median of the reported calls.
    pub fn median_calls(&self) -> Option<u64> {
        let mut v: Vec<u64> = self.runs.iter().filter_map(|r| r.calls).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        Some(v[v.len() / 2])
    }

    /// The distinct details, most frequent first (`detail ×n`), and the
    /// refusal codes seen in clean runs.
    pub fn notes(&self) -> String {
        if let Some(e) = &self.build_error {
            return format!("build failed: {}", first_line(e, 100));
        }
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for r in self.runs.iter().filter(|r| !r.detail.is_empty()) {
            *by.entry(r.detail.as_str()).or_default() += 1;
        }
        let mut v: Vec<(&str, usize)> = by.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut parts: Vec<String> = v.iter().take(3).map(|(d, n)| format!("{d} ×{n}")).collect();
        if v.len() > 3 {
            parts.push(format!("{} more kinds", v.len() - 3));
        }
        if self.design.is_facade() {
            let (f, g) = self
                .runs
                .iter()
                .filter(|r| r.outcome == Outcome::Clean)
                .fold((0, 0), |(f, g), r| {
                    (f + r.refused_finalizing, g + r.refused_gone)
                });
            if f + g > 0 {
                parts.push(format!("refusals: {f} FINALIZING, {g} NO_SUCH_INTERPRETER"));
            }
        }
        parts.join("; ")
    }
}

/// Parameters of a measurement.
#[derive(Debug, Clone)]
pub struct Config {
    /// Runs per (CPython, design) of A.
    pub runs_exit: usize,
    /// Runs per (CPython, design, lock mode) of B, facades.
    pub runs_sub: usize,
    /// Runs per (CPython, lock mode) of B's baseline (0: not measured).
    pub runs_sub_baseline: usize,
    /// A's native threads.
    pub threads_exit: usize,
    /// B's native threads.
    pub threads_sub: usize,
    /// How long A's driver sleeps after every thread made a call.
    pub sleep_ms: u32,
    /// How long A's atexit report waits for the threads to settle.
    pub settle_ms: u32,
    /// B's finalize bound.
    pub finalize_timeout_ms: u32,
    /// Bound on one process; the whole process group is killed after it.
    pub watchdog: Duration,
    /// Processes (and builds) at a time.
    pub parallel: usize,
    /// Where programs are built.
    pub build_dir: PathBuf,
    /// Print a progress line to stderr now and then.
    pub progress: bool,
}

impl Config {
    /// The defaults (8 threads for A, 4 for B, 20 s watchdog, 2 at a time)
    /// with `runs` runs for A and for B, building into `build_dir`.
    pub fn new(runs: usize, build_dir: PathBuf) -> Config {
        Config {
            runs_exit: runs,
            runs_sub: runs,
            runs_sub_baseline: runs,
            threads_exit: 8,
            threads_sub: 4,
            sleep_ms: 5,
            settle_ms: 500,
            finalize_timeout_ms: 10_000,
            watchdog: Duration::from_secs(20),
            parallel: 2,
            build_dir,
            progress: false,
        }
    }
}

/// A measurement's result.
#[derive(Debug, Clone)]
pub struct Report {
    /// One row per (CPython, experiment, design), in order.
    pub rows: Vec<Row>,
    /// Which CPython versions ran and which were skipped.
    pub pythons: String,
    /// Rows not measured, and why (own GIL before 3.12).
    pub not_applicable: Vec<String>,
    /// Wall time of the whole measurement (builds included).
    pub wall: Duration,
    /// Total processes run.
    pub processes: usize,
    /// A's native threads per run.
    pub threads_exit: usize,
    /// B's native threads per run.
    pub threads_sub: usize,
}

impl Report {
    /// The rows `pred` selects.
    pub fn rows_of(&self, pred: impl Fn(&Row) -> bool) -> Vec<&Row> {
        self.rows.iter().filter(|r| pred(r)).collect()
    }

    /// Facade rows that are not all clean (what must be empty).
    pub fn facade_failures(&self) -> Vec<&Row> {
        self.rows_of(|r| r.design.is_facade() && !r.all_clean())
    }
}

pub(crate) fn first_line(s: &str, max: usize) -> String {
    let l = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if l.chars().count() > max {
        format!("{}…", l.chars().take(max).collect::<String>())
    } else {
        l.to_string()
    }
}

/// The conformance crate's directory (`conformance/`).
fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace root.
pub(crate) fn workspace() -> PathBuf {
    crate_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(crate_dir)
}

/// The sources: `conformance/cpython/`.
pub fn sources() -> PathBuf {
    crate_dir().join("cpython")
}

/// The facade's static library, built on demand by `tstate-capi` with
/// the running code's profile (`target/capi/<profile>/`).
pub fn staticlib(facade: &str) -> Result<PathBuf, String> {
    tstate_capi::build(facade, tstate_capi::Profile::current()).map(|b| b.staticlib)
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Runs `gcc args… -o out` unless `out` is newer than every input and was
/// built with the same command (kept in `out.cmd`).
pub(crate) fn gcc(args: &[String], inputs: &[PathBuf], out: &Path) -> Result<(), String> {
    let cmdline = args.join(" ");
    let stamp = out.with_extension("cmd");
    let fresh = match (mtime(out), std::fs::read_to_string(&stamp)) {
        (Some(t), Ok(prev)) if prev == cmdline => {
            inputs.iter().all(|i| mtime(i).is_some_and(|m| m <= t))
        }
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let o = Command::new("gcc")
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .map_err(|e| format!("gcc not runnable: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "gcc {cmdline}\n{}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    std::fs::write(&stamp, cmdline).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(())
}

pub(crate) const CFLAGS: [&str; 6] = ["-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Werror"];

/// Compiler flags and inputs for `design` (its include dir and static
/// library; none for the baseline).
fn design_parts(design: &Design) -> Result<(Vec<String>, Vec<PathBuf>), String> {
    let mut flags = vec![design.define()];
    let mut inputs = vec![sources().join("design.h")];
    if let Some(f) = design.facade {
        let inc = workspace().join(format!("ffi-{f}/include"));
        flags.push(format!("-I{}", inc.display()));
        inputs.push(inc.join(format!("tstate_{f}.h")));
        inputs.push(staticlib(f)?);
    }
    Ok((flags, inputs))
}

fn py_dir(build_dir: &Path, py: &Python, design: &Design) -> PathBuf {
    build_dir
        .join(format!("py{}", py.short()))
        .join(design.name)
}

/// Builds A's extension module for (`py`, `design`); returns the directory
/// holding `exitrace_ext.so`.
pub fn build_extension(build_dir: &Path, py: &Python, design: &Design) -> Result<PathBuf, String> {
    let dir = py_dir(build_dir, py, design);
    let src = sources().join("exitrace_ext.c");
    let (dflags, mut inputs) = design_parts(design)?;
    let mut args: Vec<String> = CFLAGS.iter().map(|s| s.to_string()).collect();
    args.extend(["-shared".into(), "-fPIC".into()]);
    args.extend(py.cflags());
    args.extend(dflags);
    args.push(src.display().to_string());
    if let Some(lib) = inputs.last().filter(|_| design.is_facade()) {
        args.push(lib.display().to_string());
        // the facade's symbols stay private to the module
        args.push("-Wl,--exclude-libs,ALL".into());
    }
    args.extend(["-lpthread".into(), "-ldl".into(), "-lm".into()]);
    inputs.push(src);
    gcc(&args, &inputs, &dir.join("exitrace_ext.so"))?;
    Ok(dir)
}

/// Builds B's embedding program for (`py`, `design`); returns its path.
pub fn build_subinterp(build_dir: &Path, py: &Python, design: &Design) -> Result<PathBuf, String> {
    let out = py_dir(build_dir, py, design).join("subinterp");
    let src = sources().join("subinterp.c");
    let (dflags, mut inputs) = design_parts(design)?;
    let mut args: Vec<String> = CFLAGS.iter().map(|s| s.to_string()).collect();
    args.extend(py.cflags());
    args.extend(dflags);
    args.push(src.display().to_string());
    if let Some(lib) = inputs.last().filter(|_| design.is_facade()) {
        args.push(lib.display().to_string());
    }
    args.extend(py.embed_ldflags());
    inputs.push(src);
    inputs.push(py.libpython.clone());
    gcc(&args, &inputs, &out)?;
    Ok(out)
}

/// What a process did.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub(crate) status: Option<ExitStatus>,
    pub(crate) hung: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) wall: Duration,
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = r.read_to_end(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    })
}

/// Runs `cmd` in its own process group; past `watchdog` the whole group
/// is killed (SIGKILL).
pub(crate) fn run_process(mut cmd: Command, watchdog: Duration) -> Raw {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .env("RUST_BACKTRACE", "0")
        .env_remove("TSTATE_BACKEND")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME");
    let t0 = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Raw {
                status: None,
                hung: false,
                stdout: String::new(),
                stderr: format!("spawn failed: {e}"),
                wall: t0.elapsed(),
            };
        }
    };
    let out = child.stdout.take().map(reader);
    let err = child.stderr.take().map(reader);
    let mut hung = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(_) => break None,
        }
        if t0.elapsed() > watchdog {
            hung = true;
            // the group's id is the child's pid (process_group(0))
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = t0.elapsed();
    let join = |h: Option<std::thread::JoinHandle<String>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Raw {
        status,
        hung,
        stdout: join(out),
        stderr: join(err),
        wall,
    }
}

/// The value of `key=` in a `KEY k=v …` line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn num(line: &str, key: &str) -> Option<u64> {
    field(line, key).and_then(|v| v.parse().ok())
}

fn signal_name(sig: i32) -> String {
    match sig {
        4 => "SIGILL".into(),
        6 => "SIGABRT".into(),
        7 => "SIGBUS".into(),
        8 => "SIGFPE".into(),
        9 => "SIGKILL".into(),
        11 => "SIGSEGV".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

/// The crash detail: the signal and the first fatal message, if any.
fn crash(raw: &Raw) -> Option<String> {
    let fatal = find_line(raw, &["Fatal Python error", "Fatal tstate error"]);
    let sig = raw.status.and_then(|s| s.signal());
    match (sig, fatal) {
        (None, None) => None,
        (Some(s), None) => Some(signal_name(s)),
        (None, Some(f)) => Some(f),
        (Some(s), Some(f)) => Some(format!("{}: {f}", signal_name(s))),
    }
}

/// The first line of the output containing one of `needles`, shortened.
fn find_line(raw: &Raw, needles: &[&str]) -> Option<String> {
    raw.stderr
        .lines()
        .chain(raw.stdout.lines())
        .find(|l| needles.iter().any(|n| l.contains(n)))
        .map(|l| first_line(l, 90))
}

/// What the library or Rust said that a clean run never says: a caught
/// panic, or a CPython-started finalization whose bound passed with
/// threads inside spans.
fn complaint(raw: &Raw) -> Option<String> {
    find_line(raw, &["panicked at", "still inside spans after"])
}

fn result_line<'a>(raw: &'a Raw, tag: &str) -> Option<&'a str> {
    raw.stdout
        .lines()
        .chain(raw.stderr.lines())
        .find(|l| l.starts_with(tag) && l[tag.len()..].starts_with(' '))
}

fn verdict(raw: &Raw, outcome: Outcome, detail: String, calls: Option<u64>) -> Run {
    Run {
        outcome,
        detail,
        calls,
        refused_finalizing: 0,
        refused_gone: 0,
        wall: raw.wall,
    }
}

/// The run's `tag` result line, or the verdict of a run that has none: hung
/// (the watchdog), crashed, or ended without printing it.
fn result_or_failure<'a>(raw: &'a Raw, tag: &str) -> Result<&'a str, Run> {
    if raw.hung {
        return Err(verdict(
            raw,
            Outcome::Hung,
            format!("watchdog after {:?}", raw.wall),
            None,
        ));
    }
    if let Some(c) = crash(raw) {
        return Err(verdict(raw, Outcome::Crashed, c, None));
    }
    result_line(raw, tag).ok_or_else(|| {
        let code = raw.status.and_then(|s| s.code());
        let why = first_line(&raw.stderr, 90);
        verdict(
            raw,
            Outcome::Other,
            format!("no {tag} line (exit {code:?}): {why}"),
            None,
        )
    })
}

/// Classifies one run of A.
pub(crate) fn classify_exit(raw: &Raw, threads: usize) -> Run {
    let code = raw.status.and_then(|s| s.code());
    let line = match result_or_failure(raw, "EXITRACE") {
        Ok(line) => line,
        Err(run) => return run,
    };
    let calls = num(line, "calls");
    let g = |k| num(line, k).unwrap_or(0) as usize;
    let (refused, killed, finished, running, failed, pyerr) = (
        g("refused"),
        g("killed"),
        g("finished"),
        g("running"),
        g("failed"),
        g("pyerrors"),
    );
    let mut run = if killed > 0 {
        verdict(
            raw,
            Outcome::Killed,
            format!("{killed}/{threads} threads killed"),
            calls,
        )
    } else if code != Some(0) {
        verdict(raw, Outcome::Other, format!("exit {code:?}"), calls)
    } else if running > 0 {
        verdict(
            raw,
            Outcome::Stuck,
            format!("{running}/{threads} threads still running at exit"),
            calls,
        )
    } else if failed > 0 || pyerr > 0 || g("threads") != threads || refused + finished != threads {
        verdict(
            raw,
            Outcome::Other,
            format!("failed={failed} pyerrors={pyerr} refused={refused} finished={finished}"),
            calls,
        )
    } else if let Some(c) = complaint(raw) {
        verdict(raw, Outcome::Other, c, calls)
    } else {
        verdict(raw, Outcome::Clean, String::new(), calls)
    };
    run.refused_finalizing = num(line, "refused_finalizing").unwrap_or(0);
    run.refused_gone = num(line, "refused_gone").unwrap_or(0);
    run
}

/// Classifies one run of B.
fn classify_sub(raw: &Raw, threads: usize) -> Run {
    let code = raw.status.and_then(|s| s.code());
    let line = match result_or_failure(raw, "RESULT") {
        Ok(line) => line,
        Err(run) => return run,
    };
    let calls = num(line, "calls");
    let g = |k| num(line, k).unwrap_or(0) as usize;
    if g("killed") > 0 {
        return verdict(
            raw,
            Outcome::Killed,
            format!("{}/{threads} threads killed", g("killed")),
            calls,
        );
    }
    if g("stuck") > 0 {
        return verdict(
            raw,
            Outcome::Stuck,
            format!("{}/{threads} threads never ended", g("stuck")),
            calls,
        );
    }
    let mut bad = Vec::new();
    if code != Some(0) {
        bad.push(format!("exit {code:?}"));
    }
    if g("refused") != threads {
        bad.push(format!("refused {}/{threads}", g("refused")));
    }
    for k in ["failed", "work_errors", "wrong_interp", "dangling"] {
        if g(k) > 0 {
            bad.push(format!("{k}={}", g(k)));
        }
    }
    for k in ["finalize_rc", "py_finalize_rc"] {
        if field(line, k) != Some("0") {
            bad.push(format!("{k}={}", field(line, k).unwrap_or("?")));
        }
    }
    if let Some(c) = complaint(raw) {
        bad.push(c);
    }
    if bad.is_empty() {
        verdict(raw, Outcome::Clean, String::new(), calls)
    } else {
        verdict(raw, Outcome::Other, bad.join(" "), calls)
    }
}

/// One process to run.
struct Job {
    row: usize,
    program: PathBuf,
    python: PathBuf,
    experiment: Experiment,
}

fn run_job(job: &Job, cfg: &Config) -> Run {
    let mut cmd;
    match job.experiment {
        Experiment::ExitRace => {
            cmd = Command::new(&job.python);
            cmd.arg("-I")
                .arg(sources().join("exitrace_main.py"))
                .arg(&job.program)
                .arg(cfg.threads_exit.to_string())
                .arg(cfg.sleep_ms.to_string())
                .env("EXITRACE_SETTLE_MS", cfg.settle_ms.to_string());
        }
        Experiment::SubShared | Experiment::SubOwn => {
            cmd = Command::new(&job.program);
            cmd.arg(if job.experiment == Experiment::SubOwn {
                "own"
            } else {
                "shared"
            })
            .arg(cfg.threads_sub.to_string())
            .arg(cfg.finalize_timeout_ms.to_string());
        }
    }
    let raw = run_process(cmd, cfg.watchdog);
    match job.experiment {
        Experiment::ExitRace => classify_exit(&raw, cfg.threads_exit),
        _ => classify_sub(&raw, cfg.threads_sub),
    }
}

/// Runs `f` over `items`, `parallel` at a time, keeping the order.
pub(crate) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    parallel: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(it) = items.get(i) else { break };
                    let r = f(it);
                    out.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
                }
            });
        }
    });
    let mut v = out.into_inner().unwrap_or_else(|e| e.into_inner());
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, r)| r).collect()
}

/// Measures A and B on every CPython in `pythons` with every design.
pub fn measure(cfg: &Config, pythons: &[Python]) -> Report {
    let t0 = Instant::now();
    let mut rows = Vec::new();
    let mut not_applicable = Vec::new();
    let mut plan: Vec<(usize, &Python, usize)> = Vec::new(); // (row, python, runs)
    for py in pythons {
        for exp in [
            Experiment::ExitRace,
            Experiment::SubShared,
            Experiment::SubOwn,
        ] {
            if !exp.applies(py.version.1) {
                not_applicable.push(format!(
                    "{} {}: no own GIL before 3.12",
                    py.full_version,
                    exp.label()
                ));
                continue;
            }
            for d in DESIGNS {
                let runs = match (exp, d.is_facade()) {
                    (Experiment::ExitRace, _) => cfg.runs_exit,
                    (_, true) => cfg.runs_sub,
                    (_, false) => cfg.runs_sub_baseline,
                };
                if runs == 0 {
                    continue;
                }
                plan.push((rows.len(), py, runs));
                rows.push(Row {
                    python: py.full_version.clone(),
                    minor: py.version.1,
                    experiment: exp,
                    design: d,
                    build_error: None,
                    runs: Vec::new(),
                });
            }
        }
    }
    // builds: each program once (B's two lock modes share one program)
    let key = |r: &Row| {
        (
            r.python.clone(),
            r.experiment == Experiment::ExitRace,
            r.design.name,
        )
    };
    let mut keys: Vec<(usize, &Python)> = Vec::new(); // (first row, python)
    for &(r, py, _) in &plan {
        if !keys.iter().any(|&(k, _)| key(&rows[k]) == key(&rows[r])) {
            keys.push((r, py));
        }
    }
    let built: Vec<Result<PathBuf, String>> = parallel_map(&keys, cfg.parallel, |&(r, py)| {
        let row = &rows[r];
        match row.experiment {
            Experiment::ExitRace => build_extension(&cfg.build_dir, py, &row.design),
            _ => build_subinterp(&cfg.build_dir, py, &row.design),
        }
    });
    let mut programs: BTreeMap<usize, PathBuf> = BTreeMap::new();
    for &(r, _, _) in &plan {
        let k = keys
            .iter()
            .position(|&(k, _)| key(&rows[k]) == key(&rows[r]))
            .unwrap_or_default();
        match &built[k] {
            Ok(p) => {
                programs.insert(r, p.clone());
            }
            Err(e) => rows[r].build_error = Some(e.clone()),
        }
    }
    // the runs, interleaved across rows so partial progress covers all
    let max_runs = plan.iter().map(|p| p.2).max().unwrap_or(0);
    let mut jobs = Vec::new();
    for k in 0..max_runs {
        for &(r, py, runs) in &plan {
            if k < runs && rows[r].build_error.is_none() {
                jobs.push(Job {
                    row: r,
                    program: programs[&r].clone(),
                    python: py.exe.clone(),
                    experiment: rows[r].experiment,
                });
            }
        }
    }
    let done = AtomicUsize::new(0);
    let total = jobs.len();
    let results = parallel_map(&jobs, cfg.parallel, |j| {
        let r = run_job(j, cfg);
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        if cfg.progress && (n % (total / 20).max(1) == 0 || n == total) {
            eprintln!("exitrace: {n}/{total} runs ({:.0?})", t0.elapsed());
        }
        r
    });
    for (j, r) in jobs.iter().zip(results) {
        rows[j.row].runs.push(r);
    }
    Report {
        rows,
        pythons: crate::pythons::summary(pythons),
        not_applicable,
        wall: t0.elapsed(),
        processes: total,
        threads_exit: cfg.threads_exit,
        threads_sub: cfg.threads_sub,
    }
}

const HEAD: [&str; 11] = [
    "python",
    "exp",
    "design",
    "runs",
    "clean",
    "killed",
    "crashed",
    "hung",
    "stuck",
    "other",
    "calls/run",
];

fn cells(r: &Row) -> Vec<String> {
    let design = if r.experiment != Experiment::ExitRace && !r.design.is_facade() {
        format!("{}†", r.design.name)
    } else {
        r.design.name.to_string()
    };
    let mut v = vec![
        r.python.clone(),
        r.experiment.label().to_string(),
        design,
        r.runs.len().to_string(),
    ];
    for o in [
        Outcome::Clean,
        Outcome::Killed,
        Outcome::Crashed,
        Outcome::Hung,
        Outcome::Stuck,
        Outcome::Other,
    ] {
        v.push(r.count(o).to_string());
    }
    v.push(
        r.median_calls()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
    );
    v
}

fn legend(rep: &Report) -> String {
    format!(
        "A exit: {} native threads of a real extension module call a Python callable through the design \
         (the discussion's c_thread_func) while the interpreter exits. B shared / B own: {} native threads \
         of a subinterpreter (sharing main's GIL / with its own GIL, 3.12+) call back into it while the main \
         thread ends it. clean: exit 0, every thread refused cleanly, none killed, every check held; \
         killed: CPython killed >= 1 thread (pthread_exit in take_gil); crashed: a signal or a Fatal Python \
         error; hung: the watchdog killed the process group; stuck: the process exited with threads still \
         inside an attach; other: see the notes. calls/run: median Python calls (A) or spans (B) per run. \
         gilstate† (B): PyGILState cannot target a subinterpreter; the baseline is the raw thread-state API \
         (PyThreadState_New + PyEval_RestoreThread per span) with a stop flag checked before each span.",
        rep.threads_exit, rep.threads_sub
    )
}

/// The table for a terminal.
pub fn render_terminal(rep: &Report) -> String {
    let mut rows: Vec<Vec<String>> = vec![HEAD.iter().map(|s| s.to_string()).collect()];
    rows.extend(rep.rows.iter().map(cells));
    let mut w = vec![0; HEAD.len()];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    let _ = writeln!(s, "CPython: {}", rep.pythons);
    for (i, r) in rows.iter().enumerate() {
        let mut line = String::new();
        for (k, c) in r.iter().enumerate() {
            let pad = w[k] - c.chars().count();
            if k < 3 {
                let _ = write!(line, "{c}{}  ", " ".repeat(pad));
            } else {
                let _ = write!(line, "{}{c}  ", " ".repeat(pad));
            }
        }
        if i > 0 {
            line.push_str(&rep.rows[i - 1].notes());
        } else {
            line.push_str("notes");
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
    for n in &rep.not_applicable {
        let _ = writeln!(s, "n/a: {n}");
    }
    let _ = writeln!(s, "{}", legend(rep));
    let _ = writeln!(s, "{} processes in {:.1?}", rep.processes, rep.wall);
    s
}

/// The table as markdown.
pub fn render_markdown(rep: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "CPython: {}\n", rep.pythons);
    let _ = writeln!(s, "| {} | notes |", HEAD.join(" | "));
    let _ = writeln!(s, "|{}---|", "---|".repeat(HEAD.len()));
    for r in &rep.rows {
        let _ = writeln!(
            s,
            "| {} | {} |",
            cells(r).join(" | "),
            r.notes().replace('|', "\\|")
        );
    }
    if !rep.not_applicable.is_empty() {
        let _ = writeln!(s, "\nNot applicable: {}.", rep.not_applicable.join("; "));
    }
    let _ = writeln!(
        s,
        "\n{}\n\n{} processes in {:.1?}.",
        legend(rep),
        rep.processes,
        rep.wall
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(code: i32, stdout: &str, stderr: &str) -> Raw {
        Raw {
            status: Some(ExitStatus::from_raw(code)),
            hung: false,
            stdout: stdout.into(),
            stderr: stderr.into(),
            wall: Duration::from_millis(1),
        }
    }

    const CLEAN_A: &str = "EXITRACE design=ensure py=3.12 threads=8 refused=8 killed=0 finished=0 running=0 failed=0 calls=10 pyerrors=0 refused_finalizing=7 refused_gone=1 settle_us=0";

    #[test]
    fn exit_race_lines_are_classified() {
        let r = classify_exit(&raw(0, CLEAN_A, ""), 8);
        assert_eq!(r.outcome, Outcome::Clean, "{r:?}");
        assert_eq!(
            (r.calls, r.refused_finalizing, r.refused_gone),
            (Some(10), 7, 1)
        );
        let killed = CLEAN_A.replace("refused=8 killed=0", "refused=0 killed=8");
        assert_eq!(
            classify_exit(&raw(0, &killed, ""), 8).outcome,
            Outcome::Killed
        );
        let stuck = CLEAN_A
            .replace("refused=8", "refused=6")
            .replace("running=0", "running=2");
        assert_eq!(
            classify_exit(&raw(0, &stuck, ""), 8).outcome,
            Outcome::Stuck
        );
        // wait status 11 = killed by SIGSEGV; 6 << 8 = exit code 6
        let c = classify_exit(&raw(11, "", ""), 8);
        assert_eq!(
            (c.outcome, c.detail.as_str()),
            (Outcome::Crashed, "SIGSEGV")
        );
        let f = classify_exit(
            &raw(6 << 8, CLEAN_A, "Fatal Python error: take_gil: x\n"),
            8,
        );
        assert_eq!(f.outcome, Outcome::Crashed);
        assert_eq!(classify_exit(&raw(0, "", ""), 8).outcome, Outcome::Other);
        let mut h = raw(9, "", "");
        h.hung = true;
        assert_eq!(classify_exit(&h, 8).outcome, Outcome::Hung);
    }

    /// The watchdog kills the whole process group: a grandchild holding the
    /// pipes open would otherwise keep the readers waiting for 30 s.
    #[test]
    fn watchdog_kills_the_process_group() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        let t0 = Instant::now();
        let r = run_process(cmd, Duration::from_millis(300));
        assert!(r.hung, "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        assert_eq!(classify_exit(&r, 8).outcome, Outcome::Hung);
    }

    #[test]
    fn subinterpreter_lines_are_classified() {
        let ok = "RESULT design=handle py=3.13 mode=own threads=4 refused=4 killed=0 stuck=0 failed=0 calls=9 work_errors=0 wrong_interp=0 dangling=0 finalize_rc=0 finalize_us=1 py_finalize_rc=0 main_gilstate=null main_gilstate_reattached=same";
        assert_eq!(classify_sub(&raw(0, ok, ""), 4).outcome, Outcome::Clean);
        let d = classify_sub(&raw(0, &ok.replace("dangling=0", "dangling=2"), ""), 4);
        assert_eq!(
            (d.outcome, d.detail.as_str()),
            (Outcome::Other, "dangling=2")
        );
        let t = ok.replace("finalize_rc=0 finalize_us", "finalize_rc=-10 finalize_us");
        assert_eq!(classify_sub(&raw(0, &t, ""), 4).outcome, Outcome::Other);
        let a = classify_sub(
            &raw(
                6,
                "",
                "Fatal Python error: Py_EndInterpreter: not the last thread\n",
            ),
            4,
        );
        assert_eq!(a.outcome, Outcome::Crashed);
        assert!(
            a.detail
                .starts_with("SIGABRT: Fatal Python error: Py_EndInterpreter"),
            "{a:?}"
        );
    }
}
