//! The fifteen observed scenarios on real CPython: CPython's own
//! `PyGILState` API next to every facade on its CPython backend.
//!
//! One C program, `conformance/cpython/observed.c`, holds every scenario,
//! written once against a small per-design layer selected with
//! `-DDESIGN_<NAME>`. For each CPython found ([`crate::pythons::find`]) and
//! each [`Design`], it is built once with gcc; then every scenario runs in
//! a process of its own under a watchdog (the racy ones [`Options::repeats`]
//! times), at most [`Options::jobs`] of them starting at once. Each run is
//! classified into an [`Outcome`] from outside (signal, watchdog, exit code)
//! and, when the program finished, from the facts on its `RESULT` line,
//! judged by the scenario's rule ([`Scenario::pass_means`]).
//!
//! [`run_all`] returns a [`Report`]; [`render_terminal`] and
//! [`render_markdown`] draw it (scenarios as rows, one table per design,
//! CPython versions as columns, cells that differ from 3.11 marked).
//! `docs/cpython-observed.md` is made from it.

use crate::pythons::{self, Python};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// One design as the C program sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Design {
    /// Its name in reports (`gilstate`, `ensure`, …).
    pub name: &'static str,
    /// The macro that selects it (`DESIGN_ENSURE`).
    pub define: &'static str,
    /// The facade crate's short name (`ensure` for `tstate-ffi-ensure`:
    /// header `ffi-ensure/include`, library `libtstate_ffi_ensure.a`);
    /// `None` for CPython's own API.
    pub facade: Option<&'static str>,
    /// One line on what it is.
    pub about: &'static str,
}

/// The designs, CPython's own API first.
pub const DESIGNS: [Design; 5] = [
    Design {
        name: "gilstate",
        define: "DESIGN_GILSTATE",
        facade: None,
        about: "CPython's own PyGILState_Ensure / PyGILState_Release (the baseline)",
    },
    Design {
        name: "ensure",
        define: "DESIGN_ENSURE",
        facade: Some("ensure"),
        about: "tstate-ffi-ensure on its CPython backend: tse_ensure(interp) / tse_release()",
    },
    Design {
        name: "handle",
        define: "DESIGN_HANDLE",
        facade: Some("handle"),
        about: "tstate-ffi-handle on its CPython backend: h = tsh_ensure(interp) / tsh_release(h)",
    },
    Design {
        name: "activate",
        define: "DESIGN_ACTIVATE",
        facade: Some("activate"),
        about: "tstate-ffi-activate on its CPython backend: tsa_new + tsa_activate / tsa_deactivate + tsa_delete",
    },
    Design {
        name: "guard",
        define: "DESIGN_GUARD",
        facade: Some("guard"),
        about: "tstate-ffi-guard (PEP 788) on its CPython backend: view + tsg_ensure_from_view / tsg_release",
    },
];

/// How one run (or a scenario in a cell) came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The contract's requirement held ([`Scenario::pass_means`]); for the
    /// finalization scenarios that means a clean refusal.
    Pass,
    /// A native thread was ended by CPython (`pthread_exit` inside
    /// `PyGILState_Ensure` / `take_gil`), seen by its
    /// `pthread_cleanup_push` handler; the process itself finished.
    ThreadKilled,
    /// The process died of SIGSEGV or SIGBUS.
    Segfault,
    /// The process aborted (SIGABRT: `Fatal Python error`, or a facade's
    /// fatal-error hook).
    Abort,
    /// The watchdog killed the process, or a native thread was still
    /// blocked when the program gave up waiting for it.
    Hang,
    /// The program finished, but the calling thread was attached to another
    /// interpreter than the one the scenario asked for.
    WrongInterpreter,
    /// The program finished, but some other fact broke the rule (a wrong
    /// check answer, a missing or wrong code, a changed state).
    WrongAnswer,
    /// The design cannot express the scenario (with the program's reason).
    NotApplicable,
    /// The harness itself failed (no `RESULT` line, an unexpected exit
    /// code or signal, a set-up step refused): not a verdict on the design.
    Error,
}

impl Outcome {
    /// The label used in tables.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::ThreadKilled => "THREAD-KILLED",
            Outcome::Segfault => "SEGFAULT",
            Outcome::Abort => "ABORT",
            Outcome::Hang => "HANG",
            Outcome::WrongInterpreter => "WRONG-INTERPRETER",
            Outcome::WrongAnswer => "WRONG-ANSWER",
            Outcome::NotApplicable => "n/a",
            Outcome::Error => "HARNESS-ERROR",
        }
    }

    /// Every outcome, in table order.
    pub const ALL: [Outcome; 9] = [
        Outcome::Pass,
        Outcome::ThreadKilled,
        Outcome::Segfault,
        Outcome::Abort,
        Outcome::Hang,
        Outcome::WrongInterpreter,
        Outcome::WrongAnswer,
        Outcome::NotApplicable,
        Outcome::Error,
    ];
}

/// The facts a finished program printed: the `key=value` pairs of its
/// `RESULT` line.
pub type Facts = BTreeMap<String, String>;

/// A judge's verdict on a finished run: `Ok(())` for pass, or the outcome
/// and why.
pub type Verdict = Result<(), (Outcome, String)>;

/// One scenario.
pub struct Scenario {
    /// Its number in the observed table (`1`, `1c`, …): also its name in
    /// the C program.
    pub id: &'static str,
    /// One line on what it does.
    pub checks: &'static str,
    /// What CPython 3.11 was observed to do (the project's baseline).
    pub cpython_311: &'static str,
    /// What "pass" means: the contract's requirement, as checked.
    pub pass_means: &'static str,
    /// Racy: repeated [`Options::repeats`] times.
    pub racy: bool,
    judge: fn(&Facts) -> Verdict,
}

impl Scenario {
    /// Judges the facts of a run that finished (`killed=1` is classified
    /// before the judge is asked).
    pub fn judge(&self, facts: &Facts) -> Verdict {
        (self.judge)(facts)
    }
}

// ----- the judges ------------------------------------------------------------

fn get<'a>(f: &'a Facts, k: &str) -> &'a str {
    f.get(k).map_or("(missing)", String::as_str)
}

/// Collects broken expectations; the first wrong-interpreter one wins.
struct Rule<'a> {
    f: &'a Facts,
    wrong_interp: Vec<String>,
    wrong: Vec<String>,
}

impl<'a> Rule<'a> {
    fn new(f: &'a Facts) -> Self {
        Rule {
            f,
            wrong_interp: Vec::new(),
            wrong: Vec::new(),
        }
    }
    fn eq(mut self, k: &str, want: &str) -> Self {
        let got = get(self.f, k);
        if got != want {
            self.wrong.push(format!("{k}={got} (want {want})"));
        }
        self
    }
    fn one_of(mut self, k: &str, want: &[&str]) -> Self {
        let got = get(self.f, k);
        if !want.contains(&got) {
            self.wrong
                .push(format!("{k}={got} (want {})", want.join(" or ")));
        }
        self
    }
    /// The interpreter the thread was attached to (`attached`, read from
    /// CPython itself).
    fn attached(mut self, k: &str, want: &str) -> Self {
        let got = get(self.f, k);
        if got != want {
            let msg = format!("{k}={got} (want {want})");
            if matches!(got, "main" | "sub" | "other") {
                self.wrong_interp.push(msg);
            } else {
                self.wrong.push(msg);
            }
        }
        self
    }
    fn at_least(mut self, k: &str, n: i64) -> Self {
        match get(self.f, k).parse::<i64>() {
            Ok(v) if v >= n => {}
            _ => self
                .wrong
                .push(format!("{k}={} (want >= {n})", get(self.f, k))),
        }
        self
    }
    fn verdict(self) -> Verdict {
        if !self.wrong_interp.is_empty() {
            let mut all = self.wrong_interp;
            all.extend(self.wrong);
            return Err((Outcome::WrongInterpreter, all.join(", ")));
        }
        if self.wrong.is_empty() {
            Ok(())
        } else {
            Err((Outcome::WrongAnswer, self.wrong.join(", ")))
        }
    }
}

/// The refusals the contract accepts for an ensure at or after
/// finalization.
const REFUSALS: [&str; 2] = ["FINALIZING", "NO_SUCH_INTERPRETER"];
/// The codes the contract accepts for a release with nothing to release.
const MISUSE: [&str; 2] = ["NOT_ATTACHED", "INVALID_HANDLE"];

fn judge_race(f: &Facts, check_first: bool) -> Verdict {
    let by = get(f, "refused_by");
    let mut r = Rule::new(f);
    match by {
        "ensure" => r = r.one_of("refused", &REFUSALS),
        "check" if check_first => {}
        _ => r.wrong.push(format!(
            "refused_by={by}: the worker was never refused (it ran until told to stop)"
        )),
    }
    r.at_least("spans", 1)
        .eq("work_errors", "0")
        .eq("release_errors", "0")
        .eq("spans_after_finalize", "0")
        .eq("finalize_rc", "0")
        .verdict()
}

fn judge_1(f: &Facts) -> Verdict {
    judge_race(f, false)
}

fn judge_3(f: &Facts) -> Verdict {
    judge_race(f, true)
}

fn judge_2(f: &Facts) -> Verdict {
    let mut r = Rule::new(f).eq("code", "NO_SUCH_INTERPRETER");
    if get(f, "code") == "ok" {
        r.wrong.push(format!(
            "attached={} after Py_FinalizeEx",
            get(f, "attached")
        ));
    }
    r.verdict()
}

fn judge_4(f: &Facts) -> Verdict {
    Rule::new(f)
        .eq("code", "ok")
        .attached("attached", "sub")
        .eq("current", "sub")
        .eq("check_sub", "1")
        .eq("check_main", "0")
        .eq("work_ok", "1")
        .eq("end_sub", "ok")
        .eq("finalize_rc", "0")
        .verdict()
}

fn judge_5(f: &Facts) -> Verdict {
    Rule::new(f)
        .eq("unattached_before", "0")
        .eq("unattached_during_main", "0")
        .eq("unattached_during_sub", "0")
        .eq("attached_main_asks_main", "1")
        .eq("attached_main_asks_sub", "0")
        .eq("unattached_after_main", "0")
        .eq("unattached_after_sub", "0")
        .eq("code", "ok")
        .eq("end_sub", "ok")
        .eq("finalize_rc", "0")
        .verdict()
}

fn judge_6(f: &Facts) -> Verdict {
    Rule::new(f)
        .one_of("code", &MISUSE)
        .eq("attached_after", "none")
        .eq("reuse_ok", "1")
        .eq("python_ok", "1")
        .eq("finalize_rc", "0")
        .verdict()
}

fn judge_6b(f: &Facts) -> Verdict {
    Rule::new(f)
        .one_of("code", &MISUSE)
        .attached("attached_after", "main")
        .eq("same_ts", "1")
        .eq("python_ok", "1")
        .eq("finalize_rc", "0")
        .verdict()
}

fn judge_7(f: &Facts) -> Verdict {
    Rule::new(f)
        .eq("steps", "none,main,none,main,none,main,none")
        .eq("same_ts", "1")
        .eq("work_ok", "1")
        .eq("finalize_rc", "0")
        .verdict()
}

fn judge_8(f: &Facts) -> Verdict {
    Rule::new(f)
        .eq("before", "sub")
        .eq("code", "ok")
        .attached("attached", "main")
        .eq("current", "main")
        .eq("check_main", "1")
        .eq("check_sub", "0")
        .eq("work_ok", "1")
        .attached("after_release", "sub")
        .attached("after_setup", "main")
        .eq("same_ts", "1")
        .eq("end_sub", "ok")
        .eq("finalize_rc", "0")
        .verdict()
}

fn judge_8b(f: &Facts) -> Verdict {
    Rule::new(f)
        .eq("code", "ok")
        .attached("attached", "main")
        .eq("current", "main")
        .eq("check_main", "1")
        .eq("work_ok", "1")
        .eq("end_sub", "ok")
        .eq("finalize_rc", "0")
        .verdict()
}

fn judge_9(f: &Facts) -> Verdict {
    let mut r = Rule::new(f)
        .eq("code", "ok")
        .eq("work_ok", "1")
        .eq("main_reattached", "1")
        .eq("python_ok", "1")
        .eq("finalize_rc", "0");
    // -1: the design has no such counter (gilstate)
    if get(f, "exit_spans_closed") != "-1" {
        r = r.at_least("exit_spans_closed", 1);
    }
    r.verdict()
}

fn judge_10(f: &Facts) -> Verdict {
    Rule::new(f)
        .eq("first", "ok")
        .one_of("second", &MISUSE)
        .one_of("extra", &["none", MISUSE[0], MISUSE[1]])
        .eq("attached_after", "none")
        .eq("reuse_ok", "1")
        .eq("python_ok", "1")
        .eq("finalize_rc", "0")
        .verdict()
}

fn judge_10b(f: &Facts) -> Verdict {
    Rule::new(f)
        .eq("first", "ok")
        .one_of("second", &MISUSE)
        .one_of("extra", &["none", MISUSE[0], MISUSE[1]])
        .attached("attached_after", "main")
        .eq("same_ts", "1")
        .eq("python_ok", "1")
        .eq("finalize_rc", "0")
        .verdict()
}

/// The fifteen scenarios, numbered as in the observed table.
pub const SCENARIOS: [Scenario; 15] = [
    Scenario {
        id: "1",
        checks: "native thread loops ensure/work/release while the main thread runs Py_FinalizeEx",
        cpython_311: "thread killed by pthread_exit inside Ensure",
        pass_means: "the worker is refused (FINALIZING or NO_SUCH_INTERPRETER) and returns; \
                     no span is open when Py_FinalizeEx returns; every span's work succeeded; \
                     Py_FinalizeEx returns 0",
        racy: true,
        judge: judge_1,
    },
    Scenario {
        id: "1c",
        checks: "as 1, the worker pausing 10 ms between calls (some ensures come after Py_FinalizeEx returned)",
        cpython_311: "killed or segfault (Ensure after Py_FinalizeEx returned)",
        pass_means: "as 1",
        racy: true,
        judge: judge_1,
    },
    Scenario {
        id: "2",
        checks: "a new native thread calls ensure(main) after Py_FinalizeEx returned",
        cpython_311: "segfault (PyThreadState_New with a NULL interpreter)",
        pass_means: "ensure returns NO_SUCH_INTERPRETER; nothing attached",
        racy: false,
        judge: judge_2,
    },
    Scenario {
        id: "3",
        checks: "as 1, the worker checking 'finalizing?' first (gilstate: _Py_IsFinalizing; \
                 facades: <prefix>_interpreter_state)",
        cpython_311: "killed after the check said 'not finalizing'",
        pass_means: "as 1, the refusal coming from the check or from the ensure after it",
        racy: true,
        judge: judge_3,
    },
    Scenario {
        id: "3b",
        checks: "as 3, the worker pausing 0.3 ms between calls",
        cpython_311: "mostly OK, sometimes killed: the check only lowers the odds",
        pass_means: "as 3",
        racy: true,
        judge: judge_3,
    },
    Scenario {
        id: "4",
        checks: "a thread started while a subinterpreter is current ensures the interpreter its starter was in",
        cpython_311: "attached to the MAIN interpreter",
        pass_means: "attached to the subinterpreter (read from CPython); the design's own \
                     'current interpreter' and attached check agree",
        racy: false,
        judge: judge_4,
    },
    Scenario {
        id: "5",
        checks: "the attached check on unattached threads before, while and after a \
                 subinterpreter exists, and on a thread attached to main",
        cpython_311: "PyGILState_Check: 0 before; 1 while a subinterpreter exists; still 1 after",
        pass_means: "0 on every unattached thread; attached to main: 1 for main, 0 for the subinterpreter",
        racy: false,
        judge: judge_5,
    },
    Scenario {
        id: "6",
        checks: "release on a native thread that never ensured",
        cpython_311: "Fatal Python error + abort",
        pass_means: "refused with NOT_ATTACHED or INVALID_HANDLE; the thread still unattached \
                     and able to ensure; main re-attaches and runs Python",
        racy: false,
        judge: judge_6,
    },
    Scenario {
        id: "6b",
        checks: "the same misuse on the main thread (attached through Py_Initialize's thread state)",
        cpython_311: "main thread state silently deleted; the next call segfaults",
        pass_means: "refused with NOT_ATTACHED or INVALID_HANDLE; main still attached with the \
                     same thread state and runs Python",
        racy: false,
        judge: judge_6b,
    },
    Scenario {
        id: "7",
        checks: "nested ensure / Py_BEGIN_ALLOW_THREADS / ensure / release / Py_END_ALLOW_THREADS / release",
        cpython_311: "OK: exact restore at every step",
        pass_means: "attached interpreter after each step: none, main, none, main, none, main \
                     (the same thread state), none",
        racy: false,
        judge: judge_7,
    },
    Scenario {
        id: "8",
        checks: "ensure(main) on the main thread while a subinterpreter's thread state is current on it",
        cpython_311: "hangs forever (waits for the GIL it holds)",
        pass_means: "attached to main inside, the subinterpreter after the release, main's own \
                     thread state after undoing the set-up",
        racy: false,
        judge: judge_8,
    },
    Scenario {
        id: "8b",
        checks: "a thread whose first thread state was a subinterpreter's (kept) later ensures main",
        cpython_311: "attached to that subinterpreter, not main",
        pass_means: "attached to main; the design's 'current interpreter' says main",
        racy: false,
        judge: judge_8b,
    },
    Scenario {
        id: "9",
        checks: "a native thread ensures and exits without release; main re-attaches",
        cpython_311: "main hangs forever on a GIL held by a dead thread",
        pass_means: "main re-attaches and runs Python; the span was closed by the thread-exit \
                     cleanup (counted); Py_FinalizeEx returns 0",
        racy: false,
        judge: judge_9,
    },
    Scenario {
        id: "10",
        checks: "ensure once, release twice (native thread)",
        cpython_311: "Fatal Python error + abort",
        pass_means: "second release refused with NOT_ATTACHED or INVALID_HANDLE; the thread \
                     unattached and able to ensure again; main unharmed",
        racy: false,
        judge: judge_10,
    },
    Scenario {
        id: "10b",
        checks: "ensure once, release twice on the main thread",
        cpython_311: "main thread state silently deleted; later segfault",
        pass_means: "second release refused with NOT_ATTACHED or INVALID_HANDLE; main still \
                     attached with the same thread state and runs Python",
        racy: false,
        judge: judge_10b,
    },
];

/// The scenario with this id.
pub fn scenario(id: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.id == id)
}

// ----- results -----------------------------------------------------------------

/// One run, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Its outcome.
    pub outcome: Outcome,
    /// What was seen: the `RESULT` facts, the fatal-error line, the last
    /// `NOTE`, why the judge said no.
    pub detail: String,
}

/// One scenario × design × CPython version: every run's outcome, counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioResult {
    /// The scenario's id (`1c`).
    pub scenario: &'static str,
    /// One line on what it checks.
    pub checks: &'static str,
    /// The design's name.
    pub design: &'static str,
    /// `"3.11"`.
    pub python: String,
    /// `"3.11.7"`.
    pub python_full: String,
    /// How many runs.
    pub runs: usize,
    /// How many runs came out each way (only outcomes that occurred).
    pub counts: BTreeMap<Outcome, usize>,
    /// The detail of the first run of each outcome.
    pub details: BTreeMap<Outcome, String>,
}

impl ScenarioResult {
    /// How many runs came out as `o`.
    pub fn count(&self, o: Outcome) -> usize {
        self.counts.get(&o).copied().unwrap_or(0)
    }

    /// Whether every run came out as `o`.
    pub fn all(&self, o: Outcome) -> bool {
        self.runs > 0 && self.count(o) == self.runs
    }

    /// The most frequent outcome (the worst one on a tie).
    pub fn dominant(&self) -> Outcome {
        let mut best = (Outcome::Error, 0);
        for (&o, &n) in &self.counts {
            if n >= best.1 {
                best = (o, n);
            }
        }
        best.0
    }

    /// The table cell: `pass`, `ABORT`, `THREAD-KILLED 20/20`,
    /// `pass 17/20, THREAD-KILLED 3/20`.
    pub fn cell(&self) -> String {
        let mut parts: Vec<(Outcome, usize)> = self.counts.iter().map(|(&o, &n)| (o, n)).collect();
        parts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        parts
            .iter()
            .map(|&(o, n)| {
                if self.runs > 1 {
                    format!("{} {n}/{}", o.label(), self.runs)
                } else {
                    o.label().to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every detail, one `OUTCOME: detail` per outcome, joined by `; `.
    pub fn detail(&self) -> String {
        self.details
            .iter()
            .map(|(o, d)| format!("{}: {d}", o.label()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Everything one [`run_all`] measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The CPython installations that ran.
    pub pythons: Vec<Python>,
    /// One line on what was found and what was skipped.
    pub python_summary: String,
    /// The designs that ran, in order.
    pub designs: Vec<Design>,
    /// Every result (scenario order within design within python).
    pub results: Vec<ScenarioResult>,
    /// Builds that failed (python, design, compiler output); their
    /// scenarios are missing from `results`.
    pub build_failures: Vec<String>,
    /// Runs per racy scenario.
    pub repeats: usize,
    /// The watchdog bound per process.
    pub watchdog: Duration,
    /// Wall time of the whole run (builds included).
    pub elapsed: Duration,
    /// Processes run.
    pub processes: usize,
}

impl Report {
    /// The result of one cell, if it ran.
    pub fn get(&self, design: &str, python: &str, scenario: &str) -> Option<&ScenarioResult> {
        self.results
            .iter()
            .find(|r| r.design == design && r.python == python && r.scenario == scenario)
    }
}

// ----- options, building -------------------------------------------------------

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Runs per racy scenario (1, 1c, 3, 3b); others run once. Default 20.
    pub repeats: usize,
    /// Bound per process; a process still running then is killed and
    /// counted as [`Outcome::Hang`]. Default 10 s.
    pub watchdog: Duration,
    /// Processes that may be starting up / running their scenario at once
    /// (a process past [`park_after`](Self::park_after) no longer counts:
    /// it is almost certainly blocked, not working). Default 2.
    pub jobs: usize,
    /// How long a process counts against [`jobs`](Self::jobs). Default
    /// 300 ms (a run takes 10–100 ms).
    pub park_after: Duration,
    /// Where the programs are built (created if missing).
    pub build_dir: PathBuf,
    /// The directory holding `libtstate_ffi_<facade>.a`; `None`: next to the
    /// running executable (as cargo lays out tests and binaries).
    pub staticlib_dir: Option<PathBuf>,
    /// The CPython installations to run on. Default [`pythons::find`].
    pub pythons: Vec<Python>,
    /// Designs to run (names); empty: all.
    pub designs: Vec<String>,
    /// Scenarios to run (ids); empty: all.
    pub scenarios: Vec<String>,
    /// Build the programs with `-fsanitize=address,undefined` (the program
    /// and the facade's Rust code are not instrumented alike: the C side
    /// is; libpython is not). Runs get `ASAN_OPTIONS=detect_leaks=0`
    /// (CPython keeps its allocations until exit by design) and abort on
    /// the first report, which then counts as `ABORT`.
    pub sanitize: bool,
}

impl Options {
    /// The defaults, building into `build_dir`, on every CPython found.
    pub fn new(build_dir: impl Into<PathBuf>) -> Self {
        Options {
            repeats: 20,
            watchdog: Duration::from_secs(10),
            jobs: 2,
            park_after: Duration::from_millis(300),
            build_dir: build_dir.into(),
            staticlib_dir: None,
            pythons: pythons::find(),
            designs: Vec::new(),
            scenarios: Vec::new(),
            sanitize: false,
        }
    }
}

/// The workspace root (this crate's parent directory).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("conformance/ has a parent")
        .to_path_buf()
}

/// The C program.
pub fn source() -> PathBuf {
    workspace().join("conformance/cpython/observed.c")
}

/// `libtstate_ffi_<facade>.a` in `dir`, or the one cargo built with the
/// running executable ([`crate::exitrace::staticlib`]).
pub fn staticlib(facade: &str, dir: Option<&Path>) -> Result<PathBuf, String> {
    let Some(d) = dir else {
        return crate::exitrace::staticlib(facade);
    };
    let p = d.join(format!("libtstate_ffi_{facade}.a"));
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{} not found", p.display()))
    }
}

/// Builds the program for `design` against `py` into `opts.build_dir`:
/// `observed-<design>-<3.X>`.
pub fn build(py: &Python, design: &Design, opts: &Options) -> Result<PathBuf, String> {
    std::fs::create_dir_all(&opts.build_dir)
        .map_err(|e| format!("{}: {e}", opts.build_dir.display()))?;
    let out = opts.build_dir.join(format!(
        "observed-{}-{}{}",
        design.name,
        py.short(),
        if opts.sanitize { "-asan" } else { "" }
    ));
    let mut cmd = Command::new("gcc");
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g"])
        .arg(format!("-D{}", design.define))
        .args(py.cflags());
    if let Some(f) = design.facade {
        cmd.arg("-I")
            .arg(workspace().join(format!("ffi-{f}/include")));
    }
    if opts.sanitize {
        cmd.args([
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer",
        ]);
    }
    cmd.arg(source());
    if let Some(f) = design.facade {
        cmd.arg(staticlib(f, opts.staticlib_dir.as_deref())?);
    }
    cmd.arg(format!("-L{}", py.libdir.display()))
        .arg(format!("-lpython{}", py.short()))
        .arg(format!("-Wl,-rpath,{}", py.libdir.display()))
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&out);
    let o = cmd.output().map_err(|e| format!("gcc not runnable: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "building {} for {} failed:\n{}",
            design.name,
            py.full_version,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(out)
}

/// The scenario list the program itself offers (`--list`).
pub fn listed(program: &Path) -> Result<Vec<String>, String> {
    let o = Command::new(program)
        .arg("--list")
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

// ----- running and classifying ---------------------------------------------------

/// Counting semaphore for the processes that are (probably) working;
/// builds go before runs (their runs wait for them).
struct Slots {
    /// (free slots, builds waiting for one)
    state: Mutex<(usize, usize)>,
    cv: Condvar,
}

impl Slots {
    fn new(n: usize) -> Self {
        Slots {
            state: Mutex::new((n, 0)),
            cv: Condvar::new(),
        }
    }
    fn acquire(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.0 == 0 || st.1 > 0 {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.0 -= 1;
    }
    fn acquire_for_build(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.1 += 1;
        while st.0 == 0 {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.0 -= 1;
        st.1 -= 1;
        self.cv.notify_all();
    }
    fn release(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        self.cv.notify_all();
    }
}

/// What a process did, before judging.
struct RawRun {
    status: Option<std::process::ExitStatus>,
    hung: bool,
    stdout: String,
    stderr: String,
}

fn run_process(
    program: &Path,
    scenario: &str,
    out_base: &Path,
    opts: &Options,
    slots: &Slots,
) -> RawRun {
    let (mut out_path, mut err_path) = (
        out_base.as_os_str().to_owned(),
        out_base.as_os_str().to_owned(),
    );
    out_path.push(".out");
    err_path.push(".err");
    let (out_path, err_path) = (PathBuf::from(out_path), PathBuf::from(err_path));
    let files = (
        std::fs::File::create(&out_path),
        std::fs::File::create(&err_path),
    );
    let (Ok(out), Ok(err)) = files else {
        return RawRun {
            status: None,
            hung: false,
            stdout: String::new(),
            stderr: format!("cannot create {}", out_path.display()),
        };
    };
    slots.acquire();
    let mut held = true;
    let spawned = Command::new(program)
        .arg(scenario)
        .env("TSTATE_BACKEND", "cpython")
        .env("RUST_BACKTRACE", "0")
        .env("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1")
        .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONSTARTUP")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn();
    let mut raw = RawRun {
        status: None,
        hung: false,
        stdout: String::new(),
        stderr: String::new(),
    };
    match spawned {
        Err(e) => raw.stderr = format!("spawn {}: {e}", program.display()),
        Ok(mut child) => {
            let t0 = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(st)) => {
                        raw.status = Some(st);
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        raw.stderr = format!("wait: {e}");
                        break;
                    }
                }
                let el = t0.elapsed();
                if held && el > opts.park_after {
                    slots.release();
                    held = false;
                }
                if el > opts.watchdog {
                    let _ = child.kill();
                    let _ = child.wait();
                    raw.hung = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(if el < Duration::from_millis(200) {
                    1
                } else {
                    5
                }));
            }
        }
    }
    if held {
        slots.release();
    }
    raw.stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    raw.stderr
        .push_str(&std::fs::read_to_string(&err_path).unwrap_or_default());
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    raw
}

/// Parses `RESULT <scenario> key=value … reason="…"` (the first such
/// line): each `key=value` (a value may be `"quoted"`), and bare words
/// (`na`, `error`) as keys with an empty value.
pub fn parse_result(stdout: &str) -> Option<(String, Facts)> {
    let line = stdout.lines().find(|l| l.starts_with("RESULT "))?;
    let mut tokens = Vec::new();
    let (mut cur, mut quoted) = (String::new(), false);
    for c in line["RESULT ".len()..].chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    tokens.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    let mut it = tokens.into_iter();
    let name = it.next()?;
    let facts = it
        .map(|t| match t.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (t, String::new()),
        })
        .collect();
    Some((name, facts))
}

fn last_note(stdout: &str) -> Option<&str> {
    stdout.lines().rev().find_map(|l| l.strip_prefix("NOTE "))
}

fn fatal_line(stderr: &str) -> Option<&str> {
    stderr.lines().find(|l| {
        l.contains("Fatal Python error")
            || l.contains("Fatal tstate error")
            || l.contains("panicked")
    })
}

fn facts_text(f: &Facts) -> String {
    f.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "design" | "py"))
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn with_note(what: String, stdout: &str) -> String {
    match last_note(stdout) {
        Some(n) => format!("{what}; last note: {n}"),
        None => what,
    }
}

/// Classifies one finished (or killed) process of `sc`.
fn classify(sc: &Scenario, raw: &RawRun) -> Run {
    let run = |outcome, detail: String| Run { outcome, detail };
    if raw.hung {
        let what = match parse_result(&raw.stdout) {
            Some((_, f)) => format!("killed by the watchdog after printing: {}", facts_text(&f)),
            None => "killed by the watchdog".to_string(),
        };
        return run(Outcome::Hang, with_note(what, &raw.stdout));
    }
    let Some(status) = raw.status else {
        return run(Outcome::Error, raw.stderr.trim().to_string());
    };
    if let Some(sig) = status.signal() {
        let fatal = fatal_line(&raw.stderr)
            .map(|l| format!(" ({l})"))
            .unwrap_or_default();
        let (o, what) = match sig {
            11 => (Outcome::Segfault, format!("SIGSEGV{fatal}")),
            7 => (Outcome::Segfault, format!("SIGBUS{fatal}")),
            6 => (Outcome::Abort, format!("SIGABRT{fatal}")),
            s => (Outcome::Error, format!("signal {s}{fatal}")),
        };
        return run(o, with_note(what, &raw.stdout));
    }
    let parsed = parse_result(&raw.stdout);
    if status.code() != Some(0) {
        if let Some(l) = fatal_line(&raw.stderr) {
            return run(Outcome::Abort, with_note(l.to_string(), &raw.stdout));
        }
        let mut what = format!("exit code {:?}", status.code());
        if let Some((_, f)) = &parsed {
            what.push_str(&format!(": {}", facts_text(f)));
        }
        let err: String = raw.stderr.lines().take(3).collect::<Vec<_>>().join(" | ");
        if !err.is_empty() {
            what.push_str(&format!("; stderr: {err}"));
        }
        return run(Outcome::Error, what);
    }
    let Some((name, facts)) = parsed else {
        return run(Outcome::Error, "exit 0 without a RESULT line".into());
    };
    if name != sc.id {
        return run(
            Outcome::Error,
            format!("RESULT for {name}, expected {}", sc.id),
        );
    }
    if facts.contains_key("na") {
        return run(
            Outcome::NotApplicable,
            facts.get("reason").cloned().unwrap_or_default(),
        );
    }
    if facts.contains_key("error") {
        return run(Outcome::Error, facts_text(&facts));
    }
    let text = facts_text(&facts);
    if facts.get("killed").map(String::as_str) == Some("1") {
        return run(Outcome::ThreadKilled, text);
    }
    if facts.get("worker").map(String::as_str) == Some("stuck") {
        return run(
            Outcome::Hang,
            format!("a native thread was still blocked: {text}"),
        );
    }
    match sc.judge(&facts) {
        Ok(()) => run(Outcome::Pass, text),
        Err((o, why)) => run(o, format!("{why} [{text}]")),
    }
}

/// Counts the runs of one cell.
fn tally(py: &Python, design: &Design, sc: &'static Scenario, runs: &[Run]) -> ScenarioResult {
    let mut counts = BTreeMap::new();
    let mut details = BTreeMap::new();
    for r in runs {
        *counts.entry(r.outcome).or_insert(0) += 1;
        details.entry(r.outcome).or_insert_with(|| r.detail.clone());
    }
    ScenarioResult {
        scenario: sc.id,
        checks: sc.checks,
        design: design.name,
        python: py.short(),
        python_full: py.full_version.clone(),
        runs: runs.len(),
        counts,
        details,
    }
}

/// One run to do.
struct Job {
    cell: usize,
    program: PathBuf,
    scenario: &'static Scenario,
    out_base: PathBuf,
}

/// The work queue: builds first; each finished build appends its runs.
enum Task {
    Build(usize),
    Run(Job),
}

struct Queue {
    tasks: Mutex<(std::collections::VecDeque<Task>, usize)>,
    cv: Condvar,
}

impl Queue {
    /// The next task; `None` once the queue is empty and no build is left
    /// that could add runs.
    fn next(&self) -> Option<Task> {
        let mut q = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(t) = q.0.pop_front() {
                return Some(t);
            }
            if q.1 == 0 {
                return None;
            }
            q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A build finished, adding `runs`.
    fn built(&self, runs: Vec<Job>) {
        let mut q = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        q.0.extend(runs.into_iter().map(Task::Run));
        q.1 -= 1;
        self.cv.notify_all();
    }
}

/// Builds every (python, design) once, runs every scenario, and returns
/// the report. Builds and runs share the [`Options::jobs`] slots; the runs
/// of a program start as soon as it is built.
pub fn run_all(opts: &Options) -> Report {
    let t0 = Instant::now();
    let designs: Vec<Design> = DESIGNS
        .iter()
        .copied()
        .filter(|d| opts.designs.is_empty() || opts.designs.iter().any(|n| n == d.name))
        .collect();
    let scenarios: Vec<&'static Scenario> = SCENARIOS
        .iter()
        .filter(|s| opts.scenarios.is_empty() || opts.scenarios.iter().any(|n| n == s.id))
        .collect();
    let jobs = opts.jobs.max(1);
    let pairs: Vec<(usize, Design)> = (0..opts.pythons.len())
        .flat_map(|p| designs.iter().map(move |d| (p, *d)))
        .collect();
    // cell = pair × scenario, in report order
    let cells: Vec<(usize, &'static Scenario)> = (0..pairs.len())
        .flat_map(|p| scenarios.iter().map(move |s| (p, *s)))
        .collect();
    let queue = Queue {
        tasks: Mutex::new(((0..pairs.len()).map(Task::Build).collect(), pairs.len())),
        cv: Condvar::new(),
    };
    let slots = Slots::new(jobs);
    let runs: Mutex<Vec<Vec<Run>>> = Mutex::new(vec![Vec::new(); cells.len()]);
    let build_failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let processes = AtomicUsize::new(0);
    let expected: Vec<String> = SCENARIOS.iter().map(|s| s.id.to_string()).collect();

    let build_one = |pi: usize| -> Vec<Job> {
        let (p, d) = &pairs[pi];
        slots.acquire_for_build();
        let built = build(&opts.pythons[*p], d, opts).and_then(|prog| match listed(&prog) {
            Ok(l) if l == expected => Ok(prog),
            Ok(l) => Err(format!("{} lists {l:?}, not the fifteen", prog.display())),
            Err(e) => Err(e),
        });
        slots.release();
        let prog = match built {
            Ok(prog) => prog,
            Err(e) => {
                build_failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(e);
                return Vec::new();
            }
        };
        // every scenario once first (the hanging ones start early and wait
        // while the rest runs), then the racy repeats, interleaved
        let mut out = Vec::new();
        let name = prog
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("observed")
            .to_string();
        for k in 0..opts.repeats.max(1) {
            for (cell, (cp, sc)) in cells.iter().enumerate() {
                if *cp != pi || (k > 0 && !sc.racy) {
                    continue;
                }
                out.push(Job {
                    cell,
                    program: prog.clone(),
                    scenario: sc,
                    out_base: opts.build_dir.join(format!("{name}.{}.{k}", sc.id)),
                });
            }
        }
        out
    };

    // threads beyond `jobs` wait on parked (blocked) processes: enough that
    // hung ones never hold up the queue
    std::thread::scope(|s| {
        for _ in 0..jobs * 32 {
            s.spawn(|| {
                while let Some(task) = queue.next() {
                    match task {
                        Task::Build(pi) => queue.built(build_one(pi)),
                        Task::Run(job) => {
                            let raw = run_process(
                                &job.program,
                                job.scenario.id,
                                &job.out_base,
                                opts,
                                &slots,
                            );
                            processes.fetch_add(1, Ordering::Relaxed);
                            let r = classify(job.scenario, &raw);
                            runs.lock().unwrap_or_else(|e| e.into_inner())[job.cell].push(r);
                        }
                    }
                }
            });
        }
    });
    let runs = runs.into_inner().unwrap_or_else(|e| e.into_inner());
    let results = cells
        .iter()
        .enumerate()
        .filter(|(cell, _)| !runs[*cell].is_empty())
        .map(|(cell, (pi, sc))| {
            let (p, d) = pairs[*pi];
            tally(&opts.pythons[p], &d, sc, &runs[cell])
        })
        .collect();
    Report {
        pythons: opts.pythons.clone(),
        python_summary: pythons::summary(&opts.pythons),
        designs,
        results,
        build_failures: build_failures
            .into_inner()
            .unwrap_or_else(|e| e.into_inner()),
        repeats: opts.repeats,
        watchdog: opts.watchdog,
        elapsed: t0.elapsed(),
        processes: processes.into_inner(),
    }
}

// ----- rendering -----------------------------------------------------------------

/// The reference version cells are compared with.
const REFERENCE: &str = "3.11";

/// Whether `r`'s most frequent outcome differs from the same cell's on the
/// reference version (racy cells vary in their minority outcomes from run
/// to run; what they mostly do is what compares).
fn differs(report: &Report, r: &ScenarioResult) -> bool {
    r.python != REFERENCE
        && report
            .get(r.design, REFERENCE, r.scenario)
            .is_some_and(|base| base.dominant() != r.dominant())
}

fn versions(report: &Report) -> Vec<String> {
    report.pythons.iter().map(Python::short).collect()
}

fn cell_text(report: &Report, design: &str, v: &str, sc: &str) -> String {
    match report.get(design, v, sc) {
        Some(r) if differs(report, r) => format!("{} *", r.cell()),
        Some(r) => r.cell(),
        None => "—".into(),
    }
}

/// Facade cells that are not all pass (`(design, python, scenario)`).
pub fn facade_failures(report: &Report) -> Vec<&ScenarioResult> {
    report
        .results
        .iter()
        .filter(|r| {
            DESIGNS
                .iter()
                .any(|d| d.name == r.design && d.facade.is_some())
                && !r.all(Outcome::Pass)
        })
        .collect()
}

/// A plain terminal table per design (scenarios × versions), then the
/// details of every facade cell that did not pass.
pub fn render_terminal(report: &Report) -> String {
    let mut s = String::new();
    let vs = versions(report);
    let _ = writeln!(s, "CPython: {}", report.python_summary);
    let _ = writeln!(
        s,
        "{} processes, {} runs per racy scenario, watchdog {:?}, {:.1} s",
        report.processes,
        report.repeats,
        report.watchdog,
        report.elapsed.as_secs_f64()
    );
    for f in &report.build_failures {
        let _ = writeln!(s, "BUILD FAILED: {f}");
    }
    for d in &report.designs {
        let _ = writeln!(s, "\n{} — {}", d.name, d.about);
        let mut w: Vec<usize> = vs.iter().map(String::len).collect();
        for (i, v) in vs.iter().enumerate() {
            for sc in &SCENARIOS {
                w[i] = w[i].max(cell_text(report, d.name, v, sc.id).len());
            }
        }
        let _ = write!(s, "{:<4}", "#");
        for (i, v) in vs.iter().enumerate() {
            let _ = write!(s, "  {:<w$}", v, w = w[i]);
        }
        let _ = writeln!(s);
        for sc in &SCENARIOS {
            if !report
                .results
                .iter()
                .any(|r| r.design == d.name && r.scenario == sc.id)
            {
                continue;
            }
            let _ = write!(s, "{:<4}", sc.id);
            for (i, v) in vs.iter().enumerate() {
                let _ = write!(s, "  {:<w$}", cell_text(report, d.name, v, sc.id), w = w[i]);
            }
            let _ = writeln!(s);
        }
    }
    let _ = writeln!(s, "\n* most frequent outcome differs from {REFERENCE}");
    let fails = facade_failures(report);
    if !fails.is_empty() {
        let _ = writeln!(s, "\nFacade cells that did not pass:");
        for r in fails {
            let _ = writeln!(
                s,
                "  {} {} on {}: {} — {}",
                r.design,
                r.scenario,
                r.python_full,
                r.cell(),
                r.detail()
            );
        }
    }
    s
}

fn md_escape(t: &str) -> String {
    t.replace('|', "\\|")
}

/// One cell of the overview: the versions whose runs mostly came out the
/// same way (same most frequent outcome), counts summed over them.
fn overview_cell(report: &Report, design: &str, sc: &str) -> String {
    /// Versions that came out the same way, their counts summed.
    struct Group {
        outcome: Outcome,
        versions: Vec<String>,
        counts: BTreeMap<Outcome, usize>,
        runs: usize,
    }
    let mut groups: Vec<Group> = Vec::new();
    for v in versions(report) {
        let Some(r) = report.get(design, &v, sc) else {
            continue;
        };
        let key = r.dominant();
        match groups.iter_mut().find(|g| g.outcome == key) {
            Some(g) => {
                g.versions.push(v);
                for (o, n) in &r.counts {
                    *g.counts.entry(*o).or_insert(0) += n;
                }
                g.runs += r.runs;
            }
            None => groups.push(Group {
                outcome: key,
                versions: vec![v],
                counts: r.counts.clone(),
                runs: r.runs,
            }),
        }
    }
    let all = groups.len() == 1;
    groups
        .iter()
        .map(|g| {
            let mut parts: Vec<(Outcome, usize)> = g.counts.iter().map(|(&o, &n)| (o, n)).collect();
            parts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let text = parts
                .iter()
                .map(|&(o, n)| {
                    if parts.len() == 1 {
                        o.label().to_string()
                    } else {
                        format!("{} {n}/{}", o.label(), g.runs)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            if all {
                text
            } else {
                format!("{text} ({})", g.versions.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Markdown overview: scenarios as rows, designs as columns; each cell
/// groups the CPython versions that came out the same way (counts summed),
/// so a version that behaves differently shows as its own group.
pub fn render_overview_markdown(report: &Report) -> String {
    let mut s = String::from("| # | scenario |");
    for d in &report.designs {
        let _ = write!(s, " {} |", d.name);
    }
    s.push_str("\n|---|---|");
    for _ in &report.designs {
        s.push_str("---|");
    }
    s.push('\n');
    for sc in &SCENARIOS {
        if !report.results.iter().any(|r| r.scenario == sc.id) {
            continue;
        }
        let _ = write!(s, "| {} | {} |", sc.id, md_escape(sc.checks));
        for d in &report.designs {
            let _ = write!(s, " {} |", md_escape(&overview_cell(report, d.name, sc.id)));
        }
        s.push('\n');
    }
    s
}

/// Markdown: the overview ([`render_overview_markdown`]), then one table
/// per design (scenarios × versions, cells differing from 3.11 in bold
/// with `*`); with `details`, what each cell saw (the first run of each
/// outcome).
pub fn render_markdown(report: &Report, details: bool) -> String {
    let mut s = String::new();
    let vs = versions(report);
    let mut ran: Vec<String> = report
        .pythons
        .iter()
        .map(|p| p.full_version.clone())
        .collect();
    for m in pythons::MINORS {
        if !report.pythons.iter().any(|p| p.version == (3, m)) {
            ran.push(format!("3.{m} not found (skipped)"));
        }
    }
    let _ = writeln!(s, "CPython versions: {}.\n", ran.join(", "));
    let _ = writeln!(
        s,
        "{} processes; racy scenarios (1, 1c, 3, 3b) run {} times each, the others once; \
         watchdog {} s per process.\n",
        report.processes,
        report.repeats,
        report.watchdog.as_secs()
    );
    for f in &report.build_failures {
        let first = f.lines().next().unwrap_or("");
        let _ = writeln!(s, "**BUILD FAILED**: {first}\n");
    }
    let _ = writeln!(
        s,
        "### Overview\n\nVersions whose runs mostly came out the same way are grouped \
         (counts summed over them).\n\n{}",
        render_overview_markdown(report)
    );
    for d in &report.designs {
        let _ = writeln!(s, "### {}\n\n{}.\n", d.name, d.about);
        let _ = write!(s, "| # |");
        for v in &vs {
            let _ = write!(s, " {v} |");
        }
        let _ = write!(s, "\n|---|");
        for _ in &vs {
            let _ = write!(s, "---|");
        }
        let _ = writeln!(s);
        for sc in &SCENARIOS {
            if !report
                .results
                .iter()
                .any(|r| r.design == d.name && r.scenario == sc.id)
            {
                continue;
            }
            let _ = write!(s, "| {} |", sc.id);
            for v in &vs {
                let t = match report.get(d.name, v, sc.id) {
                    Some(r) if differs(report, r) => format!("**{}** *", r.cell()),
                    Some(r) => r.cell(),
                    None => "—".into(),
                };
                let _ = write!(s, " {} |", md_escape(&t));
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "`*` and bold: the most frequent outcome differs from CPython {REFERENCE}'s.\n"
    );
    if details {
        let _ = writeln!(s, "#### What each cell saw (first run of each outcome)\n");
        for d in &report.designs {
            for sc in &SCENARIOS {
                for v in &vs {
                    if let Some(r) = report.get(d.name, v, sc.id) {
                        let _ = writeln!(
                            s,
                            "- {} {} on {}: {}",
                            d.name,
                            sc.id,
                            r.python_full,
                            md_escape(&r.detail())
                        );
                    }
                }
            }
        }
    }
    s
}

/// The scenario list as a markdown table (id, what it does, CPython 3.11,
/// what pass means).
pub fn render_scenarios_markdown() -> String {
    let mut s = String::from(
        "| # | scenario | CPython 3.11 (baseline) | pass means |\n|---|---|---|---|\n",
    );
    for sc in &SCENARIOS {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            sc.id,
            md_escape(sc.checks),
            md_escape(sc.cpython_311),
            md_escape(
                &sc.pass_means
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_lines() {
        let (n, f) =
            parse_result("NOTE x=1\nRESULT 4 design=ensure py=3.11 attached=sub code=ok\n")
                .unwrap();
        assert_eq!(n, "4");
        assert_eq!(f["attached"], "sub");
        assert_eq!(f["code"], "ok");
        let (n, f) = parse_result("RESULT 8 na reason=\"cannot say it\" x=1\n").unwrap();
        assert_eq!(n, "8");
        assert!(f.contains_key("na"));
        assert_eq!(f["reason"], "cannot say it");
        assert_eq!(f["x"], "1");
    }

    #[test]
    fn judges_tell_wrong_interpreter_from_wrong_answer() {
        let f = parse_result(
            "RESULT 4 attached=main current=main check_main=1 check_sub=1 code=ok work_ok=1 end_sub=ok finalize_rc=0",
        )
        .unwrap()
        .1;
        assert_eq!(
            scenario("4").unwrap().judge(&f).unwrap_err().0,
            Outcome::WrongInterpreter
        );
        let f = parse_result(
            "RESULT 5 unattached_before=0 unattached_during_main=1 unattached_during_sub=1 attached_main_asks_main=1 attached_main_asks_sub=1 unattached_after_main=1 unattached_after_sub=1 code=ok end_sub=ok finalize_rc=0",
        )
        .unwrap()
        .1;
        assert_eq!(
            scenario("5").unwrap().judge(&f).unwrap_err().0,
            Outcome::WrongAnswer
        );
    }
}
