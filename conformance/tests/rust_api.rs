//! The Rust API of every design (`tstate_ffi_<design>::rust`, issue 15) on
//! both backends, with the same types: the shared surface (typed ids,
//! main/current, create with a lock mode, finalize with a bound and its
//! holders, work, the attached check, save/restore, diagnostics, typed
//! refusals) and each design's own guards, on the model in this process
//! and on every CPython 3.9–3.13 found, each (version, design) in a child
//! process of this test binary under a watchdog (CPython is initialized
//! once per process).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tstate_conformance::pythons;
use tstate_core::c_abi::SharedAbi;
use tstate_core::rust_api::{Attached, FacadeRuntime, deferred};
use tstate_core::{BackendKind, Error, InterpreterId, InterpreterState, LockMode};

/// One design's Rust API, as far as the shared scenario needs it.
trait Design {
    const NAME: &'static str;
    const ABI: &'static SharedAbi;
    const RT: FacadeRuntime;
    fn attach<R>(
        interp: InterpreterId,
        f: impl for<'a> FnOnce(&Attached<'a>) -> R,
    ) -> Result<R, Error>;
    /// The design's own RAII forms: a span on `main`, a nested one on `sub`
    /// (main detached meanwhile), a save inside, released in order.
    fn guards(main: InterpreterId, sub: InterpreterId);
}

/// `impl Design for $ty` over crate `$krate`, with the design's own guards.
macro_rules! design {
    ($ty:ident, $name:literal, $krate:ident, |$main:ident, $sub:ident| $guards:block) => {
        struct $ty;
        impl Design for $ty {
            const NAME: &'static str = $name;
            const ABI: &'static SharedAbi = &$krate::SHARED_ABI;
            const RT: FacadeRuntime = $krate::rust::RUNTIME;
            fn attach<R>(
                i: InterpreterId,
                f: impl for<'a> FnOnce(&Attached<'a>) -> R,
            ) -> Result<R, Error> {
                $krate::rust::attach(i, f)
            }
            fn guards($main: InterpreterId, $sub: InterpreterId) $guards
        }
    };
}

design!(Ensure, "ensure", tstate_ffi_ensure, |main, sub| {
    // closures only: nesting is nested closures
    Self::attach(main, |m| {
        Self::attach(sub, |s| {
            assert!(s.is_attached() && !m.is_attached());
            assert!(!s.detach(|| Self::RT.is_attached(sub)).unwrap());
        })
        .unwrap();
        assert!(m.is_attached());
    })
    .unwrap();
    // a panic inside still closes the span
    let r = std::panic::catch_unwind(|| Self::attach(sub, |_| panic!("inside")));
    assert!(r.is_err() && Self::RT.current().is_none());
});

design!(Handle, "handle", tstate_ffi_handle, |main, sub| {
    let mut m = tstate_ffi_handle::rust::ensure(main).unwrap();
    let mut s = m.ensure(sub).unwrap();
    assert!(s.is_attached() && !Self::RT.is_attached(main));
    s.save().unwrap().restore().unwrap();
    s.release().unwrap();
    assert!(m.is_attached());
    m.release().unwrap();
    // unconnected guards dropped out of order: deferred, then released
    let a = tstate_ffi_handle::rust::ensure(main).unwrap();
    let b = tstate_ffi_handle::rust::ensure(sub).unwrap();
    drop(a);
    assert!(deferred() == 1 && b.is_attached());
    drop(b);
});

design!(Activate, "activate", tstate_ffi_activate, |main, sub| {
    use tstate_ffi_activate::rust::ThreadState;
    let (mut a, mut b) = (
        ThreadState::new(main).unwrap(),
        ThreadState::new(sub).unwrap(),
    );
    let mut outer = a.activate().unwrap();
    let mut inner = outer.activate(&mut b).unwrap();
    assert!(inner.is_attached() && !Self::RT.is_attached(main));
    inner.save().unwrap().restore().unwrap();
    inner.deactivate().unwrap();
    assert!(outer.is_attached());
    outer.deactivate().unwrap();
    b.delete().unwrap();
    // a leaked activation: dropping the thread state deactivates it first
    std::mem::forget(a.activate().unwrap());
    assert!(Self::RT.is_attached(main));
    drop(a);
});

design!(Guard, "guard", tstate_ffi_guard, |main, sub| {
    use tstate_ffi_guard::rust::View;
    let gm = View::for_interpreter(main).unwrap().guard().unwrap();
    let gs = View::for_interpreter(sub).unwrap().guard().unwrap();
    let mut outer = gm.ensure().unwrap();
    let mut inner = outer.ensure(&gs).unwrap();
    assert!(inner.is_attached() && !Self::RT.is_attached(main));
    inner.save().unwrap().restore().unwrap();
    inner.release().unwrap();
    assert!(outer.is_attached());
    outer.release().unwrap();
    // unconnected tokens released out of order: deferred, then released
    let a = gm.ensure().unwrap();
    let b = gs.ensure().unwrap();
    assert_eq!(a.release(), Err(Error::OutOfOrder));
    drop(b);
    gs.close().unwrap();
    gm.close().unwrap();
});

/// Finalize with a bound while another thread holds `sub` (detached inside
/// its span): `Timeout` naming it; new spans refused `Finalizing`; then it
/// completes and `sub` is gone.
fn finalize_with_a_holder<D: Design>(sub: InterpreterId) {
    let (inside_tx, inside_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        D::attach(sub, |t| {
            t.detach(move || {
                inside_tx.send(()).unwrap();
                go_rx.recv().unwrap();
            })
        })
    });
    inside_rx.recv().unwrap();
    let e = D::RT
        .finalize(sub, Some(Duration::from_millis(30)))
        .unwrap_err();
    assert_eq!(e.error, Error::Timeout, "{}", D::NAME);
    assert!(!e.holders.is_empty() && e.holders.iter().any(|h| h.spans >= 1));
    assert_eq!(
        D::RT.interpreter_state(sub),
        Ok(InterpreterState::Finalizing)
    );
    assert_eq!(D::attach(sub, |_| ()), Err(Error::Finalizing));
    go_tx.send(()).unwrap();
    holder.join().unwrap().unwrap().unwrap();
    D::RT.finalize(sub, None).unwrap();
    assert_eq!(D::attach(sub, |_| ()), Err(Error::NoSuchInterpreter));
    assert_eq!(D::RT.interpreter_state(sub), Err(Error::NoSuchInterpreter));
}

/// The shared surface of `D`'s Rust API on whatever backend it runs on.
fn surface<D: Design>() {
    let rt = D::RT;
    let main = rt.main_interpreter().unwrap();
    assert!(!rt.is_attached(main));
    assert_eq!(rt.current_interpreter(), Err(Error::NotAttached));
    let n = D::attach(main, |t| {
        assert!(t.is_attached() && rt.is_attached(main));
        assert_eq!(rt.current_interpreter(), Ok(main));
        assert_eq!(rt.current().map(|c| c.1), Some(main));
        assert!(!t.detach(|| rt.is_attached(main)).unwrap());
        assert!(t.is_attached());
        t.work().unwrap()
    })
    .unwrap();
    assert!(rt.work_count(main).unwrap() >= n);
    assert_eq!(rt.current(), None);

    let backend = rt.backend().unwrap();
    let mut modes = vec![LockMode::SharedWithMain];
    if backend.supports(LockMode::Own) {
        modes.push(LockMode::Own);
    }
    for mode in modes {
        let sub = rt.create_interpreter(mode).unwrap();
        D::guards(main, sub);
        assert_eq!((rt.current(), deferred()), (None, 0), "{}", D::NAME);
        finalize_with_a_holder::<D>(sub);
    }
    let d = rt.diagnostics().unwrap();
    assert_eq!((d.exclusion_violations, d.work_after_finalize), (0, 0));
}

/// Out of memory is a typed refusal too (model only: fault injection is the
/// model's).
fn out_of_memory<D: Design>() {
    let sub = D::RT.create_interpreter(LockMode::SharedWithMain).unwrap();
    D::RT.fail_allocations(0, 1);
    let refused = D::attach(sub, |_| ());
    D::RT.fail_allocations(0, 0);
    assert_eq!(refused, Err(Error::NoMemory), "{}", D::NAME);
    assert_eq!(D::attach(sub, |t| t.work().is_ok()), Ok(true));
    D::RT.finalize(sub, None).unwrap();
}

fn on_the_model<D: Design>() {
    assert_eq!(D::RT.backend().unwrap().kind, BackendKind::Model);
    surface::<D>();
    out_of_memory::<D>();
}

/// One test for all four (fault injection is runtime-wide, so nothing else
/// of this binary uses the facades in this process).
#[test]
fn every_design_on_the_model() {
    on_the_model::<Ensure>();
    on_the_model::<Handle>();
    on_the_model::<Activate>();
    on_the_model::<Guard>();
}

const CHILD_ENV: &str = "TSTATE_RUST_API_CHILD";
const LIBPYTHON_ENV: &str = "TSTATE_RUST_API_LIBPYTHON";
const CHILD_OK: &str = "RUST_API_CHILD_OK";

fn in_child<D: Design>() {
    let lib = std::env::var(LIBPYTHON_ENV).expect("libpython named");
    let path = std::ffi::CString::new(lib).unwrap();
    // SAFETY: a NUL-terminated path; RTLD_GLOBAL makes libpython's symbols
    // visible to the facade's `dlsym(RTLD_DEFAULT, …)`.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    assert!(!h.is_null(), "dlopen libpython");
    D::RT.initialize().unwrap(); // Py_InitializeEx(0); main registered
    let b = D::RT.backend().unwrap();
    assert_eq!(b.kind, BackendKind::CPython);
    // the main thread (attached by Py_InitializeEx) lets the others in
    let mut ts = 0u64;
    // SAFETY: `ts` is valid for a write.
    assert_eq!(unsafe { (D::ABI.save_thread)(&mut ts) }, 0);
    surface::<D>();
    println!("{CHILD_OK} {} on CPython {:?}", D::NAME, b.python_version);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: ends the process at once (no CPython finalization, no
    // destructors): the verdict is printed.
    unsafe { libc::_exit(0) }
}

/// The child's entry (a no-op in a normal run: it acts only when the parent
/// below runs this binary with `TSTATE_RUST_API_CHILD=<design>`).
#[test]
fn cpython_child() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("ensure") => in_child::<Ensure>(),
        Ok("handle") => in_child::<Handle>(),
        Ok("activate") => in_child::<Activate>(),
        Ok("guard") => in_child::<Guard>(),
        Ok(other) => panic!("unknown design {other}"),
        Err(_) => {}
    }
}

/// Runs this binary's `cpython_child` for `design` on `libpython`, killing
/// it after `watchdog`; `Err` with its output unless it printed its verdict
/// and exited 0.
fn run_child(design: &str, libpython: &std::path::Path, watchdog: Duration) -> Result<(), String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cpython_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, design)
        .env(LIBPYTHON_ENV, libpython)
        .env("TSTATE_BACKEND", "cpython")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let t0 = Instant::now();
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if t0.elapsed() > watchdog {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("HANG: killed after {watchdog:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    if o.status.success() && stdout.contains(CHILD_OK) {
        Ok(())
    } else {
        Err(format!(
            "{}: {stdout}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

#[test]
fn every_design_on_every_cpython_found() {
    let found = pythons::find();
    eprintln!("CPython versions: {}", pythons::summary(&found));
    assert!(
        found.iter().any(|p| p.version == (3, 11)),
        "CPython 3.11 with a shared libpython is expected on this machine kind"
    );
    let mut failures = Vec::new();
    for py in &found {
        for design in ["ensure", "handle", "activate", "guard"] {
            let t0 = Instant::now();
            let r = run_child(design, &py.libpython, Duration::from_secs(60));
            eprintln!(
                "CPython {} {design:>8}: {} in {:.2} s",
                py.short(),
                if r.is_ok() { "pass" } else { "FAIL" },
                t0.elapsed().as_secs_f64()
            );
            if let Err(e) = r {
                failures.push(format!("CPython {} {design}: {e}", py.short()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_readme_quotes_every_rust_example_verbatim() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for design in ["ensure", "handle", "activate", "guard"] {
        let path = format!("ffi-{design}/examples/{design}.rs");
        let example = std::fs::read_to_string(root.join(&path)).unwrap();
        assert!(
            readme.contains(&format!("```rust\n{example}```")),
            "README.md must quote {path} verbatim in a ```rust block"
        );
    }
}
