//! The misuse matrix: every exported C function of every facade × every bad
//! input that applies to it (NULL, id 0, forged id, stale id, wrong thread,
//! double release, out-of-order release, delete while active, release with
//! nothing ensured) → its documented code, with nothing else changed: the
//! caller's attachment, the registries, and a bystander thread's hold on
//! another interpreter. Then a panic injected inside every exported
//! function → PANIC (or the function's documented default), never an unwind.
//!
//! (The C side of misuse runs under ASan/UBSan in `c_programs.rs`: the
//! `misuse` scenario of each facade's program.)

use std::ffi::c_int;
use std::sync::mpsc;
use tstate_conformance::facade::{Activate, Ensure, Facade, Guard, Handle, Shared};
use tstate_core::Error as E;
use tstate_core::c_abi::CHolder;

/// A probe call returning a code.
type Call = Box<dyn FnMut() -> c_int>;
/// A call of a pointer-returning function: whether it returned NULL.
type NullCheck = Box<dyn Fn() -> bool>;
/// A call of a `void` function.
type VoidCall = Box<dyn Fn()>;

/// The two tests share process-wide state (fault and panic injection).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A thread holding `interp` open for the whole matrix (the bystander whose
/// state must never change).
struct Bystander {
    interp: u64,
    stop: mpsc::Sender<()>,
    done: std::thread::JoinHandle<()>,
}

fn bystander() -> Bystander {
    let interp = Ensure::create(0).unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop, stop_rx) = mpsc::channel::<()>();
    let done = std::thread::spawn(move || {
        Ensure::enter(interp).unwrap();
        Ensure::save().unwrap();
        ready_tx.send(()).unwrap();
        stop_rx.recv().unwrap();
    });
    ready_rx.recv().unwrap();
    Bystander { interp, stop, done }
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    current: Option<(u64, u64)>,
    interpreters: u64,
    thread_states: u64,
    open_holds: u64,
    bystander: Vec<(u64, u32)>,
}

fn snapshot(b: &Bystander) -> Snapshot {
    let d = Ensure::diagnostics();
    Snapshot {
        current: Ensure::current(),
        interpreters: d.interpreters,
        thread_states: d.thread_states,
        open_holds: d.open_holds,
        bystander: Ensure::holders(b.interp)
            .unwrap()
            .iter()
            .map(|h: &CHolder| (h.thread_number, h.spans))
            .collect(),
    }
}

/// One row of the matrix.
struct Row {
    function: &'static str,
    input: &'static str,
    want: Vec<E>,
    got: Result<(), c_int>,
    unchanged: bool,
}

/// Runs `call` (which returns the raw code) expecting one of `want`, and
/// records whether the snapshot stayed the same.
fn probe(
    rows: &mut Vec<Row>,
    b: &Bystander,
    function: &'static str,
    input: &'static str,
    want: &[E],
    call: impl FnOnce() -> c_int,
) {
    let before = snapshot(b);
    let c = call();
    let after = snapshot(b);
    rows.push(Row {
        function,
        input,
        want: want.to_vec(),
        got: if c < 0 { Err(c) } else { Ok(()) },
        unchanged: before == after,
    });
}

fn stale_id() -> u64 {
    let id = Ensure::create(0).unwrap();
    Ensure::finalize(id, 1000).unwrap();
    id
}

fn on_other_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

/// The shared functions of facade `F`.
fn shared_rows<F: Facade>(rows: &mut Vec<Row>, b: &Bystander) {
    let abi = F::abi();
    let null = std::ptr::null_mut();
    let main = F::main_interpreter().unwrap();
    let stale = stale_id();
    let ids: [(&str, u64); 3] = [
        ("id 0", 0),
        ("forged id", main ^ (1 << 40)),
        ("stale id", stale),
    ];
    // SAFETY: every call below gets NULL (which the callee checks) or a valid pointer.
    unsafe {
        probe(
            rows,
            b,
            "main_interpreter",
            "NULL",
            &[E::InvalidArgument],
            || (abi.main_interpreter)(null),
        );
        probe(
            rows,
            b,
            "create_interpreter",
            "NULL",
            &[E::InvalidArgument],
            || (abi.create_interpreter)(0, null),
        );
        let mut out = 0;
        probe(
            rows,
            b,
            "create_interpreter",
            "bad lock mode",
            &[E::InvalidArgument],
            || (abi.create_interpreter)(9, &mut out),
        );
        for (what, id) in ids {
            probe(
                rows,
                b,
                "interpreter_state",
                what,
                &[E::NoSuchInterpreter],
                || (abi.interpreter_state)(id),
            );
            probe(rows, b, "finalize", what, &[E::NoSuchInterpreter], || {
                (abi.finalize)(id, 0)
            });
            let mut n = 0usize;
            probe(rows, b, "holders", what, &[E::NoSuchInterpreter], || {
                (abi.holders)(id, std::ptr::null_mut(), 0, &mut n)
            });
            probe(rows, b, "work", what, &[E::NotAttached], || {
                (abi.work)(id, null)
            });
            let mut v = 0;
            probe(rows, b, "work_count", what, &[E::NoSuchInterpreter], || {
                (abi.work_count)(id, &mut v)
            });
            probe(rows, b, "is_attached", what, &[], || -(abi.is_attached)(id));
        }
        let mut n = 0usize;
        probe(
            rows,
            b,
            "holders",
            "NULL count",
            &[E::InvalidArgument],
            || (abi.holders)(main, std::ptr::null_mut(), 0, std::ptr::null_mut()),
        );
        probe(
            rows,
            b,
            "holders",
            "NULL buffer, cap 1",
            &[E::InvalidArgument],
            || (abi.holders)(main, std::ptr::null_mut(), 1, &mut n),
        );
        probe(
            rows,
            b,
            "save_thread",
            "NULL",
            &[E::InvalidArgument],
            || (abi.save_thread)(null),
        );
        let mut ts = 0;
        probe(
            rows,
            b,
            "save_thread",
            "nothing attached",
            &[E::NotAttached],
            || (abi.save_thread)(&mut ts),
        );
        probe(
            rows,
            b,
            "restore_thread",
            "handle 0",
            &[E::InvalidHandle],
            || (abi.restore_thread)(0),
        );
        probe(
            rows,
            b,
            "restore_thread",
            "forged handle",
            &[E::InvalidHandle],
            || (abi.restore_thread)(0xdead_0000_0001),
        );
        // a saved thread state: restore while attached, on another thread,
        // and (after restoring) when not saved
        let s = F::enter(main).unwrap();
        let saved = F::save().unwrap();
        probe(
            rows,
            b,
            "restore_thread",
            "wrong thread",
            &[E::WrongThread],
            || on_other_thread(move || (abi.restore_thread)(saved)),
        );
        let s2 = F::enter(main).unwrap();
        probe(
            rows,
            b,
            "restore_thread",
            "while attached",
            &[E::Busy],
            || (abi.restore_thread)(saved),
        );
        F::leave(s2).unwrap();
        F::restore(saved).unwrap();
        let cur = F::current().unwrap().0;
        F::leave(s).unwrap();
        // ensure/handle keep the thread state; the explicit design's idiom
        // deleted it on leave, so there it is a stale handle
        let want = if F::EXPLICIT_LIFECYCLE {
            E::InvalidHandle
        } else {
            E::NotAttached
        };
        probe(rows, b, "restore_thread", "nothing saved", &[want], || {
            (abi.restore_thread)(cur)
        });
        probe(rows, b, "work_count", "NULL", &[E::InvalidArgument], || {
            (abi.work_count)(main, null)
        });
        probe(
            rows,
            b,
            "scratch_set",
            "nothing attached",
            &[E::NotAttached],
            || (abi.scratch_set)(1),
        );
        probe(
            rows,
            b,
            "scratch_get",
            "NULL",
            &[E::InvalidArgument],
            || (abi.scratch_get)(null),
        );
        let mut v = 0;
        probe(
            rows,
            b,
            "scratch_get",
            "nothing attached",
            &[E::NotAttached],
            || (abi.scratch_get)(&mut v),
        );
        probe(
            rows,
            b,
            "diagnostics",
            "NULL",
            &[E::InvalidArgument],
            || (abi.diagnostics)(std::ptr::null_mut()),
        );
        probe(rows, b, "current", "NULL, NULL", &[], || {
            (abi.current)(null, null)
        });
        for code in [0, -1, -11, -12, i32::MIN, i32::MAX] {
            probe(rows, b, "error_message", "any int", &[], || {
                if (abi.error_message)(code).is_null() {
                    -1000
                } else {
                    0
                }
            });
        }
    }
}

fn ensure_rows(rows: &mut Vec<Row>, b: &Bystander) {
    use tstate_ffi_ensure::*;
    let main = Ensure::main_interpreter().unwrap();
    let stale = stale_id();
    for (what, id) in [
        ("id 0", 0),
        ("forged id", main ^ (1 << 40)),
        ("stale id", stale),
    ] {
        probe(rows, b, "tse_ensure", what, &[E::Panic], || {
            let mut msg = std::ptr::null();
            // SAFETY: valid out-pointer.
            let r = unsafe { tse_ensure(id, &mut msg) };
            // -1 with the message of NO_SUCH_INTERPRETER (Panic is never
            // returned here: -1 reads as -1, so map it for the row)
            let m = E::NoSuchInterpreter.c_message().as_ptr();
            if r == -1 && msg == m { -11 } else { -1000 }
        });
        probe(
            rows,
            b,
            "tse_ensure_ex",
            what,
            &[E::NoSuchInterpreter],
            || {
                let mut e = EnsureError {
                    code: 0,
                    message: std::ptr::null(),
                };
                // SAFETY: valid out-pointer.
                let r = unsafe { tse_ensure_ex(id, &mut e) };
                if r == e.code { r } else { -1000 }
            },
        );
    }
    probe(
        rows,
        b,
        "tse_release",
        "nothing ensured",
        &[E::NotAttached],
        || Ensure::release_nothing().err().unwrap_or(0),
    );
    Ensure::enter(main).unwrap();
    probe(
        rows,
        b,
        "tse_release",
        "wrong thread",
        &[E::NotAttached],
        || on_other_thread(move || Ensure::leave(()).err().unwrap_or(0)),
    );
    let saved = Ensure::save().unwrap();
    probe(
        rows,
        b,
        "tse_release",
        "out of order (save inside)",
        &[E::OutOfOrder],
        || Ensure::leave(()).err().unwrap_or(0),
    );
    Ensure::restore(saved).unwrap();
    Ensure::leave(()).unwrap();
    probe(
        rows,
        b,
        "tse_release",
        "double release",
        &[E::NotAttached],
        || Ensure::leave(()).err().unwrap_or(0),
    );
}

fn handle_rows(rows: &mut Vec<Row>, b: &Bystander) {
    use tstate_ffi_handle::*;
    let main = Handle::main_interpreter().unwrap();
    let stale = stale_id();
    for (what, id) in [
        ("id 0", 0),
        ("forged id", main ^ (1 << 40)),
        ("stale id", stale),
    ] {
        probe(rows, b, "tsh_ensure", what, &[E::NoSuchInterpreter], || {
            // SAFETY: NULL errmsg is allowed.
            unsafe { tsh_ensure(id, std::ptr::null_mut()) }
        });
    }
    probe(
        rows,
        b,
        "tsh_release",
        "nothing ensured",
        &[E::InvalidHandle],
        || tsh_release(0),
    );
    probe(
        rows,
        b,
        "tsh_release",
        "negative handle",
        &[E::InvalidHandle],
        || tsh_release(-3),
    );
    let sub = Handle::create(0).unwrap();
    let outer = Handle::enter(main).unwrap();
    let inner = Handle::enter(sub).unwrap();
    probe(
        rows,
        b,
        "tsh_release",
        "out of order",
        &[E::OutOfOrder],
        || tsh_release(outer),
    );
    probe(
        rows,
        b,
        "tsh_release",
        "wrong thread",
        &[E::WrongThread, E::InvalidHandle],
        || on_other_thread(move || tsh_release(inner)),
    );
    probe(
        rows,
        b,
        "tsh_release",
        "forged handle",
        &[E::InvalidHandle, E::WrongThread],
        || tsh_release(inner ^ 0x5a5a),
    );
    tsh_release(inner);
    probe(
        rows,
        b,
        "tsh_release",
        "double release",
        &[E::InvalidHandle],
        || tsh_release(inner),
    );
    tsh_release(outer);
    Handle::finalize(sub, 1000).unwrap();
}

fn activate_rows(rows: &mut Vec<Row>, b: &Bystander) {
    use tstate_ffi_activate::*;
    let main = Activate::main_interpreter().unwrap();
    let stale = stale_id();
    let p = |x: usize| x as *mut ThreadState;
    let mut ts = std::ptr::null_mut();
    // SAFETY: tsa_new checks `out` for NULL; a non-NULL `out` here is valid.
    let new_into = |id: u64, out: *mut *mut ThreadState| unsafe { tsa_new(id, out) };
    // SAFETY: tsa_get checks its pointer for NULL.
    let get_null = || unsafe { tsa_get(std::ptr::null_mut()) };
    // SAFETY: tsa_get_error_message checks its pointer for NULL.
    let message_null = || unsafe { tsa_get_error_message(-1, std::ptr::null_mut()) };
    probe(rows, b, "tsa_new", "NULL", &[E::InvalidArgument], || {
        new_into(main, std::ptr::null_mut())
    });
    for (what, id) in [
        ("id 0", 0),
        ("forged id", main ^ (1 << 40)),
        ("stale id", stale),
    ] {
        probe(rows, b, "tsa_new", what, &[E::NoSuchInterpreter], || {
            new_into(id, &mut ts)
        });
    }
    for (f, call) in [
        (
            "tsa_activate",
            tsa_activate as extern "C" fn(*mut ThreadState) -> c_int,
        ),
        ("tsa_deactivate", tsa_deactivate),
        ("tsa_delete", tsa_delete),
    ] {
        probe(rows, b, f, "NULL", &[E::InvalidArgument], || {
            call(std::ptr::null_mut())
        });
        probe(rows, b, f, "forged handle", &[E::InvalidHandle], || {
            call(p(0xdead_0000_0001))
        });
    }
    let l = Activate::lifecycle().unwrap();
    let a = (l.new)(main).unwrap();
    let c = (l.new)(main).unwrap();
    for (f, call) in [
        (
            "tsa_activate",
            tsa_activate as extern "C" fn(*mut ThreadState) -> c_int,
        ),
        ("tsa_deactivate", tsa_deactivate),
        ("tsa_delete", tsa_delete),
    ] {
        probe(rows, b, f, "wrong thread", &[E::WrongThread], || {
            on_other_thread(move || call(p(a)))
        });
    }
    probe(
        rows,
        b,
        "tsa_deactivate",
        "not active (nothing to release)",
        &[E::NotAttached],
        || tsa_deactivate(p(a)),
    );
    tsa_activate(p(a));
    probe(
        rows,
        b,
        "tsa_activate",
        "double activate",
        &[E::Busy],
        || tsa_activate(p(a)),
    );
    probe(
        rows,
        b,
        "tsa_delete",
        "delete while active",
        &[E::Busy],
        || tsa_delete(p(a)),
    );
    tsa_activate(p(c));
    probe(
        rows,
        b,
        "tsa_deactivate",
        "out of order",
        &[E::OutOfOrder],
        || tsa_deactivate(p(a)),
    );
    tsa_deactivate(p(c));
    tsa_deactivate(p(a));
    probe(
        rows,
        b,
        "tsa_deactivate",
        "double release",
        &[E::NotAttached],
        || tsa_deactivate(p(a)),
    );
    tsa_delete(p(a));
    tsa_delete(p(c));
    probe(
        rows,
        b,
        "tsa_activate",
        "stale handle (deleted)",
        &[E::InvalidHandle],
        || tsa_activate(p(a)),
    );
    probe(
        rows,
        b,
        "tsa_delete",
        "double delete",
        &[E::InvalidHandle],
        || tsa_delete(p(a)),
    );
    probe(rows, b, "tsa_get", "NULL", &[E::InvalidArgument], get_null);
    probe(
        rows,
        b,
        "tsa_get_error_message",
        "NULL",
        &[E::InvalidArgument],
        message_null,
    );
}

/// The guard facade's own functions: a pointer-returning function reports
/// through `tsg_last_error` after a NULL, a `void` one through the fatal
/// hook (here a recording hook that returns, so the call is a no-op).
fn guard_rows(rows: &mut Vec<Row>, b: &Bystander) {
    use std::sync::atomic::{AtomicI32, Ordering::SeqCst};
    use tstate_conformance::facade::Guard as GuardFacade;
    use tstate_ffi_guard::*;
    /// A call through a view, returning its error code (0 if it succeeded).
    type ViewCall = fn(*mut View) -> i32;
    static HOOKED: AtomicI32 = AtomicI32::new(0);
    extern "C" fn record(code: c_int, _: *const std::ffi::c_char) {
        HOOKED.store(code, SeqCst);
    }
    /// NULL → the last error; a pointer → 0 (and the object is closed by
    /// `undo`, so that a wrongly granted one changes nothing after).
    fn code_of<T>(p: *mut T, undo: impl FnOnce(*mut T)) -> c_int {
        if p.is_null() {
            tsg_last_error()
        } else {
            undo(p);
            0
        }
    }
    fn hooked(f: impl FnOnce()) -> c_int {
        HOOKED.store(0, SeqCst);
        f();
        HOOKED.load(SeqCst)
    }
    let prev = tsg_set_fatal_hook(Some(record));
    let main = GuardFacade::main_interpreter().unwrap();
    let stale = stale_id();

    // nothing attached on this thread
    probe(
        rows,
        b,
        "tsg_guard_from_current",
        "not attached",
        &[E::NotAttached],
        || code_of(tsg_guard_from_current(), |p| tsg_guard_close(p)),
    );
    probe(
        rows,
        b,
        "tsg_view_from_current",
        "not attached",
        &[E::NotAttached],
        || code_of(tsg_view_from_current(), |p| tsg_view_close(p)),
    );
    probe(
        rows,
        b,
        "tsg_guard_from_view",
        "NULL",
        &[E::InvalidArgument],
        || {
            code_of(tsg_guard_from_view(std::ptr::null_mut()), |p| {
                tsg_guard_close(p)
            })
        },
    );
    probe(
        rows,
        b,
        "tsg_guard_from_view",
        "forged view",
        &[E::InvalidHandle],
        || {
            code_of(
                tsg_guard_from_view(std::ptr::without_provenance_mut(0x5a5a_0001)),
                |p| tsg_guard_close(p),
            )
        },
    );
    for (what, id) in [
        ("id 0", 0),
        ("forged id", main ^ (1 << 40)),
        ("stale id", stale),
    ] {
        let through_view: [(&str, ViewCall); 2] = [
            ("tsg_guard_from_view", |v| {
                code_of(tsg_guard_from_view(v), |p| tsg_guard_close(p))
            }),
            ("tsg_ensure_from_view", |v| {
                code_of(tsg_ensure_from_view(v), |p| tsg_release(p))
            }),
        ];
        for (name, call) in through_view {
            probe(rows, b, name, what, &[E::NoSuchInterpreter], || {
                let v = tsg_view_from_interpreter(id);
                let c = call(v);
                tsg_view_close(v);
                c
            });
        }
    }
    probe(
        rows,
        b,
        "tsg_ensure_from_view",
        "NULL",
        &[E::InvalidArgument],
        || {
            code_of(tsg_ensure_from_view(std::ptr::null_mut()), |p| {
                tsg_release(p)
            })
        },
    );
    probe(
        rows,
        b,
        "tsg_ensure_from_view",
        "closed view",
        &[E::InvalidHandle],
        || {
            let v = tsg_view_from_interpreter(main);
            tsg_view_close(v);
            code_of(tsg_ensure_from_view(v), |p| tsg_release(p))
        },
    );
    probe(rows, b, "tsg_ensure", "NULL", &[E::InvalidArgument], || {
        code_of(tsg_ensure(std::ptr::null_mut()), |p| tsg_release(p))
    });
    probe(
        rows,
        b,
        "tsg_ensure",
        "forged guard",
        &[E::InvalidHandle],
        || {
            code_of(
                tsg_ensure(std::ptr::without_provenance_mut(0x5a5a_0003)),
                |p| tsg_release(p),
            )
        },
    );
    probe(
        rows,
        b,
        "tsg_ensure",
        "closed guard",
        &[E::InvalidHandle],
        || {
            let v = tsg_view_from_interpreter(main);
            let g = tsg_guard_from_view(v);
            tsg_view_close(v);
            tsg_guard_close(g);
            code_of(tsg_ensure(g), |p| tsg_release(p))
        },
    );
    // the void functions
    probe(
        rows,
        b,
        "tsg_release",
        "NULL",
        &[E::InvalidArgument],
        || hooked(|| tsg_release(std::ptr::null_mut())),
    );
    probe(
        rows,
        b,
        "tsg_release",
        "forged token",
        &[E::InvalidHandle],
        || hooked(|| tsg_release(std::ptr::without_provenance_mut(0x5a5a_0005))),
    );
    probe(
        rows,
        b,
        "tsg_guard_close",
        "forged guard",
        &[E::InvalidHandle],
        || hooked(|| tsg_guard_close(std::ptr::without_provenance_mut(0x5a5a_0007))),
    );
    probe(
        rows,
        b,
        "tsg_guard_close",
        "double close",
        &[E::InvalidHandle],
        || {
            let v = tsg_view_from_interpreter(main);
            let g = tsg_guard_from_view(v);
            tsg_view_close(v);
            tsg_guard_close(g);
            hooked(|| tsg_guard_close(g))
        },
    );
    probe(
        rows,
        b,
        "tsg_view_close",
        "double close",
        &[E::InvalidHandle],
        || {
            let v = tsg_view_from_interpreter(main);
            tsg_view_close(v);
            hooked(|| tsg_view_close(v))
        },
    );
    probe(
        rows,
        b,
        "tsg_view_close",
        "forged view",
        &[E::InvalidHandle],
        || hooked(|| tsg_view_close(std::ptr::without_provenance_mut(0x5a5a_0009))),
    );
    // tokens: out of order, other thread, double release
    let sub = GuardFacade::create(0).unwrap();
    let (vm, vs) = (
        tsg_view_from_interpreter(main),
        tsg_view_from_interpreter(sub),
    );
    let outer = tsg_ensure_from_view(vm);
    let inner = tsg_ensure_from_view(vs);
    assert!(!outer.is_null() && !inner.is_null());
    probe(
        rows,
        b,
        "tsg_release",
        "out of order",
        &[E::OutOfOrder],
        || hooked(|| tsg_release(outer)),
    );
    let inner_raw = inner as usize;
    probe(
        rows,
        b,
        "tsg_release",
        "wrong thread",
        &[E::WrongThread],
        || {
            on_other_thread(move || {
                hooked(|| tsg_release(std::ptr::without_provenance_mut(inner_raw)))
            })
        },
    );
    tsg_release(inner);
    probe(
        rows,
        b,
        "tsg_release",
        "double release",
        &[E::InvalidHandle],
        || hooked(|| tsg_release(inner)),
    );
    tsg_release(outer);
    tsg_view_close(vs);
    tsg_view_close(vm);
    GuardFacade::finalize(sub, 1000).unwrap();
    tsg_set_fatal_hook(prev);
}

fn check(rows: &[Row], facade: &str) -> usize {
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| {
            let code_ok = match r.got {
                Ok(()) => r.want.is_empty(),
                Err(c) => r.want.iter().any(|e| e.code() == c),
            };
            !code_ok || !r.unchanged
        })
        .map(|r| {
            format!(
                "{facade}: {}({}) → {:?}, want {:?}, state unchanged: {}",
                r.function, r.input, r.got, r.want, r.unchanged
            )
        })
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    rows.len()
}

#[test]
fn every_exported_function_refuses_every_bad_input_with_its_code_and_changes_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let b = bystander();
    let mut total = 0;
    for (name, run) in [
        (
            "ensure",
            (|r, b| {
                shared_rows::<Ensure>(r, b);
                ensure_rows(r, b)
            }) as fn(&mut Vec<Row>, &Bystander),
        ),
        ("handle", |r, b| {
            shared_rows::<Handle>(r, b);
            handle_rows(r, b)
        }),
        ("activate", |r, b| {
            shared_rows::<Activate>(r, b);
            activate_rows(r, b)
        }),
        ("guard", |r, b| {
            shared_rows::<Guard>(r, b);
            guard_rows(r, b)
        }),
    ] {
        let mut rows = Vec::new();
        run(&mut rows, &b);
        total += check(&rows, name);
    }
    eprintln!("misuse matrix: {total} (function, bad input) pairs checked");
    assert!(total >= 150, "matrix shrank: {total}");
    b.stop.send(()).unwrap();
    b.done.join().unwrap();
    Ensure::finalize(b.interp, 1000).unwrap();
}

#[test]
fn a_panic_inside_any_exported_function_never_unwinds_into_c() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // the injected panics are expected: keep only their messages off the
    // output (a failing assertion still prints)
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&tstate_core::c_abi::INJECTED_PANIC) {
            default(info);
        }
    }));
    // Each call gets one injected panic; the result must be PANIC or the
    // function's documented default, and the injection must be consumed.
    fn sweep<F: Facade>() -> usize {
        let abi = F::abi();
        let main = F::main_interpreter().unwrap();
        let mut out = 0u64;
        let mut n = 0usize;
        let mut d = tstate_core::Diagnostics::default();
        // SAFETY: every call below gets valid out-pointers or NULL where allowed.
        let calls: Vec<(&str, Call)> = unsafe {
            vec![
                (
                    "main_interpreter",
                    Box::new(move || (abi.main_interpreter)(&mut out)),
                ),
                (
                    "create_interpreter",
                    Box::new(move || (abi.create_interpreter)(0, &mut out)),
                ),
                (
                    "interpreter_state",
                    Box::new(move || (abi.interpreter_state)(main)),
                ),
                ("finalize", Box::new(move || (abi.finalize)(0, 0))),
                ("finalize_all", Box::new(move || (abi.finalize_all)(0))),
                (
                    "holders",
                    Box::new(move || (abi.holders)(main, std::ptr::null_mut(), 0, &mut n)),
                ),
                ("save_thread", Box::new(move || (abi.save_thread)(&mut out))),
                ("restore_thread", Box::new(move || (abi.restore_thread)(1))),
                (
                    "work",
                    Box::new(move || (abi.work)(main, std::ptr::null_mut())),
                ),
                (
                    "work_count",
                    Box::new(move || (abi.work_count)(main, &mut out)),
                ),
                ("scratch_set", Box::new(move || (abi.scratch_set)(1))),
                ("scratch_get", Box::new(move || (abi.scratch_get)(&mut out))),
                ("diagnostics", Box::new(move || (abi.diagnostics)(&mut d))),
                (
                    "current",
                    Box::new(move || (abi.current)(std::ptr::null_mut(), std::ptr::null_mut())),
                ),
            ]
        };
        let mut count = 0;
        for (f, mut call) in calls {
            F::inject_panics(1);
            let r = call();
            assert_eq!(r, E::Panic.code(), "{}: {f} with a panic inside", F::NAME);
            count += 1;
        }
        // functions whose result is not a code: documented defaults
        F::inject_panics(1);
        assert_eq!((abi.is_attached)(main), 0);
        F::inject_panics(1);
        (abi.fail_allocations)(0, 0); // void: returns
        count += 2;
        // injection consumed: the next call is normal
        assert!(F::main_interpreter().is_ok());
        count
    }
    let mut total = sweep::<Ensure>() + sweep::<Handle>() + sweep::<Activate>() + sweep::<Guard>();
    // the design functions
    use tstate_ffi_activate::*;
    use tstate_ffi_ensure::*;
    use tstate_ffi_handle::*;
    let main = Ensure::main_interpreter().unwrap();
    let mut ts = std::ptr::null_mut();
    let mut msg = std::ptr::null();
    // SAFETY: valid or NULL-allowed pointers.
    let codes: Vec<(&str, c_int)> = unsafe {
        vec![
            ("tse_ensure_ex", {
                Ensure::inject_panics(1);
                tse_ensure_ex(main, std::ptr::null_mut())
            }),
            ("tse_ensure", {
                Ensure::inject_panics(1);
                if tse_ensure(main, &mut msg) == -1 {
                    E::Panic.code()
                } else {
                    0
                }
            }),
            ("tsh_ensure", {
                Handle::inject_panics(1);
                tsh_ensure(main, std::ptr::null_mut())
            }),
            ("tsh_release", {
                Handle::inject_panics(1);
                tsh_release(1)
            }),
            ("tsa_new", {
                Activate::inject_panics(1);
                tsa_new(main, &mut ts)
            }),
            ("tsa_activate", {
                Activate::inject_panics(1);
                tsa_activate(std::ptr::without_provenance_mut::<ThreadState>(1))
            }),
            ("tsa_deactivate", {
                Activate::inject_panics(1);
                tsa_deactivate(std::ptr::without_provenance_mut::<ThreadState>(1))
            }),
            ("tsa_delete", {
                Activate::inject_panics(1);
                tsa_delete(std::ptr::without_provenance_mut::<ThreadState>(1))
            }),
            ("tsa_get", {
                Activate::inject_panics(1);
                tsa_get(&mut ts)
            }),
            ("tsa_get_error_message", {
                Activate::inject_panics(1);
                tsa_get_error_message(0, &mut msg)
            }),
        ]
    };
    for (f, c) in codes {
        assert_eq!(c, E::Panic.code(), "{f} with a panic inside");
        total += 1;
    }
    // the guard facade: NULL and PANIC as the last error, or the hook
    {
        use tstate_conformance::facade::Guard as GuardFacade;
        use tstate_ffi_guard::*;
        let ptr_calls: Vec<(&str, NullCheck)> = vec![
            (
                "tsg_guard_from_current",
                Box::new(|| tsg_guard_from_current().is_null()),
            ),
            (
                "tsg_guard_from_view",
                Box::new(move || {
                    tsg_guard_from_view(std::ptr::without_provenance_mut(1)).is_null()
                }),
            ),
            (
                "tsg_view_from_current",
                Box::new(|| tsg_view_from_current().is_null()),
            ),
            (
                "tsg_view_from_main",
                Box::new(|| tsg_view_from_main().is_null()),
            ),
            (
                "tsg_view_from_interpreter",
                Box::new(move || tsg_view_from_interpreter(main).is_null()),
            ),
            (
                "tsg_ensure",
                Box::new(move || tsg_ensure(std::ptr::without_provenance_mut(1)).is_null()),
            ),
            (
                "tsg_ensure_from_view",
                Box::new(move || {
                    tsg_ensure_from_view(std::ptr::without_provenance_mut(1)).is_null()
                }),
            ),
        ];
        for (f, call) in ptr_calls {
            GuardFacade::inject_panics(1);
            assert!(call(), "{f} with a panic inside returned a pointer");
            assert_eq!(tsg_last_error(), E::Panic.code(), "{f} with a panic inside");
            total += 1;
        }
        static GUARD_HOOKED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
        extern "C" fn ghook(code: c_int, _: *const std::ffi::c_char) {
            GUARD_HOOKED.store(code, std::sync::atomic::Ordering::SeqCst);
        }
        let prev = tsg_set_fatal_hook(Some(ghook));
        let void_calls: Vec<(&str, VoidCall)> = vec![
            (
                "tsg_release",
                Box::new(move || tsg_release(std::ptr::without_provenance_mut(1))),
            ),
            (
                "tsg_guard_close",
                Box::new(move || tsg_guard_close(std::ptr::without_provenance_mut(1))),
            ),
            (
                "tsg_view_close",
                Box::new(move || tsg_view_close(std::ptr::without_provenance_mut(1))),
            ),
        ];
        for (f, call) in void_calls {
            GUARD_HOOKED.store(0, std::sync::atomic::Ordering::SeqCst);
            GuardFacade::inject_panics(1);
            call();
            assert_eq!(
                GUARD_HOOKED.load(std::sync::atomic::Ordering::SeqCst),
                E::Panic.code(),
                "{f} with a panic inside"
            );
            total += 1;
        }
        tsg_set_fatal_hook(prev);
    }
    // the void release reports a panic through the fatal hook
    extern "C" fn hook(code: c_int, _: *const std::ffi::c_char) {
        assert_eq!(code, E::Panic.code());
        HOOKED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    static HOOKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let prev = tse_set_fatal_hook(Some(hook));
    Ensure::inject_panics(1);
    tse_release();
    assert!(HOOKED.load(std::sync::atomic::Ordering::SeqCst));
    tse_set_fatal_hook(prev);
    total += 1;
    assert!(Ensure::current().is_none());
    let _ = std::panic::take_hook(); // back to the default hook
    eprintln!("panic sweep: {total} (facade, exported function) pairs, none unwound");
}
