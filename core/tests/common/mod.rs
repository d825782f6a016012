//! Shared helpers for the core's integration tests.
#![allow(dead_code)]

pub mod inline;

use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on its own thread and fails the test if it has not finished
/// within `secs` seconds (instead of hanging CI). Panics inside `f` are
/// re-raised.
pub fn watchdog<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::Builder::new()
        .name("watched".into())
        .spawn(move || {
            let r = f();
            let _ = tx.send(());
            r
        })
        .expect("spawn");
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => h.join().expect("watched thread panicked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: scenario did not finish within {secs} s (hang)")
        }
    }
}

/// Iteration count for race tests: the default is bounded for CI; set
/// `TSTATE_STRESS_SCALE=N` to multiply it for a longer soak.
pub fn scaled(n: usize) -> usize {
    let k: usize = std::env::var("TSTATE_STRESS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    n * k.max(1)
}

/// Waits for `pid`, failing if it does not exit within `secs` (the child
/// arms `alarm` too, so a hang there ends as SIGALRM).
pub fn wait_child(pid: libc::pid_t, secs: u64) -> i32 {
    let t0 = std::time::Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return status;
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("child hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
