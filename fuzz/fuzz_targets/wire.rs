//! Every decoder of peer bytes: transport classification, headers, AKE and data message
//! bodies, public keys, fragments. None may panic; a successful decode of an envelope must
//! re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otr_core::crypto::dsa::DsaPublicKey;
use otr_core::data::DataMessage;
use otr_core::fragment::Fragment;
use otr_core::message::{Header, Incoming, classify, encode_envelope};
use otr_core::wire::Reader;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(Incoming::Encoded(bytes)) = classify(&text) {
        // Round trip: what we decoded encodes back to an envelope that decodes the same.
        assert_eq!(classify(&encode_envelope(&bytes)), Ok(Incoming::Encoded(bytes.clone())));
    }
    let _ = Fragment::parse(&text);
    let mut r = Reader::new(data);
    let _ = Header::read(&mut r);
    let _ = DataMessage::read(data);
    let _ = DataMessage::peek_flags(data);
    let _ = DsaPublicKey::read(&mut Reader::new(data));
    let _ = otr_core::tlv::split_plaintext(data);
});
