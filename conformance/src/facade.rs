//! The [`Facade`] trait: what the suite needs from a design, implemented
//! for each facade by calling that facade's exported `extern "C"`
//! functions — so the C ABI path is what is tested, not a Rust shortcut.

use std::cell::Cell;
use std::ffi::{CStr, c_int};
use tstate_core::Diagnostics;
use tstate_core::c_abi::{CHolder, SharedAbi};

/// A negative error code from a facade.
pub type Code = c_int;

/// Turns a C return value into a Result.
pub fn rc(r: c_int) -> Result<c_int, Code> {
    if r < 0 { Err(r) } else { Ok(r) }
}

/// What the suite drives: one design's way to enter and leave an
/// interpreter from an arbitrary native context, its capabilities, and the
/// shared runtime functions of its header.
pub trait Facade: 'static {
    /// Short name (`ensure`, `handle`, `activate`).
    const NAME: &'static str;
    /// The design, in words.
    const TITLE: &'static str;
    /// Release names the span it releases (a handle or a thread state), so a
    /// double, forged or out-of-order release can be told apart from a
    /// legitimate release of an enclosing span.
    const RELEASE_NAMES_SPAN: bool;
    /// The design has an explicit thread-state lifecycle (new/delete).
    const EXPLICIT_LIFECYCLE: bool;
    /// Release returns its error to the caller (otherwise: a `void` release
    /// reporting misuse through the fatal-error hook).
    const RELEASE_RETURNS_CODE: bool;
    /// How a holder report names a thread inside this design's span
    /// (`Holder.kind`: 0 ensure, 1 activate, 2 a guard).
    const HOLDER_KIND: u32 = 0;

    /// What a successful enter gives back, to pass to [`leave`](Self::leave).
    type Span: Copy + std::fmt::Debug + Send + 'static;

    /// The design's idiom for "call into `interp` from wherever I am".
    fn enter(interp: u64) -> Result<Self::Span, Code>;
    /// Undo `span`.
    fn leave(span: Self::Span) -> Result<(), Code>;
    /// The design's "release" with nothing entered on this thread.
    fn release_nothing() -> Result<(), Code>;
    /// A span value this design never issued, if the design can express
    /// one (a forged handle).
    fn forged_span() -> Option<Self::Span>;
    /// Every exported function of the design that takes a pointer, called
    /// with NULL: `(function, code)`.
    fn null_pointer_probes() -> Vec<(&'static str, Code)>;
    /// The facade's shared functions.
    fn abi() -> &'static SharedAbi;
    /// The explicit thread-state lifecycle, for designs that have one.
    fn lifecycle() -> Option<Lifecycle> {
        None
    }
    /// Guards and views, for the guard design (PEP 788).
    fn guards() -> Option<GuardOps> {
        None
    }
}

/// The guard design's guards, views and tokens, as raw pointer values.
#[derive(Clone, Copy)]
pub struct GuardOps {
    /// A view of an interpreter id.
    pub view_for: fn(u64) -> Result<usize, Code>,
    /// A view of main.
    pub view_from_main: fn() -> Result<usize, Code>,
    /// Close a view.
    pub view_close: fn(usize) -> Result<(), Code>,
    /// A guard from a view.
    pub guard_from_view: fn(usize) -> Result<usize, Code>,
    /// A guard on the attached interpreter.
    pub guard_from_current: fn() -> Result<usize, Code>,
    /// Close a guard.
    pub guard_close: fn(usize) -> Result<(), Code>,
    /// `Ensure(guard)` → token.
    pub ensure: fn(usize) -> Result<usize, Code>,
    /// `EnsureFromView(view)` → token.
    pub ensure_from_view: fn(usize) -> Result<usize, Code>,
    /// `Release(token)`.
    pub release: fn(usize) -> Result<(), Code>,
}

/// The explicit-lifecycle functions, with thread states as raw handles.
#[derive(Clone, Copy)]
pub struct Lifecycle {
    /// `New(interp) -> ts`.
    pub new: fn(u64) -> Result<usize, Code>,
    /// `Activate(ts)`.
    pub activate: fn(usize) -> Result<(), Code>,
    /// `Deactivate(ts)`.
    pub deactivate: fn(usize) -> Result<(), Code>,
    /// `Delete(ts)`.
    pub delete: fn(usize) -> Result<(), Code>,
}

/// Convenience wrappers over [`SharedAbi`] (the shared part of every header).
pub trait Shared: Facade {
    /// `*_initialize`.
    fn initialize() -> Result<(), Code> {
        rc((Self::abi().initialize)()).map(|_| ())
    }
    /// `*_backend_info`.
    fn backend_info() -> tstate_core::c_abi::CBackendInfo {
        let mut b = tstate_core::c_abi::CBackendInfo::default();
        // SAFETY: valid out-pointer.
        let r = unsafe { (Self::abi().backend_info)(&mut b) };
        assert_eq!(r, 0, "backend_info");
        b
    }
    /// Whether the backend can create a subinterpreter with `mode`.
    fn supports(mode: u32) -> bool {
        Self::backend_info().lock_modes & (1 << mode) != 0
    }
    /// `*_main_interpreter`.
    fn main_interpreter() -> Result<u64, Code> {
        let mut v = 0;
        // SAFETY: valid out-pointer.
        rc(unsafe { (Self::abi().main_interpreter)(&mut v) })?;
        Ok(v)
    }
    /// `*_create_interpreter`.
    fn create(mode: u32) -> Result<u64, Code> {
        let mut v = 0;
        // SAFETY: valid out-pointer.
        rc(unsafe { (Self::abi().create_interpreter)(mode, &mut v) })?;
        Ok(v)
    }
    /// `*_interpreter_state`: 0 running, 1 finalizing, or a code.
    fn state(interp: u64) -> c_int {
        (Self::abi().interpreter_state)(interp)
    }
    /// `*_finalize`.
    fn finalize(interp: u64, timeout_ms: i64) -> Result<(), Code> {
        rc((Self::abi().finalize)(interp, timeout_ms)).map(|_| ())
    }
    /// `*_holders`.
    fn holders(interp: u64) -> Result<Vec<CHolder>, Code> {
        let mut buf = [CHolder::default(); 16];
        let mut n = 0usize;
        // SAFETY: buf has 16 slots; n is a valid out-pointer.
        rc(unsafe { (Self::abi().holders)(interp, buf.as_mut_ptr(), buf.len(), &mut n) })?;
        Ok(buf[..n.min(16)].to_vec())
    }
    /// `*_save_thread`.
    fn save() -> Result<u64, Code> {
        let mut v = 0;
        // SAFETY: valid out-pointer.
        rc(unsafe { (Self::abi().save_thread)(&mut v) })?;
        Ok(v)
    }
    /// `*_restore_thread`.
    fn restore(ts: u64) -> Result<(), Code> {
        rc((Self::abi().restore_thread)(ts)).map(|_| ())
    }
    /// `*_work`.
    fn work(interp: u64) -> Result<u64, Code> {
        let mut v = 0;
        // SAFETY: valid out-pointer.
        rc(unsafe { (Self::abi().work)(interp, &mut v) })?;
        Ok(v)
    }
    /// `*_work_count`.
    fn work_count(interp: u64) -> Result<u64, Code> {
        let mut v = 0;
        // SAFETY: valid out-pointer.
        rc(unsafe { (Self::abi().work_count)(interp, &mut v) })?;
        Ok(v)
    }
    /// `*_is_attached`.
    fn is_attached(interp: u64) -> bool {
        (Self::abi().is_attached)(interp) == 1
    }
    /// `*_current`: (thread state, interpreter).
    fn current() -> Option<(u64, u64)> {
        let (mut t, mut i) = (0, 0);
        // SAFETY: valid out-pointers.
        let r = unsafe { (Self::abi().current)(&mut t, &mut i) };
        (r == 1).then_some((t, i))
    }
    /// `*_error_message`.
    fn message(code: c_int) -> String {
        let p = (Self::abi().error_message)(code);
        assert!(!p.is_null(), "error_message returned NULL");
        // SAFETY: documented: a static NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
    /// `*_scratch_set`.
    fn scratch_set(v: u64) -> Result<(), Code> {
        rc((Self::abi().scratch_set)(v)).map(|_| ())
    }
    /// `*_scratch_get`.
    fn scratch_get() -> Result<u64, Code> {
        let mut v = 0;
        // SAFETY: valid out-pointer.
        rc(unsafe { (Self::abi().scratch_get)(&mut v) })?;
        Ok(v)
    }
    /// `*_fail_allocations`.
    fn fail_allocations(skip: u32, fail: u32) {
        (Self::abi().fail_allocations)(skip, fail)
    }
    /// `*_inject_panics`.
    fn inject_panics(n: u32) {
        (Self::abi().inject_panics)(n)
    }
    /// `*_diagnostics`.
    fn diagnostics() -> Diagnostics {
        let mut d = Diagnostics::default();
        // SAFETY: valid out-pointer.
        let r = unsafe { (Self::abi().diagnostics)(&mut d) };
        assert_eq!(r, 0);
        d
    }
}

impl<F: Facade> Shared for F {}

// ----- ffi-ensure -----------------------------------------------------------

thread_local! {
    /// Last code the ensure facade's fatal-error hook received on this
    /// thread (0 = none). The hook runs on the thread that misused release.
    static HOOK_CODE: Cell<c_int> = const { Cell::new(0) };
}

extern "C" fn record_hook(code: c_int, _msg: *const std::ffi::c_char) {
    HOOK_CODE.with(|c| c.set(code));
}

/// Calls a `void` function whose misuse goes to a fatal-error hook that
/// `install` replaced (once) with the recorder: `Err(code)` if the hook ran.
fn via_hook(install: &std::sync::Once, set: fn(), call: impl FnOnce()) -> Result<(), Code> {
    install.call_once(set);
    HOOK_CODE.with(|c| c.set(0));
    call();
    match HOOK_CODE.with(|c| c.replace(0)) {
        0 => Ok(()),
        c => Err(c),
    }
}

/// The thread-stored design (`tstate-ffi-ensure`).
pub struct Ensure;

impl Facade for Ensure {
    const NAME: &'static str = "ensure";
    const TITLE: &'static str = "thread-stored Ensure/Release";
    const RELEASE_NAMES_SPAN: bool = false;
    const EXPLICIT_LIFECYCLE: bool = false;
    const RELEASE_RETURNS_CODE: bool = false;
    type Span = ();

    fn enter(interp: u64) -> Result<(), Code> {
        // SAFETY: NULL err is allowed.
        rc(unsafe { tstate_ffi_ensure::tse_ensure_ex(interp, std::ptr::null_mut()) }).map(|_| ())
    }
    fn leave(_: ()) -> Result<(), Code> {
        // `tse_release` is void: its misuse goes to the fatal-error hook,
        // which the suite replaces, once, with a recorder (instead of abort).
        static RECORDER: std::sync::Once = std::sync::Once::new();
        via_hook(
            &RECORDER,
            || {
                tstate_ffi_ensure::tse_set_fatal_hook(Some(record_hook));
            },
            || tstate_ffi_ensure::tse_release(),
        )
    }
    fn release_nothing() -> Result<(), Code> {
        Self::leave(())
    }
    fn forged_span() -> Option<()> {
        None
    }
    fn null_pointer_probes() -> Vec<(&'static str, Code)> {
        // tse_ensure's errmsg and tse_ensure_ex's err are optional (NULL
        // means "not wanted"), so the design's own pointer arguments accept
        // NULL by contract; the shared functions are probed separately.
        Vec::new()
    }
    fn abi() -> &'static SharedAbi {
        &tstate_ffi_ensure::SHARED_ABI
    }
}

// ----- ffi-handle -----------------------------------------------------------

/// The int-handle design (`tstate-ffi-handle`).
pub struct Handle;

impl Facade for Handle {
    const NAME: &'static str = "handle";
    const TITLE: &'static str = "int-handle Ensure/Release";
    const RELEASE_NAMES_SPAN: bool = true;
    const EXPLICIT_LIFECYCLE: bool = false;
    const RELEASE_RETURNS_CODE: bool = true;
    type Span = c_int;

    fn enter(interp: u64) -> Result<c_int, Code> {
        // SAFETY: NULL errmsg is allowed.
        rc(unsafe { tstate_ffi_handle::tsh_ensure(interp, std::ptr::null_mut()) })
    }
    fn leave(h: c_int) -> Result<(), Code> {
        rc(tstate_ffi_handle::tsh_release(h)).map(|_| ())
    }
    fn release_nothing() -> Result<(), Code> {
        // the only handle a caller with nothing ensured could pass is one it
        // made up or kept from before
        Self::leave(0)
    }
    fn forged_span() -> Option<c_int> {
        Some(0x0123_4567)
    }
    fn null_pointer_probes() -> Vec<(&'static str, Code)> {
        Vec::new() // tsh_ensure's errmsg is optional by contract
    }
    fn abi() -> &'static SharedAbi {
        &tstate_ffi_handle::SHARED_ABI
    }
}

// ----- ffi-activate -----------------------------------------------------------

/// A span of the explicit-lifecycle design: either the thread was already
/// attached to the interpreter (nothing to undo), or the caller created and
/// activated a thread state it now owns.
#[derive(Debug, Clone, Copy)]
pub enum ActivateSpan {
    /// `Get` said the thread is attached to the interpreter already.
    AlreadyAttached,
    /// New + Activate; leave = Deactivate + Delete.
    Owned(usize),
}

/// The explicit-lifecycle design (`tstate-ffi-activate`).
pub struct Activate;

fn ts_ptr(p: usize) -> *mut tstate_ffi_activate::ThreadState {
    p as *mut tstate_ffi_activate::ThreadState
}

impl Facade for Activate {
    const NAME: &'static str = "activate";
    const TITLE: &'static str = "explicit New/Activate/Deactivate/Delete";
    const RELEASE_NAMES_SPAN: bool = true;
    const EXPLICIT_LIFECYCLE: bool = true;
    const RELEASE_RETURNS_CODE: bool = true;
    const HOLDER_KIND: u32 = 1;
    type Span = ActivateSpan;

    fn enter(interp: u64) -> Result<ActivateSpan, Code> {
        use tstate_ffi_activate::*;
        if tsa_is_attached(interp) == 1 {
            return Ok(ActivateSpan::AlreadyAttached);
        }
        let mut ts = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        rc(unsafe { tsa_new(interp, &mut ts) })?;
        if let Err(e) = rc(tsa_activate(ts)) {
            tsa_delete(ts);
            return Err(e);
        }
        Ok(ActivateSpan::Owned(ts as usize))
    }
    fn leave(span: ActivateSpan) -> Result<(), Code> {
        use tstate_ffi_activate::*;
        match span {
            ActivateSpan::AlreadyAttached => Ok(()),
            ActivateSpan::Owned(p) => {
                rc(tsa_deactivate(ts_ptr(p)))?;
                rc(tsa_delete(ts_ptr(p))).map(|_| ())
            }
        }
    }
    fn release_nothing() -> Result<(), Code> {
        // Deactivate of a thread state that is not active.
        use tstate_ffi_activate::*;
        let interp = Self::main_interpreter()?;
        let mut ts = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        rc(unsafe { tsa_new(interp, &mut ts) })?;
        let r = rc(tsa_deactivate(ts)).map(|_| ());
        tsa_delete(ts);
        r
    }
    fn forged_span() -> Option<ActivateSpan> {
        Some(ActivateSpan::Owned(0xdead_beef_0000_0001))
    }
    fn null_pointer_probes() -> Vec<(&'static str, Code)> {
        use tstate_ffi_activate::*;
        let interp = Self::main_interpreter().unwrap_or(0);
        // SAFETY: NULL is what is being probed; each function checks it.
        unsafe {
            vec![
                ("tsa_new", tsa_new(interp, std::ptr::null_mut())),
                ("tsa_activate", tsa_activate(std::ptr::null_mut())),
                ("tsa_deactivate", tsa_deactivate(std::ptr::null_mut())),
                ("tsa_delete", tsa_delete(std::ptr::null_mut())),
                ("tsa_get", tsa_get(std::ptr::null_mut())),
                (
                    "tsa_get_error_message",
                    tsa_get_error_message(-1, std::ptr::null_mut()),
                ),
            ]
        }
    }
    fn abi() -> &'static SharedAbi {
        &tstate_ffi_activate::SHARED_ABI
    }
    fn lifecycle() -> Option<Lifecycle> {
        use tstate_ffi_activate::*;
        Some(Lifecycle {
            new: |interp| {
                let mut ts = std::ptr::null_mut();
                // SAFETY: valid out-pointer.
                rc(unsafe { tsa_new(interp, &mut ts) })?;
                Ok(ts as usize)
            },
            activate: |ts| rc(tsa_activate(ts_ptr(ts))).map(|_| ()),
            deactivate: |ts| rc(tsa_deactivate(ts_ptr(ts))).map(|_| ()),
            delete: |ts| rc(tsa_delete(ts_ptr(ts))).map(|_| ()),
        })
    }
}

// ----- ffi-guard --------------------------------------------------------------

/// The guard design (`tstate-ffi-guard`, PEP 788).
pub struct Guard;

fn g_ptr<T>(p: usize) -> *mut T {
    p as *mut T
}

/// A pointer result of the guard facade: NULL → its last error.
fn g_res<T>(p: *mut T) -> Result<usize, Code> {
    if p.is_null() {
        Err(tstate_ffi_guard::tsg_last_error())
    } else {
        Ok(p as usize)
    }
}

fn g_void(call: impl FnOnce()) -> Result<(), Code> {
    static RECORDER: std::sync::Once = std::sync::Once::new();
    via_hook(
        &RECORDER,
        || {
            tstate_ffi_guard::tsg_set_fatal_hook(Some(record_hook));
        },
        call,
    )
}

impl Facade for Guard {
    const NAME: &'static str = "guard";
    const TITLE: &'static str = "PEP 788 guards, views and tokens";
    const RELEASE_NAMES_SPAN: bool = true;
    const EXPLICIT_LIFECYCLE: bool = false;
    const RELEASE_RETURNS_CODE: bool = false;
    const HOLDER_KIND: u32 = 2;
    type Span = usize;

    fn enter(interp: u64) -> Result<usize, Code> {
        // the design's idiom from an id: a view, ensure-from-view (which
        // keeps a guard until release), and the view is not needed after
        use tstate_ffi_guard::*;
        let v = g_res(tsg_view_from_interpreter(interp))?;
        let t = g_res(tsg_ensure_from_view(g_ptr(v)));
        tsg_view_close(g_ptr(v));
        t
    }
    fn leave(token: usize) -> Result<(), Code> {
        g_void(|| tstate_ffi_guard::tsg_release(g_ptr(token)))
    }
    fn release_nothing() -> Result<(), Code> {
        Self::leave(0x0123_4567)
    }
    fn forged_span() -> Option<usize> {
        Some(0x0123_4567)
    }
    fn null_pointer_probes() -> Vec<(&'static str, Code)> {
        use std::ptr::null_mut as null;
        use tstate_ffi_guard::*;
        vec![
            (
                "tsg_guard_from_view",
                g_res(tsg_guard_from_view(null())).err().unwrap_or(0),
            ),
            ("tsg_ensure", g_res(tsg_ensure(null())).err().unwrap_or(0)),
            (
                "tsg_ensure_from_view",
                g_res(tsg_ensure_from_view(null())).err().unwrap_or(0),
            ),
            (
                "tsg_release",
                g_void(|| tsg_release(null())).err().unwrap_or(0),
            ),
        ]
    }
    fn abi() -> &'static SharedAbi {
        &tstate_ffi_guard::SHARED_ABI
    }
    fn guards() -> Option<GuardOps> {
        use tstate_ffi_guard::*;
        Some(GuardOps {
            view_for: |i| g_res(tsg_view_from_interpreter(i)),
            view_from_main: || g_res(tsg_view_from_main()),
            view_close: |v| g_void(|| tsg_view_close(g_ptr(v))),
            guard_from_view: |v| g_res(tsg_guard_from_view(g_ptr(v))),
            guard_from_current: || g_res(tsg_guard_from_current()),
            guard_close: |g| g_void(|| tsg_guard_close(g_ptr(g))),
            ensure: |g| g_res(tsg_ensure(g_ptr(g))),
            ensure_from_view: |v| g_res(tsg_ensure_from_view(g_ptr(v))),
            release: |t| g_void(|| tsg_release(g_ptr(t))),
        })
    }
}
