//! Observation of the engine's intermediate secrets, for test vectors and debugging only.
//!
//! Compiled only with the cargo feature `trace` (off by default), and recorded only after
//! [`Session::set_tracing`](crate::Session::set_tracing)`(true)`. **Every value here is
//! secret**: DH private exponents, shared secrets, session keys. An application must never
//! enable this feature in a build that handles real conversations.
//!
//! The engine pushes a [`Trace`] at the moment it computes each value, in the order it
//! computes them; drain them with [`Session::poll_trace`](crate::Session::poll_trace). The
//! `vectors/` transcripts record them so that an implementation that disagrees with a vector
//! learns where it diverges, and so that libotr's own tools can re-derive every data key.
//!
//! Byte strings are as the protocol hashes them: group elements and private exponents are
//! big-endian magnitudes (a private exponent keeps its fixed 40-byte width), shared secrets
//! are the MPI encoding (4-byte length, then the minimal big-endian magnitude).

use crate::instance::InstanceTag;

/// One intermediate value (or group of values) the engine computed, and the remote instance
/// it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The remote instance.
    pub instance: InstanceTag,
    /// What was computed.
    pub value: Value,
}

/// An intermediate value (or group of values).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Value {
    /// The AKE derived its keys from the shared secret s = g^xy.
    AkeKeys {
        /// Our AKE DH private exponent (x or y).
        our_private: Vec<u8>,
        /// Our AKE DH public value.
        our_public: Vec<u8>,
        /// The peer's AKE DH public value.
        their_public: Vec<u8>,
        /// MPI(s), what every AKE key hashes.
        shared_secret: Vec<u8>,
        /// The secure session id: SHA-256(0x00 ‖ MPI(s)), first 8 bytes.
        ssid: [u8; 8],
        /// AES key c: SHA-256(0x01 ‖ MPI(s)), first 16 bytes.
        c: [u8; 16],
        /// AES key c': the last 16 bytes of the same hash.
        c_prime: [u8; 16],
        /// SHA-256(0x02 ‖ MPI(s)).
        m1: [u8; 32],
        /// SHA-256(0x03 ‖ MPI(s)).
        m2: [u8; 32],
        /// SHA-256(0x04 ‖ MPI(s)).
        m1_prime: [u8; 32],
        /// SHA-256(0x05 ‖ MPI(s)).
        m2_prime: [u8; 32],
    },
    /// A data-phase DH key pair of ours got a keyid (keyid 1 is the AKE key, then one new key
    /// per rotation).
    DhKey {
        /// Its keyid.
        keyid: u32,
        /// The private exponent (40 bytes, big-endian).
        private: Vec<u8>,
        /// The public value g^x.
        public: Vec<u8>,
    },
    /// The data keys of one (our keyid, their keyid) pair were derived.
    SessionKeys {
        /// Our keyid.
        our_keyid: u32,
        /// The peer's keyid.
        their_keyid: u32,
        /// MPI(s) of this pair.
        shared_secret: Vec<u8>,
        /// AES key of messages we send.
        send_aes: [u8; 16],
        /// MAC key of messages we send.
        send_mac: [u8; 20],
        /// AES key of messages we receive.
        recv_aes: [u8; 16],
        /// MAC key of messages we receive.
        recv_mac: [u8; 20],
        /// The extra symmetric key of the pair.
        extra: [u8; 32],
    },
    /// SMP's compared secret was computed (on starting or answering).
    SmpSecret {
        /// The initiator's fingerprint.
        initiator: [u8; 20],
        /// The responder's fingerprint.
        responder: [u8; 20],
        /// The secure session id.
        ssid: [u8; 8],
        /// What the user typed.
        user_secret: Vec<u8>,
        /// SHA-256(0x01 ‖ initiator ‖ responder ‖ ssid ‖ user secret).
        secret: [u8; 32],
    },
}
