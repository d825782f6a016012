//! `tstate-memory [--markdown]` — the library's memory, measured with a
//! counting global allocator (live bytes and live allocations) on the model
//! backend: bytes per interpreter, per thread state, per thread context and
//! per open span, and whether anything grows with the number of operations
//! (`docs/performance.md`). CPython's own allocations (its interpreter and
//! thread-state structs) are CPython's and are not counted here.
//!
//! Each figure is the growth of live bytes over N objects, divided by N
//! (N = 1,000 interpreters, 1,000 thread states, 64 threads, 10,000 nested
//! spans), so one-time allocations (the runtime, tables' first growth)
//! cancel out only partly: amortized `Vec` growth is included, as it is in
//! a real process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Barrier};
use tstate_core::{LockMode, Runtime};

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

/// Live bytes and allocations `f` leaves behind, per `n`.
fn per(n: usize, f: impl FnOnce()) -> (f64, f64) {
    let (b0, a0) = live();
    f();
    let (b1, a1) = live();
    ((b1 - b0) as f64 / n as f64, (a1 - a0) as f64 / n as f64)
}

struct Row {
    what: &'static str,
    n: String,
    bytes: f64,
    allocs: f64,
}

fn main() {
    let markdown = std::env::args().any(|a| a == "--markdown");
    let rt = Runtime::new();
    let main_id = rt.main_interpreter().expect("main");
    // warm up this thread's context and its kept thread state on main
    let t = rt.ensure(main_id).expect("ensure");
    rt.release_ticket(t).expect("release");
    let mut rows = Vec::new();

    let mut subs = Vec::new();
    let (b, a) = per(1000, || {
        for _ in 0..1000 {
            subs.push(rt.create_interpreter(LockMode::Own).expect("create"));
        }
    });
    rows.push(Row {
        what: "interpreter (created, never entered)",
        n: "1,000".into(),
        bytes: b,
        allocs: a,
    });

    let mut tss = Vec::new();
    let (b, a) = per(1000, || {
        for _ in 0..1000 {
            tss.push(rt.new_thread_state(main_id).expect("new thread state"));
        }
    });
    rows.push(Row {
        what: "thread state (explicit design: New, not activated)",
        n: "1,000".into(),
        bytes: b,
        allocs: a,
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
        let gate = Arc::new(Barrier::new(threads + 1));
        let done = Arc::new(Barrier::new(threads + 1));
        let mut grown = (0, 0);
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
            grown = (b1 - b0, a1 - a0);
            done.wait();
        });
        grown
    };
    let (bare_b, bare_a) = spawn_parked(false);
    let (used_b, used_a) = spawn_parked(true);
    rows.push(Row {
        what: "thread context + its kept thread state on main (a thread's first ensure), beyond a bare thread",
        n: "64 threads".into(),
        bytes: (used_b - bare_b) as f64 / threads as f64,
        allocs: (used_a - bare_a) as f64 / threads as f64,
    });

    // per open span: nested ensures on one thread
    let spans = 10_000;
    let mut tickets = Vec::with_capacity(spans);
    let (b, a) = per(spans, || {
        for _ in 0..spans {
            tickets.push(rt.ensure(main_id).expect("nested ensure"));
        }
    });
    rows.push(Row {
        what: "open span (nested ensure: a frame on the thread's span stack)",
        n: "10,000".into(),
        bytes: b,
        allocs: a,
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
    let (b, a) = per(1, || {
        for _ in 0..ops {
            round();
        }
    });
    rows.push(Row {
        what: "100,000 rounds of A, B, C and a subinterpreter span, first window (total, not per round)",
        n: "1".into(),
        bytes: b,
        allocs: a,
    });
    let (b, a) = per(1, || {
        for _ in 0..ops {
            round();
        }
    });
    rows.push(Row {
        what: "the next 100,000 rounds (total, not per round)",
        n: "1".into(),
        bytes: b,
        allocs: a,
    });

    if markdown {
        println!("| what | N | live bytes per object | live allocations per object |");
        println!("|---|--:|--:|--:|");
        for r in &rows {
            println!(
                "| {} | {} | {:.1} | {:.2} |",
                r.what, r.n, r.bytes, r.allocs
            );
        }
    } else {
        for r in &rows {
            println!(
                "{:>10.1} B {:>6.2} allocs  {} (N = {})",
                r.bytes, r.allocs, r.what, r.n
            );
        }
    }
    let _ = rt.finalize_all(None);
}
