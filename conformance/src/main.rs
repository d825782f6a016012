//! `tstate-compare` — the main job: the designs compared, against what
//! callers use today.
//!
//! It runs the conformance suite on the model (every design, in this
//! process) and on every CPython 3.9–3.13 found (every design on its
//! CPython backend and CPython's own `PyGILState` API as the `gilstate`
//! column, one child process per case under a watchdog), compares the
//! model's verdicts with CPython's case by case, runs the fifteen observed
//! scenarios and the exit race on every CPython found, times each idiom on
//! the model and on CPython 3.11 (beside `PyGILState_Ensure`), and prints a
//! verdict table first, then the detail. Exits 1 if any applicable case of
//! a design fails (the baseline's failures are findings, not failures of
//! this job), 2 on bad arguments.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use tstate_conformance::bench::{self, Config};
use tstate_conformance::child::{self, CpythonResult, Reps};
use tstate_conformance::facade::{Activate, Ensure, Facade, Guard, Handle};
use tstate_conformance::pythons::{self, Python};
use tstate_conformance::report::{self, BASELINE, DESIGNS, Report};
use tstate_conformance::{exitrace, observed};

const USAGE: &str =
    "usage: tstate-compare [--backend model|cpython|all] [--python 3.X]... [--facade NAME]...
                      [--case SUBSTRING] [--markdown | --json] [--reps N] [--exit-runs N]
                      [--no-observed] [--no-exit-race] [--no-timing] [--rounds N] [--iters N]
                      [--jobs N] [--scale N]

  --backend B     model, cpython or all (default all)
  --python 3.X    only this CPython (repeatable; default every 3.9-3.13 found)
  --facade NAME   ensure, handle, activate, guard or gilstate (repeatable;
                  default all; gilstate is CPython's own API, CPython only)
  --case S        only cases whose name contains S
  --markdown      print markdown (docs/comparison.md is this output)
  --json          print JSON
  --reps N        runs of each racy case on CPython, and of each racy
                  observed scenario (default 20; a design's racy case stops
                  after 3 runs with one outcome)
  --exit-runs N   runs per row of the exit race (default 20; 0 skips it)
  --no-observed   skip the fifteen observed scenarios
  --no-exit-race  skip the exit race
  --no-timing     skip the timings
  --rounds N      timing rounds, medians over them (default 15)
  --iters N       operations per timed measurement (default 20000)
  --jobs N        CPython child processes at a time (default 2)
  --scale N       multiply race-case sizes (sets TSTATE_CONFORMANCE_SCALE)";

struct Args {
    model: bool,
    cpython: bool,
    pythons: Vec<String>,
    facades: Vec<String>,
    case: Option<String>,
    format: Format,
    reps: usize,
    exit_runs: usize,
    observed: bool,
    timing: bool,
    jobs: usize,
    bench: Config,
}

#[derive(PartialEq)]
enum Format {
    Terminal,
    Markdown,
    Json,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        model: true,
        cpython: true,
        pythons: Vec::new(),
        facades: Vec::new(),
        case: None,
        format: Format::Terminal,
        reps: 20,
        exit_runs: 20,
        observed: true,
        timing: true,
        jobs: 2,
        bench: Config::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--backend" => match value("--backend")?.as_str() {
                "model" => (a.model, a.cpython) = (true, false),
                "cpython" => (a.model, a.cpython) = (false, true),
                "all" => (a.model, a.cpython) = (true, true),
                other => return Err(format!("unknown backend {other}")),
            },
            "--python" => {
                let v = value("--python")?;
                if !pythons::MINORS.iter().any(|m| v == format!("3.{m}")) {
                    return Err(format!("--python takes 3.9 … 3.13, not {v}"));
                }
                a.pythons.push(v);
            }
            "--facade" => {
                let f = value("--facade")?;
                if !DESIGNS.contains(&f.as_str()) && f != BASELINE {
                    return Err(format!("unknown facade {f}"));
                }
                a.facades.push(f);
            }
            "--case" => a.case = Some(value("--case")?),
            "--markdown" => a.format = Format::Markdown,
            "--json" => a.format = Format::Json,
            "--reps" => a.reps = num(&value("--reps")?)?.max(1) as usize,
            "--exit-runs" => a.exit_runs = num(&value("--exit-runs")?)? as usize,
            "--no-observed" => a.observed = false,
            "--no-exit-race" => a.exit_runs = 0,
            "--no-timing" => a.timing = false,
            "--rounds" => a.bench.rounds = num(&value("--rounds")?)?.max(1) as usize,
            "--iters" => a.bench.iters = num(&value("--iters")?)?.max(1),
            "--jobs" => a.jobs = num(&value("--jobs")?)?.max(1) as usize,
            "--scale" => {
                let n = num(&value("--scale")?)?;
                // SAFETY: single-threaded here (before any case runs).
                unsafe { std::env::set_var("TSTATE_CONFORMANCE_SCALE", n.to_string()) };
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.facades.is_empty() {
        a.facades = DESIGNS
            .iter()
            .chain(std::iter::once(&BASELINE))
            .map(|s| s.to_string())
            .collect();
    }
    Ok(a)
}

fn num(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("not a number: {s}"))
}

/// A progress line on stderr (rewritten in place on a terminal, one line
/// each otherwise).
struct Progress {
    tty: bool,
}

impl Progress {
    fn line(&self, what: &str) {
        let mut e = std::io::stderr();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K{what}");
        } else {
            let _ = writeln!(e, "{what}");
        }
        let _ = e.flush();
    }
    fn finish(&self) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

fn run_model<F: Facade>(
    case: Option<&str>,
    p: &Progress,
    done: &mut usize,
    total: usize,
) -> report::FacadeRun {
    report::run_suite::<F>(case, &mut |c| {
        *done += 1;
        p.line(&format!("[model {done}/{total}] {}/{c}", F::NAME));
    })
}

/// Panics the cases inject on purpose (a callback that panics, to check
/// that no panic crosses the ABI) are expected noise: keep them off the
/// terminal; print every other panic as usual.
fn quiet_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if !msg.contains(tstate_core::c_abi::INJECTED_PANIC) {
            default(info);
        }
    }));
}

/// Where the C programs of the observed scenarios and the exit race are
/// built: beside this executable (`target/<profile>/tstate-c-build`).
fn build_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("tstate-c-build")))
        .unwrap_or_else(|| std::env::temp_dir().join("tstate-c-build"))
}

fn main() {
    let raw: Vec<String> = std::env::args().collect();
    let lib = || std::env::var_os(child::LIBPYTHON_ENV).unwrap_or_default();
    if raw.get(1).map(String::as_str) == Some("--child") && raw.len() == 4 {
        quiet_injected_panics();
        child::child_main(&raw[2], &raw[3], std::path::Path::new(&lib()));
    }
    if raw.get(1).map(String::as_str) == Some("--child-bench") && raw.len() == 4 {
        let n = |s: &str| s.parse().unwrap_or(1);
        let cfg = Config {
            rounds: n(&raw[2]) as usize,
            iters: n(&raw[3]),
        };
        child::bench_child_main(cfg, std::path::Path::new(&lib()));
    }
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    quiet_injected_panics();
    let progress = Progress {
        tty: std::io::stderr().is_terminal(),
    };
    let case = args.case.as_deref();
    let cases: Vec<&'static str> = child::case_names()
        .into_iter()
        .filter(|c| case.is_none_or(|f| c.contains(f)))
        .collect();
    let designs: Vec<&'static str> = DESIGNS
        .into_iter()
        .filter(|d| args.facades.iter().any(|f| f == d))
        .collect();
    let mut r = Report {
        reps: args.reps,
        ..Report::default()
    };

    // 1. the model, in this process
    if args.model {
        let total = cases.len() * designs.len();
        let mut done = 0;
        for d in &designs {
            let run = match *d {
                "ensure" => run_model::<Ensure>(case, &progress, &mut done, total),
                "handle" => run_model::<Handle>(case, &progress, &mut done, total),
                "activate" => run_model::<Activate>(case, &progress, &mut done, total),
                _ => run_model::<Guard>(case, &progress, &mut done, total),
            };
            r.model.push(run);
        }
    }

    // 2. real CPython
    let mut found: Vec<Python> = Vec::new();
    if args.cpython {
        let all = pythons::find();
        found = all
            .iter()
            .filter(|p| args.pythons.is_empty() || args.pythons.contains(&p.short()))
            .cloned()
            .collect();
        r.python_summary = pythons::summary(&all);
        if !args.pythons.is_empty() {
            let ran: Vec<String> = found.iter().map(Python::short).collect();
            r.python_summary += &format!("; selected with --python: {}", ran.join(", "));
        }
        r.pythons = found.iter().map(Python::short).collect();
        let exe = std::env::current_exe().expect("current_exe");
        let mut facades: Vec<&'static str> = designs.clone();
        if args.facades.iter().any(|f| f == BASELINE) {
            facades.push(BASELINE);
        }
        if !found.is_empty() && !facades.is_empty() {
            let total = found.len() * facades.len() * cases.len();
            let mut done = 0;
            let reps = Reps {
                racy: args.reps,
                settle: 3,
            };
            let mut design_reps = |res: &CpythonResult| {
                done += 1;
                progress.line(&format!(
                    "[cpython {done}/{total}] {} {}/{}: {}",
                    res.python,
                    res.facade,
                    res.case,
                    res.outcome.class()
                ));
            };
            // the designs settle after 3 equal runs; the baseline runs every
            // repetition (its counts are the finding)
            r.cpython = child::run_all_reps(
                &exe,
                &found,
                &designs,
                &cases,
                args.jobs,
                reps,
                &mut design_reps,
            );
            if facades.contains(&BASELINE) {
                r.cpython.extend(child::run_all_reps(
                    &exe,
                    &found,
                    &[BASELINE],
                    &cases,
                    args.jobs,
                    Reps {
                        racy: args.reps,
                        settle: args.reps,
                    },
                    &mut design_reps,
                ));
            }
        }
        if args.observed && !found.is_empty() && case.is_none() {
            progress.line("observed scenarios: building and running");
            let mut o = observed::Options::new(build_dir().join("observed"));
            o.repeats = args.reps;
            o.pythons = found.clone();
            o.jobs = args.jobs;
            o.designs = args.facades.clone();
            r.observed = Some(observed::run_all(&o));
        }
        if args.exit_runs > 0 && !found.is_empty() && case.is_none() {
            progress.line("exit race: building and running");
            let mut c = exitrace::Config::new(args.exit_runs, build_dir().join("exitrace"));
            c.parallel = args.jobs;
            r.exitrace = Some(exitrace::measure(&c, &found));
        }
    } else {
        r.python_summary = "not run (--backend model)".into();
    }

    // 3. timings: the model here, CPython 3.11 (else the newest found) in a child
    if args.timing {
        progress.line("timing (model)");
        // the designs asked for (`--facade`), the unit always
        let wanted = |f: &str| f == "baseline" || args.facades.iter().any(|w| w == f);
        let benches: Vec<_> = bench::comparison_benches()
            .into_iter()
            .filter(|b| wanted(b.facade))
            .collect();
        let mut ms = bench::run(&benches, args.bench, &mut |_| {});
        if let Some(py) = found.iter().find(|p| p.version == (3, 11)).or(found.last()) {
            progress.line(&format!("timing (cpython {})", py.short()));
            let exe = std::env::current_exe().expect("current_exe");
            match child::run_bench_in_child(&exe, py, args.bench) {
                Ok(more) => ms.extend(more.into_iter().filter(|m| wanted(m.facade))),
                Err(e) => eprintln!("timing on CPython {} failed: {e}", py.short()),
            }
        }
        r.timings = Some(ms);
        r.timing_method = format!(
            "each design's idiom through its C functions, on the main interpreter, one thread; on the model in the main job's process, on CPython in a child process (the facades on their CPython backend, then CPython's own `PyGILState_Ensure`/`Release` on a second fresh thread); median/min/max ns per operation over {} interleaved rounds of {} operations; ratio to an uncontended std Mutex lock+unlock pair measured in the same process; `cargo run --release -p tstate-conformance`. Case A: nested (the thread is attached already); B: re-attach after a save; C: a thread holding nothing.",
            args.bench.rounds, args.bench.iters
        );
    }
    progress.finish();

    let out = match args.format {
        Format::Terminal => report::terminal(&r),
        Format::Markdown => report::markdown(&r),
        Format::Json => report::json(&r),
    };
    print!("{out}");
    if r.any_failed() {
        std::process::exit(1);
    }
}
