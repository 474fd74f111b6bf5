//! Fragment parsing and reassembly with arbitrary pieces: no panic, memory stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otr_core::Timestamp;
use otr_core::fragment::{Fragment, MAX_MESSAGE_BYTES, MAX_PARTIALS, Reassembler};

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembler::default();
    for (i, line) in data.split(|&c| c == b'\n').enumerate() {
        let text = String::from_utf8_lossy(line);
        if let Ok(f) = Fragment::parse(&text) {
            let _ = r.add(&f, Timestamp(i as u64));
        }
        assert!(r.held_bytes() <= MAX_PARTIALS * MAX_MESSAGE_BYTES);
    }
});
