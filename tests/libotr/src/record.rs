//! What the shim reports: shared by the real FFI and the stand-in used without libotr.
#![cfg_attr(libotr_missing, allow(dead_code))]

use std::ffi::c_int;

/// Record kinds; the numbers are the `SHIM_*` constants of shim.c.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Net = 0,
    Secure = 1,
    Insecure = 2,
    Finished = 3,
    MsgEncrypted = 4,
    MsgPlain = 5,
    SmpRequest = 6,
    SmpSuccess = 7,
    SmpFailure = 8,
    SmpAborted = 9,
    Symkey = 10,
    Error = 11,
    Log = 12,
}

impl Kind {
    pub(crate) fn from_raw(raw: c_int) -> Option<Kind> {
        use Kind::*;
        [
            Net,
            Secure,
            Insecure,
            Finished,
            MsgEncrypted,
            MsgPlain,
            SmpRequest,
            SmpSuccess,
            SmpFailure,
            SmpAborted,
            Symkey,
            Error,
            Log,
        ]
        .into_iter()
        .find(|k| *k as c_int == raw)
    }
}

/// One report of the shim: a kind and up to two byte strings (see shim.c).
#[derive(Debug)]
pub(crate) struct Record {
    pub kind: Kind,
    /// First payload; `None` when the shim passed NULL.
    pub a: Option<Vec<u8>>,
    /// Second payload (empty when absent).
    pub b: Vec<u8>,
}
