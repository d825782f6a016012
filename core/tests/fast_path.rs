//! The nested fast path (`thread::Fast`) keeps every rule of the slow path:
//! spans it counted are the frames the slow path sees (order, misuse,
//! stale tickets, thread exit), and the guard design's cached guard lookup
//! is never used after the guard's close. Model backend; each case runs on
//! a fresh thread (a fresh context) under a 60 s watchdog.

use std::sync::mpsc;
use std::time::Duration;
use tstate_core::{Error, LockMode, Runtime, Ticket};

/// Runs `f` on a new thread; fails if it panics or takes over 60 s.
fn on_thread(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => h.join().expect("case thread"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            h.join().expect("case thread panicked");
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("watchdog: case took over 60 s"),
    }
}

#[test]
fn deep_nesting_past_the_counted_depth_releases_in_order() {
    on_thread(|| {
        let rt = Runtime::new();
        let main = rt.main_interpreter().unwrap();
        // 1 slow outer span, then 20 nested: the first 8 counted by the fast
        // path, the rest pushed as frames by the slow path
        let ts: Vec<Ticket> = (0..21).map(|_| rt.ensure_ticket(main).unwrap()).collect();
        let mut uniq = ts.iter().map(|t| t.to_raw()).collect::<Vec<_>>();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), 21, "tickets are distinct");
        // out of order: refused whether the innermost is counted or a frame
        assert_eq!(rt.release_ticket(ts[3]), Err(Error::OutOfOrder));
        for t in ts.iter().rev() {
            assert_eq!(rt.release_ticket(*t), Ok(()));
        }
        assert!(!rt.is_attached(main));
        assert_eq!(rt.release(), Err(Error::NotAttached));
    });
}

#[test]
fn a_counted_span_s_ticket_is_stale_once_released() {
    on_thread(|| {
        let rt = Runtime::new();
        let main = rt.main_interpreter().unwrap();
        let outer = rt.ensure_ticket(main).unwrap();
        let a = rt.ensure_ticket(main).unwrap();
        rt.release_ticket(a).unwrap();
        // released by the fast path: never accepted again, even for the
        // next span opened at the same depth
        assert_eq!(rt.release_ticket(a), Err(Error::InvalidHandle));
        let b = rt.ensure_ticket(main).unwrap();
        assert_ne!(a, b);
        assert_eq!(rt.release_ticket(a), Err(Error::InvalidHandle));
        // the outer span's ticket is not the innermost
        assert_eq!(rt.release_ticket(outer), Err(Error::OutOfOrder));
        rt.release_ticket(b).unwrap();
        rt.release_ticket(outer).unwrap();
    });
}

#[test]
fn a_save_inside_counted_spans_is_seen_by_the_release() {
    on_thread(|| {
        let rt = Runtime::new();
        let main = rt.main_interpreter().unwrap();
        rt.ensure(main).unwrap();
        rt.ensure(main).unwrap(); // counted
        let saved = rt.save().unwrap();
        assert!(!rt.is_attached(main));
        // the counted span's release while its save is open: out of order
        assert_eq!(rt.release(), Err(Error::OutOfOrder));
        rt.restore(saved).unwrap();
        assert!(rt.is_attached(main));
        rt.release().unwrap();
        rt.release().unwrap();
        assert!(!rt.is_attached(main));
    });
}

#[test]
fn is_attached_follows_switches_between_interpreters() {
    on_thread(|| {
        let rt = Runtime::new();
        let main = rt.main_interpreter().unwrap();
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        rt.ensure(main).unwrap();
        rt.ensure(main).unwrap(); // counted
        assert!(rt.is_attached(main) && !rt.is_attached(sub));
        rt.ensure(sub).unwrap(); // a switch: slow
        assert!(rt.is_attached(sub) && !rt.is_attached(main));
        rt.ensure(sub).unwrap(); // counted on sub
        rt.release().unwrap();
        rt.release().unwrap(); // back to main
        assert!(rt.is_attached(main) && !rt.is_attached(sub));
        rt.release().unwrap();
        rt.release().unwrap();
        assert!(!rt.is_attached(main));
    });
}

#[test]
fn counted_spans_left_open_at_thread_exit_are_closed_by_the_cleanup() {
    let rt = std::sync::Arc::new(Runtime::new());
    let main = rt.main_interpreter().unwrap();
    let r = rt.clone();
    on_thread(move || {
        r.ensure(main).unwrap();
        for _ in 0..3 {
            r.ensure(main).unwrap(); // counted, never released
        }
    });
    let d = rt.diagnostics();
    assert_eq!(
        d.exit_spans_closed, 4,
        "the outer span and the 3 counted ones"
    );
    // the exited thread's hold is gone: finalize completes at once
    rt.finalize(main, Some(Duration::from_secs(10))).unwrap();
}

#[test]
fn a_closed_guard_is_refused_although_its_lookup_was_cached() {
    on_thread(|| {
        let rt = Runtime::new();
        let main = rt.main_interpreter().unwrap();
        let g = rt.guard_for(main).unwrap();
        let t = rt.ensure_with_guard(g).unwrap(); // looks up, caches
        let inner = rt.ensure_with_guard(g).unwrap(); // through the cache
        rt.release_token(inner).unwrap();
        rt.release_token(t).unwrap();
        rt.close_guard(g).unwrap();
        assert_eq!(rt.ensure_with_guard(g), Err(Error::InvalidHandle));
        // and while attached (where the fast path would count it)
        let g2 = rt.guard_for(main).unwrap();
        let t2 = rt.ensure_with_guard(g2).unwrap();
        let g3 = rt.guard_for(main).unwrap();
        let t3 = rt.ensure_with_guard(g3).unwrap(); // caches g3
        rt.release_token(t3).unwrap();
        rt.close_guard(g3).unwrap();
        assert_eq!(rt.ensure_with_guard(g3), Err(Error::InvalidHandle));
        rt.release_token(t2).unwrap();
        rt.close_guard(g2).unwrap();
    });
}

#[test]
fn another_runtime_s_guard_is_not_taken_from_the_cache() {
    on_thread(|| {
        let (a, b) = (Runtime::new(), Runtime::new());
        let (ma, mb) = (a.main_interpreter().unwrap(), b.main_interpreter().unwrap());
        let ga = a.guard_for(ma).unwrap();
        let ta = a.ensure_with_guard(ga).unwrap();
        let tb = b.ensure(mb).unwrap();
        assert_eq!(b.ensure_with_guard(ga), Err(Error::InvalidHandle));
        b.release_ticket(tb).unwrap();
        a.release_token(ta).unwrap();
        a.close_guard(ga).unwrap();
    });
}

/// The re-attach fast path (`with nogil:` then `with gil:`) counts the span
/// without a frame; every rule of the slow path holds for it: order, stale
/// tickets, nested spans inside it, and what follows it.
#[test]
fn a_reattach_span_after_a_save_keeps_the_slow_path_s_rules() {
    on_thread(|| {
        let rt = Runtime::new();
        let main = rt.main_interpreter().unwrap();
        let outer = rt.ensure_ticket(main).unwrap();
        let saved = rt.save().unwrap();
        let mut last = None;
        for _ in 0..3 {
            let r = rt.ensure_ticket(main).unwrap();
            assert!(rt.is_attached(main));
            let n = rt.ensure_ticket(main).unwrap(); // nested inside it
            // not the innermost: refused, whichever path answers
            assert_eq!(rt.release_ticket(r), Err(Error::OutOfOrder));
            assert_eq!(rt.release_ticket(outer), Err(Error::OutOfOrder));
            rt.release_ticket(n).unwrap();
            assert_eq!(rt.release_ticket(n), Err(Error::InvalidHandle));
            if let Some(prev) = last {
                // the previous cycle's span: stale, not this one's
                assert_eq!(rt.release_ticket(prev), Err(Error::InvalidHandle));
            }
            rt.release_ticket(r).unwrap();
            assert!(!rt.is_attached(main), "detached again: the save holds");
            assert_eq!(rt.release_ticket(r), Err(Error::InvalidHandle));
            last = Some(r);
        }
        // the outer span's release while its save is open
        assert_eq!(rt.release_ticket(outer), Err(Error::OutOfOrder));
        rt.restore(saved).unwrap();
        assert!(rt.is_attached(main));
        rt.release_ticket(outer).unwrap();
        assert!(!rt.is_attached(main));
        assert_eq!(rt.release(), Err(Error::NotAttached));
    });
}

/// A slow call inside a re-attach span the fast path counted sees the
/// span as its frame: a switch to another interpreter and back, then a
/// save inside it (the next re-attach then re-attaches from that frame).
#[test]
fn slow_calls_inside_a_counted_reattach_span_see_its_frame() {
    on_thread(|| {
        let rt = Runtime::new();
        let main = rt.main_interpreter().unwrap();
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        rt.ensure(main).unwrap();
        let s1 = rt.save().unwrap();
        rt.ensure(main).unwrap(); // re-attach: counted
        rt.ensure(sub).unwrap(); // a switch: slow
        assert!(rt.is_attached(sub) && !rt.is_attached(main));
        rt.release().unwrap(); // back to main, inside the re-attach span
        assert!(rt.is_attached(main));
        let s2 = rt.save().unwrap(); // slow, inside the re-attach span
        assert!(!rt.is_attached(main));
        rt.ensure(main).unwrap(); // re-attach from the re-attach frame
        assert!(rt.is_attached(main));
        assert_eq!(rt.restore(s2), Err(Error::Busy), "attached: a span is open");
        rt.release().unwrap();
        assert!(!rt.is_attached(main));
        rt.restore(s2).unwrap();
        assert!(rt.is_attached(main));
        rt.release().unwrap(); // the first re-attach span
        assert!(!rt.is_attached(main));
        rt.restore(s1).unwrap();
        rt.release().unwrap();
        assert!(!rt.is_attached(main));
        assert_eq!(rt.release(), Err(Error::NotAttached));
    });
}

/// The guard design's `Ensure(guard)` after a save takes the re-attach
/// fast path; its token is released as any, in order only.
#[test]
fn the_guard_design_s_reattach_span_is_released_by_its_token() {
    on_thread(|| {
        let rt = Runtime::new();
        let main = rt.main_interpreter().unwrap();
        let g = rt.guard_for(main).unwrap();
        let outer = rt.ensure_with_guard(g).unwrap();
        let saved = rt.save().unwrap();
        for _ in 0..3 {
            let r = rt.ensure_with_guard(g).unwrap();
            assert!(rt.is_attached(main));
            assert_eq!(rt.release_token(outer), Err(Error::OutOfOrder));
            rt.release_token(r).unwrap();
            assert!(!rt.is_attached(main));
            assert_eq!(rt.release_token(r), Err(Error::InvalidHandle));
        }
        rt.restore(saved).unwrap();
        rt.release_token(outer).unwrap();
        rt.close_guard(g).unwrap();
    });
}

#[test]
fn a_counted_reattach_span_left_open_at_thread_exit_is_closed_by_the_cleanup() {
    let rt = std::sync::Arc::new(Runtime::new());
    let main = rt.main_interpreter().unwrap();
    let r = rt.clone();
    on_thread(move || {
        r.ensure(main).unwrap();
        r.save().unwrap();
        r.ensure(main).unwrap(); // re-attach: counted, never released
        r.ensure(main).unwrap(); // nested inside it: counted too
    });
    let d = rt.diagnostics();
    assert_eq!(
        d.exit_spans_closed, 3,
        "the outer span, the re-attach span and the nested one"
    );
    // the exited thread's hold is gone: finalize completes at once
    rt.finalize(main, Some(Duration::from_secs(10))).unwrap();
}

/// Nested spans between the span a save detached and the save: the
/// re-attach passes over them (as the slow path's search does), and every
/// span still releases in order only.
#[test]
fn a_reattach_passes_over_nested_spans_below_the_save() {
    on_thread(|| {
        let rt = Runtime::new();
        let main = rt.main_interpreter().unwrap();
        let outer = rt.ensure_ticket(main).unwrap();
        let nested = rt.ensure_ticket(main).unwrap();
        let saved = rt.save().unwrap();
        for _ in 0..3 {
            let r = rt.ensure_ticket(main).unwrap();
            assert!(rt.is_attached(main));
            assert_eq!(rt.release_ticket(nested), Err(Error::OutOfOrder));
            rt.release_ticket(r).unwrap();
            assert!(!rt.is_attached(main));
        }
        assert_eq!(rt.release_ticket(nested), Err(Error::OutOfOrder));
        rt.restore(saved).unwrap();
        rt.release_ticket(nested).unwrap();
        rt.release_ticket(outer).unwrap();
        assert!(!rt.is_attached(main));
    });
}
