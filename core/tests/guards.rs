//! The guard design (PEP 788) on the model: guards hold an interpreter
//! open with no thread state, views never do, tokens restore across
//! interpreters, and the daemon idiom (ensure under a guard, then close it)
//! leaves a span that no longer blocks finalization.

mod common;
use common::watchdog;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use tstate_core::{Error, LockMode, Runtime, SpanKind};

#[test]
fn a_guard_blocks_finalization_with_no_thread_state_and_is_reported() {
    let rt = Runtime::new();
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    let g = rt.guard_for(sub).unwrap();
    let e = rt
        .finalize(sub, Some(Duration::from_millis(30)))
        .unwrap_err();
    assert_eq!(e.error, Error::Timeout);
    assert_eq!(e.holders.len(), 1);
    assert_eq!(e.holders[0].kind, SpanKind::Guard);
    assert_eq!(
        rt.guard_for(sub),
        Err(Error::Finalizing),
        "no new guard once finalizing"
    );
    rt.close_guard(g).unwrap();
    assert_eq!(rt.close_guard(g), Err(Error::InvalidHandle), "double close");
    rt.finalize(sub, Some(Duration::from_secs(1))).unwrap();
}

#[test]
fn a_view_outlives_its_interpreter_and_never_blocks_it() {
    let rt = Runtime::new();
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    let v = rt.view_for(sub).unwrap();
    let t0 = Instant::now();
    rt.finalize(sub, Some(Duration::from_secs(1))).unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "a view does not block"
    );
    assert_eq!(rt.view_interpreter(v), Ok(sub), "still safe to use");
    assert_eq!(rt.guard_from_view(v), Err(Error::NoSuchInterpreter));
    assert_eq!(rt.ensure_from_view(v), Err(Error::NoSuchInterpreter));
    rt.close_view(v).unwrap();
    assert_eq!(rt.close_view(v), Err(Error::InvalidHandle));
    assert_eq!(rt.diagnostics().open_holds, 0);
}

#[test]
fn ensure_from_view_keeps_its_guard_until_release() {
    watchdog(20, || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let v = rt.view_for(sub).unwrap();
        let (tx, rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let rt2 = rt.clone();
        let h = std::thread::spawn(move || {
            let t = rt2.ensure_from_view(v).unwrap();
            rt2.work(sub).unwrap();
            let s = rt2.save().unwrap();
            tx.send(()).unwrap();
            go_rx.recv().unwrap();
            rt2.restore(s).unwrap();
            rt2.release_token(t).unwrap();
        });
        rx.recv().unwrap();
        let e = rt
            .finalize(sub, Some(Duration::from_millis(30)))
            .unwrap_err();
        assert_eq!(e.error, Error::Timeout);
        assert!(
            e.holders.iter().any(|h| h.kind == SpanKind::Guard),
            "{:?}",
            e.holders
        );
        go_tx.send(()).unwrap();
        h.join().unwrap();
        rt.finalize(sub, Some(Duration::from_secs(1))).unwrap();
        rt.close_view(v).unwrap();
    });
}

#[test]
fn ensure_with_a_guard_is_never_refused_while_finalizing() {
    watchdog(20, || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let g = rt.guard_for(sub).unwrap();
        let rt2 = rt.clone();
        let fin = std::thread::spawn(move || rt2.finalize(sub, Some(Duration::from_secs(5))));
        while rt.interpreter_state(sub) != Ok(tstate_core::InterpreterState::Finalizing) {
            std::thread::yield_now();
        }
        assert_eq!(
            rt.ensure(sub),
            Err(Error::Finalizing),
            "plain ensure refused"
        );
        let t = rt.ensure_with_guard(g).unwrap();
        rt.work(sub).unwrap();
        rt.release_token(t).unwrap();
        assert!(!fin.is_finished(), "the guard still holds it");
        rt.close_guard(g).unwrap();
        assert_eq!(fin.join().unwrap(), Ok(()));
    });
}

/// PEP 788's daemon-thread idiom: a thread ensures with a guard, then
/// closes the guard: its span no longer blocks finalization; once the
/// interpreter is gone, the daemon's calls fail cleanly.
#[test]
fn daemon_idiom_the_span_no_longer_blocks_finalization() {
    watchdog(20, || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let (tx, rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let rt2 = rt.clone();
        let daemon = std::thread::spawn(move || {
            let g = rt2.guard_for(sub).unwrap();
            let t = rt2.ensure_with_guard(g).unwrap();
            rt2.close_guard(g).unwrap(); // the daemon idiom
            rt2.work(sub).unwrap();
            let s = rt2.save().unwrap(); // e.g. blocked in I/O
            tx.send(()).unwrap();
            go_rx.recv().unwrap();
            let after = (rt2.restore(s), rt2.work(sub));
            (after, rt2.release_token(t), rt2.current())
        });
        rx.recv().unwrap();
        let t0 = Instant::now();
        rt.finalize(sub, Some(Duration::from_secs(2))).unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "the daemon did not block it"
        );
        go_tx.send(()).unwrap();
        let ((restored, worked), released, current) = daemon.join().unwrap();
        assert_eq!(restored, Err(Error::NoSuchInterpreter));
        assert_eq!(worked, Err(Error::NotAttached));
        assert_eq!(released, Ok(()), "its span stack still unwinds");
        assert_eq!(current, None);
        let d = rt.diagnostics();
        assert_eq!((d.work_after_finalize, d.open_holds), (0, 0));
    });
}

#[test]
fn a_token_restores_exactly_across_interpreters() {
    let rt = Runtime::new();
    let a = rt.create_interpreter(LockMode::Own).unwrap();
    let b = rt.create_interpreter(LockMode::Own).unwrap();
    let (va, vb) = (rt.view_for(a).unwrap(), rt.view_for(b).unwrap());
    let ta = rt.ensure_from_view(va).unwrap();
    let on_a = rt.current();
    let tb = rt.ensure_from_view(vb).unwrap();
    assert_eq!(rt.current().map(|c| c.1), Some(b));
    assert!(!rt.is_attached(a));
    // nested on b: counted
    let tb2 = rt.ensure_from_view(vb).unwrap();
    assert_eq!(rt.release_token(ta), Err(Error::OutOfOrder), "outer first");
    rt.release_token(tb2).unwrap();
    rt.release_token(tb).unwrap();
    assert_eq!(rt.current(), on_a);
    rt.release_token(ta).unwrap();
    assert_eq!(rt.current(), None);
    assert_eq!(
        rt.release_token(ta),
        Err(Error::InvalidHandle),
        "double release"
    );
    assert_eq!(
        rt.diagnostics().open_holds,
        0,
        "every implicit guard closed"
    );
}

#[test]
fn guard_misuse_is_refused_with_state_unchanged() {
    let rt = Arc::new(Runtime::new());
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    let g = rt.guard_for(sub).unwrap();
    rt.close_guard(g).unwrap();
    assert_eq!(
        rt.ensure_with_guard(g),
        Err(Error::InvalidHandle),
        "closed guard"
    );
    assert_eq!(rt.guard_from_current(), Err(Error::NotAttached));
    assert_eq!(rt.view_from_current(), Err(Error::NotAttached));
    let v = rt.view_for(sub).unwrap();
    let t = rt.ensure_from_view(v).unwrap();
    let before = rt.current();
    let rt2 = rt.clone();
    let foreign = std::thread::spawn(move || rt2.release_token(t))
        .join()
        .unwrap();
    assert_eq!(foreign, Err(Error::WrongThread));
    assert_eq!(
        rt.release(),
        Err(Error::OutOfOrder),
        "a thread-stored release cannot close it"
    );
    assert_eq!(rt.current(), before);
    let g2 = rt.guard_from_current().unwrap();
    assert_eq!(rt.guard_interpreter(g2), Ok(sub));
    rt.close_guard(g2).unwrap();
    rt.release_token(t).unwrap();
    assert_eq!(rt.diagnostics().open_holds, 0);
}

/// A guard's holder record names the thread that opened it: its name and
/// OS thread id, read from the thread's context where it has one (a thread
/// that ensured before) and read directly where it has none, and a guard
/// taken by `EnsureFromView` the same.
#[test]
fn a_guard_names_the_thread_that_opened_it() {
    watchdog(20, || {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let v = rt.view_for(sub).unwrap();
        let open = |name: &str, with_ctx: bool| {
            let rt = rt.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    if with_ctx {
                        let t = rt.ensure(sub).unwrap();
                        rt.release_ticket(t).unwrap();
                    }
                    let g = rt.guard_for(sub).unwrap();
                    (g, tstate_core_test_tid())
                })
                .unwrap()
                .join()
                .unwrap()
        };
        let (g1, tid1) = open("no-context", false);
        let (g2, tid2) = open("with-context", true);
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let rt2 = rt.clone();
        let h = std::thread::Builder::new()
            .name("from-view".into())
            .spawn(move || {
                let t = rt2.ensure_from_view(v).unwrap();
                tx.send(tstate_core_test_tid()).unwrap();
                done_rx.recv().unwrap();
                rt2.release_token(t).unwrap();
            })
            .unwrap();
        let tid3 = rx.recv().unwrap();
        let mut seen: Vec<(Option<String>, u64)> = rt
            .holders(sub)
            .unwrap()
            .into_iter()
            .filter(|h| h.kind == SpanKind::Guard)
            .map(|h| (h.thread_name, h.os_thread_id))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (Some("from-view".into()), tid3),
                (Some("no-context".into()), tid1),
                (Some("with-context".into()), tid2),
            ]
        );
        done_tx.send(()).unwrap();
        h.join().unwrap();
        rt.close_guard(g1).unwrap();
        rt.close_guard(g2).unwrap();
        rt.close_view(v).unwrap();
    });
}

fn tstate_core_test_tid() -> u64 {
    // SAFETY: gettid takes no arguments and cannot fail.
    u64::try_from(unsafe { libc::gettid() }).unwrap()
}
