//! Session snapshots on disk: sealed under the key store's key, written atomically, one file
//! per conversation, with a rollback ledger beside it.
//!
//! A [`SnapshotDir`] keeps, for each (account, peer), `<id>.snap` (the sealed snapshot bytes
//! with a sequence number) and `<id>.seq` (the newest sequence number written, sealed too);
//! `<id>` is a hash of the names, so the directory shows no contact names. Writing a snapshot
//! writes the `.snap` first, then the `.seq`: a crash between leaves a newer snapshot than
//! the ledger says, which opens. Reading refuses a snapshot older than its ledger (a file
//! rolled back: [`SnapshotFileError::RolledBack`]), so a restored conversation never accepts
//! again what it received after that snapshot. Removing a conversation deletes its snapshot
//! and keeps its ledger, so an old copy of the snapshot cannot come back either.
//!
//! Both files live in one directory: whoever can roll back both can defeat the ledger (the
//! engine still never reuses a counter; see SECURITY.md, "Session snapshots").

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use otr_keystore::{SealKey, SealedError};
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::store::{StoreError, create_private_dir, io_err, read_bounded, write_atomically};

/// Why a saved snapshot could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotFileError {
    /// A file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file did not open: damaged, replaced, or sealed under another passphrase.
    #[error("the saved conversation in {} cannot be opened: {source}; a new private conversation is needed", path.display())]
    Sealed {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        source: SealedError,
    },
    /// The snapshot is older than the newest one written: the file was rolled back (a restored
    /// backup, or tampering). It is not used.
    #[error(
        "the saved conversation in {} is older than the newest one written (number {found}, expected at least {newest}): it was rolled back, so it is not used; a new private conversation is needed", path.display()
    )]
    RolledBack {
        /// The file.
        path: PathBuf,
        /// Its sequence number.
        found: u64,
        /// The newest sequence number written.
        newest: u64,
    },
}

/// A directory of sealed session snapshots, one per (account, peer).
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
    key: SealKey,
}

impl SnapshotDir {
    /// Snapshots in `dir` (created with mode 0700 if missing), sealed with `key` (the key
    /// store's: [`Store::seal_key`](crate::Store::seal_key)).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(dir: &Path, key: SealKey) -> Result<Self, StoreError> {
        create_private_dir(dir)?;
        Ok(Self { dir: dir.to_owned(), key })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn id(account: &str, peer: &str) -> String {
        let digest = Sha256::new()
            .chain_update(account.as_bytes())
            .chain_update([0])
            .chain_update(peer.as_bytes())
            .finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn label(what: &str, account: &str, peer: &str) -> Vec<u8> {
        [what.as_bytes(), b"\0", account.as_bytes(), b"\0", peer.as_bytes()].concat()
    }

    fn paths(&self, account: &str, peer: &str) -> (PathBuf, PathBuf) {
        let id = Self::id(account, peer);
        (self.dir.join(format!("{id}.snap")), self.dir.join(format!("{id}.seq")))
    }

    /// The newest sequence number written for this conversation (0 if none).
    fn newest(&self, account: &str, peer: &str) -> Result<u64, SnapshotFileError> {
        let (_, seq_path) = self.paths(account, peer);
        let sealed = match read_bounded(&seq_path) {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let plain = self
            .key
            .open_blob(&Self::label("otr-rs snapshot ledger", account, peer), &sealed)
            .map_err(|source| SnapshotFileError::Sealed { path: seq_path.clone(), source })?;
        let bytes: [u8; 8] = plain[..]
            .try_into()
            .map_err(|_| SnapshotFileError::Sealed { path: seq_path, source: SealedError::Corrupted })?;
        Ok(u64::from_be_bytes(bytes))
    }

    fn write_newest(
        &self,
        account: &str,
        peer: &str,
        seq: u64,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), StoreError> {
        let (_, seq_path) = self.paths(account, peer);
        let sealed = self.key.seal_blob(
            &Self::label("otr-rs snapshot ledger", account, peer),
            &seq.to_be_bytes(),
            rng,
        );
        write_atomically(&seq_path, &sealed, rng, false).map(|_| ())
    }

    /// Seals `snapshot` (a `Session::snapshot`'s bytes) for the conversation of `account`
    /// with `peer` and replaces the previous one atomically.
    ///
    /// # Errors
    /// I/O errors, or a ledger that cannot be read (the previous snapshot is then intact).
    pub fn save(
        &self,
        account: &str,
        peer: &str,
        snapshot: &[u8],
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), SnapshotFileError> {
        let seq = self.newest(account, peer)?.saturating_add(1);
        let mut plain = Zeroizing::new(Vec::with_capacity(8 + snapshot.len()));
        plain.extend_from_slice(&seq.to_be_bytes());
        plain.extend_from_slice(snapshot);
        let (snap_path, _) = self.paths(account, peer);
        let sealed = self.key.seal_blob(&Self::label("otr-rs snapshot", account, peer), &plain, rng);
        write_atomically(&snap_path, &sealed, rng, false)?;
        self.write_newest(account, peer, seq, rng)?;
        Ok(())
    }

    /// The snapshot saved for the conversation of `account` with `peer`, if there is one.
    ///
    /// # Errors
    /// [`SnapshotFileError`]: unreadable, damaged or foreign files, or a rolled-back snapshot.
    /// None of them is ever used; start a new conversation.
    pub fn load(&self, account: &str, peer: &str) -> Result<Option<Zeroizing<Vec<u8>>>, SnapshotFileError> {
        let (snap_path, _) = self.paths(account, peer);
        let sealed = match read_bounded(&snap_path) {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let newest = self.newest(account, peer)?;
        let plain = self
            .key
            .open_blob(&Self::label("otr-rs snapshot", account, peer), &sealed)
            .map_err(|source| SnapshotFileError::Sealed { path: snap_path.clone(), source })?;
        let Some((seq, snapshot)) = plain.split_first_chunk::<8>() else {
            return Err(SnapshotFileError::Sealed { path: snap_path, source: SealedError::Corrupted });
        };
        let found = u64::from_be_bytes(*seq);
        if found < newest {
            return Err(SnapshotFileError::RolledBack { path: snap_path, found, newest });
        }
        Ok(Some(Zeroizing::new(snapshot.to_vec())))
    }

    /// Keeps the conversation of `account` with `peer` as it now is: saves `snapshot`, or,
    /// with `None` (no private conversation any more), deletes the saved one.
    ///
    /// # Errors
    /// As [`save`](Self::save) and [`remove`](Self::remove).
    pub fn keep(
        &self,
        account: &str,
        peer: &str,
        snapshot: Option<&[u8]>,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), SnapshotFileError> {
        match snapshot {
            Some(bytes) => self.save(account, peer, bytes, rng),
            None => Ok(self.remove(account, peer)?),
        }
    }

    /// Deletes the snapshot of the conversation of `account` with `peer` (when it ended); its
    /// ledger stays, so an old copy of the snapshot is refused.
    ///
    /// # Errors
    /// I/O errors other than the file being gone already.
    pub fn remove(&self, account: &str, peer: &str) -> Result<(), StoreError> {
        let (snap_path, _) = self.paths(account, peer);
        match fs::remove_file(&snap_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("delete", &snap_path)(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use otr_keystore::KdfParams;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    fn dir(tmp: &Path, rng: &mut ChaCha20Rng) -> SnapshotDir {
        let key =
            SealKey::derive(b"pw", KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }, rng).unwrap();
        SnapshotDir::new(&tmp.join("state"), key).unwrap()
    }

    #[test]
    fn saves_loads_refuses_rollback_and_forgets_on_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let d = dir(tmp.path(), &mut rng);
        assert!(d.load("alice", "bob").unwrap().is_none());
        d.save("alice", "bob", b"first", &mut rng).unwrap();
        let (snap, _) = d.paths("alice", "bob");
        let old = fs::read(&snap).unwrap();
        d.save("alice", "bob", b"second", &mut rng).unwrap();
        assert_eq!(&**d.load("alice", "bob").unwrap().unwrap(), b"second");
        // Another conversation's file under this one's name does not open.
        d.save("alice", "carol", b"carol's", &mut rng).unwrap();
        let (carol, _) = d.paths("alice", "carol");
        fs::copy(&carol, &snap).unwrap();
        assert!(matches!(d.load("alice", "bob"), Err(SnapshotFileError::Sealed { .. })));
        // The older copy of bob's is refused.
        fs::write(&snap, &old).unwrap();
        assert!(matches!(
            d.load("alice", "bob"),
            Err(SnapshotFileError::RolledBack { found: 1, newest: 2, .. })
        ));
        // After the end, even a copy of the newest is refused once a newer one was written.
        d.save("alice", "bob", b"third", &mut rng).unwrap();
        d.remove("alice", "bob").unwrap();
        assert!(d.load("alice", "bob").unwrap().is_none());
        fs::write(&snap, &old).unwrap();
        assert!(matches!(d.load("alice", "bob"), Err(SnapshotFileError::RolledBack { .. })));
        // No names on disk.
        for e in fs::read_dir(d.dir()).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(!name.contains("bob") && !name.contains("alice"), "{name}");
        }
    }
}
