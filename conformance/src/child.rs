//! The conformance cases on real CPython: each case in its own process.
//!
//! CPython cannot be initialized twice reliably in one process, a case that
//! crashes or hangs CPython must not take the others with it, and each
//! CPython version is a different library. So the parent (the main job, or
//! the `cpython_suite` test) runs `tstate-compare --child FACADE CASE` once
//! per (CPython, facade, case), with `TSTATE_CHILD_LIBPYTHON` naming the
//! libpython to load, under a watchdog. The child `dlopen`s that libpython
//! (`RTLD_GLOBAL`, so the facades' CPython backend finds it), selects the
//! CPython backend, initializes CPython through the facade
//! (`*_initialize`: `Py_InitializeEx(0)` and the registration of main),
//! detaches its main thread (so the case's threads can take the GIL), runs
//! the case exactly as the in-process model run does, prints one `RESULT`
//! line and leaves with `_exit` (CPython's own exit is measured elsewhere:
//! the exit race and the observed scenarios).

use crate::facade::{Activate, Ensure, Facade, Guard, Handle, Shared};
use crate::gilstate::GilState;
use crate::pythons::Python;
use crate::runner::{Outcome, run_case};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the libpython a child loads.
pub const LIBPYTHON_ENV: &str = "TSTATE_CHILD_LIBPYTHON";

/// The facade names, in report order.
pub const FACADES: [&str; 4] = ["ensure", "handle", "activate", "guard"];

/// Every case name of the suite, in report order.
pub fn case_names() -> Vec<&'static str> {
    crate::cases::all::<Ensure>()
        .iter()
        .map(|c| c.name)
        .collect()
}

fn run_named<F: Facade>(case: &str) -> Outcome {
    let cases = crate::cases::all::<F>();
    match cases.iter().find(|c| c.name == case) {
        Some(c) => run_case::<F>(c),
        None => Outcome::Fail(format!("no case named {case}")),
    }
}

fn prepare<F: Facade>() -> Result<(), String> {
    F::initialize().map_err(|c| format!("{}_initialize: {c}", F::NAME))?;
    let b = F::backend_info();
    if b.kind != 1 {
        return Err(format!("expected the CPython backend, got kind {}", b.kind));
    }
    // the main thread (attached by Py_InitializeEx) lets the case's threads in
    F::save().map_err(|c| format!("detaching the main thread: {c}"))?;
    Ok(())
}

/// The child's whole life (never returns): load `libpython`, run `case` of
/// `facade`, print `RESULT\t<pass|fail|na>\t<reason>`, `_exit(0)`.
pub fn child_main(facade: &str, case: &str, libpython: &Path) -> ! {
    crate::runner::ECHO_FAILURES.store(true, std::sync::atomic::Ordering::Relaxed);
    let outcome = match load_libpython(libpython) {
        Err(e) => Outcome::Fail(e),
        Ok(()) => {
            // SAFETY: single-threaded here, before any facade call.
            unsafe { std::env::set_var("TSTATE_BACKEND", "cpython") };
            let run = |prep: Result<(), String>, f: &dyn Fn() -> Outcome| match prep {
                Ok(()) => f(),
                Err(e) => Outcome::Fail(e),
            };
            match facade {
                "ensure" => run(prepare::<Ensure>(), &|| run_named::<Ensure>(case)),
                "handle" => run(prepare::<Handle>(), &|| run_named::<Handle>(case)),
                "activate" => run(prepare::<Activate>(), &|| run_named::<Activate>(case)),
                "guard" => run(prepare::<Guard>(), &|| run_named::<Guard>(case)),
                "gilstate" => run(prepare::<GilState>(), &|| run_named::<GilState>(case)),
                other => Outcome::Fail(format!("unknown facade {other}")),
            }
        }
    };
    let (kind, why) = match &outcome {
        Outcome::Pass => ("pass", String::new()),
        Outcome::Fail(m) => ("fail", m.clone()),
        Outcome::NotApplicable(r) => ("na", r.to_string()),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "RESULT\t{kind}\t{}", why.replace(['\n', '\t'], " "));
    let _ = out.flush();
    // SAFETY: ends the process at once (no CPython finalization, no
    // destructors): the verdict is printed.
    unsafe { libc::_exit(0) }
}

/// A case's verdict from a child process, as an outcome class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildOutcome {
    /// As in-process.
    Pass,
    /// An assertion failed (a facade), with what.
    Fail(String),
    /// The design cannot express the case, or the backend cannot do it.
    NotApplicable(String),
    /// CPython ended a thread inside one of its calls (`pthread_exit`).
    ThreadKilled(String),
    /// SIGSEGV.
    Segfault(String),
    /// SIGABRT: a fatal error (`Fatal Python error: …`, or the library's).
    Abort(String),
    /// The watchdog killed it.
    Hang(String),
    /// The baseline attached the wrong interpreter (an assertion about
    /// which interpreter is attached failed).
    WrongInterpreter(String),
    /// The baseline gave a wrong answer (any other assertion).
    WrongAnswer(String),
}

impl ChildOutcome {
    /// The class's short name (`pass`, `FAIL`, `n/a`, `THREAD-KILLED`, …).
    pub fn class(&self) -> &'static str {
        match self {
            ChildOutcome::Pass => "pass",
            ChildOutcome::Fail(_) => "FAIL",
            ChildOutcome::NotApplicable(_) => "n/a",
            ChildOutcome::ThreadKilled(_) => "THREAD-KILLED",
            ChildOutcome::Segfault(_) => "SEGFAULT",
            ChildOutcome::Abort(_) => "ABORT",
            ChildOutcome::Hang(_) => "HANG",
            ChildOutcome::WrongInterpreter(_) => "WRONG-INTERPRETER",
            ChildOutcome::WrongAnswer(_) => "WRONG-ANSWER",
        }
    }

    /// The detail (reason, message, signal).
    pub fn detail(&self) -> &str {
        match self {
            ChildOutcome::Pass => "",
            ChildOutcome::Fail(s)
            | ChildOutcome::NotApplicable(s)
            | ChildOutcome::ThreadKilled(s)
            | ChildOutcome::Segfault(s)
            | ChildOutcome::Abort(s)
            | ChildOutcome::Hang(s)
            | ChildOutcome::WrongInterpreter(s)
            | ChildOutcome::WrongAnswer(s) => s,
        }
    }

    /// Whether the run failed (anything but pass and n/a).
    pub fn failed(&self) -> bool {
        !matches!(self, ChildOutcome::Pass | ChildOutcome::NotApplicable(_))
    }
}

/// The baseline's failed assertion, as an outcome class.
fn classify_failure(why: String) -> ChildOutcome {
    if about_interpreter(&why) {
        ChildOutcome::WrongInterpreter(why)
    } else {
        ChildOutcome::WrongAnswer(why)
    }
}

/// Whether a failed assertion was about which interpreter is attached.
fn about_interpreter(msg: &str) -> bool {
    [
        "c.1",
        "is_attached(main)",
        "is_attached(sub)",
        "is_attached(a)",
        "on_b",
        "on_a",
        "attached to main",
        // work refused as "not attached" right after an ensure that
        // succeeded: the thread is attached, to another interpreter
        "NotAttached",
    ]
    .iter()
    .any(|k| msg.contains(k))
}

/// Runs one case of one facade on `py` in a child process of `exe` (the
/// `tstate-compare` binary), killing it after `watchdog`.
pub fn run_in_child(
    exe: &Path,
    py: &Python,
    facade: &'static str,
    case: &str,
    watchdog: Duration,
) -> ChildOutcome {
    let mut child = match Command::new(exe)
        .args(["--child", facade, case])
        .env(LIBPYTHON_ENV, &py.libpython)
        .env("TSTATE_BACKEND", "cpython")
        .env("RUST_BACKTRACE", "0")
        .env("PYTHONHASHSEED", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return ChildOutcome::Fail(format!("spawn: {e}")),
    };
    let t0 = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if t0.elapsed() > watchdog => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return ChildOutcome::Fail(format!("wait: {e}")),
        }
    };
    let o = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => return ChildOutcome::Fail(format!("output: {e}")),
    };
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let baseline = facade == "gilstate";
    // the first failed assertion, if one came before a crash or a hang
    let first_failure = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FAILED\t"))
        .map(str::to_owned);
    let Some(status) = status else {
        return match first_failure {
            Some(f) if baseline => {
                classify_failure(f + &format!("; then HANG (killed after {watchdog:?})"))
            }
            _ => ChildOutcome::Hang(format!("killed after {watchdog:?}")),
        };
    };
    let fatal = stderr
        .lines()
        .find(|l| l.contains("Fatal") || l.contains("panicked"))
        .unwrap_or("")
        .to_string();
    if stdout.lines().any(|l| l == "THREAD-KILLED") {
        return ChildOutcome::ThreadKilled(
            "a thread was ended by CPython (pthread_exit) inside its call".into(),
        );
    }
    if let Some(line) = stdout.lines().find(|l| l.starts_with("RESULT\t")) {
        let mut f = line.splitn(3, '\t').skip(1);
        let (kind, why) = (f.next().unwrap_or(""), f.next().unwrap_or("").to_string());
        return match kind {
            "pass" => ChildOutcome::Pass,
            "na" => ChildOutcome::NotApplicable(why),
            _ if baseline => classify_failure(why),
            _ => ChildOutcome::Fail(why),
        };
    }
    use std::os::unix::process::ExitStatusExt;
    if baseline && let Some(f) = first_failure {
        let then = match status.signal() {
            Some(11) => "SEGFAULT",
            Some(6) => "ABORT",
            _ => "crash",
        };
        return classify_failure(format!("{f}; then {then} {fatal}"));
    }
    match status.signal() {
        Some(11) => ChildOutcome::Segfault(fatal),
        Some(6) => ChildOutcome::Abort(fatal),
        Some(s) => ChildOutcome::Fail(format!("killed by signal {s} {fatal}")),
        None => ChildOutcome::Fail(format!("exited {status} without a verdict {fatal}")),
    }
}

/// One result of a CPython run.
#[derive(Debug, Clone)]
pub struct CpythonResult {
    /// `"3.11"`.
    pub python: String,
    /// Facade name.
    pub facade: &'static str,
    /// Case name.
    pub case: &'static str,
    /// Verdict (of the first run that did not pass, else pass).
    pub outcome: ChildOutcome,
    /// Every run's class and how often (racy cases run several times).
    pub counts: Vec<(&'static str, usize)>,
    /// Runs made.
    pub runs: usize,
}

/// Whether a case's outcome can depend on timing (it races threads with
/// finalization or with each other): such cases are run `racy_runs` times.
pub fn is_racy(case: &str) -> bool {
    [
        "race",
        "finaliz",
        "mutual_exclusion",
        "thread_exit",
        "daemon",
        "pool",
    ]
    .iter()
    .any(|k| case.contains(k))
}

/// A racy case stops repeating after this many runs that each ran into the
/// watchdog (each costs a whole watchdog; their counts are reported).
pub const WATCHDOG_RUNS: usize = 3;

/// The watchdog of one run of CPython's own API (its cases finish in well
/// under a second when they do not hang).
pub const BASELINE_WATCHDOG: Duration = Duration::from_secs(10);

/// Whether a run ended by the watchdog (a hang, or a failure then a hang).
fn hit_watchdog((class, detail): &(&str, String)) -> bool {
    *class == "HANG" || detail.contains("then HANG")
}

/// How many times a case runs.
#[derive(Debug, Clone, Copy)]
pub struct Reps {
    /// Racy cases ([`is_racy`]), at most.
    pub racy: usize,
    /// After this many runs with one same class, a racy case stops early
    /// (its outcome does not depend on timing after all).
    pub settle: usize,
}

impl Default for Reps {
    fn default() -> Self {
        Self { racy: 1, settle: 1 }
    }
}

/// Runs one (python, facade, case) `reps` times (for racy cases).
fn run_repeated(
    exe: &Path,
    py: &Python,
    facade: &'static str,
    case: &'static str,
    reps: Reps,
) -> CpythonResult {
    let n = if is_racy(case) { reps.racy.max(1) } else { 1 };
    let watchdog = if facade == "gilstate" {
        BASELINE_WATCHDOG
    } else {
        Duration::from_secs(150)
    };
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    let mut first_bad: Option<ChildOutcome> = None;
    let mut first = None;
    let mut runs = 0;
    let mut watchdogged = 0;
    for i in 0..n {
        let o = run_in_child(exe, py, facade, case, watchdog);
        let o_class_detail = (o.class(), o.detail().to_string());
        runs += 1;
        match counts.iter_mut().find(|(c, _)| *c == o.class()) {
            Some(e) => e.1 += 1,
            None => counts.push((o.class(), 1)),
        }
        // n/a does not depend on timing: once is enough
        let na = matches!(o, ChildOutcome::NotApplicable(_));
        if o.failed() && first_bad.is_none() {
            first_bad = Some(o.clone());
        }
        if first.is_none() {
            first = Some(o);
        }
        if na && i == 0 {
            break;
        }
        if counts.len() == 1 && i + 1 >= reps.settle.max(1) && n > 1 && i + 1 < n {
            break;
        }
        // a case that runs into the watchdog three times in a row with one
        // same class does so every time: each run costs a whole watchdog
        watchdogged += usize::from(hit_watchdog(&o_class_detail));
        if watchdogged >= WATCHDOG_RUNS && i + 1 < n {
            break;
        }
    }
    CpythonResult {
        python: py.short(),
        facade,
        case,
        outcome: first_bad.or(first).unwrap_or(ChildOutcome::Pass),
        counts,
        runs,
    }
}

/// Runs `cases` × `facades` on each of `pythons`, `jobs` processes at a
/// time; `progress` is called after each.
pub fn run_all(
    exe: &Path,
    pythons: &[Python],
    facades: &[&'static str],
    cases: &[&'static str],
    jobs: usize,
    progress: &mut dyn FnMut(&CpythonResult),
) -> Vec<CpythonResult> {
    run_all_reps(
        exe,
        pythons,
        facades,
        cases,
        jobs,
        Reps::default(),
        progress,
    )
}

/// As [`run_all`], with repetitions for racy cases.
pub fn run_all_reps(
    exe: &Path,
    pythons: &[Python],
    facades: &[&'static str],
    cases: &[&'static str],
    jobs: usize,
    reps: Reps,
    progress: &mut dyn FnMut(&CpythonResult),
) -> Vec<CpythonResult> {
    let mut work = Vec::new();
    for py in pythons {
        for &f in facades {
            for &c in cases {
                work.push((py.clone(), f, c));
            }
        }
    }
    let queue = std::sync::Mutex::new(work.into_iter().enumerate().collect::<Vec<_>>());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            let (queue, tx) = (&queue, tx.clone());
            s.spawn(move || {
                loop {
                    let item = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    let Some((i, (py, f, c))) = item else { break };
                    let r = run_repeated(exe, &py, f, c, reps);
                    if tx.send((i, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut out: Vec<(usize, CpythonResult)> = Vec::new();
        for (i, r) in rx {
            progress(&r);
            out.push((i, r));
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, r)| r).collect()
    })
}

// ----- timings on CPython ---------------------------------------------------------

fn load_libpython(libpython: &Path) -> Result<(), String> {
    let path = std::ffi::CString::new(libpython.as_os_str().as_encoded_bytes())
        .map_err(|_| "libpython path has a NUL".to_string())?;
    // SAFETY: a NUL-terminated path; RTLD_GLOBAL makes libpython's symbols
    // visible to the facades' `dlsym(RTLD_DEFAULT, …)`.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if h.is_null() {
        return Err(format!("dlopen {} failed", libpython.display()));
    }
    Ok(())
}

/// The timing child (never returns): loads `libpython`, initializes CPython
/// through the facades (CPython backend), detaches the main thread, then
/// times every design's idiom ([`crate::bench::comparison_benches`]) and, on a
/// second fresh thread, CPython's own API ([`crate::bench::gilstate_benches`]),
/// each run with the mutex pair as its unit. Prints one `BENCH` line per
/// measurement and `_exit(0)`s.
pub fn bench_child_main(cfg: crate::bench::Config, libpython: &Path) -> ! {
    use crate::bench;
    let result = load_libpython(libpython).and_then(|()| {
        // SAFETY: single-threaded here, before any facade call.
        unsafe { std::env::set_var("TSTATE_BACKEND", "cpython") };
        // every facade registers main (each has its own runtime) while the
        // main thread is attached, then it detaches
        for init in [Handle::initialize, Activate::initialize, Guard::initialize] {
            init().map_err(|c| format!("initialize: {c}"))?;
        }
        prepare::<Ensure>()?;
        let mut ms = bench::run(&bench::comparison_benches(), cfg, &mut |_| {});
        let mut g = vec![bench::comparison_benches().swap_remove(0)];
        g.extend(bench::gilstate_benches());
        ms.extend(bench::run(&g, cfg, &mut |_| {}).into_iter().skip(1));
        Ok(ms)
    });
    let mut out = std::io::stdout().lock();
    match result {
        Ok(ms) => {
            for m in ms {
                let _ = writeln!(
                    out,
                    "BENCH\t{}\t{}\t{}\t{}\t{}\t{}",
                    m.facade, m.case, m.median_ns, m.min_ns, m.max_ns, m.ratio
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "ERROR\t{e}");
        }
    }
    let _ = out.flush();
    // SAFETY: ends the process at once (no CPython finalization).
    unsafe { libc::_exit(0) }
}

/// Runs [`bench_child_main`] on `py` in a child of `exe` and reads its
/// measurements back (labelled `cpython 3.X`).
pub fn run_bench_in_child(
    exe: &Path,
    py: &Python,
    cfg: crate::bench::Config,
) -> Result<Vec<crate::bench::Measurement>, String> {
    use crate::bench;
    let o = Command::new(exe)
        .args([
            "--child-bench",
            &cfg.rounds.to_string(),
            &cfg.iters.to_string(),
        ])
        .env(LIBPYTHON_ENV, &py.libpython)
        .env("TSTATE_BACKEND", "cpython")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("spawn: {e}"))?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    if let Some(e) = stdout.lines().find_map(|l| l.strip_prefix("ERROR\t")) {
        return Err(e.to_string());
    }
    let known: Vec<bench::Bench> = bench::comparison_benches()
        .into_iter()
        .chain(bench::gilstate_benches())
        .collect();
    let mut ms = Vec::new();
    for l in stdout.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() != 7 || f[0] != "BENCH" {
            continue;
        }
        let b = known
            .iter()
            .find(|b| b.facade == f[1] && b.case == f[2])
            .ok_or_else(|| format!("unknown bench {} {}", f[1], f[2]))?;
        let num = |s: &str| s.parse::<f64>().map_err(|_| format!("bad number {s}"));
        ms.push(bench::Measurement {
            backend: format!("cpython {}", py.short()),
            facade: b.facade,
            case: b.case,
            what: b.what,
            median_ns: num(f[3])?,
            min_ns: num(f[4])?,
            max_ns: num(f[5])?,
            ratio: num(f[6])?,
        });
    }
    if ms.is_empty() {
        return Err(format!(
            "no measurements ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ));
    }
    Ok(ms)
}
