//! The key store file: header checks on arbitrary bytes, the whole open path when the header
//! asks for a cheap enough Argon2 (so the fuzzer is not stuck in the KDF), and the contents
//! decoder that runs after authentication. None may panic; contents that decode must encode
//! back to bytes that decode to the same store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otr_keystore::store::{Header, KeyStore};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::read(data) {
        if h.params.memory_kib <= 64 && h.params.iterations <= 1 && h.params.parallelism <= 1 {
            let _ = KeyStore::open(data, b"passphrase");
        }
    }
    if let Ok(store) = KeyStore::fuzz_decode_contents(data) {
        let again = store.fuzz_encode_contents().expect("a decoded store encodes");
        let back = KeyStore::fuzz_decode_contents(&again).expect("our own encoding decodes");
        assert_eq!(back.fuzz_encode_contents().expect("encodes").as_slice(), again.as_slice());
    }
});
