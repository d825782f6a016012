//! Bad input is refused with its documented code and changes nothing
//! (contract §2.6); allocation failure is an error, not an abort (§2.11).

mod common;
use std::sync::Arc;
use tstate_core::{Diagnostics, Error, InterpreterId, LockMode, Runtime, ThreadStateId, Ticket};

/// What must not change when a call is refused: this thread's attachment,
/// the registries and the open holds.
#[derive(Debug, PartialEq)]
struct Snapshot {
    current: Option<(ThreadStateId, InterpreterId)>,
    interpreters: u64,
    thread_states: u64,
    open_holds: u64,
}

fn snap(rt: &Runtime) -> Snapshot {
    let Diagnostics {
        interpreters,
        thread_states,
        open_holds,
        ..
    } = rt.diagnostics();
    Snapshot {
        current: rt.current(),
        interpreters,
        thread_states,
        open_holds,
    }
}

/// Asserts that `op` fails with `want` and leaves the snapshot unchanged.
fn refused<T: std::fmt::Debug>(rt: &Runtime, want: Error, op: impl FnOnce() -> Result<T, Error>) {
    let before = snap(rt);
    let got = op();
    assert_eq!(got.as_ref().err(), Some(&want), "got {got:?}");
    assert_eq!(snap(rt), before, "a refused call changed state");
}

#[test]
fn release_with_nothing_ensured() {
    let rt = Runtime::new();
    rt.main_interpreter().unwrap();
    refused(&rt, Error::NotAttached, || rt.release());
}

#[test]
fn double_forged_and_out_of_order_ticket_releases() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    let outer = rt.ensure(main).unwrap();
    let inner = rt.ensure(sub).unwrap();
    refused(&rt, Error::OutOfOrder, || rt.release_ticket(outer));
    rt.release_ticket(inner).unwrap();
    refused(&rt, Error::InvalidHandle, || rt.release_ticket(inner));
    refused(&rt, Error::InvalidHandle, || {
        rt.release_ticket(Ticket::from_raw(0))
    });
    refused(&rt, Error::InvalidHandle, || {
        rt.release_ticket(Ticket::from_raw(u32::MAX))
    });
    // same thread tag, never issued sequence number
    let forged = Ticket::from_raw(outer.to_raw() ^ 0x00ab_cdef);
    refused(&rt, Error::InvalidHandle, || rt.release_ticket(forged));
    rt.release_ticket(outer).unwrap();
    refused(&rt, Error::InvalidHandle, || rt.release_ticket(outer));
}

#[test]
fn foreign_thread_ticket_release_is_refused_and_leaves_the_owner_intact() {
    let rt = Arc::new(Runtime::new());
    let main = rt.main_interpreter().unwrap();
    let t = rt.ensure(main).unwrap();
    let before = rt.current();
    let rt2 = rt.clone();
    let got = std::thread::spawn(move || {
        // tags repeat every 127 threads; spawn until this thread's differs
        rt2.release_ticket(t)
    })
    .join()
    .unwrap();
    assert!(
        got == Err(Error::WrongThread) || got == Err(Error::InvalidHandle),
        "{got:?}"
    );
    assert_eq!(rt.current(), before);
    rt.release_ticket(t).unwrap();
}

#[test]
fn id_zero_forged_and_stale_interpreters_everywhere() {
    let rt = Runtime::new();
    let gone = rt.create_interpreter(LockMode::Own).unwrap();
    rt.finalize(gone, None).unwrap();
    for id in [
        InterpreterId::from_raw(0),
        InterpreterId::from_raw(12345),
        gone,
    ] {
        refused(&rt, Error::NoSuchInterpreter, || rt.ensure(id));
        refused(&rt, Error::NoSuchInterpreter, || rt.new_thread_state(id));
        refused(&rt, Error::NoSuchInterpreter, || rt.interpreter_state(id));
        refused(&rt, Error::NoSuchInterpreter, || rt.work_count(id));
        refused(&rt, Error::NoSuchInterpreter, || rt.holders(id));
        refused(&rt, Error::NotAttached, || rt.work(id));
        assert!(!rt.is_attached(id));
    }
}

#[test]
fn thread_state_misuse() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    let forged = ThreadStateId::from_raw(0xdead_beef_0000_0001);
    refused(&rt, Error::InvalidHandle, || rt.activate(forged));
    refused(&rt, Error::InvalidHandle, || {
        rt.activate(ThreadStateId::from_raw(0))
    });
    refused(&rt, Error::InvalidHandle, || rt.delete_thread_state(forged));
    refused(&rt, Error::InvalidHandle, || rt.restore(forged));
    let a = rt.new_thread_state(main).unwrap();
    let b = rt.new_thread_state(main).unwrap();
    refused(&rt, Error::NotAttached, || rt.deactivate(a));
    rt.activate(a).unwrap();
    refused(&rt, Error::Busy, || rt.activate(a));
    refused(&rt, Error::Busy, || rt.delete_thread_state(a));
    rt.activate(b).unwrap();
    refused(&rt, Error::OutOfOrder, || rt.deactivate(a));
    let s = rt.save().unwrap();
    assert_eq!(s, b);
    refused(&rt, Error::OutOfOrder, || rt.deactivate(b));
    refused(&rt, Error::Busy, || rt.delete_thread_state(b));
    rt.restore(s).unwrap();
    rt.deactivate(b).unwrap();
    rt.deactivate(a).unwrap();
    rt.delete_thread_state(a).unwrap();
    rt.delete_thread_state(b).unwrap();
    refused(&rt, Error::InvalidHandle, || rt.deactivate(a));
}

#[test]
fn work_on_the_wrong_interpreter_is_detected() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    let sub = rt.create_interpreter(LockMode::Own).unwrap();
    let g = rt.ensure(sub).unwrap();
    refused(&rt, Error::NotAttached, || rt.work(main));
    assert_eq!(rt.work(sub), Ok(1));
    rt.release_ticket(g).unwrap();
    assert_eq!(rt.work_count(main), Ok(0));
}

#[test]
fn allocation_failure_at_ensure_new_and_create_changes_nothing_and_next_call_succeeds() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    rt.fail_next_allocations(1);
    refused(&rt, Error::NoMemory, || rt.ensure(main));
    let g = rt.ensure(main).unwrap();
    rt.release_ticket(g).unwrap();

    rt.fail_next_allocations(1);
    refused(&rt, Error::NoMemory, || rt.new_thread_state(main));
    let ts = rt.new_thread_state(main).unwrap();
    rt.delete_thread_state(ts).unwrap();

    rt.fail_next_allocations(1);
    refused(&rt, Error::NoMemory, || {
        rt.create_interpreter(LockMode::Own)
    });
    rt.create_interpreter(LockMode::Own).unwrap();
    assert_eq!(rt.diagnostics().injected_faults, 3);
}

#[test]
fn allocation_failure_at_each_point_of_a_fresh_thread_scenario() {
    // A fresh thread: per-thread table, interpreter entry, thread state,
    // span-stack growth (deep nesting), save-stack growth. Fail each
    // allocation in turn; every step either succeeds or reports NoMemory
    // with nothing changed, and retrying succeeds.
    fn scenario(rt: &Runtime, main: InterpreterId, sub: InterpreterId) -> Result<(), Error> {
        let mut tickets = Vec::new();
        for i in 0..20 {
            let id = if i % 2 == 0 { main } else { sub };
            let before = snap(rt);
            match rt.ensure(id) {
                Ok(t) => tickets.push(t),
                Err(e) => {
                    assert_eq!(e, Error::NoMemory);
                    assert_eq!(snap(rt), before);
                    tickets.push(rt.ensure(id)?); // retry succeeds
                }
            }
        }
        let before = snap(rt);
        let s = match rt.save() {
            Ok(s) => s,
            Err(e) => {
                assert_eq!(e, Error::NoMemory);
                assert_eq!(snap(rt), before);
                rt.save()?
            }
        };
        rt.restore(s)?;
        while let Some(t) = tickets.pop() {
            rt.release_ticket(t)?;
        }
        Ok(())
    }
    let mut points = 0;
    for k in 0..64 {
        let rt = Arc::new(Runtime::new());
        let main = rt.main_interpreter().unwrap();
        let sub = rt.create_interpreter(LockMode::Own).unwrap();
        rt.fail_allocations(k, 1);
        let rt2 = rt.clone();
        std::thread::spawn(move || scenario(&rt2, main, sub).unwrap())
            .join()
            .unwrap();
        let d = rt.diagnostics();
        if d.injected_faults == 0 {
            points = k;
            break;
        }
        assert_eq!(d.open_holds, 0);
        assert_eq!(d.thread_states, 0, "freed at thread exit");
    }
    assert!(points >= 5, "the scenario has {points} allocation points");
    eprintln!("allocation points swept in the fresh-thread scenario: {points}");
}

#[test]
fn error_codes_and_messages_are_stable() {
    let expect = [
        (Error::NoMemory, -1),
        (Error::Finalizing, -2),
        (Error::NoSuchInterpreter, -3),
        (Error::WrongThread, -4),
        (Error::NotAttached, -5),
        (Error::InvalidHandle, -6),
        (Error::OutOfOrder, -7),
        (Error::InvalidArgument, -8),
        (Error::Busy, -9),
        (Error::Timeout, -10),
        (Error::Panic, -11),
        (Error::Unsupported, -12),
    ];
    for (e, c) in expect {
        assert_eq!(e.code(), c);
        assert!(!e.c_message().to_bytes().is_empty());
    }
    assert_eq!(Error::ALL.len(), expect.len());
}
