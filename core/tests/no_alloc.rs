//! The fast paths allocate nothing (issue 2, item 13): nested ensure/release,
//! re-attach after save, and a pool thread's repeated top-level
//! ensure/release (the kept thread state is reset, not reallocated).
//! Proved with a counting global allocator, on this test binary's threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
mod common;

use tstate_core::{LockMode, Runtime};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    /// Bytes allocated minus bytes freed by this thread.
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; the only
// addition is a thread-local counter that itself never allocates (const
// init, `Cell<u64>`), and `try_with` tolerates calls during TLS teardown.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        let _ = LIVE.try_with(|c| c.set(c.get() + l.size() as i64));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let _ = LIVE.try_with(|c| c.set(c.get() - l.size() as i64));
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        let _ = LIVE.try_with(|c| c.set(c.get() + n as i64 - l.size() as i64));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

#[test]
fn repeated_fresh_nested_and_reattach_paths_allocate_nothing() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    // warm up: this thread's first use creates its per-thread tables and
    // its kept thread states (allocations expected once)
    for id in [main, sub] {
        let t = rt.ensure(id).unwrap();
        let n = rt.ensure(id).unwrap();
        let s = rt.save().unwrap();
        rt.restore(s).unwrap();
        rt.release_ticket(n).unwrap();
        rt.release_ticket(t).unwrap();
    }
    let before = allocs();
    for _ in 0..1000 {
        // C: fresh top-level ensure/release
        let t = rt.ensure(main).unwrap();
        // A: nested
        let n = rt.ensure(main).unwrap();
        rt.release_ticket(n).unwrap();
        // B: nogil re-entry
        let s = rt.save().unwrap();
        let r = rt.ensure(main).unwrap();
        rt.release_ticket(r).unwrap();
        rt.restore(s).unwrap();
        // switch to another interpreter and back
        let o = rt.ensure(sub).unwrap();
        rt.release_ticket(o).unwrap();
        rt.release_ticket(t).unwrap();
    }
    assert_eq!(
        allocs() - before,
        0,
        "allocations on the ensure/release paths"
    );
}

/// A thread that keeps using short-lived interpreters (each created,
/// entered, left and finalized) keeps its per-thread tables bounded: the
/// records of finalized interpreters are pruned, also when the prune that
/// first saw them had to leave one for later because a span still used it,
/// and with them the spare record a deleted thread state left.
#[test]
fn a_thread_cycling_through_short_lived_interpreters_does_not_grow() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    let cycle = |k: usize| {
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let t = rt.ensure(sub).unwrap();
        rt.release_ticket(t).unwrap();
        // a deleted explicit thread state leaves its record as the
        // thread's spare: it must not keep the finalized `sub` alive
        let ts = rt.new_thread_state(sub).unwrap();
        rt.activate(ts).unwrap();
        rt.deactivate(ts).unwrap();
        rt.delete_thread_state(ts).unwrap();
        if k % 2 == 0 {
            // finalized while this thread is inside a span of main: the
            // next prune runs with a frame open
            let m = rt.ensure(main).unwrap();
            rt.finalize(sub, None).unwrap();
            rt.release_ticket(m).unwrap();
        } else {
            rt.finalize(sub, None).unwrap();
        }
    };
    for k in 0..64 {
        cycle(k);
    }
    let live = || LIVE.with(Cell::get);
    let before = live();
    for k in 0..2000 {
        cycle(k);
    }
    let grown = live() - before;
    assert!(
        grown < 4096,
        "2,000 create/enter/finalize cycles left {grown} bytes live on this thread"
    );
}

/// The record a deleted thread state leaves for reuse (the thread's spare)
/// does not keep its finalized interpreter alive: when the thread's next
/// first use of an interpreter prunes the gone interpreter's entry, the
/// spare goes with it, so the thread's live bytes come back to where they
/// were before the interpreter was created.
#[test]
fn the_spare_record_goes_with_its_finalized_interpreter() {
    let rt = Runtime::new();
    let live = || LIVE.with(Cell::get);
    for _ in 0..4 {
        // warm up this thread's tables and the registry's; the ensure
        // takes the spare the delete left (its record is pruned, not
        // deleted, so it leaves none): no spare is left to compensate
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        let ts = rt.new_thread_state(sub).unwrap();
        rt.delete_thread_state(ts).unwrap();
        let t = rt.ensure(sub).unwrap();
        rt.release_ticket(t).unwrap();
        rt.finalize(sub, None).unwrap();
    }
    // a first use that fails after its prune (the allocation point after
    // it is refused) prunes and creates nothing: the next new thread state
    // cannot consume the spare and hide it
    let probe = rt.create_interpreter(LockMode::Own).unwrap();
    let prune = || {
        rt.fail_allocations(0, 1);
        let r = rt.ensure(probe);
        rt.fail_allocations(0, 0);
        assert!(matches!(r, Err(tstate_core::Error::NoMemory)));
    };
    prune();
    let before = live();
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    let ts = rt.new_thread_state(sub).unwrap();
    rt.activate(ts).unwrap();
    rt.deactivate(ts).unwrap();
    rt.delete_thread_state(ts).unwrap(); // its record becomes the spare
    rt.finalize(sub, None).unwrap();
    prune(); // removes `sub`'s entry, and with it the spare
    let left = live() - before;
    assert!(
        left <= 0,
        "a finalized interpreter's spare record kept {left} bytes live"
    );
}

/// The explicit design's idiom, a thread state per task: New + Activate +
/// Deactivate + Delete, on the main interpreter and on a subinterpreter,
/// nested in a span of another interpreter and not. After the first cycle
/// on an interpreter, each New writes into the record the thread's last
/// Delete left (the thread's spare record), so the cycle
/// allocates nothing.
#[test]
fn the_explicit_design_s_new_and_delete_reuse_the_deleted_record() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    let cycle = |rt: &Runtime, id| {
        let ts = rt.new_thread_state(id).unwrap();
        rt.activate(ts).unwrap();
        rt.work(id).unwrap();
        rt.deactivate(ts).unwrap();
        rt.delete_thread_state(ts).unwrap();
        ts
    };
    let round = |rt: &Runtime| {
        cycle(rt, main);
        cycle(rt, sub);
        // inside a span of the other interpreter
        let t = rt.ensure(main).unwrap();
        cycle(rt, sub);
        rt.release_ticket(t).unwrap();
    };
    round(&rt); // warm up: this thread's tables and the first records
    cycle(&rt, main);
    let before = allocs();
    let mut last = None;
    for _ in 0..1000 {
        round(&rt);
        last = Some(cycle(&rt, main));
    }
    assert_eq!(allocs() - before, 0, "allocations per New + Delete");
    // a reused record still gets a new id: the deleted one stays stale
    let stale = last.unwrap();
    let fresh = rt.new_thread_state(main).unwrap();
    assert_ne!(fresh, stale);
    assert_eq!(rt.activate(stale), Err(tstate_core::Error::InvalidHandle));
    rt.activate(fresh).unwrap();
    rt.deactivate(fresh).unwrap();
    rt.delete_thread_state(fresh).unwrap();
}

/// Under `ReusePolicy::DeleteOnRelease` (CPython's `PyGILState_Release`
/// behaviour) a pool thread's top-level ensure/release deletes its thread
/// state every time; the deleted record becomes the thread's spare, so the
/// next ensure's new thread state (a new id) is written into it and the
/// cycle allocates nothing on the model (CPython allocates its own
/// `PyThreadState` regardless).
#[test]
fn delete_on_release_ensure_reuses_the_deleted_record() {
    let rt = Runtime::with_options(tstate_core::RuntimeOptions {
        reuse: tstate_core::ReusePolicy::DeleteOnRelease,
        ..Default::default()
    });
    let main = rt.main_interpreter().unwrap();
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    let round = |rt: &Runtime| {
        for id in [main, sub] {
            let t = rt.ensure(id).unwrap();
            rt.release_ticket(t).unwrap();
        }
    };
    round(&rt); // warm up: this thread's tables and the first records
    let before = allocs();
    for _ in 0..1000 {
        round(&rt);
    }
    assert_eq!(allocs() - before, 0, "allocations per ensure + release");
}

/// The guard design with a guard the caller keeps (PEP 788's idiom):
/// `Ensure(guard)` + `Release(token)` nested (A), on a thread holding
/// nothing (C) and after a save (B) allocate nothing, whether the guard's
/// interpreter comes from the thread's cache or the guard table.
#[test]
fn the_guard_design_s_ensure_under_a_kept_guard_allocates_nothing() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    let g = rt.guard_for(main).unwrap();
    let g2 = rt.guard_for(main).unwrap();
    let round = |rt: &Runtime| {
        // C, then A inside it
        let t = rt.ensure_with_guard(g).unwrap();
        let n = rt.ensure_with_guard(g).unwrap();
        rt.release_token(n).unwrap();
        // B
        let s = rt.save().unwrap();
        let r = rt.ensure_with_guard(g).unwrap();
        rt.release_token(r).unwrap();
        rt.restore(s).unwrap();
        // another guard: looked up in the table, not the cache
        let o = rt.ensure_with_guard(g2).unwrap();
        rt.release_token(o).unwrap();
        rt.release_token(t).unwrap();
    };
    round(&rt); // warm up: this thread's tables and kept thread state
    let before = allocs();
    for _ in 0..1000 {
        round(&rt);
    }
    assert_eq!(allocs() - before, 0, "allocations under a kept guard");
    rt.close_guard(g2).unwrap();
    rt.close_guard(g).unwrap();
}

/// The guard design's `EnsureFromView` + `Release` (what Cython's `with gil`
/// would generate with a view it keeps): on a thread holding nothing (C),
/// nested in another span (A) and after a save (B), each call opens and
/// closes a guard and allocates nothing. The guard's holder record takes
/// the thread's identity from its context: before, it read the thread's
/// name per call into a new `String` (one allocation, and a `prctl`).
#[test]
fn ensure_from_view_allocates_nothing() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    let v = rt.view_for(main).unwrap();
    let round = |rt: &Runtime| {
        let t = rt.ensure_from_view(v).unwrap();
        let n = rt.ensure_from_view(v).unwrap();
        rt.release_token(n).unwrap();
        let s = rt.save().unwrap();
        let r = rt.ensure_from_view(v).unwrap();
        rt.release_token(r).unwrap();
        rt.restore(s).unwrap();
        rt.release_token(t).unwrap();
    };
    let check = |rt: &Runtime, what: &str| {
        // warm up: the thread's context, kept thread state and the guard
        // table's first slots
        for _ in 0..4 {
            round(rt);
        }
        let before = allocs();
        for _ in 0..1000 {
            round(rt);
        }
        assert_eq!(
            allocs() - before,
            0,
            "allocations by EnsureFromView on {what}"
        );
    };
    check(&rt, "a named thread");
    std::thread::scope(|s| {
        s.spawn(|| {
            // a thread inherits its creator's name: clear it, so that this
            // thread's context records none
            // SAFETY: names the calling thread; the string is NUL-terminated.
            let rc = unsafe { libc::pthread_setname_np(libc::pthread_self(), c"".as_ptr()) };
            assert_eq!(rc, 0);
            check(&rt, "an unnamed thread");
        });
    });
    rt.close_view(v).unwrap();
}

/// Spans counted by the header's inline path and by the library's own fast
/// path at once become frames, at the next library call, without an
/// allocation: the fast path leaves the inline block's share of the free
/// frame slots alone (`Fast::reserved`). Both are filled to their limits.
#[test]
fn inline_and_fast_path_counts_become_frames_without_allocating() {
    use common::inline::{block, inline_ensure, inline_release, runtime};
    common::watchdog(60, || {
        let rt = runtime();
        let main = rt.main_interpreter().unwrap();
        rt.ensure(main).unwrap();
        let limit = block().2;
        assert!(limit > 0);
        for _ in 0..limit {
            inline_ensure(&rt, main).unwrap();
        }
        assert_eq!(block().1, limit, "all counted inline");
        let mut fast = 0;
        while rt.ensure_nested(main, false).is_some() {
            fast += 1;
            assert!(fast < 100, "the fast path's count is bounded");
        }
        assert!(fast > 0, "the fast path counted too");
        let before = allocs();
        rt.work(main).unwrap(); // a library call: every count becomes a frame
        assert_eq!(allocs() - before, 0, "{limit} inline + {fast} fast spans");
        for _ in 0..limit + fast {
            inline_release(&rt).unwrap();
        }
        assert!(rt.is_attached(main));
        inline_release(&rt).unwrap();
        assert!(!rt.is_attached(main));
    });
}

/// The guard design's block: spans counted under the cached guard (a
/// ticket block) become frames at the next library call without
/// allocating, and the cached lookup costs the library nothing either.
#[test]
fn guard_block_counts_become_frames_without_allocating() {
    use common::inline::{block_guard, inline_ensure_guard, inline_release_token, ticket_block};
    common::watchdog(60, || {
        let rt = common::inline::ticket_runtime();
        let main = rt.main_interpreter().unwrap();
        let g = rt.guard_for(main).unwrap();
        let outer = rt.ensure_with_guard(g).unwrap();
        assert_eq!(block_guard(), g.as_raw());
        let limit = ticket_block().2;
        assert!(limit > 0);
        let before = allocs();
        let tokens: Vec<_> = (0..limit)
            .map(|_| inline_ensure_guard(&rt, g).unwrap())
            .collect::<Vec<_>>();
        let after_counting = allocs();
        assert_eq!(ticket_block().1, limit, "all counted inline");
        let before_flush = allocs();
        rt.work(main).unwrap(); // a library call: every count becomes a frame
        assert_eq!(allocs() - before_flush, 0, "{limit} guard spans flushed");
        assert_eq!(block_guard(), g.as_raw(), "reopened with the cached guard");
        for t in tokens.into_iter().rev() {
            inline_release_token(&rt, t).unwrap();
        }
        rt.release_token(outer).unwrap();
        // the tokens' vector is the test's own (one allocation)
        assert_eq!(after_counting - before, 1, "counting allocates nothing");
        assert!(!rt.is_attached(main));
        rt.close_guard(g).unwrap();
    });
}

/// The nested spans the fast path counts inside a counted re-attach span
/// leave its frame slot free, so the flush that pushes them all allocates
/// nothing (without the pending slot in the nested count, one span too
/// many was counted and the flush grew the frame stack: an allocation on
/// a path documented as never allocating, past the fault injection).
#[test]
fn reattach_and_nested_counts_flush_without_allocating() {
    common::watchdog(60, || {
        let rt = Runtime::new();
        let main = rt.main_interpreter().unwrap();
        rt.ensure(main).unwrap();
        let s = rt.save().unwrap();
        rt.ensure(main).unwrap();
        let mut k = 0;
        while rt.ensure_nested(main, false).is_some() {
            k += 1;
        }
        assert!(k > 0, "the fast path counted nested spans");
        let before = allocs();
        rt.work(main).unwrap(); // a slow call: the flush
        assert_eq!(allocs() - before, 0, "{k} nested + 1 re-attach");
        for _ in 0..k + 1 {
            rt.release().unwrap();
        }
        rt.restore(s).unwrap();
        rt.release().unwrap();
    });
}
