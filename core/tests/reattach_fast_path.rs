//! The re-attach fast path (`thread::fast_reattach`) keeps the slow path's
//! answers where its own checks decide: each test here passes on the slow
//! path alone and failed with one of the fast path's checks removed (a
//! review's mutations, named per test), while the rest of the suite still
//! passed. Model backend; each case on a fresh thread under a 60 s
//! watchdog.
mod common;

use common::inline::{
    block, inline_ensure, inline_ensure_ticket, inline_release, inline_release_ticket, runtime,
    ticket_runtime,
};
use common::watchdog;
use std::sync::Arc;
use tstate_core::{Error, LockMode, Runtime};

fn on_thread(f: impl FnOnce() + Send + 'static) {
    watchdog(60, f);
}

/// The release of a counted re-attach span while the inline block counts
/// a span above it is out of order (without the inline-depth check the
/// release succeeded, leaving the counted span on a detached thread).
#[test]
fn a_reattach_release_under_an_inline_count_is_out_of_order() {
    on_thread(|| {
        let rt = ticket_runtime();
        let main = rt.main_interpreter().unwrap();
        let outer = rt.ensure_ticket(main).unwrap();
        let s = rt.save().unwrap();
        let r = rt.ensure_ticket(main).unwrap();
        let n = inline_ensure_ticket(&rt, main).unwrap();
        assert_eq!(rt.release_ticket(r), Err(Error::OutOfOrder));
        inline_release_ticket(&rt, n).unwrap();
        rt.release_ticket(r).unwrap();
        assert!(!rt.is_attached(main));
        rt.restore(s).unwrap();
        rt.release_ticket(outer).unwrap();
    });
}

/// After the daemon idiom (a guard-design span whose guard is closed) and
/// its interpreter's finalization, the ensure after a save is refused (the
/// saved thread state is deleted), not counted: without the check before
/// the attach it returned `Ok`, and on CPython would attach a freed
/// `PyThreadState`.
#[test]
fn a_reattach_to_a_finalized_daemon_span_is_refused() {
    on_thread(|| {
        let rt = Arc::new(Runtime::new());
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let g = rt.guard_for(sub).unwrap();
        let t = rt.ensure_with_guard(g).unwrap();
        rt.close_guard(g).unwrap();
        let s = rt.save().unwrap();
        let r2 = rt.clone();
        std::thread::spawn(move || r2.finalize(sub, None).unwrap())
            .join()
            .unwrap();
        assert_eq!(rt.ensure(sub), Err(Error::NoSuchInterpreter));
        let _ = rt.restore(s);
        let _ = rt.release_token(t);
    });
}

/// Another runtime's saved span is not re-attached by this one's ensure,
/// even with colliding raw interpreter ids (a fixed `first_generation`):
/// without the ensure's registry check it was.
#[test]
fn another_runtime_s_saved_span_is_not_reattached() {
    on_thread(|| {
        let o = tstate_core::RuntimeOptions {
            first_generation: 7,
            ..Default::default()
        };
        let a = Runtime::with_options(o);
        let b = Runtime::with_options(o);
        let ma = a.main_interpreter().unwrap();
        let mb = b.main_interpreter().unwrap();
        assert_eq!(ma.as_raw(), mb.as_raw(), "colliding ids");
        a.ensure(ma).unwrap();
        let s = a.save().unwrap();
        b.ensure(mb).unwrap();
        assert!(b.is_attached(mb));
        assert!(!a.is_attached(ma), "b's ensure attached b's main only");
        b.release().unwrap();
        a.restore(s).unwrap();
        a.release().unwrap();
    });
}

/// Another runtime's release does not release this one's counted
/// re-attach span (without the release's registry check it did).
#[test]
fn another_runtime_s_release_does_not_release_a_counted_span() {
    on_thread(|| {
        let a = Runtime::new();
        let b = Runtime::new();
        let ma = a.main_interpreter().unwrap();
        a.ensure(ma).unwrap();
        let s = a.save().unwrap();
        a.ensure(ma).unwrap();
        assert_eq!(b.release(), Err(Error::NotAttached));
        assert!(a.is_attached(ma));
        a.release().unwrap();
        a.restore(s).unwrap();
        a.release().unwrap();
    });
}

/// The release of a counted re-attach span closes the inline block (left
/// open, the header's inline ensure counted a span on a detached thread).
#[test]
fn the_inline_block_is_closed_by_the_reattach_release() {
    on_thread(|| {
        let rt = runtime();
        let main = rt.main_interpreter().unwrap();
        rt.ensure(main).unwrap();
        let s = rt.save().unwrap();
        rt.ensure(main).unwrap();
        assert_eq!(block().0, main.as_raw(), "opened by the fast path");
        rt.release().unwrap();
        assert_eq!(block().0, 0, "closed: nothing attached");
        inline_ensure(&rt, main).unwrap();
        assert!(rt.is_attached(main));
        inline_release(&rt).unwrap();
        rt.restore(s).unwrap();
        rt.release().unwrap();
    });
}

/// A full frame stack: the re-attach takes the slow path (which grows it)
/// and never counts without a free slot (without the capacity check the
/// inline block's room computation underflowed).
#[test]
fn a_reattach_with_a_full_frame_stack_takes_the_slow_path() {
    on_thread(|| {
        let rt = runtime();
        let main = rt.main_interpreter().unwrap();
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        rt.ensure(main).unwrap();
        for _ in 0..7 {
            let id = if rt.is_attached(main) { sub } else { main };
            rt.ensure(id).unwrap();
        }
        let s = rt.save().unwrap();
        rt.ensure(sub).unwrap();
        inline_ensure(&rt, sub).unwrap();
        inline_release(&rt).unwrap();
        rt.release().unwrap();
        rt.restore(s).unwrap();
        for _ in 0..8 {
            rt.release().unwrap();
        }
        assert_eq!(rt.release(), Err(Error::NotAttached));
    });
}
