//! The fast paths allocate nothing (issue 2, item 13): nested ensure/release,
//! re-attach after save, and a pool thread's repeated top-level
//! ensure/release (the kept thread state is reset, not reallocated).
//! Proved with a counting global allocator, on this test binary's threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use tstate_core::{LockMode, Runtime};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; the only
// addition is a thread-local counter that itself never allocates (const
// init, `Cell<u64>`), and `try_with` tolerates calls during TLS teardown.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
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
