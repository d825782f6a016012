//! Plain value types of the public API: ids, handles, modes, reports.

use std::time::Duration;

slotmap::new_key_type! {
    /// Slot key of an interpreter in a runtime's registry.
    pub(crate) struct InterpKey;
    /// Slot key of a thread state in a runtime's registry.
    pub(crate) struct TsKey;
}

/// Turns a raw `u64` back into a slot key, refusing every value that
/// `KeyData::as_ffi` could not have produced (0, or an even version, which
/// `from_ffi` would otherwise silently round up onto a live key).
fn key_from_raw<K: slotmap::Key>(raw: u64) -> Option<K> {
    if raw == 0 {
        return None;
    }
    let key: K = slotmap::KeyData::from_ffi(raw).into();
    (key.data().as_ffi() == raw && !key.is_null()).then_some(key)
}

/// An interpreter, named by a `u64` that crosses the C ABI.
///
/// Built from a generational slot key (`KeyData::as_ffi`): 0 is never valid,
/// and an id whose interpreter is gone never resolves again, even after its
/// slot is reused (the slot's generation differs). Any `u64` can be turned
/// into an id; it is validated where it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct InterpreterId(u64);

impl InterpreterId {
    /// Wraps a raw value (e.g. from C). Not validated until used.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
    /// The raw value, for C.
    pub const fn as_raw(self) -> u64 {
        self.0
    }
    pub(crate) fn from_key(key: InterpKey) -> Self {
        Self(slotmap::Key::data(&key).as_ffi())
    }
    pub(crate) fn key(self) -> Option<InterpKey> {
        key_from_raw(self.0)
    }
}

/// A thread state, named by a generational `u64` handle (never 0).
///
/// Using a handle after its thread state was deleted gives
/// [`Error::InvalidHandle`](crate::Error::InvalidHandle); a slot reused by a
/// later thread state has another generation, so an old handle never reaches
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct ThreadStateId(u64);

impl ThreadStateId {
    /// Wraps a raw value (e.g. from C). Not validated until used.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
    /// The raw value, for C.
    pub const fn as_raw(self) -> u64 {
        self.0
    }
    pub(crate) fn from_key(key: TsKey) -> Self {
        Self(slotmap::Key::data(&key).as_ffi())
    }
    pub(crate) fn key(self) -> Option<TsKey> {
        key_from_raw(self.0)
    }
}

/// The handle of one ensure, for designs that pass it back to release.
///
/// Layout of the raw value (always in `1..=i32::MAX`, so a C `int` handle is
/// `>= 0` exactly when valid-looking):
///
/// | bits | meaning |
/// |---|---|
/// | 31 | 0 (the value is a non-negative `i32`) |
/// | 24..=30 | thread tag, 1..=127, from the issuing thread's number |
/// | 0..=23 | per-thread sequence number of the ensure (wraps at 2^24) |
///
/// A handle released on another thread is refused with
/// [`WrongThread`](crate::Error::WrongThread) when the tags differ (126 in
/// 127 foreign handles); otherwise, like a forged or already released handle,
/// with [`InvalidHandle`](crate::Error::InvalidHandle). A handle of an outer,
/// still open ensure gives [`OutOfOrder`](crate::Error::OutOfOrder). A stale
/// handle could only alias the open one after 2^24 further ensures on that
/// thread *and* with the same stack depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Ticket(u32);

impl Ticket {
    pub(crate) const SEQ_BITS: u32 = 24;
    pub(crate) const SEQ_MASK: u32 = (1 << Self::SEQ_BITS) - 1;

    pub(crate) fn new(tag: u8, seq: u32) -> Self {
        Self((u32::from(tag & 0x7f) << Self::SEQ_BITS) | (seq & Self::SEQ_MASK))
    }
    /// The raw value: `1..=i32::MAX` for any issued ticket.
    pub const fn to_raw(self) -> u32 {
        self.0
    }
    /// Wraps a raw value (e.g. a C handle). Not validated until used.
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }
    pub(crate) fn tag(self) -> u8 {
        (self.0 >> Self::SEQ_BITS) as u8
    }
    pub(crate) fn seq(self) -> u32 {
        self.0 & Self::SEQ_MASK
    }
}

/// How an interpreter serialises its attached threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum LockMode {
    /// Its own lock: a per-interpreter GIL (CPython 3.12+ isolated
    /// subinterpreters). At most one thread attached at a time.
    Own = 0,
    /// Shares the main interpreter's lock (legacy subinterpreters): at most
    /// one thread attached to main *and* all its sharing subinterpreters.
    SharedWithMain = 1,
    /// No lock (free-threaded): any number of threads attached at once.
    None = 2,
}

impl LockMode {
    /// The mode with this C value.
    pub fn from_raw(raw: u32) -> Option<LockMode> {
        match raw {
            0 => Some(LockMode::Own),
            1 => Some(LockMode::SharedWithMain),
            2 => Some(LockMode::None),
            _ => None,
        }
    }
}

/// Where an interpreter is in its life. Gone interpreters have no state:
/// asking gives [`Error::NoSuchInterpreter`](crate::Error::NoSuchInterpreter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum InterpreterState {
    /// Accepts new spans.
    Running = 0,
    /// Refuses new spans; waits for (or timed out waiting for) open ones.
    Finalizing = 1,
}

/// What kind of span holds an interpreter open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// Opened by ensure (thread-stored or handle design).
    Ensure,
    /// Opened by activate (explicit-lifecycle design).
    Activate,
}

/// One thread holding an interpreter open, as a timed-out finalize reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The runtime's number for the thread (stable for the thread's life).
    pub thread_number: u64,
    /// The operating system's thread id (Linux `gettid`), 0 if unknown.
    pub os_thread_id: u64,
    /// The thread's name, if it has one.
    pub thread_name: Option<String>,
    /// The kind of the thread's outermost span on the interpreter.
    pub kind: SpanKind,
    /// How many spans the thread has open on it (nested ones included).
    pub spans: u32,
    /// How long the thread has held it open (coarse clock: a few ms).
    pub held_for: Duration,
}

/// What happens to the thread state an ensure created once its outermost
/// span is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReusePolicy {
    /// Keep it for this thread's next ensure on that interpreter, but reset
    /// it first (its scratch data is cleared), so nothing leaks from one
    /// top-level ensure to the next and no allocation happens per call.
    #[default]
    KeepAndReset,
    /// Delete it (CPython's `PyGILState_Release` behaviour): the next ensure
    /// allocates a new one.
    DeleteOnRelease,
}

/// Options of a [`Runtime`](crate::Runtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuntimeOptions {
    /// Lock mode of the main interpreter (`Own` is a GIL build, `None` a
    /// free-threaded build). `SharedWithMain` is treated as `Own`.
    pub main_lock: LockMode,
    /// What happens to ensure-created thread states after the outermost
    /// release.
    pub reuse: ReusePolicy,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            main_lock: LockMode::Own,
            reuse: ReusePolicy::KeepAndReset,
        }
    }
}

/// Counters of a runtime, for tests and reports (C layout: the facades'
/// `*_diagnostics` write it as is).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Diagnostics {
    /// Interpreters that exist (running or finalizing).
    pub interpreters: u64,
    /// Thread states that exist (not deleted).
    pub thread_states: u64,
    /// Threads currently holding at least one interpreter open, summed over
    /// interpreters (what finalize waits for).
    pub open_holds: u64,
    /// Interpreters whose finalization completed.
    pub finalized: u64,
    /// Finalize calls that returned a timeout.
    pub finalize_timeouts: u64,
    /// Threads that exited with spans open or thread states alive and were
    /// cleaned up by the thread-exit destructor.
    pub exit_cleanups: u64,
    /// Spans closed by thread-exit destructors.
    pub exit_spans_closed: u64,
    /// Thread states freed by thread-exit destructors.
    pub exit_thread_states_freed: u64,
    /// Allocations made to fail by fault injection.
    pub injected_faults: u64,
    /// Times "Python work" saw another thread inside the same lock group at
    /// once (a mutual-exclusion violation; must stay 0).
    pub exclusion_violations: u64,
    /// Times "Python work" found its interpreter already finalized (must
    /// stay 0).
    pub work_after_finalize: u64,
}
