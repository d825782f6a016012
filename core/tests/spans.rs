//! Ensure/release, activate/deactivate, save/restore: nesting restores exactly
//! (contract §2.4), affinity (§2.9), the attached check (§2.10), reuse policy.

mod common;
use common::watchdog;
use std::sync::Arc;
use tstate_core::{Error, LockMode, ReusePolicy, Runtime, RuntimeOptions};

#[test]
fn fresh_thread_ensure_attaches_and_release_restores_nothing() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    assert_eq!(rt.current(), None);
    let t = rt.ensure(main).unwrap();
    let (ts, interp) = rt.current().unwrap();
    assert_eq!(interp, main);
    assert!(rt.is_attached(main));
    assert_eq!(rt.work(main), Ok(1));
    rt.release_ticket(t).unwrap();
    assert_eq!(rt.current(), None);
    assert!(!rt.is_attached(main));
    assert_eq!(rt.work(main), Err(Error::NotAttached));
    // the kept thread state is reused by the next top-level ensure
    rt.ensure(main).unwrap();
    assert_eq!(rt.current().unwrap().0, ts);
    rt.release().unwrap();
}

#[test]
fn ticket_values_are_positive_c_ints() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    for _ in 0..100 {
        let t = rt.ensure(main).unwrap();
        let raw = t.to_raw();
        assert!(raw >= 1 && raw <= i32::MAX as u32, "{raw}");
        rt.release_ticket(t).unwrap();
    }
}

#[test]
fn nested_ensure_on_attached_thread_and_nogil_reentry_restore_exactly() {
    // CPython 3.11 scenario 7: Ensure / ALLOW_THREADS / Ensure / Release /
    // END_ALLOW_THREADS / Release, checking the attached state at each step.
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    let outer = rt.ensure(main).unwrap();
    let (ts, _) = rt.current().unwrap();
    let nested = rt.ensure(main).unwrap(); // Cython `with gil` while holding it
    assert_eq!(rt.current(), Some((ts, main)));
    rt.release_ticket(nested).unwrap();
    assert_eq!(rt.current(), Some((ts, main)));
    let saved = rt.save().unwrap(); // `with nogil:`
    assert_eq!(saved, ts);
    assert_eq!(rt.current(), None);
    let inner = rt.ensure(main).unwrap(); // `with gil` inside nogil
    assert_eq!(
        rt.current(),
        Some((ts, main)),
        "re-attaches the saved state"
    );
    rt.work(main).unwrap();
    rt.release_ticket(inner).unwrap();
    assert_eq!(rt.current(), None, "back to the nogil state");
    rt.restore(saved).unwrap();
    assert_eq!(rt.current(), Some((ts, main)));
    rt.release_ticket(outer).unwrap();
    assert_eq!(rt.current(), None);
}

#[test]
fn nesting_across_interpreters_restores_exactly() {
    let rt = Runtime::new();
    let a = rt.main_interpreter().unwrap();
    let b = rt.create_interpreter(LockMode::Own).unwrap();
    let ta = rt.ensure(a).unwrap();
    let (ts_a, _) = rt.current().unwrap();
    let tb = rt.ensure(b).unwrap();
    let (ts_b, ib) = rt.current().unwrap();
    assert_eq!(ib, b);
    assert!(!rt.is_attached(a) && rt.is_attached(b));
    // back into A while on B: A's own thread state (held open by the outer
    // span) is re-attached, not a new one
    let ta2 = rt.ensure(a).unwrap();
    assert_eq!(rt.current(), Some((ts_a, a)));
    rt.release_ticket(ta2).unwrap();
    assert_eq!(rt.current(), Some((ts_b, b)));
    rt.release_ticket(tb).unwrap();
    assert_eq!(rt.current(), Some((ts_a, a)));
    rt.release_ticket(ta).unwrap();
    assert_eq!(rt.current(), None);
    assert_eq!(rt.diagnostics().open_holds, 0);
}

#[test]
fn switching_with_shared_lock_does_not_self_deadlock() {
    watchdog(10, || {
        let rt = Runtime::new();
        let main = rt.main_interpreter().unwrap();
        let s = rt.create_interpreter(LockMode::SharedWithMain).unwrap();
        let t1 = rt.ensure(main).unwrap();
        let t2 = rt.ensure(s).unwrap();
        rt.work(s).unwrap();
        let t3 = rt.ensure(main).unwrap();
        rt.work(main).unwrap();
        rt.release_ticket(t3).unwrap();
        rt.release_ticket(t2).unwrap();
        rt.release_ticket(t1).unwrap();
        assert_eq!(rt.current(), None);
    });
}

#[test]
fn subinterpreter_thread_calls_back_into_that_subinterpreter() {
    let rt = Arc::new(Runtime::new());
    let main = rt.main_interpreter().unwrap();
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    let g = rt.ensure(sub).unwrap();
    // a thread "spawned by the subinterpreter" is handed its id explicitly
    let rt2 = rt.clone();
    let h = std::thread::spawn(move || {
        let _g = rt2.ensure_guard(sub).unwrap();
        (rt2.current().unwrap().1, rt2.is_attached(main))
    });
    rt.release_ticket(g).unwrap(); // let it take the sub's lock
    let (got, on_main) = h.join().unwrap();
    assert_eq!(got, sub);
    assert!(!on_main);
}

#[test]
fn attached_check_is_exact_per_interpreter_with_subinterpreters() {
    // CPython 3.11 scenario 5: PyGILState_Check says 1 forever once a
    // subinterpreter existed. Here it answers per interpreter.
    let rt = Arc::new(Runtime::new());
    let main = rt.main_interpreter().unwrap();
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    assert!(!rt.is_attached(main) && !rt.is_attached(sub));
    let _g = rt.ensure_guard(sub).unwrap();
    assert!(rt.is_attached(sub) && !rt.is_attached(main));
    let rt2 = rt.clone();
    let other = std::thread::spawn(move || rt2.is_attached(sub) || rt2.is_attached(main));
    assert!(!other.join().unwrap(), "another thread is not attached");
    drop(_g);
    rt.finalize(sub, None).unwrap();
    assert!(!rt.is_attached(sub) && !rt.is_attached(main));
    assert!(!rt.is_attached(tstate_core::InterpreterId::from_raw(0)));
}

#[test]
fn activate_lifecycle_and_use_after_delete() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    let ts = rt.new_thread_state(main).unwrap();
    assert_eq!(rt.current(), None);
    rt.activate(ts).unwrap();
    assert_eq!(rt.current(), Some((ts, main)));
    assert_eq!(rt.activate(ts), Err(Error::Busy), "double activate");
    assert_eq!(
        rt.delete_thread_state(ts),
        Err(Error::Busy),
        "delete while active"
    );
    rt.work(main).unwrap();
    rt.deactivate(ts).unwrap();
    assert_eq!(rt.current(), None);
    assert_eq!(rt.deactivate(ts), Err(Error::NotAttached));
    rt.delete_thread_state(ts).unwrap();
    assert_eq!(rt.activate(ts), Err(Error::InvalidHandle));
    assert_eq!(rt.delete_thread_state(ts), Err(Error::InvalidHandle));
    assert_eq!(rt.diagnostics().thread_states, 0);
}

#[test]
fn activate_while_attached_elsewhere_restores_on_deactivate() {
    let rt = Runtime::new();
    let a = rt.main_interpreter().unwrap();
    let b = rt.create_interpreter(LockMode::None).unwrap();
    let tb = rt.new_thread_state(b).unwrap();
    let g = rt.ensure(a).unwrap();
    let before = rt.current();
    rt.activate(tb).unwrap();
    assert_eq!(rt.current(), Some((tb, b)));
    // the ensure's release is out of order while the activation is inside it
    assert_eq!(rt.release_ticket(g), Err(Error::OutOfOrder));
    assert_eq!(rt.release(), Err(Error::OutOfOrder));
    rt.deactivate(tb).unwrap();
    assert_eq!(rt.current(), before);
    rt.release_ticket(g).unwrap();
    rt.delete_thread_state(tb).unwrap();
}

#[test]
fn affinity_thread_state_only_on_its_creating_thread() {
    let rt = Arc::new(Runtime::new());
    let main = rt.main_interpreter().unwrap();
    let ts = rt.new_thread_state(main).unwrap();
    let rt2 = rt.clone();
    let r = std::thread::spawn(move || {
        (
            rt2.activate(ts),
            rt2.delete_thread_state(ts),
            rt2.deactivate(ts),
            rt2.restore(ts),
        )
    })
    .join()
    .unwrap();
    assert_eq!(
        r,
        (
            Err(Error::WrongThread),
            Err(Error::WrongThread),
            Err(Error::WrongThread),
            Err(Error::WrongThread)
        )
    );
    rt.activate(ts).unwrap();
    rt.deactivate(ts).unwrap();
}

#[test]
fn keep_and_reset_reuses_one_thread_state_and_leaks_nothing() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    let t = rt.ensure(main).unwrap();
    let (first, _) = rt.current().unwrap();
    rt.set_scratch(42).unwrap();
    rt.release_ticket(t).unwrap();
    for _ in 0..1000 {
        let t = rt.ensure(main).unwrap();
        assert_eq!(rt.current().unwrap().0, first, "same thread state reused");
        assert_eq!(rt.scratch(), Ok(0), "previous task's data must not leak");
        rt.set_scratch(7).unwrap();
        rt.release_ticket(t).unwrap();
    }
    assert_eq!(rt.diagnostics().thread_states, 1);
}

#[test]
fn delete_on_release_policy_frees_each_time() {
    let rt = Runtime::with_options(RuntimeOptions {
        reuse: ReusePolicy::DeleteOnRelease,
        ..RuntimeOptions::default()
    });
    let main = rt.main_interpreter().unwrap();
    let t = rt.ensure(main).unwrap();
    let (first, _) = rt.current().unwrap();
    rt.set_scratch(42).unwrap();
    rt.release_ticket(t).unwrap();
    assert_eq!(rt.diagnostics().thread_states, 0);
    let t = rt.ensure(main).unwrap();
    assert_ne!(rt.current().unwrap().0, first);
    assert_eq!(rt.scratch(), Ok(0));
    rt.release_ticket(t).unwrap();
}

#[test]
fn save_restore_rules() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    assert_eq!(rt.save(), Err(Error::NotAttached));
    let g = rt.ensure(main).unwrap();
    let s = rt.save().unwrap();
    // releasing the ensure while its save is open is out of order
    assert_eq!(rt.release_ticket(g), Err(Error::OutOfOrder));
    let g2 = rt.ensure(main).unwrap();
    assert_eq!(rt.restore(s), Err(Error::Busy), "restore while attached");
    rt.release_ticket(g2).unwrap();
    rt.restore(s).unwrap();
    assert_eq!(rt.restore(s), Err(Error::Busy));
    let s2 = rt.save().unwrap();
    assert_eq!(s2, s);
    rt.restore(s2).unwrap();
    rt.release_ticket(g).unwrap();
    assert_eq!(rt.restore(s), Err(Error::NotAttached), "not saved");
}

#[test]
fn free_threaded_interpreter_has_all_threads_attached_at_once() {
    const N: usize = 6;
    watchdog(20, || {
        let rt = Arc::new(Runtime::new());
        let ft = rt.create_interpreter(LockMode::None).unwrap();
        let inside = Arc::new(std::sync::Barrier::new(N));
        let hs: Vec<_> = (0..N)
            .map(|_| {
                let (rt, inside) = (rt.clone(), inside.clone());
                std::thread::spawn(move || {
                    let t = rt.ensure(ft).unwrap();
                    // every thread reaches here while all are attached: with a
                    // lock this barrier would never open (the watchdog fails)
                    inside.wait();
                    assert!(rt.is_attached(ft));
                    rt.release_ticket(t).unwrap();
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(rt.diagnostics().exclusion_violations, 0);
    });
}

/// A thread that uses many interpreters keeps finding the right record for
/// each (its per-thread index, not a scan): after some of them are
/// finalized and their records pruned, their slots are reused by new
/// interpreters, and neither an old id nor a new one reaches the other's
/// record (an index left stale by pruning would attach a finalized id to the
/// new interpreter in its slot).
#[test]
fn a_thread_using_many_interpreters_finds_each_after_slots_are_reused() {
    let rt = Runtime::new();
    let make = |n: usize| -> Vec<_> {
        (0..n)
            .map(|_| rt.create_interpreter(LockMode::Own).unwrap())
            .collect()
    };
    let first = make(300);
    for &id in &first {
        let t = rt.ensure(id).unwrap();
        assert!(rt.is_attached(id));
        rt.release_ticket(t).unwrap();
    }
    let (gone, kept): (Vec<_>, Vec<_>) = first.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    for &(_, &id) in &gone {
        rt.finalize(id, None).unwrap();
    }
    // new interpreters: their first use prunes the gone records and reuses
    // their slots
    let second = make(150);
    for &id in &second {
        let t = rt.ensure(id).unwrap();
        assert!(rt.is_attached(id) && rt.current().unwrap().1 == id);
        assert_eq!(rt.work(id), Ok(1), "a new interpreter starts fresh");
        rt.release_ticket(t).unwrap();
    }
    for &(_, &id) in &gone {
        assert_eq!(rt.ensure(id), Err(Error::NoSuchInterpreter));
    }
    for &(_, &id) in &kept {
        let t = rt.ensure(id).unwrap();
        assert_eq!(rt.current().unwrap().1, id);
        rt.release_ticket(t).unwrap();
    }
    assert_eq!(rt.current(), None);
}
