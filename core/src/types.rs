//! Plain value types of the public API: ids, handles, modes, reports.

use std::time::Duration;

/// Declares a `u64` id type that crosses the C ABI: `from_raw` (not
/// validated until used) and `as_raw`.
macro_rules! raw_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw value (e.g. from C). Not validated until used.
            pub const fn from_raw(raw: u64) -> Self {
                Self(raw)
            }
            /// The raw value, for C.
            pub const fn as_raw(self) -> u64 {
                self.0
            }
        }
    };
}

raw_id! {
    /// An interpreter, named by a `u64` that crosses the C ABI.
    ///
    /// A generational id (slotmap's `KeyData::as_ffi` layout, see the `ids`
    /// module): 0 is never valid, and an id whose interpreter is gone never
    /// resolves again, even after its slot is reused, however often (a slot is
    /// retired before its generation could wrap). Any `u64` can be turned into
    /// an id; it is validated where it is used.
    InterpreterId
}

raw_id! {
    /// A thread state, named by a generational `u64` handle (never 0).
    ///
    /// Using a handle after its thread state was deleted gives
    /// [`Error::InvalidHandle`](crate::Error::InvalidHandle); a slot reused by a
    /// later thread state has another generation, so an old handle never reaches
    /// it.
    ThreadStateId
}

raw_id! {
    /// A guard of the guard design (PEP 788's `PyInterpreterGuard`): a hold
    /// on an interpreter that keeps it from finalizing until closed. A
    /// generational `u64` (never 0); a closed guard's id never resolves again.
    GuardId
}

raw_id! {
    /// A view of the guard design (PEP 788's `PyInterpreterView`): a weak
    /// reference to an interpreter that never blocks its finalization and
    /// stays safe to use after it is gone. A generational `u64` (never 0).
    ViewId
}

/// The handle of one ensure, for designs that pass it back to release.
///
/// Layout of the raw value (always in `1..=i32::MAX`, so a C `int` handle is
/// `>= 0` exactly when valid-looking):
///
/// | bits | meaning |
/// |---|---|
/// | 31 | 0 (the value is a non-negative `i32`) |
/// | 19..=30 | thread tag, `1..=4095`: unique among the live threads that use tstate |
/// | 0..=18 | per-thread sequence number of the ensure (wraps at 2^19) |
///
/// Tags are handed out when a thread first uses tstate and returned when it
/// exits, so two live threads never share one: a handle released on another
/// live thread is always refused with
/// [`WrongThread`](crate::Error::WrongThread), and never closes that
/// thread's own span. A handle that was never issued (its tag belongs to no
/// live thread), already released, or issued by a thread that has exited
/// gives [`InvalidHandle`](crate::Error::InvalidHandle); a handle of an
/// outer, still open ensure gives [`OutOfOrder`](crate::Error::OutOfOrder).
///
/// The bound: a thread that takes over the tag of an exited thread
/// continues that tag's sequence where the exited thread stopped, so an old
/// handle could only be mistaken for an open span of the new thread after
/// 2^19 further ensures with that tag — and then only if it equals one of
/// the spans open at that moment. At most 4,095 threads can use tstate at
/// once; on the 4,096th, the handle design's ensure is refused with
/// [`Busy`](crate::Error::Busy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Ticket(u32);

impl Ticket {
    pub(crate) const SEQ_BITS: u32 = 19;
    pub(crate) const SEQ_MASK: u32 = (1 << Self::SEQ_BITS) - 1;
    pub(crate) const MAX_TAG: u16 = (1 << 12) - 1;

    pub(crate) fn new(tag: u16, seq: u32) -> Self {
        Self((u32::from(tag & Self::MAX_TAG) << Self::SEQ_BITS) | (seq & Self::SEQ_MASK))
    }
    /// The raw value: `1..=i32::MAX` for any issued ticket.
    pub const fn to_raw(self) -> u32 {
        self.0
    }
    /// Wraps a raw value (e.g. a C handle). Not validated until used.
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }
    pub(crate) fn tag(self) -> u16 {
        ((self.0 >> Self::SEQ_BITS) & u32::from(Self::MAX_TAG)) as u16
    }
    pub(crate) fn seq(self) -> u32 {
        self.0 & Self::SEQ_MASK
    }
    /// Whether the value could have been issued at all.
    pub(crate) fn well_formed(self) -> bool {
        self.0 <= i32::MAX as u32 && self.tag() != 0
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
    /// An open guard of the guard design (not a thread's span: it may have
    /// been taken on one thread and be held for another).
    Guard,
}

/// One thread holding an interpreter open, as a timed-out finalize reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The runtime's number for the thread (stable for the thread's life).
    pub thread_number: u64,
    /// The operating system's thread id (Linux `gettid`), 0 if unknown;
    /// in the child of a `fork()`, the forking thread's id in the child.
    pub os_thread_id: u64,
    /// The thread's name, if it has one: the name it had when it first
    /// used the library (for a guard opened by a thread that had not, its
    /// name when it opened the guard). A later rename is not seen: the
    /// name is read once per thread, not per span or guard.
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
    /// creates a new one (a new id; the backend's thread state is new —
    /// CPython allocates a `PyThreadState` — while the library's record of
    /// the deleted one is reused, as the thread's spare).
    DeleteOnRelease,
}

/// Options of a [`Runtime`](crate::Runtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuntimeOptions {
    /// Lock mode of the main interpreter (`Own` is a GIL build, `None` a
    /// free-threaded build). `SharedWithMain` is treated as `Own`. The model
    /// only: the CPython backend's is CPython's.
    pub main_lock: LockMode,
    /// What happens to ensure-created thread states after the outermost
    /// release (the CPython backend always deletes subinterpreters' ones:
    /// see `docs/cpython-backend.md`).
    pub reuse: ReusePolicy,
    /// Generation of every registry slot's first id. 0 (the default): a
    /// random base in `1..=2³¹`, so that two runtimes in one process (two
    /// facades) hand out different ids, and an id of one is refused by the
    /// other (`NoSuchInterpreter`, `InvalidHandle`) but with a chance of
    /// 2⁻³¹; a slot still serves at least 2³¹ reuses before it is retired.
    /// A fixed value is a test hook (near `u32::MAX` reaches the point where
    /// a slot is retired at once).
    pub first_generation: u32,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            main_lock: LockMode::Own,
            reuse: ReusePolicy::KeepAndReset,
            first_generation: 0,
        }
    }
}

/// Which backend a runtime runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum BackendKind {
    /// The runtime model (the reference; loom-checked).
    Model = 0,
    /// Real CPython (libpython 3.9–3.13 in this process).
    CPython = 1,
}

impl BackendKind {
    /// `"model"` or `"cpython"`.
    pub const fn name(self) -> &'static str {
        match self {
            BackendKind::Model => "model",
            BackendKind::CPython => "cpython",
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
    /// Thread states whose thread exited while their interpreter refused new
    /// holds: left for that interpreter's finalization to free.
    pub orphaned_thread_states: u64,
    /// Times "Python work" saw another thread inside the same lock group at
    /// once (a mutual-exclusion violation; must stay 0).
    pub exclusion_violations: u64,
    /// Times "Python work" found its interpreter already finalized (must
    /// stay 0).
    pub work_after_finalize: u64,
}
