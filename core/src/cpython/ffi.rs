//! The libpython functions the CPython backend calls, resolved at run time.
//!
//! Our own minimal declarations, not `pyo3-ffi`: the backend calls about
//! forty functions and no struct field, and resolving them with
//! `dlsym(RTLD_DEFAULT, …)` when the backend starts means one build of a
//! facade works with whichever CPython 3.9–3.13 the process has — linked by
//! an embedder, loaded as the interpreter of an extension module, or
//! `dlopen`ed by the test harness — with no link-time dependency on
//! libpython and no build-time choice of version (`pyo3-ffi` selects a
//! version when it is built, through `PYO3_PYTHON`). Functions that exist
//! only in some versions are optional here and the backend checks the
//! version (see `docs/cpython-backend.md`).
//!
//! Every function pointer below has the C signature of CPython's
//! declaration of that name, the same in 3.9–3.13.

use std::ffi::{CStr, c_char, c_int, c_long, c_ulonglong, c_void};
use std::sync::OnceLock;

/// `PyObject` (opaque).
pub type PyObject = c_void;
/// `PyThreadState` (opaque: no field is read).
pub type PyThreadState = c_void;
/// `PyInterpreterState` (opaque).
pub type PyInterpreterState = c_void;

/// `PyCFunction`.
pub type PyCFunction = unsafe extern "C" fn(*mut PyObject, *mut PyObject) -> *mut PyObject;

/// `PyMethodDef` (its layout is part of the stable ABI).
#[repr(C)]
pub struct PyMethodDef {
    /// Name.
    pub ml_name: *const c_char,
    /// Function.
    pub ml_meth: Option<PyCFunction>,
    /// `METH_*` flags.
    pub ml_flags: c_int,
    /// Docstring.
    pub ml_doc: *const c_char,
}

// SAFETY: a method table is immutable after initialization; the pointers
// are to static strings and functions.
unsafe impl Sync for PyMethodDef {}

/// `METH_NOARGS`.
pub const METH_NOARGS: c_int = 0x0004;

/// `PyInterpreterConfig` (3.12 and 3.13 have the same seven `int`s).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PyInterpreterConfig {
    /// `use_main_obmalloc`.
    pub use_main_obmalloc: c_int,
    /// `allow_fork`.
    pub allow_fork: c_int,
    /// `allow_exec`.
    pub allow_exec: c_int,
    /// `allow_threads`.
    pub allow_threads: c_int,
    /// `allow_daemon_threads`.
    pub allow_daemon_threads: c_int,
    /// `check_multi_interp_extensions`.
    pub check_multi_interp_extensions: c_int,
    /// `gil`: 2 = `PyInterpreterConfig_OWN_GIL`.
    pub gil: c_int,
}

/// `_PyInterpreterConfig_INIT`: an isolated interpreter with its own GIL.
pub const ISOLATED_OWN_GIL: PyInterpreterConfig = PyInterpreterConfig {
    use_main_obmalloc: 0,
    allow_fork: 0,
    allow_exec: 0,
    allow_threads: 1,
    allow_daemon_threads: 0,
    check_multi_interp_extensions: 1,
    gil: 2,
};

/// `PyStatus`.
#[repr(C)]
pub struct PyStatus {
    /// 0 ok, 1 error, 2 exit.
    pub kind: c_int,
    /// Function name.
    pub func: *const c_char,
    /// Message.
    pub err_msg: *const c_char,
    /// Exit code.
    pub exitcode: c_int,
}

/// `PyGILState_STATE`.
pub type PyGILStateState = c_int;

macro_rules! api {
    (required { $( $(#[$m:meta])* $name:ident : fn($($arg:ty),*) $(-> $ret:ty)? ;)* }
     optional { $( $(#[$om:meta])* $oname:ident : fn($($oarg:ty),*) $(-> $oret:ty)? ;)* }) => {
        /// The resolved functions.
        #[allow(non_snake_case, missing_docs)]
        pub struct Api {
            /// `(major, minor)` of the running CPython.
            pub version: (u32, u32),
            /// The full version string (`Py_GetVersion()`), up to the first space.
            pub version_string: String,
            /// `&_Py_NoneStruct`.
            pub none: *mut PyObject,
            $( $(#[$m])* pub $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?, )*
            $( $(#[$om])* pub $oname: Option<unsafe extern "C" fn($($oarg),*) $(-> $oret)?>, )*
        }

        impl Api {
            /// Resolves every function in the process's global scope.
            fn resolve() -> Result<Api, String> {
                let get_version: unsafe extern "C" fn() -> *const c_char =
                    // SAFETY: Py_GetVersion has this signature in every version.
                    unsafe { std::mem::transmute(sym(c"Py_GetVersion").ok_or("no libpython in this process (Py_GetVersion not found)")?) };
                // SAFETY: returns a static NUL-terminated string.
                let full = unsafe { CStr::from_ptr(get_version()) }.to_string_lossy().into_owned();
                let vs = full.split_whitespace().next().unwrap_or("").to_string();
                let mut it = vs.split('.').map(|p| p.trim_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().unwrap_or(0));
                let version = (it.next().unwrap_or(0), it.next().unwrap_or(0));
                let none = sym(c"_Py_NoneStruct").ok_or("_Py_NoneStruct not found")? as *mut PyObject;
                Ok(Api {
                    version,
                    version_string: vs,
                    none,
                    $( $name: {
                        let p = sym(concat_cstr!($name)).ok_or(concat!(stringify!($name), " not found"))?;
                        // SAFETY: the symbol is CPython's function of that
                        // name, whose C signature is the declared one.
                        unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) $(-> $ret)?>(p) }
                    }, )*
                    $( $oname: sym(concat_cstr!($oname)).map(|p| {
                        // SAFETY: as above.
                        unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($oarg),*) $(-> $oret)?>(p) }
                    }), )*
                })
            }
        }
    };
}

macro_rules! concat_cstr {
    ($name:ident) => {
        // SAFETY-free: a string literal with a NUL appended is a valid CStr.
        match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
            Ok(c) => c,
            Err(_) => c"",
        }
    };
}

api! {
  required {
    Py_IsInitialized: fn() -> c_int;
    Py_InitializeEx: fn(c_int);
    Py_FinalizeEx: fn() -> c_int;
    Py_NewInterpreter: fn() -> *mut PyThreadState;
    Py_EndInterpreter: fn(*mut PyThreadState);
    Py_AtExit: fn(Option<extern "C" fn()>) -> c_int;
    PyThreadState_New: fn(*mut PyInterpreterState) -> *mut PyThreadState;
    PyThreadState_Clear: fn(*mut PyThreadState);
    PyThreadState_Delete: fn(*mut PyThreadState);
    PyThreadState_DeleteCurrent: fn();
    PyThreadState_Swap: fn(*mut PyThreadState) -> *mut PyThreadState;
    PyThreadState_GetInterpreter: fn(*mut PyThreadState) -> *mut PyInterpreterState;
    PyThreadState_GetDict: fn() -> *mut PyObject;
    PyEval_SaveThread: fn() -> *mut PyThreadState;
    PyEval_RestoreThread: fn(*mut PyThreadState);
    PyGILState_GetThisThreadState: fn() -> *mut PyThreadState;
    PyGILState_Ensure: fn() -> PyGILStateState;
    PyGILState_Release: fn(PyGILStateState);
    PyGILState_Check: fn() -> c_int;
    PyInterpreterState_Main: fn() -> *mut PyInterpreterState;
    PyInterpreterState_GetID: fn(*mut PyInterpreterState) -> i64;
    PyLong_FromLong: fn(c_long) -> *mut PyObject;
    PyLong_FromUnsignedLongLong: fn(c_ulonglong) -> *mut PyObject;
    PyLong_AsUnsignedLongLong: fn(*mut PyObject) -> c_ulonglong;
    Py_IncRef: fn(*mut PyObject);
    Py_DecRef: fn(*mut PyObject);
    PyErr_Clear: fn();
    PyErr_Occurred: fn() -> *mut PyObject;
    PyErr_Print: fn();
    PyDict_Clear: fn(*mut PyObject);
    PyDict_SetItemString: fn(*mut PyObject, *const c_char, *mut PyObject) -> c_int;
    PyDict_GetItemString: fn(*mut PyObject, *const c_char) -> *mut PyObject;
    PyImport_ImportModule: fn(*const c_char) -> *mut PyObject;
    PyObject_GetAttrString: fn(*mut PyObject, *const c_char) -> *mut PyObject;
    PyObject_CallObject: fn(*mut PyObject, *mut PyObject) -> *mut PyObject;
    PyTuple_New: fn(isize) -> *mut PyObject;
    PyTuple_SetItem: fn(*mut PyObject, isize, *mut PyObject) -> c_int;
    PyCFunction_NewEx: fn(*const PyMethodDef, *mut PyObject, *mut PyObject) -> *mut PyObject;
    PyRun_SimpleString: fn(*const c_char) -> c_int;
  }
  optional {
    /// 3.13+: this thread's attached thread state (thread-local).
    PyThreadState_GetUnchecked: fn() -> *mut PyThreadState;
    /// ≤ 3.12: 3.9–3.11 return the runtime-wide GIL holder, 3.12 the
    /// thread-local one.
    _PyThreadState_UncheckedGet: fn() -> *mut PyThreadState;
    /// 3.12+.
    Py_NewInterpreterFromConfig: fn(*mut *mut PyThreadState, *const PyInterpreterConfig) -> PyStatus;
    /// 3.13+ (3.12: `_Py_AtExit`): a per-interpreter hook run when the
    /// interpreter is cleared, after its atexit callbacks.
    PyUnstable_AtExit: fn(*mut PyInterpreterState, Option<extern "C" fn(*mut c_void)>, *mut c_void) -> c_int;
    _Py_AtExit: fn(*mut PyInterpreterState, Option<extern "C" fn(*mut c_void)>, *mut c_void) -> c_int;
  }
}

// SAFETY: the table is immutable after resolution; the pointers are to
// libpython's functions and its None object, valid for the process.
unsafe impl Send for Api {}
// SAFETY: as above.
unsafe impl Sync for Api {}

fn sym(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: `name` is NUL-terminated; RTLD_DEFAULT searches the global
    // scope and returns NULL when the symbol is absent.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

impl Api {
    /// The attached thread state of the calling thread (3.13:
    /// `PyThreadState_GetUnchecked`, else `_PyThreadState_UncheckedGet`;
    /// on 3.9–3.11 that is the runtime-wide GIL holder, which equals this
    /// thread's thread state exactly when this thread holds the GIL with it).
    ///
    /// # Safety
    /// CPython must be loaded (it is, for an `Api` to exist).
    pub unsafe fn current(&self) -> *mut PyThreadState {
        match (
            self.PyThreadState_GetUnchecked,
            self._PyThreadState_UncheckedGet,
        ) {
            // SAFETY: both take no argument and only read CPython's state.
            (Some(f), _) => unsafe { f() },
            // SAFETY: as above.
            (None, Some(f)) => unsafe { f() },
            (None, None) => std::ptr::null_mut(),
        }
    }

    /// The function [`current`](Self::current) calls (for a header's
    /// inline path, which calls it itself: `thread::InlineState`).
    pub fn current_fn(&self) -> Option<unsafe extern "C" fn() -> *mut PyThreadState> {
        self.PyThreadState_GetUnchecked
            .or(self._PyThreadState_UncheckedGet)
    }

    /// Whether `current` reads this thread's own attached thread state
    /// (3.12+) rather than the runtime-wide GIL holder (3.9–3.11).
    pub fn current_is_thread_local(&self) -> bool {
        self.version >= (3, 12)
    }
}

/// Whether a libpython is present in the process (without resolving).
pub fn present() -> bool {
    sym(c"Py_IsInitialized").is_some()
}

/// The resolved table, or why there is none.
pub fn api() -> Result<&'static Api, &'static str> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    match API.get_or_init(Api::resolve) {
        Ok(a) => Ok(a),
        Err(e) => Err(e.as_str()),
    }
}
