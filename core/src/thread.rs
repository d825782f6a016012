//! Per-thread state: what this OS thread has attached, the stack of its
//! open spans, its thread states, and the thread-exit destructor.
//!
//! Everything here is thread-local (one [`RtCtx`] per runtime the thread has
//! used), so the fast paths take no lock and touch no shared cache line:
//!
//! * **nested ensure** (already attached to the target): compare the cached
//!   current interpreter id, push a 20-byte frame — no atomic read-modify-write;
//! * **re-attach** (a frame of this thread already holds the target open,
//!   e.g. after a save): one lock acquisition;
//! * **fresh ensure** (the thread holds nothing on the target): one CAS on the
//!   interpreter's gate word that checks "not finalizing", takes the hold and
//!   (usually) the lock; the thread's kept thread state is reused, so no
//!   allocation after the first call.
//!
//! A span stack frame records what to undo: which thread state it attached
//! and which one was attached before (re-attached on release), so nesting
//! restores exactly, across interpreters too.

use crate::error::{Error, Result};
use crate::interp::{HoldCell, Interp, ThreadInfo};
use crate::runtime::Inner;
use crate::sync::{Arc, AtomicU8, AtomicU32, AtomicU64, Ordering, thread_local_ctx};
use crate::tstate::TState;
use crate::types::{InterpreterId, ReusePolicy, SpanKind, ThreadStateId, Ticket};
use std::cell::RefCell;

/// "No index" in the thread-local tables.
const NONE: u32 = u32::MAX;

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
    /// Raw id of the interpreter.
    interp: u64,
}

struct Local {
    ts: Arc<TState>,
    /// Index of its interpreter in `RtCtx::interps`.
    il: u32,
}

struct InterpLocal {
    interp: Arc<Interp>,
    cell: Arc<HoldCell>,
    /// Enter spans this thread has open on it (the gate counts 1 while > 0).
    spans: u32,
    /// Local index of the thread state ensure reuses here (NONE if none).
    home: u32,
}

/// What one OS thread knows about one runtime.
pub(crate) struct RtCtx {
    rt: Arc<Inner>,
    info: Arc<ThreadInfo>,
    tag: u8,
    locals: Vec<Option<Local>>,
    interps: Vec<Option<InterpLocal>>,
    frames: Vec<Frame>,
    saved: Vec<u32>,
    current: u32,
    /// Raw id of the current thread state's interpreter, 0 if none (the
    /// nested fast path compares only this).
    current_interp: u64,
    next_seq: u32,
}

/// Everything this OS thread knows. `rts[0]` is the runtime used last, so
/// the fast paths find their context with one pointer comparison.
struct ThreadCtx {
    /// Created on first use (not in the const initializer).
    info: Option<Arc<ThreadInfo>>,
    tag: u8,
    rts: Vec<RtCtx>,
}

impl ThreadCtx {
    const EMPTY: ThreadCtx = ThreadCtx {
        info: None,
        tag: 0,
        rts: Vec::new(),
    };

    fn info(&mut self) -> Arc<ThreadInfo> {
        if let Some(i) = &self.info {
            return i.clone();
        }
        let number = crate::sync::next_thread_number();
        let info = Arc::new(ThreadInfo {
            number,
            os_tid: crate::sync::os_thread_id(),
            name: std::thread::current().name().map(str::to_owned),
        });
        self.tag = (number % 127) as u8 + 1;
        self.info = Some(info.clone());
        info
    }
}

impl Drop for ThreadCtx {
    fn drop(&mut self) {
        for rt in self.rts.drain(..) {
            rt.exit();
        }
    }
}

thread_local_ctx! {
    static THREAD: RefCell<ThreadCtx> = RefCell::new(ThreadCtx::EMPTY);
}

/// Runs `f` on this thread's context for `rt`, creating it on first use.
/// A thread whose thread-locals are already destroyed (it is exiting) gets
/// `WrongThread`.
#[inline]
pub(crate) fn with_ctx<R>(rt: &Arc<Inner>, f: impl FnOnce(&mut RtCtx) -> Result<R>) -> Result<R> {
    THREAD
        .try_with(|cell| {
            let mut t = cell.try_borrow_mut().map_err(|_| Error::Busy)?;
            match t.rts.first_mut() {
                Some(c) if Arc::ptr_eq(&c.rt, rt) => f(c),
                _ => {
                    let c = find_or_create(&mut t, rt)?;
                    f(c)
                }
            }
        })
        .unwrap_or(Err(Error::WrongThread))
}

/// Moves `rt`'s context to the front (creating it, an allocation point, on
/// this thread's first use of `rt`), forgetting dropped runtimes.
#[cold]
fn find_or_create<'a>(t: &'a mut ThreadCtx, rt: &Arc<Inner>) -> Result<&'a mut RtCtx> {
    let mut k = 0;
    while k < t.rts.len() {
        if t.rts[k].rt.is_closed() {
            t.rts.swap_remove(k).exit();
        } else {
            k += 1;
        }
    }
    match t.rts.iter().position(|c| Arc::ptr_eq(&c.rt, rt)) {
        Some(i) => t.rts.swap(0, i),
        None => {
            rt.alloc_point()?;
            t.rts.try_reserve(1).map_err(|_| Error::NoMemory)?;
            let info = t.info();
            t.rts.push(RtCtx::new(rt.clone(), info, t.tag));
            let last = t.rts.len() - 1;
            t.rts.swap(0, last);
        }
    }
    Ok(&mut t.rts[0])
}

/// Runs `f` on this thread's context for `rt` if it exists (never creates).
#[inline]
pub(crate) fn with_existing<R>(rt: &Arc<Inner>, f: impl FnOnce(&mut RtCtx) -> R) -> Option<R> {
    THREAD
        .try_with(|cell| {
            let mut t = cell.try_borrow_mut().ok()?;
            let c = t.rts.iter_mut().find(|c| Arc::ptr_eq(&c.rt, rt))?;
            Some(f(c))
        })
        .ok()
        .flatten()
}

/// This thread's runtime-independent number (allocating it on first use).
pub(crate) fn thread_number() -> u64 {
    THREAD
        .try_with(|cell| {
            cell.try_borrow_mut()
                .map(|mut t| t.info().number)
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// What finalize remembers about its caller while it waits.
pub(crate) struct Parked {
    detached: Option<u32>,
}

impl RtCtx {
    fn new(rt: Arc<Inner>, info: Arc<ThreadInfo>, tag: u8) -> Self {
        Self {
            rt,
            info,
            tag,
            locals: Vec::new(),
            interps: Vec::new(),
            frames: Vec::with_capacity(8),
            saved: Vec::new(),
            current: NONE,
            current_interp: 0,
            next_seq: 0,
        }
    }

    fn local(&self, idx: u32) -> &Local {
        self.locals[idx as usize]
            .as_ref()
            .expect("frame refers to a live local")
    }

    fn ts(&self, idx: u32) -> &Arc<TState> {
        &self.local(idx).ts
    }

    fn il(&self, idx: u32) -> &InterpLocal {
        self.interps[idx as usize]
            .as_ref()
            .expect("local refers to a live interp entry")
    }

    fn il_mut(&mut self, idx: u32) -> &mut InterpLocal {
        self.interps[idx as usize]
            .as_mut()
            .expect("local refers to a live interp entry")
    }

    fn ticket(&mut self) -> (Ticket, u32) {
        let seq = self.next_seq;
        self.next_seq = (seq + 1) & Ticket::SEQ_MASK;
        (Ticket::new(self.tag, seq), seq)
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
        self.rt.alloc_point()?;
        self.frames.try_reserve(8).map_err(|_| Error::NoMemory)
    }

    fn set_current(&mut self, idx: u32) {
        let l = self.local(idx);
        l.ts.set_attached(true);
        self.current_interp = l.ts.interp.id.as_raw();
        self.current = idx;
    }

    /// Detaches the current thread state (releasing its lock, keeping its
    /// hold) and returns its index.
    fn detach_current(&mut self) -> u32 {
        let cur = self.current;
        if cur != NONE {
            let ts = self.ts(cur);
            ts.set_attached(false);
            ts.interp.unlock();
            self.current = NONE;
            self.current_interp = 0;
        }
        cur
    }

    /// Re-attaches a thread state this thread holds its interpreter open
    /// with (always succeeds; may wait for the lock). Skips a thread state
    /// whose interpreter this thread itself finalized meanwhile.
    fn reattach(&mut self, idx: u32) {
        if idx != NONE && !self.ts(idx).is_deleted() {
            self.ts(idx).interp.lock();
            self.set_current(idx);
        }
    }

    // ----- ensure / release ------------------------------------------------

    /// Ensure: attach a thread state of `id` to this thread, restoring what
    /// was there on the matching release.
    #[inline]
    pub(crate) fn ensure(&mut self, id: InterpreterId) -> Result<Ticket> {
        let raw = id.as_raw();
        if raw != 0 && self.current_interp == raw {
            self.reserve_frame()?;
            let (t, seq) = self.ticket();
            self.frames.push(Frame {
                kind: FrameKind::Nested,
                ts: NONE,
                prev: NONE,
                seq,
                interp: raw,
            });
            return Ok(t);
        }
        self.ensure_slow(id)
    }

    fn ensure_slow(&mut self, id: InterpreterId) -> Result<Ticket> {
        let raw = id.as_raw();
        if raw == 0 {
            return Err(Error::NoSuchInterpreter);
        }
        self.reserve_frame()?;
        // (b) this thread already holds `id` open through a detached thread
        // state (saved by Py_BEGIN_ALLOW_THREADS, or switched away from):
        // re-attach that one. No new hold, so never refused while finalizing
        // — this thread is one of the holders finalize waits for.
        if let Some(ts) = self
            .frames
            .iter()
            .rev()
            .find(|f| f.interp == raw && f.ts != NONE)
            .map(|f| f.ts)
            .filter(|&ts| !self.ts(ts).is_deleted())
        {
            let prev = self.detach_current();
            self.reattach(ts);
            let (t, seq) = self.ticket();
            self.frames.push(Frame {
                kind: FrameKind::Reattach,
                ts,
                prev,
                seq,
                interp: raw,
            });
            return Ok(t);
        }
        // (c) take this thread's hold (the gate) and attach its kept thread
        // state for `id`, creating it the first time.
        let il = self.interp_local(id)?;
        let (ts, prev) = self.enter(il, SpanKind::Ensure, None)?;
        let (t, seq) = self.ticket();
        self.frames.push(Frame {
            kind: FrameKind::Enter(SpanKind::Ensure),
            ts,
            prev,
            seq,
            interp: raw,
        });
        Ok(t)
    }

    /// Takes this thread's hold on interp-local `il` (through the gate if it
    /// is the first), then attaches `given` or the kept thread state (created
    /// if needed). Returns (attached, previous). On error nothing changed.
    fn enter(&mut self, il: u32, kind: SpanKind, given: Option<u32>) -> Result<(u32, u32)> {
        let first = self.il(il).spans == 0;
        let mut got_lock = false;
        if first {
            got_lock = self.il(il).interp.try_open_hold()?;
        }
        let ts = match given {
            Some(ts) => ts,
            None => match self.home_ts(il) {
                Ok(ts) => ts,
                Err(e) => {
                    if first {
                        self.il(il).interp.close_hold(got_lock);
                    }
                    return Err(e);
                }
            },
        };
        let prev = self.detach_current();
        if !got_lock {
            self.il(il).interp.lock();
        }
        self.set_current(ts);
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
        let idx = self.new_local(&interp, il, true)?;
        if self.rt.options.reuse == ReusePolicy::KeepAndReset {
            self.il_mut(il).home = idx;
        }
        Ok(idx)
    }

    fn new_local(&mut self, interp: &Arc<Interp>, il: u32, by_ensure: bool) -> Result<u32> {
        let slot = self.locals.iter().position(Option::is_none);
        if slot.is_none() {
            self.locals.try_reserve(1).map_err(|_| Error::NoMemory)?;
        }
        let ts = self.rt.new_tstate(interp, self.info.number, by_ensure)?;
        let local = Some(Local { ts, il });
        Ok(match slot {
            Some(i) => {
                self.locals[i] = local;
                i as u32
            }
            None => {
                self.locals.push(local);
                (self.locals.len() - 1) as u32
            }
        })
    }

    /// Undoes a popped Reattach or Enter frame.
    fn leave(&mut self, f: Frame) {
        let ts = f.ts;
        let dead = self.ts(ts).is_deleted();
        if !dead {
            let il = self.local(ts).il;
            self.ts(ts).set_attached(false);
            match f.kind {
                FrameKind::Enter(kind) => {
                    let e = self.il_mut(il);
                    e.spans -= 1;
                    let last = e.spans == 0;
                    e.cell.spans.store(e.spans, Ordering::Release);
                    if last {
                        e.interp.close_hold(true);
                    } else {
                        e.interp.unlock();
                    }
                    if kind == SpanKind::Ensure && self.ts(ts).by_ensure {
                        match self.rt.options.reuse {
                            ReusePolicy::KeepAndReset => self.ts(ts).reset(),
                            ReusePolicy::DeleteOnRelease => self.delete_local(ts),
                        }
                    }
                }
                _ => self.ts(ts).interp.unlock(),
            }
        }
        self.current = NONE;
        self.current_interp = 0;
        self.reattach(f.prev);
    }

    /// Checks that `f` (the top frame) can be undone now and undoes it.
    fn pop_top(&mut self, f: Frame) -> Result<()> {
        if f.kind == FrameKind::Nested {
            if self.current_interp != f.interp {
                return Err(Error::OutOfOrder);
            }
            self.frames.pop();
            return Ok(());
        }
        if self.current != f.ts && !self.ts(f.ts).is_deleted() {
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
            Some(f) if f.kind == FrameKind::Nested && f.interp == self.current_interp => {
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
        match self.frames.last() {
            None => Err(Error::NotAttached),
            Some(f) if f.kind == FrameKind::Enter(SpanKind::Activate) => Err(Error::OutOfOrder),
            Some(&f) => self.pop_top(f),
        }
    }

    /// Handle release: undoes the ensure `t`, which must be the innermost.
    #[inline]
    pub(crate) fn release_ticket(&mut self, t: Ticket) -> Result<()> {
        if let Some(f) = self.frames.last()
            && f.seq == t.seq()
            && t.tag() == self.tag
            && self.pop_nested().is_some()
        {
            return Ok(());
        }
        self.release_ticket_slow(t)
    }

    fn release_ticket_slow(&mut self, t: Ticket) -> Result<()> {
        if t.tag() != self.tag {
            return Err(if t.tag() == 0 || t.to_raw() > i32::MAX as u32 {
                Error::InvalidHandle
            } else {
                Error::WrongThread
            });
        }
        let is_ensure = |f: &Frame| f.kind != FrameKind::Enter(SpanKind::Activate);
        match self.frames.last() {
            Some(&f) if f.seq == t.seq() && is_ensure(&f) => self.pop_top(f),
            _ if self.frames.iter().any(|f| f.seq == t.seq() && is_ensure(f)) => {
                Err(Error::OutOfOrder)
            }
            _ => Err(Error::InvalidHandle),
        }
    }

    // ----- explicit lifecycle ---------------------------------------------

    /// Creates a detached thread state of `id` owned by this thread.
    pub(crate) fn new_thread_state(&mut self, id: InterpreterId) -> Result<ThreadStateId> {
        let il = self.interp_local(id)?;
        if self.il(il).interp.is_finalizing() {
            return Err(Error::Finalizing);
        }
        let interp = self.il(il).interp.clone();
        let idx = self.new_local(&interp, il, false)?;
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
        Err(match self.rt.tstate_owner(id) {
            Some(owner) if owner != self.info.number => Error::WrongThread,
            _ => Error::InvalidHandle,
        })
    }

    fn in_use(&self, idx: u32) -> bool {
        self.current == idx || self.frames.iter().any(|f| f.ts == idx) || self.saved.contains(&idx)
    }

    /// Activates (attaches inside a new span) one of this thread's thread
    /// states.
    pub(crate) fn activate(&mut self, id: ThreadStateId) -> Result<()> {
        let idx = self.find_local(id)?;
        if self.ts(idx).is_deleted() {
            // still owned by this thread, freed by its interpreter's finalization
            return Err(Error::NoSuchInterpreter);
        }
        if self.in_use(idx) {
            return Err(Error::Busy);
        }
        self.reserve_frame()?;
        let il = self.local(idx).il;
        let (ts, prev) = self.enter(il, SpanKind::Activate, Some(idx))?;
        let (_, seq) = self.ticket();
        let interp = self.ts(ts).interp.id.as_raw();
        self.frames.push(Frame {
            kind: FrameKind::Enter(SpanKind::Activate),
            ts,
            prev,
            seq,
            interp,
        });
        Ok(())
    }

    /// Deactivates the innermost activation, which must be of `id`.
    pub(crate) fn deactivate(&mut self, id: ThreadStateId) -> Result<()> {
        let idx = self.find_local(id)?;
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
        let idx = self.find_local(id)?;
        if self.in_use(idx) {
            return Err(Error::Busy);
        }
        self.delete_local(idx);
        Ok(())
    }

    fn delete_local(&mut self, idx: u32) {
        let l = self.locals[idx as usize].take().expect("live local");
        if !l.ts.is_deleted() {
            self.rt.delete_tstate(&l.ts);
        }
        let e = self.il_mut(l.il);
        if e.home == idx {
            e.home = NONE;
        }
    }

    /// The attached thread state and its interpreter, if any.
    pub(crate) fn current(&self) -> Option<(ThreadStateId, InterpreterId)> {
        (self.current != NONE).then(|| {
            let ts = self.ts(self.current);
            (ts.id, ts.interp.id)
        })
    }

    pub(crate) fn is_attached_to(&self, id: InterpreterId) -> bool {
        id.as_raw() != 0 && self.current_interp == id.as_raw()
    }

    // ----- save / restore --------------------------------------------------

    /// `PyEval_SaveThread`: detach the current thread state, keeping its
    /// span open; returns it for [`restore`](Self::restore).
    pub(crate) fn save(&mut self) -> Result<ThreadStateId> {
        if self.current == NONE {
            return Err(Error::NotAttached);
        }
        if self.saved.len() == self.saved.capacity() {
            self.rt.alloc_point()?;
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
        let o = self.ts(self.current).interp.work();
        if o.exclusion_violated {
            self.rt.count(|c| &c.exclusion_violations);
        }
        if o.after_gone {
            self.rt.count(|c| &c.work_after_finalize);
        }
        Ok(o.value)
    }

    pub(crate) fn current_ts(&self) -> Result<&Arc<TState>> {
        if self.current == NONE {
            return Err(Error::NotAttached);
        }
        Ok(self.ts(self.current))
    }

    // ----- interpreters seen by this thread --------------------------------

    /// This thread's entry for interpreter `id`, creating it (an allocation
    /// point) after a registry lookup on first use.
    fn interp_local(&mut self, id: InterpreterId) -> Result<u32> {
        if let Some(i) = self
            .interps
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.interp.id == id))
        {
            if self.il(i as u32).interp.is_gone() {
                return Err(Error::NoSuchInterpreter);
            }
            return Ok(i as u32);
        }
        let interp = self.rt.lookup(id)?;
        self.prune();
        self.rt.alloc_point()?;
        let slot = self.interps.iter().position(Option::is_none);
        if slot.is_none() {
            self.interps.try_reserve(1).map_err(|_| Error::NoMemory)?;
        }
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
        Ok(match slot {
            Some(i) => {
                self.interps[i] = e;
                i as u32
            }
            None => {
                self.interps.push(e);
                (self.interps.len() - 1) as u32
            }
        })
    }

    /// Drops entries of gone interpreters that no frame or saved state
    /// still refers to, and deleted thread states nothing refers to.
    fn prune(&mut self) {
        for i in 0..self.locals.len() {
            let idx = i as u32;
            if self.locals[i].as_ref().is_some_and(|l| l.ts.is_deleted()) && !self.in_use(idx) {
                let l = self.locals[i].take().expect("checked");
                let e = self.il_mut(l.il);
                if e.home == idx {
                    e.home = NONE;
                }
            }
        }
        for i in 0..self.interps.len() {
            let Some(e) = &self.interps[i] else { continue };
            let id = e.interp.id.as_raw();
            let referenced = self.frames.iter().any(|f| f.interp == id)
                || self.locals.iter().flatten().any(|l| l.il == i as u32);
            if e.interp.is_gone() && !referenced {
                let e = self.interps[i].take().expect("checked");
                e.interp.remove_cell(&e.cell);
            }
        }
    }

    // ----- finalize support --------------------------------------------------

    /// Whether this thread holds `interp` open (finalize does not wait for
    /// its own caller).
    pub(crate) fn holds(&self, interp: &Arc<Interp>) -> bool {
        self.interps
            .iter()
            .flatten()
            .any(|e| Arc::ptr_eq(&e.interp, interp) && e.spans > 0)
    }

    /// Detaches the caller for the duration of a finalize wait (finalize
    /// never holds a lock while it waits).
    pub(crate) fn park_for_finalize(&mut self) -> Parked {
        let cur = self.detach_current();
        Parked {
            detached: (cur != NONE).then_some(cur),
        }
    }

    /// After a finalize attempt: forget the caller's own hold on a gone
    /// interpreter and re-attach what was attached, if it still exists.
    pub(crate) fn unpark_after_finalize(&mut self, interp: &Arc<Interp>, parked: Parked) {
        if interp.is_gone() {
            for e in self.interps.iter_mut().flatten() {
                if Arc::ptr_eq(&e.interp, interp) {
                    e.spans = 0;
                    e.home = NONE;
                    e.cell.spans.store(0, Ordering::Release);
                }
            }
        }
        if let Some(idx) = parked.detached {
            self.reattach(idx);
        }
    }

    // ----- thread exit ---------------------------------------------------

    /// The thread-exit destructor: closes every open span, frees every
    /// thread state of this thread, and counts what it had to clean up.
    fn exit(mut self) {
        if self.rt.is_closed() {
            return;
        }
        let spans_closed = self
            .frames
            .iter()
            .filter(|f| f.ts == NONE || !self.ts(f.ts).is_deleted())
            .count() as u64;
        self.detach_current();
        self.frames.clear();
        self.saved.clear();
        for e in self.interps.iter_mut().flatten() {
            if e.spans > 0 {
                e.spans = 0;
                e.cell.spans.store(0, Ordering::Release);
                e.interp.close_hold(false);
            }
            e.interp.remove_cell(&e.cell);
        }
        let mut freed = 0u64;
        for l in self.locals.iter().flatten() {
            if !l.ts.is_deleted() {
                self.rt.delete_tstate(&l.ts);
                freed += 1;
            }
        }
        self.rt.count_exit(spans_closed, freed);
    }
}
