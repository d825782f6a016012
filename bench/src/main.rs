//! `tstate-bench` — every design against real CPython 3.11 and physical
//! references, in one process run (see `docs/performance.md`).
//!
//! * A/B/C/D latency: each design's idiom through its exported C functions,
//!   CPython's `PyGILState_*` and friends, and an uncontended mutex pair, a
//!   thread-local increment and an uncontended CAS — interleaved in rounds,
//!   median/min/max over the rounds, every figure also as a ratio to the
//!   mutex pair of the same run.
//! * E: throughput of 2 threads doing enter / work / leave, as a ratio to 1
//!   thread (one own-lock interpreter, two own-lock interpreters, one
//!   free-threaded interpreter; CPython: its GIL).
//! * F: finalization latency after the last holder leaves; the cost of a
//!   refused enter while finalizing.
//! * G: A/B/C again with 10,000 live interpreters and 1,000 thread states.
//!
//! `--count CASE N` runs N operations of one latency case and exits (for
//! `bench/callgrind.sh`, which turns it into instructions per operation).

#[cfg(has_libpython)]
mod cpython;
mod inline;

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tstate_conformance::bench::{self, Bench, Config, Measurement};
use tstate_conformance::facade::{Activate, Ensure, Facade, Guard, Handle, Shared};

thread_local! {
    static TLS_COUNTER: Cell<u64> = const { Cell::new(0) };
}

fn tls_increment(iters: u64, _: u64) -> Duration {
    let t0 = Instant::now();
    for _ in 0..iters {
        TLS_COUNTER.with(|c| c.set(black_box(c.get()) + 1));
    }
    t0.elapsed()
}

fn cas(iters: u64, _: u64) -> Duration {
    let a = AtomicU64::new(0);
    let t0 = Instant::now();
    for _ in 0..iters {
        let v = black_box(&a).load(Ordering::Relaxed);
        let _ = a.compare_exchange(v, v + 1, Ordering::AcqRel, Ordering::Relaxed);
    }
    t0.elapsed()
}

/// D for the ensure designs: the closest equivalent of create + attach +
/// detach + delete is a top-level ensure/release on a thread with nothing
/// attached (the kept thread state is reset, not re-created) — the same
/// operation as C, listed again so the D row compares like with like.
fn latency_benches() -> Vec<Bench> {
    let mut v = bench::comparison_benches();
    let extra = [
        Bench {
            facade: "baseline",
            case: "tls",
            what: "thread-local increment",
            run: tls_increment,
        },
        Bench {
            facade: "baseline",
            case: "cas",
            what: "uncontended atomic compare-exchange",
            run: cas,
        },
    ];
    v.splice(1..1, extra);
    v.push(bench::guard_from_view_bench());
    v.extend([
        Bench {
            facade: "ensure",
            case: "A-inline",
            what: "tse_ensure_inline + tse_release_inline while attached (the header's inline path; linked into the program)",
            run: inline::linked,
        },
        Bench {
            facade: "ensure",
            case: "A-inline-dl",
            what: "the same from a dlopen'ed shared object (default TLS model, as an extension module)",
            run: inline::dlopened,
        },
        Bench {
            facade: "ensure",
            case: "A-inline-ie",
            what: "the same from a dlopen'ed shared object built with TSTATE_INLINE_INITIAL_EXEC",
            run: inline::dlopened_initial_exec,
        },
        Bench {
            facade: "handle",
            case: "A-inline",
            what: "tsh_ensure_inline + tsh_release_inline(h) while attached (the header's inline path; linked into the program)",
            run: inline::handle_linked,
        },
        Bench {
            facade: "handle",
            case: "A-inline-dl",
            what: "the same from a dlopen'ed shared object (default TLS model)",
            run: inline::handle_dlopened,
        },
        Bench {
            facade: "handle",
            case: "A-inline-ie",
            what: "the same from a dlopen'ed shared object built with TSTATE_INLINE_INITIAL_EXEC",
            run: inline::handle_dlopened_initial_exec,
        },
        Bench {
            facade: "activate",
            case: "A-inline",
            what: "tsa_is_attached_inline while active (the header's inline path; linked into the program)",
            run: inline::activate_linked,
        },
        Bench {
            facade: "activate",
            case: "A-inline-dl",
            what: "the same from a dlopen'ed shared object (default TLS model)",
            run: inline::activate_dlopened,
        },
        Bench {
            facade: "activate",
            case: "A-inline-ie",
            what: "the same from a dlopen'ed shared object built with TSTATE_INLINE_INITIAL_EXEC",
            run: inline::activate_dlopened_initial_exec,
        },
        Bench {
            facade: "guard",
            case: "A-inline",
            what: "tsg_ensure_inline + tsg_release_inline under a kept guard (the header's inline path; linked into the program)",
            run: inline::guard_linked,
        },
        Bench {
            facade: "guard",
            case: "A-inline-dl",
            what: "the same from a dlopen'ed shared object (default TLS model)",
            run: inline::guard_dlopened,
        },
        Bench {
            facade: "guard",
            case: "A-inline-ie",
            what: "the same from a dlopen'ed shared object built with TSTATE_INLINE_INITIAL_EXEC",
            run: inline::guard_dlopened_initial_exec,
        },
    ]);
    #[cfg(has_libpython)]
    v.extend([
        Bench {
            facade: "cpython",
            case: "A",
            what: "PyGILState_Ensure + Release while holding the GIL",
            run: cpython::nested,
        },
        Bench {
            facade: "cpython",
            case: "B",
            what: "PyGILState_Ensure + Release after PyEval_SaveThread",
            run: cpython::reattach,
        },
        Bench {
            facade: "cpython",
            case: "C",
            what: "PyGILState_Ensure + Release on a thread with no thread state",
            run: cpython::fresh,
        },
        Bench {
            facade: "cpython",
            case: "D",
            what: "PyThreadState_New + RestoreThread + Clear + DeleteCurrent",
            run: cpython::explicit,
        },
        Bench {
            facade: "cpython",
            case: "save",
            what: "PyEval_SaveThread + PyEval_RestoreThread",
            run: cpython::save_restore,
        },
    ]);
    v
}

// ----- a thread that uses 1,000 interpreters ----------------------------

/// Interpreters the calling thread has used before a `*1000` case runs.
const WIDE: usize = 1000;

/// Makes the calling thread use [`WIDE`] subinterpreters of `facade`'s
/// runtime (an ensure and release on each, which leaves the thread a
/// per-interpreter record and a kept thread state for every one), once per
/// thread; the case then runs on main as usual, so its cost against the
/// plain case is what the thread's wider tables add (first-use and
/// re-attach paths scan them).
fn use_many_interpreters(facade: &str) {
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if DONE.with(|d| d.replace(true)) {
        return;
    }
    // TSTATE_BENCH_WIDE=n: another number of interpreters (to measure how
    // first use scales: bench/tests/scale_instructions.rs)
    let wide = std::env::var("TSTATE_BENCH_WIDE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(WIDE);
    use tstate_ffi_ensure as e;
    use tstate_ffi_handle as h;
    for _ in 0..wide {
        let mut id = 0;
        // SAFETY: `id` is valid for writing; NULL errmsg is allowed.
        unsafe {
            match facade {
                "ensure" => {
                    assert_eq!(e::tse_create_interpreter(e::LOCK_OWN, &mut id), 0);
                    assert_eq!(e::tse_ensure(id, std::ptr::null_mut()), 0);
                    e::tse_release();
                }
                _ => {
                    assert_eq!(h::tsh_create_interpreter(h::LOCK_OWN, &mut id), 0);
                    let t = h::tsh_ensure(id, std::ptr::null_mut());
                    assert!(t >= 0);
                    assert_eq!(h::tsh_release(t), 0);
                }
            }
        }
    }
}

/// `facade`'s `case` run by a thread that uses [`WIDE`] interpreters.
fn wide(facade: &'static str, case: &'static str, iters: u64, interp: u64) -> Duration {
    use_many_interpreters(facade);
    let b = bench::comparison_benches()
        .into_iter()
        .find(|b| b.facade == facade && b.case == case)
        .expect("the plain case");
    (b.run)(iters, interp)
}

macro_rules! wide_case {
    ($name:ident, $facade:literal, $case:literal) => {
        fn $name(iters: u64, interp: u64) -> Duration {
            wide($facade, $case, iters, interp)
        }
    };
}
wide_case!(ensure_a_wide, "ensure", "A");
wide_case!(ensure_b_wide, "ensure", "B");
wide_case!(ensure_c_wide, "ensure", "C");
wide_case!(handle_a_wide, "handle", "A");
wide_case!(handle_b_wide, "handle", "B");
wide_case!(handle_c_wide, "handle", "C");

/// The `*1000` cases: A, B, C of the ensure and handle designs on a thread
/// that uses 1,000 interpreters (model: creating 1,000 CPython
/// subinterpreters under valgrind is out of reach, see `bench/callgrind.sh`).
fn wide_benches() -> Vec<Bench> {
    let b = |facade, case, what, run| Bench {
        facade,
        case,
        what,
        run,
    };
    vec![
        b(
            "ensure",
            "A1000",
            "A on a thread that uses 1,000 interpreters",
            ensure_a_wide as fn(u64, u64) -> Duration,
        ),
        b(
            "ensure",
            "B1000",
            "B on a thread that uses 1,000 interpreters",
            ensure_b_wide,
        ),
        b(
            "ensure",
            "C1000",
            "C on a thread that uses 1,000 interpreters",
            ensure_c_wide,
        ),
        b(
            "handle",
            "A1000",
            "A on a thread that uses 1,000 interpreters",
            handle_a_wide,
        ),
        b(
            "handle",
            "B1000",
            "B on a thread that uses 1,000 interpreters",
            handle_b_wide,
        ),
        b(
            "handle",
            "C1000",
            "C on a thread that uses 1,000 interpreters",
            handle_c_wide,
        ),
    ]
}

fn find(ms: &[Measurement], facade: &str, case: &str) -> Option<Measurement> {
    ms.iter()
        .find(|m| m.facade == facade && m.case == case)
        .cloned()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

// ----- E: throughput -------------------------------------------------------

/// One enter / work / leave of a design, on interpreter `i`.
type Op = fn(u64);

fn op_ensure(i: u64) {
    use tstate_ffi_ensure::*;
    // SAFETY: NULL errmsg and NULL value are allowed.
    unsafe {
        assert_eq!(tse_ensure(i, std::ptr::null_mut()), 0);
        assert_eq!(tse_work(i, std::ptr::null_mut()), 0);
    }
    tse_release();
}
fn op_handle(i: u64) {
    use tstate_ffi_handle::*;
    // SAFETY: NULL errmsg and NULL value are allowed.
    unsafe {
        let h = tsh_ensure(i, std::ptr::null_mut());
        assert_eq!(tsh_work(i, std::ptr::null_mut()), 0);
        assert_eq!(tsh_release(h), 0);
    }
}
fn op_activate(i: u64) {
    use tstate_ffi_activate::*;
    let mut ts = std::ptr::null_mut();
    // SAFETY: valid out-pointer; NULL value is allowed.
    unsafe {
        assert_eq!(tsa_new(i, &mut ts), 0);
        assert_eq!(tsa_activate(ts), 0);
        assert_eq!(tsa_work(i, std::ptr::null_mut()), 0);
    }
    assert_eq!(tsa_deactivate(ts), 0);
    assert_eq!(tsa_delete(ts), 0);
}
/// The guard design's callback idiom: a view kept by the caller (one per
/// thread and interpreter here, made on first use and never closed: the
/// process ends), EnsureFromView + work + Release per operation.
fn op_guard(i: u64) {
    use tstate_ffi_guard::*;
    thread_local! {
        static VIEWS: std::cell::RefCell<Vec<(u64, usize)>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let v = VIEWS.with(|vs| {
        let mut vs = vs.borrow_mut();
        match vs.iter().find(|(k, _)| *k == i) {
            Some(&(_, v)) => v,
            None => {
                let v = tsg_view_from_interpreter(i) as usize;
                assert_ne!(v, 0);
                vs.push((i, v));
                v
            }
        }
    }) as *mut View;
    let t = tsg_ensure_from_view(v);
    assert!(!t.is_null());
    // SAFETY: NULL value is allowed.
    assert_eq!(unsafe { tsg_work(i, std::ptr::null_mut()) }, 0);
    tsg_release(t);
}
/// Control: pure per-thread CPU work of about the same size, touching no
/// shared memory — shows what 2 threads can gain on this machine at all.
fn op_control(_: u64) {
    for _ in 0..20 {
        TLS_COUNTER.with(|c| c.set(black_box(c.get()) + 1));
    }
}
#[cfg(has_libpython)]
fn op_cpython(_: u64) {
    cpython::ensure_work_release();
}

/// Wall time for `threads` threads each doing `iters` ops on
/// `interps[t % len]`: from the earliest start to the latest end, as the
/// workers themselves observe them (the spawning thread may not even be
/// scheduled while they run).
fn run_threads(threads: usize, iters: u64, op: Op, interps: &[u64]) -> Duration {
    let start = Arc::new(Barrier::new(threads));
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (start, i) = (start.clone(), interps[t % interps.len()]);
            std::thread::spawn(move || {
                op(i); // per-thread warm-up outside the timed region
                start.wait();
                let t0 = Instant::now();
                for _ in 0..iters {
                    op(i);
                }
                (t0, Instant::now())
            })
        })
        .collect();
    let spans: Vec<(Instant, Instant)> =
        hs.into_iter().map(|h| h.join().expect("worker")).collect();
    let first = spans.iter().map(|s| s.0).min().expect("threads > 0");
    let last = spans.iter().map(|s| s.1).max().expect("threads > 0");
    last - first
}

struct Throughput {
    control: f64,
    design: &'static str,
    scenario: &'static str,
    ops_per_s_1: f64,
    ops_per_s_2: f64,
    ratio: f64,
}

/// A facade's finalize (`*_finalize(id, timeout_ms)`).
type Finalize = fn(u64, i64) -> Result<(), tstate_conformance::facade::Code>;

/// E's scenarios in facade `F`'s runtime (each facade has its own), and
/// the interpreters made for them (finalized at the end). On the model: one
/// own-lock interpreter, two of them, and a free-threaded one. With the
/// designs on CPython 3.11 (no own-lock or free-threaded interpreters):
/// main, and two subinterpreters sharing its lock — two threads are
/// serialized by the GIL either way, and the ratio shows what the design
/// adds to CPython's own (its `PyGILState` row).
fn e_scenarios<F: Shared>(on_cpython: bool) -> (Vec<(&'static str, Vec<u64>)>, Vec<u64>) {
    if on_cpython {
        let main = F::main_interpreter().expect("main");
        let subs = [1, 1].map(|m| F::create(m).expect("create"));
        (
            vec![
                ("main interpreter (the GIL)", vec![main]),
                ("two subinterpreters sharing main's lock", subs.to_vec()),
            ],
            subs.to_vec(),
        )
    } else {
        let [own, own2, ft] = [0, 0, 2].map(|m| F::create(m).expect("create"));
        (
            vec![
                ("one own-lock interpreter", vec![own]),
                ("two own-lock interpreters", vec![own, own2]),
                ("one free-threaded interpreter", vec![ft]),
            ],
            vec![own, own2, ft],
        )
    }
}

fn throughput(rounds: usize, iters: u64, on_cpython: bool) -> Vec<Throughput> {
    let mut cases: Vec<(&'static str, &'static str, Op, Vec<u64>)> = vec![(
        "control",
        "per-thread CPU work only, no shared memory",
        op_control as Op,
        vec![0],
    )];
    let mut made: Vec<(Finalize, u64)> = Vec::new();
    for (d, op, (scenarios, ids), fin) in [
        (
            "ensure",
            op_ensure as Op,
            e_scenarios::<Ensure>(on_cpython),
            Ensure::finalize as Finalize,
        ),
        (
            "handle",
            op_handle as Op,
            e_scenarios::<Handle>(on_cpython),
            Handle::finalize,
        ),
        (
            "activate",
            op_activate as Op,
            e_scenarios::<Activate>(on_cpython),
            Activate::finalize,
        ),
        (
            "guard",
            op_guard as Op,
            e_scenarios::<Guard>(on_cpython),
            Guard::finalize,
        ),
    ] {
        for (scenario, interps) in scenarios {
            cases.push((d, scenario, op, interps));
        }
        made.extend(ids.into_iter().map(|i| (fin, i)));
    }
    #[cfg(has_libpython)]
    cases.push((
        "cpython",
        "one interpreter (the GIL)",
        op_cpython as Op,
        vec![0],
    ));
    let mut samples: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
        vec![(Vec::new(), Vec::new(), Vec::new()); cases.len()];
    for _ in 0..rounds {
        for (k, (_, _, op, interps)) in cases.iter().enumerate() {
            let one = run_threads(1, iters, *op, interps);
            let two = run_threads(2, iters, *op, interps);
            let t1 = iters as f64 / one.as_secs_f64();
            let t2 = 2.0 * iters as f64 / two.as_secs_f64();
            samples[k].0.push(t1);
            samples[k].1.push(t2);
            samples[k].2.push(t2 / t1);
        }
    }
    for (fin, i) in made {
        fin(i, 5000).expect("finalize");
    }
    let control = median(samples[0].2.clone());
    cases
        .iter()
        .zip(samples)
        .map(|((d, s, _, _), (a, b, r))| Throughput {
            control,
            design: d,
            scenario: s,
            ops_per_s_1: median(a),
            ops_per_s_2: median(b),
            ratio: median(r),
        })
        .collect()
}

// ----- F: finalization -----------------------------------------------------

struct Finalization {
    design: &'static str,
    latency_us: (f64, f64, f64),
    refused_ns: f64,
}

/// One round of F for one design: (last release → finalize returns, µs;
/// one refused enter while finalizing, ns). `mode` is the subinterpreter's
/// lock mode (own on the model; shared with main on CPython, whose
/// own-lock ones need 3.12+).
fn fin_round<F: Facade>(mode: u32) -> (f64, f64) {
    let id = F::create(mode).expect("create");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (released_tx, released_rx) = std::sync::mpsc::channel();
    let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
    // the holder stays alive until finalize has returned, so that its
    // thread's exit clean-up (the library's thread context, on either
    // backend) does not run inside the timed window; a subinterpreter's
    // thread state itself goes at the release (`F::leave`), timed
    let holder = std::thread::spawn(move || {
        let s = F::enter(id).expect("enter");
        let saved = F::save().expect("save");
        ready_tx.send(()).expect("ready");
        go_rx.recv().expect("go");
        F::restore(saved).expect("restore");
        let t = Instant::now();
        F::leave(s).expect("leave");
        released_tx.send(t).expect("released");
        exit_rx.recv().expect("exit");
    });
    ready_rx.recv().expect("ready");
    let fin = std::thread::spawn(move || {
        F::finalize(id, -1).expect("finalize");
        Instant::now()
    });
    while F::state(id) != 1 {
        std::thread::yield_now();
    }
    // refused enters while finalize waits (a fresh thread, 2,000 tries)
    let per = std::thread::spawn(move || {
        let n = 2000u32;
        let t0 = Instant::now();
        for _ in 0..n {
            assert!(F::enter(black_box(id)).is_err());
        }
        t0.elapsed().as_nanos() as f64 / f64::from(n)
    })
    .join()
    .expect("refuser");
    std::thread::sleep(Duration::from_millis(2)); // finalize is asleep
    go_tx.send(()).expect("go");
    let released = released_rx.recv().expect("holder");
    let done = fin.join().expect("finalizer");
    exit_tx.send(()).expect("exit");
    holder.join().expect("holder");
    (
        done.saturating_duration_since(released).as_secs_f64() * 1e6,
        per,
    )
}

/// F for every design, and with the designs on CPython (`on_cpython`)
/// CPython's own `Py_EndInterpreter` as the reference, interleaved round by
/// round (one round of each in turn), so that each sees the same machine
/// and the same CPython heap. The reference's `refused_ns` is NaN (it
/// refuses nothing). On the model the designs finalize own-lock model
/// interpreters, which CPython's end of a real subinterpreter is no
/// reference for.
fn finalization(rounds: usize, on_cpython: bool) -> Vec<Finalization> {
    let mode = u32::from(on_cpython);
    type Round = fn(u32) -> Option<(f64, f64)>;
    let mut rows: Vec<(&'static str, Round)> = vec![
        (Ensure::NAME, |m| Some(fin_round::<Ensure>(m))),
        (Handle::NAME, |m| Some(fin_round::<Handle>(m))),
        (Activate::NAME, |m| Some(fin_round::<Activate>(m))),
        (Guard::NAME, |m| Some(fin_round::<Guard>(m))),
    ];
    #[cfg(has_libpython)]
    if on_cpython {
        rows.push(("cpython", |_| {
            cpython::end_interpreter().map(|d| (d.as_secs_f64() * 1e6, f64::NAN))
        }));
    }
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); rows.len()];
    for _ in 0..rounds {
        for (k, (_, round)) in rows.iter().enumerate() {
            if let Some((l, r)) = round(mode) {
                samples[k].0.push(l);
                samples[k].1.push(r);
            }
        }
    }
    rows.iter()
        .zip(samples)
        .filter(|(_, (lat, _))| !lat.is_empty())
        .map(|((design, _), (lat, refused))| {
            let mut sorted = lat.clone();
            sorted.sort_by(f64::total_cmp);
            Finalization {
                design,
                latency_us: (median(lat), sorted[0], sorted[sorted.len() - 1]),
                refused_ns: median(refused),
            }
        })
        .collect()
}

// ----- G: scale --------------------------------------------------------------

/// Creates 10,000 interpreters in every design's runtime (each facade has
/// its own) and 1,000 thread states in the explicit design's (on a parked
/// helper thread); returns a closure that removes them.
fn populate() -> impl FnOnce() {
    fn many<F: Shared>() -> Vec<u64> {
        let ids: Vec<u64> = (0..10_000)
            .map(|k| F::create([0, 1, 2][k % 3]).expect("create"))
            .collect();
        assert!(F::diagnostics().interpreters >= 10_000);
        ids
    }
    let made = [
        (Ensure::finalize as Finalize, many::<Ensure>()),
        (Handle::finalize, many::<Handle>()),
        (Activate::finalize, many::<Activate>()),
        (Guard::finalize, many::<Guard>()),
    ];
    let some: Vec<u64> = made[2].1.iter().step_by(10).copied().collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let l = Activate::lifecycle().expect("explicit lifecycle");
    let helper = std::thread::spawn(move || {
        let ts: Vec<usize> = some.iter().map(|&i| (l.new)(i).expect("new")).collect();
        ready_tx.send(()).expect("ready");
        done_rx.recv().expect("done");
        for t in ts {
            (l.delete)(t).expect("delete");
        }
    });
    ready_rx.recv().expect("ready");
    assert!(Activate::diagnostics().thread_states >= 1_000);
    move || {
        done_tx.send(()).expect("done");
        helper.join().expect("helper");
        for (fin, ids) in made {
            for i in ids {
                fin(i, 5000).expect("finalize");
            }
        }
    }
}

// ----- output ------------------------------------------------------------------

fn fmt_ratio(m: &Option<Measurement>) -> String {
    m.as_ref().map_or("skipped".into(), |m| {
        format!("{:.1} ns ({:.2}×)", m.median_ns, m.ratio)
    })
}

struct Args {
    rounds: usize,
    iters: u64,
    e_iters: u64,
    markdown: bool,
}

fn main() {
    let mut args = Args {
        rounds: 15,
        iters: 20_000,
        e_iters: 20_000,
        markdown: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut k = 0;
    while k < argv.len() {
        let val = |k: usize| -> u64 {
            argv.get(k + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| {
                    eprintln!("{} needs a number", argv[k]);
                    std::process::exit(2)
                })
        };
        match argv[k].as_str() {
            "--rounds" => {
                args.rounds = val(k).max(1) as usize;
                k += 1;
            }
            "--iters" => {
                args.iters = val(k).max(1);
                k += 1;
            }
            "--e-iters" => {
                args.e_iters = val(k).max(1);
                k += 1;
            }
            "--markdown" => args.markdown = true,
            "--count" => {
                let case = argv.get(k + 1).cloned().unwrap_or_default();
                let n = val(k + 1);
                count(&case, n);
                return;
            }
            "-h" | "--help" => {
                println!(
                    "usage: tstate-bench [--rounds N] [--iters N] [--e-iters N] [--markdown]\n       tstate-bench --count DESIGN-CASE N   (e.g. ensure-A, cpython-C, baseline-mutex)"
                );
                return;
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
        k += 1;
    }
    report(&args);
}

/// The facades' backend: the model unless `TSTATE_BACKEND` says otherwise
/// (libpython is linked here for CPython's own API, which would otherwise
/// make the facades pick CPython); the CPython backend's design timings are
/// the main job's (`cargo run --release -p tstate-conformance`).
fn choose_backend() {
    if std::env::var_os("TSTATE_BACKEND").is_none() {
        // SAFETY: single-threaded, before any facade call.
        unsafe { std::env::set_var("TSTATE_BACKEND", "model") };
    }
}

/// Registers the main interpreter in every facade's runtime (each has its
/// own); on the model, main exists already.
fn init_facades() {
    for init in [
        Ensure::initialize,
        Handle::initialize,
        Activate::initialize,
        Guard::initialize,
    ] {
        init().expect("initialize");
    }
}

/// Runs N operations of one latency case (for callgrind).
fn count(case: &str, n: u64) {
    choose_backend();
    // CPython is initialized only when the case needs it (its own API, or
    // the designs on the CPython backend): its start-up is most of a short
    // run's instructions under valgrind
    let needs_python =
        case.starts_with("cpython") || std::env::var("TSTATE_BACKEND").as_deref() == Ok("cpython");
    #[cfg(has_libpython)]
    if needs_python {
        cpython::init();
    } else {
        init_facades();
    }
    #[cfg(not(has_libpython))]
    {
        let _ = needs_python;
        init_facades();
    }
    let Some(b) = latency_benches()
        .into_iter()
        .chain(wide_benches())
        .find(|b| format!("{}-{}", b.facade, b.case) == case)
    else {
        eprintln!("unknown case {case}");
        std::process::exit(2);
    };
    let (run, interp) = (b.run, bench::main_of(b.facade));
    std::thread::spawn(move || {
        run(n, interp);
    })
    .join()
    .expect("case");
}

fn report(a: &Args) {
    choose_backend();
    #[cfg(has_libpython)]
    cpython::init();
    #[cfg(not(has_libpython))]
    init_facades();
    let cpython_note = if cfg!(has_libpython) {
        "CPython 3.11 via libpython3.11 (python3-config --embed)"
    } else {
        "CPython column SKIPPED: built without libpython3.11 (python3-config --embed not found)"
    };
    let cfg = Config {
        rounds: a.rounds,
        iters: a.iters,
    };
    // With the designs on CPython (`TSTATE_BACKEND=cpython`) only the
    // latency tables, E and F run (on main and subinterpreters sharing its
    // lock): W and G create own-lock subinterpreters (`UNSUPPORTED` before
    // CPython 3.12; this benchmark links 3.11) and free-threaded ones, G
    // 10,000 of them per design. Each skipped section says so.
    let on_cpython = std::env::var("TSTATE_BACKEND").as_deref() == Ok("cpython");
    eprintln!("latency: {} rounds × {} ops …", a.rounds, a.iters);
    let lat = bench::run(&latency_benches(), cfg, &mut |_| {});
    let (mut wide_m, mut scaled) = (Vec::new(), Vec::new());
    if !on_cpython {
        eprintln!("wide (W): a thread that uses {WIDE} interpreters …");
        let mut wb: Vec<Bench> = bench::comparison_benches().into_iter().take(1).collect();
        wb.extend(wide_benches());
        wide_m = bench::run(&wb, cfg, &mut |_| {});
        eprintln!("scale (G): 10,000 interpreters, 1,000 thread states …");
        let cleanup = populate();
        let designs_only: Vec<Bench> = bench::comparison_benches();
        scaled = bench::run(&designs_only, cfg, &mut |_| {});
        cleanup();
    }
    eprintln!(
        "throughput (E): {} rounds × {} ops per thread …",
        a.rounds, a.e_iters
    );
    let thr = throughput(a.rounds, a.e_iters, on_cpython);
    // F runs on both backends: on CPython its subinterpreters share the
    // main interpreter's lock (own-lock ones need 3.12+)
    eprintln!("finalization (F): {} rounds …", a.rounds);
    let fin = finalization(a.rounds, on_cpython);
    // a section's table header, or on CPython why the section is skipped
    // a section's table header; with the designs on CPython, first what
    // the section means there, or (skipped) why it is not run
    enum OnCpython<'a> {
        Note(&'a str),
        Skipped(&'a str),
    }
    let head = |out: &mut String, on_cpy: OnCpython, header: String| {
        match on_cpy {
            OnCpython::Skipped(why) if on_cpython => writeln!(
                out,
                "Skipped with the designs on the CPython backend: {why}. Run without `TSTATE_BACKEND=cpython` for the model's.\n"
            ),
            OnCpython::Note(note) if on_cpython => writeln!(out, "{note}\n\n{header}"),
            _ => writeln!(out, "{header}"),
        }
        .unwrap();
    };

    let mut out = String::new();
    use std::fmt::Write;
    let md = a.markdown;
    let sep = |cols: usize| format!("|{}", "---|".repeat(cols));
    writeln!(
        out,
        "Designs on the {} backend.\n",
        if on_cpython { "CPython 3.11" } else { "model" }
    )
    .unwrap();
    writeln!(
        out,
        "{}",
        if md {
            "### Physical references and CPython 3.11 (same run)\n"
        } else {
            "PHYSICAL REFERENCES AND CPYTHON 3.11 (same run)"
        }
    )
    .unwrap();
    writeln!(out, "{cpython_note}; {} rounds × {} operations, interleaved; ns per operation; × = ratio to the mutex pair of this run.\n", a.rounds, a.iters).unwrap();
    writeln!(
        out,
        "| what | median ns | min | max | × mutex pair |\n{}",
        sep(5)
    )
    .unwrap();
    for m in lat
        .iter()
        .filter(|m| m.facade == "baseline" || m.facade == "cpython")
    {
        writeln!(
            out,
            "| {} {}: {} | {:.1} | {:.1} | {:.1} | {:.2} |",
            m.facade, m.case, m.what, m.median_ns, m.min_ns, m.max_ns, m.ratio
        )
        .unwrap();
    }
    writeln!(
        out,
        "\n{}",
        if md {
            "### A–D: each design through its C functions\n"
        } else {
            "A-D: EACH DESIGN THROUGH ITS C FUNCTIONS"
        }
    )
    .unwrap();
    writeln!(out, "| design | case | one operation | median ns | min | max | × mutex | CPython same case | × CPython |\n{}", sep(9)).unwrap();
    // One row per design case, against CPython's row for `cp_case`; the D
    // rows reuse each design's C measurement (see the `what` texts).
    let mut row = |m: &Measurement, case: &str, what: &str, cp_case: &str| {
        let cp = find(&lat, "cpython", cp_case);
        writeln!(
            out,
            "| {} | {case} | {what} | {:.1} | {:.1} | {:.1} | {:.2} | {} | {} |",
            m.facade,
            m.median_ns,
            m.min_ns,
            m.max_ns,
            m.ratio,
            fmt_ratio(&cp),
            cp.map_or("—".into(), |c| format!(
                "{:.2}",
                m.median_ns / c.median_ns
            ))
        )
        .unwrap();
    };
    let designs = ["ensure", "handle", "activate", "guard"];
    for m in lat.iter().filter(|m| designs.contains(&m.facade)) {
        // the inline rows are case A's: against CPython's A
        row(m, m.case, m.what, &m.case[..1]);
    }
    for d in designs {
        let what = if d == "activate" {
            "New + Activate + Deactivate + Delete (= its C row)"
        } else {
            "closest equivalent of create+attach+detach+delete: the C row (the kept thread state is reset, not re-created)"
        };
        if let Some(c) = find(&lat, d, "C") {
            row(&c, "D", what, "D");
        }
    }
    if on_cpython {
        writeln!(
            out,
            "\nWith the designs on CPython, CPython's own C row is not a fresh thread's: the designs' kept thread states on this thread are real `PyThreadState`s, and `PyGILState_Ensure` finds one (compare the designs' C rows with the model run's CPython C row, or with the main job's timing table, which keeps them apart)."
        )
        .unwrap();
    }
    writeln!(
        out,
        "\n{}",
        if md {
            "### E: throughput, 2 threads vs 1 (enter / work / leave)\n"
        } else {
            "E: THROUGHPUT, 2 THREADS VS 1"
        }
    )
    .unwrap();
    head(
        &mut out,
        OnCpython::Note(
            "CPython 3.11 has no own-lock or free-threaded interpreters: two threads are serialized by the GIL in every design row, and what counts is each design's ratio against CPython's own (`PyGILState`) row.",
        ),
        format!(
            "| design | scenario | ops/s, 1 thread | ops/s, 2 threads | 2 vs 1 | 2 vs 1, ÷ control |\n{}",
            sep(6)
        ),
    );
    for t in &thr {
        writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.2}× | {:.2} |",
            t.design,
            t.scenario,
            t.ops_per_s_1,
            t.ops_per_s_2,
            t.ratio,
            t.ratio / t.control
        )
        .unwrap();
    }
    if !cfg!(has_libpython) {
        writeln!(
            out,
            "| cpython | the GIL | skipped | skipped | skipped | skipped |"
        )
        .unwrap();
    }
    writeln!(
        out,
        "\n{}",
        if md {
            "### F: finalization\n"
        } else {
            "F: FINALIZATION"
        }
    )
    .unwrap();
    head(
        &mut out,
        OnCpython::Note(
            "Subinterpreters sharing the main interpreter's lock (CPython 3.11 has no own-lock ones); finalize ends each with `Py_EndInterpreter`. The reference row times CPython's `Py_EndInterpreter` of such a subinterpreter alone, no holder and no gate, in the same rounds.",
        ),
        format!(
            "| design | last release → finalize returns, median µs | min | max | one refused enter while finalizing, ns |\n{}",
            sep(5)
        ),
    );
    for f in &fin {
        let (design, refused) = if f.design == "cpython" {
            (
                "cpython: `Py_EndInterpreter` of a subinterpreter sharing main's lock, alone (reference)".to_string(),
                "—".to_string(),
            )
        } else {
            (f.design.to_string(), format!("{:.1}", f.refused_ns))
        };
        writeln!(
            out,
            "| {design} | {:.1} | {:.1} | {:.1} | {refused} |",
            f.latency_us.0, f.latency_us.1, f.latency_us.2
        )
        .unwrap();
    }
    writeln!(
        out,
        "\n{}",
        if md {
            "### G: scale — with 10,000 live interpreters in each design's runtime and 1,000 thread states in the explicit design's\n"
        } else {
            "G: SCALE (10,000 INTERPRETERS, 1,000 THREAD STATES) VS 1"
        }
    )
    .unwrap();
    head(
        &mut out,
        OnCpython::Skipped(
            "10,000 CPython subinterpreters per design do not fit this machine: a 3.11 subinterpreter takes about 4 MB and 30 ms to create (`docs/performance.md`, \"G with the designs on CPython\"), and own-lock ones need 3.12+",
        ),
        format!(
            "| design | case | × mutex, 1 interpreter | × mutex, 10,000 interpreters | ratio |\n{}",
            sep(5)
        ),
    );
    for m in scaled.iter().filter(|m| m.facade != "baseline") {
        if let Some(base) = find(&lat, m.facade, m.case) {
            writeln!(
                out,
                "| {} | {} | {:.2} | {:.2} | {:.2} |",
                m.facade,
                m.case,
                base.ratio,
                m.ratio,
                m.ratio / base.ratio
            )
            .unwrap();
        }
    }
    writeln!(
        out,
        "\n{}",
        if md {
            "### W: one thread that uses 1,000 interpreters (a per-interpreter record and a kept thread state each) vs one\n"
        } else {
            "W: A THREAD USING 1,000 INTERPRETERS VS 1"
        }
    )
    .unwrap();
    head(
        &mut out,
        OnCpython::Skipped("1,000 own-lock CPython subinterpreters (3.12+)"),
        format!(
            "| design | case | × mutex, thread uses 1 | × mutex, thread uses 1,000 | ratio |\n{}",
            sep(5)
        ),
    );
    for m in wide_m.iter().filter(|m| m.facade != "baseline") {
        let plain = m.case.trim_end_matches("1000");
        if let Some(base) = find(&lat, m.facade, plain) {
            writeln!(
                out,
                "| {} | {} | {:.2} | {:.2} | {:.2} |",
                m.facade,
                plain,
                base.ratio,
                m.ratio,
                m.ratio / base.ratio
            )
            .unwrap();
        }
    }
    print!("{out}");
}
