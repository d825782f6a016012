//! loom models of the core's concurrency (run with `RUSTFLAGS="--cfg loom"`,
//! see `.ci/run`): every interleaving of the atomics, the slow mutex and the
//! condition variable is explored up to the preemption bound
//! (`LOOM_MAX_PREEMPTIONS`, 2 in CI).

use crate::{Error, LockMode, Runtime};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `f` under loom and returns how many executions it explored, so a
/// model that stops exploring (e.g. after a refactor moves work out of the
/// modelled primitives) fails instead of passing vacuously.
fn explore(min_executions: usize, f: impl Fn() + Sync + Send + 'static) {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    loom::model(move || {
        r.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let n = runs.load(Ordering::Relaxed);
    eprintln!("explored {n} executions");
    assert!(n >= min_executions, "only {n} executions explored");
}

/// (a) ensure racing finalize: the ensure is either refused with a
/// documented code, or granted and its work done before finalize passes its
/// point of no return; finalize never passes with a span open, and never
/// sleeps through the last release (a lost wake-up would deadlock, which
/// loom reports).
#[test]
fn ensure_races_finalize() {
    explore(2, || {
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
        assert_eq!(rt.ensure(sub), Err(Error::NoSuchInterpreter));
        let _ = granted;
    });
}

/// (a') a holder that detached (save) inside its span re-attaches while the
/// finalizer waits: finalize does not hold the lock, so the holder finishes.
#[test]
fn holder_reattaches_while_finalize_waits() {
    explore(2, || {
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

/// (b) a thread attached to A switches to B while B is finalized: the
/// switch is granted or refused, and A is attached again afterwards in
/// every interleaving.
#[test]
fn switch_races_finalize_of_the_other_interpreter() {
    explore(2, || {
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
    });
}

/// (c) mutual exclusion of a per-interpreter lock: the racy work counter
/// loses no update and no thread sees another inside.
fn exclusion(threads: usize, mode: LockMode) {
    explore(2, move || {
        let rt = Arc::new(Runtime::new());
        let id = rt.create_interpreter(mode).unwrap();
        let hs: Vec<_> = (0..threads)
            .map(|_| {
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
        assert_eq!(rt.work_count(id).unwrap(), threads as u64);
        assert_eq!(rt.diagnostics().exclusion_violations, 0);
    });
}

#[test]
fn mutual_exclusion_own_lock_2_threads() {
    exclusion(2, LockMode::Own);
}

#[test]
fn mutual_exclusion_shared_lock_2_threads() {
    exclusion(2, LockMode::SharedWithMain);
}
