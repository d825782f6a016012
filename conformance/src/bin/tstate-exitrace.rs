//! `tstate-exitrace [RUNS] [--b-runs N] [--markdown] [--watchdog SECONDS]`
//! — the exit race (see `tstate_conformance::exitrace`) with RUNS runs
//! (default 200) per CPython and design for A and `--b-runs` (default RUNS)
//! per CPython, design and lock mode for B, on every CPython found
//! (`TSTATE_PYTHONS=3.11,3.13` limits them). Prints the table (markdown
//! with `--markdown`); exits 1 if a facade had a run that was not clean.

use std::path::PathBuf;
use std::time::Duration;
use tstate_conformance::exitrace::{Config, measure, render_markdown, render_terminal};
use tstate_conformance::pythons;

fn usage() -> ! {
    eprintln!("usage: tstate-exitrace [RUNS] [--b-runs N] [--markdown] [--watchdog SECONDS]");
    std::process::exit(2);
}

fn main() {
    let mut runs = 200;
    let mut b_runs = None;
    let mut markdown = false;
    let mut watchdog = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| usage())
        };
        match a.as_str() {
            "--markdown" => markdown = true,
            "--b-runs" => b_runs = Some(value() as usize),
            "--watchdog" => watchdog = Some(Duration::from_secs(value())),
            n => runs = n.parse().unwrap_or_else(|_| usage()),
        }
    }
    let found = pythons::find();
    eprintln!("CPython: {}", pythons::summary(&found));
    if found.is_empty() {
        eprintln!("no CPython 3.9-3.13 with a shared libpython and headers: nothing to run");
        std::process::exit(1);
    }
    let build_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("exitrace-build")))
        .unwrap_or_else(|| PathBuf::from("exitrace-build"));
    let mut cfg = Config::new(runs, build_dir);
    cfg.runs_sub = b_runs.unwrap_or(runs);
    cfg.runs_sub_baseline = cfg.runs_sub;
    if let Some(w) = watchdog {
        cfg.watchdog = w;
    }
    cfg.progress = true;
    let rep = measure(&cfg, &found);
    if markdown {
        print!("{}", render_markdown(&rep));
    } else {
        print!("{}", render_terminal(&rep));
    }
    let bad = rep.facade_failures();
    if !bad.is_empty() {
        eprintln!("{} facade row(s) with runs that were not clean", bad.len());
        std::process::exit(1);
    }
}
