//! What the C facades share, so that each exported function is a
//! one-line translation: the panic boundary, pointer checks, the C-layout
//! report types, and the bodies of the runtime functions every header offers
//! (main interpreter, create, finalize, save/restore, work, the attached
//! check, messages, fault injection, diagnostics).
//!
//! All of them act on the calling facade's runtime ([`Facade`]): one per
//! facade library, however it is linked.
//!
//! Conventions (documented in every header):
//! * return `0` (or a documented non-negative value) on success, a negative
//!   [`Error`] code on failure;
//! * a NULL required pointer gives `InvalidArgument`; out-parameters are
//!   written only on success;
//! * a panic never crosses the boundary: it becomes `Panic` (-11).

use crate::cpython::CPython;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::runtime::Runtime;
pub use crate::thread::{INLINE_DEPTH, InlineExport, InlineSlot, InlineState, InlineStep};

/// Declares a facade's inline block: a thread-local `InlineState` with a
/// constant initializer and no destructor (so it is readable for the
/// thread's whole life, thread-exit destructors included), and
/// `fn inline_slot() -> *mut InlineState`, its address on the calling
/// thread (the facade's [`InlineSlot`]). One invocation per facade crate.
#[macro_export]
macro_rules! inline_block {
    () => {
        std::thread_local! {
            static INLINE_BLOCK: std::cell::UnsafeCell<$crate::c_abi::InlineState> =
                const { std::cell::UnsafeCell::new($crate::c_abi::InlineState::CLOSED) };
        }

        /// Where the calling thread's inline block is (never fails: a
        /// constant thread-local without a destructor).
        fn inline_slot() -> *mut $crate::c_abi::InlineState {
            INLINE_BLOCK.with(|b| b.get())
        }
    };
}
pub use inline_block;

/// The mask of a ticket's sequence number (its low 19 bits; the tag is the
/// 12 bits above): a header's inline path that numbers spans wraps at it.
pub const TICKET_SEQ_MASK: u32 = crate::types::Ticket::SEQ_MASK;
use crate::types::{
    BackendKind, Diagnostics, InterpreterId, InterpreterState, LockMode, SpanKind, ThreadStateId,
};
use std::ffi::{c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A facade's runtime: the one its C functions act on.
///
/// **One rule, however the libraries are linked:** each facade library has
/// a runtime of its own (its own gate, spans and ids), statically linked or
/// dynamically. The runtime lives in a `static` of the facade crate (see
/// [`Facade`]), not in this crate, so two facades linked statically into one
/// program (one copy of this crate) keep two runtimes, exactly as two shared
/// libraries (two copies) do. Ids do not cross runtimes: every runtime's
/// generations start at a random base, so an id of another facade answers
/// `NoSuchInterpreter` (a chance of 2⁻³¹ per id that it names one of this
/// runtime's, see [`crate::RuntimeOptions::first_generation`]). On CPython
/// the runtimes share the interpreters, each with its own `atexit` gate.
pub enum Global {
    /// The model (no libpython in the process, or `TSTATE_BACKEND=model`).
    Model(Runtime<Model>),
    /// Real CPython (a libpython is loaded, or `TSTATE_BACKEND=cpython`).
    CPython(&'static Runtime<CPython>),
    /// `TSTATE_BACKEND=cpython` without a usable libpython: every call
    /// answers `Unsupported`.
    Unavailable,
}

impl Global {
    /// A new runtime, its backend chosen now: `TSTATE_BACKEND=model` or
    /// `=cpython` if set, else CPython when a libpython 3.9+ is loaded in
    /// the process (an extension module, an embedder), else the model.
    pub fn choose() -> Global {
        Self::choose_with(None)
    }

    /// As [`choose`](Self::choose), the runtime exporting each thread's
    /// inline blocks as `inline` says if given
    /// ([`Runtime::export_inline_state`]), before any call can reach it.
    pub fn choose_with(inline: Option<InlineExport>) -> Global {
        let cpython = || Runtime::<CPython>::for_this_process().map(Global::CPython);
        let g = match std::env::var("TSTATE_BACKEND").as_deref() {
            Ok("model") => Global::Model(Runtime::new()),
            Ok("cpython") => cpython().unwrap_or(Global::Unavailable),
            _ if crate::cpython::ffi::present() => {
                cpython().unwrap_or_else(|_| Global::Model(Runtime::new()))
            }
            _ => Global::Model(Runtime::new()),
        };
        if let Some(export) = inline {
            // a new runtime: never set before
            let _ = match &g {
                Global::Model(rt) => rt.export_inline_state(export),
                Global::CPython(rt) => rt.export_inline_state(export),
                Global::Unavailable => Ok(()),
            };
        }
        g
    }
}

/// A facade: where its runtime lives. Each facade crate implements this on
/// a type of its own, with the runtime in a `static` of that crate, chosen
/// on first use ([`Global::choose`]):
///
/// ```
/// use tstate_core::c_abi::{Facade, Global};
/// struct MyFacade;
/// impl Facade for MyFacade {
///     fn global() -> &'static Global {
///         static G: std::sync::OnceLock<Global> = std::sync::OnceLock::new();
///         G.get_or_init(Global::choose)
///     }
/// }
/// let mut main = 0u64;
/// // SAFETY: `main` is valid for writing.
/// assert_eq!(unsafe { tstate_core::c_abi::main_interpreter::<MyFacade>(&mut main) }, 0);
/// assert_ne!(main, 0);
/// ```
pub trait Facade {
    /// The facade's runtime (created on first use, never dropped).
    fn global() -> &'static Global;
    /// The runtime if it was chosen already, else `None`; never creates it
    /// (the fast paths use this, outside the panic boundary, so that
    /// creating the runtime stays inside it). The default answers `None`:
    /// a facade that does not override it has no fast path.
    #[inline(always)]
    fn global_if_chosen() -> Option<&'static Global> {
        None
    }
    /// The calling thread's inline block if the facade exports one
    /// ([`InlineExport`]), else NULL (the default).
    #[inline(always)]
    fn inline_block() -> *mut InlineState {
        std::ptr::null_mut()
    }
}

/// Runs `$body` with `$rt` bound to facade `$f`'s runtime, whichever
/// backend it is (the body is compiled once per backend); `Unavailable`
/// gives `Err(Unsupported)`.
#[macro_export]
macro_rules! with_global {
    ($f:ty, $rt:ident => $body:expr) => {
        match <$f as $crate::c_abi::Facade>::global() {
            $crate::c_abi::Global::Model($rt) => $body,
            $crate::c_abi::Global::CPython($rt) => $body,
            $crate::c_abi::Global::Unavailable => Err($crate::Error::Unsupported),
        }
    };
}
pub use with_global;

/// A facade function's fast path, tried before its panic boundary, on
/// either backend: `$body` (an `Option`, with `$rt` bound to facade `$f`'s
/// runtime, compiled once per backend) must neither panic nor allocate nor
/// call back (the runtime's `*_nested` / `*_fast` methods; on CPython they
/// also read CPython's attached thread state, a call into libpython that
/// cannot unwind). The full body, past the boundary, calls the runtime's
/// `*_past_fast_path` methods, which do not try it again. `None` — no
/// answer, no runtime yet, or panics are being injected (so every call
/// reaches the boundary) — means the caller runs its full body.
///
/// On CPython the fast path used to run inside the boundary. Tried before
/// it, nested ensure+release costs 150 instructions instead of 205 (10.6 →
/// 7.7 ns), at 10 more on the model (its exported functions now save
/// registers for the CPython branch's libpython call): `docs/performance.md`,
/// "The nested fast path on CPython".
#[macro_export]
macro_rules! fast_global {
    ($f:ty, $rt:ident => $body:expr) => {
        match <$f as $crate::c_abi::Facade>::global_if_chosen() {
            Some($crate::c_abi::Global::Model($rt)) if $crate::c_abi::fast_paths_open() => $body,
            Some($crate::c_abi::Global::CPython($rt)) if $crate::c_abi::fast_paths_open() => $body,
            _ => None,
        }
    };
}
pub use fast_global;

/// Whether fast paths may answer (off while panics are being injected).
#[inline(always)]
pub fn fast_paths_open() -> bool {
    INJECT_PANICS.load(Ordering::Relaxed) == 0
}

/// Panics still to inject at the next boundaries (test hook).
static INJECT_PANICS: AtomicU32 = AtomicU32::new(0);

/// Makes the next `n` calls through [`boundary`] panic inside (to test that
/// no panic crosses the ABI). Process-wide.
pub fn inject_panics(n: u32) {
    INJECT_PANICS.store(n, Ordering::Relaxed);
}

/// The message of an injected panic (so that a harness can keep this
/// expected noise off its output).
pub const INJECTED_PANIC: &str = "tstate: injected panic";

#[cold]
fn maybe_injected_panic() {
    let mut n = INJECT_PANICS.load(Ordering::Relaxed);
    while n > 0 {
        match INJECT_PANICS.compare_exchange(n, n - 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => std::panic::panic_any(INJECTED_PANIC),
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
    /// 0 = a thread inside an ensure span, 1 = inside an activation, 2 =
    /// an open guard (guard design; `thread_number` is 0, `os_thread_id`
    /// the thread that took it).
    pub kind: u32,
    /// Spans the thread has open on the interpreter.
    pub spans: u32,
    /// How long it has held the interpreter open, in microseconds (coarse).
    pub held_for_us: u64,
}

/// Body of `*_initialize(void)`.
pub fn initialize<F: Facade>() -> i32 {
    boundary(|| with_global!(F, rt => rt.initialize().map(|_| 0)))
}

/// Body of `*_main_interpreter(uint64_t *out)`.
///
/// # Safety
/// `out`: NULL or valid for a write.
pub unsafe fn main_interpreter<F: Facade>(out: *mut u64) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        out_param(
            out,
            || with_global!(F, rt => rt.main_interpreter().map(InterpreterId::as_raw)),
        )
    }
}

/// Body of `*_current_interpreter(uint64_t *out)`.
///
/// # Safety
/// `out`: NULL or valid for a write.
pub unsafe fn current_interpreter<F: Facade>(out: *mut u64) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        out_param(
            out,
            || with_global!(F, rt => rt.current_interpreter().map(InterpreterId::as_raw)),
        )
    }
}

/// Body of `*_create_interpreter(uint32_t mode, uint64_t *out)`.
///
/// # Safety
/// `out`: NULL or valid for a write.
pub unsafe fn create_interpreter<F: Facade>(mode: u32, out: *mut u64) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        out_param(out, || {
            let mode = LockMode::from_raw(mode).ok_or(Error::InvalidArgument)?;
            with_global!(F, rt => rt.create_interpreter(mode).map(InterpreterId::as_raw))
        })
    }
}

/// Body of `*_interpreter_state(uint64_t id)`: 0 running, 1 finalizing.
pub fn interpreter_state<F: Facade>(id: u64) -> i32 {
    boundary(|| {
        Ok(
            match with_global!(F, rt => rt.interpreter_state(InterpreterId::from_raw(id)))? {
                InterpreterState::Running => 0,
                InterpreterState::Finalizing => 1,
            },
        )
    })
}

/// Body of `*_finalize(uint64_t id, int64_t timeout_ms)`.
pub fn finalize<F: Facade>(id: u64, timeout_ms: i64) -> i32 {
    boundary(|| {
        with_global!(F, rt => rt.finalize(InterpreterId::from_raw(id), timeout(timeout_ms)).map_err(|e| e.error))?;
        Ok(0)
    })
}

/// Body of `*_finalize_report(id, timeout_ms, buf, cap, *count)`: as
/// `finalize`; when it returns `TIMEOUT`, up to `cap` holders are written
/// to `buf` and their number to `*count` (0 otherwise). `buf` may be NULL
/// when `cap` is 0.
///
/// # Safety
/// `buf`: valid for `cap` writes (or NULL with `cap == 0`); `count`: NULL or
/// valid for a write.
pub unsafe fn finalize_report<F: Facade>(
    id: u64,
    timeout_ms: i64,
    buf: *mut CHolder,
    cap: usize,
    count: *mut usize,
) -> i32 {
    boundary(|| {
        non_null(count)?;
        if cap > 0 {
            non_null(buf)?;
        }
        let r = with_global!(F, rt => Ok::<_, Error>(rt.finalize(InterpreterId::from_raw(id), timeout(timeout_ms))))?;
        let holders = match &r {
            Err(e) => e.holders.as_slice(),
            Ok(()) => &[],
        };
        // SAFETY: caller's contract.
        unsafe { write_holders(holders, buf, cap, count) }?;
        r.map(|()| 0).map_err(|e| e.error)
    })
}

/// Writes up to `cap` of `hs` to `buf` and their total number to `*count`.
///
/// # Safety
/// As [`finalize_report`].
unsafe fn write_holders(
    hs: &[crate::Holder],
    buf: *mut CHolder,
    cap: usize,
    count: *mut usize,
) -> Result<()> {
    for (i, h) in hs.iter().take(cap).enumerate() {
        let c = CHolder {
            thread_number: h.thread_number,
            os_thread_id: h.os_thread_id,
            kind: match h.kind {
                SpanKind::Ensure => 0,
                SpanKind::Activate => 1,
                SpanKind::Guard => 2,
            },
            spans: h.spans,
            held_for_us: u64::try_from(h.held_for.as_micros()).unwrap_or(u64::MAX),
        };
        // SAFETY: i < cap and buf is valid for cap writes (contract).
        unsafe { buf.add(i).write(c) };
    }
    // SAFETY: caller's contract.
    unsafe { put(count, hs.len()) }
}

/// Body of `*_finalize_all(int64_t timeout_ms)`.
pub fn finalize_all<F: Facade>(timeout_ms: i64) -> i32 {
    boundary(|| {
        with_global!(F, rt => rt.finalize_all(timeout(timeout_ms)).map_err(|e| e.error))?;
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
pub unsafe fn holders<F: Facade>(id: u64, buf: *mut CHolder, cap: usize, count: *mut usize) -> i32 {
    boundary(|| {
        non_null(count)?;
        if cap > 0 {
            non_null(buf)?;
        }
        let hs = with_global!(F, rt => rt.holders(InterpreterId::from_raw(id)))?;
        // SAFETY: caller's contract.
        unsafe { write_holders(&hs, buf, cap, count) }?;
        Ok(0)
    })
}

/// Body of `*_save_thread(uint64_t *ts)`.
///
/// # Safety
/// `out`: NULL or valid for a write.
pub unsafe fn save_thread<F: Facade>(out: *mut u64) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        out_param(
            out,
            || with_global!(F, rt => rt.save().map(ThreadStateId::as_raw)),
        )
    }
}

/// Body of `*_restore_thread(uint64_t ts)`.
pub fn restore_thread<F: Facade>(ts: u64) -> i32 {
    boundary(|| {
        with_global!(F, rt => rt.restore(ThreadStateId::from_raw(ts)))?;
        Ok(0)
    })
}

/// Body of `*_work(uint64_t id, uint64_t *value)`; `value` may be NULL.
///
/// # Safety
/// `value`: NULL or valid for a write.
pub unsafe fn work<F: Facade>(id: u64, value: *mut u64) -> i32 {
    boundary(|| {
        let v = with_global!(F, rt => rt.work(InterpreterId::from_raw(id)))?;
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
pub unsafe fn work_count<F: Facade>(id: u64, value: *mut u64) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        out_param(
            value,
            || with_global!(F, rt => rt.work_count(InterpreterId::from_raw(id))),
        )
    }
}

/// Body of `*_is_attached(uint64_t id)`: 1 or 0 (never an error).
pub fn is_attached<F: Facade>(id: u64) -> i32 {
    let b = F::inline_block();
    if !b.is_null() {
        // SAFETY: this thread's block, filled by the library only; no
        // library call runs on this thread (an exported function's start).
        match unsafe { (*b).attached_uncalled(id) } {
            InlineStep::Done => return 1,
            InlineStep::Check => return is_attached_checked::<F>(b, id),
            InlineStep::Library => {}
        }
    }
    if let Some(a) = fast_global!(F, rt => rt.is_attached_fast(InterpreterId::from_raw(id))) {
        return i32::from(a);
    }
    is_attached_slow::<F>(id)
}

/// `is_attached` where the block must check the backend's thread state.
#[inline(never)]
fn is_attached_checked<F: Facade>(b: *mut InlineState, id: u64) -> i32 {
    // SAFETY: as in `is_attached`; `current` is the backend's C function.
    if unsafe { (*b).try_attached(id) } {
        return 1;
    }
    if let Some(a) = fast_global!(F, rt => rt.is_attached_fast(InterpreterId::from_raw(id))) {
        return i32::from(a);
    }
    is_attached_slow::<F>(id)
}

#[inline(never)]
fn is_attached_slow<F: Facade>(id: u64) -> i32 {
    boundary_or(0, || {
        i32::from(
            with_global!(F, rt => Ok::<_, Error>(rt.is_attached_past_fast_path(InterpreterId::from_raw(id))))
                .unwrap_or(false),
        )
    })
}

/// Body of `*_current(uint64_t *ts, uint64_t *interp)`: 1 and both written
/// if a thread state is attached, 0 (nothing written) if none. Either
/// pointer may be NULL.
///
/// # Safety
/// Each pointer: NULL or valid for a write.
pub unsafe fn current<F: Facade>(ts: *mut u64, interp: *mut u64) -> i32 {
    boundary(
        || match with_global!(F, rt => Ok::<_, Error>(rt.current()))? {
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
        },
    )
}

/// Body of `*_error_message(int code)`: a static NUL-terminated string for
/// any `int` (unknown codes get "unknown error code"); never NULL.
pub fn error_message(code: i32) -> *const c_char {
    Error::c_message_for_code(code).as_ptr()
}

/// Body of `*_scratch_set(uint64_t v)`.
pub fn scratch_set<F: Facade>(v: u64) -> i32 {
    boundary(|| with_global!(F, rt => rt.set_scratch(v)).map(|()| 0))
}

/// Body of `*_scratch_get(uint64_t *v)`.
///
/// # Safety
/// `v`: NULL or valid for a write.
pub unsafe fn scratch_get<F: Facade>(v: *mut u64) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { out_param(v, || with_global!(F, rt => rt.scratch())) }
}

/// Body of `*_fail_allocations(uint32_t skip, uint32_t fail)`.
pub fn fail_allocations<F: Facade>(skip: u32, fail: u32) {
    boundary_or((), || {
        let _ = with_global!(F, rt => {
            rt.fail_allocations(skip, fail);
            Ok::<_, Error>(())
        });
    });
}

/// Body of `*_diagnostics(Diagnostics *out)`.
///
/// # Safety
/// `out`: NULL or valid for a write.
pub unsafe fn diagnostics<F: Facade>(out: *mut Diagnostics) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { out_param(out, || with_global!(F, rt => Ok(rt.diagnostics()))) }
}

/// Which backend a facade runs on, and with which CPython (C layout).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CBackendInfo {
    /// 0 = the model, 1 = CPython.
    pub kind: u32,
    /// CPython's major version (0 on the model).
    pub python_major: u32,
    /// CPython's minor version (0 on the model).
    pub python_minor: u32,
    /// Lock modes this backend can create: bit `1 << mode` for each
    /// `LOCK_*` mode.
    pub lock_modes: u32,
}

/// Body of `*_backend_info(BackendInfo *out)`.
///
/// # Safety
/// `out`: NULL or valid for a write.
pub unsafe fn backend_info<F: Facade>(out: *mut CBackendInfo) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        out_param(out, || {
            with_global!(F, rt => {
                let (python_major, python_minor) = match rt.backend_kind() {
                    BackendKind::Model => (0, 0),
                    BackendKind::CPython => crate::c_abi::python_version(),
                };
                let mut lock_modes = 0;
                for m in [LockMode::Own, LockMode::SharedWithMain, LockMode::None] {
                    if rt.supports(m).is_ok() {
                        lock_modes |= 1 << (m as u32);
                    }
                }
                Ok(CBackendInfo { kind: rt.backend_kind() as u32, python_major, python_minor, lock_modes })
            })
        })
    }
}

fn python_version() -> (u32, u32) {
    crate::cpython::ffi::api().map_or((0, 0), |a| a.version)
}

/// Body of `*_set_exit_bound(int64_t ms)`: the bound on the wait of a
/// finalization CPython starts (negative: the default, 5,000 ms). The model
/// has no such finalization: accepted, no effect.
pub fn set_exit_bound<F: Facade>(ms: i64) -> i32 {
    boundary(|| {
        if let Global::CPython(rt) = F::global() {
            rt.set_exit_bound(Duration::from_millis(u64::try_from(ms).unwrap_or(5_000)));
        }
        Ok(0)
    })
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

/// A facade's shared runtime functions as a table of its exported C
/// functions, so a Rust driver (the conformance suite) can call any facade
/// through its C ABI. Each facade exports one as `SHARED_ABI`.
#[allow(missing_docs)]
pub struct SharedAbi {
    pub initialize: extern "C" fn() -> c_int,
    pub main_interpreter: unsafe extern "C" fn(*mut u64) -> c_int,
    pub current_interpreter: unsafe extern "C" fn(*mut u64) -> c_int,
    pub create_interpreter: unsafe extern "C" fn(u32, *mut u64) -> c_int,
    pub interpreter_state: extern "C" fn(u64) -> c_int,
    pub finalize: extern "C" fn(u64, i64) -> c_int,
    pub finalize_report: unsafe extern "C" fn(u64, i64, *mut CHolder, usize, *mut usize) -> c_int,
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
    pub backend_info: unsafe extern "C" fn(*mut CBackendInfo) -> c_int,
    pub set_exit_bound: extern "C" fn(i64) -> c_int,
}
