//! The inline block (`c_abi::InlineState`) that a header's `static inline`
//! nested path reads and writes: spans it counts are the frames the slow
//! path sees (order, misuse, thread exit), and it never counts while it
//! should not. `common::inline` holds the header's two functions, transliterated, over
//! a runtime that exports a block of the test's own.
//! Model backend; each case runs on a fresh thread (a fresh context and a
//! closed block) under a 60 s watchdog.

mod common;

use common::inline::{
    block, block_guard, export, inline_ensure, inline_ensure_guard, inline_ensure_ticket,
    inline_release, inline_release_ticket, inline_release_token, runtime, ticket_block,
    ticket_runtime,
};
use common::watchdog;
use std::time::Duration;
use tstate_core::{Error, LockMode, Runtime};

/// Runs `f` on a new thread under a 60 s watchdog.
fn on_thread(f: impl FnOnce() + Send + 'static) {
    watchdog(60, f);
}

#[test]
fn a_nested_span_is_counted_in_the_block_and_the_outer_release_detaches() {
    on_thread(|| {
        let rt = runtime();
        let main = rt.main_interpreter().unwrap();
        assert_eq!(block(), (0, 0, 0), "closed before any call");
        assert_eq!(inline_ensure(&rt, main), Ok(())); // not attached: the library
        let (open, depth, limit) = block();
        assert_eq!(
            (open, depth),
            (main.as_raw(), 0),
            "opened by the call's end"
        );
        assert!(limit >= 2, "room for nested spans: {limit}");
        for d in 1..=2 {
            assert_eq!(inline_ensure(&rt, main), Ok(()));
            assert_eq!(block().1, d, "counted in the block");
        }
        assert!(rt.is_attached(main));
        for d in (0..2).rev() {
            assert_eq!(inline_release(&rt), Ok(()));
            assert_eq!(block().1, d);
        }
        assert!(rt.is_attached(main), "the outer span is still open");
        assert_eq!(inline_release(&rt), Ok(())); // depth 0: the library
        assert!(!rt.is_attached(main));
        assert_eq!(block().0, 0, "closed: nothing attached");
        assert_eq!(inline_release(&rt), Err(Error::NotAttached));
    });
}

#[test]
fn a_library_call_makes_counted_spans_frames_that_release_in_order() {
    on_thread(|| {
        let rt = runtime();
        let main = rt.main_interpreter().unwrap();
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        rt.ensure(main).unwrap();
        inline_ensure(&rt, main).unwrap();
        inline_ensure(&rt, main).unwrap();
        assert_eq!(block().1, 2);
        // a call into another interpreter: the library sees the two spans
        rt.ensure(sub).unwrap();
        assert_eq!(
            block(),
            (sub.as_raw(), 0, block().2),
            "flushed, reopened on sub"
        );
        assert!(rt.is_attached(sub) && !rt.is_attached(main));
        inline_release(&rt).unwrap(); // sub's span: back on main
        assert!(rt.is_attached(main));
        inline_release(&rt).unwrap(); // the two counted spans, now frames
        inline_release(&rt).unwrap();
        assert!(rt.is_attached(main));
        inline_release(&rt).unwrap(); // the outer span
        assert!(!rt.is_attached(main));
        assert_eq!(rt.release(), Err(Error::NotAttached));
        rt.finalize(sub, None).unwrap();
    });
}

#[test]
fn nesting_past_the_block_s_limit_goes_to_the_library_and_releases_in_order() {
    on_thread(|| {
        let rt = runtime();
        let main = rt.main_interpreter().unwrap();
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        rt.ensure(sub).unwrap();
        rt.ensure(main).unwrap();
        let limit = block().2;
        for _ in 0..limit + 40 {
            inline_ensure(&rt, main).unwrap();
        }
        for _ in 0..limit + 40 {
            inline_release(&rt).unwrap();
            assert!(rt.is_attached(main));
        }
        inline_release(&rt).unwrap(); // main's outer span: back on sub
        assert!(rt.is_attached(sub) && !rt.is_attached(main));
        inline_release(&rt).unwrap();
        assert!(!rt.is_attached(sub));
        assert_eq!(inline_release(&rt), Err(Error::NotAttached));
        rt.finalize(sub, None).unwrap();
    });
}

#[test]
fn a_save_inside_a_counted_span_makes_its_inline_release_out_of_order() {
    on_thread(|| {
        let rt = runtime();
        let main = rt.main_interpreter().unwrap();
        rt.ensure(main).unwrap();
        inline_ensure(&rt, main).unwrap();
        let saved = rt.save().unwrap();
        assert_eq!(block().0, 0, "detached: closed");
        // the inline ensure after a save re-attaches through the library
        inline_ensure(&rt, main).unwrap();
        assert!(rt.is_attached(main));
        inline_release(&rt).unwrap();
        assert!(!rt.is_attached(main));
        // releasing the counted span while the save is open: misuse
        assert_eq!(inline_release(&rt), Err(Error::OutOfOrder));
        rt.restore(saved).unwrap();
        inline_release(&rt).unwrap();
        inline_release(&rt).unwrap();
        assert!(!rt.is_attached(main));
    });
}

#[test]
fn thread_exit_closes_the_spans_the_block_counted() {
    let rt = std::sync::Arc::new(runtime());
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    let before = rt.diagnostics().exit_spans_closed;
    let r = rt.clone();
    on_thread(move || {
        r.ensure(sub).unwrap();
        inline_ensure(&r, sub).unwrap();
        inline_ensure(&r, sub).unwrap();
        assert_eq!(block().1, 2);
        // exits holding three spans, two of them counted in the block
    });
    assert_eq!(rt.diagnostics().exit_spans_closed - before, 3);
    // nothing holds `sub` any more: it finalizes at once
    rt.finalize(sub, Some(Duration::from_secs(5))).unwrap();
}

#[test]
fn a_runtime_without_a_block_never_opens_one() {
    on_thread(|| {
        let rt = Runtime::new();
        let main = rt.main_interpreter().unwrap();
        rt.ensure(main).unwrap();
        assert_eq!(block(), (0, 0, 0));
        rt.release().unwrap();
        assert_eq!(rt.export_inline_state(export()), Ok(()));
        assert_eq!(
            rt.export_inline_state(export()),
            Err(Error::Busy),
            "set once"
        );
    });
}

// ----- a design with tickets (the handle design's block) -------------------

#[test]
fn counted_spans_get_distinct_tickets_released_in_order_only() {
    on_thread(|| {
        let rt = ticket_runtime();
        let main = rt.main_interpreter().unwrap();
        let outer = inline_ensure_ticket(&rt, main).unwrap(); // the library
        assert_eq!(ticket_block().0, main.as_raw());
        let a = inline_ensure_ticket(&rt, main).unwrap();
        let b = inline_ensure_ticket(&rt, main).unwrap();
        assert_eq!(ticket_block().1, 2, "both counted in the block");
        let raws = [outer.to_raw(), a.to_raw(), b.to_raw()];
        assert!(raws[0] != raws[1] && raws[1] != raws[2] && raws[0] != raws[2]);
        // out of order: not the innermost, so the library, which refuses
        // it with nothing changed
        assert_eq!(inline_release_ticket(&rt, a), Err(Error::OutOfOrder));
        assert_eq!(ticket_block().1, 0, "the library call made them frames");
        // the tickets the block made are the frames' own
        inline_release_ticket(&rt, b).unwrap();
        inline_release_ticket(&rt, a).unwrap();
        assert!(rt.is_attached(main));
        inline_release_ticket(&rt, outer).unwrap();
        assert!(!rt.is_attached(main));
    });
}

#[test]
fn a_ticket_released_by_the_block_is_stale_for_the_block_and_the_library() {
    on_thread(|| {
        let rt = ticket_runtime();
        let main = rt.main_interpreter().unwrap();
        let outer = rt.ensure_ticket(main).unwrap();
        let a = inline_ensure_ticket(&rt, main).unwrap();
        inline_release_ticket(&rt, a).unwrap();
        // the next span at the same depth has a new number ...
        let b = inline_ensure_ticket(&rt, main).unwrap();
        assert_ne!(a.to_raw(), b.to_raw());
        // ... and the released one is refused
        assert_eq!(inline_release_ticket(&rt, a), Err(Error::InvalidHandle));
        inline_release_ticket(&rt, b).unwrap();
        // after a library call the library numbers on from the block: a
        // span it opens now does not reuse a number the block gave out
        rt.work(main).unwrap();
        let c = rt.ensure_ticket(main).unwrap();
        assert!(c.to_raw() != a.to_raw() && c.to_raw() != b.to_raw());
        assert_eq!(rt.release_ticket(b), Err(Error::InvalidHandle));
        rt.release_ticket(c).unwrap();
        rt.release_ticket(outer).unwrap();
        assert!(!rt.is_attached(main));
    });
}

#[test]
fn the_library_s_own_fast_path_never_numbers_a_span_while_the_block_does() {
    on_thread(|| {
        let rt = ticket_runtime();
        let main = rt.main_interpreter().unwrap();
        let outer = rt.ensure_ticket(main).unwrap();
        let a = inline_ensure_ticket(&rt, main).unwrap();
        // the core's Rust API on the same runtime: its fast path would
        // number from the context's counter, which the block holds
        assert!(rt.ensure_nested(main, true).is_none(), "declined");
        let b = rt.ensure_ticket(main).unwrap();
        assert_ne!(a.to_raw(), b.to_raw());
        rt.release_ticket(b).unwrap();
        inline_release_ticket(&rt, a).unwrap();
        rt.release_ticket(outer).unwrap();
        assert!(!rt.is_attached(main));
    });
}

#[test]
fn thread_exit_closes_the_spans_a_ticket_block_counted() {
    let rt = std::sync::Arc::new(ticket_runtime());
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    let before = rt.diagnostics().exit_spans_closed;
    let r = rt.clone();
    on_thread(move || {
        r.ensure_ticket(sub).unwrap();
        inline_ensure_ticket(&r, sub).unwrap();
        inline_ensure_ticket(&r, sub).unwrap();
        assert_eq!(ticket_block().1, 2);
    });
    assert_eq!(rt.diagnostics().exit_spans_closed - before, 3);
    rt.finalize(sub, Some(Duration::from_secs(5))).unwrap();
}

// ----- the guard design's block (a ticket block with a guard cache) --------

#[test]
fn a_nested_ensure_under_the_guard_looked_up_last_is_counted_in_the_block() {
    on_thread(|| {
        let rt = ticket_runtime();
        let main = rt.main_interpreter().unwrap();
        let g = rt.guard_for(main).unwrap();
        let outer = inline_ensure_guard(&rt, g).unwrap(); // the library
        assert_eq!(ticket_block().0, main.as_raw());
        assert_eq!(
            block_guard(),
            g.as_raw(),
            "the lookup is cached in the block"
        );
        let a = inline_ensure_guard(&rt, g).unwrap();
        let b = inline_ensure_guard(&rt, g).unwrap();
        assert_eq!(ticket_block().1, 2, "both counted in the block");
        assert!(a != b && a != outer && b != outer);
        inline_release_token(&rt, b).unwrap();
        inline_release_token(&rt, a).unwrap();
        assert_eq!(ticket_block().1, 0);
        assert!(rt.is_attached(main));
        inline_release_token(&rt, outer).unwrap();
        assert!(!rt.is_attached(main));
        assert_eq!((ticket_block().0, block_guard()), (0, 0), "closed");
        rt.close_guard(g).unwrap();
    });
}

#[test]
fn a_guard_closed_on_another_thread_stops_the_block_counting_under_it() {
    on_thread(|| {
        let rt = std::sync::Arc::new(ticket_runtime());
        let main = rt.main_interpreter().unwrap();
        let g = rt.guard_for(main).unwrap();
        let other = rt.guard_for(main).unwrap();
        let outer = inline_ensure_guard(&rt, g).unwrap();
        assert_eq!(block_guard(), g.as_raw());
        // another guard closed elsewhere (no call on this thread): the
        // block's lookup is no longer trusted, the library looks again
        let r = rt.clone();
        std::thread::spawn(move || r.close_guard(other).unwrap())
            .join()
            .unwrap();
        let a = inline_ensure_guard(&rt, g).unwrap();
        inline_release_token(&rt, a).unwrap();
        // the guard itself closed elsewhere: refused, nothing counted
        let r = rt.clone();
        std::thread::spawn(move || r.close_guard(g).unwrap())
            .join()
            .unwrap();
        assert_eq!(
            block_guard(),
            g.as_raw(),
            "no call here: the block still names it"
        );
        assert_eq!(inline_ensure_guard(&rt, g), Err(Error::InvalidHandle));
        assert_eq!(ticket_block().1, 0, "nothing counted for a closed guard");
        inline_release_token(&rt, outer).unwrap();
        assert!(!rt.is_attached(main));
    });
}

#[test]
fn counted_guard_spans_become_frames_and_a_guard_of_another_interpreter_is_the_library_s() {
    on_thread(|| {
        let rt = ticket_runtime();
        let main = rt.main_interpreter().unwrap();
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let (gm, gs) = (rt.guard_for(main).unwrap(), rt.guard_for(sub).unwrap());
        let outer = inline_ensure_guard(&rt, gm).unwrap();
        let a = inline_ensure_guard(&rt, gm).unwrap();
        assert_eq!(ticket_block().1, 1);
        // another interpreter's guard: the library (a's span becomes a
        // frame), which detaches main; the block reopens on sub with gs
        let s = inline_ensure_guard(&rt, gs).unwrap();
        assert_eq!(ticket_block(), (sub.as_raw(), 0, ticket_block().2));
        assert_eq!(block_guard(), gs.as_raw());
        assert!(rt.is_attached(sub) && !rt.is_attached(main));
        let s2 = inline_ensure_guard(&rt, gs).unwrap();
        assert_eq!(ticket_block().1, 1);
        // gm is not the cached guard now: the library
        let m2 = inline_ensure_guard(&rt, gm).unwrap();
        assert!(rt.is_attached(main));
        assert_eq!(inline_release_token(&rt, s2), Err(Error::OutOfOrder));
        inline_release_token(&rt, m2).unwrap();
        inline_release_token(&rt, s2).unwrap();
        inline_release_token(&rt, s).unwrap();
        assert!(rt.is_attached(main));
        inline_release_token(&rt, a).unwrap();
        inline_release_token(&rt, outer).unwrap();
        assert!(!rt.is_attached(main));
        rt.close_guard(gs).unwrap();
        rt.close_guard(gm).unwrap();
        rt.finalize(sub, Some(Duration::from_secs(5))).unwrap();
    });
}
