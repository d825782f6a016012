//! Running one case: serialized (the facades share one process-wide
//! runtime and its fault injection), under a watchdog, with panics caught.

use crate::facade::{Code, Facade, Shared};
use std::sync::Mutex;
use std::time::Duration;
use tstate_core::Error;

/// Why a case did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// An assertion failed (the message says which and with what values).
    Fail(String),
    /// The design cannot express the case; the reason says why.
    NotApplicable(&'static str),
}

impl From<Code> for Failure {
    fn from(c: Code) -> Self {
        fail(format!("unexpected code {c} ({})", code_name(c)))
    }
}

/// Set in a child process (`crate::child`): every failure is also printed
/// at once, so that a case that crashes or hangs afterwards (in its
/// cleanup) still tells what went wrong first.
pub static ECHO_FAILURES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A failure with `msg` (echoed on stdout as `FAILED\t<msg>` in a child).
pub fn fail(msg: String) -> Failure {
    if ECHO_FAILURES.load(std::sync::atomic::Ordering::Relaxed) {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "FAILED\t{}", msg.replace(['\n', '\t'], " "));
        let _ = o.flush();
    }
    Failure::Fail(msg)
}

/// What a case function returns.
pub type CaseResult = Result<(), Failure>;

/// A case's verdict for one facade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every assertion held.
    Pass,
    /// With the reason.
    Fail(String),
    /// With the reason the design cannot express it.
    NotApplicable(&'static str),
}

/// The name of a code (`FINALIZING`, …).
pub fn code_name(c: Code) -> String {
    match Error::from_code(c) {
        Some(e) => format!("{e:?}"),
        None if c == 0 => "OK".into(),
        None => format!("unknown {c}"),
    }
}

/// One case of the list, instantiated for a facade.
pub struct Case {
    /// Named after what it proves.
    pub name: &'static str,
    /// The case body.
    pub run: fn() -> CaseResult,
}

/// Bound on one case; a case still running then is reported as hung.
pub const WATCHDOG: Duration = Duration::from_secs(120);

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `case` for facade `F`: one at a time, fault injection reset before
/// and after, a panic in the case (or one of its threads, re-raised by join)
/// is a failure, and so is running past [`WATCHDOG`].
pub fn run_case<F: Facade>(case: &Case) -> Outcome {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    F::fail_allocations(0, 0);
    F::inject_panics(0);
    let run = case.run;
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("case-{}-{}", F::NAME, case.name))
        .spawn(move || {
            let r = std::panic::catch_unwind(run);
            let _ = tx.send(r);
        });
    let handle = match spawned {
        Ok(h) => h,
        Err(e) => return Outcome::Fail(format!("could not spawn the case thread: {e}")),
    };
    let received = rx.recv_timeout(WATCHDOG);
    if received.is_ok() {
        // Wait for the thread to be gone, thread-exit destructors included,
        // so that nothing of this case overlaps the next one.
        let _ = handle.join();
    }
    let outcome = match received {
        Ok(Ok(Ok(()))) => Outcome::Pass,
        Ok(Ok(Err(Failure::Fail(m)))) => Outcome::Fail(m),
        Ok(Ok(Err(Failure::NotApplicable(r)))) => Outcome::NotApplicable(r),
        Ok(Err(p)) => Outcome::Fail(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("?")
        )),
        Err(_) => Outcome::Fail(format!("hung: still running after {WATCHDOG:?}")),
    };
    F::fail_allocations(0, 0);
    F::inject_panics(0);
    outcome
}

/// Fails the case unless `cond`.
#[macro_export]
macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Err($crate::runner::fail(format!(
                "line {}: {}",
                line!(),
                stringify!($cond)
            )));
        }
    };
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::runner::fail(format!(
                "line {}: {}: {}",
                line!(),
                stringify!($cond),
                format!($($msg)+)
            )));
        }
    };
}

/// Fails the case unless `a == b`, showing both.
#[macro_export]
macro_rules! check_eq {
    ($a:expr, $b:expr) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err($crate::runner::fail(format!(
                "line {}: {} == {:?}, expected {} == {:?}",
                line!(),
                stringify!($a),
                a,
                stringify!($b),
                b
            )));
        }
    }};
}

/// Fails unless `r` is `Err(code)`, naming both codes.
pub fn expect_code<T: std::fmt::Debug>(r: Result<T, Code>, want: Error, what: &str) -> CaseResult {
    match r {
        Err(c) if c == want.code() => Ok(()),
        other => Err(fail(format!(
            "{what}: got {}, expected {want:?}",
            match other {
                Ok(v) => format!("Ok({v:?})"),
                Err(c) => code_name(c),
            }
        ))),
    }
}

/// Fails unless `r` is `Err(c)` with `c` one of `allowed`.
pub fn expect_one_of<T: std::fmt::Debug>(
    r: Result<T, Code>,
    allowed: &[Error],
    what: &str,
) -> CaseResult {
    match r {
        Err(c) if allowed.iter().any(|e| e.code() == c) => Ok(()),
        other => Err(fail(format!(
            "{what}: got {}, expected one of {allowed:?}",
            match other {
                Ok(v) => format!("Ok({v:?})"),
                Err(c) => code_name(c),
            }
        ))),
    }
}

/// A subinterpreter that is finalized when the case ends (so cases leave
/// the shared runtime as they found it).
pub struct Sub<F: Facade> {
    /// Its id.
    pub id: u64,
    _f: std::marker::PhantomData<F>,
}

impl<F: Facade> Sub<F> {
    /// Creates one with `mode` (0 own lock, 1 shared, 2 none).
    pub fn new(mode: u32) -> Result<Self, Failure> {
        Ok(Self {
            id: F::create(mode)?,
            _f: std::marker::PhantomData,
        })
    }

    /// The lock mode cases use when the mode does not matter: its own lock
    /// where the backend can create one, else shared with main.
    pub fn any_mode() -> u32 {
        if F::supports(0) { 0 } else { 1 }
    }

    /// Creates one of [`any_mode`](Self::any_mode).
    pub fn any() -> Result<Self, Failure> {
        Self::new(Self::any_mode())
    }
}

impl<F: Facade> Drop for Sub<F> {
    fn drop(&mut self) {
        let _ = F::finalize(self.id, 5000);
    }
}

/// Runs `f` on a new native thread and returns its result (a panic there is
/// re-raised here).
pub fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match std::thread::spawn(f).join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Scale factor for race cases: `TSTATE_CONFORMANCE_SCALE` (default 1).
pub fn scale() -> usize {
    std::env::var("TSTATE_CONFORMANCE_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}
