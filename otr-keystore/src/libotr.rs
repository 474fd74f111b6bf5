//! libotr's own files: `otr.private_key` (the accounts' DSA keys, an S-expression) and
//! `otr.fingerprints` (known peers' fingerprints and trust, one tab-separated line each), so
//! users can bring their identity and trust from Pidgin, irssi-otr, profanity and the like, and
//! take it back.
//!
//! Pure functions over bytes; reading a file is the caller's business.
//!
//! # `otr.private_key`
//! What libotr 4.1 writes (`otrl_privkey_generate` through `gcry_sexp_sprint`):
//!
//! ```text
//! (privkeys
//!  (account
//! (name "alice@example.com")
//! (protocol prpl-jabber)
//! (private-key
//!  (dsa
//!   (p #00F1…#)
//!   (q #00C3…#)
//!   (g #2A…#)
//!   (y #5B…#)
//!   (x #1D…#)
//!   )
//!  )
//!  )
//! )
//! ```
//!
//! Names print as tokens when they can, else quoted, else hex; numbers are upper-case hex
//! with a `00` in front when the top bit is set. When the same account appears twice, libotr
//! uses the last one; so does [`parse_private_keys`].
//!
//! # `otr.fingerprints`
//! One line per known fingerprint: `remote-username TAB our-account TAB protocol TAB
//! 40-hex-fingerprint TAB trust`, the trust column being empty (not verified), `smp` (libotr
//! after a successful SMP) or `verified` (pidgin-otr after a manual check); clients treat any
//! non-empty trust as verified.

mod sexp;

use zeroize::Zeroizing;

use otr_core::{CryptoError, DsaComponents, DsaKeyPair, Fingerprint};

use crate::store::Trust;

pub use sexp::{MAX_ATOM, MAX_DEPTH, MAX_INPUT};

/// Largest `otr.fingerprints` accepted (4 MiB, some 40 000 entries).
pub const MAX_FINGERPRINTS_FILE: usize = 4 << 20;
/// libotr reads `otr.fingerprints` with a 1000-byte line buffer: longer lines are split and
/// misread, so they are refused on import and never written.
pub const MAX_FINGERPRINT_LINE: usize = 998;
/// Largest magnitude, in bytes, accepted for p, g and y (1024 bits, as OTR v3 uses).
const MAX_P_BYTES: usize = 128;
/// Largest magnitude, in bytes, accepted for q and x (160 bits).
const MAX_Q_BYTES: usize = 20;

/// Why libotr's key or fingerprint file could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LibotrFileError {
    /// The input is larger than any real file of its kind.
    #[error("the file is larger than {limit} bytes; this is not a libotr file")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The S-expression syntax is broken.
    #[error("otr.private_key: malformed S-expression at byte {offset}: {problem}")]
    Syntax {
        /// Byte offset of the problem in the input.
        offset: usize,
        /// What is wrong.
        problem: &'static str,
    },
    /// Lists nest deeper than any key file does.
    #[error(
        "otr.private_key: lists nest deeper than {limit} levels at byte {offset}; this is not a key file"
    )]
    TooDeep {
        /// Byte offset of the opening parenthesis too many.
        offset: usize,
        /// The nesting limit.
        limit: usize,
    },
    /// One string or number is longer than any key file holds.
    #[error("otr.private_key: a value at byte {offset} is longer than {limit} bytes; this is not a key file")]
    AtomTooLong {
        /// Byte offset of the value.
        offset: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The S-expression is well formed but is not `(privkeys (account …) …)`.
    #[error("otr.private_key: {0}")]
    NotPrivateKeys(&'static str),
    /// An account entry lacks a field libotr requires.
    #[error("otr.private_key: account #{index} has no {field}; the file is incomplete or not from libotr")]
    MissingField {
        /// The account's position in the file, from 1.
        index: usize,
        /// The missing field (`name`, `protocol`, `private-key`, `dsa`, `p`, …).
        field: &'static str,
    },
    /// An account or protocol name is not UTF-8 text or contains a character this format
    /// cannot carry.
    #[error(
        "{file}: the {field} of entry #{index} is not usable text (not UTF-8, or contains NUL, tab or line break)"
    )]
    BadText {
        /// Which file (`otr.private_key` or `otr.fingerprints`).
        file: &'static str,
        /// The entry (account or line) number, from 1.
        index: usize,
        /// Which field.
        field: &'static str,
    },
    /// A key uses an algorithm other than DSA (OTR v3 keys are DSA).
    #[error("otr.private_key: account #{index} holds a key that is not DSA; OTR v3 needs DSA keys")]
    NotDsa {
        /// The account's position in the file, from 1.
        index: usize,
    },
    /// A key number is larger than a DSA-1024/160 key allows.
    #[error(
        "otr.private_key: account #{index}: {field} is longer than {limit} bytes; only 1024-bit DSA keys are supported"
    )]
    NumberTooLarge {
        /// The account's position in the file, from 1.
        index: usize,
        /// Which number.
        field: &'static str,
        /// The limit in bytes.
        limit: usize,
    },
    /// The numbers do not form a valid DSA-1024/160 key pair.
    #[error("otr.private_key: the key of {account} ({protocol}) is not a valid DSA key pair: {source}")]
    InvalidKey {
        /// The account name.
        account: String,
        /// The protocol.
        protocol: String,
        /// What the check found.
        source: CryptoError,
    },
    /// A line of `otr.fingerprints` is malformed.
    #[error("otr.fingerprints line {line}: {problem}")]
    FingerprintLine {
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        problem: &'static str,
    },
}

/// One account's key from `otr.private_key`.
#[derive(Debug, Clone)]
pub struct LibotrKey {
    /// Our account name (e.g. `alice@example.com`).
    pub account: String,
    /// The protocol as the client names it (`prpl-jabber` in Pidgin, `xmpp` elsewhere).
    pub protocol: String,
    /// The key pair.
    pub key: DsaKeyPair,
}

/// One line of `otr.fingerprints`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibotrFingerprint {
    /// The remote account the fingerprint belongs to.
    pub remote: String,
    /// Our account that talked to it.
    pub account: String,
    /// The protocol.
    pub protocol: String,
    /// The remote's fingerprint.
    pub fingerprint: Fingerprint,
    /// Its trust.
    pub trust: Trust,
}

fn text(
    bytes: &[u8],
    file: &'static str,
    index: usize,
    field: &'static str,
) -> Result<String, LibotrFileError> {
    let bad = || LibotrFileError::BadText { file, index, field };
    let s = std::str::from_utf8(bytes).map_err(|_| bad())?;
    if s.contains(['\0', '\t', '\n', '\r']) {
        return Err(bad());
    }
    Ok(s.to_owned())
}

/// Reads `otr.private_key`. Every account must be complete and valid; one bad account fails
/// the whole file (nothing is half-imported). A later entry for the same account and protocol
/// replaces an earlier one, as in libotr.
///
/// # Errors
/// A [`LibotrFileError`] naming the byte offset or account that is wrong.
pub fn parse_private_keys(input: &[u8]) -> Result<Vec<LibotrKey>, LibotrFileError> {
    let root = sexp::parse(input)?;
    if root.head() != Some(b"privkeys") {
        return Err(LibotrFileError::NotPrivateKeys("the file does not start with (privkeys"));
    }
    let mut keys: Vec<LibotrKey> = Vec::new();
    for (n, account) in root.items().iter().skip(1).enumerate() {
        let index = n + 1;
        if account.head() != Some(b"account") {
            return Err(LibotrFileError::NotPrivateKeys(
                "an element of (privkeys …) is not an (account …) list",
            ));
        }
        let field = |name: &'static str| {
            account
                .find_token(name.as_bytes())
                .and_then(|l| l.nth_atom(1))
                .ok_or(LibotrFileError::MissingField { index, field: name })
        };
        let name = text(field("name")?, "otr.private_key", index, "name")?;
        let protocol = text(field("protocol")?, "otr.private_key", index, "protocol")?;
        let private = account
            .find_token(b"private-key")
            .ok_or(LibotrFileError::MissingField { index, field: "private-key" })?;
        let dsa = private.find_token(b"dsa").ok_or_else(|| {
            if private.items().len() > 1 {
                LibotrFileError::NotDsa { index }
            } else {
                LibotrFileError::MissingField { index, field: "dsa" }
            }
        })?;
        let number = |name: &'static str, limit: usize| -> Result<Zeroizing<Vec<u8>>, LibotrFileError> {
            let raw = dsa
                .find_token(name.as_bytes())
                .and_then(|l| l.nth_atom(1))
                .ok_or(LibotrFileError::MissingField { index, field: name })?;
            let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
            let magnitude = raw.get(start..).unwrap_or_default();
            if magnitude.len() > limit {
                return Err(LibotrFileError::NumberTooLarge { index, field: name, limit });
            }
            Ok(Zeroizing::new(magnitude.to_vec()))
        };
        let components = DsaComponents {
            p: number("p", MAX_P_BYTES)?.to_vec(),
            q: number("q", MAX_Q_BYTES)?.to_vec(),
            g: number("g", MAX_P_BYTES)?.to_vec(),
            y: number("y", MAX_P_BYTES)?.to_vec(),
            x: number("x", MAX_Q_BYTES)?,
        };
        let key = DsaKeyPair::from_components(&components).map_err(|source| LibotrFileError::InvalidKey {
            account: name.clone(),
            protocol: protocol.clone(),
            source,
        })?;
        keys.retain(|k| !(k.account == name && k.protocol == protocol));
        keys.push(LibotrKey { account: name, protocol, key });
    }
    Ok(keys)
}

/// Writes `otr.private_key` exactly as libotr lays it out. The result holds private keys.
///
/// # Errors
/// [`LibotrFileError::BadText`] for a name containing NUL (libotr's C strings would cut it).
pub fn write_private_keys<'a>(
    keys: impl IntoIterator<Item = (&'a str, &'a str, &'a DsaKeyPair)>,
) -> Result<Zeroizing<Vec<u8>>, LibotrFileError> {
    let keys: Vec<_> = keys.into_iter().collect();
    // Size it up front so the buffer holding secrets never reallocates (leaving copies).
    let capacity = 32 + keys.iter().map(|(a, p, _)| 2 * (a.len() + p.len()) * 2 + 1200).sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    out.extend_from_slice(b"(privkeys\n");
    for (i, (account, protocol, key)) in keys.into_iter().enumerate() {
        if account.contains('\0') {
            return Err(LibotrFileError::BadText { file: "otr.private_key", index: i + 1, field: "name" });
        }
        if protocol.contains('\0') {
            return Err(LibotrFileError::BadText {
                file: "otr.private_key",
                index: i + 1,
                field: "protocol",
            });
        }
        let c = key.components();
        out.extend_from_slice(b" (account\n(name ");
        sexp::push_atom(&mut out, account.as_bytes());
        out.extend_from_slice(b")\n(protocol ");
        sexp::push_atom(&mut out, protocol.as_bytes());
        out.extend_from_slice(b")\n(private-key \n (dsa \n");
        for (name, value) in [("p", &c.p[..]), ("q", &c.q), ("g", &c.g), ("y", &c.y), ("x", &c.x)] {
            out.extend_from_slice(b"  (");
            out.extend_from_slice(name.as_bytes());
            out.push(b' ');
            sexp::push_mpi(&mut out, value);
            out.extend_from_slice(b")\n");
        }
        out.extend_from_slice(b"  )\n )\n )\n");
    }
    out.extend_from_slice(b")\n");
    Ok(out)
}

fn unhex_fingerprint(s: &str) -> Option<Fingerprint> {
    let bytes = s.as_bytes();
    if bytes.len() != 40 {
        return None;
    }
    let mut fp = [0u8; 20];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        fp[i] = u8::try_from(hi << 4 | lo).ok()?;
    }
    Some(Fingerprint(fp))
}

/// Reads `otr.fingerprints`. Blank lines are skipped; any other malformed line is an error
/// (libotr skips such lines silently; an import should say so instead).
///
/// # Errors
/// [`LibotrFileError::FingerprintLine`] naming the line, [`LibotrFileError::BadText`] for a
/// name that is not UTF-8, [`LibotrFileError::TooLarge`].
pub fn parse_fingerprints(input: &[u8]) -> Result<Vec<LibotrFingerprint>, LibotrFileError> {
    if input.len() > MAX_FINGERPRINTS_FILE {
        return Err(LibotrFileError::TooLarge { limit: MAX_FINGERPRINTS_FILE });
    }
    let mut out = Vec::new();
    for (n, raw) in input.split(|&b| b == b'\n').enumerate() {
        let line = n + 1;
        let err = |problem| LibotrFileError::FingerprintLine { line, problem };
        if raw.iter().all(|&b| b == b' ' || b == b'\r' || b == b'\t') {
            continue;
        }
        if raw.len() > MAX_FINGERPRINT_LINE {
            return Err(err("longer than libotr's 1000-byte line buffer"));
        }
        // libotr ends the last field at the first carriage return.
        let raw = match raw.iter().position(|&b| b == b'\r') {
            Some(cr) => raw.get(..cr).unwrap_or_default(),
            None => raw,
        };
        let mut fields = raw.splitn(5, |&b| b == b'\t');
        let (Some(remote), Some(account), Some(protocol), Some(hex)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(err("expected remote, account, protocol and fingerprint separated by tabs"));
        };
        let trust = fields.next().unwrap_or_default();
        let fingerprint = std::str::from_utf8(hex)
            .ok()
            .and_then(unhex_fingerprint)
            .ok_or_else(|| err("the fingerprint is not 40 hex digits"))?;
        let trust = std::str::from_utf8(trust).map_err(|_| err("the trust column is not UTF-8"))?;
        out.push(LibotrFingerprint {
            remote: text(remote, "otr.fingerprints", line, "remote username")?,
            account: text(account, "otr.fingerprints", line, "account")?,
            protocol: text(protocol, "otr.fingerprints", line, "protocol")?,
            fingerprint,
            trust: Trust::from_libotr_name(trust),
        });
    }
    Ok(out)
}

/// Writes `otr.fingerprints` as libotr does (lower-case hex, a trailing tab before an empty
/// trust, a newline after every line).
///
/// # Errors
/// [`LibotrFileError::BadText`] for a name with a tab, line break or NUL, and
/// [`LibotrFileError::FingerprintLine`] for a line longer than libotr can read.
pub fn write_fingerprints<'a>(
    entries: impl IntoIterator<Item = &'a LibotrFingerprint>,
) -> Result<Vec<u8>, LibotrFileError> {
    let mut out = String::new();
    for (n, e) in entries.into_iter().enumerate() {
        let line = n + 1;
        for (field, value) in
            [("remote username", &e.remote), ("account", &e.account), ("protocol", &e.protocol)]
        {
            if value.contains(['\0', '\t', '\n', '\r']) {
                return Err(LibotrFileError::BadText { file: "otr.fingerprints", index: line, field });
            }
        }
        let text = format!(
            "{}\t{}\t{}\t{}\t{}\n",
            e.remote,
            e.account,
            e.protocol,
            e.fingerprint,
            e.trust.libotr_name()
        );
        if text.len() > MAX_FINGERPRINT_LINE + 1 {
            return Err(LibotrFileError::FingerprintLine {
                line,
                problem: "names too long for libotr's line buffer",
            });
        }
        out.push_str(&text);
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Written by libotr 4.1.1 (`otrl_privkey_generate`, Debian's libgcrypt 1.10); libotr
    /// reported its fingerprint as below.
    pub(crate) const LIBOTR_KEY: &str = "(privkeys
 (account
(name \"alice@example.com\")
(protocol xmpp)
(private-key 
 (dsa 
  (p #00EC48586F08B7792616F73F15A892C6AB8C01AE619B0FFA588945562A4FEFF186AACA777AE0A5A08E34EAB3450CEC9A37B29C598DB9188840A671226CD9F2F5DDFDEAAF1A771568329C101BB6121F7D07F04B1A54596BAEC6A0F784D597F20539A82418B4E24F164D5ED3A1406D2D3E426F6658281C39CF244C91C71010D25063#)
  (q #00CF595D8AAAACFEA2B94843D0D18606AA2FE3BC9B#)
  (g #00C22A99593757EB9CF0B8646E3D9FB5CF86FBD7ED54351FEBD181FB4ADAF4282C2BB83449248932696A9851EEB8CC3E9CA8D6979FF1852A4D1A8278710AE9B2C2CE65DE96B1CA6B217CAFCE9158262F1A9830460BC85E5E572C6BCF28876F2E0BD98D41CE9461246EDCED32D6818361E0654B5CBBF0A88A7C0FD22A06520C0BE4#)
  (y #4217838F9B884A190AFE1226737F6AE9F022ACF280BE76A404F81A9DDE197F2EEF9F629493232A2AF0C3CF02A6A998596148E7B10826464F53D3C08DC39F851EE8EB981D02C37AD5EDF85EC56B4AFC2597DBAE57C394C08084206E6D81909A9165B908BA2F95D79DC131F8EBB4F10195AAF766E396DCE66F0790B45CA52AD60C#)
  (x #7A8E4E2AB7891501FB3E30FA9CC912DDB65AF05B#)
  )
 )
 )
)
";
    pub(crate) const LIBOTR_FP: &str = "63f8235fe85c6e004a1e72550f45058f07f77d1f";

    #[test]
    fn reads_libotr_written_key_with_libotr_fingerprint() {
        let keys = parse_private_keys(LIBOTR_KEY.as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].account, "alice@example.com");
        assert_eq!(keys[0].protocol, "xmpp");
        assert_eq!(keys[0].key.fingerprint().to_string(), LIBOTR_FP);
    }

    #[test]
    fn writes_byte_for_byte_what_libotr_writes() {
        let keys = parse_private_keys(LIBOTR_KEY.as_bytes()).unwrap();
        let k = &keys[0];
        let out = write_private_keys([(k.account.as_str(), k.protocol.as_str(), &k.key)]).unwrap();
        assert_eq!(std::str::from_utf8(&out).unwrap(), LIBOTR_KEY);
    }

    #[test]
    fn several_accounts_and_last_one_wins() {
        let k = &parse_private_keys(LIBOTR_KEY.as_bytes()).unwrap()[0].key;
        let out =
            write_private_keys([("a", "xmpp", k), ("b b", "prpl-jabber", k), ("a", "xmpp", k)]).unwrap();
        let keys = parse_private_keys(&out).unwrap();
        let names: Vec<_> = keys.iter().map(|k| (k.account.as_str(), k.protocol.as_str())).collect();
        assert_eq!(names, [("b b", "prpl-jabber"), ("a", "xmpp")]);
        let empty = parse_private_keys(b"(privkeys)").unwrap();
        assert!(empty.is_empty());
    }

    /// Replaces the first occurrence of `from` in the sample key.
    fn variant(from: &str, to: &str) -> String {
        assert!(LIBOTR_KEY.contains(from), "{from}");
        LIBOTR_KEY.replacen(from, to, 1)
    }

    #[test]
    fn malformed_key_files_are_clear_errors() {
        type Expect = fn(&LibotrFileError) -> bool;
        let cases: Vec<(String, Expect)> = vec![
            (variant("(x ", "x "), |e| matches!(e, LibotrFileError::Syntax { .. })),
            (variant(" )\n)\n", " )\n"), |e| matches!(e, LibotrFileError::Syntax { .. })),
            (variant("(privkeys", "(keys"), |e| matches!(e, LibotrFileError::NotPrivateKeys(_))),
            (variant("(account", "(acount"), |e| matches!(e, LibotrFileError::NotPrivateKeys(_))),
            (variant("(name \"alice@example.com\")", ""), |e| {
                matches!(e, LibotrFileError::MissingField { field: "name", .. })
            }),
            (variant("(protocol xmpp)", "(protocol)"), |e| {
                matches!(e, LibotrFileError::MissingField { field: "protocol", .. })
            }),
            (variant("(x #7A8E4E2AB7891501FB3E30FA9CC912DDB65AF05B#)", ""), |e| {
                matches!(e, LibotrFileError::MissingField { field: "x", .. })
            }),
            (variant("(dsa", "(rsa"), |e| matches!(e, LibotrFileError::NotDsa { .. })),
            (variant("(x #7A", "(x #FF7A"), |e| {
                matches!(e, LibotrFileError::NumberTooLarge { field: "x", .. })
            }),
            (variant("(p #00EC", &format!("(p #{}EC", "AB".repeat(5000))), |e| {
                matches!(e, LibotrFileError::NumberTooLarge { field: "p", .. })
            }),
            (variant("(x #7A", "(x #7B"), |e| matches!(e, LibotrFileError::InvalidKey { .. })),
            (variant("\"alice@example.com\"", "#FF00#"), |e| matches!(e, LibotrFileError::BadText { .. })),
            (variant("(privkeys", &"(".repeat(100)), |e| matches!(e, LibotrFileError::TooDeep { .. })),
        ];
        for (text, expected) in cases {
            let err = parse_private_keys(text.as_bytes()).unwrap_err();
            assert!(expected(&err), "unexpected error {err:?} for:\n{text}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn fingerprints_round_trip_and_quirks() {
        let text = "bob@x\talice@example.com\txmpp\t63f8235fe85c6e004a1e72550f45058f07f77d1f\tsmp\n\
                    carol\talice\tprpl-jabber\t63F8235FE85C6E004A1E72550F45058F07F77D1F\n\
                    \n\
                    dave\talice\tirc\t0000000000000000000000000000000000000000\t\r\n\
                    erin\talice\tirc\t1111111111111111111111111111111111111111\tverified";
        let entries = parse_fingerprints(text.as_bytes()).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].trust, Trust::VerifiedSmp);
        assert_eq!(entries[1].trust, Trust::Unverified);
        assert_eq!(entries[1].fingerprint, entries[0].fingerprint);
        assert_eq!(entries[2].trust, Trust::Unverified);
        assert_eq!(entries[3].trust, Trust::VerifiedManual);
        let written = write_fingerprints(&entries).unwrap();
        assert!(
            written.starts_with(
                b"bob@x\talice@example.com\txmpp\t63f8235fe85c6e004a1e72550f45058f07f77d1f\tsmp\n"
            )
        );
        assert!(
            written.ends_with(b"\t\nerin\talice\tirc\t1111111111111111111111111111111111111111\tverified\n")
        );
        assert_eq!(parse_fingerprints(&written).unwrap(), entries);
    }

    #[test]
    fn malformed_fingerprint_lines_are_clear_errors() {
        let long = format!("{}\ta\tb\t{}\n", "x".repeat(1000), "0".repeat(40));
        for (text, line) in [
            ("a\tb\tc\n", 1),
            ("ok\ta\tb\t0000000000000000000000000000000000000000\n\na\tb\tc\t00\n", 3),
            ("a\tb\tc\t000000000000000000000000000000000000000g\n", 1),
            (long.as_str(), 1),
        ] {
            match parse_fingerprints(text.as_bytes()) {
                Err(LibotrFileError::FingerprintLine { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{other:?} for {text:?}"),
            }
        }
        assert!(matches!(
            parse_fingerprints(b"\xff\ta\tb\t0000000000000000000000000000000000000000\n"),
            Err(LibotrFileError::BadText { .. })
        ));
        let bad = LibotrFingerprint {
            remote: "a\tb".into(),
            account: "a".into(),
            protocol: "p".into(),
            fingerprint: Fingerprint([0; 20]),
            trust: Trust::Unverified,
        };
        assert!(write_fingerprints([&bad]).is_err());
    }
}
