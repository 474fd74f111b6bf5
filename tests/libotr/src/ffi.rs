//! Bindings to `shim.c` and [`Endpoint`], their safe owner: the only unsafe
//! code of the crate.
//!
//! The shim reports everything libotr does through a sink callback; the
//! sink appends [`Record`]s to a heap-allocated `Vec` owned by the
//! [`Endpoint`], which hands them out with [`Endpoint::take_records`].
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::ptr::NonNull;
use std::sync::OnceLock;

pub(crate) use crate::record::{Kind, Record};

/// Opaque `ShimEndpoint` of shim.c.
#[repr(C)]
struct ShimEndpoint {
    _opaque: [u8; 0],
}

type SinkFn = unsafe extern "C" fn(
    sink: *mut c_void,
    kind: c_int,
    a: *const c_char,
    alen: usize,
    b: *const c_char,
    blen: usize,
);

unsafe extern "C" {
    fn shim_init() -> c_int;
    fn shim_new(
        account: *const c_char,
        peer: *const c_char,
        policy: c_uint,
        max_msg_size: c_int,
        keyfile: *const c_char,
        sink: SinkFn,
        sink_data: *mut c_void,
        errbuf: *mut c_char,
        errlen: usize,
    ) -> *mut ShimEndpoint;
    fn shim_free(ep: *mut ShimEndpoint);
    fn shim_fingerprint(ep: *const ShimEndpoint) -> *const c_char;
    fn shim_instance_tag(ep: *mut ShimEndpoint) -> c_uint;
    fn shim_msgstate(ep: *mut ShimEndpoint) -> c_int;
    fn shim_receive(ep: *mut ShimEndpoint, msg: *const c_char);
    fn shim_send(ep: *mut ShimEndpoint, text: *const c_char);
    fn shim_query(ep: *mut ShimEndpoint);
    fn shim_end(ep: *mut ShimEndpoint);
    fn shim_smp(ep: *mut ShimEndpoint, question: *const c_char, secret: *const u8, secretlen: usize);
    fn shim_smp_answer(ep: *mut ShimEndpoint, secret: *const u8, secretlen: usize);
    fn shim_smp_abort(ep: *mut ShimEndpoint);
    fn shim_symkey(ep: *mut ShimEndpoint, use_: c_uint, usedata: *const u8, len: usize);
    fn shim_timer_interval(ep: *const ShimEndpoint) -> c_uint;
    fn shim_poll(ep: *mut ShimEndpoint);
}

unsafe extern "C" fn sink(
    data: *mut c_void,
    kind: c_int,
    a: *const c_char,
    alen: usize,
    b: *const c_char,
    blen: usize,
) {
    let Some(kind) = Kind::from_raw(kind) else {
        return;
    };
    // SAFETY: the shim passes pointers to `alen`/`blen` readable bytes (or
    // NULL), and `data` is the `Vec<Record>` allocated by `Endpoint::new`,
    // which is alive and not otherwise borrowed while the shim runs.
    unsafe {
        let bytes = |p: *const c_char, n: usize| {
            (!p.is_null()).then(|| std::slice::from_raw_parts(p.cast::<u8>(), n).to_vec())
        };
        let records = &mut *data.cast::<Vec<Record>>();
        records.push(Record { kind, a: bytes(a, alen), b: bytes(b, blen).unwrap_or_default() });
    }
}

/// Calls `otrl_init` once per process.
fn init() -> Result<(), String> {
    static INIT: OnceLock<bool> = OnceLock::new();
    // SAFETY: shim_init has no preconditions; OnceLock runs it once.
    let ok = *INIT.get_or_init(|| unsafe { shim_init() } == 0);
    if ok { Ok(()) } else { Err("otrl_init failed (libotr version mismatch)".into()) }
}

/// One libotr endpoint: its own `OtrlUserState` with one account.
pub(crate) struct Endpoint {
    raw: NonNull<ShimEndpoint>,
    records: NonNull<Vec<Record>>,
}

// SAFETY: an endpoint owns its userstate exclusively and libotr keeps no
// per-thread state: its only globals are set up once by `otrl_init` (under
// `init`'s OnceLock) and only read afterwards, and libgcrypt is thread-safe.
// Every call that touches the userstate takes `&mut self`, so moving an
// endpoint to another thread is sound (it is deliberately not `Sync`).
unsafe impl Send for Endpoint {}

impl Endpoint {
    pub(crate) fn new(
        account: &CStr,
        peer: &CStr,
        policy: u32,
        max_msg_size: c_int,
        keyfile: Option<&CStr>,
    ) -> Result<Endpoint, String> {
        init()?;
        let records = NonNull::from(Box::leak(Box::<Vec<Record>>::default()));
        let mut errbuf = [0 as c_char; 512];
        // SAFETY: all strings are valid C strings for the call; the sink
        // data outlives the endpoint (freed in Drop after shim_free).
        let raw = unsafe {
            shim_new(
                account.as_ptr(),
                peer.as_ptr(),
                policy,
                max_msg_size,
                keyfile.map_or(std::ptr::null(), CStr::as_ptr),
                sink,
                records.as_ptr().cast(),
                errbuf.as_mut_ptr(),
                errbuf.len(),
            )
        };
        match NonNull::new(raw) {
            Some(raw) => Ok(Endpoint { raw, records }),
            None => {
                // SAFETY: `records` came from Box::leak above and the shim
                // no longer refers to it.
                drop(unsafe { Box::from_raw(records.as_ptr()) });
                // SAFETY: shim_new NUL-terminates errbuf on failure.
                let msg = unsafe { CStr::from_ptr(errbuf.as_ptr()) };
                Err(msg.to_string_lossy().into_owned())
            }
        }
    }

    /// Everything the shim reported since the last call, in order.
    pub(crate) fn take_records(&mut self) -> Vec<Record> {
        // SAFETY: no shim call is running (we hold `&mut self`), so nothing
        // else refers to the vector.
        std::mem::take(unsafe { &mut *self.records.as_ptr() })
    }

    pub(crate) fn fingerprint(&self) -> String {
        // SAFETY: the shim returns a NUL-terminated string owned by the
        // endpoint, copied here.
        unsafe { CStr::from_ptr(shim_fingerprint(self.raw.as_ptr())) }.to_string_lossy().into_owned()
    }

    pub(crate) fn instance_tag(&mut self) -> u32 {
        // SAFETY: valid endpoint.
        unsafe { shim_instance_tag(self.raw.as_ptr()) }
    }

    /// `OTRL_MSGSTATE_*` of the best context.
    pub(crate) fn msgstate(&mut self) -> c_int {
        // SAFETY: valid endpoint.
        unsafe { shim_msgstate(self.raw.as_ptr()) }
    }

    pub(crate) fn receive(&mut self, msg: &CStr) {
        // SAFETY: valid endpoint and C string.
        unsafe { shim_receive(self.raw.as_ptr(), msg.as_ptr()) }
    }

    pub(crate) fn send(&mut self, text: &CStr) {
        // SAFETY: valid endpoint and C string.
        unsafe { shim_send(self.raw.as_ptr(), text.as_ptr()) }
    }

    pub(crate) fn query(&mut self) {
        // SAFETY: valid endpoint.
        unsafe { shim_query(self.raw.as_ptr()) }
    }

    pub(crate) fn end(&mut self) {
        // SAFETY: valid endpoint.
        unsafe { shim_end(self.raw.as_ptr()) }
    }

    pub(crate) fn smp(&mut self, question: Option<&CString>, secret: &[u8]) {
        // SAFETY: valid endpoint, C string or NULL, slice pointer + length.
        unsafe {
            shim_smp(
                self.raw.as_ptr(),
                question.map_or(std::ptr::null(), |q| q.as_ptr()),
                secret.as_ptr(),
                secret.len(),
            )
        }
    }

    pub(crate) fn smp_answer(&mut self, secret: &[u8]) {
        // SAFETY: valid endpoint, slice pointer + length.
        unsafe { shim_smp_answer(self.raw.as_ptr(), secret.as_ptr(), secret.len()) }
    }

    pub(crate) fn smp_abort(&mut self) {
        // SAFETY: valid endpoint.
        unsafe { shim_smp_abort(self.raw.as_ptr()) }
    }

    pub(crate) fn symkey(&mut self, use_: u32, usedata: &[u8]) {
        // SAFETY: valid endpoint, slice pointer + length.
        unsafe { shim_symkey(self.raw.as_ptr(), use_, usedata.as_ptr(), usedata.len()) }
    }

    pub(crate) fn timer_interval(&self) -> u32 {
        // SAFETY: valid endpoint.
        unsafe { shim_timer_interval(self.raw.as_ptr()) }
    }

    pub(crate) fn poll(&mut self) {
        // SAFETY: valid endpoint.
        unsafe { shim_poll(self.raw.as_ptr()) }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // SAFETY: both pointers are owned by us and freed exactly once; the
        // shim is freed first since it refers to the records.
        unsafe {
            shim_free(self.raw.as_ptr());
            drop(Box::from_raw(self.records.as_ptr()));
        }
    }
}
