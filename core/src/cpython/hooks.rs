//! Entry points CPython calls: the per-interpreter `atexit` callback that
//! closes the gate, the late per-interpreter hook (3.12+) and the
//! runtime-wide `Py_AtExit` hook that retire records once CPython has
//! finished. They sit with the other entry points (the C ABI), above the
//! span machine.

use super::CPython;
use super::ffi::{Api, METH_NOARGS, PyMethodDef, PyObject};
use crate::error::{Error, Result};
use crate::interp::Interp;
use crate::runtime::Runtime;
use crate::types::InterpreterId;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSE_GATE: PyMethodDef = PyMethodDef {
    ml_name: c"_tstate_close_gate".as_ptr(),
    ml_meth: Some(on_atexit),
    ml_flags: METH_NOARGS,
    ml_doc: c"tstate: refuse new native attaches and wait (bounded) for open spans".as_ptr(),
};

/// `Py_AtExit` accepts 32 callbacks per initialization: register ours once
/// per initialization (CPython empties the list when it runs it).
static RUNTIME_HOOK: AtomicBool = AtomicBool::new(false);

/// What a hook of one interpreter needs: its runtime and its id (one
/// runtime per facade library may hook the same interpreter). Leaked (16
/// bytes per interpreter a runtime ever registers): CPython may call the
/// hook until the process ends.
struct HookData {
    rt: &'static Runtime<CPython>,
    id: InterpreterId,
}

/// The hook data behind `p` (made by [`install`]), if any.
///
/// # Safety
/// `p` must be 0 or a pointer [`install`] leaked.
unsafe fn hook_data(p: usize) -> Option<&'static HookData> {
    // SAFETY: contract: 0 or a leaked, never freed `HookData`.
    unsafe { (p as *const HookData).as_ref() }
}

/// Installs the hooks of the just-registered interpreter `i` of the
/// runtime whose registry is `reg`.
///
/// # Safety
/// The calling thread must be attached to `i`.
pub(crate) unsafe fn install(
    a: &Api,
    reg: &std::sync::Arc<crate::registry::Registry<CPython>>,
    i: &Interp<CPython>,
) -> Result<()> {
    let rt = Runtime::<CPython>::of(reg).ok_or(Error::Unsupported)?;
    let data = Box::leak(Box::new(HookData { rt, id: i.id })) as *const HookData as usize;
    // SAFETY: attached (contract): every call runs under `i`'s GIL; each
    // new reference is released once, `PyTuple_SetItem` steals `f`.
    unsafe {
        let id_obj = (a.PyLong_FromUnsignedLongLong)(data as u64);
        if id_obj.is_null() {
            (a.PyErr_Clear)();
            return Err(Error::NoMemory);
        }
        let f = (a.PyCFunction_NewEx)(&CLOSE_GATE, id_obj, std::ptr::null_mut());
        (a.Py_DecRef)(id_obj);
        let m = (a.PyImport_ImportModule)(c"atexit".as_ptr());
        let register = if m.is_null() {
            std::ptr::null_mut()
        } else {
            (a.PyObject_GetAttrString)(m, c"register".as_ptr())
        };
        let args = (a.PyTuple_New)(1);
        let ok = if f.is_null() || register.is_null() || args.is_null() {
            if !f.is_null() {
                (a.Py_DecRef)(f);
            }
            false
        } else {
            (a.PyTuple_SetItem)(args, 0, f);
            let r = (a.PyObject_CallObject)(register, args);
            let ok = !r.is_null();
            if ok {
                (a.Py_DecRef)(r);
            }
            ok
        };
        for o in [args, register, m] {
            if !o.is_null() {
                (a.Py_DecRef)(o);
            }
        }
        if !ok {
            (a.PyErr_Clear)();
            return Err(Error::Unsupported);
        }
        let late = a.PyUnstable_AtExit.or(a._Py_AtExit);
        if let Some(late) = late {
            late(
                i.data.ptr as *mut _,
                Some(on_interpreter_cleared),
                data as *mut c_void,
            );
        }
        if i.is_main && !RUNTIME_HOOK.swap(true, Ordering::AcqRel) {
            (a.Py_AtExit)(Some(on_runtime_exit));
        }
    }
    Ok(())
}

/// The `atexit` callback (`self` is the address of the interpreter's
/// `HookData` as a Python int).
unsafe extern "C" fn on_atexit(self_: *mut PyObject, _args: *mut PyObject) -> *mut PyObject {
    let Ok(a) = super::ffi::api() else {
        return std::ptr::null_mut();
    };
    // SAFETY: called by CPython with the GIL held and `self` our int, the
    // address `install` leaked.
    let h = unsafe { hook_data((a.PyLong_AsUnsignedLongLong)(self_) as usize) };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if let Some(h) = h {
            h.rt.on_atexit(h.id);
        }
    }));
    // SAFETY: returning a new reference to None, as a PyCFunction must.
    unsafe {
        (a.Py_IncRef)(a.none);
    }
    a.none
}

/// 3.12+: runs when CPython clears the interpreter (after its atexit
/// callbacks and thread states): the record is retired.
extern "C" fn on_interpreter_cleared(data: *mut c_void) {
    // SAFETY: `data` is what `install` registered: a leaked `HookData`.
    let h = unsafe { hook_data(data as usize) };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if let Some(h) = h {
            h.rt.retire(Some(h.id));
        }
    }));
}

/// Runs at the very end of `Py_FinalizeEx`: every record is retired.
extern "C" fn on_runtime_exit() {
    RUNTIME_HOOK.store(false, Ordering::Release);
    let _ = catch_unwind(AssertUnwindSafe(|| {
        for rt in Runtime::<CPython>::all() {
            rt.retire(None);
        }
    }));
}
