//! Case A through the headers' inline nested paths (`tse_ensure_inline` +
//! `tse_release_inline` in `tstate_ensure.h`, `tsh_ensure_inline` +
//! `tsh_release_inline` in `tstate_handle.h`, `tsg_ensure_inline` +
//! `tsg_release_inline` in `tstate_guard.h`, `tsa_is_attached_inline` in
//! `tstate_activate.h`), looped in C
//! (`bench/c/inline_loop.c`), three ways (see `build.rs`): linked into this
//! executable, and from a shared object loaded with `dlopen`, in the
//! default TLS model and initial-exec.

use std::ffi::CString;
use std::time::{Duration, Instant};
use tstate_core::c_abi::InlineState;
use tstate_ffi_activate::{tsa_activate, tsa_deactivate, tsa_delete, tsa_inline_state, tsa_new};
use tstate_ffi_ensure::{tse_ensure, tse_inline_state, tse_release};
use tstate_ffi_guard::{
    tsg_ensure, tsg_guard_close, tsg_guard_from_view, tsg_inline_state, tsg_release,
    tsg_view_close, tsg_view_from_interpreter,
};
use tstate_ffi_handle::{tsh_ensure, tsh_inline_state, tsh_release};

/// `TSB_LOOP(interp, iters)`: `iters` inline ensure + release pairs on a
/// thread attached to `interp`; returns how many ensures failed.
type Loop = unsafe extern "C" fn(interp: u64, iters: u64) -> u64;

unsafe extern "C" {
    fn tsb_inline_static_ensure(interp: u64, iters: u64) -> u64;
    fn tsb_inline_static_handle(interp: u64, iters: u64) -> u64;
    fn tsb_inline_static_activate(interp: u64, iters: u64) -> u64;
    fn tsb_inline_static_guard(guard: u64, iters: u64) -> u64;
}

/// The `design` loop of `libtsb_inline_<name>.so`, loaded once per process.
fn loaded(name: &str, design: &str) -> Loop {
    let path = format!("{}/libtsb_inline_{name}.so", env!("TSB_INLINE_DIR"));
    let cpath = CString::new(path.clone()).expect("no NUL in the path");
    let sym = CString::new(format!("tsb_inline_{name}_{design}")).expect("no NUL");
    // SAFETY: a NUL-terminated path; the object has no constructors beyond
    // the C runtime's. It stays loaded (never dlclose'd).
    let h = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!h.is_null(), "dlopen {path} failed");
    // SAFETY: `h` is a live handle; the name is NUL-terminated.
    let f = unsafe { libc::dlsym(h, sym.as_ptr()) };
    assert!(!f.is_null(), "{path} has no {sym:?}");
    // SAFETY: the symbol is `TSB_LOOP` of inline_loop.c, of type `Loop`.
    unsafe { std::mem::transmute::<*mut libc::c_void, Loop>(f) }
}

/// Times `iters` operations of `l` between `open`, which must leave the
/// thread attached to `interp` with its inline block (`block()`) open on
/// it, and `close`.
fn around<S>(
    l: Loop,
    iters: u64,
    interp: u64,
    block: extern "C" fn() -> *mut InlineState,
    open: impl FnOnce() -> S,
    close: impl FnOnce(S),
) -> Duration {
    let s = open();
    // SAFETY: this thread's block, read between library calls.
    let o = unsafe { (*block()).open };
    assert_eq!(o, interp, "the inline block is open on the interpreter");
    let d = timed(l, iters, interp);
    close(s);
    d
}

/// The ensure design's `l` inside an outer span of `interp`.
fn nested(l: Loop, iters: u64, interp: u64) -> Duration {
    around(
        l,
        iters,
        interp,
        tse_inline_state,
        // SAFETY: NULL errmsg is allowed.
        || assert_eq!(unsafe { tse_ensure(interp, std::ptr::null_mut()) }, 0),
        |()| tse_release(),
    )
}

/// The handle design's `l` inside an outer span of `interp`.
fn nested_handle(l: Loop, iters: u64, interp: u64) -> Duration {
    around(
        l,
        iters,
        interp,
        tsh_inline_state,
        || {
            // SAFETY: NULL errmsg is allowed.
            let h = unsafe { tsh_ensure(interp, std::ptr::null_mut()) };
            assert!(h > 0);
            h
        },
        |h| assert_eq!(tsh_release(h), 0),
    )
}

/// The explicit design's `l` (is-attached checks) with a thread state of
/// `interp` active (New + Activate, as its idiom's outer code does).
fn nested_activate(l: Loop, iters: u64, interp: u64) -> Duration {
    around(
        l,
        iters,
        interp,
        tsa_inline_state,
        || {
            let mut ts = std::ptr::null_mut();
            // SAFETY: valid out-pointer.
            assert_eq!(unsafe { tsa_new(interp, &mut ts) }, 0);
            assert_eq!(tsa_activate(ts), 0);
            ts
        },
        |ts| {
            assert_eq!(tsa_deactivate(ts), 0);
            assert_eq!(tsa_delete(ts), 0);
        },
    )
}

/// The guard design's `l` under a guard of `interp` the thread keeps,
/// inside an outer span of it (PEP 788's idiom: take the guard once, ensure
/// under it many times).
fn nested_guard(l: Loop, iters: u64, interp: u64) -> Duration {
    let v = tsg_view_from_interpreter(interp);
    assert!(!v.is_null());
    let g = tsg_guard_from_view(v);
    assert!(!g.is_null());
    let outer = tsg_ensure(g);
    assert!(!outer.is_null());
    // SAFETY: this thread's block, read between library calls.
    let (o, cached) = unsafe { ((*tsg_inline_state()).open, (*tsg_inline_state()).guard) };
    assert_eq!(o, interp, "the inline block is open on the interpreter");
    assert_eq!(cached, g as usize as u64, "the block caches the guard");
    let d = timed(l, iters, g as usize as u64);
    tsg_release(outer);
    tsg_guard_close(g);
    tsg_view_close(v);
    d
}

fn timed(l: Loop, iters: u64, interp: u64) -> Duration {
    let t0 = Instant::now();
    // SAFETY: `l` takes two integers; the thread is attached to `interp`.
    let failed = unsafe { l(interp, iters) };
    let d = t0.elapsed();
    assert_eq!(failed, 0, "every inline ensure and release succeeded");
    d
}

/// Linked into this executable (local-exec TLS).
pub fn linked(iters: u64, interp: u64) -> Duration {
    nested(tsb_inline_static_ensure, iters, interp)
}

/// From a `dlopen`ed shared object, default TLS model.
pub fn dlopened(iters: u64, interp: u64) -> Duration {
    nested(loaded("dl", "ensure"), iters, interp)
}

/// From a `dlopen`ed shared object built with
/// `TSTATE_INLINE_INITIAL_EXEC`.
pub fn dlopened_initial_exec(iters: u64, interp: u64) -> Duration {
    nested(loaded("ie", "ensure"), iters, interp)
}

/// The handle design's, linked into this executable.
pub fn handle_linked(iters: u64, interp: u64) -> Duration {
    nested_handle(tsb_inline_static_handle, iters, interp)
}

/// The handle design's, from a `dlopen`ed shared object (default TLS).
pub fn handle_dlopened(iters: u64, interp: u64) -> Duration {
    nested_handle(loaded("dl", "handle"), iters, interp)
}

/// The handle design's, from a `dlopen`ed initial-exec shared object.
pub fn handle_dlopened_initial_exec(iters: u64, interp: u64) -> Duration {
    nested_handle(loaded("ie", "handle"), iters, interp)
}

/// The explicit design's is-attached check, linked into this executable.
pub fn activate_linked(iters: u64, interp: u64) -> Duration {
    nested_activate(tsb_inline_static_activate, iters, interp)
}

/// The same from a `dlopen`ed shared object (default TLS).
pub fn activate_dlopened(iters: u64, interp: u64) -> Duration {
    nested_activate(loaded("dl", "activate"), iters, interp)
}

/// The same from a `dlopen`ed initial-exec shared object.
pub fn activate_dlopened_initial_exec(iters: u64, interp: u64) -> Duration {
    nested_activate(loaded("ie", "activate"), iters, interp)
}

/// The guard design's `Ensure(guard)` + `Release`, linked into this
/// executable.
pub fn guard_linked(iters: u64, interp: u64) -> Duration {
    nested_guard(tsb_inline_static_guard, iters, interp)
}

/// The same from a `dlopen`ed shared object (default TLS).
pub fn guard_dlopened(iters: u64, interp: u64) -> Duration {
    nested_guard(loaded("dl", "guard"), iters, interp)
}

/// The same from a `dlopen`ed initial-exec shared object.
pub fn guard_dlopened_initial_exec(iters: u64, interp: u64) -> Duration {
    nested_guard(loaded("ie", "guard"), iters, interp)
}
