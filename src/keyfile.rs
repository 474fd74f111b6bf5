//! A minimal plain-text file holding one long-term DSA key (used by the examples and test
//! peers; the encrypted keystore is the place for real identities).
//!
//! Format: a first line `otr-rs-dsa-key-v1`, then `p=`, `q=`, `g=`, `y=`, `x=` lines of
//! lower-case hex. The file holds a secret: it is created with mode 0600 on Unix.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use otr_core::CryptoError;
use otr_core::{DsaComponents, DsaKeyPair};
use zeroize::Zeroizing;

const MAGIC: &str = "otr-rs-dsa-key-v1";

/// Loads the key at `path`, or generates one with `rng` and writes it there when the file is
/// missing or empty.
///
/// # Errors
/// I/O errors, or `InvalidData` when the file exists but is not a valid key file.
pub fn load_or_generate(
    path: &Path,
    rng: &mut (impl rand_core::CryptoRng + ?Sized),
) -> io::Result<DsaKeyPair> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => parse(&s).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a valid otr-rs key file ({e})", path.display()),
            )
        }),
        Ok(_) => generate_into(path, rng),
        Err(e) if e.kind() == io::ErrorKind::NotFound => generate_into(path, rng),
        Err(e) => Err(e),
    }
}

fn generate_into(path: &Path, rng: &mut (impl rand_core::CryptoRng + ?Sized)) -> io::Result<DsaKeyPair> {
    let key = DsaKeyPair::generate(rng);
    let text = format_key(&key);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    io::Write::write_all(&mut opts.open(path)?, text.as_bytes())?;
    Ok(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The file text for `key` (contains the private key).
pub fn format_key(key: &DsaKeyPair) -> Zeroizing<String> {
    let c = key.components();
    Zeroizing::new(format!(
        "{MAGIC}\np={}\nq={}\ng={}\ny={}\nx={}\n",
        hex(&c.p),
        hex(&c.q),
        hex(&c.g),
        hex(&c.y),
        *Zeroizing::new(hex(&c.x))
    ))
}

/// Parses the file text.
///
/// # Errors
/// A description of what is wrong.
pub fn parse(text: &str) -> Result<DsaKeyPair, String> {
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("first line must be {MAGIC}"));
    }
    let mut field = |name: &str| -> Result<Vec<u8>, String> {
        let line = lines.next().ok_or(format!("missing {name}= line"))?;
        let v =
            line.strip_prefix(name).and_then(|l| l.strip_prefix('=')).ok_or(format!("expected {name}="))?;
        unhex(v).ok_or(format!("{name} is not hex"))
    };
    let (p, q, g, y) = (field("p")?, field("q")?, field("g")?, field("y")?);
    let x = Zeroizing::new(field("x")?);
    DsaKeyPair::from_components(&DsaComponents { p, q, g, y, x })
        .map_err(|e: CryptoError| format!("the numbers are not a valid DSA key: {e}"))
}
