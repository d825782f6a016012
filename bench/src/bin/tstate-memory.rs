//! `tstate-memory [--markdown]` — the library's memory, measured with a
//! counting global allocator (live bytes and live allocations): bytes per
//! interpreter, per thread state, per thread context and per open span, and
//! whether anything grows with the number of operations
//! (`docs/performance.md`). The model backend by default;
//! `TSTATE_BACKEND=cpython` measures the same on the linked CPython 3.11.
//!
//! CPython's own allocations (its interpreter and thread-state structs)
//! do not go through Rust's allocator, so the counted columns are the
//! library's alone. Two more columns are the whole process's: bytes in use
//! from `malloc` (glibc's `mallinfo2`, which CPython's raw allocations and
//! the library's both come from; pymalloc's arenas are `mmap`ed and not in
//! it) and the resident set (`/proc/self/statm`, page-granular, only as good
//! as N is large).
//!
//! Each figure is the growth of live bytes over N objects, divided by N
//! (on the model N = 1,000 interpreters; on CPython 50, each a real
//! subinterpreter sharing main's lock; 1,000 thread states, 64 threads,
//! 10,000 nested spans), so one-time allocations (the runtime, tables'
//! first growth) cancel out only partly: amortized `Vec` growth is
//! included, as it is in a real process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Barrier};
use tstate_core::{Backend, InterpreterId, LockMode, Runtime};

struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_ALLOCS: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; the only
// addition is two process-wide atomic counters, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(l.size() as i64, Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) };
        LIVE_BYTES.fetch_sub(l.size() as i64, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let q = unsafe { System.realloc(p, l, n) };
        if !q.is_null() {
            LIVE_BYTES.fetch_add(n as i64 - l.size() as i64, Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> (i64, i64) {
    (
        LIVE_BYTES.load(Ordering::SeqCst),
        LIVE_ALLOCS.load(Ordering::SeqCst),
    )
}

/// The process's resident set in bytes (`/proc/self/statm`), 0 if
/// unreadable.
fn rss() -> i64 {
    let page = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .map_or(0, |p| p * page)
}

/// Bytes in use from `malloc` (glibc's `mallinfo2`: small chunks plus
/// `mmap`ed ones), by everyone in the process: the library (Rust's
/// allocator is the system's) and CPython's raw allocations.
fn malloced() -> i64 {
    // SAFETY: mallinfo2 takes no arguments and only reads the allocator's
    // statistics.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as i64
}

/// What `f` leaves behind, per `n`: live bytes and allocations of the
/// library, malloc'd bytes and resident bytes of the process.
fn per(n: usize, f: impl FnOnce()) -> (f64, f64, f64, f64) {
    let (b0, a0) = live();
    let (m0, r0) = (malloced(), rss());
    f();
    let (b1, a1) = live();
    let (m1, r1) = (malloced(), rss());
    let n = n as f64;
    (
        (b1 - b0) as f64 / n,
        (a1 - a0) as f64 / n,
        (m1 - m0) as f64 / n,
        (r1 - r0) as f64 / n,
    )
}

struct Row {
    what: &'static str,
    n: String,
    bytes: f64,
    allocs: f64,
    malloc: f64,
    rss: f64,
}

#[cfg(has_libpython)]
unsafe extern "C" {
    fn PyEval_SaveThread() -> *mut std::ffi::c_void;
}

fn main() {
    let markdown = std::env::args().any(|a| a == "--markdown");
    let on_cpython = std::env::var("TSTATE_BACKEND").as_deref() == Ok("cpython");
    let rows = if on_cpython {
        cpython_rows()
    } else {
        let rt = Runtime::new();
        let main_id = rt.main_interpreter().expect("main");
        let create = || rt.create_interpreter(LockMode::Own).expect("create");
        let rows = measure(&rt, main_id, create, 1000);
        let _ = rt.finalize_all(None);
        rows
    };
    println!(
        "designs on the {} backend\n",
        if on_cpython { "CPython 3.11" } else { "model" }
    );
    if markdown {
        println!(
            "| what | N | live bytes per object (the library's) | live allocations per object | malloc'd bytes per object (process) | resident bytes per object (process) |"
        );
        println!("|---|--:|--:|--:|--:|--:|");
        for r in &rows {
            println!(
                "| {} | {} | {:.1} | {:.2} | {:.0} | {:.0} |",
                r.what, r.n, r.bytes, r.allocs, r.malloc, r.rss
            );
        }
    } else {
        for r in &rows {
            println!(
                "{:>10.1} B {:>6.2} allocs {:>10.0} B malloc {:>10.0} B resident  {} (N = {})",
                r.bytes, r.allocs, r.malloc, r.rss, r.what, r.n
            );
        }
    }
}

/// The rows on the linked CPython: initializes it on this thread, detaches,
/// and measures with 50 subinterpreters sharing main's lock (a 3.11
/// subinterpreter is about 4 MB; own-lock ones need 3.12+).
#[cfg(has_libpython)]
fn cpython_rows() -> Vec<Row> {
    let rt = Runtime::<tstate_core::CPython>::for_this_process().expect("CPython runtime");
    let main_id = rt.initialize().expect("initialize CPython");
    // SAFETY: `initialize` left this thread attached to main with a thread
    // state CPython made; detaching it releases the GIL, so that the
    // measurement's ensures (and its threads') can take it.
    unsafe {
        PyEval_SaveThread();
    }
    let create = || {
        rt.create_interpreter(LockMode::SharedWithMain)
            .expect("create")
    };
    let rows = measure(rt, main_id, create, 50);
    let _ = rt.finalize_all(None);
    rows
}

#[cfg(not(has_libpython))]
fn cpython_rows() -> Vec<Row> {
    eprintln!("tstate-memory: built without libpython3.11 (python3-config --embed not found)");
    std::process::exit(2);
}

/// The rows for `rt`, whose main interpreter is `main_id` and on which
/// the calling thread holds nothing; `n_interp` interpreters made by
/// `create` (each backend's `create_interpreter`).
fn measure<B: Backend>(
    rt: &Runtime<B>,
    main_id: InterpreterId,
    create: impl Fn() -> InterpreterId,
    n_interp: usize,
) -> Vec<Row> {
    // warm up this thread's context and its kept thread state on main
    let t = rt.ensure(main_id).expect("ensure");
    rt.release_ticket(t).expect("release");
    let mut rows = Vec::new();

    let mut subs = Vec::new();
    let (b, a, m, r) = per(n_interp, || {
        for _ in 0..n_interp {
            subs.push(create());
        }
    });
    rows.push(Row {
        what: "interpreter (created, never entered)",
        n: n_interp.to_string(),
        bytes: b,
        allocs: a,
        malloc: m,
        rss: r,
    });

    let mut tss = Vec::new();
    let (b, a, m, r) = per(1000, || {
        for _ in 0..1000 {
            tss.push(rt.new_thread_state(main_id).expect("new thread state"));
        }
    });
    rows.push(Row {
        what: "thread state (explicit design: New, not activated)",
        n: "1,000".into(),
        bytes: b,
        allocs: a,
        malloc: m,
        rss: r,
    });
    for ts in tss {
        rt.delete_thread_state(ts).expect("delete");
    }

    // per thread context: threads that each did one ensure/release on main
    // and stay alive, against the same number of threads that did nothing
    let threads = 64;
    let spawn_parked = |use_tstate: bool| {
        let rt = &rt;
        let (b0, a0) = live();
        let (m0, r0) = (malloced(), rss());
        let gate = Arc::new(Barrier::new(threads + 1));
        let done = Arc::new(Barrier::new(threads + 1));
        let mut grown = (0, 0, 0, 0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                let (gate, done) = (gate.clone(), done.clone());
                s.spawn(move || {
                    if use_tstate {
                        let t = rt.ensure(main_id).expect("ensure");
                        rt.release_ticket(t).expect("release");
                    }
                    gate.wait();
                    done.wait();
                });
            }
            gate.wait();
            let (b1, a1) = live();
            grown = (b1 - b0, a1 - a0, malloced() - m0, rss() - r0);
            done.wait();
        });
        grown
    };
    let (bare_b, bare_a, bare_m, bare_r) = spawn_parked(false);
    let (used_b, used_a, used_m, used_r) = spawn_parked(true);
    rows.push(Row {
        what: "thread context + its kept thread state on main (a thread's first ensure), beyond a bare thread",
        n: "64 threads".into(),
        bytes: (used_b - bare_b) as f64 / threads as f64,
        allocs: (used_a - bare_a) as f64 / threads as f64,
        malloc: (used_m - bare_m) as f64 / threads as f64,
        rss: (used_r - bare_r) as f64 / threads as f64,
    });

    // per open span: nested ensures on one thread
    let spans = 10_000;
    let mut tickets = Vec::with_capacity(spans);
    let (b, a, m, r) = per(spans, || {
        for _ in 0..spans {
            tickets.push(rt.ensure(main_id).expect("nested ensure"));
        }
    });
    rows.push(Row {
        what: "open span (nested ensure: a frame on the thread's span stack)",
        n: "10,000".into(),
        bytes: b,
        allocs: a,
        malloc: m,
        rss: r,
    });
    for t in tickets.into_iter().rev() {
        rt.release_ticket(t).expect("release");
    }

    // nothing grows with the number of operations
    let sub = subs[0];
    let round = || {
        let t = rt.ensure(main_id).expect("A outer");
        let n = rt.ensure(main_id).expect("A nested");
        rt.release_ticket(n).expect("A release");
        let s = rt.save().expect("B save");
        rt.restore(s).expect("B restore");
        rt.release_ticket(t).expect("C release");
        let u = rt.ensure(sub).expect("sub");
        rt.release_ticket(u).expect("sub release");
    };
    // the first window includes one-time work (this thread's record of
    // `sub`; clean-up of what the steps above left: once it freed memory,
    // once it allocated a little, between runs); the second must not grow
    let ops = 100_000;
    let (b, a, m, r) = per(1, || {
        for _ in 0..ops {
            round();
        }
    });
    rows.push(Row {
        what: "100,000 rounds of A, B, C and a subinterpreter span, first window (total, not per round)",
        n: "1".into(),
        bytes: b,
        allocs: a,
        malloc: m,
        rss: r,
    });
    let (b, a, m, r) = per(1, || {
        for _ in 0..ops {
            round();
        }
    });
    rows.push(Row {
        what: "the next 100,000 rounds (total, not per round)",
        n: "1".into(),
        bytes: b,
        allocs: a,
        malloc: m,
        rss: r,
    });

    rows
}
