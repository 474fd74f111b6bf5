//! Accounts: names and Argon2id hashes of their secrets, in one text file.
//!
//! The file `accounts` in the data directory has one line per account:
//! `NAME argon2id M_KIB T P SALT_HEX HASH_HEX`. It is rewritten atomically (temporary file,
//! then rename) and re-read by a running server when it changes, so `otr-relay add-account`
//! works while the server runs. Secrets themselves are never stored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use argon2::{Algorithm, Argon2, Params, Version};
use subtle::ConstantTimeEq;

/// The accounts file name inside the data directory.
pub const FILE_NAME: &str = "accounts";

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Argon2Params {
    /// Memory in KiB (at least 8 × `parallelism`).
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// 19 MiB, 2 passes, 1 lane (OWASP's minimum recommendation for Argon2id).
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

impl Argon2Params {
    /// Cheap parameters for tests only.
    pub const TEST: Self = Self { memory_kib: 64, iterations: 1, parallelism: 1 };
}

/// Account errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// Names are 1–64 characters from `A-Z a-z 0-9 . _ @ -`.
    #[error("invalid account name (use 1-64 characters from A-Z a-z 0-9 . _ @ -)")]
    BadName,
    /// Secrets are [`MIN_SECRET_BYTES`]–1024 bytes.
    #[error("a secret must be {MIN_SECRET_BYTES} to 1024 bytes long (or let add-account generate one)")]
    BadSecret,
    /// The account exists already.
    #[error("account {0:?} already exists")]
    Exists(String),
    /// Invalid Argon2 parameters.
    #[error("argon2: {0}")]
    Argon2(String),
    /// The accounts file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the accounts file is malformed.
    #[error("{path}:{line}: malformed account line")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
    },
    /// The system RNG failed.
    #[error("system random number generator failed")]
    Rng,
}

/// The shortest secret a new account may have, in bytes (generated ones have 48).
pub const MIN_SECRET_BYTES: usize = 12;

/// Whether `name` is an acceptable account name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

/// One account's stored verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    params: Argon2Params,
    salt: [u8; 16],
    hash: [u8; 32],
}

fn argon2(params: Argon2Params) -> Result<Argon2<'static>, AccountError> {
    let p = Params::new(params.memory_kib, params.iterations, params.parallelism, Some(32))
        .map_err(|e| AccountError::Argon2(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, p))
}

fn hash(params: Argon2Params, secret: &[u8], salt: &[u8; 16]) -> Result<[u8; 32], AccountError> {
    let mut out = [0u8; 32];
    argon2(params)?
        .hash_password_into(secret, salt, &mut out)
        .map_err(|e| AccountError::Argon2(e.to_string()))?;
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new random secret: 24 random bytes as 48 hex digits.
///
/// # Errors
/// [`AccountError::Rng`] if the system RNG fails.
pub fn generate_secret() -> Result<String, AccountError> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|_| AccountError::Rng)?;
    Ok(hex(&bytes))
}

fn parse(path: &Path, text: &str) -> Result<HashMap<String, Record>, AccountError> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || AccountError::Malformed { path: path.into(), line: i + 1 };
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let [name, "argon2id", m, t, p, salt, h] = f.as_slice() else { return Err(bad()) };
        let params = Argon2Params {
            memory_kib: m.parse().map_err(|_| bad())?,
            iterations: t.parse().map_err(|_| bad())?,
            parallelism: p.parse().map_err(|_| bad())?,
        };
        let record = Record { params, salt: unhex(salt).ok_or_else(bad)?, hash: unhex(h).ok_or_else(bad)? };
        out.insert((*name).to_string(), record);
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String, AccountError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(AccountError::File { path: path.into(), source }),
    }
}

/// Adds account `name` with `secret` to the accounts file in `data_dir` (created if needed).
///
/// Concurrent calls, from this process or others, take turns on the lock file
/// `accounts.lock`, so none loses another's account. The directory is kept `0700` and the
/// file `0600` (see the server's data directory rules).
///
/// # Errors
/// [`AccountError`] if the name or secret is invalid, the account exists, or the file cannot
/// be written.
pub fn add_account(
    data_dir: &Path,
    name: &str,
    secret: &str,
    params: Argon2Params,
) -> Result<(), AccountError> {
    if !valid_name(name) {
        return Err(AccountError::BadName);
    }
    if !(MIN_SECRET_BYTES..=1024).contains(&secret.len()) {
        return Err(AccountError::BadSecret);
    }
    let file_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AccountError::File { path, source }
    };
    crate::files::secure_dir(data_dir).map_err(file_error(data_dir))?;
    // One writer at a time: concurrent runs would each add to the same old text and the last
    // rename would win, losing the others' accounts (whose secrets were already printed).
    let lock_path = data_dir.join(format!("{FILE_NAME}.lock"));
    let _lock = crate::files::lock(&lock_path).map_err(file_error(&lock_path))?;
    let path = data_dir.join(FILE_NAME);
    let mut text = read(&path)?;
    if parse(&path, &text)?.contains_key(name) {
        return Err(AccountError::Exists(name.into()));
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| AccountError::Rng)?;
    let h = hash(params, secret.as_bytes(), &salt)?;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "{name} argon2id {} {} {} {} {}\n",
        params.memory_kib,
        params.iterations,
        params.parallelism,
        hex(&salt),
        hex(&h)
    ));
    write_atomically(data_dir, &path, text.as_bytes())
}

/// Replaces `path` (in `dir`) with `bytes` through a new temporary file of its own, created
/// `0600`, synced, then renamed over `path`; the directory is synced so the rename lasts.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), AccountError> {
    use std::io::Write;
    let mut unique = [0u8; 8];
    getrandom::fill(&mut unique).map_err(|_| AccountError::Rng)?;
    let tmp = dir.join(format!("{FILE_NAME}.tmp.{}.{}", std::process::id(), hex(&unique)));
    let written = crate::files::private()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(AccountError::File { path: tmp, source });
    }
    if let Err(source) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(AccountError::File { path: path.into(), source });
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| AccountError::File { path: dir.into(), source })
}

/// The accounts a running server knows, re-read when the file changes.
#[derive(Debug)]
pub(crate) struct Accounts {
    path: PathBuf,
    modified: Option<SystemTime>,
    records: HashMap<String, Record>,
    /// The server's own Argon2 parameters, for the dummy hash while there are no accounts.
    default_params: Argon2Params,
    /// Parameters of the dummy hash computed for unknown accounts: those most accounts on
    /// file have, so that a failed login costs the same whether or not the account exists.
    dummy_params: Argon2Params,
}

impl Accounts {
    /// The accounts in `data_dir`; `default_params` are those of the dummy hash until there
    /// is an account.
    pub(crate) fn open(data_dir: &Path, default_params: Argon2Params) -> Result<Self, AccountError> {
        let mut a = Self {
            path: data_dir.join(FILE_NAME),
            modified: None,
            records: HashMap::new(),
            default_params,
            dummy_params: default_params,
        };
        a.refresh()?;
        Ok(a)
    }

    fn refresh(&mut self) -> Result<(), AccountError> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified != self.modified || modified.is_none() {
            self.records = parse(&self.path, &read(&self.path)?)?;
            self.modified = modified;
            self.dummy_params =
                most_common(self.records.values().map(|r| r.params)).unwrap_or(self.default_params);
        }
        Ok(())
    }

    /// Whether `name` exists (after re-reading a changed file).
    pub(crate) fn exists(&mut self, name: &str) -> bool {
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "accounts file unreadable; keeping the last good copy");
        }
        self.records.contains_key(name)
    }

    /// What a login needs to check `name` (a dummy when the account is unknown).
    pub(crate) fn verifier(&mut self, name: &str) -> Verifier {
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "accounts file unreadable; keeping the last good copy");
        }
        match self.records.get(name) {
            Some(r) => Verifier { record: r.clone(), real: true },
            None => Verifier {
                record: Record { params: self.dummy_params, salt: [0; 16], hash: [0; 32] },
                real: false,
            },
        }
    }
}

/// The parameters that occur most often (the most expensive among equally common ones).
fn most_common(params: impl Iterator<Item = Argon2Params>) -> Option<Argon2Params> {
    let mut counts: HashMap<Argon2Params, usize> = HashMap::new();
    for p in params {
        *counts.entry(p).or_default() += 1;
    }
    counts.into_iter().max_by_key(|(p, n)| (*n, p.memory_kib, p.iterations, p.parallelism)).map(|(p, _)| p)
}

/// A copy of one account's verifier, checked off the async runtime.
#[derive(Debug)]
pub(crate) struct Verifier {
    record: Record,
    real: bool,
}

impl Verifier {
    /// Whether `secret` is right. Costs one Argon2id hash whether or not the account exists.
    pub(crate) fn check(&self, secret: &str) -> bool {
        match hash(self.record.params, secret.as_bytes(), &self.record.salt) {
            Ok(h) => self.real & bool::from(h.ct_eq(&self.record.hash)),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_verify() {
        let dir = std::env::temp_dir().join(format!("otr-relay-acct-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        add_account(&dir, "alice", "correct horse", Argon2Params::TEST).unwrap();
        assert!(matches!(
            add_account(&dir, "alice", "whatever whatever", Argon2Params::TEST),
            Err(AccountError::Exists(_))
        ));
        assert!(matches!(
            add_account(&dir, "a b", "whatever whatever", Argon2Params::TEST),
            Err(AccountError::BadName)
        ));
        add_account(&dir, "bob", &generate_secret().unwrap(), Argon2Params::TEST).unwrap();
        let mut accounts = Accounts::open(&dir, Argon2Params::TEST).unwrap();
        assert!(accounts.verifier("alice").check("correct horse"));
        assert!(!accounts.verifier("alice").check("correct horsf"));
        assert!(!accounts.verifier("carol").check("correct horse"));
        assert!(accounts.exists("bob") && !accounts.exists("carol"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_accounts_cost_what_most_accounts_cost() {
        let dir = std::env::temp_dir().join(format!("otr-relay-dummy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let server = Argon2Params { memory_kib: 128, ..Argon2Params::TEST };
        let mut accounts = Accounts::open(&dir, server).unwrap();
        assert_eq!(accounts.verifier("nobody").record.params, server);
        let file = Argon2Params { memory_kib: 256, iterations: 2, parallelism: 1 };
        add_account(&dir, "alice", "correct horse", file).unwrap();
        add_account(&dir, "bob", "correct horse", file).unwrap();
        add_account(&dir, "carol", "correct horse", Argon2Params::TEST).unwrap();
        let mut accounts = Accounts::open(&dir, server).unwrap();
        assert_eq!(accounts.verifier("nobody").record.params, file);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
