//! What the three C facades share, so that each exported function is a
//! one-line translation: the panic boundary, pointer checks, the C-layout
//! report types, and the bodies of the runtime functions every header offers
//! (main interpreter, create, finalize, save/restore, work, the attached
//! check, messages, fault injection, diagnostics).
//!
//! All of them act on [`Runtime::global`], the process-wide runtime.
//!
//! Conventions (documented in every header):
//! * return `0` (or a documented non-negative value) on success, a negative
//!   [`Error`] code on failure;
//! * a NULL required pointer gives `InvalidArgument`; out-parameters are
//!   written only on success;
//! * a panic never crosses the boundary: it becomes `Panic` (-11).

use crate::error::{Error, Result};
use crate::runtime::Runtime;
use crate::types::{
    Diagnostics, InterpreterId, InterpreterState, LockMode, SpanKind, ThreadStateId,
};
use std::ffi::{c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Panics still to inject at the next boundaries (test hook).
static INJECT_PANICS: AtomicU32 = AtomicU32::new(0);

/// Makes the next `n` calls through [`boundary`] panic inside (to test that
/// no panic crosses the ABI). Process-wide.
pub fn inject_panics(n: u32) {
    INJECT_PANICS.store(n, Ordering::Relaxed);
}

#[cold]
fn maybe_injected_panic() {
    let mut n = INJECT_PANICS.load(Ordering::Relaxed);
    while n > 0 {
        match INJECT_PANICS.compare_exchange(n, n - 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => panic!("tstate: injected panic"),
            Err(x) => n = x,
        }
    }
}

/// Runs `f`, turning an error into its code and a panic into `Panic`.
#[inline]
pub fn boundary(f: impl FnOnce() -> Result<i32>) -> i32 {
    let r = catch_unwind(AssertUnwindSafe(|| {
        if INJECT_PANICS.load(Ordering::Relaxed) != 0 {
            maybe_injected_panic();
        }
        f()
    }));
    match r {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => e.code(),
        Err(_) => Error::Panic.code(),
    }
}

/// Like [`boundary`] for functions whose result is not an `int`; a panic
/// gives `on_panic`.
#[inline]
pub fn boundary_or<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(|| {
        if INJECT_PANICS.load(Ordering::Relaxed) != 0 {
            maybe_injected_panic();
        }
        f()
    }))
    .unwrap_or(on_panic)
}

/// Writes `v` through `out` after checking it is not NULL.
///
/// # Safety
/// `out` must be NULL or valid for a write of `T` (caller's contract,
/// documented on every exported function).
#[inline]
pub unsafe fn put<T>(out: *mut T, v: T) -> Result<()> {
    if out.is_null() {
        return Err(Error::InvalidArgument);
    }
    // SAFETY: non-NULL checked above; validity is the caller's contract.
    unsafe { out.write(v) };
    Ok(())
}

/// A C return value as a `Result`: negative → the [`Error`] of that code
/// (unknown negative codes read as `Panic`), else the value. For Rust layers
/// over a facade's C functions.
pub fn check(r: c_int) -> Result<c_int> {
    if r < 0 {
        Err(Error::from_code(r).unwrap_or(Error::Panic))
    } else {
        Ok(r)
    }
}

/// The shape of every "result through an out-parameter" function: refuse a
/// NULL `out` before doing anything (so a refused call changes nothing),
/// run `f`, and write its value only on success.
///
/// # Safety
/// `out` must be NULL or valid for a write of `T`.
pub unsafe fn out_param<T>(out: *mut T, f: impl FnOnce() -> Result<T>) -> i32 {
    boundary(|| {
        non_null(out)?;
        let v = f()?;
        // SAFETY: non-NULL checked above; validity is the caller's contract.
        unsafe { out.write(v) };
        Ok(0)
    })
}

/// Fails with `InvalidArgument` if `p` is NULL (checked before any work, so
/// that a refused call changes nothing).
#[inline]
pub fn non_null<T>(p: *const T) -> Result<()> {
    if p.is_null() {
        Err(Error::InvalidArgument)
    } else {
        Ok(())
    }
}

fn rt() -> &'static Runtime {
    Runtime::global()
}

/// A timeout in milliseconds from C: negative = wait without bound.
fn timeout(ms: i64) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

/// One holder, as C sees it (see [`crate::Holder`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CHolder {
    /// The runtime's number for the thread.
    pub thread_number: u64,
    /// The OS thread id (Linux `gettid`), 0 if unknown.
    pub os_thread_id: u64,
    /// 0 = ensure, 1 = activate (kind of the outermost span).
    pub kind: u32,
    /// Spans the thread has open on the interpreter.
    pub spans: u32,
    /// How long it has held the interpreter open, in microseconds (coarse).
    pub held_for_us: u64,
}

/// Body of `*_main_interpreter(uint64_t *out)`.
///
/// # Safety
/// `out`: NULL or valid for a write.
pub unsafe fn main_interpreter(out: *mut u64) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { out_param(out, || rt().main_interpreter().map(InterpreterId::as_raw)) }
}

/// Body of `*_create_interpreter(uint32_t mode, uint64_t *out)`.
///
/// # Safety
/// `out`: NULL or valid for a write.
pub unsafe fn create_interpreter(mode: u32, out: *mut u64) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        out_param(out, || {
            let mode = LockMode::from_raw(mode).ok_or(Error::InvalidArgument)?;
            rt().create_interpreter(mode).map(InterpreterId::as_raw)
        })
    }
}

/// Body of `*_interpreter_state(uint64_t id)`: 0 running, 1 finalizing.
pub fn interpreter_state(id: u64) -> i32 {
    boundary(|| {
        Ok(match rt().interpreter_state(InterpreterId::from_raw(id))? {
            InterpreterState::Running => 0,
            InterpreterState::Finalizing => 1,
        })
    })
}

/// Body of `*_finalize(uint64_t id, int64_t timeout_ms)`.
pub fn finalize(id: u64, timeout_ms: i64) -> i32 {
    boundary(|| {
        rt().finalize(InterpreterId::from_raw(id), timeout(timeout_ms))?;
        Ok(0)
    })
}

/// Body of `*_finalize_all(int64_t timeout_ms)`.
pub fn finalize_all(timeout_ms: i64) -> i32 {
    boundary(|| {
        rt().finalize_all(timeout(timeout_ms))?;
        Ok(0)
    })
}

/// Body of `*_holders(id, buf, cap, *count)`: writes up to `cap` holders
/// into `buf` and the total number into `*count` (so a caller can retry
/// with a larger buffer). `buf` may be NULL when `cap` is 0.
///
/// # Safety
/// `buf`: valid for `cap` writes (or NULL with `cap == 0`); `count`: NULL or
/// valid for a write.
pub unsafe fn holders(id: u64, buf: *mut CHolder, cap: usize, count: *mut usize) -> i32 {
    boundary(|| {
        non_null(count)?;
        if cap > 0 {
            non_null(buf)?;
        }
        let hs = rt().holders(InterpreterId::from_raw(id))?;
        for (i, h) in hs.iter().take(cap).enumerate() {
            let c = CHolder {
                thread_number: h.thread_number,
                os_thread_id: h.os_thread_id,
                kind: u32::from(h.kind == SpanKind::Activate),
                spans: h.spans,
                held_for_us: u64::try_from(h.held_for.as_micros()).unwrap_or(u64::MAX),
            };
            // SAFETY: i < cap and buf is valid for cap writes (contract).
            unsafe { buf.add(i).write(c) };
        }
        // SAFETY: caller's contract.
        unsafe { put(count, hs.len()) }?;
        Ok(0)
    })
}

/// Body of `*_save_thread(uint64_t *ts)`.
///
/// # Safety
/// `out`: NULL or valid for a write.
pub unsafe fn save_thread(out: *mut u64) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { out_param(out, || rt().save().map(ThreadStateId::as_raw)) }
}

/// Body of `*_restore_thread(uint64_t ts)`.
pub fn restore_thread(ts: u64) -> i32 {
    boundary(|| {
        rt().restore(ThreadStateId::from_raw(ts))?;
        Ok(0)
    })
}

/// Body of `*_work(uint64_t id, uint64_t *value)`; `value` may be NULL.
///
/// # Safety
/// `value`: NULL or valid for a write.
pub unsafe fn work(id: u64, value: *mut u64) -> i32 {
    boundary(|| {
        let v = rt().work(InterpreterId::from_raw(id))?;
        if !value.is_null() {
            // SAFETY: non-NULL; validity is the caller's contract.
            unsafe { value.write(v) };
        }
        Ok(0)
    })
}

/// Body of `*_work_count(uint64_t id, uint64_t *value)`.
///
/// # Safety
/// `value`: NULL or valid for a write.
pub unsafe fn work_count(id: u64, value: *mut u64) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { out_param(value, || rt().work_count(InterpreterId::from_raw(id))) }
}

/// Body of `*_is_attached(uint64_t id)`: 1 or 0 (never an error).
pub fn is_attached(id: u64) -> i32 {
    boundary_or(0, || {
        i32::from(rt().is_attached(InterpreterId::from_raw(id)))
    })
}

/// Body of `*_current(uint64_t *ts, uint64_t *interp)`: 1 and both written
/// if a thread state is attached, 0 (nothing written) if none. Either
/// pointer may be NULL.
///
/// # Safety
/// Each pointer: NULL or valid for a write.
pub unsafe fn current(ts: *mut u64, interp: *mut u64) -> i32 {
    boundary(|| match rt().current() {
        None => Ok(0),
        Some((t, i)) => {
            if !ts.is_null() {
                // SAFETY: non-NULL; validity is the caller's contract.
                unsafe { ts.write(t.as_raw()) };
            }
            if !interp.is_null() {
                // SAFETY: non-NULL; validity is the caller's contract.
                unsafe { interp.write(i.as_raw()) };
            }
            Ok(1)
        }
    })
}

/// Body of `*_error_message(int code)`: a static NUL-terminated string for
/// any `int` (unknown codes get "unknown error code"); never NULL.
pub fn error_message(code: i32) -> *const c_char {
    Error::c_message_for_code(code).as_ptr()
}

/// Body of `*_scratch_set(uint64_t v)`.
pub fn scratch_set(v: u64) -> i32 {
    boundary(|| rt().set_scratch(v).map(|()| 0))
}

/// Body of `*_scratch_get(uint64_t *v)`.
///
/// # Safety
/// `v`: NULL or valid for a write.
pub unsafe fn scratch_get(v: *mut u64) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { out_param(v, || rt().scratch()) }
}

/// Body of `*_fail_allocations(uint32_t skip, uint32_t fail)`.
pub fn fail_allocations(skip: u32, fail: u32) {
    boundary_or((), || rt().fail_allocations(skip, fail));
}

/// Body of `*_diagnostics(Diagnostics *out)`.
///
/// # Safety
/// `out`: NULL or valid for a write.
pub unsafe fn diagnostics(out: *mut Diagnostics) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { out_param(out, || Ok(rt().diagnostics())) }
}

/// The signature of a fatal-error hook: `code` and its static message.
pub type FatalHook = extern "C" fn(code: i32, message: *const c_char);

/// A replaceable fatal-error hook for `void` functions that can be misused
/// (like `Py_FatalError`): the default prints and aborts; a test may install
/// one that records and returns, in which case the misused call returns
/// having changed nothing.
pub struct FatalHookCell {
    hook: std::sync::atomic::AtomicPtr<()>,
    name: &'static str,
}

impl FatalHookCell {
    /// A cell whose default hook prints `Fatal tstate error in <name>`.
    pub const fn new(name: &'static str) -> Self {
        Self {
            hook: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
            name,
        }
    }

    /// Installs `hook` (NULL restores the default) and returns the previous
    /// one (NULL if it was the default).
    pub fn set(&self, hook: Option<FatalHook>) -> Option<FatalHook> {
        let new = hook.map_or(std::ptr::null_mut(), |h| h as *mut ());
        let old = self.hook.swap(new, Ordering::AcqRel);
        // SAFETY: only values stored by this function are ever in the cell:
        // NULL or a `FatalHook` function pointer cast to `*mut ()`, and
        // function pointers round-trip through data pointers on every
        // platform Rust's C ABI supports with this layout.
        (!old.is_null()).then(|| unsafe { std::mem::transmute::<*mut (), FatalHook>(old) })
    }

    /// Reports `e` through the hook (default: print and abort).
    pub fn report(&self, e: Error) {
        let p = self.hook.load(Ordering::Acquire);
        if p.is_null() {
            eprintln!(
                "Fatal tstate error in {}: {} (code {})",
                self.name,
                e,
                e.code()
            );
            std::process::abort();
        }
        // SAFETY: see `set`: a non-NULL value is a `FatalHook`.
        let h = unsafe { std::mem::transmute::<*mut (), FatalHook>(p) };
        h(e.code(), e.c_message().as_ptr());
    }
}

/// Renders the shared part of a facade (`src/shared.rs`) from the one
/// template, for facade `name` (`"ensure"`) with C prefix `prefix`
/// (`"tse"`). The facades' generated files are checked against this by
/// `conformance/tests/generated.rs`.
pub fn render_shared_abi(name: &str, prefix: &str) -> String {
    include_str!("../templates/shared_abi.rs.in")
        .replace("__p__", prefix)
        .replace("__P__", &prefix.to_ascii_uppercase())
        .replace("__f__", name)
}

/// A facade's shared runtime functions as a table of its exported C
/// functions, so a Rust driver (the conformance suite) can call any facade
/// through its C ABI. Each facade exports one as `SHARED_ABI`.
#[allow(missing_docs)]
pub struct SharedAbi {
    pub main_interpreter: unsafe extern "C" fn(*mut u64) -> c_int,
    pub create_interpreter: unsafe extern "C" fn(u32, *mut u64) -> c_int,
    pub interpreter_state: extern "C" fn(u64) -> c_int,
    pub finalize: extern "C" fn(u64, i64) -> c_int,
    pub finalize_all: extern "C" fn(i64) -> c_int,
    pub holders: unsafe extern "C" fn(u64, *mut CHolder, usize, *mut usize) -> c_int,
    pub save_thread: unsafe extern "C" fn(*mut u64) -> c_int,
    pub restore_thread: extern "C" fn(u64) -> c_int,
    pub work: unsafe extern "C" fn(u64, *mut u64) -> c_int,
    pub work_count: unsafe extern "C" fn(u64, *mut u64) -> c_int,
    pub is_attached: extern "C" fn(u64) -> c_int,
    pub current: unsafe extern "C" fn(*mut u64, *mut u64) -> c_int,
    pub error_message: extern "C" fn(c_int) -> *const c_char,
    pub scratch_set: extern "C" fn(u64) -> c_int,
    pub scratch_get: unsafe extern "C" fn(*mut u64) -> c_int,
    pub fail_allocations: extern "C" fn(u32, u32),
    pub inject_panics: extern "C" fn(u32),
    pub diagnostics: unsafe extern "C" fn(*mut Diagnostics) -> c_int,
}
