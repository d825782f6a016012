//! The runtime functions every facade's header offers, with this facade's
//! prefix. GENERATED from `conformance/templates/shared_abi.rs.in` — do not
//! edit; regenerate with `TSTATE_BLESS=1 cargo test -p tstate-conformance --test generated`.
//!
//! Every function: acts on this facade's runtime (the model, or real
//! CPython when a libpython is loaded in the process: see
//! `tsh_backend_info`), its own whether the library is linked statically
//! or dynamically ([`ThisFacade`]); may be called from any thread (acting on the
//! calling thread's attach state where it says so); never lets a panic
//! cross the ABI (`TSH_ERR_PANIC`); refuses a NULL required pointer with
//! `TSH_ERR_INVALID_ARGUMENT`; writes out-parameters only on success.

use std::ffi::{c_char, c_int};
use tstate_core::Diagnostics;
use tstate_core::c_abi::{self, CBackendInfo, CHolder, Facade, Global};

/// This facade's runtime: a `static` of this crate, so each facade library
/// has its own (its own gate, spans and ids), linked statically or
/// dynamically; chosen on first use (`Global::choose_with`, exporting the
/// facade's inline block if it has one: `crate::INLINE_STATE`).
pub struct ThisFacade;

/// The runtime, chosen on first use.
static GLOBAL: std::sync::OnceLock<Global> = std::sync::OnceLock::new();

impl Facade for ThisFacade {
    fn global() -> &'static Global {
        GLOBAL.get_or_init(|| Global::choose_with(crate::INLINE_STATE))
    }
    #[inline(always)]
    fn global_if_chosen() -> Option<&'static Global> {
        GLOBAL.get()
    }
    #[inline(always)]
    fn inline_block() -> *mut c_abi::InlineState {
        match crate::INLINE_STATE {
            Some(e) => (e.slot)(),
            None => std::ptr::null_mut(),
        }
    }
}

/// Out of memory, or an allocation made to fail by fault injection. Nothing
/// was half-created; retrying can succeed.
pub const ERR_NO_MEMORY: c_int = -1;
/// The interpreter is finalizing and refuses new spans.
pub const ERR_FINALIZING: c_int = -2;
/// Interpreter id 0, forged, unknown, or finalized (ids are never reused).
pub const ERR_NO_SUCH_INTERPRETER: c_int = -3;
/// The object belongs to another OS thread.
pub const ERR_WRONG_THREAD: c_int = -4;
/// Nothing to release, or the calling thread is not attached (to that
/// interpreter).
pub const ERR_NOT_ATTACHED: c_int = -5;
/// The handle is stale (released, deleted) or forged.
pub const ERR_INVALID_HANDLE: c_int = -6;
/// An inner span is still open.
pub const ERR_OUT_OF_ORDER: c_int = -7;
/// A NULL pointer or an out-of-range argument.
pub const ERR_INVALID_ARGUMENT: c_int = -8;
/// Still in use (attached, saved, or already being finalized by another
/// thread).
pub const ERR_BUSY: c_int = -9;
/// Finalization's time bound passed while spans were open; the interpreter
/// stays finalizing.
pub const ERR_TIMEOUT: c_int = -10;
/// A panic was caught inside the library (a bug); state may be partial.
pub const ERR_PANIC: c_int = -11;
/// The backend cannot do this: a lock mode the running CPython lacks (own
/// lock before 3.12; no lock without a free-threaded build), or a
/// combination the model refuses (a subinterpreter sharing the lock of a
/// free-threaded main).
pub const ERR_UNSUPPORTED: c_int = -12;

/// Backend: the runtime model.
pub const BACKEND_MODEL: u32 = 0;
/// Backend: real CPython (libpython 3.9 to 3.13 loaded in this process).
pub const BACKEND_CPYTHON: u32 = 1;

/// Lock mode: the interpreter has its own lock (a per-interpreter GIL).
pub const LOCK_OWN: u32 = 0;
/// Lock mode: the interpreter shares the main interpreter's lock.
pub const LOCK_SHARED_WITH_MAIN: u32 = 1;
/// Lock mode: no lock (free-threaded: many threads attached at once).
pub const LOCK_NONE: u32 = 2;

/// Makes the library ready, and is the one call that may create a main
/// interpreter. On CPython: initializes CPython if it is not
/// (`Py_InitializeEx(0)`, leaving the caller attached to main as
/// `Py_Initialize` does) and registers the interpreter the caller is
/// attached to (its finalization gate is installed then: call this at
/// module init, or right after `Py_Initialize`). On the model: creates a
/// main interpreter if there is none (there is one from the start; after
/// `tsh_finalize_all`, this is the model's `Py_Initialize`).
///
/// Thread: on CPython, one attached to the interpreter to register (or
/// any, when it initializes CPython). Returns 0,
/// `TSH_ERR_NO_SUCH_INTERPRETER` (CPython: the caller is not attached to
/// an interpreter), `TSH_ERR_NO_MEMORY`, `TSH_ERR_UNSUPPORTED`,
/// `TSH_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsh_initialize() -> c_int {
    c_abi::initialize::<ThisFacade>()
}

/// Writes the main interpreter's id to `*out`. Never creates an
/// interpreter: after main was finalized this answers
/// `TSH_ERR_NO_SUCH_INTERPRETER`, so a callback that looks main up each
/// time is refused after shutdown. On CPython, main is registered (its gate
/// installed) the first time this is called by a thread attached to it.
///
/// Thread: any. Returns 0, `TSH_ERR_INVALID_ARGUMENT` (`out` NULL),
/// `TSH_ERR_NO_SUCH_INTERPRETER` (finalized; on CPython also: never
/// registered and the caller is not attached to it), `TSH_ERR_NO_MEMORY`,
/// `TSH_ERR_PANIC`.
///
/// # Safety
/// `out` must be NULL or valid for writing a `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsh_main_interpreter(out: *mut u64) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { c_abi::main_interpreter::<ThisFacade>(out) }
}

/// Writes the id of the interpreter the calling thread is attached to now.
/// On CPython this includes thread states the library did not create (a
/// Python thread calling into C): that interpreter is registered on first
/// sight.
///
/// Thread: any (answers for itself). Returns 0, `TSH_ERR_NOT_ATTACHED`,
/// `TSH_ERR_INVALID_ARGUMENT`, `TSH_ERR_NO_MEMORY`, `TSH_ERR_PANIC`.
///
/// # Safety
/// `out` must be NULL or valid for writing a `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsh_current_interpreter(out: *mut u64) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { c_abi::current_interpreter::<ThisFacade>(out) }
}

/// Creates a subinterpreter with `lock_mode` (`TSH_LOCK_*`) and writes its
/// id to `*out`. The caller owns nothing: finalize it with
/// `tsh_finalize`. On CPython: `Py_NewInterpreter` for
/// `TSH_LOCK_SHARED_WITH_MAIN`, `Py_NewInterpreterFromConfig` with its own
/// GIL for `TSH_LOCK_OWN` (3.12+); the caller is attached to main for the
/// call and restored afterwards.
///
/// Thread: any. Returns 0, `TSH_ERR_INVALID_ARGUMENT` (`out` NULL or an
/// unknown mode), `TSH_ERR_UNSUPPORTED` (this backend cannot do the
/// mode), `TSH_ERR_FINALIZING` (main is finalizing),
/// `TSH_ERR_NO_SUCH_INTERPRETER` (no main), `TSH_ERR_NO_MEMORY`,
/// `TSH_ERR_PANIC`.
///
/// # Safety
/// `out` must be NULL or valid for writing a `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsh_create_interpreter(lock_mode: u32, out: *mut u64) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { c_abi::create_interpreter::<ThisFacade>(lock_mode, out) }
}

/// Returns 0 if `interp` is running, 1 if it is finalizing, or
/// `TSH_ERR_NO_SUCH_INTERPRETER` (0, forged, unknown or gone).
///
/// Thread: any.
#[unsafe(no_mangle)]
pub extern "C" fn tsh_interpreter_state(interp: u64) -> c_int {
    c_abi::interpreter_state::<ThisFacade>(interp)
}

/// Finalizes `interp`: refuses new spans at once, waits (sleeping) until no
/// other thread holds it open, then ends it (on CPython:
/// `Py_EndInterpreter`, or `Py_FinalizeEx` for main) and deletes its thread
/// states; its id never resolves again. Finalizing the main interpreter
/// finalizes every subinterpreter first. The caller's own spans on `interp`
/// are not waited for; the caller is detached while it waits (if its lock
/// is one the holders need; on CPython always) and re-attached afterwards
/// if its interpreter still exists.
///
/// `timeout_ms < 0` waits without bound. The bound covers the caller's
/// re-attach too (on the model): if its lock is still taken when the bound
/// passes, the caller is left detached with that thread state saved
/// (`tsh_current` answers 0; restore it with `tsh_restore_thread`).
/// Thread: any. Returns 0, `TSH_ERR_TIMEOUT` (the interpreter stays
/// finalizing; `tsh_finalize_report` gives the holders; finalize may be
/// called again), `TSH_ERR_NO_SUCH_INTERPRETER`, `TSH_ERR_BUSY`
/// (another thread is finalizing it), `TSH_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsh_finalize(interp: u64, timeout_ms: i64) -> c_int {
    c_abi::finalize::<ThisFacade>(interp, timeout_ms)
}

/// As `tsh_finalize`; when it returns `TSH_ERR_TIMEOUT`, writes up to
/// `cap` of the threads that still held `interp` open to `buf` and their
/// number to `*count` (0 on any other result). `buf` may be NULL when `cap`
/// is 0.
///
/// Thread: any. Returns as `tsh_finalize`, or
/// `TSH_ERR_INVALID_ARGUMENT` (`count` NULL, or `buf` NULL with `cap > 0`:
/// nothing was done).
///
/// # Safety
/// `buf` must be valid for `cap` writes (or NULL with `cap == 0`); `count`
/// NULL or valid for writing a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsh_finalize_report(
    interp: u64,
    timeout_ms: i64,
    buf: *mut CHolder,
    cap: usize,
    count: *mut usize,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { c_abi::finalize_report::<ThisFacade>(interp, timeout_ms, buf, cap, count) }
}

/// Finalizes the whole runtime (every subinterpreter, then main), like
/// `Py_FinalizeEx`. Returns as `tsh_finalize`; 0 if there was no main.
#[unsafe(no_mangle)]
pub extern "C" fn tsh_finalize_all(timeout_ms: i64) -> c_int {
    c_abi::finalize_all::<ThisFacade>(timeout_ms)
}

/// Lists the threads holding `interp` open: writes up to `cap` entries to
/// `buf` and the total number to `*count` (retry with a larger buffer if
/// `*count > cap`). `buf` may be NULL when `cap` is 0.
///
/// Thread: any. Returns 0, `TSH_ERR_INVALID_ARGUMENT`,
/// `TSH_ERR_NO_SUCH_INTERPRETER`, `TSH_ERR_PANIC`.
///
/// # Safety
/// `buf` must be valid for `cap` writes (or NULL with `cap == 0`); `count`
/// NULL or valid for writing a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsh_holders(
    interp: u64,
    buf: *mut CHolder,
    cap: usize,
    count: *mut usize,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { c_abi::holders::<ThisFacade>(interp, buf, cap, count) }
}

/// `PyEval_SaveThread` / `Py_BEGIN_ALLOW_THREADS`: detaches the calling
/// thread's attached thread state (its span stays open, so the interpreter
/// stays held) and writes its handle to `*ts` for `tsh_restore_thread`.
///
/// Thread: the calling thread's own state. Returns 0,
/// `TSH_ERR_NOT_ATTACHED`, `TSH_ERR_INVALID_ARGUMENT`,
/// `TSH_ERR_NO_MEMORY`, `TSH_ERR_PANIC`.
///
/// # Safety
/// `ts` must be NULL or valid for writing a `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsh_save_thread(ts: *mut u64) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { c_abi::save_thread::<ThisFacade>(ts) }
}

/// `PyEval_RestoreThread` / `Py_END_ALLOW_THREADS`: re-attaches `ts`, which
/// must be the calling thread's innermost saved thread state. Always
/// succeeds for it — even while its interpreter is finalizing — but may
/// wait for the interpreter's lock.
///
/// Thread: the one that saved `ts`. Returns 0, `TSH_ERR_BUSY` (something
/// is attached), `TSH_ERR_OUT_OF_ORDER` (not the innermost saved one),
/// `TSH_ERR_NOT_ATTACHED` (not saved), `TSH_ERR_WRONG_THREAD`,
/// `TSH_ERR_INVALID_HANDLE`, `TSH_ERR_NO_SUCH_INTERPRETER` (this
/// thread finalized it meanwhile), `TSH_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsh_restore_thread(ts: u64) -> c_int {
    c_abi::restore_thread::<ThisFacade>(ts)
}

/// "Python work" on `interp`: legal only while the calling thread is
/// attached to `interp`. Increments the interpreter's work counter (with a
/// racy load + store, so a failure of mutual exclusion shows as lost
/// updates) and writes the new value to `*value` if `value` is not NULL.
///
/// Returns 0, `TSH_ERR_NOT_ATTACHED` (not attached, or attached to another
/// interpreter), `TSH_ERR_PANIC`.
///
/// # Safety
/// `value` must be NULL or valid for writing a `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsh_work(interp: u64, value: *mut u64) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { c_abi::work::<ThisFacade>(interp, value) }
}

/// Writes `interp`'s work counter to `*value`. Thread: any.
/// Returns 0, `TSH_ERR_INVALID_ARGUMENT`, `TSH_ERR_NO_SUCH_INTERPRETER`,
/// `TSH_ERR_PANIC`.
///
/// # Safety
/// `value` must be NULL or valid for writing a `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsh_work_count(interp: u64, value: *mut u64) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { c_abi::work_count::<ThisFacade>(interp, value) }
}

/// 1 if the calling thread is attached to `interp`, else 0 (never an
/// error; exact per interpreter, unlike `PyGILState_Check`).
#[unsafe(no_mangle)]
pub extern "C" fn tsh_is_attached(interp: u64) -> c_int {
    c_abi::is_attached::<ThisFacade>(interp)
}

/// Returns 1 and writes the calling thread's attached thread state and its
/// interpreter (each pointer may be NULL), or returns 0 if none is attached.
///
/// # Safety
/// Each pointer must be NULL or valid for writing a `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsh_current(ts: *mut u64, interp: *mut u64) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { c_abi::current::<ThisFacade>(ts, interp) }
}

/// The static message of `code` (any `int`; 0 gives "success", unknown
/// codes "unknown error code"). Never NULL; the string lives forever and
/// must not be freed.
#[unsafe(no_mangle)]
pub extern "C" fn tsh_error_message(code: c_int) -> *const c_char {
    c_abi::error_message(code)
}

/// Test hook: sets the attached thread state's scratch value (the model of
/// its per-thread Python data) — used to show nothing leaks between
/// top-level spans. Returns 0, `TSH_ERR_NOT_ATTACHED`, `TSH_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsh_scratch_set(value: u64) -> c_int {
    c_abi::scratch_set::<ThisFacade>(value)
}

/// Test hook: writes the attached thread state's scratch value to `*value`.
/// Returns 0, `TSH_ERR_NOT_ATTACHED`, `TSH_ERR_INVALID_ARGUMENT`,
/// `TSH_ERR_PANIC`.
///
/// # Safety
/// `value` must be NULL or valid for writing a `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsh_scratch_get(value: *mut u64) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { c_abi::scratch_get::<ThisFacade>(value) }
}

/// Test hook: lets the next `skip` allocations (thread states, interpreters,
/// span-stack growth, per-thread tables) through, then makes the `fail`
/// after them report `TSH_ERR_NO_MEMORY`. `fail == 0` turns it off.
/// Process-wide.
#[unsafe(no_mangle)]
pub extern "C" fn tsh_fail_allocations(skip: u32, fail: u32) {
    c_abi::fail_allocations::<ThisFacade>(skip, fail);
}

/// Test hook: makes the next `n` exported calls (of any facade linked into
/// the same library) that reach the panic boundary panic inside; each
/// returns `TSH_ERR_PANIC` (or its documented default) instead of
/// unwinding into C. A nested span that the thread's inline block answers
/// (ensure, handle, and activate's is-attached check) never reaches it.
#[unsafe(no_mangle)]
pub extern "C" fn tsh_inject_panics(n: u32) {
    c_abi::inject_panics(n);
}

/// Writes the runtime's counters to `*out`. Thread: any. Returns 0,
/// `TSH_ERR_INVALID_ARGUMENT`, `TSH_ERR_PANIC`.
///
/// # Safety
/// `out` must be NULL or valid for writing a `TSH_Diagnostics`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsh_diagnostics(out: *mut Diagnostics) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { c_abi::diagnostics::<ThisFacade>(out) }
}

/// Writes which backend this library runs on to `*out`: the model, or
/// CPython with its version, and the lock modes it can create. The backend
/// is chosen at the first call of any function: `TSTATE_BACKEND=model` or
/// `=cpython` in the environment if set, else CPython when a libpython is
/// loaded in the process, else the model.
///
/// Thread: any. Returns 0, `TSH_ERR_INVALID_ARGUMENT`,
/// `TSH_ERR_UNSUPPORTED` (`TSTATE_BACKEND=cpython` without a libpython),
/// `TSH_ERR_PANIC`.
///
/// # Safety
/// `out` must be NULL or valid for writing a `TSH_BackendInfo`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tsh_backend_info(out: *mut CBackendInfo) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { c_abi::backend_info::<ThisFacade>(out) }
}

/// Sets the bound, in milliseconds, on how long a finalization that
/// CPython itself starts (interpreter exit, `Py_FinalizeEx` called
/// directly) waits for open spans before it goes on (a negative value
/// restores the default, 5,000). The holders still inside then are printed
/// on stderr. The model has no such finalization: accepted, no effect.
///
/// Thread: any. Returns 0, `TSH_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn tsh_set_exit_bound(ms: i64) -> c_int {
    c_abi::set_exit_bound::<ThisFacade>(ms)
}

/// This facade's shared functions as a table, for Rust drivers that call
/// several facades through their C ABI (the conformance suite).
pub const SHARED_ABI: c_abi::SharedAbi = c_abi::SharedAbi {
    initialize: tsh_initialize,
    main_interpreter: tsh_main_interpreter,
    current_interpreter: tsh_current_interpreter,
    create_interpreter: tsh_create_interpreter,
    interpreter_state: tsh_interpreter_state,
    finalize: tsh_finalize,
    finalize_report: tsh_finalize_report,
    finalize_all: tsh_finalize_all,
    holders: tsh_holders,
    save_thread: tsh_save_thread,
    restore_thread: tsh_restore_thread,
    work: tsh_work,
    work_count: tsh_work_count,
    is_attached: tsh_is_attached,
    current: tsh_current,
    error_message: tsh_error_message,
    scratch_set: tsh_scratch_set,
    scratch_get: tsh_scratch_get,
    fail_allocations: tsh_fail_allocations,
    inject_panics: tsh_inject_panics,
    diagnostics: tsh_diagnostics,
    backend_info: tsh_backend_info,
    set_exit_bound: tsh_set_exit_bound,
};

#[cfg(test)]
mod tests {
    use super::*;
    use tstate_core::Error;

    #[test]
    fn constants_match_the_core() {
        let ours = [
            ERR_NO_MEMORY,
            ERR_FINALIZING,
            ERR_NO_SUCH_INTERPRETER,
            ERR_WRONG_THREAD,
            ERR_NOT_ATTACHED,
            ERR_INVALID_HANDLE,
            ERR_OUT_OF_ORDER,
            ERR_INVALID_ARGUMENT,
            ERR_BUSY,
            ERR_TIMEOUT,
            ERR_PANIC,
            ERR_UNSUPPORTED,
        ];
        let core: Vec<c_int> = Error::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(ours.to_vec(), core);
        use tstate_core::LockMode;
        assert_eq!(LockMode::from_raw(LOCK_OWN), Some(LockMode::Own));
        assert_eq!(
            LockMode::from_raw(LOCK_SHARED_WITH_MAIN),
            Some(LockMode::SharedWithMain)
        );
        assert_eq!(LockMode::from_raw(LOCK_NONE), Some(LockMode::None));
    }
}
