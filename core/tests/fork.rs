//! Defect 5 of the correctness audit (issue 9): `fork()` while another
//! thread is attached. The child inherits the interpreters but not the other
//! threads: their spans and locks must not outlive them in the child.
//!
//! Its own test binary, one test: `fork()` in a process with other test
//! threads running would copy their state too.

mod common;
use common::wait_child;
use std::sync::{Arc, mpsc};
use std::time::Duration;
use tstate_core::{LockMode, Runtime};

#[test]
fn d05_fork_child_does_not_inherit_spans_or_locks_of_threads_that_do_not_exist() {
    let rt = Arc::new(Runtime::new());
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let rt2 = rt.clone();
    // another thread attached to `sub` (holding its lock) across the fork
    let other = std::thread::spawn(move || {
        let t = rt2.ensure(sub).unwrap();
        ready_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        rt2.release_ticket(t).unwrap();
    });
    ready_rx.recv().unwrap();
    // SAFETY: the child only runs the scenario below and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: alarm only arms a signal for this (child) process.
        unsafe { libc::alarm(10) };
        let code = (|| {
            let d = rt.diagnostics();
            if d.open_holds != 0 {
                return 2; // the parent's other thread's hold was inherited
            }
            let t = match rt.ensure(sub) {
                Ok(t) => t, // would block forever on the vanished holder's lock
                Err(_) => return 3,
            };
            if rt.work(sub).is_err() || rt.release_ticket(t).is_err() {
                return 4;
            }
            match rt.finalize_all(Some(Duration::from_secs(2))) {
                Ok(()) => 0,
                Err(_) => 5, // timed out naming a thread that does not exist
            }
        })();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let status = wait_child(pid, 20);
    go_tx.send(()).unwrap();
    other.join().unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child: exited={} code={} signal={}",
        libc::WIFEXITED(status),
        libc::WEXITSTATUS(status),
        libc::WTERMSIG(status)
    );
    // the parent is unaffected
    assert_eq!(rt.diagnostics().open_holds, 0);
    assert_eq!(rt.finalize(sub, Some(Duration::from_secs(2))), Ok(()));
}
