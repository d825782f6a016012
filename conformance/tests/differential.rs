//! Differential property tests: random sequences of calls through each
//! facade's C functions — create, enter, leave (also of closed, foreign and
//! made-up spans), save, restore (also of the wrong thread state), work,
//! finalize, injected allocation failures — checked step by step against a
//! small sequential reference model of the contract, written from
//! `docs/contract.md` and not from the core: after every step
//! the returned code and the attached (thread state, interpreter) must be
//! what the model says.
//!
//! 10,000 sequences per facade by default (`PROPTEST_CASES` changes it),
//! from a fixed seed (the same sequences every run; CI is deterministic).
//! proptest shrinks a failure to a minimal sequence; add it to
//! `REGRESSIONS` below as a named case so it is replayed on every run.

use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tstate_conformance::facade::{Activate, ActivateSpan, Ensure, Facade, Handle, Shared};
use tstate_core::Error as E;

/// One generated step. Indices pick among what the sequence has so far
/// (modulo its length), so every sequence is valid to run.
#[derive(Debug, Clone)]
enum Op {
    Create(u32),
    Enter(usize),
    EnterBogus(u64),
    Leave(usize),
    Save,
    Restore(usize),
    Work(usize),
    Finalize(usize),
    FailNextAllocation,
    /// set the attached thread state's data, then read it back later
    ScratchSet(u64),
    ScratchGet,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u32..3).prop_map(Op::Create),
        6 => (0usize..8).prop_map(Op::Enter),
        // 0; all ones; an even generation (never issued); a slot index never reached
        1 => prop_oneof![Just(0u64), Just(u64::MAX), Just(0x2_0000_0001u64), Just(0x1_7fff_fff0u64)].prop_map(Op::EnterBogus),
        6 => (0usize..16).prop_map(Op::Leave),
        2 => Just(Op::Save),
        2 => (0usize..8).prop_map(Op::Restore),
        3 => (0usize..8).prop_map(Op::Work),
        1 => (0usize..8).prop_map(Op::Finalize),
        1 => Just(Op::FailNextAllocation),
        2 => (1u64..1000).prop_map(Op::ScratchSet),
        2 => Just(Op::ScratchGet),
    ]
}

// ----- the reference model --------------------------------------------------

/// A thread state as the model names it.
type Label = usize;

#[derive(Debug, Clone, Copy, PartialEq)]
enum FrameKind {
    /// enter while attached to the target: nothing to undo
    Nested,
    /// enter that re-attached a detached thread state this thread already
    /// holds the interpreter open with
    Reattach,
    /// enter that took the thread's hold and attached `label`
    Enter,
}

#[derive(Debug, Clone)]
struct Frame {
    kind: FrameKind,
    /// which issued span this frame is (index into `spans`)
    span: usize,
    interp: usize,
    label: Option<Label>,
    prev: Option<Label>,
}

/// The contract for one thread, sequentially.
#[derive(Debug, Default, Clone)]
struct Model {
    /// (alive, lock mode) per created interpreter.
    interps: Vec<bool>,
    /// label → interpreter, and whether deleted.
    labels: Vec<(usize, bool)>,
    /// the thread state ensure keeps per interpreter (ensure/handle designs)
    home: HashMap<usize, Label>,
    stack: Vec<Frame>,
    saved: Vec<Label>,
    current: Option<Label>,
    work: HashMap<usize, u64>,
    /// whether the design creates a thread state per enter (explicit design)
    explicit: bool,
    /// spans of the explicit design's "already attached" path: nothing was
    /// entered, leaving them does nothing
    nested_spans: Vec<usize>,
    /// each thread state's data (what must not leak between tasks)
    scratch: HashMap<Label, u64>,
}

impl Model {
    fn label_interp(&self, l: Label) -> usize {
        self.labels[l].0
    }
    fn current_interp(&self) -> Option<usize> {
        self.current.map(|l| self.label_interp(l))
    }
    fn holds(&self, i: usize) -> bool {
        self.stack
            .iter()
            .any(|f| f.interp == i && f.label.is_some())
    }
    fn new_label(&mut self, i: usize) -> Label {
        self.labels.push((i, false));
        self.labels.len() - 1
    }

    /// Enter interpreter `i`; returns the frame kind on success.
    fn enter(&mut self, i: usize, span: usize) -> Result<(), E> {
        if !self.interps[i] {
            return Err(E::NoSuchInterpreter);
        }
        if self.current_interp() == Some(i) {
            if self.explicit {
                // the explicit design's idiom asks first and does nothing
                self.nested_spans.push(span);
                return Ok(());
            }
            self.stack.push(Frame {
                kind: FrameKind::Nested,
                span,
                interp: i,
                label: None,
                prev: None,
            });
            return Ok(());
        }
        let prev = self.current;
        if !self.explicit
            && let Some(l) = self
                .stack
                .iter()
                .rev()
                .find(|f| f.interp == i && f.label.is_some())
                .and_then(|f| f.label)
        {
            self.current = Some(l);
            self.stack.push(Frame {
                kind: FrameKind::Reattach,
                span,
                interp: i,
                label: Some(l),
                prev,
            });
            return Ok(());
        }
        let l = if self.explicit {
            self.new_label(i)
        } else {
            match self.home.get(&i) {
                Some(&l) => l,
                None => {
                    let l = self.new_label(i);
                    self.home.insert(i, l);
                    l
                }
            }
        };
        self.current = Some(l);
        self.stack.push(Frame {
            kind: FrameKind::Enter,
            span,
            interp: i,
            label: Some(l),
            prev,
        });
        Ok(())
    }

    /// Pops `top` if it can be undone now.
    fn pop(&mut self) -> Result<(), E> {
        let f = self.stack.last().expect("caller checked").clone();
        let ok = match f.kind {
            FrameKind::Nested => self.current_interp() == Some(f.interp),
            _ => self.current == f.label,
        };
        if !ok {
            return Err(E::OutOfOrder);
        }
        self.stack.pop();
        if f.kind != FrameKind::Nested {
            self.current = f.prev;
            let l = f.label.expect("a non-nested frame has a label");
            if f.kind == FrameKind::Enter {
                if self.explicit {
                    self.labels[l].1 = true; // deactivate + delete
                }
                // the outermost span of a thread state ends: ensure resets
                // the state it keeps; the explicit design deleted its own
                self.scratch.remove(&l);
            }
        }
        Ok(())
    }

    /// Leave span number `s` (the design decides what that means).
    fn leave(&mut self, s: usize, design: &str) -> Result<(), E> {
        let pos = self.stack.iter().position(|f| f.span == s);
        match design {
            // thread-stored: the span is not named; the innermost goes
            "ensure" => {
                if self.stack.is_empty() {
                    Err(E::NotAttached)
                } else {
                    self.pop()
                }
            }
            "handle" => match pos {
                Some(p) if p + 1 == self.stack.len() => self.pop(),
                Some(_) => Err(E::OutOfOrder),
                None => Err(E::InvalidHandle),
            },
            _ => match pos {
                _ if self.nested_spans.contains(&s) => Ok(()),
                Some(p) if p + 1 == self.stack.len() => self.pop(),
                Some(_) => Err(E::OutOfOrder),
                // a closed owned span: its thread state was deleted
                None => Err(E::InvalidHandle),
            },
        }
    }

    fn save(&mut self) -> Result<Label, E> {
        let l = self.current.ok_or(E::NotAttached)?;
        self.saved.push(l);
        self.current = None;
        Ok(l)
    }

    fn restore(&mut self, l: Label) -> Result<(), E> {
        if self.current.is_some() {
            return Err(E::Busy);
        }
        if self.labels[l].1 {
            return Err(E::InvalidHandle);
        }
        match self.saved.last() {
            Some(&t) if t == l => {
                self.saved.pop();
                self.current = Some(l);
                Ok(())
            }
            _ if self.saved.contains(&l) => Err(E::OutOfOrder),
            _ => Err(E::NotAttached),
        }
    }

    fn work(&mut self, i: usize) -> Result<u64, E> {
        if self.current_interp() != Some(i) {
            return Err(E::NotAttached);
        }
        let w = self.work.entry(i).or_insert(0);
        *w += 1;
        Ok(*w)
    }

    fn scratch_set(&mut self, v: u64) -> Result<(), E> {
        let l = self.current.ok_or(E::NotAttached)?;
        self.scratch.insert(l, v);
        Ok(())
    }

    fn scratch_get(&self) -> Result<u64, E> {
        let l = self.current.ok_or(E::NotAttached)?;
        Ok(self.scratch.get(&l).copied().unwrap_or(0))
    }

    /// Finalize `i`; `None` if the model leaves it out (this thread holds
    /// it: the sequential model does not cover finalizing one's own
    /// interpreter, the core's tests do).
    fn finalize(&mut self, i: usize) -> Option<Result<(), E>> {
        if !self.interps[i] {
            return Some(Err(E::NoSuchInterpreter));
        }
        if self.holds(i) {
            return None;
        }
        self.interps[i] = false;
        for (li, d) in self.labels.iter_mut() {
            if *li == i {
                *d = true;
            }
        }
        self.home.remove(&i);
        Some(Ok(()))
    }
}

// ----- running a sequence against a facade -----------------------------------

/// What a facade gave back for an issued span.
trait SpanOf: Facade {
    fn forged() -> Self::Span;
}
impl SpanOf for Ensure {
    fn forged() {}
}
impl SpanOf for Handle {
    fn forged() -> i32 {
        0x0123_4567
    }
}
impl SpanOf for Activate {
    fn forged() -> ActivateSpan {
        ActivateSpan::Owned(0xdead_0000_0001)
    }
}

fn code_of(e: E) -> i32 {
    e.code()
}

/// Runs `ops` on a fresh thread through facade `F`, comparing with the
/// model after every step. Returns the first disagreement.
fn run<F: SpanOf>(ops: Vec<Op>) -> Result<(), String> {
    let (result, ids) = std::thread::spawn(move || {
        let mut ids = Vec::new();
        let r = run_on_this_thread::<F>(&ops, &mut ids);
        (r, ids)
    })
    .join()
    .map_err(|_| "panicked".to_string())?;
    // the sequence's thread has exited (its spans closed by the thread-exit
    // destructor): finalize what it created, from here, holding nothing
    for id in ids {
        match F::finalize(id, 5000) {
            Ok(()) => {}
            Err(c) if c == code_of(E::NoSuchInterpreter) => {}
            Err(c) => return Err(format!("cleanup: finalize gave {c}")),
        }
    }
    result
}

fn run_on_this_thread<F: SpanOf>(ops: &[Op], ids: &mut Vec<u64>) -> Result<(), String> {
    let mut m = Model {
        explicit: F::EXPLICIT_LIFECYCLE,
        ..Model::default()
    };
    let mut spans: Vec<F::Span> = Vec::new();
    let mut label_ids: HashMap<Label, u64> = HashMap::new();
    let mut fail_next = false;
    let first = F::create(0).map_err(|c| format!("create: {c}"))?;
    ids.push(first);
    m.interps.push(true);
    let result = (|| -> Result<(), String> {
        for (step, op) in ops.iter().enumerate() {
            let before = fail_next.then(|| m.clone());
            if fail_next {
                F::fail_allocations(0, 1);
            }
            // (model's expectation, actual code)
            let (want, got): (Result<(), E>, Result<(), i32>) = match op {
                Op::Create(mode) => {
                    let got = F::create(*mode).map(|id| ids.push(id));
                    if got.is_ok() {
                        m.interps.push(true);
                    }
                    (Ok(()), got)
                }
                Op::Enter(k) => {
                    let i = k % ids.len();
                    let want = m.enter(i, spans.len());
                    let got = F::enter(ids[i]).map(|s| spans.push(s));
                    (want, got)
                }
                Op::EnterBogus(raw) => {
                    let got = F::enter(*raw).map(|s| spans.push(s));
                    (Err(E::NoSuchInterpreter), got)
                }
                Op::Leave(k) => {
                    // pick an issued span (open or closed), or a forged one
                    let (s, forged) = if spans.is_empty() || *k >= spans.len() + 2 {
                        (F::forged(), true)
                    } else {
                        (spans[k % spans.len()], false)
                    };
                    let want = if forged {
                        match F::NAME {
                            "ensure" => m.leave(usize::MAX, "ensure"),
                            _ => Err(E::InvalidHandle),
                        }
                    } else {
                        m.leave(k % spans.len(), F::NAME)
                    };
                    let got = F::leave(s);
                    // a forged int handle whose thread tag is not this
                    // thread's reads as foreign (documented on tsh_release)
                    if forged && F::NAME == "handle" && got == Err(code_of(E::WrongThread)) {
                        check_current::<F>(&m, ids, &mut label_ids, step)?;
                        continue;
                    }
                    (want, got)
                }
                Op::Save => {
                    let want = m.save();
                    let got = F::save();
                    if let (Ok(l), Ok(ts)) = (&want, &got) {
                        bind(&mut label_ids, *l, *ts, step)?;
                    }
                    (want.map(|_| ()), got.map(|_| ()))
                }
                Op::Restore(k) => {
                    if m.labels.is_empty() {
                        continue;
                    }
                    let l = k % m.labels.len();
                    let Some(&ts) = label_ids.get(&l) else {
                        continue; // never observed: no id to pass
                    };
                    (m.restore(l), F::restore(ts))
                }
                Op::Work(k) => {
                    let i = k % ids.len();
                    let want = m.work(i);
                    let got = F::work(ids[i]);
                    if let (Ok(a), Ok(b)) = (&want, &got)
                        && a != b
                    {
                        return Err(format!("step {step} {op:?}: work counter {b}, model {a}"));
                    }
                    (want.map(|_| ()), got.map(|_| ()))
                }
                Op::Finalize(k) => {
                    let i = k % ids.len();
                    match m.finalize(i) {
                        None => continue,
                        Some(want) => (want, F::finalize(ids[i], 1000)),
                    }
                }
                Op::FailNextAllocation => {
                    fail_next = true;
                    continue;
                }
                Op::ScratchSet(v) => (m.scratch_set(*v), F::scratch_set(*v)),
                Op::ScratchGet => {
                    let want = m.scratch_get();
                    let got = F::scratch_get();
                    if let (Ok(a), Ok(b)) = (&want, &got)
                        && a != b
                    {
                        return Err(format!(
                            "step {step} {op:?}: thread-state data {b}, model says {a}"
                        ));
                    }
                    (want.map(|_| ()), got.map(|_| ()))
                }
            };
            if fail_next {
                F::fail_allocations(0, 0);
                fail_next = false;
                if got == Err(code_of(E::NoMemory)) {
                    FAULTS_HIT.fetch_add(1, Ordering::Relaxed);
                    // the injected failure hit this step: nothing may have
                    // changed, so the model goes back to before it
                    m = before.expect("cloned when armed");
                    check_current::<F>(&m, ids, &mut label_ids, step)?;
                    continue;
                }
            }
            STEPS.fetch_add(1, Ordering::Relaxed);
            if want.is_err() {
                REFUSED.fetch_add(1, Ordering::Relaxed);
            }
            let want_code = want.map_err(code_of);
            if want_code != got {
                return Err(format!(
                    "step {step} {op:?}: got {got:?}, model says {want_code:?}"
                ));
            }
            check_current::<F>(&m, ids, &mut label_ids, step)?;
        }
        Ok(())
    })();
    F::fail_allocations(0, 0);
    result
}

/// Records that model label `l` is thread state `ts`; the mapping must stay
/// a bijection.
fn bind(map: &mut HashMap<Label, u64>, l: Label, ts: u64, step: usize) -> Result<(), String> {
    match map.get(&l) {
        Some(&t) if t != ts => Err(format!(
            "step {step}: thread state {ts:#x} where the model expects {t:#x} again"
        )),
        Some(_) => Ok(()),
        None => {
            if map.values().any(|&t| t == ts) {
                return Err(format!(
                    "step {step}: thread state {ts:#x} reused where the model expects a new one"
                ));
            }
            map.insert(l, ts);
            Ok(())
        }
    }
}

fn check_current<F: Facade>(
    m: &Model,
    ids: &[u64],
    labels: &mut HashMap<Label, u64>,
    step: usize,
) -> Result<(), String> {
    let got = F::current();
    match (m.current, got) {
        (None, None) => Ok(()),
        (Some(l), Some((ts, interp))) => {
            let want_interp = ids[m.label_interp(l)];
            if interp != want_interp {
                return Err(format!(
                    "step {step}: attached to {interp:#x}, model says {want_interp:#x}"
                ));
            }
            bind(labels, l, ts, step)
        }
        (want, got) => Err(format!(
            "step {step}: attached {got:?}, model says {want:?}"
        )),
    }
}

/// The facades share one runtime and its fault injection: one test at a
/// time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Counts of what the runs did, for the report.
static STEPS: AtomicU64 = AtomicU64::new(0);
static FAULTS_HIT: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);

fn check_facade<F: SpanOf>() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (s0, f0, r0) = (
        STEPS.load(Ordering::Relaxed),
        FAULTS_HIT.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
    );
    let cfg = config();
    let cases = cfg.cases;
    let mut runner =
        TestRunner::new_with_rng(cfg, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let strategy = prop::collection::vec(op(), 1..40);
    let result = runner.run(&strategy, |ops| {
        prop_assert_eq!(run::<F>(ops), Ok(()));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{}: {e}", F::NAME);
    }
    eprintln!(
        "{}: {cases} sequences, {} steps, {} checked refusals, {} injected allocation failures hit",
        F::NAME,
        STEPS.load(Ordering::Relaxed) - s0,
        REFUSED.load(Ordering::Relaxed) - r0,
        FAULTS_HIT.load(Ordering::Relaxed) - f0,
    );
}

/// Named regressions: minimal sequences that once disagreed with the model.
#[test]
fn regression_restore_of_a_thread_state_freed_by_finalization() {
    // enter, leave (the kept thread state stays), finalize the interpreter
    // (freeing it), restore it: INVALID_HANDLE, not NOT_ATTACHED
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let ops = vec![Op::Enter(0), Op::Leave(0), Op::Finalize(0), Op::Restore(0)];
    assert_eq!(run::<Ensure>(ops.clone()), Ok(()));
    assert_eq!(run::<Handle>(ops), Ok(()));
}

#[test]
fn ensure_facade_matches_the_model() {
    check_facade::<Ensure>();
}

#[test]
fn handle_facade_matches_the_model() {
    check_facade::<Handle>();
}

#[test]
fn activate_facade_matches_the_model() {
    check_facade::<Activate>();
}
