//! Regression tests for the defects of the correctness audit (issue 9), one
//! per defect, named after it. Each failed on the code before its fix (the
//! closing note of the issue and `docs/reliability.md` give the output).

mod common;
use common::watchdog;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};
use tstate_core::{Error, InterpreterId, LockMode, Runtime, RuntimeOptions};

/// Defect 1: finalizing one's own interpreter from inside a *nested* ensure
/// must leave a span stack that the remaining releases unwind, and a hold
/// below the finalized frames must still be released (a later finalize of
/// that interpreter completes).
#[test]
fn d01_finalize_own_interpreter_from_nested_ensure_unwinds_the_span_stack() {
    watchdog(30, || {
        let rt = Arc::new(Runtime::new());
        let a = rt.create_interpreter(LockMode::Own).unwrap();
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let rt2 = rt.clone();
        std::thread::spawn(move || {
            rt2.ensure(a).unwrap(); // a hold below the finalized frames
            rt2.ensure(sub).unwrap();
            rt2.ensure(sub).unwrap(); // nested: Cython's `with gil` in `with gil`
            rt2.finalize(sub, Some(Duration::from_secs(5))).unwrap();
            assert_eq!(rt2.release(), Ok(()), "release of the nested frame");
            assert_eq!(rt2.release(), Ok(()), "release of the outer sub frame");
            assert_eq!(rt2.current().map(|c| c.1), Some(a), "back on a");
            assert_eq!(rt2.release(), Ok(()), "release of a");
            assert_eq!(rt2.current(), None);
        })
        .join()
        .unwrap();
        assert_eq!(rt.diagnostics().open_holds, 0);
        assert_eq!(rt.finalize(a, Some(Duration::from_secs(2))), Ok(()));
    });
}

/// Defect 2: the int-handle design must refuse another thread's handle
/// (WRONG_THREAD) and leave the caller's own span open, for every pair of
/// threads; a never-issued value answers INVALID_HANDLE.
#[test]
fn d02_handle_of_another_thread_never_closes_the_callers_span() {
    watchdog(60, || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::None).unwrap();
        // thread A keeps its first span open; its ticket is the one to misuse
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let rta = rt.clone();
        let a = std::thread::spawn(move || {
            let t = rta.ensure(sub).unwrap();
            tx.send(t).unwrap();
            done_rx.recv().unwrap();
            rta.release_ticket(t).unwrap();
        });
        let ta = rx.recv().unwrap();
        // 300 further threads, one after another, each with its first span
        // open: A's ticket must never release it.
        for i in 0..300 {
            let rt = rt.clone();
            let r = std::thread::spawn(move || {
                let mine = rt.ensure(sub).unwrap();
                let r = rt.release_ticket(ta);
                let still = rt.is_attached(sub);
                let own = rt.release_ticket(mine);
                (r, still, own)
            })
            .join()
            .unwrap();
            assert_eq!(
                r,
                (Err(Error::WrongThread), true, Ok(())),
                "thread {i}: A's handle {ta:?}"
            );
        }
        done_tx.send(()).unwrap();
        a.join().unwrap();
        let never = tstate_core::Ticket::from_raw(i32::MAX as u32);
        let r = std::thread::spawn({
            let rt = rt.clone();
            move || {
                let t = rt.ensure(sub).unwrap();
                let r = rt.release_ticket(never);
                rt.release_ticket(t).unwrap();
                r
            }
        })
        .join()
        .unwrap();
        assert_eq!(r, Err(Error::InvalidHandle), "INT_MAX was never issued");
    });
}

/// Defect 3: a thread state created while its interpreter is being
/// finalized is either refused or freed by that finalization: it never
/// outlives its interpreter. 500 rounds; in each a thread creates thread
/// states in a loop until refused while the interpreter is finalized.
#[test]
fn d03_new_thread_state_racing_finalize_never_outlives_its_interpreter() {
    watchdog(120, || {
        let rt = Arc::new(Runtime::new());
        let mut created = 0;
        for round in 0..3000 {
            let sub = rt.create_interpreter(LockMode::Own).unwrap();
            let start = Arc::new(Barrier::new(2));
            let checked = Arc::new(Barrier::new(2));
            let made = Arc::new(AtomicU64::new(0));
            let (rt2, s2, c2, m2) = (rt.clone(), start.clone(), checked.clone(), made.clone());
            let t = std::thread::spawn(move || {
                s2.wait();
                let mut n = 0;
                let r = loop {
                    match rt2.new_thread_state(sub) {
                        Ok(_) => {
                            n += 1;
                            m2.store(n, Ordering::Release);
                        }
                        Err(e) => break e,
                    }
                };
                c2.wait(); // stay alive (no exit cleanup) until checked
                (n, r)
            });
            start.wait();
            while made.load(Ordering::Acquire) == 0 {
                std::thread::yield_now();
            }
            rt.finalize(sub, Some(Duration::from_secs(5))).unwrap();
            let left = rt.diagnostics().thread_states;
            checked.wait();
            let (n, r) = t.join().unwrap();
            created += n;
            assert!(
                matches!(r, Error::Finalizing | Error::NoSuchInterpreter),
                "{r:?}"
            );
            assert_eq!(
                left, 0,
                "round {round}: a thread state outlived its interpreter"
            );
        }
        eprintln!("created {created} thread states in 3000 rounds");
    });
}

/// A pthread key whose destructor runs `f` (glibc runs key destructors
/// after every thread-local destructor of Rust and C++).
mod pthread_key {
    use std::sync::OnceLock;
    pub type Body = Box<dyn Fn() + Send + Sync>;
    static BODY: OnceLock<Body> = OnceLock::new();
    static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();
    extern "C" fn dtor(_: *mut libc::c_void) {
        if let Some(b) = BODY.get() {
            b();
        }
    }
    /// Arms the calling thread: at its exit, the key's destructor runs `body`.
    pub fn arm(body: impl Fn() + Send + Sync + 'static) {
        let _ = BODY.set(Box::new(body));
        let key = *KEY.get_or_init(|| {
            let mut k = 0;
            // SAFETY: `k` is a valid out-pointer; `dtor` has the C signature.
            assert_eq!(unsafe { libc::pthread_key_create(&mut k, Some(dtor)) }, 0);
            k
        });
        // SAFETY: `key` was created above; any non-NULL value arms it.
        let rc = unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<libc::c_void>()) };
        assert_eq!(rc, 0);
    }
}

/// Defect 4: a span opened from a pthread-key destructor (a thread whose
/// first use of tstate is there) is cleaned up at that thread's exit.
#[test]
fn d04_span_opened_in_a_pthread_key_destructor_is_cleaned_up() {
    watchdog(30, || {
        static RT: std::sync::OnceLock<(Runtime, InterpreterId)> = std::sync::OnceLock::new();
        let (rt, sub) = RT.get_or_init(|| {
            let rt = Runtime::new();
            let sub = rt.create_interpreter(LockMode::Own).unwrap();
            (rt, sub)
        });
        let sub = *sub;
        std::thread::spawn(move || {
            pthread_key::arm(move || {
                let (rt, _) = RT.get().unwrap();
                let _ = rt.ensure(sub); // never released: the thread exits
            });
        })
        .join()
        .unwrap();
        let d = rt.diagnostics();
        assert_eq!((d.open_holds, d.exit_cleanups), (0, 1), "{d:?}");
        assert_eq!(rt.finalize(sub, Some(Duration::from_secs(1))), Ok(()));
    });
}

/// Defect 6: an interpreter id whose slot was reused 2^32 times still never
/// resolves to the new interpreter. The registry starts slot generations
/// near the limit (a test hook), so the wrap is reached at once.
#[test]
fn d06_stale_ids_never_resolve_after_a_slot_generation_would_wrap() {
    let rt = Runtime::with_options(RuntimeOptions {
        first_generation: u32::MAX - 8,
        ..RuntimeOptions::default()
    });
    let mut old = Vec::new();
    for _ in 0..32 {
        let id = rt.create_interpreter(LockMode::Own).unwrap();
        for o in &old {
            assert_ne!(id, *o, "an id was issued twice");
        }
        rt.finalize(id, None).unwrap();
        old.push(id);
    }
    let live = rt.create_interpreter(LockMode::Own).unwrap();
    for o in &old {
        assert_eq!(rt.ensure(*o), Err(Error::NoSuchInterpreter));
        assert_eq!(rt.interpreter_state(*o), Err(Error::NoSuchInterpreter));
    }
    let t = rt.ensure(live).unwrap();
    rt.release_ticket(t).unwrap();
    // thread-state handles: a thread state deleted on every release
    let rt = Runtime::with_options(RuntimeOptions {
        first_generation: u32::MAX - 8,
        reuse: tstate_core::ReusePolicy::DeleteOnRelease,
        ..RuntimeOptions::default()
    });
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    let mut handles = Vec::new();
    for _ in 0..32 {
        let t = rt.ensure(sub).unwrap();
        handles.push(rt.current().unwrap().0);
        rt.release_ticket(t).unwrap();
    }
    let t = rt.ensure(sub).unwrap();
    let s = rt.save().unwrap();
    for h in &handles {
        assert_ne!(*h, s, "a thread-state handle was issued twice");
        assert_eq!(rt.restore(*h), Err(Error::InvalidHandle));
    }
    rt.restore(s).unwrap();
    rt.release_ticket(t).unwrap();
}

/// Defect 7: a thread's first use of another interpreter must not drop the
/// handles of its thread states that finalization freed: activate still says
/// NO_SUCH_INTERPRETER and delete still succeeds.
#[test]
fn d07_first_use_of_another_interpreter_keeps_handles_freed_by_finalization() {
    watchdog(30, || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let other = rt.create_interpreter(LockMode::Own).unwrap();
        let (tx, rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let rt2 = rt.clone();
        let h = std::thread::spawn(move || {
            let ts = rt2.new_thread_state(sub).unwrap();
            tx.send(()).unwrap();
            go_rx.recv().unwrap();
            let t = rt2.ensure(other).unwrap(); // first use of `other`
            rt2.release_ticket(t).unwrap();
            (rt2.activate(ts), rt2.delete_thread_state(ts))
        });
        rx.recv().unwrap();
        rt.finalize(sub, Some(Duration::from_secs(5))).unwrap();
        go_tx.send(()).unwrap();
        assert_eq!(h.join().unwrap(), (Err(Error::NoSuchInterpreter), Ok(())));
    });
}

/// Defect 8: a subinterpreter sharing the main lock under a free-threaded
/// main is either refused at creation or excluded from main's threads.
#[test]
fn d08_shared_with_main_under_free_threaded_main_is_defined() {
    watchdog(60, || {
        let rt = Arc::new(Runtime::with_options(RuntimeOptions {
            main_lock: LockMode::None,
            ..RuntimeOptions::default()
        }));
        let main = rt.main_interpreter().unwrap();
        let sub = match rt.create_interpreter(LockMode::SharedWithMain) {
            Err(e) => {
                assert_eq!(e, Error::Unsupported, "documented refusal");
                return;
            }
            Ok(s) => s,
        };
        let hs: Vec<_> = [main, sub, main, sub]
            .into_iter()
            .map(|id| {
                let rt = rt.clone();
                std::thread::spawn(move || {
                    for _ in 0..5000 {
                        let t = rt.ensure(id).unwrap();
                        rt.work(id).unwrap();
                        rt.release_ticket(t).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(rt.diagnostics().exclusion_violations, 0);
    });
}

/// Defect 9: finalize's timeout bounds finalize, even when another thread
/// holds the lock the caller must re-take afterwards.
#[test]
fn d09_finalize_timeout_bounds_finalize_when_the_callers_lock_is_held() {
    watchdog(30, || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let t = rt.ensure(sub).unwrap(); // the caller is attached to sub
        let (tx, rx) = mpsc::channel();
        let rt2 = rt.clone();
        // a holder that, once it gets the lock, keeps it for 2 s
        let h = std::thread::spawn(move || {
            tx.send(()).unwrap();
            let t = rt2.ensure(sub).unwrap();
            std::thread::sleep(Duration::from_secs(2));
            rt2.release_ticket(t).unwrap();
        });
        rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50)); // the holder waits for the lock
        let t0 = Instant::now();
        let r = rt.finalize(sub, Some(Duration::from_millis(100)));
        let took = t0.elapsed();
        assert_eq!(r.map_err(|e| e.error), Err(Error::Timeout));
        assert!(took < Duration::from_millis(400), "finalize took {took:?}");
        h.join().unwrap();
        if rt.current().is_none() {
            // left detached within the bound: its thread state was saved
            let (ts, _) = rt.saved_thread_state().expect("a saved thread state");
            rt.restore(ts).unwrap();
        }
        rt.release_ticket(t).unwrap();
        assert_eq!(rt.finalize(sub, Some(Duration::from_secs(2))), Ok(()));
    });
}

/// A thread-local whose destructor runs `f`; registered before the thread
/// first uses tstate, so it is destroyed after tstate's own thread-locals.
struct OnExit(Option<Box<dyn FnOnce() + Send>>);
impl Drop for OnExit {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}
thread_local! {
    static ON_EXIT: std::cell::RefCell<OnExit> = const { std::cell::RefCell::new(OnExit(None)) };
}
fn on_exit(f: impl FnOnce() + Send + 'static) {
    ON_EXIT.with(|c| c.borrow_mut().0 = Some(Box::new(f)));
}

/// Defect 10: two threads finalizing one interpreter from thread-local
/// destructors: one finalizes it, the other is told BUSY (or that it is
/// gone); it is counted finalized once.
#[test]
fn d10_concurrent_finalizers_in_late_thread_local_destructors_are_told_busy() {
    watchdog(30, || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        // a holder keeps `sub` open so both finalizers overlap
        let (ready_tx, ready_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let rth = rt.clone();
        let holder = std::thread::spawn(move || {
            let t = rth.ensure(sub).unwrap();
            let s = rth.save().unwrap();
            ready_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            rth.restore(s).unwrap();
            rth.release_ticket(t).unwrap();
        });
        ready_rx.recv().unwrap();
        let results = Arc::new(std::sync::Mutex::new(Vec::new()));
        let finalizers: Vec<_> = (0..2)
            .map(|_| {
                let (rt, results) = (rt.clone(), results.clone());
                std::thread::spawn(move || {
                    let rt2 = rt.clone();
                    on_exit(move || {
                        let r = rt2.finalize(sub, Some(Duration::from_secs(5)));
                        results.lock().unwrap().push(r.map_err(|e| e.error));
                    });
                    let _ = rt.current(); // first use of tstate: after ON_EXIT
                    let t = rt.ensure(rt.main_interpreter().unwrap()).unwrap();
                    rt.release_ticket(t).unwrap();
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        go_tx.send(()).unwrap();
        holder.join().unwrap();
        for f in finalizers {
            f.join().unwrap();
        }
        let mut r = results.lock().unwrap().clone();
        r.sort_by_key(|x| x.is_ok());
        assert_eq!(r.len(), 2);
        assert_eq!(r[1], Ok(()), "{r:?}");
        assert!(
            matches!(r[0], Err(Error::Busy | Error::NoSuchInterpreter)),
            "{r:?}"
        );
        assert_eq!(rt.diagnostics().finalized, 1);
    });
}

/// Defect 11: ensure and release from a thread-local destructor that runs
/// after tstate's own (pybind11's and C++ `thread_local` patterns) work.
#[test]
fn d11_ensure_release_from_a_late_thread_local_destructor_work() {
    watchdog(30, || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let (rt2, seen2) = (rt.clone(), seen.clone());
        std::thread::spawn(move || {
            let rt3 = rt2.clone();
            on_exit(move || {
                let r = rt3.ensure(sub).and_then(|t| {
                    rt3.work(sub)?;
                    rt3.release_ticket(t)
                });
                seen2.store(if r.is_ok() { 1 } else { 2 }, Ordering::SeqCst);
            });
            let t = rt2.ensure(sub).unwrap(); // first use: after ON_EXIT
            rt2.release_ticket(t).unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 1, "ensure/release failed");
        assert_eq!(rt.work_count(sub).unwrap(), 1);
        assert_eq!(rt.diagnostics().open_holds, 0);
    });
}
