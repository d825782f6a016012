//! `tstate-soak [SECONDS] [THREADS]` — the finalization stress soak (see
//! `tstate_conformance::soak`). Default 20 s, 8 threads; run for hours with
//! a larger SECONDS. Prints the figures; exits 1 on any failure.

use std::time::Duration;
use tstate_conformance::soak::{SoakConfig, SoakReport, soak};

fn main() {
    let mut cfg = SoakConfig::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(s) = args.first() {
        cfg.duration = Duration::from_secs(s.parse().expect("SECONDS"));
    }
    if let Some(t) = args.get(1) {
        cfg.threads = t.parse().expect("THREADS");
    }
    eprintln!(
        "soak: {} threads × {:?}, {} churned interpreter slots …",
        cfg.threads, cfg.duration, cfg.slots
    );
    let r = soak(cfg);
    let left = SoakReport::thread_states_left();
    println!("operations                  {}", r.operations);
    println!("refused: FINALIZING         {}", r.refused_finalizing);
    println!("refused: NO_SUCH_INTERPRETER {}", r.refused_gone);
    println!("finalizations               {}", r.finalizations);
    println!("max finalize latency        {} µs", r.max_finalize_us);
    println!(
        "stable interpreter works    {} (counter {})",
        r.stable_works, r.stable_counter
    );
    println!("thread states left          {left}");
    println!("failures                    {}", r.failures.len());
    for f in &r.failures {
        println!("  {f}");
    }
    if !r.failures.is_empty() || left != 0 {
        std::process::exit(1);
    }
}
