//! What a backend supplies: "what an interpreter is".
//!
//! Everything else — ids, the gate, spans and frames, the per-thread
//! context, nesting and restore, thread-exit cleanup, error codes, holder
//! reports — is written once in the core and is the same for every backend.
//! A backend supplies the interpreter side: its per-interpreter and
//! per-thread-state data, how a thread state is created, attached,
//! detached and freed, what its lock is, what "Python work" does, and what
//! the calling thread's real attached thread state is when code outside
//! the library can change it.
//!
//! Two backends: [`Model`](crate::model::Model) (the reference: a faithful
//! model, loom-checked) and, outside loom,
//! [`CPython`](crate::cpython::CPython) (real libpython 3.9–3.13).
//!
//! Every method that takes a thread state is called on the thread state's
//! owner thread, and only while the thread holds the interpreter open (a
//! span's hold or a short internal one), so the interpreter cannot be
//! destroyed underneath it.

use crate::error::Result;
use crate::interp::Interp;
use crate::registry::Registry;
use crate::sync::{Arc, Deadline};
use crate::thread::CtxSlot;
use crate::tstate::TState;
use crate::types::{BackendKind, LockMode, ReusePolicy};

/// The interpreter side of a runtime (see the module docs).
///
/// Sealed: its methods take the core's internal types, which no other crate
/// can name, so only this crate's two backends implement it.
#[allow(private_interfaces)]
pub trait Backend: Sized + Send + Sync + 'static {
    /// Per-interpreter data.
    type Interp: Send + Sync + 'static;
    /// Per-thread-state data.
    type TState: Send + Sync + 'static;

    /// Which backend this is (reports, JSON).
    const KIND: BackendKind;

    /// Whether code outside the library may attach or detach this thread's
    /// thread states (CPython: `Py_BEGIN_ALLOW_THREADS` in other code,
    /// Python threads). Then the span machine reconciles its per-thread
    /// record with [`current_raw`](Self::current_raw) before acting; for the
    /// model this is `false` and the check compiles away.
    const EXTERNAL_SWITCHES: bool;

    /// Whether the backend's lock lives in gate words' lock bits (the
    /// model) rather than elsewhere (CPython's GIL).
    const LOCK_BITS: bool;

    /// This backend's thread-local context slot.
    fn ctx_slot() -> &'static CtxSlot;

    /// The slot's context pointer for this thread, read directly (null: no
    /// context yet; `None` while thread-local storage is being torn down).
    fn ctx_ptr() -> Option<*mut ()>;

    // ----- locks -----------------------------------------------------------

    /// The interpreter whose lock `i` uses (itself, main, or none).
    fn lock_group(i: &Interp<Self>) -> Option<&Interp<Self>>;

    /// Whether `i`'s lock lives in `i`'s own gate word (so a first span
    /// takes its hold and the lock in one CAS).
    fn lock_in_gate(i: &Interp<Self>) -> bool;

    /// What happens to an ensure-created thread state of `i` after its
    /// outermost span (the runtime's option, or stricter).
    fn reuse(i: &Interp<Self>, option: ReusePolicy) -> ReusePolicy;

    /// Whether a guarded ensure on `i` may be a daemon's span (PEP 788: it
    /// takes no hold, so it does not keep `i` open once its guard is
    /// closed). CPython: only on main — a subinterpreter cannot end while
    /// any thread state of it exists, so there such a span holds `i`.
    fn daemon_spans(i: &Interp<Self>) -> bool;

    /// Whether an explicit (activate-design) thread state of `i` keeps its
    /// backend thread state between activations.
    fn keep_between_spans(i: &Interp<Self>) -> bool;

    // ----- thread states ---------------------------------------------------

    /// Data of a new thread-state record (not yet materialized).
    fn new_tstate_data(&self) -> Self::TState;

    /// Makes sure `ts` has a backend thread state (before its first attach
    /// in a span); `NoMemory` when that fails (nothing changed).
    fn materialize(&self, i: &Interp<Self>, ts: &TState<Self>) -> Result<()>;

    /// Attaches `ts` (takes `i`'s lock unless `locked`: the gate's CAS took
    /// it). May block; never fails.
    fn attach(&self, i: &Interp<Self>, ts: &TState<Self>, locked: bool);

    /// Attaches `ts` unless taking `i`'s lock would wait past `deadline`;
    /// `false` then (nothing changed). Backends whose lock has no timed
    /// acquire (CPython's GIL) wait without bound.
    fn attach_until(&self, i: &Interp<Self>, ts: &TState<Self>, deadline: &Deadline) -> bool {
        let _ = deadline;
        self.attach(i, ts, false);
        true
    }

    /// Detaches the attached `ts` (releasing `i`'s lock).
    fn detach(&self, i: &Interp<Self>, ts: &TState<Self>);

    /// Frees `ts`'s backend thread state; `attached` says whether it is
    /// attached now. Leaves the thread detached.
    fn dematerialize(&self, i: &Interp<Self>, ts: &TState<Self>, attached: bool);

    /// Clears what a previous user left in the attached `ts`.
    fn reset(&self, ts: &TState<Self>);

    /// The attached `ts`'s "thread-local Python data" word.
    fn scratch(&self, ts: &TState<Self>) -> Result<u64>;

    /// Sets it.
    fn set_scratch(&self, ts: &TState<Self>, v: u64) -> Result<()>;

    /// Backend part of "Python work" on `i` by the attached `ts`: `false`
    /// when the backend disagrees that `ts` is attached to `i`.
    fn python_work(&self, i: &Interp<Self>, ts: &TState<Self>) -> bool;

    /// The backend's "current" thread state (0 if none), for backends with
    /// [`EXTERNAL_SWITCHES`](Self::EXTERNAL_SWITCHES). It is the calling
    /// thread's attached thread state when it is one of this thread's own
    /// (a thread state is only ever attached by its owner thread), but it
    /// may belong to another thread (CPython 3.9–3.11: the runtime-wide GIL
    /// holder): see [`is_this_threads`](Self::is_this_threads).
    fn current_raw(&self) -> usize {
        0
    }

    /// The C function that returns [`current_raw`](Self::current_raw)
    /// (as a pointer), for a header's inline path to call itself; `None`
    /// for a backend without [`EXTERNAL_SWITCHES`](Self::EXTERNAL_SWITCHES).
    fn current_fn(&self) -> Option<unsafe extern "C" fn() -> *mut std::ffi::c_void> {
        None
    }

    /// Whether `raw`, the backend's current thread state and not one of the
    /// library's records of this thread, is the calling thread's own.
    fn is_this_threads(&self, _raw: usize) -> bool {
        false
    }

    /// The backend thread state of `ts` (0 if none), compared with
    /// [`current_raw`](Self::current_raw).
    fn raw(_ts: &TState<Self>) -> usize {
        0
    }

    /// Whether `ts` has backend state to free (CPython: a `PyThreadState`
    /// was created for it). The model's thread states always count as
    /// materialized, so freeing one walks the same gate path as on CPython.
    fn is_materialized(_ts: &TState<Self>) -> bool {
        true
    }

    /// Whether creating an interpreter with `mode` is possible here
    /// (`Unsupported` otherwise).
    fn supports(&self, mode: LockMode) -> Result<()>;

    /// Ends the drained interpreter `i` (CPython: `Py_EndInterpreter` or
    /// `Py_FinalizeEx`), called by the finalizing thread with nothing
    /// attached, before `i` passes its point of no return. `next` is the
    /// raw thread state the caller will re-attach afterwards (0 if none),
    /// `own` the raw thread states of `i` that belong to the calling thread
    /// (they must go before `i` can end). Leaves the thread detached.
    fn end_interpreter(&self, _i: &Interp<Self>, _next: usize, _own: &[usize]) {}

    // ----- thread states the library did not create (CPython) -------------

    /// The interpreter of the foreign thread state `ts_raw` that is attached
    /// on the calling thread now, registering it on first sight (this is an
    /// attached moment in it). `None`: the model has no foreign thread
    /// states, or registration failed.
    fn adopt(&self, _reg: &Arc<Registry<Self>>, _ts_raw: usize) -> Option<Arc<Interp<Self>>> {
        None
    }

    /// This thread's own detached thread state of `i` that the library did
    /// not create (CPython: `PyGILState_GetThisThreadState()` when it
    /// belongs to `i` and is not attached), 0 if none: ensure re-attaches
    /// it, as `PyGILState_Ensure` does.
    fn own_detached(&self, _i: &Interp<Self>) -> usize {
        0
    }

    /// Record data for a foreign thread state (never materialized or freed
    /// by the library).
    fn borrowed_data(&self, _ts_raw: usize) -> Self::TState {
        self.new_tstate_data()
    }
}
