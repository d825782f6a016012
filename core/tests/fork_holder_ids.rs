//! In the child of a `fork()`, the forking thread has a new OS thread id,
//! and holder reports name it by that id: its open span's record (kept in
//! the child) and a guard it opens there. The thread's identity is read
//! once per thread and shared by its records (`ThreadInfo`); before, the
//! child reported the parent's id for both (found in review).
//!
//! Its own test binary, one test: `fork()` in a process with other test
//! threads running would copy their state too.

mod common;
use common::wait_child;
use tstate_core::{LockMode, Runtime, SpanKind};

#[test]
fn holders_in_a_fork_child_name_the_child_s_thread() {
    let rt = Runtime::new();
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    // the thread's context (and identity) exists before the fork, with a
    // span open across it
    let t = rt.ensure(sub).unwrap();
    let s = rt.save().unwrap();
    // SAFETY: the child only runs the checks below and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: alarm only arms a signal for this (child) process.
        unsafe { libc::alarm(10) };
        // SAFETY: gettid takes no arguments and cannot fail.
        let me = u64::try_from(unsafe { libc::gettid() }).unwrap();
        let g = rt.guard_for(sub).unwrap();
        let ids = |kind: SpanKind| -> Vec<u64> {
            rt.holders(sub)
                .unwrap()
                .into_iter()
                .filter(|h| h.kind == kind)
                .map(|h| h.os_thread_id)
                .collect()
        };
        let (spans, guards) = (ids(SpanKind::Ensure), ids(SpanKind::Guard));
        eprintln!("child {me}: span holders {spans:?}, guard holders {guards:?}");
        let code = if spans != [me] {
            2
        } else if guards != [me] {
            3
        } else {
            0
        };
        let _ = rt.close_guard(g);
        // SAFETY: ends the child without running the parent's test harness.
        unsafe { libc::_exit(code) };
    }
    let status = wait_child(pid, 20);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status} (exit 2: a span holder, 3: a guard holder named by another id)"
    );
    rt.restore(s).unwrap();
    rt.release_ticket(t).unwrap();
}
