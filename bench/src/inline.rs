//! Case A through the ensure design's inline nested path
//! (`tse_ensure_inline` + `tse_release_inline`, `static inline` in
//! `tstate_ensure.h`), looped in C (`bench/c/inline_loop.c`), three ways
//! (see `build.rs`): linked into this executable, and from a shared object
//! loaded with `dlopen`, in the default TLS model and initial-exec.

use std::ffi::CString;
use std::time::{Duration, Instant};
use tstate_ffi_ensure::{tse_ensure, tse_inline_state, tse_release};

/// `TSB_LOOP(interp, iters)`: `iters` inline ensure + release pairs on a
/// thread attached to `interp`; returns how many ensures failed.
type Loop = unsafe extern "C" fn(interp: u64, iters: u64) -> u64;

unsafe extern "C" {
    fn tsb_inline_static(interp: u64, iters: u64) -> u64;
}

/// The loop of `libtsb_inline_<name>.so`, loaded once per process.
fn loaded(name: &str) -> Loop {
    let path = format!("{}/libtsb_inline_{name}.so", env!("TSB_INLINE_DIR"));
    let cpath = CString::new(path.clone()).expect("no NUL in the path");
    let sym = CString::new(format!("tsb_inline_{name}")).expect("no NUL");
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

/// Times `iters` pairs of `l` inside an outer span of `interp`.
fn nested(l: Loop, iters: u64, interp: u64) -> Duration {
    // SAFETY: NULL errmsg is allowed.
    assert_eq!(unsafe { tse_ensure(interp, std::ptr::null_mut()) }, 0);
    // SAFETY: this thread's block, read between library calls.
    let open = unsafe { (*tse_inline_state()).open };
    assert_eq!(open, interp, "the inline block is open on the interpreter");
    let t0 = Instant::now();
    // SAFETY: `l` takes two integers; the thread is attached to `interp`.
    let failed = unsafe { l(interp, iters) };
    let d = t0.elapsed();
    tse_release();
    assert_eq!(failed, 0, "every inline ensure succeeded");
    d
}

/// Linked into this executable (local-exec TLS).
pub fn linked(iters: u64, interp: u64) -> Duration {
    nested(tsb_inline_static, iters, interp)
}

/// From a `dlopen`ed shared object, default TLS model.
pub fn dlopened(iters: u64, interp: u64) -> Duration {
    nested(loaded("dl"), iters, interp)
}

/// From a `dlopen`ed shared object built with
/// `TSTATE_INLINE_INITIAL_EXEC`.
pub fn dlopened_initial_exec(iters: u64, interp: u64) -> Duration {
    nested(loaded("ie"), iters, interp)
}
