//! `tstate-compare` — the main job: runs the conformance suite against every
//! facade in one process and prints the designs side by side: the matrix
//! (case × design → pass / FAIL / n/a, with reasons), the boilerplate a
//! caller writes per pattern, and a timing table. Exits 1 if any applicable
//! case fails, 2 on bad arguments.

use std::io::{IsTerminal, Write};
use tstate_conformance::bench::{self, Config};
use tstate_conformance::facade::{Activate, Ensure, Facade, Handle, Shared};
use tstate_conformance::report::{self, Report};

const USAGE: &str = "usage: tstate-compare [--facade ensure|handle|activate]... [--case SUBSTRING]
                      [--markdown | --json] [--no-timing] [--rounds N] [--iters N] [--scale N]

  --facade NAME   only this design (repeatable; default: all three)
  --case S        only cases whose name contains S
  --markdown      print markdown (docs/comparison.md is this output)
  --json          print JSON
  --no-timing     skip the timing table
  --rounds N      timing rounds, medians over them (default 15)
  --iters N       operations per timed measurement (default 20000)
  --scale N       multiply race-case sizes (sets TSTATE_CONFORMANCE_SCALE)";

struct Args {
    facades: Vec<String>,
    case: Option<String>,
    format: Format,
    timing: bool,
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
        facades: Vec::new(),
        case: None,
        format: Format::Terminal,
        timing: true,
        bench: Config::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--facade" => {
                let f = value("--facade")?;
                if !["ensure", "handle", "activate"].contains(&f.as_str()) {
                    return Err(format!("unknown facade {f}"));
                }
                a.facades.push(f);
            }
            "--case" => a.case = Some(value("--case")?),
            "--markdown" => a.format = Format::Markdown,
            "--json" => a.format = Format::Json,
            "--no-timing" => a.timing = false,
            "--rounds" => a.bench.rounds = num(&value("--rounds")?)?.max(1) as usize,
            "--iters" => a.bench.iters = num(&value("--iters")?)?.max(1),
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
        a.facades = vec!["ensure".into(), "handle".into(), "activate".into()];
    }
    Ok(a)
}

fn num(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("not a number: {s}"))
}

/// A progress line on stderr while cases run (rewritten in place on a
/// terminal, one line each otherwise).
struct Progress {
    tty: bool,
    done: usize,
    total: usize,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        let line = format!("[{}/{}] {what}", self.done, self.total);
        let mut e = std::io::stderr();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(e, "{line}");
        }
        let _ = e.flush();
    }
    fn finish(&self) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

fn run_facade<F: Facade>(case: Option<&str>, p: &mut Progress) -> report::FacadeRun {
    report::run_suite::<F>(case, &mut |c| p.step(&format!("{}/{c}", F::NAME)))
}

fn main() {
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some("--child") && raw.len() == 4 {
        let lib = std::env::var_os(tstate_conformance::child::LIBPYTHON_ENV).unwrap_or_default();
        tstate_conformance::child::child_main(&raw[2], &raw[3], std::path::Path::new(&lib));
    }
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let per_facade = tstate_conformance::cases::all::<Ensure>()
        .iter()
        .filter(|c| args.case.as_deref().is_none_or(|f| c.name.contains(f)))
        .count();
    let mut progress = Progress {
        tty: std::io::stderr().is_terminal(),
        done: 0,
        total: per_facade * args.facades.len(),
    };
    let case = args.case.as_deref();
    let mut facades = Vec::new();
    for f in &args.facades {
        facades.push(match f.as_str() {
            "ensure" => run_facade::<Ensure>(case, &mut progress),
            "handle" => run_facade::<Handle>(case, &mut progress),
            _ => run_facade::<Activate>(case, &mut progress),
        });
    }
    progress.finish();

    let timings = args.timing.then(|| {
        let interp = Ensure::main_interpreter().expect("main interpreter");
        let benches: Vec<_> = bench::comparison_benches()
            .into_iter()
            .filter(|b| b.facade == "baseline" || args.facades.iter().any(|f| f == b.facade))
            .collect();
        let mut p = Progress {
            tty: progress.tty,
            done: 0,
            total: args.bench.rounds,
        };
        let ms = bench::run(&benches, interp, args.bench, &mut |r| {
            p.step(&format!("timing round {r}"))
        });
        p.finish();
        ms
    });
    let r = Report {
        facades,
        timings,
        timing_method: format!(
            "each design's idiom through its C functions, on the main interpreter (own lock), one thread; median/min/max ns per operation over {} interleaved rounds of {} operations; ratio to an uncontended std Mutex lock+unlock pair measured in the same run; `cargo run --release -p tstate-conformance`",
            args.bench.rounds, args.bench.iters
        ),
    };
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
