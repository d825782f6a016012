//! Per-thread state and the span machine: what this OS thread has attached,
//! the stack of its open spans, its thread states, and its exit cleanup.
//!
//! Everything here is thread-local (one [`RtCtx`] per runtime the thread
//! has used), so the fast paths take no lock and touch no shared cache line:
//!
//! * **nested ensure** (already attached to the target): compare the cached
//!   current interpreter id (and, on a backend where other code can switch
//!   thread states, the real current thread state), push a frame — no
//!   atomic read-modify-write;
//! * **re-attach** (a frame of this thread already holds the target open,
//!   e.g. after a save): take the lock;
//! * **fresh ensure** (the thread holds nothing on the target): one CAS on
//!   the interpreter's gate word that checks "not finalizing", takes the hold
//!   and (on the model) the lock; the thread's kept thread state is reused.
//!
//! A frame records what to undo: which thread state it attached and which
//! one was attached before (re-attached on release), so nesting restores
//! exactly, across interpreters too. A frame whose interpreter was finalized
//! meanwhile (by this thread, from inside the span) is popped without effect.
//!
//! # Where the context lives, and thread exit
//!
//! The context is heap-allocated; a `const` thread-local holds only its
//! address (no destructor, so it stays readable while the thread's other
//! thread-local destructors run). Exit cleanup runs from a POSIX thread-key
//! destructor, which glibc runs after every Rust and C++ thread-local
//! destructor: so spans taken or released from other thread-local
//! destructors (pybind11's and C++ `thread_local` patterns) work, and a span
//! opened from another thread-key destructor is cleaned up by a later
//! destructor round (glibc runs up to 4).

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::interp::{HoldCell, Interp, ThreadInfo};
use crate::registry::Registry;
use crate::sync::{Arc, Deadline};
use crate::tstate::{TState, TsKind};
use crate::types::{InterpreterId, ReusePolicy, SpanKind, ThreadStateId, Ticket};
use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

/// The hasher of a thread's interpreter index: its keys are interpreter
/// ids (a slot index and a generation, chosen by this library, never by
/// an adversary), so a multiply-and-fold is enough and costs a few
/// instructions, against SipHash's few dozen.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        let x = (self.0 ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 32);
    }
}

/// "No index" in the thread-local tables.
const NONE: u32 = u32::MAX;

// ----- the thread-local slot -------------------------------------------------

/// The thread-local cell holding this thread's context address.
pub struct CtxCell {
    ptr: Cell<*mut ()>,
    /// Under loom there are no thread keys: the cell's destructor runs the
    /// exit cleanup (loom runs thread-local destructors at a modelled
    /// thread's end).
    #[cfg(loom)]
    exit: Cell<Option<unsafe fn(*mut ())>>,
}

impl CtxCell {
    /// The context pointer (null: this thread has none yet).
    #[inline(always)]
    pub(crate) fn get(&self) -> *mut () {
        self.ptr.get()
    }

    pub(crate) const fn new() -> Self {
        Self {
            ptr: Cell::new(std::ptr::null_mut()),
            #[cfg(loom)]
            exit: Cell::new(None),
        }
    }
}

#[cfg(loom)]
impl Drop for CtxCell {
    fn drop(&mut self) {
        let p = self.ptr.get();
        // a model that failed is unwinding: its state is not to be trusted
        if let Some(f) = self.exit.get()
            && !p.is_null()
            && !std::thread::panicking()
        {
            // SAFETY: `f` is the exit function registered with `p` by
            // `new_thread_ctx` for this cell's backend.
            unsafe { f(p) };
        }
    }
}

#[cfg(not(loom))]
type CtxKey = std::thread::LocalKey<CtxCell>;
#[cfg(loom)]
type CtxKey = loom::thread::LocalKey<CtxCell>;

/// A backend's thread-local slot: the cell, and (outside loom) the POSIX
/// thread key whose destructor runs the exit cleanup.
pub struct CtxSlot {
    tls: &'static CtxKey,
    #[cfg(not(loom))]
    key: &'static std::sync::OnceLock<libc::pthread_key_t>,
}

impl CtxSlot {
    #[cfg(not(loom))]
    pub(crate) const fn new(
        tls: &'static CtxKey,
        key: &'static std::sync::OnceLock<libc::pthread_key_t>,
    ) -> Self {
        Self { tls, key }
    }
    #[cfg(loom)]
    pub(crate) const fn new(tls: &'static CtxKey) -> Self {
        Self { tls }
    }
}

/// Declares `fn $f() -> &'static CtxSlot`, a backend's own thread-local
/// slot (each backend has one, so their contexts never mix), and
/// `fn $p() -> Option<*mut ()>`, the same cell's pointer read directly (the
/// hot path: through the slot's `&LocalKey` the access is an indirect call
/// that cannot be inlined). One invocation per module.
macro_rules! ctx_slot {
    (fn $f:ident, fn $p:ident) => {
        #[cfg(not(loom))]
        std::thread_local! {
            static CTX_TLS: $crate::thread::CtxCell = const { $crate::thread::CtxCell::new() };
        }
        #[cfg(loom)]
        loom::thread_local! {
            static CTX_TLS: $crate::thread::CtxCell = $crate::thread::CtxCell::new();
        }
        fn $f() -> &'static $crate::thread::CtxSlot {
            #[cfg(not(loom))]
            static KEY: std::sync::OnceLock<libc::pthread_key_t> = std::sync::OnceLock::new();
            #[cfg(not(loom))]
            static SLOT: $crate::thread::CtxSlot = $crate::thread::CtxSlot::new(&CTX_TLS, &KEY);
            #[cfg(loom)]
            static SLOT: $crate::thread::CtxSlot = $crate::thread::CtxSlot::new(&CTX_TLS);
            &SLOT
        }
        #[inline(always)]
        fn $p() -> Option<*mut ()> {
            CTX_TLS.try_with(|c| c.get()).ok()
        }
    };
}
pub(crate) use ctx_slot;

// ----- handle tags -----------------------------------------------------------

/// The process-wide table of handle tags (see [`Ticket`]): a tag is owned
/// by one live thread at a time. Not synchronisation the core relies on (an
/// id allocator), so a plain `parking_lot` mutex, also under loom.
struct Tags {
    /// `owner[t - 1]`: thread number owning tag `t`, 0 if free.
    owner: Vec<u64>,
    /// `next_seq[t - 1]`: where the next owner of tag `t` starts counting.
    next_seq: Vec<u32>,
    free: Vec<u16>,
}

static TAGS: parking_lot::Mutex<Tags> = parking_lot::Mutex::new(Tags {
    owner: Vec::new(),
    next_seq: Vec::new(),
    free: Vec::new(),
});

fn tags() -> parking_lot::MutexGuard<'static, Tags> {
    TAGS.lock()
}

/// The at-fork prepare step for the tag table.
#[cfg(not(loom))]
pub(crate) fn fork_lock_tags() {
    std::mem::forget(TAGS.lock());
}

/// After `fork()`: unlocks the tag table; in the child, every tag but the
/// forking thread's is free again (their threads do not exist there).
///
/// # Safety
/// Only after [`fork_lock_tags`] on this thread.
#[cfg(not(loom))]
pub(crate) unsafe fn fork_unlock_tags(child: bool) {
    if child {
        let me = current_thread_numbers();
        let p: *mut Tags = TAGS.data_ptr();
        // SAFETY: the lock is held by this thread (fork_lock_tags), and in
        // the child no other thread exists.
        let t = unsafe { &mut *p };
        t.free.clear();
        for i in 0..t.owner.len() {
            if t.owner[i] != 0 && !me.contains(&t.owner[i]) {
                t.owner[i] = 0;
            }
            if t.owner[i] == 0 {
                t.free.push((i + 1) as u16);
            }
        }
    }
    // SAFETY: locked by fork_lock_tags on this thread (contract).
    unsafe { TAGS.force_unlock() };
}

/// The numbers this thread goes by in each backend's context.
#[cfg(not(loom))]
fn current_thread_numbers() -> Vec<u64> {
    let mut v = Vec::new();
    for slot in [
        <crate::Model as Backend>::ctx_slot(),
        <crate::cpython::CPython as Backend>::ctx_slot(),
    ] {
        if let Ok(p) = slot.tls.try_with(|c| c.ptr.get())
            && !p.is_null()
        {
            // SAFETY: a live context of some backend; every `ThreadCtx` is
            // `repr(C)` and starts with a `CtxHeader`, which is only read.
            v.push(unsafe { (*p.cast::<CtxHeader>()).number });
        }
    }
    v
}

/// A tag for thread `number` and the sequence number it starts at; tag 0
/// when all 4,095 are taken.
fn alloc_tag(number: u64) -> (u16, u32) {
    let mut t = tags();
    let tag = match t.free.pop() {
        Some(tag) => tag,
        None if t.owner.len() < usize::from(Ticket::MAX_TAG) => {
            if t.owner.try_reserve(1).is_err() || t.next_seq.try_reserve(1).is_err() {
                return (0, 0);
            }
            t.owner.push(0);
            t.next_seq.push(0);
            t.owner.len() as u16
        }
        None => return (0, 0),
    };
    let i = usize::from(tag - 1);
    t.owner[i] = number;
    (tag, t.next_seq[i])
}

fn free_tag(tag: u16, next_seq: u32) {
    if tag == 0 {
        return;
    }
    let mut t = tags();
    let i = usize::from(tag - 1);
    t.owner[i] = 0;
    t.next_seq[i] = next_seq;
    if t.free.try_reserve(1).is_ok() {
        t.free.push(tag);
    }
}

fn tag_owner(tag: u16) -> Option<u64> {
    let t = tags();
    let o = *t.owner.get(usize::from(tag).checked_sub(1)?)?;
    (o != 0).then_some(o)
}

// ----- the per-thread context --------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FrameKind {
    /// Ensure on a thread already attached to the target: nothing to undo.
    Nested,
    /// Ensure that re-attached a detached thread state this thread already
    /// holds the interpreter open with: undo = detach it.
    Reattach,
    /// A span that took this thread's hold (if it was the first) and
    /// attached a thread state: undo = detach, drop the hold.
    Enter(SpanKind),
    /// An ensure under a guard of the guard design that took no hold of
    /// this thread (PEP 788: only guards keep an interpreter from
    /// finalizing, so once the guard is closed the span is a daemon's):
    /// undo = detach.
    Daemon,
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    kind: FrameKind,
    /// Local index of the thread state this frame attached (NONE for Nested).
    ts: u32,
    /// Local index of the thread state attached before (NONE if none).
    prev: u32,
    /// Sequence number (for tickets).
    seq: u32,
    /// Index of the interpreter's entry in `RtCtx::interps`.
    il: u32,
    /// Raw id of the interpreter.
    interp: u64,
    /// A guard the frame's release closes (the implicit guard of the guard
    /// design's ensure-from-view), 0 if none.
    guard: u64,
}

/// How a span takes this thread's hold on its interpreter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HoldMode {
    /// Through the gate: refused while finalizing (ensure, activate).
    Gate,
    /// Even while finalizing, not once gone: the caller holds a guard,
    /// which keeps the interpreter from passing its point of no return.
    Forced,
    /// No hold of this thread: a guard of the caller's protects the start
    /// of the span, and the span does not keep the interpreter open.
    Daemon,
}

/// How step (c) of an ensure takes this thread's hold.
#[derive(Clone, Copy)]
enum EnsureHold {
    /// Through the gate (the ensure designs).
    Gate,
    /// Under a caller's guard (the guard design): forced, or none where the
    /// backend runs daemon spans.
    Guarded,
}

struct Local<B: Backend> {
    ts: Arc<TState<B>>,
    /// Index of its interpreter in `RtCtx::interps`.
    il: u32,
}

struct InterpLocal<B: Backend> {
    interp: Arc<Interp<B>>,
    cell: Arc<HoldCell>,
    /// Enter spans this thread has open on it (the gate counts 1 while > 0).
    spans: u32,
    /// Local index of the thread state ensure reuses here (NONE if none).
    home: u32,
}

/// What one OS thread knows about one runtime.
pub(crate) struct RtCtx<B: Backend> {
    reg: Arc<Registry<B>>,
    info: Arc<ThreadInfo>,
    tag: u16,
    locals: Vec<Option<Local<B>>>,
    interps: Vec<Option<InterpLocal<B>>>,
    /// Raw interpreter id → its index in `interps`, so that a first use or
    /// a top-level ensure finds the entry in O(1) however many
    /// interpreters the thread uses (a scan of `interps` cost about nine
    /// instructions per entry: `bench/callgrind.sh` case `ensure-C1000`).
    interp_index: HashMap<u64, u32, BuildHasherDefault<IdHasher>>,
    /// Free slots of `locals` and of `interps` (capacity kept at least the
    /// vector's length, so pushing a freed slot never allocates): a new
    /// record takes one in O(1) instead of scanning for a `None`.
    free_locals: Vec<u32>,
    free_interps: Vec<u32>,
    /// Borrowed thread-state records in `locals` (prune must look at them
    /// whatever the epoch: they go as soon as nothing uses them).
    borrowed: u32,
    /// `Registry::epoch` at this thread's last full prune.
    pruned_epoch: u64,
    /// The `interps` entry `interp_local` found last (checked before the
    /// index; may name an empty or reused slot, then it simply misses).
    last_il: u32,
    frames: Vec<Frame>,
    saved: Vec<u32>,
    current: u32,
    /// Raw id of the current thread state's interpreter, 0 if none (the
    /// nested fast path compares only this, and `current_raw`).
    current_interp: u64,
    /// The backend's raw thread state of `current` (0 if none).
    current_raw: usize,
    next_seq: u32,
    /// This thread's inline block of the runtime ([`InlineState`]), NULL if
    /// the runtime exports none.
    inline: *mut InlineState,
    /// The block counts spans with sequence numbers ([`InlineExport`]).
    inline_tickets: bool,
    /// The record of a thread state this thread deleted, kept for its
    /// allocation: the thread's next new thread state (on any interpreter)
    /// is written into it, so the explicit design's New + Delete cycle
    /// allocates nothing. Only ever a record nothing else references
    /// (`Arc::get_mut` succeeded when it was put here, and nothing can clone
    /// it since: it is in no registry and no table). One per thread at most;
    /// dropped with its interpreter's entry when prune removes that (so it
    /// never keeps a finalized interpreter alive past the entry), and with
    /// the context.
    spare_ts: Option<Arc<TState<B>>>,
}

/// The backend-independent first field of every [`ThreadCtx`] (so code that
/// does not know the backend can read the thread's number).
#[repr(C)]
struct CtxHeader {
    number: u64,
}

/// Everything this OS thread knows, for one backend. `rts[0]` is the
/// runtime used last, so the fast paths find their context with one pointer
/// comparison.
#[repr(C)]
pub(crate) struct ThreadCtx<B: Backend> {
    header: CtxHeader,
    /// The nested fast path's counted spans and guard cache (see [`Fast`]).
    fast: Fast,
    info: Arc<ThreadInfo>,
    tag: u16,
    seq_start: u32,
    /// The furthest sequence number (counted from `seq_start`, modulo
    /// 2^19) that a runtime context of this thread had reached when it was
    /// dropped; at exit the tag is returned with the furthest of these and
    /// of the contexts still here, so the tag's next owner continues the
    /// sequence in every runtime (see [`Ticket`]).
    seq_end: u32,
    /// Set while a call is inside (a re-entrant call gets `Busy`).
    busy: bool,
    rts: Vec<RtCtx<B>>,
}

// ----- the nested fast path -------------------------------------------------

/// Nested spans the fast path counts before it leaves the next one to the
/// slow path (which makes frames of them).
const FAST_DEPTH: usize = 8;

/// The per-thread state of the nested fast path. A nested ensure (the
/// thread is attached to the target already, through the runtime it used
/// last) counts its span here instead of going through the call machinery,
/// and the matching release uncounts it. Plain fields, not atomics: only
/// the owning thread reads or writes them, and only while no call is
/// inside (`busy` clear), so no other reference to the context is live.
///
/// | `depth` | meaning |
/// |---|---|
/// | 0 | no counted nested span: `rts[0].frames` is the whole span stack, but for a counted re-attach span (`re_seq`, the second table) and the inline block's spans on top of it |
/// | 1..=[`FAST_DEPTH`] | the innermost `depth` spans below the inline block's are nested spans of `rts[0]`'s current interpreter, counted here (innermost last) on top of `rts[0].frames` and of a counted re-attach span, with sequence numbers `seqs[..depth]`; `rts[0].frames` has room for them beyond the `reserved` slots of `rts[0]`'s inline block and the re-attach span's slot (`pending`; checked when each was counted) |
///
/// The spans `rts[0]`'s inline block ([`InlineState`]) counts are the same
/// kind of nested span; a slow call pushes this table's first, then the
/// block's. Where the block numbers its spans (`InlineExport::tickets`),
/// `reserved` is set past any room while it is open, so this table counts
/// nothing then: one counter numbers the thread's spans.
///
/// The fast path reads `rts[0]` itself (its registry, current interpreter
/// and record, its tag and ticket counter); only `hint` mirrors anything
/// of it, and a stale hint costs a slow call, never a wrong answer (the
/// re-attach span's `re_` fields describe the span, which is not a frame
/// yet, and are read only while it is counted). Every slow
/// call begins by pushing the counted spans onto `rts[0].frames` as the
/// frames the slow path would have pushed ([`flush`]), never allocating, so
/// the slow path sees exactly the old state; thread exit does the same
/// before its cleanup.
///
/// The re-attach span (`with nogil:` then `with gil:`: step (b) of
/// [`RtCtx::ensure_steps`] on a thread attached to nothing, where the
/// search stops at the innermost frame that attached a thread state): the
/// fast path ([`fast_reattach`]) re-attaches that frame's detached thread
/// state and counts the span here instead of pushing its frame, and the
/// matching release ([`fast_release_reattach`]) detaches it again.
///
/// | `re_seq` | meaning |
/// |---|---|
/// | `NONE` | no re-attach span counted (the other `re_` fields mean nothing) |
/// | sequence number | a re-attach span of `rts[0]`'s thread state `re_idx` (record `re_ts`, interpreter `re_interp`, interp-local `re_il`), counted: `rts[0]` is attached to it (or to nothing, if its interpreter went while the thread waited for the lock); it is the innermost span below this table's `depth` spans and the inline block's, on top of `rts[0].frames`, which keeps a free slot for its frame (`pending`) |
///
/// A slow call pushes the counted re-attach span first (it is the
/// outermost of the counted spans), as the `Reattach` frame the slow path
/// would have pushed.
///
/// The guard cache (`guard_reg`, `guard`, `guard_epoch`, `guard_interp`;
/// `guard` 0 if empty): guard `guard` of registry `guard_reg` names
/// interpreter `guard_interp`, true while that registry's `guard_closes`
/// is still `guard_epoch` (no guard of it was closed since the lookup; ids
/// are generational, so an open guard's id names nothing else). It is
/// emptied whenever `rts[0]` changes, so `guard_reg` is always `rts[0]`'s
/// registry, kept alive by it (an address compared against is never a
/// freed and reused one).
#[repr(C)]
pub(crate) struct Fast {
    /// `rts[0]`'s current interpreter as the last call left it (0 if
    /// none): a hint only, so that an ensure that is not nested is told
    /// with one comparison (a match is checked against `rts[0]` itself).
    hint: u64,
    depth: u32,
    /// Free frame slots of `rts[0]` kept for the spans its inline block may
    /// count (its `limit`; 0 while closed): the fast path counts only into
    /// the rest.
    reserved: u32,
    seqs: [u32; FAST_DEPTH],
    guard_reg: *const (),
    guard: u64,
    guard_epoch: u64,
    guard_interp: u64,
    /// The counted re-attach span's sequence number, `NONE` if none (see
    /// the second table); the other `re_` fields are its frame's.
    re_seq: u32,
    /// Its interpreter (raw id).
    re_interp: u64,
    /// Its thread state's record: `rts[0].locals[re_idx]`'s `TState<B>`,
    /// kept alive by that entry.
    re_ts: *const (),
    /// Its thread state's local index and interp-local index in `rts[0]`.
    re_idx: u32,
    re_il: u32,
}

impl Fast {
    const EMPTY: Fast = Fast {
        hint: 0,
        depth: 0,
        reserved: 0,
        seqs: [0; FAST_DEPTH],
        guard_reg: std::ptr::null(),
        guard: 0,
        guard_epoch: 0,
        guard_interp: 0,
        re_seq: NONE,
        re_interp: 0,
        re_ts: std::ptr::null(),
        re_idx: NONE,
        re_il: NONE,
    };

    /// Frame slots a counted re-attach span will take when it is pushed.
    #[inline(always)]
    fn pending(&self) -> usize {
        usize::from(self.re_seq != NONE)
    }

    fn forget_guard(&mut self) {
        self.guard = 0;
    }
}

// ----- the inline path's exported block -----------------------------------

/// The per-thread block a header's `static inline` nested path reads and
/// writes without calling the library (`tse_ensure_inline` /
/// `tse_release_inline` in `tstate_ensure.h`; `docs/performance.md`, "The
/// inline path"). C layout: its fields are part of that facade's ABI.
///
/// One block per thread and facade runtime, in a thread-local of the facade
/// library with a constant initializer and no destructor (so it stays
/// readable for the thread's whole life, thread-exit destructors included);
/// the library hands its address out ([`InlineSlot`]) and the header caches
/// it in a thread-local of its own. Only the owning thread touches it: the
/// library while one of its calls runs on that thread, the header's inline
/// code between calls. The library reaches it through a raw pointer only,
/// never keeping a reference across anything that could run the header's
/// code.
///
/// | `open` | `depth` | meaning |
/// |---|---|---|
/// | 0 | 0 | closed: the inline functions call the exported ones |
/// | interpreter id | `0..=limit` | the thread is attached to `open` through this runtime (the one its last call used), whose record of the attached thread state is `expect`, and no call is inside; `depth` nested spans of `open` are counted here (innermost last), on top of the library's span stack and of the spans it counts itself; the span stack has room for all of them |
/// | 0 | > 0 | never: closing pushes the counted spans as frames first |
///
/// The inline ensure counts when `open` is the target, `depth < limit` and,
/// if `current` is set, `current()` returns `expect` (the backend's real
/// attached thread state is still the library's record: on CPython other
/// code may have detached it, e.g. `Py_BEGIN_ALLOW_THREADS`); the inline
/// release uncounts when `depth > 0` and the same `current` check holds.
/// Anything else calls the exported function, whose slow path sees the
/// counted spans as frames and reports misuse as it would
/// have. Every call of the library closes the block when it starts (while a
/// call is inside, as in a callback, the inline path takes the exported
/// function and gets `Busy` exactly as before) and opens it again when it
/// ends if the thread is attached through that runtime.
#[repr(C)]
pub struct InlineState {
    /// The interpreter id the inline ensure may count nested spans of; 0:
    /// closed.
    pub open: u64,
    /// Nested spans counted by the inline path.
    pub depth: u32,
    /// How many the inline path may count (`depth` stays below or at it).
    pub limit: u32,
    /// Reads the backend's attached thread state (CPython:
    /// `PyThreadState_GetUnchecked` or `_PyThreadState_UncheckedGet`);
    /// NULL where no other code can switch thread states (the model).
    pub current: Option<unsafe extern "C" fn() -> *mut std::ffi::c_void>,
    /// What `current` returns while the library's record is attached.
    pub expect: *mut std::ffi::c_void,
    /// The designs that hand out tickets (a ticket is `tag_bits | seq`):
    /// the thread's tag shifted into place, never 0 while open. 0 in a
    /// block of a design without tickets.
    pub tag_bits: u32,
    /// The designs with tickets: the sequence number the next counted span
    /// takes (modulo 2¹⁹); the library's own counter while the block is
    /// open.
    pub next_seq: u32,
    /// The designs with tickets: the counted spans' sequence numbers,
    /// innermost last (`seqs[..depth]`). (The length is
    /// [`INLINE_DEPTH`], spelled out for the C header.)
    pub seqs: [u32; 16],
    /// The guard design: a guard id known to name `open` (0: none; never
    /// set while closed), valid while the counter at `guard_closes` still
    /// reads `guard_epoch` (no guard of this runtime was closed since it
    /// was looked up; ids are generational, so an open guard's id names
    /// nothing else).
    pub guard: u64,
    /// The guard design: the runtime's count of closed guards when `guard`
    /// was looked up.
    pub guard_epoch: u64,
    /// The guard design: the runtime's count of closed guards, an atomic
    /// 64-bit word (read it with an acquire load); NULL in a block of a
    /// design without guards. Valid while `guard` is not 0.
    pub guard_closes: *const u64,
    /// The guard design: the code of the thread's last failed pointer or
    /// `void` call (its `tsg_last_error`), 0 after a success; the inline
    /// ensure writes 0 when it counts.
    pub last_error: i32,
}

impl InlineState {
    /// The closed block (a thread-local's initializer).
    pub const CLOSED: InlineState = InlineState {
        open: 0,
        depth: 0,
        limit: 0,
        current: None,
        expect: std::ptr::null_mut(),
        tag_bits: 0,
        next_seq: 0,
        seqs: [0; INLINE_DEPTH],
        guard: 0,
        guard_epoch: 0,
        guard_closes: std::ptr::null(),
        last_error: 0,
    };

    /// [`try_count`](Self::try_count) as far as it goes without calling
    /// `current`: so that a facade's exported function, on the model,
    /// counts without a call (and without saving registers for one);
    /// [`InlineStep::Check`] where the backend needs the check (then call
    /// `try_count`, from a function of its own).
    #[inline(always)]
    pub fn count_uncalled(&mut self, interp: u64) -> InlineStep {
        let step = self.may_count(interp);
        if step == InlineStep::Done {
            self.depth += 1;
        }
        step
    }

    /// [`try_uncount`](Self::try_uncount) without calling `current`, as
    /// [`count_uncalled`](Self::count_uncalled).
    #[inline(always)]
    pub fn uncount_uncalled(&mut self) -> InlineStep {
        let step = self.may_uncount(self.depth > 0);
        if step == InlineStep::Done {
            self.depth -= 1;
        }
        step
    }

    /// The header's inline ensure, in Rust: counts a nested span of
    /// `interp` and returns `true`, or returns `false` (call the library)
    /// — the rule of the table above.
    ///
    /// # Safety
    /// `self` is the calling thread's block, as the library fills it (its
    /// `current`, if set, is the backend's C function of no argument), and
    /// no library call is running on this thread.
    #[inline(always)]
    pub unsafe fn try_count(&mut self, interp: u64) -> bool {
        // SAFETY: forwarded contract.
        let ok = unsafe { self.passes(self.may_count(interp)) };
        if ok {
            self.depth += 1;
        }
        ok
    }

    /// The header's inline release, in Rust: uncounts the innermost
    /// counted span and returns `true`, or returns `false` (call the
    /// library, which also reports misuse).
    ///
    /// # Safety
    /// As [`try_count`](Self::try_count).
    #[inline(always)]
    pub unsafe fn try_uncount(&mut self) -> bool {
        // SAFETY: forwarded contract.
        let ok = unsafe { self.passes(self.may_uncount(self.depth > 0)) };
        if ok {
            self.depth -= 1;
        }
        ok
    }

    /// The inline is-attached check as far as it goes without calling
    /// `current`: [`InlineStep::Done`] if the thread is attached to
    /// `interp` (the block is open on it); `Library` if the block cannot
    /// tell (closed, or open on another interpreter: ask the library).
    #[inline(always)]
    pub fn attached_uncalled(&self, interp: u64) -> InlineStep {
        self.step(interp != 0 && self.open == interp)
    }

    /// The inline is-attached check: `true` if the thread is attached to
    /// `interp` as the block says; `false`: ask the library.
    ///
    /// # Safety
    /// As [`try_count`](Self::try_count).
    #[inline(always)]
    pub unsafe fn try_attached(&self, interp: u64) -> bool {
        // SAFETY: forwarded contract.
        unsafe { self.passes(self.attached_uncalled(interp)) }
    }

    /// The ticket designs' inline ensure as far as it goes without calling
    /// `current` ([`count_uncalled`](Self::count_uncalled) with a ticket):
    /// `Ok(ticket)` if counted.
    #[inline(always)]
    pub fn ticket_uncalled(&mut self, interp: u64) -> std::result::Result<u32, InlineStep> {
        match self.may_count(interp) {
            InlineStep::Done => Ok(self.push_ticket()),
            step => Err(step),
        }
    }

    /// The ticket designs' inline ensure: `Some(ticket)` if counted.
    ///
    /// # Safety
    /// As [`try_count`](Self::try_count).
    #[inline(always)]
    pub unsafe fn try_ticket(&mut self, interp: u64) -> Option<u32> {
        // SAFETY: forwarded contract.
        unsafe { self.passes(self.may_count(interp)) }.then(|| self.push_ticket())
    }

    /// The guard design's inline ensure under guard `g` as far as it goes
    /// without calling `current`: `Ok(ticket)` if counted (`g` is the
    /// block's guard, still valid, and the block may count).
    #[inline(always)]
    pub fn guard_ticket_uncalled(&mut self, g: u64) -> std::result::Result<u32, InlineStep> {
        match self.may_count_guarded(g) {
            InlineStep::Done => Ok(self.push_ticket()),
            step => Err(step),
        }
    }

    /// The guard design's inline ensure: `Some(ticket)` if counted.
    ///
    /// # Safety
    /// As [`try_count`](Self::try_count).
    #[inline(always)]
    pub unsafe fn try_guard_ticket(&mut self, g: u64) -> Option<u32> {
        // SAFETY: forwarded contract.
        unsafe { self.passes(self.may_count_guarded(g)) }.then(|| self.push_ticket())
    }

    /// The ticket designs' inline release of `ticket` as far as it goes
    /// without calling `current`: uncounted if it is the innermost counted
    /// span's (anything else — out of order, stale, forged, a frame's —
    /// goes to the library, which reports it).
    #[inline(always)]
    pub fn release_ticket_uncalled(&mut self, ticket: u32) -> InlineStep {
        let step = self.may_uncount(self.innermost_is(ticket));
        if step == InlineStep::Done {
            self.depth -= 1;
        }
        step
    }

    /// The ticket designs' inline release: `true` if uncounted.
    ///
    /// # Safety
    /// As [`try_count`](Self::try_count).
    #[inline(always)]
    pub unsafe fn try_release_ticket(&mut self, ticket: u32) -> bool {
        // SAFETY: forwarded contract.
        let ok = unsafe { self.passes(self.may_uncount(self.innermost_is(ticket))) };
        if ok {
            self.depth -= 1;
        }
        ok
    }

    /// Whether the block may count a span of `interp` (a closed block has
    /// open 0 and limit 0: never).
    #[inline(always)]
    fn may_count(&self, interp: u64) -> InlineStep {
        self.step(self.open == interp && self.depth < self.limit)
    }

    /// Whether the block may count a span under guard `g`: `g` is its
    /// guard (so the block is open on `g`'s interpreter), no guard was
    /// closed since the lookup, and there is room.
    #[inline(always)]
    fn may_count_guarded(&self, g: u64) -> InlineStep {
        self.step(
            g != 0
                && g == self.guard
                && self.depth < self.limit
                // SAFETY: `guard` is not 0, so `guard_closes` points to
                // the live runtime's counter (see the field).
                && unsafe { crate::sync::load_counter(self.guard_closes) } == self.guard_epoch,
        )
    }

    /// Whether the block may uncount its innermost counted span, given
    /// `innermost`: the caller's check that it is the one to release.
    #[inline(always)]
    fn may_uncount(&self, innermost: bool) -> InlineStep {
        self.step(innermost)
    }

    /// `Library` unless `ok`; then `Check` if `current` must agree first,
    /// else `Done`. Every inline decision is its condition and this.
    #[inline(always)]
    fn step(&self, ok: bool) -> InlineStep {
        if !ok {
            InlineStep::Library
        } else if self.current.is_some() {
            InlineStep::Check
        } else {
            InlineStep::Done
        }
    }

    /// Resolves `step`: `Check` by calling `current`.
    ///
    /// # Safety
    /// As [`try_count`](Self::try_count).
    #[inline(always)]
    unsafe fn passes(&self, step: InlineStep) -> bool {
        match step {
            InlineStep::Done => true,
            // SAFETY: forwarded contract.
            InlineStep::Check => unsafe { self.record_is_current() },
            InlineStep::Library => false,
        }
    }

    /// Counts a span (`depth < limit` checked) and returns its ticket.
    #[inline(always)]
    fn push_ticket(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = (seq + 1) & Ticket::SEQ_MASK;
        // `depth < limit <= INLINE_DEPTH`: in bounds
        self.seqs[self.depth as usize % INLINE_DEPTH] = seq;
        self.depth += 1;
        self.tag_bits | seq
    }

    /// Whether `ticket` is the innermost counted span's.
    #[inline(always)]
    fn innermost_is(&self, ticket: u32) -> bool {
        self.depth > 0
            && ticket == self.tag_bits | self.seqs[(self.depth as usize - 1) % INLINE_DEPTH]
    }

    /// # Safety
    /// As [`try_count`](Self::try_count).
    #[inline(always)]
    unsafe fn record_is_current(&self) -> bool {
        match self.current {
            None => true,
            // SAFETY: the backend's function of no argument that only
            // reads its attached thread state (the contract).
            Some(f) => (unsafe { f() }) == self.expect,
        }
    }
}

/// What [`InlineState::count_uncalled`] and
/// [`InlineState::uncount_uncalled`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InlineStep {
    /// Counted (or uncounted).
    Done,
    /// Not for the block: call the library.
    Library,
    /// The backend's thread state must be checked first: call
    /// [`InlineState::try_count`] (or `try_uncount`).
    Check,
}

/// Returns the calling thread's [`InlineState`] block of a facade runtime
/// (never NULL; valid for the thread's whole life).
pub type InlineSlot = fn() -> *mut InlineState;

/// A runtime's inline blocks (given to
/// [`crate::Runtime::export_inline_state`]).
#[derive(Clone, Copy)]
pub struct InlineExport {
    /// Where each thread's block is.
    pub slot: InlineSlot,
    /// The design hands out tickets: its inline path counts spans with
    /// sequence numbers (`tag_bits`, `next_seq`, `seqs`).
    pub tickets: bool,
}

// The block's size as `docs/performance.md` (Memory) states it.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<InlineState>() == 136);

/// Nested spans the inline path may count at most (and at most half the
/// free frame slots, so the library's own fast path keeps the other half).
pub const INLINE_DEPTH: usize = 16;
// `InlineState::seqs` spells the length out for the C header
const _: () = assert!(INLINE_DEPTH == 16);

/// Pushes the counted spans onto `rts[0]`'s frames and closes the inline
/// block (a slow call begins, or the thread exits).
#[inline(always)]
fn flush<B: Backend>(t: &mut ThreadCtx<B>) {
    if t.fast.re_seq != NONE {
        flush_reattach(t);
    }
    if t.fast.depth > 0 {
        flush_counted(t);
    }
    if let Some(c) = t.rts.first_mut()
        && !c.inline.is_null()
    {
        close_inline(&mut t.fast, c);
    }
}

/// Closes `c`'s inline block, pushing the spans it counted as frames.
#[inline(always)]
fn close_inline<B: Backend>(f: &mut Fast, c: &mut RtCtx<B>) {
    // SAFETY: `c.inline` is this thread's block (`InlineSlot`), live for
    // the thread's life; only this thread touches it, and no other
    // reference to it exists while the library runs on this thread.
    let s = unsafe { &mut *c.inline };
    if s.open == 0 {
        // closed: nothing counted, nothing reserved (see `InlineState`)
        return;
    }
    let depth = s.depth;
    s.open = 0;
    s.depth = 0;
    s.limit = 0;
    s.guard = 0;
    f.reserved = 0;
    if c.inline_tickets {
        // the block's sequence numbers were the context's while it was open
        c.next_seq = s.next_seq;
    }
    if depth > 0 {
        push_inline_counted(c, depth);
    }
}

#[cold]
fn push_inline_counted<B: Backend>(c: &mut RtCtx<B>, depth: u32) {
    // counted only while `c` was attached to `current_interp` (see
    // `InlineState`), with room reserved for them
    let il = c.local(c.current).il;
    for k in 0..depth as usize {
        let seq = if c.inline_tickets {
            // SAFETY: as in `close_inline`; `depth <= INLINE_DEPTH`.
            unsafe { (*c.inline).seqs[k % INLINE_DEPTH] }
        } else {
            c.ticket().1
        };
        c.push_counted(il, seq);
    }
}

/// Opens `c`'s inline block if the thread is attached through `c` (a call
/// ends; `c` is `rts[0]`), reserving room for the spans it may count
/// beyond the `pending` slots of counted spans not yet pushed
/// ([`Fast::pending`]: 0 as a slow call ends, which pushed them all).
#[inline(always)]
fn open_inline<B: Backend>(f: &mut Fast, c: &RtCtx<B>, pending: usize) {
    let room = c.frames.capacity() - c.frames.len() - pending;
    let limit = (room / 2).min(INLINE_DEPTH);
    // `current_interp` is 0 whenever nothing is attached (`clear_current`)
    if c.current_interp == 0 || limit == 0 {
        return;
    }
    // SAFETY: as in `close_inline`.
    let s = unsafe { &mut *c.inline };
    // `current` and `tag_bits` were set with the context (`init_inline`);
    // the block is closed, so `depth` is 0
    if c.inline_tickets {
        if s.tag_bits == 0 {
            // no tag, no tickets: the library refuses
            return;
        }
        s.next_seq = c.next_seq;
        // the guard design: the thread's cached guard, if it names the
        // interpreter the block opens on (`Fast`: the cache is `rts[0]`'s
        // registry's; 0 if empty)
        if f.guard_interp == c.current_interp {
            s.guard = f.guard;
            s.guard_epoch = f.guard_epoch;
        }
        // both would number spans: the fast path keeps off while the block
        // (the one counter then) is open. More than any room, and `d +
        // reserved` cannot overflow even where usize is 32 bits.
        f.reserved = u32::MAX / 2;
    } else {
        // the fast path keeps off the block's share of the frames
        f.reserved = limit as u32;
    }
    if B::EXTERNAL_SWITCHES {
        s.expect = c.current_raw as *mut std::ffi::c_void;
    }
    s.limit = limit as u32;
    s.open = c.current_interp;
}

/// Sets the fields of `c`'s inline block that stay as they are for the
/// context's life (a new context: its block is closed).
fn init_inline<B: Backend>(c: &RtCtx<B>) {
    if c.inline.is_null() {
        return;
    }
    // SAFETY: as in `close_inline`.
    let s = unsafe { &mut *c.inline };
    s.current = if B::EXTERNAL_SWITCHES {
        c.backend().current_fn()
    } else {
        None
    };
    s.tag_bits = if c.inline_tickets && c.tag != 0 {
        Ticket::new(c.tag, 0).to_raw()
    } else {
        0
    };
    // the context's registry (kept alive by it) is this block's for the
    // context's life; read only while `guard` is set
    s.guard_closes = crate::sync::counter_ptr(&c.reg.guard_closes);
}

/// Pushes the counted re-attach span onto `rts[0]`'s frames (see `Fast`).
#[inline(never)]
fn flush_reattach<B: Backend>(t: &mut ThreadCtx<B>) {
    let f = &mut t.fast;
    let seq = std::mem::replace(&mut f.re_seq, NONE);
    if let Some(c) = t.rts.first_mut() {
        // its slot was kept free (`Fast::pending`): never allocates
        c.frames.push(Frame {
            kind: FrameKind::Reattach,
            ts: f.re_idx,
            prev: NONE,
            seq,
            il: f.re_il,
            interp: f.re_interp,
            guard: 0,
        });
    }
}

#[cold]
fn flush_counted<B: Backend>(t: &mut ThreadCtx<B>) {
    let depth = std::mem::take(&mut t.fast.depth) as usize;
    // counted: `rts[0]` is attached to their interpreter (see `Fast`)
    let Some(c) = t.rts.first_mut() else {
        return;
    };
    let il = c.local(c.current).il;
    for &seq in &t.fast.seqs[..depth.min(FAST_DEPTH)] {
        // room was checked when the span was counted: never allocates
        c.push_counted(il, seq);
    }
}

/// This thread's fast state and its context for `reg`, if it has them,
/// `reg`'s is the runtime it used last (`rts[0]`), its record is the
/// backend's current thread state, and no call is inside; `None` otherwise
/// (take the slow path). The caller makes no call back into the library
/// while it holds them.
/// `pre` is checked first, on the fast state alone (a quick reject).
#[inline(always)]
fn fast_ctx<'a, B: Backend>(
    reg: &Registry<B>,
    pre: impl FnOnce(&Fast) -> bool,
) -> Option<(&'a mut Fast, &'a mut RtCtx<B>)> {
    let t = idle_ctx::<B>()?;
    if !pre(&t.fast) {
        return None;
    }
    let c = t.rts.first_mut()?;
    if !std::ptr::eq(Arc::as_ptr(&c.reg), reg) || !c.record_is_current() {
        return None;
    }
    Some((&mut t.fast, c))
}

/// The nested ensure fast path: `Some(ticket)` if the thread is attached to
/// `id` through `reg`'s record (the span is counted), `None` to take the
/// slow path. `need_tag`: the design hands tickets out (refused by the slow
/// path on a thread without a tag).
#[inline(always)]
pub(crate) fn fast_ensure<B: Backend>(
    reg: &Registry<B>,
    id: u64,
    need_tag: bool,
) -> Option<Ticket> {
    let (f, c) = fast_ctx(reg, |f| f.hint == id)?;
    count_nested(f, c, id, need_tag)
}

/// Counts a nested span of `id` if `c` is attached to it (with room for
/// its frame should a slow call follow).
#[inline(always)]
fn count_nested<B: Backend>(
    f: &mut Fast,
    c: &mut RtCtx<B>,
    id: u64,
    need_tag: bool,
) -> Option<Ticket> {
    let d = f.depth as usize;
    if id == 0
        || c.current_interp != id
        || d >= FAST_DEPTH
        || c.frames.capacity() - c.frames.len() <= d + f.reserved as usize + f.pending()
        || (need_tag && c.tag == 0)
    {
        return None;
    }
    let (t, seq) = c.ticket();
    f.seqs[d] = seq;
    f.depth += 1;
    Some(t)
}

/// The guard design's nested ensure fast path: `Some(ticket)` if guard `g`
/// is the thread's cached guard of `reg` (no guard closed since its
/// lookup) and the thread is attached to its interpreter (the span is
/// counted); `None` to take the slow path.
#[inline(always)]
pub(crate) fn fast_ensure_guarded<B: Backend>(reg: &Registry<B>, g: u64) -> Option<Ticket> {
    let (f, c) = fast_ctx(reg, |f| guard_cached(f, reg, g))?;
    let id = f.guard_interp;
    count_nested(f, c, id, true)
}

#[inline(always)]
fn guard_cached<B: Backend>(f: &Fast, reg: &Registry<B>, g: u64) -> bool {
    g != 0
        && f.guard == g
        && std::ptr::eq(f.guard_reg, (reg as *const Registry<B>).cast())
        && reg.guard_closes.load(Ordering::Acquire) == f.guard_epoch
}

/// The thread-stored release fast path: uncounts the innermost counted
/// span; `false` to take the slow path.
#[inline(always)]
pub(crate) fn fast_release<B: Backend>(reg: &Registry<B>) -> bool {
    match fast_ctx(reg, |f| f.depth > 0) {
        Some((f, _)) => {
            f.depth -= 1;
            true
        }
        _ => false,
    }
}

/// The ticket release fast path: uncounts the innermost counted span if it
/// is `t`'s; `false` to take the slow path (which also reports misuse).
#[inline(always)]
pub(crate) fn fast_release_ticket<B: Backend>(reg: &Registry<B>, t: Ticket) -> bool {
    let Some((f, c)) = fast_ctx(reg, |f| f.depth > 0) else {
        return false;
    };
    match f.seqs.get(f.depth as usize - 1) {
        Some(&seq) if c.tag != 0 && Ticket::new(c.tag, seq) == t => {
            f.depth -= 1;
            true
        }
        _ => false,
    }
}

/// Whether the thread is attached to `id`, when the runtime used last is
/// `reg`'s and its record is current; `None` to ask the slow path.
#[inline(always)]
pub(crate) fn fast_is_attached<B: Backend>(reg: &Registry<B>, id: u64) -> Option<bool> {
    let (_, c) = fast_ctx(reg, |_| true)?;
    Some(id != 0 && c.current_interp == id)
}

/// Clears `busy` as it drops, also by unwinding (a fast path's call into
/// the backend, see [`fast_reattach`]).
struct BusyGuard<B: Backend>(*mut ThreadCtx<B>);
impl<B: Backend> Drop for BusyGuard<B> {
    fn drop(&mut self) {
        // SAFETY: this thread's live context (freed only by its exit
        // destructor, never while a fast path runs); the fast path's own
        // reference to it is no longer used.
        unsafe { (*self.0).busy = false };
    }
}

/// The re-attach fast path (`with nogil:` then `with gil:`): `Some(ticket)`
/// when the thread is attached to nothing through `reg` and the innermost
/// frame of `rts[0]` that attached a thread state (only nested spans above
/// it) holds `id` open through that thread state, now detached (a save
/// inside its span): re-attaches it (may wait for the lock) and counts the
/// span (see `Fast`), exactly as step (b) of [`RtCtx::ensure_steps`] would
/// push it. `need_tag`: as [`fast_ensure`].
/// `None`, nothing changed, to take the slow path.
///
/// # Safety
/// `p` is as [`idle_ptr`] returns it (see [`with_ctx_or`]).
#[inline(always)]
unsafe fn fast_reattach<B: Backend>(
    p: *mut ThreadCtx<B>,
    reg: &Registry<B>,
    id: u64,
    need_tag: bool,
) -> Option<Ticket> {
    // SAFETY: as in `idle_ctx` (the contract); not used once `_busy` drops.
    let t = unsafe { &mut *p };
    let f = &mut t.fast;
    // (counted nested spans, `depth`, need an attached thread: checked
    // with `current` below; `fr.interp` is never 0, so neither is `id`)
    if f.re_seq != NONE {
        return None;
    }
    let c = t.rts.first_mut()?;
    // the innermost frame that attached a thread state (above it only
    // nested spans, which step (b)'s search passes over too)
    let fr = match c.frames.last()? {
        f if f.ts != NONE => *f,
        _ => *c.frames.iter().rev().find(|f| f.ts != NONE)?,
    };
    if c.current != NONE
        || fr.interp != id
        || c.frames.len() == c.frames.capacity()
        || (need_tag && c.tag == 0)
        || !std::ptr::eq(Arc::as_ptr(&c.reg), reg)
        || !c.record_is_current()
    {
        return None;
    }
    let ts: &TState<B> = &c.locals.get(fr.ts as usize)?.as_ref()?.ts;
    if ts.is_deleted() {
        return None;
    }
    // the backend may wait for the lock: a call is inside meanwhile
    t.busy = true;
    let _busy = BusyGuard(p);
    c.backend().attach(&ts.interp, ts, false);
    let (interp, raw) = (ts.interp.id.as_raw(), B::raw(ts));
    f.re_ts = (ts as *const TState<B>).cast();
    if ts.is_deleted() {
        // its interpreter went while this thread waited (a daemon span):
        // the span is counted all the same, attached to nothing, as the
        // slow path leaves it; its release takes the slow path
        c.backend().detach(&ts.interp, ts);
    } else {
        ts.set_attached(true);
        c.mark_current(fr.ts, interp, raw);
    }
    let (tk, seq) = c.ticket();
    f.re_seq = seq;
    f.re_interp = id;
    f.re_idx = fr.ts;
    f.re_il = fr.il;
    f.hint = c.current_interp;
    if !c.inline.is_null() {
        open_inline(f, c, f.pending());
    }
    Some(tk)
}

/// The release of a counted re-attach span (the thread-stored release if
/// `ticket` is `None`, else of that ticket): `Some` if it is the innermost
/// span, its thread state is the attached one and its interpreter is not
/// gone — then the thread state is detached again, as the slow path's
/// `leave` does. `None`, nothing changed, to take the slow path (which
/// also reports misuse).
///
/// # Safety
/// As [`fast_reattach`].
#[inline(always)]
unsafe fn fast_release_reattach<B: Backend>(
    p: *mut ThreadCtx<B>,
    reg: &Registry<B>,
    ticket: Option<Ticket>,
) -> Option<()> {
    // SAFETY: as in `fast_reattach`.
    let t = unsafe { &mut *p };
    let f = &mut t.fast;
    if f.re_seq == NONE || f.depth != 0 {
        return None;
    }
    let c = t.rts.first_mut()?;
    if !std::ptr::eq(Arc::as_ptr(&c.reg), reg)
        || c.current != f.re_idx
        || c.inline_depth() != 0
        || !c.record_is_current()
        || ticket.is_some_and(|tk| c.tag == 0 || Ticket::new(c.tag, f.re_seq) != tk)
    {
        return None;
    }
    // SAFETY: `re_seq` is set, so `re_ts` is `rts[0].locals[re_idx]`'s
    // record (`Fast`), which only a call could remove, and every call
    // begins by pushing the span as a frame (`flush`), clearing `re_seq`.
    let ts = unsafe { &*f.re_ts.cast::<TState<B>>() };
    if ts.is_deleted() || ts.interp.gate.is_gone() {
        return None;
    }
    t.busy = true;
    let _busy = BusyGuard(p);
    if !c.inline.is_null() {
        // counts nothing (checked): this only closes it
        close_inline(f, c);
    }
    ts.set_attached(false);
    c.backend().detach(&ts.interp, ts);
    c.clear_current();
    f.re_seq = NONE;
    f.hint = 0;
    Some(())
}

/// An ensure of `id` past the nested fast path: the re-attach fast path
/// ([`fast_reattach`]; `need_tag` as there), else `f` on the context, as
/// [`with_ctx`].
#[inline(always)]
pub(crate) fn with_ctx_reattach<B: Backend>(
    reg: &Arc<Registry<B>>,
    id: u64,
    need_tag: bool,
    f: impl FnOnce(&mut RtCtx<B>) -> Result<Ticket>,
) -> Result<Ticket> {
    let r = &**reg;
    // SAFETY: `fast_reattach` treats `p` as `idle_ptr`'s and makes no call
    // into the library (its contract is `with_ctx_or`'s).
    unsafe { with_ctx_or(reg, |p| fast_reattach(p, r, id, need_tag), f) }
}

/// A release past the nested fast path: the release of a counted re-attach
/// span ([`fast_release_reattach`]; `ticket` as there), answered with
/// `none` (the answer `f` would give for a span owning nothing), else `f`
/// on the context, as [`with_ctx`].
#[inline(always)]
pub(crate) fn with_ctx_release<B: Backend, R>(
    reg: &Arc<Registry<B>>,
    ticket: Option<Ticket>,
    none: R,
    f: impl FnOnce(&mut RtCtx<B>) -> Result<R>,
) -> Result<R> {
    let r = &**reg;
    // SAFETY: as in `with_ctx_reattach`.
    unsafe {
        with_ctx_or(
            reg,
            |p| fast_release_reattach(p, r, ticket).map(|()| none),
            f,
        )
    }
}

/// This thread's context for backend `B` while no call is inside it
/// (`None` if it has none, or a call is inside). The caller makes no call
/// back into the library while it holds it.
#[inline(always)]
fn idle_ctx<'a, B: Backend>() -> Option<&'a mut ThreadCtx<B>> {
    let p = idle_ptr::<B>()?;
    // SAFETY: this thread's live context with no call inside (`idle_ptr`),
    // so no other reference to it is live (and the fast paths make no call
    // back into the library).
    Some(unsafe { &mut *p })
}

/// This thread's context for backend `B` if it has one and no call is
/// inside it.
#[inline(always)]
fn idle_ptr<B: Backend>() -> Option<*mut ThreadCtx<B>> {
    let p = B::ctx_ptr()?.cast::<ThreadCtx<B>>();
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null slot holds this thread's live context. `busy` is
    // read through the raw place: while it is clear no call is inside on
    // this thread, so no reference to the context is live.
    if unsafe { (*p).busy } {
        return None;
    }
    Some(p)
}

/// The interpreter of guard `g` from the thread's guard cache, if it is
/// `reg`'s and no guard of `reg` was closed since it was looked up.
#[inline(always)]
pub(crate) fn cached_guard<B: Backend>(reg: &Registry<B>, g: u64) -> Option<u64> {
    let f = &idle_ctx::<B>()?.fast;
    guard_cached(f, reg, g).then_some(f.guard_interp)
}

/// Remembers that guard `g` of `reg` (looked up when its `guard_closes`
/// was `epoch`) names interpreter `interp`. Only right after a call on
/// `reg` succeeded: `rts[0]` is then `reg`'s context (see `Fast`).
pub(crate) fn cache_guard<B: Backend>(reg: &Registry<B>, g: u64, epoch: u64, interp: u64) {
    let Some(t) = idle_ctx::<B>() else {
        return;
    };
    let f = &mut t.fast;
    f.guard_reg = (reg as *const Registry<B>).cast();
    f.guard = g;
    f.guard_epoch = epoch;
    f.guard_interp = interp;
    // and in `rts[0]`'s inline block, if it is open on that interpreter
    // (it was opened as the call ended, before this lookup was cached)
    if let Some(c) = t.rts.first()
        && !c.inline.is_null()
        && c.inline_tickets
        && std::ptr::eq(Arc::as_ptr(&c.reg), reg)
    {
        // SAFETY: as in `close_inline`; no call is inside (`idle_ctx`).
        let s = unsafe { &mut *c.inline };
        // (`interp` is a guard's interpreter: never 0, as a closed block's
        // `open` is)
        if s.open == interp {
            s.guard = g;
            s.guard_epoch = epoch;
        }
    }
}

/// The calling thread's identity for a holder report: its context's
/// record if it has one (no system call, no allocation), else read now.
pub(crate) fn this_thread_info<B: Backend>() -> Arc<ThreadInfo> {
    match idle_ctx::<B>() {
        Some(t) => t.info.clone(),
        None => Arc::new(read_thread_info(0)),
    }
}

/// Reads the calling thread's OS id and name (a system call each).
fn read_thread_info(number: u64) -> ThreadInfo {
    ThreadInfo {
        number,
        os_tid: std::sync::atomic::AtomicU64::new(crate::sync::os_thread_id()),
        name: crate::sync::thread_name(),
    }
}

/// Marks a call inside for as long as it lives (made by [`enter`]); its
/// drop, also by unwinding, resets `busy`.
struct CallGuard<B: Backend>(*mut ThreadCtx<B>);
impl<B: Backend> Drop for CallGuard<B> {
    fn drop(&mut self) {
        // SAFETY: points to the thread's live context, which is freed only
        // by the exit destructor, never while a call is inside; the call's
        // own borrows of it ended before this guard drops.
        let t = unsafe { &mut *self.0 };
        match t.rts.first() {
            Some(c) => {
                t.fast.hint = c.current_interp;
                if !c.inline.is_null() {
                    // the call pushed every counted span (`flush`)
                    open_inline(&mut t.fast, c, 0);
                }
            }
            None => t.fast.hint = 0,
        }
        t.busy = false;
    }
}

/// Starts a call on this thread's context `p` (non-null): `Busy` if one is
/// inside already; else the fast path's counted spans become frames, and
/// the context is busy until the returned guard drops.
///
/// # Safety
/// `p` must be this thread's live context of backend `B`.
#[inline]
unsafe fn enter<'a, B: Backend>(
    p: *mut ThreadCtx<B>,
) -> Result<(&'a mut ThreadCtx<B>, CallGuard<B>)> {
    // SAFETY: this thread's live context (the contract). No other
    // reference to it is live: a call inside would have set `busy`, which
    // is read first through the raw place.
    if unsafe { (*p).busy } {
        return Err(Error::Busy);
    }
    // SAFETY: as above, and not busy: no call is inside on this thread.
    let t = unsafe { &mut *p };
    t.busy = true;
    flush(t);
    Ok((t, CallGuard(p)))
}

impl<B: Backend> ThreadCtx<B> {
    /// Keeps `next` in `seq_end` if it is further from `seq_start` (modulo
    /// 2^19) than what is there.
    fn note_seq(&mut self, next: u32) {
        let adv = |s: u32| s.wrapping_sub(self.seq_start) & Ticket::SEQ_MASK;
        if adv(next) > adv(self.seq_end) {
            self.seq_end = next;
        }
    }
}

#[cold]
fn new_thread_ctx<B: Backend>() -> Result<*mut ThreadCtx<B>> {
    let number = crate::sync::next_thread_number();
    let info = Arc::new(read_thread_info(number));
    let (tag, seq_start) = alloc_tag(number);
    let ctx = Box::new(ThreadCtx::<B> {
        header: CtxHeader { number },
        fast: Fast::EMPTY,
        info,
        tag,
        seq_start,
        seq_end: seq_start,
        busy: false,
        rts: Vec::new(),
    });
    let p = Box::into_raw(ctx);
    let slot = B::ctx_slot();
    let stored = slot.tls.try_with(|c| c.ptr.set(p.cast()));
    if stored.is_err() {
        // SAFETY: `p` came from Box::into_raw above and was not shared.
        drop(unsafe { Box::from_raw(p) });
        free_tag(tag, seq_start);
        return Err(Error::WrongThread);
    }
    register_exit::<B>(slot, p.cast());
    // a live allocation, freed only by the exit destructor at this
    // thread's end
    Ok(p)
}

#[cfg(not(loom))]
fn register_exit<B: Backend>(slot: &'static CtxSlot, p: *mut ()) {
    let key = *slot.key.get_or_init(|| {
        let mut k: libc::pthread_key_t = 0;
        // SAFETY: `k` is a valid out-pointer; the destructor has the C
        // signature glibc calls.
        let rc = unsafe { libc::pthread_key_create(&mut k, Some(exit_key_destructor::<B>)) };
        assert_eq!(rc, 0, "pthread_key_create failed");
        k
    });
    // SAFETY: `key` was created above; the value is only handed back to
    // our destructor.
    unsafe { libc::pthread_setspecific(key, p.cast()) };
}

#[cfg(loom)]
fn register_exit<B: Backend>(slot: &'static CtxSlot, _p: *mut ()) {
    let _ = slot
        .tls
        .try_with(|c| c.exit.set(Some(exit_ctx::<B> as unsafe fn(*mut ()))));
}

#[cfg(not(loom))]
unsafe extern "C" fn exit_key_destructor<B: Backend>(p: *mut libc::c_void) {
    // SAFETY: glibc passes back the value stored by `register_exit`: a
    // `ThreadCtx<B>` made by `new_thread_ctx::<B>`.
    unsafe { exit_ctx::<B>(p.cast()) };
}

/// The thread-exit cleanup: closes every span, frees every thread state of
/// the thread, returns its tag, frees the context.
///
/// # Safety
/// `p` must be this thread's context of backend `B`, not used afterwards.
unsafe fn exit_ctx<B: Backend>(p: *mut ()) {
    let p = p.cast::<ThreadCtx<B>>();
    // SAFETY: per the contract, `p` is a live context of this thread.
    let t = unsafe { &mut *p };
    // calls made while the cleanup runs (e.g. from `__del__` on CPython)
    // see the context busy
    t.busy = true;
    flush(t);
    for rt in std::mem::take(&mut t.rts) {
        t.note_seq(rt.next_seq);
        rt.exit();
    }
    free_tag(t.tag, t.seq_end);
    let _ = B::ctx_slot().tls.try_with(|c| {
        if c.ptr.get() == p.cast() {
            c.ptr.set(std::ptr::null_mut());
        }
    });
    // SAFETY: made by Box::into_raw in `new_thread_ctx`; nothing refers to
    // it any more (the slot was cleared).
    drop(unsafe { Box::from_raw(p) });
}

/// Runs `f` on this thread's context for `reg`, creating it on first use.
/// A re-entrant call (from inside another call on this thread) gets `Busy`.
#[inline]
pub(crate) fn with_ctx<B: Backend, R>(
    reg: &Arc<Registry<B>>,
    f: impl FnOnce(&mut RtCtx<B>) -> Result<R>,
) -> Result<R> {
    // SAFETY: a closure that does nothing keeps any contract.
    unsafe { with_ctx_or(reg, |_| None, f) }
}

/// As [`with_ctx`], but first `fast` on this thread's context if it has
/// one and no call is inside it: its `Some` is the answer, its `None` (the
/// context as it was) runs `f`.
///
/// # Safety
/// `fast` must treat its argument as [`idle_ptr`]'s: the thread's live
/// context with no call inside, and make no call into the library.
#[inline]
unsafe fn with_ctx_or<B: Backend, R>(
    reg: &Arc<Registry<B>>,
    fast: impl FnOnce(*mut ThreadCtx<B>) -> Option<R>,
    f: impl FnOnce(&mut RtCtx<B>) -> Result<R>,
) -> Result<R> {
    let mut p = B::ctx_ptr()
        .ok_or(Error::WrongThread)?
        .cast::<ThreadCtx<B>>();
    if p.is_null() {
        p = new_thread_ctx::<B>()?;
    // SAFETY: a non-null slot holds this thread's live context; `busy` is
    // read through the raw place, as in `idle_ptr`.
    } else if !unsafe { (*p).busy }
        && let Some(r) = fast(p)
    {
        return Ok(r);
    }
    // SAFETY: a non-null slot holds this thread's live context.
    let (t, _call) = unsafe { enter(p)? };
    match t.rts.first_mut() {
        Some(c) if Arc::ptr_eq(&c.reg, reg) => f(c),
        _ => {
            let c = find_or_create(t, reg)?;
            f(c)
        }
    }
}

/// Moves `reg`'s context to the front (creating it, an allocation point, on
/// this thread's first use of `reg`), forgetting dropped runtimes.
#[cold]
fn find_or_create<'a, B: Backend>(
    t: &'a mut ThreadCtx<B>,
    reg: &Arc<Registry<B>>,
) -> Result<&'a mut RtCtx<B>> {
    // the guard cache belongs to the runtime at the front (see `Fast`)
    t.fast.forget_guard();
    let mut k = 0;
    while k < t.rts.len() {
        if t.rts[k].reg.is_closed() {
            let rt = t.rts.swap_remove(k);
            t.note_seq(rt.next_seq);
            rt.exit();
        } else {
            k += 1;
        }
    }
    match t.rts.iter().position(|c| Arc::ptr_eq(&c.reg, reg)) {
        Some(i) => t.rts.swap(0, i),
        None => {
            reg.alloc_point()?;
            t.rts.try_reserve(1).map_err(|_| Error::NoMemory)?;
            let c = RtCtx::new(reg.clone(), t.info.clone(), t.tag, t.seq_start);
            init_inline(&c);
            t.rts.push(c);
            let last = t.rts.len() - 1;
            t.rts.swap(0, last);
        }
    }
    Ok(&mut t.rts[0])
}

/// Runs `f` on this thread's context for `reg` if it exists (never creates;
/// `None` also while another call is inside).
pub(crate) fn with_existing<B: Backend, R>(
    reg: &Arc<Registry<B>>,
    f: impl FnOnce(&mut RtCtx<B>) -> R,
) -> Option<R> {
    let p = B::ctx_ptr()?.cast::<ThreadCtx<B>>();
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null slot holds this thread's live context.
    let (t, _call) = unsafe { enter(p).ok()? };
    let c = t.rts.iter_mut().find(|c| Arc::ptr_eq(&c.reg, reg))?;
    Some(f(c))
}

/// This thread's identity as a finalizer: its OS thread id (never 0, and
/// available at any point of the thread's life), or under loom (whose
/// threads share OS threads) its context's number.
#[cfg_attr(not(loom), allow(clippy::extra_unused_type_parameters))]
pub(crate) fn finalizer_identity<B: Backend>() -> u64 {
    #[cfg(not(loom))]
    {
        crate::sync::os_thread_id()
    }
    #[cfg(loom)]
    {
        let p = B::ctx_ptr().unwrap_or(std::ptr::null_mut());
        if p.is_null() {
            crate::sync::next_thread_number()
        } else {
            // SAFETY: read-only access to the live context's immutable info.
            let t = unsafe { &*p.cast::<ThreadCtx<B>>() };
            t.info.number
        }
    }
}

/// What the forking thread knew of one runtime, read in the child of a
/// `fork()` (see `fork.rs`).
#[cfg(not(loom))]
pub(crate) struct ForkView<B: Backend> {
    pub(crate) thread_number: u64,
    /// Interpreters the forking thread holds open.
    pub(crate) holds: Vec<*const Interp<B>>,
    /// The interpreter whose lock bits the forking thread holds (attached).
    pub(crate) locked: Option<*const Interp<B>>,
}

/// The forking thread's view of `reg` (in the child of a `fork()`).
#[cfg(not(loom))]
pub(crate) fn fork_child_view<B: Backend>(reg: &Registry<B>) -> ForkView<B> {
    let mut view = ForkView {
        thread_number: 0,
        holds: Vec::new(),
        locked: None,
    };
    let Some(p) = B::ctx_ptr() else {
        return view;
    };
    if p.is_null() {
        return view;
    }
    // SAFETY: this thread's live context; in the child no other thread
    // exists, and the child handler runs outside any call of the library.
    let t = unsafe { &*p.cast::<ThreadCtx<B>>() };
    view.thread_number = t.info.number;
    let Some(c) = t
        .rts
        .iter()
        .find(|c| std::ptr::eq(Arc::as_ptr(&c.reg), reg))
    else {
        return view;
    };
    for e in c.interps.iter().flatten() {
        if e.spans > 0 {
            view.holds.push(Arc::as_ptr(&e.interp));
        }
    }
    if B::LOCK_BITS && c.current != NONE {
        let ts = c.ts(c.current);
        view.locked = B::lock_group(&ts.interp).map(|g| g as *const Interp<B>);
    }
    view
}

/// Gives the forking thread's identity its new OS thread id (in the child
/// of a `fork()`): every report of it — its spans' records, the guards it
/// opened — shares this one record.
#[cfg(not(loom))]
pub(crate) fn fork_child_new_thread_id<B: Backend>() {
    let Some(p) = B::ctx_ptr().filter(|p| !p.is_null()) else {
        return;
    };
    // SAFETY: this thread's live context; in the child no other thread
    // exists, and the child handler runs outside any call of the library.
    let t = unsafe { &*p.cast::<ThreadCtx<B>>() };
    t.info
        .os_tid
        .store(crate::sync::os_thread_id(), Ordering::Relaxed);
}

/// What finalize remembers about its caller while it waits.
pub(crate) struct Parked {
    detached: u32,
}

impl<B: Backend> RtCtx<B> {
    fn new(reg: Arc<Registry<B>>, info: Arc<ThreadInfo>, tag: u16, seq: u32) -> Self {
        Self {
            inline: reg
                .inline_export()
                .map_or(std::ptr::null_mut(), |e| (e.slot)()),
            inline_tickets: reg.inline_export().is_some_and(|e| e.tickets),
            spare_ts: None,
            reg,
            info,
            tag,
            locals: Vec::new(),
            interps: Vec::new(),
            interp_index: HashMap::default(),
            free_locals: Vec::new(),
            free_interps: Vec::new(),
            borrowed: 0,
            pruned_epoch: u64::MAX,
            last_il: 0,
            frames: Vec::with_capacity(8),
            saved: Vec::new(),
            current: NONE,
            current_interp: 0,
            current_raw: 0,
            next_seq: seq,
        }
    }

    fn backend(&self) -> &B {
        &self.reg.backend
    }

    fn local(&self, idx: u32) -> &Local<B> {
        self.locals[idx as usize]
            .as_ref()
            .expect("frame refers to a live local")
    }

    fn ts(&self, idx: u32) -> &Arc<TState<B>> {
        &self.local(idx).ts
    }

    fn il(&self, idx: u32) -> &InterpLocal<B> {
        self.interps[idx as usize]
            .as_ref()
            .expect("local refers to a live interp entry")
    }

    fn il_mut(&mut self, idx: u32) -> &mut InterpLocal<B> {
        self.interps[idx as usize]
            .as_mut()
            .expect("local refers to a live interp entry")
    }

    #[inline(always)]
    fn ticket(&mut self) -> (Ticket, u32) {
        let seq = self.next_seq;
        self.next_seq = (seq + 1) & Ticket::SEQ_MASK;
        (Ticket::new(self.tag, seq), seq)
    }

    /// Pushes the frame of a span a fast path counted (a nested span of
    /// the current interpreter, sequence number `seq`); the room was
    /// checked when it was counted, so this never allocates.
    fn push_counted(&mut self, il: u32, seq: u32) {
        self.frames.push(Frame {
            kind: FrameKind::Nested,
            ts: NONE,
            prev: NONE,
            seq,
            il,
            interp: self.current_interp,
            guard: 0,
        });
    }

    /// Makes room for one more frame; growing is an allocation point.
    #[inline]
    fn reserve_frame(&mut self) -> Result<()> {
        if self.frames.len() == self.frames.capacity() {
            self.grow_frames()?;
        }
        Ok(())
    }

    #[cold]
    fn grow_frames(&mut self) -> Result<()> {
        self.reg.alloc_point()?;
        self.frames.try_reserve(8).map_err(|_| Error::NoMemory)
    }

    fn set_current(&mut self, idx: u32) {
        let l = self.local(idx);
        l.ts.set_attached(true);
        let (interp, raw) = (l.ts.interp.id.as_raw(), B::raw(&l.ts));
        self.mark_current(idx, interp, raw);
    }

    /// Records local `idx` (of interpreter `interp`, the backend's raw
    /// thread state `raw`), marked attached by the caller, as the current.
    #[inline(always)]
    fn mark_current(&mut self, idx: u32, interp: u64, raw: usize) {
        self.current_interp = interp;
        self.current_raw = raw;
        self.current = idx;
    }

    fn clear_current(&mut self) {
        self.current = NONE;
        self.current_interp = 0;
        self.current_raw = 0;
    }

    /// Detaches the current thread state (releasing its lock, keeping its
    /// hold) and returns its index.
    fn detach_current(&mut self) -> u32 {
        let cur = self.current;
        if cur != NONE {
            // borrowed, not cloned: no reference-count round trip per call
            let ts = self.ts(cur);
            ts.set_attached(false);
            self.backend().detach(&ts.interp, ts);
            self.clear_current();
        }
        cur
    }

    /// Re-attaches a thread state this thread holds its interpreter open
    /// with (always succeeds; may wait for the lock). Skips one whose
    /// interpreter is gone.
    #[inline(always)]
    fn reattach(&mut self, idx: u32) {
        // most releases re-attach nothing: no call for them
        if idx != NONE {
            self.reattach_local(idx);
        }
    }

    fn reattach_local(&mut self, idx: u32) {
        // borrowed, not cloned: no reference-count round trip per call
        let ts = self.ts(idx);
        if ts.is_deleted() {
            return;
        }
        self.backend().attach(&ts.interp, ts, false);
        if ts.is_deleted() {
            // its interpreter was finalized while this thread waited for
            // the lock (a daemon span: no hold kept it open)
            self.backend().detach(&ts.interp, ts);
            return;
        }
        self.set_current(idx);
    }

    /// Spans this context's inline block counts now (0 if it has none or
    /// it is closed).
    #[inline(always)]
    fn inline_depth(&self) -> u32 {
        if self.inline.is_null() {
            return 0;
        }
        // SAFETY: as in `close_inline`; only read, while no call is inside.
        unsafe { (*self.inline).depth }
    }

    /// Whether the fast paths may trust the record: always on the model; on
    /// CPython when the real attached thread state is the recorded one.
    #[inline]
    fn record_is_current(&self) -> bool {
        !B::EXTERNAL_SWITCHES || self.backend().current_raw() == self.current_raw
    }

    /// Brings the record in line with the backend's real attached thread
    /// state (CPython: other code may have detached ours, or attached one
    /// the library did not create). A no-op on the model.
    fn sync(&mut self) {
        if !B::EXTERNAL_SWITCHES {
            return;
        }
        let real = self.backend().current_raw();
        if real == self.current_raw {
            return;
        }
        if self.current != NONE {
            // detached behind the library's back (e.g. Py_BEGIN_ALLOW_THREADS)
            self.ts(self.current).set_attached(false);
            self.clear_current();
        }
        if real == 0 {
            return;
        }
        let found = self.locals.iter().position(|l| {
            l.as_ref()
                .is_some_and(|l| !l.ts.is_deleted() && B::raw(&l.ts) == real)
        });
        // one of this thread's own records: exact (only its owner attaches
        // a thread state); another thread state only if the backend can
        // tell it is this thread's
        let idx = match found {
            Some(i) => Some(i as u32),
            None if self.backend().is_this_threads(real) => self.adopt(real),
            None => None,
        };
        if let Some(i) = idx {
            self.set_current(i);
        }
    }

    /// Records a thread state the library did not create, attached on this
    /// thread now (`None` if its interpreter cannot be registered or memory
    /// is short: the thread then reads as not attached).
    #[cold]
    fn adopt(&mut self, real: usize) -> Option<u32> {
        let interp = self.backend().adopt(&self.reg, real)?;
        let il = self.interp_local(interp.id).ok()?;
        let data = self.backend().borrowed_data(real);
        self.new_local(&interp, il, TsKind::Borrowed, data).ok()
    }

    // ----- ensure / release ------------------------------------------------

    /// Ensure: attach a thread state of `id` to this thread, restoring what
    /// was there on the matching release.
    #[inline]
    pub(crate) fn ensure(&mut self, id: InterpreterId) -> Result<Ticket> {
        let raw = id.as_raw();
        if raw != 0 && self.current_interp == raw && self.record_is_current() {
            self.reserve_frame()?;
            let il = self.local(self.current).il;
            return Ok(self.push_frame(FrameKind::Nested, NONE, NONE, il, raw, 0));
        }
        self.ensure_slow(id)
    }

    /// As [`ensure`](Self::ensure), for designs that hand the ticket out: a
    /// thread without a tag (all 4,095 taken) is refused with `Busy`.
    #[inline]
    pub(crate) fn ensure_ticket(&mut self, id: InterpreterId) -> Result<Ticket> {
        if self.tag == 0 {
            return Err(Error::Busy);
        }
        self.ensure(id)
    }

    #[cold]
    fn ensure_slow(&mut self, id: InterpreterId) -> Result<Ticket> {
        self.ensure_steps(id, 0, EnsureHold::Gate)
    }

    /// The ensure state machine, shared by the ensure designs (`guard` 0,
    /// hold through the gate) and the guard design (`guard`: the implicit
    /// guard the span owns, 0 if none; hold forced or none).
    fn ensure_steps(&mut self, id: InterpreterId, guard: u64, hold: EnsureHold) -> Result<Ticket> {
        let raw = id.as_raw();
        if raw == 0 {
            return Err(Error::NoSuchInterpreter);
        }
        self.sync();
        self.reserve_frame()?;
        // (a) attached to `id` already: counted, never refused
        if self.current_interp == raw {
            let il = self.local(self.current).il;
            return Ok(self.push_frame(FrameKind::Nested, NONE, NONE, il, raw, guard));
        }
        // (b) this thread already holds `id` open through a detached thread
        // state (saved by Py_BEGIN_ALLOW_THREADS, or switched away from):
        // re-attach that one. No new hold, so never refused while finalizing
        // — this thread is one of the holders finalize waits for.
        if let Some(f) = self
            .frames
            .iter()
            .rev()
            .find(|f| f.interp == raw && f.ts != NONE)
            .copied()
            .filter(|f| !self.ts(f.ts).is_deleted())
        {
            let prev = self.detach_current();
            self.reattach(f.ts);
            return Ok(self.push_frame(FrameKind::Reattach, f.ts, prev, f.il, raw, guard));
        }
        // (c) take this thread's hold and attach a thread state: this
        // thread's own detached one that the library did not create
        // (CPython: a Python thread inside Py_BEGIN_ALLOW_THREADS), else its
        // kept one for `id`, created the first time.
        let il = self.interp_local(id)?;
        let (mode, kind) = match hold {
            EnsureHold::Gate => (HoldMode::Gate, FrameKind::Enter(SpanKind::Ensure)),
            EnsureHold::Guarded if B::daemon_spans(&self.il(il).interp) => {
                (HoldMode::Daemon, FrameKind::Daemon)
            }
            EnsureHold::Guarded => (HoldMode::Forced, FrameKind::Enter(SpanKind::Ensure)),
        };
        let given = match self.backend().own_detached(&self.il(il).interp) {
            0 => None,
            real => Some(self.borrowed_local(il, real)?),
        };
        let (ts, prev) = self.enter_with(il, SpanKind::Ensure, given, mode)?;
        Ok(self.push_frame(kind, ts, prev, il, raw, guard))
    }

    /// Pushes a span frame (room reserved) and returns its ticket.
    #[inline]
    fn push_frame(
        &mut self,
        kind: FrameKind,
        ts: u32,
        prev: u32,
        il: u32,
        interp: u64,
        guard: u64,
    ) -> Ticket {
        let (t, seq) = self.ticket();
        self.frames.push(Frame {
            kind,
            ts,
            prev,
            seq,
            il,
            interp,
            guard,
        });
        t
    }

    /// The record of a foreign thread state `real` of interp-local `il`.
    fn borrowed_local(&mut self, il: u32, real: usize) -> Result<u32> {
        if let Some(i) = self.locals.iter().position(|l| {
            l.as_ref()
                .is_some_and(|l| !l.ts.is_deleted() && B::raw(&l.ts) == real)
        }) {
            return Ok(i as u32);
        }
        let interp = self.il(il).interp.clone();
        let data = self.backend().borrowed_data(real);
        self.new_local(&interp, il, TsKind::Borrowed, data)
    }

    /// Takes this thread's hold on interp-local `il` (through the gate if it
    /// is the first), then attaches `given` or the kept thread state (created
    /// if needed). Returns (attached, previous). On error nothing changed.
    fn enter(&mut self, il: u32, kind: SpanKind, given: Option<u32>) -> Result<(u32, u32)> {
        self.enter_with(il, kind, given, HoldMode::Gate)
    }

    fn enter_with(
        &mut self,
        il: u32,
        kind: SpanKind,
        given: Option<u32>,
        mode: HoldMode,
    ) -> Result<(u32, u32)> {
        let interp = self.il(il).interp.clone();
        let first = mode != HoldMode::Daemon && self.il(il).spans == 0;
        let mut locked = false;
        if first {
            locked = match mode {
                HoldMode::Forced => interp.gate.force_hold(B::lock_in_gate(&interp))?,
                _ => interp.gate.try_hold(B::lock_in_gate(&interp))?,
            };
        } else if mode == HoldMode::Daemon && interp.gate.is_gone() {
            return Err(Error::NoSuchInterpreter);
        }
        let undo = |locked: bool| {
            if first {
                interp.gate.release_hold(locked);
            }
        };
        let ts = match given {
            Some(ts) => ts,
            None => match self.home_ts(il) {
                Ok(ts) => ts,
                Err(e) => {
                    undo(locked);
                    return Err(e);
                }
            },
        };
        let t = self.ts(ts);
        if t.kind != TsKind::Borrowed
            && let Err(e) = self.backend().materialize(&interp, t)
        {
            if given.is_none() && t.kind == TsKind::Ensure {
                self.delete_local(ts);
            }
            undo(locked);
            return Err(e);
        }
        let prev = self.detach_current();
        self.backend().attach(&interp, self.ts(ts), locked);
        self.set_current(ts);
        if mode == HoldMode::Daemon {
            return Ok((ts, prev));
        }
        let e = self.il_mut(il);
        e.spans += 1;
        if first {
            e.cell
                .since_ns
                .store(crate::sync::coarse_now_ns(), Ordering::Relaxed);
            e.cell
                .kind
                .store(u8::from(kind == SpanKind::Activate), Ordering::Relaxed);
        }
        e.cell.spans.store(e.spans, Ordering::Release);
        Ok((ts, prev))
    }

    /// The thread state ensure uses on interp-local `il`: the kept one, or a
    /// new one (an allocation point).
    fn home_ts(&mut self, il: u32) -> Result<u32> {
        let home = self.il(il).home;
        if home != NONE && !self.ts(home).is_deleted() {
            return Ok(home);
        }
        let interp = self.il(il).interp.clone();
        let data = self.backend().new_tstate_data();
        let idx = self.new_local(&interp, il, TsKind::Ensure, data)?;
        if B::reuse(&interp, self.reg.options.reuse) == ReusePolicy::KeepAndReset {
            self.il_mut(il).home = idx;
        }
        Ok(idx)
    }

    fn new_local(
        &mut self,
        interp: &Arc<Interp<B>>,
        il: u32,
        kind: TsKind,
        data: B::TState,
    ) -> Result<u32> {
        let slot = self.free_locals.last().copied();
        if slot.is_none() {
            self.locals.try_reserve(1).map_err(|_| Error::NoMemory)?;
            let want = self.locals.len() + 1;
            self.free_locals
                .try_reserve(want.saturating_sub(self.free_locals.len()))
                .map_err(|_| Error::NoMemory)?;
        }
        let spare = self.spare_ts.take();
        let ts = self
            .reg
            .insert_tstate(interp, self.info.number, kind, data, spare)?;
        if kind == TsKind::Borrowed {
            self.borrowed += 1;
        }
        let local = Some(Local { ts, il });
        Ok(match slot {
            Some(i) => {
                self.free_locals.pop();
                self.locals[i as usize] = local;
                i
            }
            None => {
                self.locals.push(local);
                (self.locals.len() - 1) as u32
            }
        })
    }

    /// Empties slot `idx` of `locals`, returning its record.
    fn take_local(&mut self, idx: u32) -> Local<B> {
        let l = self.locals[idx as usize].take().expect("live local");
        if l.ts.kind == TsKind::Borrowed {
            self.borrowed -= 1;
        }
        // never allocates: capacity ≥ locals.len() (new_local)
        self.free_locals.push(idx);
        l
    }

    /// Detaches the attached `ts` at the end of an Enter span and drops the
    /// hold if it was this thread's last span there; on the model's
    /// own-lock interpreters, unlock and release are one CAS.
    fn end_enter(&mut self, ts: u32, kind: SpanKind, held: bool) {
        let il = self.local(ts).il;
        let last = held && {
            let e = self.il_mut(il);
            e.spans -= 1;
            e.cell.spans.store(e.spans, Ordering::Release);
            e.spans == 0
        };
        // borrowed, not cloned: no reference-count round trip per span
        let t = self.ts(ts);
        let interp = &t.interp;
        t.set_attached(false);
        let keep = match (t.kind, kind) {
            (TsKind::Ensure, _) => {
                B::reuse(interp, self.reg.options.reuse) == ReusePolicy::KeepAndReset
            }
            (TsKind::Explicit, _) => B::keep_between_spans(interp),
            (TsKind::Borrowed, _) => true,
        };
        if keep {
            if t.kind == TsKind::Ensure {
                self.backend().reset(t);
            }
            if last && B::lock_in_gate(interp) {
                interp.gate.release_hold(true);
            } else {
                self.backend().detach(interp, t);
                if last {
                    interp.gate.release_hold(false);
                }
            }
            return;
        }
        self.backend().dematerialize(interp, t, true);
        if t.kind == TsKind::Ensure {
            // the hold is released after the record goes: keep the
            // interpreter (not the record, which may become the spare)
            let interp = interp.clone();
            self.delete_local(ts);
            if last {
                interp.gate.release_hold(false);
            }
        } else if last {
            interp.gate.release_hold(false);
        }
    }

    /// Undoes a popped Reattach or Enter frame whose interpreter is alive.
    fn leave(&mut self, f: Frame) {
        if !self.ts(f.ts).is_deleted() {
            match f.kind {
                FrameKind::Enter(kind) => self.end_enter(f.ts, kind, true),
                FrameKind::Daemon => self.end_enter(f.ts, SpanKind::Ensure, false),
                _ => {
                    // borrowed, not cloned, as in `detach_current`
                    let t = self.ts(f.ts);
                    t.set_attached(false);
                    self.backend().detach(&t.interp, t);
                }
            }
        }
        self.clear_current();
        self.reattach(f.prev);
    }

    /// Whether `f`'s interpreter passed its point of no return.
    fn frame_dead(&self, f: &Frame) -> bool {
        self.il(f.il).interp.gate.is_gone()
    }

    /// Checks that `f` (the top frame) can be undone now and undoes it.
    fn pop_top(&mut self, f: Frame) -> Result<()> {
        if self.frame_dead(&f) {
            // finalized from inside the span (by this thread): nothing of
            // it is left to undo but what was attached before it
            self.frames.pop();
            let cur_dead = self.current == NONE
                || self.ts(self.current).is_deleted()
                || (f.ts != NONE && self.current == f.ts);
            if cur_dead && f.kind != FrameKind::Nested {
                self.clear_current();
                self.reattach(f.prev);
            }
            return Ok(());
        }
        if f.kind == FrameKind::Nested {
            if self.current_interp != f.interp {
                return Err(Error::OutOfOrder);
            }
            self.frames.pop();
            return Ok(());
        }
        if self.current != f.ts {
            // e.g. a save inside this span is still open
            return Err(Error::OutOfOrder);
        }
        self.frames.pop();
        self.leave(f);
        Ok(())
    }

    /// Pops the top frame if it is a nested ensure that can be undone now
    /// (the fast path: no atomic, no lock). `Some(seq)` if it did.
    #[inline]
    fn pop_nested(&mut self) -> Option<u32> {
        match self.frames.last() {
            Some(f)
                if f.kind == FrameKind::Nested
                    && f.interp == self.current_interp
                    && self.record_is_current() =>
            {
                let seq = f.seq;
                self.frames.pop();
                Some(seq)
            }
            _ => None,
        }
    }

    /// Thread-stored release: undoes this thread's innermost ensure.
    #[inline]
    pub(crate) fn release(&mut self) -> Result<()> {
        if self.pop_nested().is_some() {
            return Ok(());
        }
        self.release_slow()
    }

    #[cold]
    fn release_slow(&mut self) -> Result<()> {
        self.sync();
        match self.frames.last() {
            None => Err(Error::NotAttached),
            // an activation, or a guard-design span that owns a guard: not
            // this release's to undo
            Some(f) if f.kind == FrameKind::Enter(SpanKind::Activate) || f.guard != 0 => {
                Err(Error::OutOfOrder)
            }
            Some(&f) => self.pop_top(f),
        }
    }

    /// Handle release: undoes the ensure `t`, which must be the innermost.
    #[inline]
    pub(crate) fn release_ticket(&mut self, t: Ticket) -> Result<()> {
        if let Some(f) = self.frames.last()
            && f.seq == t.seq()
            && t.tag() == self.tag
            && f.guard == 0
            && self.pop_nested().is_some()
        {
            return Ok(());
        }
        if self
            .frames
            .last()
            .is_some_and(|f| f.seq == t.seq() && f.guard != 0)
        {
            // a guard-design span owning a guard: only its token releases it
            return Err(Error::OutOfOrder);
        }
        self.release_ticket_slow(t).map(|_| ())
    }

    /// Token release of the guard design: as a ticket release; returns the
    /// implicit guard the frame carried (0 if none), for the caller to
    /// close.
    pub(crate) fn release_token(&mut self, t: Ticket) -> Result<u64> {
        self.release_ticket_slow(t)
    }

    /// Ensure under a guard of the guard design (`guard_open`: the caller
    /// holds one on `id`; `implicit`: a guard this span owns and its release
    /// closes, 0 if none). Never refused for finalizing — the guard keeps
    /// `id` from passing its point of no return. Where the backend allows
    /// it, the span takes no hold of this thread (a daemon's span, PEP 788).
    /// The span's token is a ticket: a thread without a tag (all 4,095
    /// taken) is refused with `Busy`, as the handle design's ensure is.
    pub(crate) fn ensure_guarded(&mut self, id: InterpreterId, implicit: u64) -> Result<Ticket> {
        if self.tag == 0 {
            return Err(Error::Busy);
        }
        self.ensure_steps(id, implicit, EnsureHold::Guarded)
    }

    #[cold]
    fn release_ticket_slow(&mut self, t: Ticket) -> Result<u64> {
        if !t.well_formed() {
            return Err(Error::InvalidHandle);
        }
        if t.tag() != self.tag {
            return Err(match tag_owner(t.tag()) {
                Some(o) if o != self.info.number => Error::WrongThread,
                _ => Error::InvalidHandle,
            });
        }
        self.sync();
        let is_ensure = |f: &Frame| f.kind != FrameKind::Enter(SpanKind::Activate);
        match self.frames.last() {
            Some(&f) if f.seq == t.seq() && is_ensure(&f) => self.pop_top(f).map(|()| f.guard),
            _ if self.frames.iter().any(|f| f.seq == t.seq() && is_ensure(f)) => {
                Err(Error::OutOfOrder)
            }
            _ => Err(Error::InvalidHandle),
        }
    }

    // ----- explicit lifecycle ---------------------------------------------

    /// Creates a detached thread state of `id` owned by this thread. Refused
    /// while `id` is finalizing (checked where finalization cannot slip in
    /// between: see [`Registry::insert_tstate`]).
    pub(crate) fn new_thread_state(&mut self, id: InterpreterId) -> Result<ThreadStateId> {
        let il = self.interp_local(id)?;
        let interp = self.il(il).interp.clone();
        if interp.gate.is_finalizing() {
            return Err(Error::Finalizing);
        }
        let data = self.backend().new_tstate_data();
        let idx = self.new_local(&interp, il, TsKind::Explicit, data)?;
        Ok(self.ts(idx).id)
    }

    /// Finds this thread's local for a handle (deleted ones too, so that
    /// their frames can still be closed); classifies foreign and stale ones.
    fn find_local(&self, id: ThreadStateId) -> Result<u32> {
        if let Some(i) = self
            .locals
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.ts.id == id))
        {
            return Ok(i as u32);
        }
        Err(match self.reg.tstate_owner(id) {
            Some(owner) if owner != self.info.number => Error::WrongThread,
            _ => Error::InvalidHandle,
        })
    }

    /// Like [`find_local`](Self::find_local), for the explicit design: only
    /// thread states the caller created.
    fn find_explicit(&self, id: ThreadStateId) -> Result<u32> {
        let i = self.find_local(id)?;
        if self.ts(i).kind == TsKind::Explicit {
            Ok(i)
        } else {
            Err(Error::InvalidHandle)
        }
    }

    fn in_use(&self, idx: u32) -> bool {
        self.current == idx
            || self.frames.iter().any(|f| f.ts == idx || f.prev == idx)
            || self.saved.contains(&idx)
    }

    /// Activates (attaches inside a new span) one of this thread's thread
    /// states.
    pub(crate) fn activate(&mut self, id: ThreadStateId) -> Result<()> {
        let idx = self.find_explicit(id)?;
        if self.ts(idx).is_deleted() {
            // still owned by this thread, freed by its interpreter's finalization
            return Err(Error::NoSuchInterpreter);
        }
        self.sync();
        if self.in_use(idx) {
            return Err(Error::Busy);
        }
        self.reserve_frame()?;
        let il = self.local(idx).il;
        let (ts, prev) = self.enter(il, SpanKind::Activate, Some(idx))?;
        let interp = self.ts(ts).interp.id.as_raw();
        self.push_frame(
            FrameKind::Enter(SpanKind::Activate),
            ts,
            prev,
            il,
            interp,
            0,
        );
        Ok(())
    }

    /// Deactivates the innermost activation, which must be of `id`.
    pub(crate) fn deactivate(&mut self, id: ThreadStateId) -> Result<()> {
        let idx = self.find_explicit(id)?;
        self.sync();
        let is_it = |f: &Frame| f.kind == FrameKind::Enter(SpanKind::Activate) && f.ts == idx;
        match self.frames.last() {
            Some(&f) if is_it(&f) => self.pop_top(f),
            _ if self.frames.iter().any(is_it) => Err(Error::OutOfOrder),
            _ if self.ts(idx).is_deleted() => Err(Error::NoSuchInterpreter),
            _ => Err(Error::NotAttached),
        }
    }

    /// Deletes one of this thread's thread states (not while in use). One
    /// that its interpreter's finalization already freed is only forgotten:
    /// the owner's cleanup succeeds, and the handle is invalid afterwards.
    pub(crate) fn delete(&mut self, id: ThreadStateId) -> Result<()> {
        let idx = self.find_explicit(id)?;
        self.sync();
        if self.in_use(idx) {
            return Err(Error::Busy);
        }
        self.free_detached(idx);
        self.delete_local(idx);
        Ok(())
    }

    /// Frees the backend thread state of the detached, unused local `idx`
    /// (a short hold keeps its interpreter alive meanwhile; if the gate
    /// refuses, the interpreter's finalization frees it: counted as an
    /// orphan).
    fn free_detached(&mut self, idx: u32) {
        let t = self.ts(idx).clone();
        if t.is_deleted() || t.kind == TsKind::Borrowed {
            return;
        }
        if !B::is_materialized(&t) {
            return; // nothing of the backend's to free
        }
        let il = self.local(idx).il;
        let held = self.il(il).spans > 0;
        if !held && t.interp.gate.try_hold(false).is_err() {
            self.reg.count(|c| &c.orphaned);
            return;
        }
        // freeing attaches it (CPython clears a thread state under its
        // GIL): whatever this thread has attached steps aside meanwhile
        let prev = self.detach_current();
        self.backend().dematerialize(&t.interp, &t, false);
        self.reattach(prev);
        if !held {
            t.interp.gate.release_hold(false);
        }
    }

    fn delete_local(&mut self, idx: u32) {
        let mut l = self.take_local(idx);
        if !l.ts.is_deleted() {
            self.reg.remove_tstate(&l.ts);
        }
        let e = self.il_mut(l.il);
        if e.home == idx {
            e.home = NONE;
        }
        // the registry no longer holds it: if nothing else does, keep its
        // allocation for this thread's next new thread state
        if self.spare_ts.is_none() && Arc::get_mut(&mut l.ts).is_some() {
            self.spare_ts = Some(l.ts);
        }
    }

    /// The attached thread state and its interpreter, if any.
    pub(crate) fn current(&mut self) -> Option<(ThreadStateId, InterpreterId)> {
        self.sync();
        (self.current != NONE).then(|| {
            let ts = self.ts(self.current);
            (ts.id, ts.interp.id)
        })
    }

    pub(crate) fn is_attached_to(&mut self, id: InterpreterId) -> bool {
        self.sync();
        id.as_raw() != 0 && self.current_interp == id.as_raw()
    }

    /// The backend's raw attached thread state, after reconciling.
    pub(crate) fn current_raw_now(&mut self) -> usize {
        self.sync();
        self.current_raw
    }

    /// The innermost saved thread state and its interpreter, if any.
    pub(crate) fn saved_top(&self) -> Option<(ThreadStateId, InterpreterId)> {
        self.saved.last().map(|&i| {
            let ts = self.ts(i);
            (ts.id, ts.interp.id)
        })
    }

    // ----- save / restore --------------------------------------------------

    /// `PyEval_SaveThread`: detach the current thread state, keeping its
    /// span open; returns it for [`restore`](Self::restore).
    pub(crate) fn save(&mut self) -> Result<ThreadStateId> {
        self.sync();
        if self.current == NONE {
            return Err(Error::NotAttached);
        }
        if self.saved.len() == self.saved.capacity() {
            self.reg.alloc_point()?;
            self.saved.try_reserve(4).map_err(|_| Error::NoMemory)?;
        }
        let idx = self.detach_current();
        self.saved.push(idx);
        Ok(self.ts(idx).id)
    }

    /// `PyEval_RestoreThread`: re-attach the innermost saved thread state.
    /// Always succeeds inside its span (may wait for the lock), even while
    /// the interpreter is finalizing.
    pub(crate) fn restore(&mut self, id: ThreadStateId) -> Result<()> {
        self.sync();
        if self.current != NONE {
            return Err(Error::Busy);
        }
        let idx = self.find_local(id)?;
        match self.saved.last() {
            Some(&top) if top == idx => {
                self.saved.pop();
                if self.ts(idx).is_deleted() {
                    return Err(Error::NoSuchInterpreter);
                }
                self.reattach(idx);
                Ok(())
            }
            _ if self.saved.contains(&idx) => Err(Error::OutOfOrder),
            _ if self.ts(idx).is_deleted() => Err(Error::InvalidHandle),
            _ => Err(Error::NotAttached),
        }
    }

    // ----- work, scratch -----------------------------------------------------

    pub(crate) fn work(&mut self, id: InterpreterId) -> Result<u64> {
        if !self.is_attached_to(id) {
            return Err(Error::NotAttached);
        }
        let ts = self.ts(self.current).clone();
        let o = ts.interp.work();
        if !self.backend().python_work(&ts.interp, &ts) {
            return Err(Error::NotAttached);
        }
        if o.exclusion_violated {
            self.reg.count(|c| &c.exclusion_violations);
        }
        if o.after_gone {
            self.reg.count(|c| &c.work_after_finalize);
        }
        Ok(o.value)
    }

    pub(crate) fn current_ts(&mut self) -> Result<Arc<TState<B>>> {
        self.sync();
        if self.current == NONE {
            return Err(Error::NotAttached);
        }
        Ok(self.ts(self.current).clone())
    }

    // ----- interpreters seen by this thread --------------------------------

    /// This thread's entry for interpreter `id`, creating it (an allocation
    /// point) after a registry lookup on first use.
    fn interp_local(&mut self, id: InterpreterId) -> Result<u32> {
        // the entry used last (a pool thread's usual case), then the index
        let last = self
            .interps
            .get(self.last_il as usize)
            .and_then(Option::as_ref)
            .is_some_and(|e| e.interp.id == id);
        let hit = if last {
            Some(self.last_il)
        } else {
            self.interp_index.get(&id.as_raw()).copied()
        };
        if let Some(i) = hit {
            if self.il(i).interp.gate.is_gone() {
                return Err(Error::NoSuchInterpreter);
            }
            self.last_il = i;
            return Ok(i);
        }
        let interp = self.reg.lookup(id)?;
        self.prune();
        self.reg.alloc_point()?;
        let slot = self.free_interps.last().copied();
        if slot.is_none() {
            self.interps.try_reserve(1).map_err(|_| Error::NoMemory)?;
            let want = self.interps.len() + 1;
            self.free_interps
                .try_reserve(want.saturating_sub(self.free_interps.len()))
                .map_err(|_| Error::NoMemory)?;
        }
        self.interp_index
            .try_reserve(1)
            .map_err(|_| Error::NoMemory)?;
        let cell = Arc::new(HoldCell {
            thread: self.info.clone(),
            spans: AtomicU32::new(0),
            since_ns: AtomicU64::new(0),
            kind: AtomicU8::new(0),
        });
        interp.add_cell(cell.clone());
        let e = Some(InterpLocal {
            interp,
            cell,
            spans: 0,
            home: NONE,
        });
        let i = match slot {
            Some(i) => {
                self.free_interps.pop();
                self.interps[i as usize] = e;
                i
            }
            None => {
                self.interps.push(e);
                (self.interps.len() - 1) as u32
            }
        };
        self.interp_index.insert(id.as_raw(), i);
        self.last_il = i;
        Ok(i)
    }

    /// Drops the records nothing refers to any more: library-owned thread
    /// states that finalization freed and borrowed ones no frame, save or
    /// the current slot uses; then entries of gone interpreters. Thread
    /// states the caller created stay until the caller deletes them (their
    /// handle keeps answering `NoSuchInterpreter` / deletes with 0).
    fn prune(&mut self) {
        // nothing can have become prunable since the last full prune unless
        // the registry's epoch moved (or borrowed records exist): skip the
        // scans, so a thread using n interpreters pays O(1) per first use
        let epoch = self.reg.epoch.load(Ordering::Relaxed);
        if epoch == self.pruned_epoch && self.borrowed == 0 {
            return;
        }
        // a prunable record still in use is left for a later prune, which
        // must then scan again whatever the epoch
        let mut deferred = false;
        for i in 0..self.locals.len() {
            let idx = i as u32;
            let Some(l) = &self.locals[i] else { continue };
            let droppable = match l.ts.kind {
                TsKind::Ensure => l.ts.is_deleted(),
                TsKind::Borrowed => true,
                TsKind::Explicit => false,
            };
            if droppable && self.in_use(idx) {
                deferred = true;
            } else if droppable {
                let l = self.take_local(idx);
                if l.ts.kind == TsKind::Borrowed && !l.ts.is_deleted() {
                    self.reg.remove_tstate(&l.ts);
                }
                let e = self.il_mut(l.il);
                if e.home == idx {
                    e.home = NONE;
                }
            }
        }
        for i in 0..self.interps.len() {
            let Some(e) = &self.interps[i] else { continue };
            // only a gone interpreter's entry can go: test that first, so
            // that a thread using n interpreters pays O(n) here, not O(n²)
            // (the references are scanned for gone entries only)
            if !e.interp.gate.is_gone() {
                continue;
            }
            let referenced = self.frames.iter().any(|f| f.il == i as u32)
                || self.locals.iter().flatten().any(|l| l.il == i as u32);
            if referenced {
                deferred = true;
            } else {
                let e = self.interps[i].take().expect("checked");
                if self
                    .spare_ts
                    .as_ref()
                    .is_some_and(|t| Arc::ptr_eq(&t.interp, &e.interp))
                {
                    self.spare_ts = None;
                }
                self.interp_index.remove(&e.interp.id.as_raw());
                // never allocates: capacity ≥ interps.len() (interp_local)
                self.free_interps.push(i as u32);
                e.interp.remove_cell(&e.cell);
            }
        }
        if !deferred {
            self.pruned_epoch = epoch;
        }
    }

    // ----- finalize support --------------------------------------------------

    /// Whether this thread holds `interp` open (finalize does not wait for
    /// its own caller).
    pub(crate) fn holds(&self, interp: &Arc<Interp<B>>) -> bool {
        self.interps
            .iter()
            .flatten()
            .any(|e| Arc::ptr_eq(&e.interp, interp) && e.spans > 0)
    }

    /// Detaches the caller for the duration of a finalize wait: a holder
    /// may need any lock to finish its span (it can switch interpreters
    /// inside it), so finalize never holds one while it waits; and on
    /// CPython ending an interpreter needs the thread detached.
    pub(crate) fn park_for_finalize(&mut self) -> Parked {
        self.sync();
        Parked {
            detached: self.detach_current(),
        }
    }

    /// What the backend needs to end `interp` on this thread: the raw
    /// thread state it will re-attach afterwards (`p`, unless it belongs to
    /// `interp`), and this thread's own materialized thread states of
    /// `interp` (they must go first; their records are marked deleted).
    pub(crate) fn end_inputs(
        &mut self,
        interp: &Arc<Interp<B>>,
        p: &Parked,
    ) -> (usize, Vec<usize>) {
        let next = match p.detached {
            NONE => 0,
            i if Arc::ptr_eq(&self.ts(i).interp, interp) || self.ts(i).is_deleted() => 0,
            i => B::raw(self.ts(i)),
        };
        let mut own = Vec::new();
        for l in self.locals.iter().flatten() {
            if Arc::ptr_eq(&l.ts.interp, interp)
                && l.ts.kind != TsKind::Borrowed
                && !l.ts.is_deleted()
            {
                let r = B::raw(&l.ts);
                if r != 0 {
                    own.push(r);
                }
                l.ts.mark_deleted();
            }
        }
        (next, own)
    }

    /// After a finalize attempt: forget the caller's own hold on a gone
    /// interpreter, then re-attach what was detached, if it still exists,
    /// waiting for its lock until `deadline` at most. Returns `false` when
    /// the deadline passed first: the caller is left detached with that
    /// thread state saved (restore it with `restore`).
    pub(crate) fn unpark_after_finalize(
        &mut self,
        interp: &Arc<Interp<B>>,
        parked: Parked,
        deadline: &Deadline,
    ) -> bool {
        if interp.gate.is_gone() {
            for e in self.interps.iter_mut().flatten() {
                if Arc::ptr_eq(&e.interp, interp) {
                    e.spans = 0;
                    e.home = NONE;
                    e.cell.spans.store(0, Ordering::Release);
                }
            }
            if self.current != NONE && self.ts(self.current).is_deleted() {
                self.clear_current();
            }
        }
        let idx = parked.detached;
        if idx == NONE || self.ts(idx).is_deleted() {
            return true;
        }
        let ts = self.ts(idx).clone();
        if self.backend().attach_until(&ts.interp, &ts, deadline) {
            self.set_current(idx);
            true
        } else {
            if self.saved.try_reserve(1).is_ok() {
                self.saved.push(idx);
            }
            false
        }
    }

    // ----- thread exit ---------------------------------------------------

    /// The thread-exit destructor: closes every open span, frees every
    /// thread state of this thread, and counts what it had to clean up.
    fn exit(mut self) {
        if self.reg.is_closed() {
            return;
        }
        self.sync();
        let spans_closed = self.frames.iter().filter(|f| !self.frame_dead(f)).count() as u64;
        self.detach_current();
        // guards the thread's guard-design spans took implicitly go with them
        for f in &self.frames {
            if f.guard != 0 {
                let _ = self
                    .reg
                    .close_guard(crate::types::GuardId::from_raw(f.guard));
            }
        }
        self.frames.clear();
        self.saved.clear();
        // free this thread's thread states while its holds still keep their
        // interpreters alive; then release the holds
        let mut freed = 0u64;
        for i in 0..self.locals.len() {
            let Some(l) = &self.locals[i] else { continue };
            if l.ts.is_deleted() || l.ts.kind == TsKind::Borrowed {
                continue;
            }
            self.free_detached(i as u32);
            freed += 1;
        }
        for l in self.locals.iter().flatten() {
            if !l.ts.is_deleted() {
                self.reg.remove_tstate(&l.ts);
            }
        }
        for e in self.interps.iter_mut().flatten() {
            if e.spans > 0 {
                e.spans = 0;
                e.cell.spans.store(0, Ordering::Release);
                e.interp.gate.release_hold(false);
            }
            e.interp.remove_cell(&e.cell);
        }
        self.reg.count_exit(spans_closed, freed);
    }
}

#[cfg(all(test, not(loom)))]
mod fast_tests {
    use super::*;
    use crate::{Model, Runtime};

    fn counted() -> u32 {
        idle_ctx::<Model>()
            .expect("a context, no call inside")
            .fast
            .depth
    }

    /// The nested case takes the fast path: the inner spans are counted,
    /// not pushed through the call machinery (before the fast path, every
    /// nested ensure went through `with_ctx`: 171 instructions per
    /// ensure+release on `bench/callgrind.sh`'s ensure-A, 76 with it).
    #[test]
    fn nested_ensures_are_counted_by_the_fast_path() {
        std::thread::spawn(|| {
            let rt = Runtime::<Model>::new();
            let main = rt.main_interpreter().unwrap();
            let outer = rt.ensure_ticket(main).unwrap();
            assert_eq!(counted(), 0, "the outer span is a frame");
            let a = rt.ensure_ticket(main).unwrap();
            let b = rt.ensure_ticket(main).unwrap();
            assert_eq!(counted(), 2);
            rt.release_ticket(b).unwrap();
            assert_eq!(counted(), 1);
            assert!(rt.is_attached(main));
            rt.release_ticket(a).unwrap();
            assert_eq!(counted(), 0);
            rt.release_ticket(outer).unwrap();
            assert!(!rt.is_attached(main));
        })
        .join()
        .unwrap();
    }

    /// (counted re-attach span, frames of `rts[0]`)
    fn reattach_state() -> (bool, usize) {
        let t = idle_ctx::<Model>().expect("a context, no call inside");
        (t.fast.re_seq != NONE, t.rts[0].frames.len())
    }

    /// The re-attach case (ensure after a save, on every design's ensure)
    /// takes its fast path: the span is counted, not pushed as a frame
    /// through the call machinery (before: 513 instructions per
    /// ensure+release on `bench/callgrind.sh`'s ensure-B, 301 with it), and
    /// a slow call pushes it as the frame the slow path would have.
    #[test]
    fn a_reattach_after_a_save_is_counted_by_its_fast_path() {
        std::thread::spawn(|| {
            let rt = Runtime::<Model>::new();
            let main = rt.main_interpreter().unwrap();
            let sub = rt.create_interpreter(crate::LockMode::Own).unwrap();
            let g = rt.guard_for(main).unwrap();
            let outer = rt.ensure_ticket(main).unwrap();
            let saved = rt.save().unwrap();
            assert_eq!(reattach_state(), (false, 1), "the outer span's frame");
            // each design's ensure: thread-stored, ticket, under a guard
            // (once its interpreter is cached: the first ensure under a
            // guard looks it up in the guard table, on the slow path)
            rt.ensure(main).unwrap();
            assert_eq!(reattach_state(), (true, 1), "counted, no frame");
            rt.release().unwrap();
            assert_eq!(reattach_state(), (false, 1));
            let r = rt.ensure_ticket(main).unwrap();
            assert_eq!(reattach_state(), (true, 1));
            rt.release_ticket(r).unwrap();
            let r = rt.ensure_with_guard(g).unwrap();
            assert_eq!(reattach_state(), (false, 2), "looked up: a frame");
            rt.release_token(r).unwrap();
            for _ in 0..2 {
                let r = rt.ensure_with_guard(g).unwrap();
                assert_eq!(reattach_state(), (true, 1));
                rt.release_token(r).unwrap();
                assert_eq!(reattach_state(), (false, 1));
            }
            // nested spans between the saved span and the save: passed over,
            // as step (b)'s search does
            rt.restore(saved).unwrap();
            let n = rt.ensure_ticket(main).unwrap(); // counted, then a frame:
            let saved = rt.save().unwrap();
            assert_eq!(reattach_state(), (false, 2), "outer + nested frames");
            let r = rt.ensure_ticket(main).unwrap();
            assert_eq!(reattach_state(), (true, 2));
            rt.release_ticket(r).unwrap();
            rt.restore(saved).unwrap();
            rt.release_ticket(n).unwrap();
            let saved = rt.save().unwrap();
            // a slow call inside it: the span becomes a frame first
            rt.ensure(main).unwrap();
            rt.ensure(sub).unwrap();
            assert_eq!(reattach_state(), (false, 3));
            rt.release().unwrap();
            assert!(rt.is_attached(main));
            rt.release().unwrap();
            assert!(!rt.is_attached(main));
            rt.restore(saved).unwrap();
            rt.release_ticket(outer).unwrap();
            rt.close_guard(g).unwrap();
        })
        .join()
        .unwrap();
    }
}
