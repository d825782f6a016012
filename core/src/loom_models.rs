//! loom models of the core's concurrency (run with `RUSTFLAGS="--cfg loom"`,
//! see `.ci/run`): every interleaving of the atomics, the slow mutex and the
//! condition variable is explored up to the preemption bound
//! (`LOOM_MAX_PREEMPTIONS`, 2 in CI).
//!
//! The interpreter's "Python data" is a `loom::cell::UnsafeCell` under loom
//! (`sync::PyData`), so a model also fails when the lock's or the gate's
//! memory orderings are too weak to order two threads' accesses to it —
//! not only when the logic is wrong. `docs/reliability.md` shows every model
//! here failing with `--cfg tstate_weak_orderings` (all gate and lock
//! orderings `Relaxed`).
//!
//! Each model asserts a floor on the executions it explored (close to the
//! count measured at `LOOM_MAX_PREEMPTIONS=2`), so a model that stops
//! exploring (a refactor moving work out of the modelled primitives) fails
//! instead of passing vacuously; and where a model has two outcomes, that
//! both were reached. (`Arc` is loom's under loom: its reference counts
//! are modelled atomics, so a clone removed from a path the models run
//! lowers their counts; the floors were last lowered for that, 2026-12-03,
//! when the release path stopped cloning two `Arc`s per span:
//! `docs/reliability.md`.)

use crate::sync::Deadline;
use crate::{Error, LockMode, Runtime};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `f` under loom; fails unless at least `min_executions` were
/// explored. Returns the count.
fn explore(name: &str, min_executions: usize, f: impl Fn() + Sync + Send + 'static) -> usize {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    loom::model(move || {
        r.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let n = runs.load(Ordering::Relaxed);
    eprintln!("loom model {name}: explored {n} executions");
    assert!(n >= min_executions, "{name}: only {n} executions explored");
    n
}

/// Counts outcomes across executions (plain std atomics: outside the model).
#[derive(Default)]
struct Outcomes {
    a: AtomicUsize,
    b: AtomicUsize,
}

impl Outcomes {
    fn both(&self, what: &str) {
        let (a, b) = (
            self.a.load(Ordering::Relaxed),
            self.b.load(Ordering::Relaxed),
        );
        eprintln!("  {what}: {a} / {b}");
        assert!(
            a > 0 && b > 0,
            "{what}: only one outcome reached ({a} / {b})"
        );
    }
}

/// (a) ensure racing finalize: the ensure is either refused with a
/// documented code (and did no work), or granted and its work done before
/// finalize passes its point of no return; finalize never passes with a
/// span open, and never sleeps through the last release (a lost wake-up
/// would deadlock, which loom reports). Both outcomes occur.
#[test]
fn ensure_races_finalize() {
    let seen = Arc::new(Outcomes::default());
    let s = seen.clone();
    explore("ensure_races_finalize", 630, move || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let rt2 = rt.clone();
        let th = loom::thread::spawn(move || match rt2.ensure(sub) {
            Ok(t) => {
                rt2.work(sub).unwrap();
                rt2.release_ticket(t).unwrap();
                true
            }
            Err(e) => {
                assert!(matches!(e, Error::Finalizing | Error::NoSuchInterpreter));
                false
            }
        });
        rt.finalize(sub, None).unwrap();
        let granted = th.join().unwrap();
        let d = rt.diagnostics();
        assert_eq!(d.work_after_finalize, 0);
        assert_eq!(d.open_holds, 0);
        assert_eq!(d.thread_states, 0, "finalization freed every thread state");
        assert_eq!(rt.ensure(sub), Err(Error::NoSuchInterpreter));
        if granted {
            s.a.fetch_add(1, Ordering::Relaxed);
        } else {
            s.b.fetch_add(1, Ordering::Relaxed);
        }
    });
    seen.both("granted / refused");
}

/// (a') a holder that detached (save) inside its span re-attaches while the
/// finalizer waits: finalize does not hold the lock, so the holder finishes.
#[test]
fn holder_reattaches_while_finalize_waits() {
    explore("holder_reattaches_while_finalize_waits", 48, || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let t = rt.ensure(sub).unwrap();
        let s = rt.save().unwrap();
        let rt2 = rt.clone();
        let fin = loom::thread::spawn(move || rt2.finalize(sub, None).map_err(|e| e.error));
        rt.restore(s).unwrap();
        rt.work(sub).unwrap();
        rt.release_ticket(t).unwrap();
        fin.join().unwrap().unwrap();
        assert_eq!(rt.diagnostics().work_after_finalize, 0);
    });
}

/// (a'') the bound of a finalize passes at every point of its wait (a
/// modelled timer): finalize returns Timeout while the holder is inside
/// (the interpreter stays finalizing and refusing) or completes after it
/// left; it never passes with the span open. Both outcomes occur.
#[test]
fn bounded_finalize_times_out_or_completes() {
    let seen = Arc::new(Outcomes::default());
    let s = seen.clone();
    explore("bounded_finalize_times_out_or_completes", 285, move || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let t = rt.ensure(sub).unwrap();
        let s2 = rt.save().unwrap();
        let (deadline, timer) = Deadline::manual();
        let rt2 = rt.clone();
        let fin =
            loom::thread::spawn(move || rt2.finalize_until(sub, &deadline).map_err(|e| e.error));
        let tm = loom::thread::spawn(move || timer.fire());
        rt.restore(s2).unwrap();
        rt.work(sub).unwrap();
        rt.release_ticket(t).unwrap();
        tm.join().unwrap();
        match fin.join().unwrap() {
            Ok(()) => {
                s.a.fetch_add(1, Ordering::Relaxed);
                assert_eq!(rt.ensure(sub), Err(Error::NoSuchInterpreter));
            }
            Err(e) => {
                assert_eq!(e, Error::Timeout);
                s.b.fetch_add(1, Ordering::Relaxed);
                assert_eq!(rt.ensure(sub), Err(Error::Finalizing));
                rt.finalize(sub, None).unwrap();
            }
        }
        assert_eq!(rt.diagnostics().work_after_finalize, 0);
    });
    seen.both("completed / timed out");
}

/// (b) a thread attached to A switches to B while B is finalized: the
/// switch is granted or refused, and A is attached again afterwards in
/// every interleaving.
#[test]
fn switch_races_finalization_of_the_other_interpreter() {
    explore(
        "switch_races_finalization_of_the_other_interpreter",
        1_470,
        || {
            let rt = Arc::new(Runtime::new());
            let a = rt.create_interpreter(LockMode::Own).unwrap();
            let b = rt.create_interpreter(LockMode::Own).unwrap();
            let rt2 = rt.clone();
            let th = loom::thread::spawn(move || {
                let ta = rt2.ensure(a).unwrap();
                let before = rt2.current();
                match rt2.ensure(b) {
                    Ok(t) => {
                        rt2.work(b).unwrap();
                        rt2.release_ticket(t).unwrap();
                    }
                    Err(e) => assert!(matches!(e, Error::Finalizing | Error::NoSuchInterpreter)),
                }
                assert_eq!(rt2.current(), before);
                rt2.work(a).unwrap();
                rt2.release_ticket(ta).unwrap();
            });
            rt.finalize(b, None).unwrap();
            th.join().unwrap();
            assert_eq!(rt.diagnostics().work_after_finalize, 0);
        },
    );
}

/// (c) mutual exclusion of a lock: the racy work counter loses no update
/// and loom sees no unordered access to the interpreter's data.
fn exclusion(name: &str, floor: usize, ids: fn(&Runtime) -> [crate::InterpreterId; 2]) {
    explore(name, floor, move || {
        let rt = Arc::new(Runtime::new());
        let pair = ids(&rt);
        let hs: Vec<_> = pair
            .into_iter()
            .map(|id| {
                let rt = rt.clone();
                loom::thread::spawn(move || {
                    let t = rt.ensure(id).unwrap();
                    rt.work(id).unwrap();
                    rt.release_ticket(t).unwrap();
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let total: u64 = if pair[0] == pair[1] {
            rt.work_count(pair[0]).unwrap()
        } else {
            rt.work_count(pair[0]).unwrap() + rt.work_count(pair[1]).unwrap()
        };
        assert_eq!(total, 2);
        assert_eq!(rt.diagnostics().exclusion_violations, 0);
    });
}

#[test]
fn mutual_exclusion_own_lock_2_threads() {
    exclusion("mutual_exclusion_own_lock_2_threads", 129_000, |rt| {
        let id = rt.create_interpreter(LockMode::Own).unwrap();
        [id, id]
    });
}

/// A subinterpreter sharing main's lock and main itself exclude each other
/// (the data of both is touched under the one lock).
#[test]
fn mutual_exclusion_shared_lock_main_and_sub() {
    exclusion("mutual_exclusion_shared_lock_main_and_sub", 37_000, |rt| {
        let sub = rt.create_interpreter(LockMode::SharedWithMain).unwrap();
        [rt.main_interpreter().unwrap(), sub]
    });
}

/// (d) a thread that exits inside its span (its exit cleanup releases it)
/// racing finalize: finalize completes in every interleaving (a dead
/// thread never blocks it), and the thread's state is freed.
#[test]
fn thread_exit_with_open_span_races_finalize() {
    explore("thread_exit_with_open_span_races_finalize", 250, || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let rt2 = rt.clone();
        let th = loom::thread::spawn(move || {
            if rt2.ensure(sub).is_ok() {
                rt2.work(sub).unwrap();
            } // exits without release
        });
        rt.finalize(sub, None).unwrap();
        th.join().unwrap();
        let d = rt.diagnostics();
        assert_eq!((d.open_holds, d.thread_states), (0, 0));
        assert_eq!(d.work_after_finalize, 0);
    });
}

/// (e) new_thread_state + activate racing finalize: a thread state is
/// refused or freed by the finalization — it never outlives its
/// interpreter — and an activation is refused or finished before it.
#[test]
fn new_thread_state_and_activate_race_finalize() {
    explore("new_thread_state_and_activate_race_finalize", 500, || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let (rt2, done) = (
            rt.clone(),
            Arc::new(loom::sync::atomic::AtomicBool::new(false)),
        );
        let d2 = done.clone();
        let th = loom::thread::spawn(move || {
            if let Ok(ts) = rt2.new_thread_state(sub) {
                if rt2.activate(ts).is_ok() {
                    rt2.work(sub).unwrap();
                    rt2.deactivate(ts).unwrap();
                }
                // the thread stays alive (its record is not freed by exit
                // cleanup) until the finalizer has checked
                while !d2.load(loom::sync::atomic::Ordering::Acquire) {
                    loom::thread::yield_now();
                }
                let _ = rt2.delete_thread_state(ts);
            }
        });
        rt.finalize(sub, None).unwrap();
        assert_eq!(
            rt.diagnostics().thread_states,
            0,
            "outlived its interpreter"
        );
        done.store(true, loom::sync::atomic::Ordering::Release);
        th.join().unwrap();
        assert_eq!(rt.diagnostics().work_after_finalize, 0);
    });
}

/// (f) finalizing one's own interpreter from inside a nested span, while
/// another thread holds it: the finalizer waits for the other thread only,
/// and its own span stack still unwinds afterwards.
#[test]
fn finalize_own_interpreter_from_a_nested_span() {
    explore("finalize_own_interpreter_from_a_nested_span", 3_270, || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let rt2 = rt.clone();
        let other = loom::thread::spawn(move || {
            if let Ok(t) = rt2.ensure(sub) {
                rt2.work(sub).unwrap();
                rt2.release_ticket(t).unwrap();
            }
        });
        let t1 = rt.ensure(sub).unwrap();
        let t2 = rt.ensure(sub).unwrap();
        rt.finalize(sub, None).unwrap();
        assert_eq!(rt.release_ticket(t2), Ok(()));
        assert_eq!(rt.release_ticket(t1), Ok(()));
        assert_eq!(rt.current(), None);
        other.join().unwrap();
        assert_eq!(rt.diagnostics().work_after_finalize, 0);
    });
}

/// (g) two finalizers of one interpreter: exactly one completes it; the
/// other is told BUSY (it overlapped) or NO_SUCH_INTERPRETER (it came
/// after); it is counted finalized once.
#[test]
fn two_concurrent_finalizers() {
    explore("two_concurrent_finalizers", 170, || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let rt2 = rt.clone();
        let th = loom::thread::spawn(move || rt2.finalize(sub, None).map_err(|e| e.error));
        let mine = rt.finalize(sub, None).map_err(|e| e.error);
        let theirs = th.join().unwrap();
        let ok = usize::from(mine.is_ok()) + usize::from(theirs.is_ok());
        assert_eq!(ok, 1, "{mine:?} {theirs:?}");
        for r in [mine, theirs] {
            assert!(matches!(
                r,
                Ok(()) | Err(Error::Busy | Error::NoSuchInterpreter)
            ));
        }
        assert_eq!(rt.diagnostics().finalized, 1);
    });
}

/// (h) finalizing main while a thread works in a subinterpreter: the
/// subinterpreter is finalized first (so the thread's span there is
/// waited for or refused), main after; no work in either once gone.
#[test]
fn finalize_main_with_a_subinterpreter_in_use() {
    explore("finalize_main_with_a_subinterpreter_in_use", 1_000, || {
        let rt = Arc::new(Runtime::new());
        let main = rt.main_interpreter().unwrap();
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let rt2 = rt.clone();
        let th = loom::thread::spawn(move || {
            if let Ok(t) = rt2.ensure(sub) {
                rt2.work(sub).unwrap();
                rt2.release_ticket(t).unwrap();
            }
        });
        rt.finalize(main, None).unwrap();
        th.join().unwrap();
        assert_eq!(rt.interpreter_state(sub), Err(Error::NoSuchInterpreter));
        assert_eq!(rt.interpreter_state(main), Err(Error::NoSuchInterpreter));
        let d = rt.diagnostics();
        assert_eq!((d.work_after_finalize, d.finalized), (0, 2));
    });
}

/// (j) a thread's cached guard lookup (the guard design's fast path) racing
/// the guard's close on another thread: an ensure through the cache may
/// precede the close (granted) or follow it (refused with
/// `InvalidHandle`), but once the close is known to have happened (a flag
/// set after it, then the join) the cache is never used. Fails if a close
/// does not invalidate the cache (`Registry::guard_closes`). Both outcomes
/// occur.
#[test]
fn cached_guard_lookup_sees_a_close() {
    let out = Arc::new(Outcomes::default());
    let o = out.clone();
    explore("cached_guard_lookup_sees_a_close", 90, move || {
        let rt = Arc::new(Runtime::new());
        let main = rt.main_interpreter().unwrap();
        let g = rt.guard_for(main).unwrap();
        // the first ensure looks the guard up and caches it
        let t = rt.ensure_with_guard(g).unwrap();
        rt.release_token(t).unwrap();
        let closed = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let (rt2, c2) = (rt.clone(), closed.clone());
        let other = loom::thread::spawn(move || {
            rt2.close_guard(g).unwrap();
            c2.store(true, Ordering::Release);
        });
        let seen = closed.load(Ordering::Acquire);
        match rt.ensure_with_guard(g) {
            Ok(t) => {
                assert!(!seen, "a closed guard's cached lookup was used");
                o.a.fetch_add(1, Ordering::Relaxed);
                rt.release_token(t).unwrap();
            }
            Err(e) => {
                assert_eq!(e, Error::InvalidHandle);
                o.b.fetch_add(1, Ordering::Relaxed);
            }
        }
        other.join().unwrap();
        assert_eq!(rt.ensure_with_guard(g), Err(Error::InvalidHandle));
    });
    out.both("granted before the close / refused after it");
}

loom::thread_local! {
    /// Each loom thread's inline block, for model (k): leaked, so that it
    /// outlives the thread's context as a facade's (a thread-local without
    /// a destructor) does; loom drops its thread-locals before the
    /// context's exit clean-up closes the block.
    static BLOCK: *mut crate::thread::InlineState =
        Box::into_raw(Box::new(crate::thread::InlineState::CLOSED));
}

fn block_slot() -> *mut crate::thread::InlineState {
    BLOCK.with(|b| *b)
}

/// (k) the guard design's inline block (`thread::InlineState::guard`: the
/// guard a header's `tsg_ensure_inline` counts under without calling the
/// library) racing the guard's close on another thread: a span counted by
/// the block may precede the close, but once the close is known to have
/// happened (a flag set after it) the block never counts under that guard
/// and the library refuses it. Fails if a close does not invalidate the
/// block's lookup (`InlineState::guard_epoch` against `Registry::
/// guard_closes`). Both outcomes occur.
#[test]
fn an_inline_block_s_cached_guard_sees_a_close() {
    let out = Arc::new(Outcomes::default());
    let o = out.clone();
    explore(
        "an_inline_block_s_cached_guard_sees_a_close",
        15,
        move || {
            let rt = Arc::new(Runtime::new());
            rt.export_inline_state(crate::thread::InlineExport {
                slot: block_slot,
                tickets: true,
            })
            .unwrap();
            let main = rt.main_interpreter().unwrap();
            let g = rt.guard_for(main).unwrap();
            // the library's ensure looks the guard up and caches it in the
            // block it leaves open
            let outer = rt.ensure_with_guard(g).unwrap();
            let closed = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let (rt2, c2) = (rt.clone(), closed.clone());
            let other = loom::thread::spawn(move || {
                rt2.close_guard(g).unwrap();
                c2.store(true, Ordering::Release);
            });
            let seen = closed.load(Ordering::Acquire);
            // SAFETY: this thread's block; no library call runs on it now.
            let b = unsafe { &mut *block_slot() };
            assert_eq!(b.guard, g.as_raw(), "the block caches the lookup");
            match b.guard_ticket_uncalled(g.as_raw()) {
                Ok(t) => {
                    assert!(!seen, "a closed guard's lookup was used by the block");
                    o.a.fetch_add(1, Ordering::Relaxed);
                    assert_eq!(
                        b.release_ticket_uncalled(t),
                        crate::thread::InlineStep::Done
                    );
                }
                Err(step) => {
                    assert_eq!(step, crate::thread::InlineStep::Library);
                    o.b.fetch_add(1, Ordering::Relaxed);
                }
            }
            other.join().unwrap();
            // SAFETY: as above.
            let b = unsafe { &mut *block_slot() };
            assert!(b.guard_ticket_uncalled(g.as_raw()).is_err());
            assert_eq!(rt.ensure_with_guard(g), Err(Error::InvalidHandle));
            rt.release_token(outer).unwrap();
        },
    );
    out.both("counted before the close / sent to the library after it");
}

/// (h) the re-attach fast path racing finalization of a daemon's span: a
/// guard-design span whose guard is closed (so it holds nothing open) is
/// saved, and its ensure-after-save races another thread's finalize of
/// its interpreter. Refused (the thread state is deleted already),
/// granted and attached to the live interpreter, or granted attached to
/// nothing (the thread waited for the lock the finalizer held, and its
/// thread state was deleted meanwhile); never attached to a finalized
/// interpreter, and no work after its finalization. Without the fast
/// path's check after the attach the thread stayed attached to the
/// deleted thread state (found by a review's mutation; this model fails
/// then).
#[test]
fn daemon_reattach_races_finalize() {
    let out = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let o = out.clone();
    explore("daemon_reattach_races_finalize", 1_060, move || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let g = rt.guard_for(sub).unwrap();
        let t = rt.ensure_with_guard(g).unwrap();
        rt.close_guard(g).unwrap();
        let s = rt.save().unwrap();
        let rt2 = rt.clone();
        let fin = loom::thread::spawn(move || rt2.finalize(sub, None).map_err(|e| e.error));
        let r = rt.ensure(sub);
        let attached = rt.is_attached(sub);
        let k = match (&r, attached) {
            (Err(_), _) => 0,
            (Ok(_), true) => 1,
            (Ok(_), false) => 2,
        };
        o[k].fetch_add(1, Ordering::Relaxed);
        if attached {
            assert!(rt.work(sub).is_ok(), "attached: its interpreter is alive");
        }
        if r.is_ok() {
            // a second ensure inside it: whatever the slow path answers
            if rt.ensure(sub).is_ok() {
                rt.release().unwrap();
            }
            rt.release().unwrap();
        }
        assert!(!rt.is_attached(sub));
        let _ = rt.restore(s);
        let _ = rt.release_token(t);
        fin.join().unwrap().unwrap();
        assert_eq!(rt.diagnostics().work_after_finalize, 0);
    });
    let n: Vec<usize> = out.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    eprintln!("  refused / attached / attached to nothing: {n:?}");
    assert!(n.iter().all(|&c| c > 0), "every outcome reached: {n:?}");
}
