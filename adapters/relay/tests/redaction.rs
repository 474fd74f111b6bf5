//! Secrets stay out of `Debug` output (issue 16, item 9.4): `ClientConfig` derived `Debug`
//! with the account secret in it, so logging a configuration (or a login frame) leaked it.
#![allow(clippy::unwrap_used)]

use otr_relay::CertFingerprint;
use otr_relay::proto::{ClientFrame, PROTOCOL_VERSION};
use otr_relay_client::ClientConfig;

const SECRET: &str = "correct horse battery staple";

#[test]
fn client_config_debug_hides_the_secret() {
    let config = ClientConfig::new("127.0.0.1:5443", CertFingerprint([1; 32]), "alice", SECRET);
    for shown in [format!("{config:?}"), format!("{config:#?}")] {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains(r#"secret: "<redacted>""#) && shown.contains("alice"), "{shown}");
    }
}

#[test]
fn login_frame_debug_hides_the_secret() {
    let login = ClientFrame::Login {
        version: PROTOCOL_VERSION,
        account: "alice".into(),
        secret: SECRET.into(),
        device: None,
    };
    let shown = format!("{login:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains(r#"secret: "<redacted>""#) && shown.contains("alice"), "{shown}");
}
