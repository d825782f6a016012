//! Timings of each design's idiom, through its exported C functions, with
//! an uncontended mutex lock+unlock pair measured in the same run as the
//! unit (absolute times drift on shared machines; ratios hold).
//!
//! Method: every measurement runs `iters` operations and is timed as a
//! whole; the measurements are interleaved in rounds (A B C … A B C …) on
//! one dedicated thread, and each reports median, min and max over the
//! rounds. The main job's timing table and `docs/performance.md` come from
//! here.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// One timed operation kind.
pub struct Bench {
    /// Design (`ensure`, `handle`, `activate`, `guard`), `gilstate`, or
    /// `baseline`.
    pub facade: &'static str,
    /// Case key (`A`, `B`, `C`, `mutex`).
    pub case: &'static str,
    /// What exactly one operation is.
    pub what: &'static str,
    /// Runs `iters` operations on the calling thread, on `interp` (its
    /// facade's main interpreter, [`main_of`]), and returns the time.
    pub run: fn(iters: u64, interp: u64) -> Duration,
}

/// Result of one bench over all rounds.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Where it ran: `model`, or `cpython 3.11`.
    pub backend: String,
    /// Design, `gilstate` (CPython's own API) or `baseline`.
    pub facade: &'static str,
    /// Case key.
    pub case: &'static str,
    /// What one operation is.
    pub what: &'static str,
    /// Median ns per operation over the rounds.
    pub median_ns: f64,
    /// Fastest round, ns per operation.
    pub min_ns: f64,
    /// Slowest round, ns per operation.
    pub max_ns: f64,
    /// `median_ns` / the mutex pair's median in the same run.
    pub ratio: f64,
}

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Rounds (each bench once per round); medians over these.
    pub rounds: usize,
    /// Operations per measurement.
    pub iters: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rounds: 15,
            iters: 20_000,
        }
    }
}

fn mutex_pair(iters: u64, _: u64) -> Duration {
    let m = std::sync::Mutex::new(0u64);
    let t0 = Instant::now();
    for _ in 0..iters {
        *black_box(&m).lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }
    t0.elapsed()
}

mod ensure {
    use super::*;
    use tstate_ffi_ensure::*;

    fn pair(interp: u64) {
        // SAFETY: NULL errmsg is allowed.
        let r = unsafe { tse_ensure(black_box(interp), std::ptr::null_mut()) };
        assert_eq!(r, 0);
        tse_release();
    }
    pub fn nested(iters: u64, interp: u64) -> Duration {
        // SAFETY: NULL errmsg is allowed.
        assert_eq!(unsafe { tse_ensure(interp, std::ptr::null_mut()) }, 0);
        let t0 = Instant::now();
        for _ in 0..iters {
            pair(interp);
        }
        let d = t0.elapsed();
        tse_release();
        d
    }
    pub fn reattach(iters: u64, interp: u64) -> Duration {
        let mut saved = 0;
        // SAFETY: NULL errmsg is allowed; `saved` is a valid out-pointer.
        unsafe {
            assert_eq!(tse_ensure(interp, std::ptr::null_mut()), 0);
            assert_eq!(tse_save_thread(&mut saved), 0);
        }
        let t0 = Instant::now();
        for _ in 0..iters {
            pair(interp);
        }
        let d = t0.elapsed();
        assert_eq!(tse_restore_thread(saved), 0);
        tse_release();
        d
    }
    pub fn fresh(iters: u64, interp: u64) -> Duration {
        let t0 = Instant::now();
        for _ in 0..iters {
            pair(interp);
        }
        t0.elapsed()
    }
}

mod handle {
    use super::*;
    use tstate_ffi_handle::*;

    fn pair(interp: u64) {
        // SAFETY: NULL errmsg is allowed.
        let h = unsafe { tsh_ensure(black_box(interp), std::ptr::null_mut()) };
        assert!(h >= 0);
        assert_eq!(tsh_release(h), 0);
    }
    pub fn nested(iters: u64, interp: u64) -> Duration {
        // SAFETY: NULL errmsg is allowed.
        let outer = unsafe { tsh_ensure(interp, std::ptr::null_mut()) };
        let t0 = Instant::now();
        for _ in 0..iters {
            pair(interp);
        }
        let d = t0.elapsed();
        assert_eq!(tsh_release(outer), 0);
        d
    }
    pub fn reattach(iters: u64, interp: u64) -> Duration {
        let mut saved = 0;
        // SAFETY: NULL errmsg is allowed; `saved` is a valid out-pointer.
        let outer = unsafe { tsh_ensure(interp, std::ptr::null_mut()) };
        // SAFETY: valid out-pointer.
        assert_eq!(unsafe { tsh_save_thread(&mut saved) }, 0);
        let t0 = Instant::now();
        for _ in 0..iters {
            pair(interp);
        }
        let d = t0.elapsed();
        assert_eq!(tsh_restore_thread(saved), 0);
        assert_eq!(tsh_release(outer), 0);
        d
    }
    pub fn fresh(iters: u64, interp: u64) -> Duration {
        let t0 = Instant::now();
        for _ in 0..iters {
            pair(interp);
        }
        t0.elapsed()
    }
}

mod guard {
    use super::*;
    use tstate_ffi_guard::*;

    /// The guard a caller keeps for as long as it may call in (PEP 788's
    /// idiom: take it once, ensure under it many times).
    fn with_guard<T>(interp: u64, f: impl FnOnce(*mut Guard) -> T) -> T {
        let v = tsg_view_from_interpreter(interp);
        assert!(!v.is_null());
        let g = tsg_guard_from_view(v);
        assert!(!g.is_null());
        let r = f(g);
        tsg_guard_close(g);
        tsg_view_close(v);
        r
    }
    fn pair(g: *mut Guard) {
        let t = tsg_ensure(black_box(g));
        assert!(!t.is_null());
        tsg_release(t);
    }
    pub fn nested(iters: u64, interp: u64) -> Duration {
        with_guard(interp, |g| {
            let outer = tsg_ensure(g);
            let t0 = Instant::now();
            for _ in 0..iters {
                pair(g);
            }
            let d = t0.elapsed();
            tsg_release(outer);
            d
        })
    }
    pub fn reattach(iters: u64, interp: u64) -> Duration {
        with_guard(interp, |g| {
            let outer = tsg_ensure(g);
            let mut saved = 0;
            // SAFETY: valid out-pointer.
            assert_eq!(unsafe { tsg_save_thread(&mut saved) }, 0);
            let t0 = Instant::now();
            for _ in 0..iters {
                pair(g);
            }
            let d = t0.elapsed();
            assert_eq!(tsg_restore_thread(saved), 0);
            tsg_release(outer);
            d
        })
    }
    pub fn fresh(iters: u64, interp: u64) -> Duration {
        with_guard(interp, |g| {
            let t0 = Instant::now();
            for _ in 0..iters {
                pair(g);
            }
            t0.elapsed()
        })
    }
    /// PEP 788's other entry: `EnsureFromView` + `Release` on a thread
    /// holding nothing (each ensure takes a guard from the view, the
    /// release closes it).
    pub fn from_view(iters: u64, interp: u64) -> Duration {
        let v = tsg_view_from_interpreter(interp);
        assert!(!v.is_null());
        let t0 = Instant::now();
        for _ in 0..iters {
            let t = tsg_ensure_from_view(black_box(v));
            assert!(!t.is_null());
            tsg_release(t);
        }
        let d = t0.elapsed();
        tsg_view_close(v);
        d
    }
}

/// The guard design's `EnsureFromView` + `Release` on a thread holding
/// nothing (case `V`; not in [`comparison_benches`]: the other designs
/// have no equivalent).
pub fn guard_from_view_bench() -> Bench {
    Bench {
        facade: "guard",
        case: "V",
        what: "EnsureFromView(view) + Release(token) on a thread holding nothing",
        run: guard::from_view,
    }
}

/// CPython's own API (only in a process with libpython loaded and
/// initialized; `interp` is ignored: `PyGILState_Ensure` takes none).
mod gilstate {
    use super::*;
    use tstate_core::cpython::ffi::{self, Api};

    fn api() -> &'static Api {
        ffi::api().expect("the gilstate benches run only with libpython loaded")
    }
    fn pair(a: &Api) {
        // SAFETY: Python is initialized (the caller's contract); Ensure and
        // the matching Release on this thread.
        unsafe {
            let s = (a.PyGILState_Ensure)();
            (a.PyGILState_Release)(black_box(s));
        }
    }
    pub fn nested(iters: u64, _: u64) -> Duration {
        let a = api();
        // SAFETY: as in `pair`; the outer Ensure is released at the end.
        let outer = unsafe { (a.PyGILState_Ensure)() };
        let t0 = Instant::now();
        for _ in 0..iters {
            pair(a);
        }
        let d = t0.elapsed();
        // SAFETY: releases the outer Ensure on the thread that took it.
        unsafe { (a.PyGILState_Release)(outer) };
        d
    }
    pub fn reattach(iters: u64, _: u64) -> Duration {
        let a = api();
        // SAFETY: Ensure, then detach (this thread holds the GIL); restored
        // and released in reverse order below.
        let (outer, saved) = unsafe {
            let o = (a.PyGILState_Ensure)();
            (o, (a.PyEval_SaveThread)())
        };
        let t0 = Instant::now();
        for _ in 0..iters {
            pair(a);
        }
        let d = t0.elapsed();
        // SAFETY: `saved` is this thread's state, detached above.
        unsafe {
            (a.PyEval_RestoreThread)(saved);
            (a.PyGILState_Release)(outer);
        }
        d
    }
    pub fn fresh(iters: u64, _: u64) -> Duration {
        let a = api();
        let t0 = Instant::now();
        for _ in 0..iters {
            pair(a);
        }
        t0.elapsed()
    }
}

mod activate {
    use super::*;
    use tstate_ffi_activate::*;

    /// The design's idiom when it cannot know: ask, else own a new one.
    fn call_in(interp: u64) {
        if tsa_is_attached(black_box(interp)) == 1 {
            return;
        }
        let mut ts = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        assert_eq!(unsafe { tsa_new(interp, &mut ts) }, 0);
        assert_eq!(tsa_activate(ts), 0);
        assert_eq!(tsa_deactivate(ts), 0);
        assert_eq!(tsa_delete(ts), 0);
    }
    fn with_active<T>(interp: u64, f: impl FnOnce() -> T) -> T {
        let mut ts = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        assert_eq!(unsafe { tsa_new(interp, &mut ts) }, 0);
        assert_eq!(tsa_activate(ts), 0);
        let r = f();
        assert_eq!(tsa_deactivate(ts), 0);
        assert_eq!(tsa_delete(ts), 0);
        r
    }
    pub fn nested(iters: u64, interp: u64) -> Duration {
        with_active(interp, || {
            let t0 = Instant::now();
            for _ in 0..iters {
                call_in(interp);
            }
            t0.elapsed()
        })
    }
    pub fn reattach(iters: u64, interp: u64) -> Duration {
        with_active(interp, || {
            let mut saved = 0;
            // SAFETY: valid out-pointer.
            assert_eq!(unsafe { tsa_save_thread(&mut saved) }, 0);
            let t0 = Instant::now();
            for _ in 0..iters {
                call_in(interp);
            }
            let d = t0.elapsed();
            assert_eq!(tsa_restore_thread(saved), 0);
            d
        })
    }
    pub fn fresh(iters: u64, interp: u64) -> Duration {
        let t0 = Instant::now();
        for _ in 0..iters {
            call_in(interp);
        }
        t0.elapsed()
    }
}

/// The benches of the comparison: A, B, C per design, and the unit.
pub fn comparison_benches() -> Vec<Bench> {
    vec![
        Bench {
            facade: "baseline",
            case: "mutex",
            what: "uncontended std Mutex lock + unlock",
            run: mutex_pair,
        },
        Bench {
            facade: "ensure",
            case: "A",
            what: "Ensure + Release while attached (nested)",
            run: ensure::nested,
        },
        Bench {
            facade: "ensure",
            case: "B",
            what: "Ensure + Release after SaveThread (re-attach)",
            run: ensure::reattach,
        },
        Bench {
            facade: "ensure",
            case: "C",
            what: "Ensure + Release on a thread holding nothing",
            run: ensure::fresh,
        },
        Bench {
            facade: "handle",
            case: "A",
            what: "Ensure + Release(h) while attached (nested)",
            run: handle::nested,
        },
        Bench {
            facade: "handle",
            case: "B",
            what: "Ensure + Release(h) after SaveThread (re-attach)",
            run: handle::reattach,
        },
        Bench {
            facade: "handle",
            case: "C",
            what: "Ensure + Release(h) on a thread holding nothing",
            run: handle::fresh,
        },
        Bench {
            facade: "activate",
            case: "A",
            what: "is-attached check (the idiom's nested path)",
            run: activate::nested,
        },
        Bench {
            facade: "activate",
            case: "B",
            what: "New + Activate + Deactivate + Delete after SaveThread",
            run: activate::reattach,
        },
        Bench {
            facade: "activate",
            case: "C",
            what: "New + Activate + Deactivate + Delete on a thread holding nothing",
            run: activate::fresh,
        },
        Bench {
            facade: "guard",
            case: "A",
            what: "Ensure(guard) + Release(token) while attached (nested)",
            run: guard::nested,
        },
        Bench {
            facade: "guard",
            case: "B",
            what: "Ensure(guard) + Release(token) after SaveThread (re-attach)",
            run: guard::reattach,
        },
        Bench {
            facade: "guard",
            case: "C",
            what: "Ensure(guard) + Release(token) on a thread holding nothing (guard kept)",
            run: guard::fresh,
        },
    ]
}

/// CPython's own `PyGILState_Ensure` + `PyGILState_Release` in the same
/// three situations (only in a process with libpython initialized).
pub fn gilstate_benches() -> Vec<Bench> {
    vec![
        Bench {
            facade: "gilstate",
            case: "A",
            what: "PyGILState_Ensure + Release while attached (nested)",
            run: gilstate::nested,
        },
        Bench {
            facade: "gilstate",
            case: "B",
            what: "PyGILState_Ensure + Release after PyEval_SaveThread (re-attach)",
            run: gilstate::reattach,
        },
        Bench {
            facade: "gilstate",
            case: "C",
            what: "PyGILState_Ensure + Release on a thread holding nothing",
            run: gilstate::fresh,
        },
    ]
}

/// `model` or `cpython 3.X`: the backend the facades run on in this process.
pub fn backend_label() -> String {
    use crate::facade::{Ensure, Shared};
    let b = Ensure::backend_info();
    if b.kind == 1 {
        format!("cpython {}.{}", b.python_major, b.python_minor)
    } else {
        "model".into()
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The main interpreter of `facade`'s runtime (each facade library has its
/// own runtime and ids: README, "Runtimes"); 0 for the baselines and
/// CPython's own API, which take none.
pub fn main_of(facade: &str) -> u64 {
    use crate::facade::{Activate, Ensure, Guard, Handle, Shared};
    match facade {
        "ensure" => Ensure::main_interpreter(),
        "handle" => Handle::main_interpreter(),
        "activate" => Activate::main_interpreter(),
        "guard" => Guard::main_interpreter(),
        _ => Ok(0),
    }
    .unwrap_or_else(|c| panic!("{facade}: main interpreter: {c}"))
}

/// Runs `benches` interleaved in rounds on a fresh thread (which holds no
/// thread state), each on its facade's main interpreter; the first bench is
/// the unit for ratios.
/// `progress` is called after each round.
pub fn run(benches: &[Bench], cfg: Config, progress: &mut dyn FnMut(usize)) -> Vec<Measurement> {
    let runs: Vec<_> = benches.iter().map(|b| (b.run, main_of(b.facade))).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        // warm-up: per-thread tables, kept thread states, caches
        for (r, interp) in &runs {
            r(cfg.iters.min(1000), *interp);
        }
        for round in 0..cfg.rounds {
            let per_op: Vec<f64> = runs
                .iter()
                .map(|(r, interp)| r(cfg.iters, *interp).as_nanos() as f64 / cfg.iters as f64)
                .collect();
            if tx.send((round, per_op)).is_err() {
                return;
            }
        }
    });
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); benches.len()];
    for (round, per_op) in rx {
        for (s, v) in samples.iter_mut().zip(per_op) {
            s.push(v);
        }
        progress(round + 1);
    }
    worker.join().expect("bench thread panicked");
    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let unit = medians[0];
    let backend = backend_label();
    benches
        .iter()
        .zip(samples.iter().zip(&medians))
        .map(|(b, (s, &m))| Measurement {
            backend: backend.clone(),
            facade: b.facade,
            case: b.case,
            what: b.what,
            median_ns: m,
            min_ns: s.iter().copied().fold(f64::INFINITY, f64::min),
            max_ns: s.iter().copied().fold(0.0, f64::max),
            ratio: m / unit,
        })
        .collect()
}
