//! The encrypted key store on disk: one file, sealed with a passphrase (see
//! [`otr_keystore`] for the format), written atomically.
//!
//! Saving writes a temporary file in the same directory (mode 0600), flushes it to disk,
//! renames it over the store and flushes the directory: a crash at any point leaves either the
//! old store or the new one, never a mix. Failed opens never write anything.
//!
//! One process at a time should save a given store; concurrent writers do not corrupt it but
//! the last rename wins.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use otr_keystore::{KdfParams, KeyStore, KeystoreError, SealKey};
use rand_core::CryptoRng;

/// Largest store file read (64 MiB); a real one is a few KiB.
pub const MAX_STORE_FILE: u64 = 64 << 20;

/// The store's file name when a directory is given.
pub const STORE_FILE: &str = "keystore.otr";

/// Where the store is: `given` if it names a file, [`STORE_FILE`] inside it if it names a
/// directory (or ends with `/`), else `otr-rs/keystore.otr` under the user's data directory
/// (`data_dir`: the platform's, e.g. from the `dirs` crate). `None` when nothing was given and
/// there is no data directory: ask the user for a path then.
pub fn store_path(given: Option<&Path>, data_dir: Option<PathBuf>) -> Option<PathBuf> {
    match given {
        Some(p) if p.is_dir() || p.as_os_str().to_string_lossy().ends_with('/') => Some(p.join(STORE_FILE)),
        Some(p) => Some(p.to_owned()),
        None => data_dir.map(|d| d.join("otr-rs").join(STORE_FILE)),
    }
}

/// What went wrong with the store file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file system operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// There is no store at the path.
    #[error("no key store at {}; create one first (e.g. `otr keys generate`)", .0.display())]
    NotFound(PathBuf),
    /// A store already exists where a new one was to be created.
    #[error("a key store already exists at {}; open it instead, or choose another path", .0.display())]
    Exists(PathBuf),
    /// The file is larger than any key store.
    #[error("{} is larger than {MAX_STORE_FILE} bytes; it is not a key store", .0.display())]
    TooLarge(PathBuf),
    /// The store's contents or passphrase are wrong (see the inner error).
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
}

pub(crate) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.to_owned(), source }
}

/// An open key store: its contents in memory, and the key to seal them again (the
/// passphrase itself is not kept).
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    keystore: KeyStore,
    key: SealKey,
}

impl Store {
    /// Creates a new, empty store at `path` protected by `passphrase` and writes it. Its
    /// directory is created (mode 0700) if missing.
    ///
    /// # Errors
    /// [`StoreError::Exists`] when a file is already there (it is left untouched); I/O and
    /// parameter errors.
    pub fn create(
        path: &Path,
        passphrase: &[u8],
        params: KdfParams,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Self, StoreError> {
        if fs::symlink_metadata(path).is_ok() {
            return Err(StoreError::Exists(path.to_owned()));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        let key = SealKey::derive(passphrase, params, rng)?;
        let store = Self { path: path.to_owned(), keystore: KeyStore::new(), key };
        store.save(rng)?;
        Ok(store)
    }

    /// Opens the store at `path`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::TooLarge`], I/O errors, and
    /// [`StoreError::Keystore`] for a wrong passphrase or a damaged file (the file is never
    /// modified).
    pub fn open(path: &Path, passphrase: &[u8]) -> Result<Self, StoreError> {
        let bytes = read_bounded(path)?;
        let (keystore, key) = KeyStore::open(&bytes, passphrase)?;
        Ok(Self { path: path.to_owned(), keystore, key })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The contents.
    pub fn keystore(&self) -> &KeyStore {
        &self.keystore
    }

    /// The contents, to change (then [`save`](Self::save)).
    pub fn keystore_mut(&mut self) -> &mut KeyStore {
        &mut self.keystore
    }

    /// The Argon2 parameters the store is sealed with.
    pub fn kdf_params(&self) -> KdfParams {
        self.key.params()
    }

    /// The store's passphrase-derived key, to seal what lives beside the store (session
    /// snapshots: [`SnapshotDir`](crate::snapshots::SnapshotDir)) without running Argon2 again.
    pub fn seal_key(&self) -> &SealKey {
        &self.key
    }

    /// Seals the contents and replaces the file atomically.
    ///
    /// # Errors
    /// I/O errors (the old file is then intact).
    pub fn save(&self, rng: &mut (impl CryptoRng + ?Sized)) -> Result<(), StoreError> {
        let bytes = self.keystore.seal(&self.key, rng)?;
        write_atomically(&self.path, &bytes, rng, false).map(|_| ())
    }

    /// Re-seals the store under a new passphrase (and, optionally, new Argon2 parameters)
    /// and saves it. If saving fails, the store keeps its old passphrase, on disk and here.
    ///
    /// # Errors
    /// Parameter and I/O errors.
    pub fn change_passphrase(
        &mut self,
        new_passphrase: &[u8],
        params: Option<KdfParams>,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), StoreError> {
        let key = SealKey::derive(new_passphrase, params.unwrap_or(self.key.params()), rng)?;
        let bytes = self.keystore.seal(&key, rng)?;
        write_atomically(&self.path, &bytes, rng, false)?;
        self.key = key;
        Ok(())
    }

    /// TEST HOOK: does everything [`save`](Self::save) does up to the rename, then stops as a
    /// crash would, leaving the temporary file behind. Returns its path.
    ///
    /// # Errors
    /// As [`save`](Self::save).
    #[doc(hidden)]
    pub fn save_test_crash_before_rename(
        &self,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<PathBuf, StoreError> {
        let bytes = self.keystore.seal(&self.key, rng)?;
        write_atomically(&self.path, &bytes, rng, true)
    }
}

pub(crate) fn read_bounded(path: &Path) -> Result<Vec<u8>, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound(path.to_owned())),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_STORE_FILE + 1).read_to_end(&mut bytes).map_err(io_err("read", path))?;
    if bytes.len() as u64 > MAX_STORE_FILE {
        return Err(StoreError::TooLarge(path.to_owned()));
    }
    Ok(bytes)
}

/// Creates `dir` and its parents if missing; the last level gets mode 0700 on Unix.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_err("create directory", dir))
}

fn temp_prefix(path: &Path) -> Option<String> {
    path.file_name().map(|n| format!(".{}.tmp-", n.to_string_lossy()))
}

/// Writes `bytes` to a fresh temporary file beside `path` (mode 0600), fsyncs it, renames it
/// over `path` and fsyncs the directory. With `crash_before_rename`, stops after the fsync
/// and returns the temporary path.
pub(crate) fn write_atomically(
    path: &Path,
    bytes: &[u8],
    rng: &mut (impl CryptoRng + ?Sized),
    crash_before_rename: bool,
) -> Result<PathBuf, StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let prefix = temp_prefix(path).ok_or_else(|| StoreError::Io {
        op: "save to",
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
    })?;
    let mut tag = [0u8; 8];
    rng.fill_bytes(&mut tag);
    let tmp = dir.join(format!("{prefix}{}", tag.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let result = (|| {
        let mut f = opts.open(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(bytes).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("flush to disk", &tmp))?;
        drop(f);
        if crash_before_rename {
            return Ok(());
        }
        fs::rename(&tmp, path).map_err(io_err("replace", path))?;
        // The rename is durable only once the directory entry is on disk.
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err("flush directory", &dir))
    })();
    if crash_before_rename {
        return result.map(|()| tmp);
    }
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    remove_stale_temps(&dir, &prefix);
    Ok(path.to_owned())
}

/// Removes temporary files an interrupted save left behind (they hold old, sealed contents,
/// possibly under an old passphrase). Best effort.
fn remove_stale_temps(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
