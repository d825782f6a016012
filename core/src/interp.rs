//! One interpreter: its id and lock mode, its gate, its backend data, the
//! modelled "Python work" data, and the cells through which a finalizer
//! learns who holds it open.

use crate::backend::Backend;
use crate::gate::Gate;
use crate::sync::{Arc, Mutex, PyData};
// Hold cells and the exclusion detector are reports, not synchronisation
// the core relies on: plain std atomics even under loom (the models check
// exclusion through `PyData`, a loom cell).
use crate::types::{Holder, InterpreterId, LockMode, SpanKind};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The shared, cross-thread view of one thread's hold on one interpreter,
/// written only by that thread (plain atomic stores), read by a finalizer
/// that reports holders.
pub(crate) struct HoldCell {
    pub(crate) thread: Arc<ThreadInfo>,
    /// Spans (ensure/activate) this thread has open on the interpreter.
    pub(crate) spans: AtomicU32,
    /// Coarse time when `spans` went from 0 to 1.
    pub(crate) since_ns: AtomicU64,
    /// Kind of the outermost span: 0 ensure, 1 activate.
    pub(crate) kind: AtomicU8,
}

/// Identity of a thread, for holder reports: shared by the thread's
/// context, its records in interpreters and the guards it opens, so that a
/// report names the thread without a system call per span or guard. The
/// name is the one the thread had at its first use of the library (a
/// later rename is not seen).
pub(crate) struct ThreadInfo {
    pub(crate) number: u64,
    /// The OS thread id. Not a synchronization word: written once at
    /// creation and once more in the child of a `fork()` (where the
    /// forking thread has a new id and no other thread exists), read only
    /// for reports (Relaxed).
    pub(crate) os_tid: AtomicU64,
    pub(crate) name: Option<String>,
}

impl ThreadInfo {
    pub(crate) fn os_tid(&self) -> u64 {
        self.os_tid.load(Ordering::Relaxed)
    }
}

/// One interpreter.
pub struct Interp<B: Backend> {
    pub(crate) id: InterpreterId,
    pub(crate) mode: LockMode,
    pub(crate) is_main: bool,
    pub(crate) gate: Gate,
    pub(crate) data: B::Interp,
    /// The modelled Python data that "Python work" mutates.
    work: PyData,
    /// Data of this interpreter's lock group (kept on the group's lock
    /// owner): what every interpreter sharing a lock touches under it — as
    /// legacy subinterpreters share the main interpreter's allocator state.
    group_data: PyData,
    /// Threads inside "Python work" in this lock group (kept on the group's
    /// lock owner), to detect mutual-exclusion violations. Relaxed on
    /// purpose: a detector, not synchronisation (so that under loom it
    /// cannot hide a missing ordering of the lock).
    in_work: AtomicU32,
    /// Threads that hold or once held this interpreter, for holder reports.
    cells: Mutex<Vec<Arc<HoldCell>>>,
}

/// What one call of "Python work" observed.
pub(crate) struct WorkOutcome {
    pub(crate) value: u64,
    pub(crate) exclusion_violated: bool,
    pub(crate) after_gone: bool,
}

impl<B: Backend> Interp<B> {
    pub(crate) fn new(id: InterpreterId, mode: LockMode, is_main: bool, data: B::Interp) -> Self {
        Self {
            id,
            mode,
            is_main,
            gate: Gate::new(),
            data,
            work: PyData::new(),
            group_data: PyData::new(),
            in_work: AtomicU32::new(0),
            cells: Mutex::new(Vec::new()),
        }
    }

    /// "Python work": mutates the interpreter's data (racy on purpose, see
    /// [`PyData`]) and reports whether exclusion or liveness was violated.
    pub(crate) fn work(&self) -> WorkOutcome {
        let locked = B::lock_group(self);
        let group = locked.unwrap_or(self);
        let inside = group.in_work.fetch_add(1, Ordering::Relaxed);
        let exclusion_violated = inside != 0 && locked.is_some();
        let after_gone = self.gate.is_gone();
        let value = self.work.increment();
        if locked.is_some() {
            group.group_data.increment();
        }
        group.in_work.fetch_sub(1, Ordering::Relaxed);
        WorkOutcome {
            value,
            exclusion_violated,
            after_gone,
        }
    }

    pub(crate) fn work_count(&self) -> u64 {
        self.work.get()
    }

    /// The finalizer's last touch of the interpreter's data once no span is
    /// left (CPython frees its objects here): every span's work must
    /// happen-before it — which the loom models check through `PyData`.
    pub(crate) fn teardown(&self) {
        self.work.teardown();
    }

    /// Registers one thread's hold cell (once per thread and interpreter).
    pub(crate) fn add_cell(&self, cell: Arc<HoldCell>) {
        self.cells.lock().push(cell);
    }

    /// Forgets one thread's hold cell (thread exit or prune).
    pub(crate) fn remove_cell(&self, cell: &Arc<HoldCell>) {
        self.cells.lock().retain(|c| !Arc::ptr_eq(c, cell));
    }

    /// Forgets every cell but those of thread `keep` (after `fork()`).
    #[cfg(not(loom))]
    pub(crate) fn keep_cells_of(&self, keep: u64) {
        self.cells.lock().retain(|c| c.thread.number == keep);
    }

    #[cfg(not(loom))]
    pub(crate) fn fork_lock(&self) {
        self.gate.fork_lock();
        self.cells.fork_lock();
    }

    /// # Safety
    /// Only after [`fork_lock`](Self::fork_lock) on this thread.
    #[cfg(not(loom))]
    pub(crate) unsafe fn fork_unlock(&self) {
        // SAFETY: forwarded contract.
        unsafe {
            self.cells.fork_unlock();
            self.gate.fork_unlock();
        }
    }

    /// The threads holding this interpreter open now.
    pub(crate) fn holders(&self) -> Vec<Holder> {
        let now = crate::sync::coarse_now_ns();
        self.cells
            .lock()
            .iter()
            .filter_map(|c| {
                let spans = c.spans.load(Ordering::Acquire);
                (spans > 0).then(|| Holder {
                    thread_number: c.thread.number,
                    os_thread_id: c.thread.os_tid(),
                    thread_name: c.thread.name.clone(),
                    kind: if c.kind.load(Ordering::Relaxed) == 1 {
                        SpanKind::Activate
                    } else {
                        SpanKind::Ensure
                    },
                    spans,
                    held_for: Duration::from_nanos(
                        now.saturating_sub(c.since_ns.load(Ordering::Relaxed)),
                    ),
                })
            })
            .collect()
    }
}
