//! The one error set shared by the core and every facade.
//!
//! Each kind has a stable negative `i32` code (what crosses the C ABI) and a
//! static message. Codes never change meaning; new kinds get new codes.

use std::ffi::CStr;

/// Everything that can go wrong, as one stable set of codes.
///
/// | code | kind | typical cause |
/// |---:|---|---|
/// | -1 | [`NoMemory`](Error::NoMemory) | allocation failed (or was injected to fail) |
/// | -2 | [`Finalizing`](Error::Finalizing) | the interpreter refuses new spans: it is finalizing |
/// | -3 | [`NoSuchInterpreter`](Error::NoSuchInterpreter) | id 0, forged, unknown or finalized |
/// | -4 | [`WrongThread`](Error::WrongThread) | object belongs to another OS thread |
/// | -5 | [`NotAttached`](Error::NotAttached) | nothing to release / not attached (to that interpreter) |
/// | -6 | [`InvalidHandle`](Error::InvalidHandle) | handle stale (deleted, released) or forged |
/// | -7 | [`OutOfOrder`](Error::OutOfOrder) | release/deactivate/restore not of the innermost span |
/// | -8 | [`InvalidArgument`](Error::InvalidArgument) | NULL pointer or out-of-range value |
/// | -9 | [`Busy`](Error::Busy) | object still in use (active, saved, already finalizing) |
/// | -10 | [`Timeout`](Error::Timeout) | finalize's bound passed while spans were open |
/// | -11 | [`Panic`](Error::Panic) | a panic was caught at the C boundary |
/// | -12 | [`Unsupported`](Error::Unsupported) | this backend (or this CPython) cannot do it |
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(i32)]
pub enum Error {
    /// An allocation failed, or fault injection made it fail. Nothing was
    /// half-created; the same call can be retried.
    #[error("out of memory")]
    NoMemory = -1,
    /// The interpreter is finalizing and refuses new spans.
    #[error("interpreter is finalizing")]
    Finalizing = -2,
    /// The interpreter id is 0, forged, unknown or belongs to a finalized
    /// interpreter; ids are never reused.
    #[error("no such interpreter (unknown or finalized)")]
    NoSuchInterpreter = -3,
    /// The thread state (or handle) belongs to another OS thread.
    #[error("wrong thread: the object belongs to another OS thread")]
    WrongThread = -4,
    /// Nothing to release, or the calling thread is not attached (to that
    /// interpreter).
    #[error("nothing to release, or not attached")]
    NotAttached = -5,
    /// The handle was never issued, or its object was already released or
    /// deleted.
    #[error("invalid handle (stale, released or forged)")]
    InvalidHandle = -6,
    /// The operation names an outer span while an inner one is still open.
    #[error("out of order: an inner span is still open")]
    OutOfOrder = -7,
    /// A NULL pointer or an argument out of range.
    #[error("invalid argument")]
    InvalidArgument = -8,
    /// The object is still in use (attached, saved, already being finalized).
    #[error("busy: still in use")]
    Busy = -9,
    /// Finalization's time bound passed while spans were still open; the
    /// interpreter stays finalizing.
    #[error("timed out: spans still open")]
    Timeout = -10,
    /// A panic was caught before it could cross the C ABI.
    #[error("internal panic caught at the C boundary")]
    Panic = -11,
    /// The backend cannot do this: a lock mode the running CPython lacks
    /// (own lock before 3.12, no lock without a free-threaded build), a
    /// combination the model refuses, or fault injection inside CPython.
    #[error("unsupported by this backend")]
    Unsupported = -12,
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Every kind, in code order (for tables, tests and message checks).
    pub const ALL: [Error; 12] = [
        Error::NoMemory,
        Error::Finalizing,
        Error::NoSuchInterpreter,
        Error::WrongThread,
        Error::NotAttached,
        Error::InvalidHandle,
        Error::OutOfOrder,
        Error::InvalidArgument,
        Error::Busy,
        Error::Timeout,
        Error::Panic,
        Error::Unsupported,
    ];

    /// The stable negative code of this kind.
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The kind with this code, if any.
    pub fn from_code(code: i32) -> Option<Error> {
        Error::ALL.into_iter().find(|e| e.code() == code)
    }

    /// The static, NUL-terminated message (the same text as `Display`).
    pub const fn c_message(self) -> &'static CStr {
        match self {
            Error::NoMemory => c"out of memory",
            Error::Finalizing => c"interpreter is finalizing",
            Error::NoSuchInterpreter => c"no such interpreter (unknown or finalized)",
            Error::WrongThread => c"wrong thread: the object belongs to another OS thread",
            Error::NotAttached => c"nothing to release, or not attached",
            Error::InvalidHandle => c"invalid handle (stale, released or forged)",
            Error::OutOfOrder => c"out of order: an inner span is still open",
            Error::InvalidArgument => c"invalid argument",
            Error::Busy => c"busy: still in use",
            Error::Timeout => c"timed out: spans still open",
            Error::Panic => c"internal panic caught at the C boundary",
            Error::Unsupported => c"unsupported by this backend",
        }
    }

    /// The message of `code`, or a fixed "unknown error code" message; 0
    /// gives "success". Never NULL, never allocated, valid forever.
    pub fn c_message_for_code(code: i32) -> &'static CStr {
        match code {
            0 => c"success",
            _ => Error::from_code(code).map_or(c"unknown error code", Error::c_message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_negative_and_round_trip() {
        for (i, e) in Error::ALL.iter().enumerate() {
            assert_eq!(e.code(), -(i as i32) - 1);
            assert_eq!(Error::from_code(e.code()), Some(*e));
        }
        assert_eq!(Error::from_code(0), None);
        assert_eq!(Error::from_code(-13), None);
    }

    #[test]
    fn c_message_matches_display() {
        for e in Error::ALL {
            assert_eq!(e.c_message().to_str().unwrap(), e.to_string());
            assert_eq!(Error::c_message_for_code(e.code()), e.c_message());
        }
        assert_eq!(Error::c_message_for_code(0).to_str().unwrap(), "success");
        assert_eq!(
            Error::c_message_for_code(-999).to_str().unwrap(),
            "unknown error code"
        );
    }
}
