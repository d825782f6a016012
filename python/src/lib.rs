//! # tstate-python — the `tstate` Python package's native module
//!
//! `tstate._tstate`, built by maturin into one abi3 wheel for CPython
//! 3.9–3.13. It links the four facades (`tstate-ffi-ensure`, `-handle`,
//! `-activate`, `-guard`) once, so a process that imports `tstate` has one
//! copy of each design's runtime, whichever extension imported it first,
//! and hands their C functions to every extension through a capsule
//! (`tstate._tstate._C_API`), as NumPy hands out its C API: an extension
//! includes `tstate_capi.h` (in `tstate.get_include()`) and calls
//! `import_tstate()` in its module init. See `docs/python.md`.
//!
//! On import into an interpreter (main or a subinterpreter; multi-phase
//! init, per-interpreter GIL declared supported on 3.12+), the module's
//! exec slot registers that interpreter with each design's runtime (its
//! `atexit` finalization gate) and adds the capsule.
//!
//! Nothing here unwinds into CPython: each function callable from Python
//! runs under `catch_unwind` and turns a panic into `RuntimeError`.

#![allow(non_snake_case)]

mod capi_table;

use capi_table::TABLE;
use pyo3_ffi::*;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use tstate_core::c_abi::{self, Facade, Global};
use tstate_core::{Backend, InterpreterId, InterpreterState, Runtime, SpanKind};

/// The capsule's name, as `PyCapsule_Import` wants it (`tstate_capi.h`
/// imports exactly this).
pub const CAPSULE_NAME: &CStr = c"tstate._tstate._C_API";

/// The table handed out in the capsule: a version and its own size, then
/// every facade's functions in the order of `tstate_capi.h`'s
/// `TstateCApi`. Append-only: a new function goes at the end and raises
/// [`capi_table::CAPI_VERSION`], so an extension built against an older
/// header works with a newer table, and `import_tstate()` refuses a table
/// older (smaller) than the header it was built with.
#[repr(C)]
pub struct Table {
    /// `TSTATE_CAPI_VERSION` of the header generated with this table.
    pub version: u32,
    /// `sizeof(TstateCApi)`: this struct's size in bytes.
    pub size: u32,
    /// The functions, as untyped pointers; `tstate_capi.h` gives each its
    /// C type (the facades' cbindgen prototypes, which come from the very
    /// functions listed here).
    pub functions: [FnPtr; capi_table::FUNCTIONS],
}

/// One function pointer of the table.
#[repr(transparent)]
pub struct FnPtr(pub *const c_void);

// SAFETY: the table is immutable and holds only addresses of functions,
// which any thread may read and call (each function states its own thread
// rules).
unsafe impl Sync for Table {}

/// Registers the interpreter the calling thread is attached to with
/// facade `F`'s runtime (its `atexit` gate); the runtime must be on
/// CPython's backend.
///
/// # Safety
/// The calling thread is attached (module exec).
unsafe fn register<F: Facade>(design: &str) -> Result<(), String> {
    match F::global() {
        // SAFETY: attached (contract).
        Global::CPython(rt) => unsafe { rt.register_attached_interpreter() }
            .map(|_| ())
            .map_err(|e| {
                format!("tstate: the {design} design could not register this interpreter: {e}")
            }),
        Global::Model(_) => Err(format!(
            "tstate: the {design} design's runtime is on the model backend \
             (is TSTATE_BACKEND=model set?); the Python package needs CPython's"
        )),
        Global::Unavailable => Err(format!(
            "tstate: the {design} design found no usable libpython (CPython 3.9+) in this process"
        )),
    }
}

/// Raises `exc` with `msg` (a Rust string; interior NULs are replaced).
///
/// # Safety
/// The caller is attached to an interpreter (holds its GIL).
unsafe fn raise(exc: *mut PyObject, msg: &str) {
    let c = std::ffi::CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: attached (caller's contract); `c` outlives the call, which
    // copies it.
    unsafe { PyErr_SetString(exc, c.as_ptr()) };
}

/// Runs `f`, turning a panic into `RuntimeError` and a NULL result.
///
/// # Safety
/// The caller is attached to an interpreter.
unsafe fn py_boundary(f: impl FnOnce() -> *mut PyObject) -> *mut PyObject {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(p) => p,
        Err(_) => {
            // SAFETY: attached (caller's contract).
            unsafe { raise(PyExc_RuntimeError, "tstate: internal panic (a bug)") };
            ptr::null_mut()
        }
    }
}

/// The exec slot: registers the importing interpreter with every design's
/// runtime and adds the capsule and the constants. 0, or -1 with
/// `ImportError` set.
unsafe extern "C" fn exec(module: *mut PyObject) -> c_int {
    let r = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: CPython calls exec with the importing thread attached.
        unsafe { exec_inner(module) }
    }));
    match r {
        Ok(Ok(())) => 0,
        Ok(Err(msg)) => {
            // SAFETY: attached (exec's contract).
            unsafe { raise(PyExc_ImportError, &msg) };
            -1
        }
        Err(_) => {
            // SAFETY: attached (exec's contract).
            unsafe { raise(PyExc_ImportError, "tstate: internal panic in module exec") };
            -1
        }
    }
}

/// # Safety
/// The caller is attached to the importing interpreter; `module` is the
/// module object being executed.
unsafe fn exec_inner(module: *mut PyObject) -> Result<(), String> {
    // SAFETY: attached (contract).
    unsafe {
        register::<tstate_ffi_ensure::ThisFacade>("ensure")?;
        register::<tstate_ffi_handle::ThisFacade>("handle")?;
        register::<tstate_ffi_activate::ThisFacade>("activate")?;
        register::<tstate_ffi_guard::ThisFacade>("guard")?;
    }
    let table: *const Table = &TABLE;
    // SAFETY: attached; the name is a static C string; the table is a
    // static that lives for the process and is never written.
    let capsule = unsafe { PyCapsule_New(table.cast_mut().cast(), CAPSULE_NAME.as_ptr(), None) };
    if capsule.is_null() {
        return Err("tstate: PyCapsule_New failed".into());
    }
    // SAFETY: attached; `module` is a module; PyModule_AddObject steals
    // the reference on success only, so it is dropped on failure.
    unsafe {
        if PyModule_AddObject(module, c"_C_API".as_ptr(), capsule) != 0 {
            Py_DecRef(capsule);
            return Err("tstate: adding _C_API failed".into());
        }
        let version = concat!(env!("CARGO_PKG_VERSION"), "\0");
        if PyModule_AddStringConstant(module, c"__version__".as_ptr(), version.as_ptr().cast()) != 0
            || PyModule_AddIntConstant(
                module,
                c"CAPI_VERSION".as_ptr(),
                capi_table::CAPI_VERSION.into(),
            ) != 0
        {
            return Err("tstate: adding the module's constants failed".into());
        }
    }
    Ok(())
}

fn message(rc: c_int) -> &'static str {
    // SAFETY: error_message returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(c_abi::error_message(rc)) }
        .to_str()
        .unwrap_or("?")
}

/// A JSON string literal of `s`.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One design's runtime as JSON (see `diagnostics_json`).
fn runtime_json<B: Backend>(
    out: &mut String,
    rt: &Runtime<B>,
    main: Option<InterpreterId>,
    exit_bound_ms: Option<u128>,
) {
    let d = rt.diagnostics();
    out.push_str("{\"backend\":");
    json_str(out, rt.backend_kind().name());
    match exit_bound_ms {
        Some(ms) => {
            let _ = write!(out, ",\"exit_bound_ms\":{ms}");
        }
        None => out.push_str(",\"exit_bound_ms\":null"),
    }
    let _ = write!(
        out,
        ",\"counters\":{{\"interpreters\":{},\"thread_states\":{},\"open_holds\":{},\
         \"finalized\":{},\"finalize_timeouts\":{},\"exit_cleanups\":{},\
         \"exit_spans_closed\":{},\"exit_thread_states_freed\":{},\
         \"orphaned_thread_states\":{},\"exclusion_violations\":{},\
         \"work_after_finalize\":{}}}",
        d.interpreters,
        d.thread_states,
        d.open_holds,
        d.finalized,
        d.finalize_timeouts,
        d.exit_cleanups,
        d.exit_spans_closed,
        d.exit_thread_states_freed,
        d.orphaned_thread_states,
        d.exclusion_violations,
        d.work_after_finalize
    );
    out.push_str(",\"interpreters\":[");
    for (n, id) in rt.interpreters().into_iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let state = match rt.interpreter_state(id) {
            Ok(InterpreterState::Running) => "running",
            Ok(InterpreterState::Finalizing) => "finalizing",
            Err(_) => "gone",
        };
        let _ = write!(
            out,
            "{{\"id\":{},\"main\":{},\"state\":",
            id.as_raw(),
            main == Some(id)
        );
        json_str(out, state);
        out.push_str(",\"holders\":[");
        for (k, h) in rt.holders(id).unwrap_or_default().into_iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"thread_number\":{},\"os_thread_id\":{},\"kind\":",
                h.thread_number, h.os_thread_id
            );
            json_str(
                out,
                match h.kind {
                    SpanKind::Ensure => "ensure",
                    SpanKind::Activate => "activate",
                    SpanKind::Guard => "guard",
                },
            );
            out.push_str(",\"thread_name\":");
            match &h.thread_name {
                Some(name) => json_str(out, name),
                None => out.push_str("null"),
            }
            let _ = write!(
                out,
                ",\"spans\":{},\"held_for_us\":{}}}",
                h.spans,
                h.held_for.as_micros()
            );
        }
        out.push_str("]}");
    }
    out.push_str("]}");
}

/// The diagnostics of every design's runtime as one JSON object.
fn diagnostics_json() -> String {
    fn one<F: Facade>(out: &mut String) {
        match F::global() {
            Global::Model(rt) => runtime_json(out, rt, rt.main_interpreter().ok(), None),
            Global::CPython(rt) => runtime_json(
                out,
                *rt,
                rt.main_interpreter().ok(),
                Some(rt.exit_bound().as_millis()),
            ),
            Global::Unavailable => out.push_str("null"),
        }
    }
    type Writer = fn(&mut String);
    let designs: [(&str, Writer); 4] = [
        ("ensure", one::<tstate_ffi_ensure::ThisFacade>),
        ("handle", one::<tstate_ffi_handle::ThisFacade>),
        ("activate", one::<tstate_ffi_activate::ThisFacade>),
        ("guard", one::<tstate_ffi_guard::ThisFacade>),
    ];
    let mut out = String::from("{");
    for (n, (name, write)) in designs.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        json_str(&mut out, name);
        out.push(':');
        write(&mut out);
    }
    out.push('}');
    out
}

/// `_tstate.diagnostics_json()`: see [`diagnostics_json`].
unsafe extern "C" fn py_diagnostics_json(
    _m: *mut PyObject,
    _unused: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: CPython calls a METH_NOARGS function attached.
    unsafe {
        py_boundary(|| {
            let s = diagnostics_json();
            // SAFETY: attached; `s` is valid UTF-8 of the given length.
            PyUnicode_FromStringAndSize(s.as_ptr().cast::<c_char>(), s.len() as Py_ssize_t)
        })
    }
}

/// `_tstate.set_exit_bound(ms)`: the bound, in milliseconds, on how long a
/// finalization CPython starts waits for open spans, for every design
/// (negative: the default, 5,000, as each facade's `*_set_exit_bound`
/// treats it). Returns None.
unsafe extern "C" fn py_set_exit_bound(_m: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls a METH_O function attached, `arg` borrowed.
    unsafe {
        py_boundary(|| {
            // SAFETY: attached; `arg` is a live object.
            let ms = PyLong_AsLongLong(arg);
            if ms == -1 && !PyErr_Occurred().is_null() {
                return ptr::null_mut();
            }
            for set in [
                tstate_ffi_ensure::tse_set_exit_bound,
                tstate_ffi_handle::tsh_set_exit_bound,
                tstate_ffi_activate::tsa_set_exit_bound,
                tstate_ffi_guard::tsg_set_exit_bound,
            ] {
                let rc = set(ms);
                if rc != 0 {
                    raise(
                        PyExc_RuntimeError,
                        &format!("tstate: set_exit_bound: {}", message(rc)),
                    );
                    return ptr::null_mut();
                }
            }
            Py_IncRef(Py_None());
            Py_None()
        })
    }
}

static mut METHODS: [PyMethodDef; 3] = [
    PyMethodDef {
        ml_name: c"diagnostics_json".as_ptr(),
        ml_meth: PyMethodDefPointer {
            PyCFunction: py_diagnostics_json,
        },
        ml_flags: METH_NOARGS,
        ml_doc: c"diagnostics_json() -> str: every design's runtime (interpreters, holders, counters, exit bound) as JSON".as_ptr(),
    },
    PyMethodDef {
        ml_name: c"set_exit_bound".as_ptr(),
        ml_meth: PyMethodDefPointer {
            PyCFunction: py_set_exit_bound,
        },
        ml_flags: METH_O,
        ml_doc: c"set_exit_bound(ms: int): how long a finalization CPython starts waits for open spans (negative: 5000)".as_ptr(),
    },
    PyMethodDef::zeroed(),
];

/// `Py_mod_multiple_interpreters` and its value
/// `Py_MOD_PER_INTERPRETER_GIL_SUPPORTED` (CPython 3.12+; not in the 3.9
/// limited API, so spelled here and offered only to 3.12+).
const PY_MOD_MULTIPLE_INTERPRETERS: c_int = 3;
const PY_MOD_PER_INTERPRETER_GIL_SUPPORTED: usize = 2;

static mut SLOTS_39: [PyModuleDef_Slot; 2] = [
    PyModuleDef_Slot {
        slot: Py_mod_exec,
        value: exec as *mut c_void,
    },
    PyModuleDef_Slot {
        slot: 0,
        value: ptr::null_mut(),
    },
];

static mut SLOTS_312: [PyModuleDef_Slot; 3] = [
    PyModuleDef_Slot {
        slot: Py_mod_exec,
        value: exec as *mut c_void,
    },
    PyModuleDef_Slot {
        slot: PY_MOD_MULTIPLE_INTERPRETERS,
        value: PY_MOD_PER_INTERPRETER_GIL_SUPPORTED as *mut c_void,
    },
    PyModuleDef_Slot {
        slot: 0,
        value: ptr::null_mut(),
    },
];

const DOC: &CStr = c"tstate's native module: one runtime per process for the four designs, their C API in the capsule _C_API (see tstate_capi.h)";

/// The module's definition with `slots`.
const fn module_def(slots: *mut PyModuleDef_Slot) -> PyModuleDef {
    PyModuleDef {
        m_base: PyModuleDef_HEAD_INIT,
        m_name: c"tstate._tstate".as_ptr(),
        m_doc: DOC.as_ptr(),
        m_size: 0,
        m_methods: (&raw mut METHODS).cast(),
        m_slots: slots,
        m_traverse: None,
        m_clear: None,
        m_free: None,
    }
}

static mut DEF_39: PyModuleDef = module_def((&raw mut SLOTS_39).cast());
static mut DEF_312: PyModuleDef = module_def((&raw mut SLOTS_312).cast());

/// The module's init function (multi-phase: returns the definition; CPython
/// runs [`exec`] for each interpreter that imports the module).
///
/// # Safety
/// Called by CPython's import machinery, attached.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyInit__tstate() -> *mut PyObject {
    let per_interpreter_gil = tstate_core::cpython::ffi::api()
        .map(|a| a.version >= (3, 12))
        .unwrap_or(false);
    // SAFETY: attached; the definitions are statics CPython initializes in
    // place (as it does a C extension's static PyModuleDef).
    unsafe {
        if per_interpreter_gil {
            PyModuleDef_Init(&raw mut DEF_312)
        } else {
            PyModuleDef_Init(&raw mut DEF_39)
        }
    }
}
