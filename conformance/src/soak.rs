//! The finalization stress soak: N threads run mixed nested enter / work /
//! save-restore / cross-interpreter switches / leave through all three
//! facades' C functions at once, while a driver keeps creating and
//! finalizing interpreters of every lock mode. Bounded in time; a watchdog
//! turns a hang into a failure.
//!
//! Checked: no hang, no crash, every refusal a documented code (FINALIZING
//! or NO_SUCH_INTERPRETER for an enter), no mutual-exclusion violation, no
//! work in a finalized interpreter, the work counter of a never-finalized
//! interpreter exact, every finalize completing, and nothing left at the end
//! (no open hold; no thread state once the workers exited).

use crate::facade::{Activate, Code, Ensure, Facade, Handle, Shared};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tstate_core::Error as E;

/// Soak parameters.
#[derive(Debug, Clone, Copy)]
pub struct SoakConfig {
    /// Worker threads.
    pub threads: usize,
    /// How long the workers and the driver run.
    pub duration: Duration,
    /// Interpreter slots the driver churns.
    pub slots: usize,
    /// Seed for the workers' choices (reproducible op mix per thread).
    pub seed: u64,
}

impl Default for SoakConfig {
    fn default() -> Self {
        Self {
            threads: 8,
            duration: Duration::from_secs(20),
            slots: 4,
            seed: 0x7357_0001,
        }
    }
}

/// What a soak did and saw.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    /// Enter / leave / work / save / restore calls made.
    pub operations: u64,
    /// Enters refused with FINALIZING.
    pub refused_finalizing: u64,
    /// Enters refused with NO_SUCH_INTERPRETER.
    pub refused_gone: u64,
    /// Completed finalizations.
    pub finalizations: u64,
    /// Slowest finalize, µs.
    pub max_finalize_us: u64,
    /// Successful works on the stable interpreter (must equal its counter).
    pub stable_works: u64,
    /// Its counter at the end.
    pub stable_counter: u64,
    /// Everything that went wrong (empty = pass).
    pub failures: Vec<String>,
}

/// xorshift64*: small, deterministic per thread.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Tally {
    ops: u64,
    refused_finalizing: u64,
    refused_gone: u64,
    stable_works: u64,
    failures: Vec<String>,
}

impl Tally {
    fn refusal(&mut self, what: &str, c: Code) {
        if c == E::Finalizing.code() {
            self.refused_finalizing += 1;
        } else if c == E::NoSuchInterpreter.code() {
            self.refused_gone += 1;
        } else if self.failures.len() < 20 {
            self.failures
                .push(format!("{what}: undocumented refusal {c}"));
        }
    }
    fn must(&mut self, what: &str, r: Result<impl Sized, Code>) -> bool {
        self.ops += 1;
        match r {
            Ok(_) => true,
            Err(c) => {
                if self.failures.len() < 20 {
                    self.failures.push(format!("{what}: unexpected code {c}"));
                }
                false
            }
        }
    }
}

/// "Python work" on `id`, counting works on the stable interpreter.
fn work_in<F: Facade>(t: &mut Tally, id: u64, stable: u64, what: &str) -> bool {
    let ok = t.must(what, F::work(id));
    if ok && id == stable {
        t.stable_works += 1;
    }
    ok
}

/// An inner span on `id`: enter (a refusal is tallied), work, leave.
fn inner_span<F: Facade>(t: &mut Tally, id: u64, stable: u64, what: &str) {
    t.ops += 1;
    match F::enter(id) {
        Ok(s) => {
            work_in::<F>(t, id, stable, what);
            t.must(what, F::leave(s));
        }
        Err(c) => t.refusal(what, c),
    }
}

/// One worker step through facade `F`: enter a churned interpreter and do
/// a random mix inside, or do the same on the stable one.
fn step<F: Facade>(rng: &mut Rng, t: &mut Tally, slots: &[AtomicU64], stable: u64) {
    let target = if rng.below(4) == 0 {
        stable
    } else {
        slots[rng.below(slots.len() as u64) as usize].load(Ordering::Acquire)
    };
    t.ops += 1;
    let outer = match F::enter(target) {
        Ok(s) => s,
        Err(c) => return t.refusal("enter", c),
    };
    let before = F::current();
    if !work_in::<F>(t, target, stable, "work") {
        return;
    }
    match rng.below(4) {
        0 => inner_span::<F>(t, target, stable, "nested"),
        1 => {
            // nogil section with a re-entry
            if let Ok(saved) = F::save() {
                t.ops += 1;
                inner_span::<F>(t, target, stable, "re-entry");
                t.must("restore", F::restore(saved));
            }
        }
        2 => {
            // switch to another interpreter and back
            let other = if target == stable {
                slots[0].load(Ordering::Acquire)
            } else {
                stable
            };
            inner_span::<F>(t, other, stable, "switch");
        }
        _ => {}
    }
    if F::current() != before && t.failures.len() < 20 {
        t.failures
            .push(format!("{}: not restored exactly", F::NAME));
    }
    t.must("leave", F::leave(outer));
}

/// Runs the soak (in this process's global runtime: run it in a process of
/// its own for the end-of-run counts to be exact).
pub fn soak(cfg: SoakConfig) -> SoakReport {
    let mut report = SoakReport::default();
    let before = Ensure::diagnostics();
    let stable = Ensure::create(0).expect("create stable");
    let modes = [0u32, 1, 2];
    let slots: Arc<Vec<AtomicU64>> = Arc::new(
        (0..cfg.slots)
            .map(|k| AtomicU64::new(Ensure::create(modes[k % 3]).expect("create")))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + cfg.duration;
    let workers: Vec<_> = (0..cfg.threads)
        .map(|n| {
            let (slots, stop) = (slots.clone(), stop.clone());
            let seed = cfg.seed ^ (n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            std::thread::spawn(move || {
                let mut rng = Rng(seed | 1);
                let mut t = Tally::default();
                while !stop.load(Ordering::Relaxed) {
                    match rng.below(3) {
                        0 => step::<Ensure>(&mut rng, &mut t, &slots, stable),
                        1 => step::<Handle>(&mut rng, &mut t, &slots, stable),
                        _ => step::<Activate>(&mut rng, &mut t, &slots, stable),
                    }
                    if Ensure::current().is_some() && t.failures.len() < 20 {
                        t.failures.push("still attached between steps".into());
                    }
                }
                t
            })
        })
        .collect();
    let (slots2, stop2) = (slots.clone(), stop.clone());
    let driver = std::thread::spawn(move || -> (u64, u64, Vec<String>) {
        let (mut n, mut max_us, mut errs) = (0u64, 0u64, Vec::new());
        let mut k = 0usize;
        while !stop2.load(Ordering::Relaxed) {
            let fresh = match Ensure::create(modes[k % 3]) {
                Ok(i) => i,
                Err(c) => {
                    errs.push(format!("create: {c}"));
                    break;
                }
            };
            let old = slots2[k % slots2.len()].swap(fresh, Ordering::AcqRel);
            let t0 = Instant::now();
            match Ensure::finalize(old, 10_000) {
                Ok(()) => n += 1,
                Err(c) => errs.push(format!("finalize: code {c}")),
            }
            max_us = max_us.max(t0.elapsed().as_micros() as u64);
            k += 1;
        }
        (n, max_us, errs)
    });
    // The watchdog: the run is bounded; anything still running 60 s after
    // the deadline is a hang.
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let hard = Instant::now() + Duration::from_secs(60);
    let join_by = |h: std::thread::JoinHandle<Tally>| -> Option<Tally> {
        while !h.is_finished() {
            if Instant::now() > hard {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        h.join().ok()
    };
    for w in workers {
        match join_by(w) {
            Some(t) => {
                report.operations += t.ops;
                report.refused_finalizing += t.refused_finalizing;
                report.refused_gone += t.refused_gone;
                report.stable_works += t.stable_works;
                report.failures.extend(t.failures);
            }
            None => report.failures.push("a worker hung (watchdog)".into()),
        }
    }
    match driver.join() {
        Ok((n, max_us, errs)) => {
            report.finalizations = n;
            report.max_finalize_us = max_us;
            report.failures.extend(errs);
        }
        Err(_) => report.failures.push("driver panicked".into()),
    }
    report.stable_counter = Ensure::work_count(stable).unwrap_or(u64::MAX);
    if report.stable_counter != report.stable_works {
        report.failures.push(format!(
            "stable interpreter: {} works done, counter says {}",
            report.stable_works, report.stable_counter
        ));
    }
    for s in slots.iter() {
        if Ensure::finalize(s.load(Ordering::Acquire), 10_000).is_err() {
            report.failures.push("final finalize failed".into());
        }
    }
    if Ensure::finalize(stable, 10_000).is_err() {
        report.failures.push("stable finalize failed".into());
    }
    let after = Ensure::diagnostics();
    let checks = [
        (
            "mutual-exclusion violations",
            after.exclusion_violations - before.exclusion_violations,
        ),
        (
            "work in a finalized interpreter",
            after.work_after_finalize - before.work_after_finalize,
        ),
        ("open holds at the end", after.open_holds),
        (
            "finalize timeouts",
            after.finalize_timeouts - before.finalize_timeouts,
        ),
    ];
    for (what, n) in checks {
        if n != 0 {
            report.failures.push(format!("{what}: {n}"));
        }
    }
    report
}

impl SoakReport {
    /// Thread states left once every worker exited (call after `soak`).
    pub fn thread_states_left() -> u64 {
        Ensure::diagnostics().thread_states
    }
}
