//! The one list of cases, run against every facade (contract §4 scenarios,
//! §2 invariants). Each is named after what it proves and asserts concrete
//! outcomes: codes, which thread state is attached afterwards and to which
//! interpreter, exact work counters, holders. A design that cannot express a
//! case returns n/a with the reason — decided by its declared capabilities,
//! never skipped silently.

use crate::facade::{Code, Facade, Shared};
use crate::runner::{CaseResult, Failure, Sub, expect_code, expect_one_of, on_thread, scale};
use crate::{check, check_eq};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tstate_core::Error as E;

const OWN: u32 = 0;
const SHARED: u32 = 1;
const NONE: u32 = 2;

/// Calls `for_each_case!(m!(args))` → `m! { args ; case, case, … }`: the one
/// list of cases, for instantiating per facade (tests, the report).
#[macro_export]
macro_rules! for_each_case {
    ($m:ident ! ( $($args:tt)* )) => {
        $m! { $($args)* ;
            fresh_native_thread,
            nested_on_attached_thread,
            reentry_after_save_nogil,
            subinterpreter_thread_calls_its_own_subinterpreter,
            nesting_a_b_a_restores_exactly,
            thread_pool_exact_counts_no_leak_between_tasks,
            pyarrow_callback_from_python_thread_and_pool_thread,
            enter_refused_once_finalizing_with_threads_inside,
            finalize_waits_for_holder_then_completes,
            finalize_times_out_and_names_the_holder,
            reattach_inside_open_span_during_finalization,
            stale_id_after_finalize_is_refused,
            slot_reuse_never_aliases_an_old_id,
            misuse_release_with_nothing_entered,
            misuse_double_release,
            misuse_double_release_inside_an_enclosing_span,
            misuse_out_of_order_release,
            misuse_release_on_another_thread,
            misuse_forged_handle,
            misuse_delete_while_active,
            misuse_use_after_delete,
            misuse_double_activate,
            misuse_null_pointers,
            misuse_id_zero_forged_ids_and_bad_lock_mode,
            affinity_thread_state_restored_only_on_its_thread,
            thread_exit_with_spans_open_is_cleaned_up,
            allocation_failure_at_enter_changes_nothing,
            free_threaded_all_threads_attached_at_once,
            mutual_exclusion_own_lock_under_contention,
            mutual_exclusion_shared_lock_under_contention,
            attached_check_exact_with_subinterpreters,
            message_for_every_code,
            no_panic_crosses_the_abi,
            enter_races_create_and_finalize,
            guard_view_outlives_its_interpreter,
            guard_blocks_finalization_with_no_thread_state,
            guard_daemon_idiom_span_does_not_block_finalization,
            guard_ensure_from_view_keeps_its_guard_until_release,
            guard_refused_once_finalizing,
            guard_token_restores_across_interpreters,
            guard_leaked_guard_bounded_finalize_names_it,
        }
    };
}

macro_rules! case_list {
    ($($name:ident),* $(,)?) => {
        /// Every case, instantiated for facade `F`, in report order.
        pub fn all<F: Facade>() -> Vec<crate::runner::Case> {
            vec![$(crate::runner::Case { name: stringify!($name), run: $name::<F> }),*]
        }
    };
}
macro_rules! list_cases {
    (; $($name:ident),* $(,)?) => { case_list!($($name),*); };
}
for_each_case!(list_cases!());

fn na(reason: &'static str) -> CaseResult {
    Err(Failure::NotApplicable(reason))
}

/// A subinterpreter of whichever lock mode the backend can create (own
/// lock where it can, else shared with main): for the cases where the mode
/// does not matter.
fn any_sub<F: Facade>() -> Result<u64, Failure> {
    Ok(F::create(Sub::<F>::any_mode())?)
}

// ----- the common scenarios -------------------------------------------------

/// A native thread that never had a thread state calls in and leaves
/// nothing attached behind.
pub fn fresh_native_thread<F: Facade>() -> CaseResult {
    let i = Sub::<F>::any()?;
    let id = i.id;
    on_thread(move || -> CaseResult {
        check_eq!(F::current(), None);
        let s = F::enter(id)?;
        check!(F::is_attached(id));
        check_eq!(F::current().map(|c| c.1), Some(id));
        check_eq!(F::work(id)?, 1);
        F::leave(s)?;
        check_eq!(F::current(), None);
        Ok(())
    })?;
    check_eq!(F::work_count(id)?, 1);
    Ok(())
}

/// Cython `with gil` inside a nogil function called with the GIL held: the
/// same thread state stays attached throughout.
pub fn nested_on_attached_thread<F: Facade>() -> CaseResult {
    let i = Sub::<F>::any()?;
    let id = i.id;
    on_thread(move || -> CaseResult {
        let outer = F::enter(id)?;
        let before = F::current();
        let inner = F::enter(id)?;
        check_eq!(F::current(), before);
        F::work(id)?;
        F::leave(inner)?;
        check_eq!(F::current(), before);
        F::leave(outer)?;
        check_eq!(F::current(), None);
        Ok(())
    })
}

/// `with nogil:` then `with gil:`: entering from the detached state works
/// and leaving returns to the detached state; restore re-attaches the saved
/// thread state exactly.
pub fn reentry_after_save_nogil<F: Facade>() -> CaseResult {
    let i = Sub::<F>::any()?;
    let id = i.id;
    on_thread(move || -> CaseResult {
        let outer = F::enter(id)?;
        let before = F::current().expect("attached");
        let saved = F::save()?;
        check_eq!(saved, before.0);
        check_eq!(F::current(), None);
        let inner = F::enter(id)?;
        check_eq!(F::current().map(|c| c.1), Some(id));
        F::work(id)?;
        F::leave(inner)?;
        check_eq!(F::current(), None);
        F::restore(saved)?;
        check_eq!(F::current(), Some(before));
        F::leave(outer)?;
        check_eq!(F::current(), None);
        Ok(())
    })?;
    check_eq!(F::work_count(id)?, 1);
    Ok(())
}

/// A thread spawned while a subinterpreter runs calls back into that
/// subinterpreter, never main (CPython 3.11 attaches it to main).
pub fn subinterpreter_thread_calls_its_own_subinterpreter<F: Facade>() -> CaseResult {
    let main = F::main_interpreter()?;
    let main_before = F::work_count(main)?;
    let i = Sub::<F>::any()?;
    let sub = i.id;
    on_thread(move || -> CaseResult {
        let s = F::enter(sub)?;
        let saved = F::save()?;
        on_thread(move || -> CaseResult {
            let t = F::enter(sub)?;
            check_eq!(F::current().map(|c| c.1), Some(sub));
            check!(!F::is_attached(main));
            F::work(sub)?;
            F::leave(t)?;
            Ok(())
        })?;
        F::restore(saved)?;
        F::leave(s)?;
        Ok(())
    })?;
    check_eq!(F::work_count(sub)?, 1);
    check_eq!(F::work_count(main)?, main_before);
    Ok(())
}

/// A → B → A → back: each leave restores exactly the thread state (and
/// interpreter) attached before the matching enter.
pub fn nesting_a_b_a_restores_exactly<F: Facade>() -> CaseResult {
    let (sub_a, sub_b) = (Sub::<F>::any()?, Sub::<F>::any()?);
    let (a, b) = (sub_a.id, sub_b.id);
    on_thread(move || -> CaseResult {
        let sa = F::enter(a)?;
        let on_a = F::current();
        let sb = F::enter(b)?;
        let on_b = F::current();
        check_eq!(on_b.map(|c| c.1), Some(b));
        check!(!F::is_attached(a));
        let sa2 = F::enter(a)?;
        check_eq!(F::current().map(|c| c.1), Some(a));
        F::work(a)?;
        F::leave(sa2)?;
        check_eq!(F::current(), on_b);
        F::leave(sb)?;
        check_eq!(F::current(), on_a);
        F::leave(sa)?;
        check_eq!(F::current(), None);
        Ok(())
    })
}

/// 4 native workers run 1,000 queued tasks; each task finds no data left by
/// the previous one on its thread, and the work counter is exact.
pub fn thread_pool_exact_counts_no_leak_between_tasks<F: Facade>() -> CaseResult {
    const WORKERS: usize = 4;
    const TASKS: usize = 1000;
    let i = Sub::<F>::any()?;
    let id = i.id;
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || -> CaseResult {
                loop {
                    let task = next.fetch_add(1, Ordering::Relaxed);
                    if task >= TASKS {
                        return Ok(());
                    }
                    let s = F::enter(id)?;
                    check_eq!(F::scratch_get()?, 0);
                    F::scratch_set(task as u64 + 1)?;
                    F::work(id)?;
                    F::leave(s)?;
                    check_eq!(F::current(), None);
                }
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| Failure::Fail("worker panicked".into()))??;
    }
    check_eq!(F::work_count(id)?, TASKS as u64);
    check!(F::holders(id)?.is_empty());
    Ok(())
}

/// Arrow's SafeCallIntoPython around a Python file's tell(), reached from
/// a Python thread (holding, and after releasing the GIL) and from a pool
/// thread.
pub fn pyarrow_callback_from_python_thread_and_pool_thread<F: Facade>() -> CaseResult {
    fn tell<F: Facade>(id: u64) -> Result<u64, Failure> {
        let s = F::enter(id)?;
        let pos = F::work(id)?;
        F::leave(s)?;
        Ok(pos)
    }
    let i = Sub::<F>::any()?;
    let id = i.id;
    on_thread(move || -> CaseResult {
        let outer = F::enter(id)?;
        let before = F::current();
        check!(tell::<F>(id)? > 0);
        let saved = F::save()?;
        check!(tell::<F>(id)? > 0);
        F::restore(saved)?;
        check_eq!(F::current(), before);
        F::leave(outer)?;
        Ok(())
    })?;
    on_thread(move || -> CaseResult {
        for _ in 0..10 {
            check!(tell::<F>(id)? > 0);
        }
        check_eq!(F::current(), None);
        Ok(())
    })?;
    check_eq!(F::work_count(id)?, 12);
    Ok(())
}

// ----- finalization ----------------------------------------------------------

/// A thread that entered `id` and detached (save), holding it open until
/// told to go; then it restores, works and leaves.
struct Holder {
    go: std::sync::mpsc::Sender<()>,
    done: std::thread::JoinHandle<CaseResult>,
}

fn hold<F: Facade>(id: u64) -> Result<Holder, Failure> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let done = std::thread::spawn(move || -> CaseResult {
        let s = F::enter(id)?;
        let saved = F::save()?;
        ready_tx.send(()).ok();
        go_rx.recv().ok();
        F::restore(saved)?;
        F::work(id)?;
        F::leave(s)?;
        Ok(())
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| Failure::Fail("holder did not start".into()))?;
    Ok(Holder { go, done })
}

impl Holder {
    fn release(self) -> CaseResult {
        self.go.send(()).ok();
        self.done
            .join()
            .map_err(|_| Failure::Fail("holder panicked".into()))?
    }
}

fn wait_finalizing<F: Facade>(id: u64) -> CaseResult {
    let t0 = Instant::now();
    while F::state(id) != 1 {
        check!(
            t0.elapsed() < Duration::from_secs(10),
            "never became finalizing"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// While finalization waits for a thread inside, a new caller is refused at
/// once with FINALIZING (never hangs, never attaches); afterwards the id is
/// gone.
pub fn enter_refused_once_finalizing_with_threads_inside<F: Facade>() -> CaseResult {
    let id = any_sub::<F>()?;
    let h = hold::<F>(id)?;
    let fin = std::thread::spawn(move || F::finalize(id, 10_000));
    wait_finalizing::<F>(id)?;
    let refused = on_thread(move || {
        let t0 = Instant::now();
        let r = F::enter(id);
        (r, t0.elapsed(), F::current())
    });
    check!(
        refused.1 < Duration::from_secs(1),
        "refusal took {:?}",
        refused.1
    );
    expect_code(refused.0, E::Finalizing, "enter while finalizing")?;
    check_eq!(refused.2, None);
    h.release()?;
    check_eq!(
        fin.join()
            .map_err(|_| Failure::Fail("finalizer panicked".into()))?,
        Ok(())
    );
    expect_code(
        on_thread(move || F::enter(id)),
        E::NoSuchInterpreter,
        "enter after",
    )?;
    Ok(())
}

/// Finalize does not complete while a holder is inside, and completes once
/// it leaves.
pub fn finalize_waits_for_holder_then_completes<F: Facade>() -> CaseResult {
    let id = any_sub::<F>()?;
    let h = hold::<F>(id)?;
    let released = Arc::new(AtomicBool::new(false));
    let r2 = released.clone();
    let fin = std::thread::spawn(move || (F::finalize(id, -1), r2.load(Ordering::SeqCst)));
    wait_finalizing::<F>(id)?;
    std::thread::sleep(Duration::from_millis(30));
    check!(
        !fin.is_finished(),
        "finalize returned while a holder was inside"
    );
    released.store(true, Ordering::SeqCst);
    h.release()?;
    let (r, after_release) = fin
        .join()
        .map_err(|_| Failure::Fail("finalizer panicked".into()))?;
    check_eq!(r, Ok(()));
    check!(after_release);
    check_eq!(F::state(id), E::NoSuchInterpreter.code());
    Ok(())
}

/// Finalize with a bound times out, names the holder, keeps refusing; a
/// second finalize after the holder left completes.
pub fn finalize_times_out_and_names_the_holder<F: Facade>() -> CaseResult {
    let id = any_sub::<F>()?;
    let h = hold::<F>(id)?;
    let t0 = Instant::now();
    expect_code(F::finalize(id, 50), E::Timeout, "bounded finalize")?;
    check!(t0.elapsed() >= Duration::from_millis(50));
    let holders = F::holders(id)?;
    // exactly the holder's span (the guard design: its guard, and on a
    // backend where a guarded span also holds a subinterpreter, the thread)
    let named: Vec<_> = holders
        .iter()
        .filter(|h| h.kind == F::HOLDER_KIND)
        .collect();
    check_eq!(named.len(), 1);
    check!(holders.len() == 1 || (F::HOLDER_KIND == 2 && holders.len() == 2));
    check!(named[0].spans >= 1 && named[0].os_thread_id != 0);
    check_eq!(F::state(id), 1);
    expect_code(on_thread(move || F::enter(id)), E::Finalizing, "enter")?;
    h.release()?;
    check_eq!(F::finalize(id, 5000), Ok(()));
    Ok(())
}

/// A holder that detached can re-attach, work and leave while finalize
/// waits (finalize never holds the interpreter's lock while waiting).
pub fn reattach_inside_open_span_during_finalization<F: Facade>() -> CaseResult {
    let id = any_sub::<F>()?;
    let h = hold::<F>(id)?;
    let fin = std::thread::spawn(move || F::finalize(id, 10_000));
    wait_finalizing::<F>(id)?;
    h.release()?; // restore + work + leave, all must succeed
    check_eq!(
        fin.join()
            .map_err(|_| Failure::Fail("finalizer panicked".into()))?,
        Ok(())
    );
    Ok(())
}

/// After finalize, its id is refused everywhere with NO_SUCH_INTERPRETER.
pub fn stale_id_after_finalize_is_refused<F: Facade>() -> CaseResult {
    let id = any_sub::<F>()?;
    F::finalize(id, 5000)?;
    expect_code(
        on_thread(move || F::enter(id)),
        E::NoSuchInterpreter,
        "enter",
    )?;
    check_eq!(F::state(id), E::NoSuchInterpreter.code());
    expect_code(F::work_count(id), E::NoSuchInterpreter, "work_count")?;
    expect_code(F::finalize(id, 0), E::NoSuchInterpreter, "finalize")?;
    Ok(())
}

/// Slots are reused by new interpreters, yet the old id never reaches them.
pub fn slot_reuse_never_aliases_an_old_id<F: Facade>() -> CaseResult {
    let old = any_sub::<F>()?;
    F::finalize(old, 5000)?;
    let mut reused = false;
    for _ in 0..8 {
        let new = Sub::<F>::any()?;
        check!(new.id != old);
        reused |= new.id & 0xffff_ffff == old & 0xffff_ffff;
        let nid = new.id;
        on_thread(move || -> CaseResult {
            expect_code(F::enter(old), E::NoSuchInterpreter, "old id")?;
            let s = F::enter(nid)?;
            check_eq!(F::current().map(|c| c.1), Some(nid));
            F::leave(s)?;
            Ok(())
        })?;
    }
    check!(reused, "no slot was reused: the case proved nothing");
    Ok(())
}

// ----- misuse (contract §2.6) -------------------------------------------------

/// The design's release with nothing entered: refused, nothing changes.
pub fn misuse_release_with_nothing_entered<F: Facade>() -> CaseResult {
    on_thread(|| -> CaseResult {
        expect_one_of(
            F::release_nothing(),
            &[E::NotAttached, E::InvalidHandle],
            "release with nothing entered",
        )?;
        check_eq!(F::current(), None);
        Ok(())
    })
}

/// Enter once, leave twice: the second is refused.
pub fn misuse_double_release<F: Facade>() -> CaseResult {
    let i = Sub::<F>::any()?;
    let id = i.id;
    on_thread(move || -> CaseResult {
        let s = F::enter(id)?;
        F::leave(s)?;
        expect_one_of(
            F::leave(s),
            &[E::NotAttached, E::InvalidHandle],
            "second leave",
        )?;
        check_eq!(F::current(), None);
        Ok(())
    })
}

/// A second release of an inner span, while an outer one is open, is
/// refused and leaves the outer span attached.
pub fn misuse_double_release_inside_an_enclosing_span<F: Facade>() -> CaseResult {
    if !F::RELEASE_NAMES_SPAN {
        return na(
            "release names no span: a second release cannot be told from releasing the enclosing span, which it then releases",
        );
    }
    let (sub_a, sub_b) = (Sub::<F>::any()?, Sub::<F>::any()?);
    let (a, b) = (sub_a.id, sub_b.id);
    on_thread(move || -> CaseResult {
        let outer = F::enter(a)?;
        let on_a = F::current();
        let inner = F::enter(b)?;
        F::leave(inner)?;
        expect_one_of(
            F::leave(inner),
            &[E::InvalidHandle, E::NotAttached],
            "second leave",
        )?;
        check_eq!(F::current(), on_a);
        F::leave(outer)?;
        Ok(())
    })
}

/// Releasing the outer span while an inner one is open is refused with
/// OUT_OF_ORDER and changes nothing.
pub fn misuse_out_of_order_release<F: Facade>() -> CaseResult {
    if !F::RELEASE_NAMES_SPAN {
        return na(
            "release names no span: it always releases the innermost, so out-of-order cannot be expressed",
        );
    }
    let (sub_a, sub_b) = (Sub::<F>::any()?, Sub::<F>::any()?);
    let (a, b) = (sub_a.id, sub_b.id);
    on_thread(move || -> CaseResult {
        let outer = F::enter(a)?;
        let inner = F::enter(b)?;
        let on_b = F::current();
        expect_code(F::leave(outer), E::OutOfOrder, "leave outer first")?;
        check_eq!(F::current(), on_b);
        F::leave(inner)?;
        F::leave(outer)?;
        check_eq!(F::current(), None);
        Ok(())
    })
}

/// A span released on another thread is refused there, and its owner is
/// unchanged and can still release it.
pub fn misuse_release_on_another_thread<F: Facade>() -> CaseResult {
    let i = Sub::<F>::any()?;
    let id = i.id;
    on_thread(move || -> CaseResult {
        let s = F::enter(id)?;
        let before = F::current();
        let r = on_thread(move || F::leave(s));
        expect_one_of(
            r,
            &[E::WrongThread, E::InvalidHandle, E::NotAttached],
            "leave on another thread",
        )?;
        check_eq!(F::current(), before);
        F::leave(s)?;
        Ok(())
    })
}

/// A handle never issued is refused and changes nothing.
pub fn misuse_forged_handle<F: Facade>() -> CaseResult {
    let Some(forged) = F::forged_span() else {
        return na("no handles: release takes nothing that could be forged");
    };
    let i = Sub::<F>::any()?;
    let id = i.id;
    on_thread(move || -> CaseResult {
        let s = F::enter(id)?;
        let before = F::current();
        expect_one_of(
            F::leave(forged),
            &[E::InvalidHandle, E::WrongThread],
            "leave(forged)",
        )?;
        check_eq!(F::current(), before);
        F::leave(s)?;
        Ok(())
    })
}

/// Delete of an active thread state is refused with BUSY.
pub fn misuse_delete_while_active<F: Facade>() -> CaseResult {
    let Some(l) = F::lifecycle() else {
        return na("no delete: the design creates and frees thread states itself");
    };
    let i = Sub::<F>::any()?;
    let id = i.id;
    on_thread(move || -> CaseResult {
        let ts = (l.new)(id)?;
        (l.activate)(ts)?;
        expect_code((l.delete)(ts), E::Busy, "delete while active")?;
        check!(F::is_attached(id));
        (l.deactivate)(ts)?;
        (l.delete)(ts)?;
        Ok(())
    })
}

/// A deleted thread state's handle is refused everywhere.
pub fn misuse_use_after_delete<F: Facade>() -> CaseResult {
    let Some(l) = F::lifecycle() else {
        return na("no thread-state handles: nothing can be used after delete");
    };
    let i = Sub::<F>::any()?;
    let id = i.id;
    on_thread(move || -> CaseResult {
        let ts = (l.new)(id)?;
        (l.delete)(ts)?;
        expect_code((l.activate)(ts), E::InvalidHandle, "activate")?;
        expect_code((l.deactivate)(ts), E::InvalidHandle, "deactivate")?;
        expect_code((l.delete)(ts), E::InvalidHandle, "delete")?;
        check_eq!(F::current(), None);
        Ok(())
    })
}

/// Activating an active thread state again is refused with BUSY.
pub fn misuse_double_activate<F: Facade>() -> CaseResult {
    let Some(l) = F::lifecycle() else {
        return na("no activate: ensure on an attached thread is legal nesting");
    };
    let i = Sub::<F>::any()?;
    let id = i.id;
    on_thread(move || -> CaseResult {
        let ts = (l.new)(id)?;
        (l.activate)(ts)?;
        let before = F::current();
        expect_code((l.activate)(ts), E::Busy, "second activate")?;
        check_eq!(F::current(), before);
        (l.deactivate)(ts)?;
        (l.delete)(ts)?;
        Ok(())
    })
}

/// Every pointer argument, NULL where it is required: INVALID_ARGUMENT.
pub fn misuse_null_pointers<F: Facade>() -> CaseResult {
    let abi = F::abi();
    let id = F::main_interpreter()?;
    let mut n = 0usize;
    let mut buf = [tstate_core::c_abi::CHolder::default(); 1];
    let null = std::ptr::null_mut();
    // SAFETY: NULL is what is probed; every function checks it first.
    let probes: Vec<(&str, Code)> = unsafe {
        vec![
            ("main_interpreter", (abi.main_interpreter)(null)),
            ("create_interpreter", (abi.create_interpreter)(OWN, null)),
            (
                "holders(buf)",
                (abi.holders)(id, std::ptr::null_mut(), 1, &mut n),
            ),
            (
                "holders(count)",
                (abi.holders)(id, buf.as_mut_ptr(), 1, null.cast()),
            ),
            ("save_thread", (abi.save_thread)(null)),
            ("work_count", (abi.work_count)(id, null)),
            ("scratch_get", (abi.scratch_get)(null)),
            ("diagnostics", (abi.diagnostics)(std::ptr::null_mut())),
        ]
    };
    for (f, code) in probes.into_iter().chain(F::null_pointer_probes()) {
        check_eq!((f, code), (f, E::InvalidArgument.code()));
    }
    Ok(())
}

/// Id 0, forged ids and an unknown lock mode are refused.
pub fn misuse_id_zero_forged_ids_and_bad_lock_mode<F: Facade>() -> CaseResult {
    let main = F::main_interpreter()?;
    for bad in [0, main ^ (1 << 32), u64::MAX, main + 4096] {
        expect_code(
            on_thread(move || F::enter(bad)),
            E::NoSuchInterpreter,
            "enter(bad id)",
        )?;
        check_eq!(F::state(bad), E::NoSuchInterpreter.code());
    }
    expect_code(F::create(7), E::InvalidArgument, "create(mode 7)")?;
    Ok(())
}

/// A saved thread state can only be restored on its own OS thread.
pub fn affinity_thread_state_restored_only_on_its_thread<F: Facade>() -> CaseResult {
    let i = Sub::<F>::any()?;
    let id = i.id;
    on_thread(move || -> CaseResult {
        let s = F::enter(id)?;
        let saved = F::save()?;
        expect_code(
            on_thread(move || F::restore(saved)),
            E::WrongThread,
            "restore on another thread",
        )?;
        F::restore(saved)?;
        F::leave(s)?;
        Ok(())
    })
}

/// A thread that exits inside spans is cleaned up by its thread-exit
/// destructor: counted, the interpreter no longer held, finalize completes.
pub fn thread_exit_with_spans_open_is_cleaned_up<F: Facade>() -> CaseResult {
    let id = any_sub::<F>()?;
    let before = F::diagnostics();
    on_thread(move || -> CaseResult {
        F::enter(id)?;
        F::enter(id)?;
        Ok(()) // exits without leaving
    })?;
    let after = F::diagnostics();
    check_eq!(after.exit_cleanups - before.exit_cleanups, 1);
    check!(after.exit_spans_closed > before.exit_spans_closed);
    check!(F::holders(id)?.is_empty());
    let t0 = Instant::now();
    check_eq!(F::finalize(id, 5000), Ok(()));
    check!(t0.elapsed() < Duration::from_secs(1));
    Ok(())
}

/// An injected allocation failure at each point of a fresh thread's first
/// enter gives NO_MEMORY with nothing changed, and a retry succeeds.
pub fn allocation_failure_at_enter_changes_nothing<F: Facade>() -> CaseResult {
    let i = Sub::<F>::any()?;
    let id = i.id;
    let mut failed_points = 0;
    for skip in 0..8u32 {
        let (failed, ok) = on_thread(move || -> Result<(bool, bool), Failure> {
            F::fail_allocations(skip, 1);
            let r = F::enter(id);
            F::fail_allocations(0, 0);
            match r {
                Ok(s) => {
                    F::leave(s)?;
                    Ok((false, true))
                }
                Err(c) => {
                    check_eq!(c, E::NoMemory.code());
                    check_eq!(F::current(), None);
                    let s = F::enter(id)?;
                    F::leave(s)?;
                    Ok((true, true))
                }
            }
        })?;
        check!(ok);
        failed_points += usize::from(failed);
    }
    check!(
        failed_points >= 2,
        "only {failed_points} allocation points reached"
    );
    check!(F::holders(id)?.is_empty());
    Ok(())
}

/// In a free-threaded interpreter all 4 threads are attached at the same
/// time (with a lock, they could not all be inside together).
pub fn free_threaded_all_threads_attached_at_once<F: Facade>() -> CaseResult {
    const N: usize = 4;
    if !F::supports(NONE) {
        return na(
            "this backend cannot create a free-threaded interpreter (CPython: no free-threaded build here)",
        );
    }
    let i = Sub::<F>::new(NONE)?;
    let id = i.id;
    let inside = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..N)
        .map(|_| {
            let inside = inside.clone();
            std::thread::spawn(move || -> CaseResult {
                let s = F::enter(id)?;
                inside.fetch_add(1, Ordering::SeqCst);
                let t0 = Instant::now();
                while inside.load(Ordering::SeqCst) < N {
                    check!(
                        t0.elapsed() < Duration::from_secs(10),
                        "not all attached at once"
                    );
                    std::thread::yield_now();
                }
                check!(F::is_attached(id));
                F::work(id)?;
                F::leave(s)?;
                Ok(())
            })
        })
        .collect();
    for h in hs {
        h.join()
            .map_err(|_| Failure::Fail("thread panicked".into()))??;
    }
    Ok(())
}

fn contention<F: Facade>(threads: usize, iters: usize, ids: [u64; 2]) -> CaseResult {
    let before = F::diagnostics().exclusion_violations;
    let mut distinct = ids.to_vec();
    distinct.dedup();
    let counts: Vec<u64> = distinct
        .iter()
        .map(|&i| F::work_count(i))
        .collect::<Result<_, _>>()?;
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let id = ids[t % 2];
            std::thread::spawn(move || -> CaseResult {
                for _ in 0..iters {
                    let s = F::enter(id)?;
                    F::work(id)?;
                    F::leave(s)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in hs {
        h.join()
            .map_err(|_| Failure::Fail("thread panicked".into()))??;
    }
    let mut done = 0;
    for (&i, c) in distinct.iter().zip(&counts) {
        done += F::work_count(i)? - c;
    }
    check_eq!(done, (threads * iters) as u64);
    check_eq!(F::diagnostics().exclusion_violations, before);
    Ok(())
}

/// 4 threads × 2,000 enter/work/leave on one own-lock interpreter: no lost
/// update, no overlap seen.
pub fn mutual_exclusion_own_lock_under_contention<F: Facade>() -> CaseResult {
    if !F::supports(OWN) {
        return na(
            "this backend cannot create an interpreter with its own lock (CPython: per-interpreter GIL is 3.12+)",
        );
    }
    let i = Sub::<F>::new(OWN)?;
    contention::<F>(4, 2000 * scale(), [i.id, i.id])
}

/// 4 threads × 2,000, half in main and half in a subinterpreter sharing
/// main's lock: they exclude each other too.
pub fn mutual_exclusion_shared_lock_under_contention<F: Facade>() -> CaseResult {
    let i = Sub::<F>::new(SHARED)?;
    contention::<F>(4, 2000 * scale(), [F::main_interpreter()?, i.id])
}

/// "Am I attached?" answers per interpreter, also with subinterpreters
/// around and after they are gone (CPython 3.11 says 1 forever).
pub fn attached_check_exact_with_subinterpreters<F: Facade>() -> CaseResult {
    let main = F::main_interpreter()?;
    let sub = any_sub::<F>()?;
    on_thread(move || -> CaseResult {
        check!(!F::is_attached(main) && !F::is_attached(sub));
        let s = F::enter(sub)?;
        check!(F::is_attached(sub) && !F::is_attached(main));
        let other = on_thread(move || F::is_attached(sub) || F::is_attached(main));
        check!(!other);
        F::leave(s)?;
        check!(!F::is_attached(sub));
        Ok(())
    })?;
    F::finalize(sub, 5000)?;
    check!(!F::is_attached(sub) && !F::is_attached(main));
    Ok(())
}

/// Every code has its own static message; 0 and unknown codes too.
pub fn message_for_every_code<F: Facade>() -> CaseResult {
    let mut seen = std::collections::HashSet::new();
    for e in E::ALL {
        let m = F::message(e.code());
        check!(!m.is_empty() && m != "unknown error code", "{e:?}: {m:?}");
        check!(seen.insert(m.clone()), "duplicate message {m:?}");
    }
    check_eq!(F::message(0), "success");
    check_eq!(F::message(-99), "unknown error code");
    Ok(())
}

/// A panic inside an exported function comes back as PANIC (or the
/// function's documented default), never as an unwind into C.
pub fn no_panic_crosses_the_abi<F: Facade>() -> CaseResult {
    let i = Sub::<F>::any()?;
    let id = i.id;
    on_thread(move || -> CaseResult {
        F::inject_panics(1);
        expect_code(
            F::work_count(id),
            E::Panic,
            "work_count with a panic inside",
        )?;
        F::inject_panics(1);
        match F::enter(id) {
            Err(c) => check_eq!(c, E::Panic.code()),
            // The explicit design's idiom starts with a query
            // (`is_attached`), whose documented panic default is 0: the
            // panic was absorbed there, and New/Activate then succeeded.
            Ok(s) => {
                check!(
                    F::EXPLICIT_LIFECYCLE,
                    "enter succeeded despite the injected panic"
                );
                F::leave(s)?;
            }
        }
        check_eq!(F::current(), None);
        let s = F::enter(id)?;
        F::leave(s)?;
        Ok(())
    })
}

/// 8 threads × 10,000 enter/work/leave (× `TSTATE_CONFORMANCE_SCALE`) while
/// a driver creates and finalizes interpreters of every lock mode: every
/// enter is granted (then work succeeds) or refused with FINALIZING /
/// NO_SUCH_INTERPRETER; no work in a finalized interpreter; nothing held at
/// the end.
pub fn enter_races_create_and_finalize<F: Facade>() -> CaseResult {
    const THREADS: usize = 8;
    let iters = 10_000 * scale();
    let before = F::diagnostics().work_after_finalize;
    let current = Arc::new(AtomicU64::new(any_sub::<F>()?));
    let done = Arc::new(AtomicBool::new(false));
    // set by the first refusal any worker sees
    let seen_refusal = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (current, seen_refusal) = (current.clone(), seen_refusal.clone());
            std::thread::spawn(move || -> Result<(u64, u64, u64), Failure> {
                let (mut granted, mut refused) = (0, 0);
                // `iters` rounds, then on until some worker was refused (at
                // most 50 × `iters`): the finalizing driver may not have
                // been scheduled yet when the workers are done (seen on
                // CPython 3.11, where creating a subinterpreter takes
                // about 30 ms: "granted 80000, refused 0")
                let mut k = 0;
                while k < iters || (!seen_refusal.load(Ordering::Relaxed) && k < 50 * iters) {
                    k += 1;
                    let id = current.load(Ordering::Acquire);
                    if k % 16 == 0 {
                        // a caller that looked the id up a while ago
                        std::thread::yield_now();
                    }
                    match F::enter(id) {
                        Ok(s) => {
                            F::work(id)?;
                            F::leave(s)?;
                            granted += 1;
                        }
                        Err(c) => {
                            expect_one_of::<()>(
                                Err(c),
                                &[E::Finalizing, E::NoSuchInterpreter],
                                "refusal",
                            )?;
                            refused += 1;
                            seen_refusal.store(true, Ordering::Relaxed);
                        }
                    }
                }
                check_eq!(F::current(), None);
                Ok((granted, refused, k as u64))
            })
        })
        .collect();
    let (c2, d2) = (current.clone(), done.clone());
    let modes: Vec<u32> = [OWN, SHARED, NONE]
        .into_iter()
        .filter(|&m| F::supports(m))
        .collect();
    let driver = std::thread::spawn(move || -> Result<u64, Failure> {
        let mut n = 0;
        while !d2.load(Ordering::Acquire) {
            let next = F::create(modes[n as usize % modes.len()])?;
            let old = c2.swap(next, Ordering::AcqRel);
            F::finalize(old, 10_000)?;
            n += 1;
        }
        Ok(n)
    });
    let (mut granted, mut refused, mut rounds) = (0, 0, 0);
    for w in workers {
        let (g, r, n) = w
            .join()
            .map_err(|_| Failure::Fail("worker panicked".into()))??;
        granted += g;
        refused += r;
        rounds += n;
    }
    done.store(true, Ordering::Release);
    let finalizations = driver
        .join()
        .map_err(|_| Failure::Fail("driver panicked".into()))??;
    F::finalize(current.load(Ordering::Acquire), 10_000)?;
    check!(rounds >= (THREADS * iters) as u64);
    check_eq!(granted + refused, rounds);
    check!(
        granted > 0 && refused > 0,
        "granted {granted}, refused {refused}: the race was not exercised"
    );
    check!(finalizations > 0);
    check_eq!(F::diagnostics().work_after_finalize, before);
    Ok(())
}

// ----- the guard design (PEP 788) -----------------------------------------

fn guard_ops<F: Facade>() -> Result<crate::facade::GuardOps, Failure> {
    F::guards().ok_or(Failure::NotApplicable(
        "no guards or views: the design has no object that holds an interpreter open without a thread state",
    ))
}

/// A view never blocks finalization and stays safe to use afterwards:
/// turning it into a guard (or an ensure) then fails with
/// NO_SUCH_INTERPRETER.
pub fn guard_view_outlives_its_interpreter<F: Facade>() -> CaseResult {
    let g = guard_ops::<F>()?;
    let id = any_sub::<F>()?;
    let v = (g.view_for)(id)?;
    let t0 = Instant::now();
    check_eq!(F::finalize(id, 5000), Ok(()));
    check!(
        t0.elapsed() < Duration::from_secs(1),
        "a view blocked finalization"
    );
    expect_code(
        (g.guard_from_view)(v),
        E::NoSuchInterpreter,
        "guard from a gone view",
    )?;
    expect_code(
        on_thread(move || (g.ensure_from_view)(v)),
        E::NoSuchInterpreter,
        "ensure from a gone view",
    )?;
    (g.view_close)(v)?;
    Ok(())
}

/// A guard taken with no thread state keeps finalization waiting (it is
/// named in the holder report), and once closed lets it complete.
pub fn guard_blocks_finalization_with_no_thread_state<F: Facade>() -> CaseResult {
    let g = guard_ops::<F>()?;
    let id = any_sub::<F>()?;
    let guard = on_thread(move || -> Result<usize, Failure> {
        let v = (g.view_for)(id)?;
        let gu = (g.guard_from_view)(v)?;
        (g.view_close)(v)?;
        check_eq!(F::current(), None);
        Ok(gu)
    })?;
    expect_code(
        F::finalize(id, 50),
        E::Timeout,
        "finalize with a guard open",
    )?;
    let hs = F::holders(id)?;
    check!(hs.iter().any(|h| h.kind == 2), "the guard is named: {hs:?}");
    (g.guard_close)(guard)?;
    check_eq!(F::finalize(id, 5000), Ok(()));
    Ok(())
}

/// PEP 788's daemon idiom: ensure with a guard, then close the guard: the
/// span no longer blocks finalization, and after it the daemon's calls fail
/// cleanly (its span stack still unwinds).
pub fn guard_daemon_idiom_span_does_not_block_finalization<F: Facade>() -> CaseResult {
    let g = guard_ops::<F>()?;
    let main = F::main_interpreter()?;
    let id = any_sub::<F>()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let daemon = std::thread::spawn(move || -> CaseResult {
        let v = (g.view_for)(id)?;
        let gu = (g.guard_from_view)(v)?;
        let t = (g.ensure)(gu)?;
        (g.guard_close)(gu)?;
        (g.view_close)(v)?;
        F::work(id)?;
        let s = F::save()?; // blocked in I/O, say
        tx.send(()).ok();
        go_rx.recv().ok();
        // after finalization the daemon's thread state is gone (its calls
        // fail cleanly); if the backend kept the interpreter open for it,
        // it carries on
        let restored = F::restore(s);
        let worked = restored.is_ok() && F::work(id).is_ok();
        let released = (g.release)(t);
        check!(restored.is_err() || worked);
        check_eq!(released, Ok(()));
        check_eq!(F::current(), None);
        Ok(())
    });
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| Failure::Fail("daemon did not start".into()))?;
    let t0 = Instant::now();
    let r = F::finalize(id, 2000);
    let took = t0.elapsed();
    go_tx.send(()).ok();
    daemon
        .join()
        .map_err(|_| Failure::Fail("daemon panicked".into()))??;
    if r == Err(E::Timeout.code()) {
        // the backend keeps a subinterpreter open for a daemon span (CPython:
        // a subinterpreter cannot end while a thread state of it exists):
        // then the daemon idiom applies to main only — shown on main below
        check_eq!(F::finalize(id, 5000), Ok(()));
        let v = (g.view_for)(main)?;
        let gu = (g.guard_from_view)(v)?;
        (g.view_close)(v)?;
        let t = on_thread(move || -> Result<(), Failure> {
            let t = (g.ensure)(gu)?;
            (g.guard_close)(gu)?;
            F::work(main)?;
            (g.release)(t)?;
            Ok(())
        });
        return t;
    }
    check_eq!(r, Ok(()));
    check!(took < Duration::from_secs(1), "finalize took {took:?}");
    check_eq!(F::diagnostics().work_after_finalize, 0);
    Ok(())
}

/// EnsureFromView takes a guard and keeps it until the matching release:
/// finalization waits for it.
pub fn guard_ensure_from_view_keeps_its_guard_until_release<F: Facade>() -> CaseResult {
    let g = guard_ops::<F>()?;
    let id = any_sub::<F>()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || -> CaseResult {
        let v = (g.view_for)(id)?;
        let t = (g.ensure_from_view)(v)?;
        (g.view_close)(v)?;
        F::work(id)?;
        let s = F::save()?;
        tx.send(()).ok();
        go_rx.recv().ok();
        F::restore(s)?;
        (g.release)(t)?;
        Ok(())
    });
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| Failure::Fail("holder did not start".into()))?;
    expect_code(
        F::finalize(id, 50),
        E::Timeout,
        "finalize while the token is open",
    )?;
    check!(
        F::holders(id)?.iter().any(|x| x.kind == 2),
        "its guard is named"
    );
    go_tx.send(()).ok();
    h.join()
        .map_err(|_| Failure::Fail("holder panicked".into()))??;
    check_eq!(F::finalize(id, 5000), Ok(()));
    Ok(())
}

/// Once finalization has started, no new guard (and no ensure from a view)
/// is granted; an ensure with a guard taken before still is.
pub fn guard_refused_once_finalizing<F: Facade>() -> CaseResult {
    let g = guard_ops::<F>()?;
    let id = any_sub::<F>()?;
    let v = (g.view_for)(id)?;
    let early = (g.guard_from_view)(v)?;
    let fin = std::thread::spawn(move || F::finalize(id, 10_000));
    wait_finalizing::<F>(id)?;
    expect_code(
        (g.guard_from_view)(v),
        E::Finalizing,
        "guard while finalizing",
    )?;
    expect_code(
        on_thread(move || (g.ensure_from_view)(v)),
        E::Finalizing,
        "ensure from view while finalizing",
    )?;
    on_thread(move || -> CaseResult {
        let t = (g.ensure)(early)?;
        F::work(id)?;
        (g.release)(t)?;
        Ok(())
    })?;
    (g.guard_close)(early)?;
    check_eq!(
        fin.join()
            .map_err(|_| Failure::Fail("finalizer panicked".into()))?,
        Ok(())
    );
    (g.view_close)(v)?;
    Ok(())
}

/// A token restores exactly the thread state attached before its ensure,
/// across interpreters; an outer token released first is refused.
pub fn guard_token_restores_across_interpreters<F: Facade>() -> CaseResult {
    let g = guard_ops::<F>()?;
    let (sa, sb) = (Sub::<F>::any()?, Sub::<F>::any()?);
    let (a, b) = (sa.id, sb.id);
    on_thread(move || -> CaseResult {
        let (va, vb) = ((g.view_for)(a)?, (g.view_for)(b)?);
        let ta = (g.ensure_from_view)(va)?;
        let on_a = F::current();
        let tb = (g.ensure_from_view)(vb)?;
        check_eq!(F::current().map(|c| c.1), Some(b));
        check!(!F::is_attached(a));
        expect_code((g.release)(ta), E::OutOfOrder, "outer token first")?;
        (g.release)(tb)?;
        check_eq!(F::current(), on_a);
        (g.release)(ta)?;
        check_eq!(F::current(), None);
        (g.view_close)(va)?;
        (g.view_close)(vb)?;
        Ok(())
    })
}

/// A leaked guard does not hang finalization (PEP 788 waits forever): a
/// bounded finalize returns TIMEOUT and names the guard; the interpreter
/// keeps refusing until the guard is closed.
pub fn guard_leaked_guard_bounded_finalize_names_it<F: Facade>() -> CaseResult {
    let g = guard_ops::<F>()?;
    let id = any_sub::<F>()?;
    let v = (g.view_for)(id)?;
    let leaked = (g.guard_from_view)(v)?;
    let t0 = Instant::now();
    let mut buf = [tstate_core::c_abi::CHolder::default(); 4];
    let mut n = 0usize;
    // SAFETY: buf has 4 slots; n is a valid out-pointer.
    let r = unsafe { (F::abi().finalize_report)(id, 100, buf.as_mut_ptr(), buf.len(), &mut n) };
    check_eq!(r, E::Timeout.code());
    check!(
        t0.elapsed() < Duration::from_secs(2),
        "bounded: {:?}",
        t0.elapsed()
    );
    check!(
        n == 1 && buf[0].kind == 2,
        "the guard is named: {n} {:?}",
        &buf[..n.min(4)]
    );
    check_eq!(F::state(id), 1);
    (g.guard_close)(leaked)?;
    check_eq!(F::finalize(id, 5000), Ok(()));
    (g.view_close)(v)?;
    Ok(())
}
