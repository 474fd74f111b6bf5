//! libotr's `otr.private_key` (S-expressions) and `otr.fingerprints` parsers on arbitrary
//! bytes. None may panic; what parses must write back to bytes that parse to the same
//! entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otr_keystore::libotr::{
    parse_fingerprints, parse_private_keys, write_fingerprints, write_private_keys,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = parse_private_keys(data) {
        let entries = keys.iter().map(|k| (k.account.as_str(), k.protocol.as_str(), &k.key));
        if let Ok(written) = write_private_keys(entries) {
            let again = parse_private_keys(&written).expect("our own file parses");
            assert_eq!(again.len(), keys.len());
            for (a, b) in again.iter().zip(&keys) {
                assert_eq!((&a.account, &a.protocol), (&b.account, &b.protocol));
                assert_eq!(a.key.public().fingerprint(), b.key.public().fingerprint());
            }
        }
    }
    if let Ok(fps) = parse_fingerprints(data) {
        if let Ok(written) = write_fingerprints(&fps) {
            assert_eq!(parse_fingerprints(&written).expect("our own file parses"), fps);
        }
    }
});
