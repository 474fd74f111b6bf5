//! Stand-in for the FFI when the build found no libotr: the crate still compiles (so the
//! workspace's examples build on any machine), and every endpoint fails to start with a
//! message saying what to install.

use std::convert::Infallible;
use std::ffi::{CStr, CString, c_int};

pub(crate) use crate::record::{Kind, Record};

const MISSING: &str = "libotr 4.1 was not found when this harness was built: \
install libotr5-dev, libgcrypt20-dev and pkg-config, then rebuild";

/// An endpoint that cannot exist: `new` always fails.
pub(crate) struct Endpoint(Infallible);

#[allow(clippy::unused_self, reason = "mirrors the real endpoint's API")]
impl Endpoint {
    pub(crate) fn new(
        _account: &CStr,
        _peer: &CStr,
        _policy: u32,
        _max_msg_size: c_int,
        _keyfile: Option<&CStr>,
    ) -> Result<Self, String> {
        Err(MISSING.to_owned())
    }
    pub(crate) fn take_records(&mut self) -> Vec<Record> {
        match self.0 {}
    }
    pub(crate) fn fingerprint(&self) -> String {
        match self.0 {}
    }
    pub(crate) fn instance_tag(&mut self) -> u32 {
        match self.0 {}
    }
    pub(crate) fn msgstate(&mut self) -> c_int {
        match self.0 {}
    }
    pub(crate) fn receive(&mut self, _msg: &CStr) {
        match self.0 {}
    }
    pub(crate) fn send(&mut self, _text: &CStr) {
        match self.0 {}
    }
    pub(crate) fn query(&mut self) {
        match self.0 {}
    }
    pub(crate) fn end(&mut self) {
        match self.0 {}
    }
    pub(crate) fn smp(&mut self, _question: Option<&CString>, _secret: &[u8]) {
        match self.0 {}
    }
    pub(crate) fn smp_answer(&mut self, _secret: &[u8]) {
        match self.0 {}
    }
    pub(crate) fn smp_abort(&mut self) {
        match self.0 {}
    }
    pub(crate) fn symkey(&mut self, _use: u32, _usedata: &[u8]) {
        match self.0 {}
    }
    pub(crate) fn timer_interval(&self) -> u32 {
        match self.0 {}
    }
    pub(crate) fn poll(&mut self) {
        match self.0 {}
    }
}
