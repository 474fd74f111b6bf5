//! Identity and trust: our accounts' long-term DSA keys, the fingerprints seen for each
//! contact and whether they were verified, and the encrypted file format that keeps them.
//!
//! Pure: bytes in, bytes out. The facade's `otr::store` puts the bytes in a file atomically.
//!
//! # Trust in a conversation
//! After [`Event::Secure`], call [`KeyStore::record_seen`] (or [`KeyStore::observe`] with the
//! event): it says whether the fingerprint is [`Seen::New`], [`Seen::Known`] (with its trust)
//! or [`Seen::Changed`]; a change must be shown to the user, with the previous fingerprints it
//! returns. After [`Event::SmpSucceeded`], [`KeyStore::observe`] marks the fingerprint
//! [`Trust::VerifiedSmp`]; [`KeyStore::set_trust`] records a manual check. Save the store
//! afterwards.
//!
//! # File format (version 1)
//! ```text
//! magic       8 bytes  "OTRRSKEY"
//! version     u16      1
//! kdf         u8       1 = Argon2id, version 0x13
//! memory      u32      KiB
//! iterations  u32
//! lanes       u32
//! salt        16 bytes
//! nonce       12 bytes
//! ciphertext  AES-256-GCM of the contents, with the 16-byte tag at the end
//! ```
//! All integers big-endian. The key is Argon2id(passphrase, salt) with the header's
//! parameters; the whole header is the AEAD's associated data, so changing any bit of the
//! file makes opening fail. Parameters outside [`KdfParams`]' bounds are refused before
//! Argon2 runs, so a forged header cannot make opening take unbounded memory or time.
//! The contents (only ever in memory, zeroized on drop) are: a format byte (1); an INT
//! count of accounts, each DATA name, DATA protocol, MPIs p, q, g, y, x; an INT count of
//! contacts, each DATA account, DATA protocol, DATA remote, INT count, then per fingerprint
//! 20 bytes and a trust byte (0 unverified, 1 SMP, 2 manual).

use std::collections::BTreeMap;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use otr_core::{CryptoError, DsaComponents, DsaKeyPair, Event, Fingerprint};

use crate::bytes::{Malformed, Reader};
use crate::libotr::{self, LibotrFileError, LibotrFingerprint};

/// The file's first bytes.
pub const MAGIC: [u8; 8] = *b"OTRRSKEY";
/// The file format version this code writes and reads.
pub const VERSION: u16 = 1;
const KDF_ARGON2ID: u8 = 1;
pub(crate) const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Length of the header (everything before the ciphertext).
pub const HEADER_LEN: usize = 8 + 2 + 1 + 4 + 4 + 4 + SALT_LEN + NONCE_LEN;
const CONTENTS_FORMAT: u8 = 1;

/// What went wrong with the key store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// The data does not start with the key store's magic bytes.
    #[error("not an otr-rs key store (wrong magic bytes); check the path")]
    NotAKeystore,
    /// The file was written by a newer (or unknown) version of the format.
    #[error("key store format version {0} is not supported by this version of otr-rs; upgrade it")]
    UnsupportedVersion(u16),
    /// The file names a key derivation function this code does not know.
    #[error(
        "key store uses unknown key derivation function #{0}; the file is damaged or from a newer otr-rs"
    )]
    UnsupportedKdf(u8),
    /// The file is shorter than its header plus an authentication tag.
    #[error("key store file is truncated ({len} bytes); restore it from a backup")]
    Truncated {
        /// The length found.
        len: usize,
    },
    /// The header asks for Argon2 parameters outside the accepted bounds. Nothing was run.
    #[error(
        "key store header asks for Argon2 {what} = {value}, outside {min}..={max}; the file is damaged or forged"
    )]
    UnreasonableKdfParams {
        /// Which parameter.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The smallest accepted.
        min: u64,
        /// The largest accepted.
        max: u64,
    },
    /// Argon2 refused the parameters or failed.
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// Authentication failed: the passphrase is wrong, or the file was changed.
    #[error("cannot open the key store: wrong passphrase, or the file was modified or damaged")]
    WrongPassphraseOrCorrupted,
    /// The decrypted contents are malformed (a bug, or a file from an incompatible writer).
    #[error("the key store decrypted but its contents are malformed ({0}); restore it from a backup")]
    Contents(&'static str),
    /// The store already has a (different) key for this account.
    #[error("the store already has a key for {account} ({protocol}); remove it first or ask to replace it")]
    AccountExists {
        /// The account name.
        account: String,
        /// The protocol.
        protocol: String,
    },
    /// The fingerprint is not known for that contact.
    #[error("fingerprint {0} is not known for that contact; record it first")]
    UnknownFingerprint(Fingerprint),
    /// A name is too long to store (over 64 KiB).
    #[error("a name is longer than 64 KiB")]
    NameTooLong,
    /// Importing or exporting libotr's files failed.
    #[error(transparent)]
    Libotr(#[from] LibotrFileError),
}

/// How much a fingerprint is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Trust {
    /// Seen, never verified.
    #[default]
    Unverified,
    /// Verified by a successful SMP run.
    VerifiedSmp,
    /// Verified by the user comparing fingerprints (or importing a verified entry).
    VerifiedManual,
}

impl Trust {
    /// Whether it was verified one way or the other.
    pub fn is_verified(self) -> bool {
        self != Trust::Unverified
    }

    /// The trust column of libotr's `otr.fingerprints`: empty, `smp` (what libotr writes
    /// after SMP) or `verified` (what pidgin-otr writes after a manual check).
    pub fn libotr_name(self) -> &'static str {
        match self {
            Trust::Unverified => "",
            Trust::VerifiedSmp => "smp",
            Trust::VerifiedManual => "verified",
        }
    }

    /// Reads a libotr trust column: empty is unverified, `smp` is SMP, anything else is what
    /// libotr clients treat as verified.
    pub fn from_libotr_name(name: &str) -> Self {
        match name {
            "" => Trust::Unverified,
            "smp" => Trust::VerifiedSmp,
            _ => Trust::VerifiedManual,
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            Trust::Unverified => 0,
            Trust::VerifiedSmp => 1,
            Trust::VerifiedManual => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Trust::Unverified),
            1 => Some(Trust::VerifiedSmp),
            2 => Some(Trust::VerifiedManual),
            _ => None,
        }
    }
}

impl core::fmt::Display for Trust {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Trust::Unverified => "unverified",
            Trust::VerifiedSmp => "verified (SMP)",
            Trust::VerifiedManual => "verified (manually)",
        })
    }
}

/// A remote account as seen from one of our accounts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContactId {
    /// Our account.
    pub account: String,
    /// The protocol.
    pub protocol: String,
    /// The remote account.
    pub remote: String,
}

impl ContactId {
    /// A contact of `account` on `protocol`.
    pub fn new(account: impl Into<String>, protocol: impl Into<String>, remote: impl Into<String>) -> Self {
        Self { account: account.into(), protocol: protocol.into(), remote: remote.into() }
    }
}

/// A fingerprint known for a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownFingerprint {
    /// The fingerprint.
    pub fingerprint: Fingerprint,
    /// How far it is trusted.
    pub trust: Trust,
}

/// What [`KeyStore::record_seen`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a changed fingerprint must be shown to the user"]
pub enum Seen {
    /// The first fingerprint ever seen for this contact (recorded, unverified).
    New,
    /// Already known for this contact.
    Known {
        /// Its trust.
        trust: Trust,
    },
    /// The contact had other fingerprints and this one is new: the key CHANGED. Show it,
    /// with the previous fingerprints, and treat it as unverified. (Recorded, unverified.)
    Changed {
        /// The fingerprints known before, oldest first, with their trust.
        previous: Vec<KnownFingerprint>,
    },
}

/// What [`KeyStore::observe`] did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a changed fingerprint must be shown to the user"]
pub enum Observation {
    /// A private conversation started with `fingerprint` (from [`Event::Secure`]).
    Seen {
        /// The remote's fingerprint.
        fingerprint: Fingerprint,
        /// Whether it is new, known or changed.
        seen: Seen,
    },
    /// SMP verified `fingerprint` (from [`Event::SmpSucceeded`]); it is now trusted.
    Verified {
        /// The fingerprint now marked verified.
        fingerprint: Fingerprint,
    },
}

/// One of our accounts and its long-term key.
#[derive(Debug, Clone)]
pub struct Account {
    name: String,
    protocol: String,
    key: DsaKeyPair,
}

impl Account {
    /// The account name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The protocol (e.g. `xmpp`, or `prpl-jabber` for keys from Pidgin).
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// The long-term key pair.
    pub fn key(&self) -> &DsaKeyPair {
        &self.key
    }

    /// The key's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.key.fingerprint()
    }
}

/// Argon2id cost parameters, as stored in the file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The default: 64 MiB, 3 passes, 1 lane.
    pub const DEFAULT: Self = Self { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 };
    /// Largest memory accepted: 1 GiB.
    pub const MAX_MEMORY_KIB: u32 = 1 << 20;
    /// Most passes accepted.
    pub const MAX_ITERATIONS: u32 = 16;
    /// Most lanes accepted.
    pub const MAX_PARALLELISM: u32 = 16;
    /// Largest memory × passes accepted (4 GiB of memory traffic).
    pub const MAX_WORK_KIB: u64 = 4 << 20;

    /// Checks the bounds (Argon2 also needs at least 8 KiB per lane).
    ///
    /// # Errors
    /// [`KeystoreError::UnreasonableKdfParams`] naming the parameter out of bounds.
    pub fn check(&self) -> Result<(), KeystoreError> {
        let bound = |what, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(KeystoreError::UnreasonableKdfParams { what, value, min, max })
            }
        };
        bound("parallelism", self.parallelism.into(), 1, Self::MAX_PARALLELISM.into())?;
        bound("iterations", self.iterations.into(), 1, Self::MAX_ITERATIONS.into())?;
        bound(
            "memory (KiB)",
            self.memory_kib.into(),
            8 * u64::from(self.parallelism),
            Self::MAX_MEMORY_KIB.into(),
        )?;
        bound(
            "memory × iterations (KiB)",
            u64::from(self.memory_kib) * u64::from(self.iterations),
            1,
            Self::MAX_WORK_KIB,
        )
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A key derived from a passphrase (with its salt and parameters), ready to seal a store
/// without running Argon2 again. Zeroized on drop.
#[derive(Clone)]
pub struct SealKey {
    params: KdfParams,
    salt: [u8; SALT_LEN],
    key: Zeroizing<[u8; 32]>,
}

impl core::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SealKey").field("params", &self.params).finish_non_exhaustive()
    }
}

fn derive(
    passphrase: &[u8],
    salt: &[u8; SALT_LEN],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    params.check()?;
    let p = argon2::Params::new(params.memory_kib, params.iterations, params.parallelism, Some(32))
        .map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut key = Zeroizing::new([0u8; 32]);
    argon.hash_password_into(passphrase, salt, &mut *key).map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    Ok(key)
}

impl SealKey {
    /// Derives a key from `passphrase` with a fresh random salt. This runs Argon2id (about a
    /// quarter of a second with the default parameters).
    ///
    /// # Errors
    /// [`KeystoreError::UnreasonableKdfParams`] or [`KeystoreError::Kdf`].
    pub fn derive(
        passphrase: &[u8],
        params: KdfParams,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Self, KeystoreError> {
        let mut salt = [0u8; SALT_LEN];
        rng.fill_bytes(&mut salt);
        let key = derive(passphrase, &salt, params)?;
        Ok(Self { params, salt, key })
    }

    /// The Argon2 parameters.
    pub fn params(&self) -> KdfParams {
        self.params
    }

    pub(crate) fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }

    pub(crate) fn key_bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

/// The header of a key store file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The format version.
    pub version: u16,
    /// The Argon2id parameters.
    pub params: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let parts: [&[u8]; 8] = [
            &MAGIC,
            &self.version.to_be_bytes(),
            &[KDF_ARGON2ID],
            &self.params.memory_kib.to_be_bytes(),
            &self.params.iterations.to_be_bytes(),
            &self.params.parallelism.to_be_bytes(),
            &self.salt,
            &self.nonce,
        ];
        let mut at = 0;
        for p in parts {
            out[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        out
    }

    /// Reads and checks the header of a key store file: magic, version, KDF and parameter
    /// bounds. Runs nothing expensive.
    ///
    /// # Errors
    /// [`KeystoreError::NotAKeystore`], [`KeystoreError::Truncated`],
    /// [`KeystoreError::UnsupportedVersion`], [`KeystoreError::UnsupportedKdf`],
    /// [`KeystoreError::UnreasonableKdfParams`].
    pub fn read(file: &[u8]) -> Result<Self, KeystoreError> {
        if file.get(..MAGIC.len()).is_some_and(|m| m != MAGIC) {
            return Err(KeystoreError::NotAKeystore);
        }
        if file.len() < HEADER_LEN + TAG_LEN {
            return Err(KeystoreError::Truncated { len: file.len() });
        }
        let mut r = Reader::new(file);
        let truncated = |_: Malformed| KeystoreError::Truncated { len: file.len() };
        r.take(MAGIC.len()).map_err(truncated)?;
        let version = r.u16().map_err(truncated)?;
        if version != VERSION {
            return Err(KeystoreError::UnsupportedVersion(version));
        }
        let kdf = r.u8().map_err(truncated)?;
        if kdf != KDF_ARGON2ID {
            return Err(KeystoreError::UnsupportedKdf(kdf));
        }
        let params = KdfParams {
            memory_kib: r.u32().map_err(truncated)?,
            iterations: r.u32().map_err(truncated)?,
            parallelism: r.u32().map_err(truncated)?,
        };
        params.check()?;
        let salt = r.array().map_err(truncated)?;
        let nonce = r.array().map_err(truncated)?;
        Ok(Self { version, params, salt, nonce })
    }
}

/// Accounts, contacts' fingerprints and trust. Private keys zeroize on drop.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    accounts: Vec<Account>,
    contacts: BTreeMap<ContactId, Vec<KnownFingerprint>>,
}

/// What [`KeyStore::import_libotr`] brought in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Accounts whose keys were added, as (name, protocol, fingerprint).
    pub accounts: Vec<(String, String, Fingerprint)>,
    /// Accounts skipped because the store already had that same key.
    pub unchanged_accounts: usize,
    /// Fingerprints newly recorded.
    pub new_fingerprints: usize,
    /// Known fingerprints whose trust the import raised.
    pub trust_raised: usize,
}

/// The two files of libotr, as [`KeyStore::export_libotr`] writes them.
#[derive(Debug, Clone)]
pub struct LibotrExport {
    /// `otr.private_key` (secret: zeroized on drop).
    pub private_key: Zeroizing<Vec<u8>>,
    /// `otr.fingerprints`.
    pub fingerprints: Vec<u8>,
}

impl KeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Our accounts, in the order they were added.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.iter()
    }

    /// The account `name` on `protocol`.
    pub fn account(&self, name: &str, protocol: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name && a.protocol == protocol)
    }

    /// Adds an account's key. With `replace`, a different key already stored for it is
    /// replaced (the old one is lost); adding the same key again is a no-op.
    ///
    /// # Errors
    /// [`KeystoreError::AccountExists`] when it has a different key and `replace` is false;
    /// [`KeystoreError::NameTooLong`].
    pub fn add_account(
        &mut self,
        name: &str,
        protocol: &str,
        key: DsaKeyPair,
        replace: bool,
    ) -> Result<&Account, KeystoreError> {
        if name.len() > usize::from(u16::MAX) || protocol.len() > usize::from(u16::MAX) {
            return Err(KeystoreError::NameTooLong);
        }
        let account = Account { name: name.to_owned(), protocol: protocol.to_owned(), key };
        let index = match self.accounts.iter().position(|a| a.name == name && a.protocol == protocol) {
            Some(i) => {
                if self.accounts[i].fingerprint() != account.fingerprint() && !replace {
                    return Err(KeystoreError::AccountExists {
                        account: account.name,
                        protocol: account.protocol,
                    });
                }
                self.accounts[i] = account;
                i
            }
            None => {
                self.accounts.push(account);
                self.accounts.len() - 1
            }
        };
        Ok(&self.accounts[index])
    }

    /// Generates a new key for an account that has none (1024-bit DSA: takes a moment).
    ///
    /// # Errors
    /// [`KeystoreError::AccountExists`] when the account already has a key.
    pub fn generate_account(
        &mut self,
        name: &str,
        protocol: &str,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<&Account, KeystoreError> {
        if self.account(name, protocol).is_some() {
            return Err(KeystoreError::AccountExists {
                account: name.to_owned(),
                protocol: protocol.to_owned(),
            });
        }
        self.add_account(name, protocol, DsaKeyPair::generate(rng), false)
    }

    /// Removes an account and its key.
    pub fn remove_account(&mut self, name: &str, protocol: &str) -> Option<Account> {
        let i = self.accounts.iter().position(|a| a.name == name && a.protocol == protocol)?;
        Some(self.accounts.remove(i))
    }

    /// Every contact with its known fingerprints (oldest first).
    pub fn contacts(&self) -> impl Iterator<Item = (&ContactId, &[KnownFingerprint])> {
        self.contacts.iter().map(|(c, f)| (c, f.as_slice()))
    }

    /// The fingerprints known for `contact`, oldest first.
    pub fn fingerprints(&self, contact: &ContactId) -> &[KnownFingerprint] {
        self.contacts.get(contact).map_or(&[], Vec::as_slice)
    }

    /// The trust of `fingerprint` for `contact`, if known.
    pub fn trust(&self, contact: &ContactId, fingerprint: &Fingerprint) -> Option<Trust> {
        self.fingerprints(contact).iter().find(|k| k.fingerprint == *fingerprint).map(|k| k.trust)
    }

    /// Records that `contact` used `fingerprint` (call it on [`Event::Secure`]) and says
    /// whether it is new, known, or a change the user must see.
    ///
    /// # Errors
    /// [`KeystoreError::NameTooLong`] for a contact name over 64 KiB.
    pub fn record_seen(
        &mut self,
        contact: &ContactId,
        fingerprint: Fingerprint,
    ) -> Result<Seen, KeystoreError> {
        check_contact(contact)?;
        let known = self.contacts.entry(contact.clone()).or_default();
        if let Some(k) = known.iter().find(|k| k.fingerprint == fingerprint) {
            return Ok(Seen::Known { trust: k.trust });
        }
        let seen = if known.is_empty() { Seen::New } else { Seen::Changed { previous: known.clone() } };
        known.push(KnownFingerprint { fingerprint, trust: Trust::Unverified });
        Ok(seen)
    }

    /// Sets the trust of a fingerprint already known for `contact` (e.g. after the user
    /// compared it, [`Trust::VerifiedManual`]; or to withdraw trust, [`Trust::Unverified`]).
    ///
    /// # Errors
    /// [`KeystoreError::UnknownFingerprint`] when it was never recorded for that contact.
    pub fn set_trust(
        &mut self,
        contact: &ContactId,
        fingerprint: &Fingerprint,
        trust: Trust,
    ) -> Result<(), KeystoreError> {
        let k = self
            .contacts
            .get_mut(contact)
            .and_then(|v| v.iter_mut().find(|k| k.fingerprint == *fingerprint))
            .ok_or(KeystoreError::UnknownFingerprint(*fingerprint))?;
        k.trust = trust;
        Ok(())
    }

    /// Sets the trust of `fingerprint` for every contact that has it; returns how many.
    pub fn set_trust_everywhere(&mut self, fingerprint: &Fingerprint, trust: Trust) -> usize {
        let mut n = 0;
        for k in self.contacts.values_mut().flatten().filter(|k| k.fingerprint == *fingerprint) {
            k.trust = trust;
            n += 1;
        }
        n
    }

    /// Marks `fingerprint` verified by SMP for `contact` (recording it if needed). A manual
    /// verification already there is kept.
    ///
    /// # Errors
    /// [`KeystoreError::NameTooLong`].
    pub fn mark_smp_verified(
        &mut self,
        contact: &ContactId,
        fingerprint: Fingerprint,
    ) -> Result<(), KeystoreError> {
        let _ = self.record_seen(contact, fingerprint)?;
        if self.trust(contact, &fingerprint) != Some(Trust::VerifiedManual) {
            self.set_trust(contact, &fingerprint, Trust::VerifiedSmp)?;
        }
        Ok(())
    }

    /// Updates the store from a session event about `contact`: [`Event::Secure`] records the
    /// fingerprint, [`Event::SmpSucceeded`] marks it verified. Other events: `None`.
    ///
    /// An SMP failure changes nothing here (libotr instead clears the trust of the
    /// fingerprint; a mistyped secret is the likelier cause).
    ///
    /// # Errors
    /// [`KeystoreError::NameTooLong`].
    pub fn observe(
        &mut self,
        contact: &ContactId,
        event: &Event,
    ) -> Result<Option<Observation>, KeystoreError> {
        match event {
            Event::Secure { fingerprint, .. } => Ok(Some(Observation::Seen {
                fingerprint: *fingerprint,
                seen: self.record_seen(contact, *fingerprint)?,
            })),
            Event::SmpSucceeded { fingerprint, .. } => {
                self.mark_smp_verified(contact, *fingerprint)?;
                Ok(Some(Observation::Verified { fingerprint: *fingerprint }))
            }
            _ => Ok(None),
        }
    }

    /// Encrypts the store under `key` with a fresh nonce: the bytes of a key store file.
    ///
    /// # Errors
    /// [`KeystoreError::Contents`] if the store cannot be encoded (a count over 4 billion).
    pub fn seal(&self, key: &SealKey, rng: &mut (impl CryptoRng + ?Sized)) -> Result<Vec<u8>, KeystoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let header = Header { version: VERSION, params: key.params, salt: key.salt, nonce }.encode();
        let mut buf = self.encode_contents()?;
        let cipher = Aes256Gcm::new(&(*key.key).into());
        cipher
            .encrypt_in_place(&Nonce::from(nonce), &header, &mut *buf)
            .map_err(|_| KeystoreError::Contents("too large to encrypt"))?;
        let mut out = Vec::with_capacity(HEADER_LEN + buf.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Decrypts a key store file; returns the store and the key to seal it again with.
    /// Header checks come first, so absurd parameters are refused before Argon2 runs.
    ///
    /// # Errors
    /// Any header error of [`Header::read`]; [`KeystoreError::WrongPassphraseOrCorrupted`]
    /// when authentication fails; [`KeystoreError::Contents`] if the contents are malformed.
    pub fn open(file: &[u8], passphrase: &[u8]) -> Result<(Self, SealKey), KeystoreError> {
        let header = Header::read(file)?;
        let key = derive(passphrase, &header.salt, header.params)?;
        let (head, body) = file.split_at(HEADER_LEN);
        let mut buf = Zeroizing::new(body.to_vec());
        let cipher = Aes256Gcm::new(&(*key).into());
        cipher
            .decrypt_in_place(&Nonce::from(header.nonce), head, &mut *buf)
            .map_err(|_| KeystoreError::WrongPassphraseOrCorrupted)?;
        let store = Self::decode_contents(&buf)?;
        Ok((store, SealKey { params: header.params, salt: header.salt, key }))
    }

    fn encode_contents(&self) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let too_many = || KeystoreError::Contents("too many entries");
        let len = |n: usize| u32::try_from(n).map_err(|_| too_many());
        let components: Vec<DsaComponents> = self.accounts.iter().map(|a| a.key.components()).collect();
        // Sized exactly up front (plus the tag) so the secret never moves in memory.
        let mut size = 1 + 4 + 4 + TAG_LEN;
        for (a, c) in self.accounts.iter().zip(&components) {
            size += 8 + a.name.len() + a.protocol.len() + 20 + c.p.len() + c.q.len() + c.g.len() + c.y.len();
            size += c.x.len();
        }
        for (c, fps) in &self.contacts {
            size += 16 + c.account.len() + c.protocol.len() + c.remote.len() + fps.len() * 21;
        }
        let mut out = Zeroizing::new(Vec::with_capacity(size));
        let data = |out: &mut Vec<u8>, bytes: &[u8]| -> Result<(), KeystoreError> {
            out.extend_from_slice(&len(bytes.len())?.to_be_bytes());
            out.extend_from_slice(bytes);
            Ok(())
        };
        out.push(CONTENTS_FORMAT);
        out.extend_from_slice(&len(self.accounts.len())?.to_be_bytes());
        for (a, c) in self.accounts.iter().zip(&components) {
            data(&mut out, a.name.as_bytes())?;
            data(&mut out, a.protocol.as_bytes())?;
            for v in [&c.p[..], &c.q, &c.g, &c.y, &c.x] {
                data(&mut out, v)?;
            }
        }
        out.extend_from_slice(&len(self.contacts.len())?.to_be_bytes());
        for (c, fps) in &self.contacts {
            data(&mut out, c.account.as_bytes())?;
            data(&mut out, c.protocol.as_bytes())?;
            data(&mut out, c.remote.as_bytes())?;
            out.extend_from_slice(&len(fps.len())?.to_be_bytes());
            for k in fps {
                out.extend_from_slice(&k.fingerprint.0);
                out.push(k.trust.to_byte());
            }
        }
        debug_assert!(out.len() + TAG_LEN <= size);
        Ok(out)
    }

    /// The contents decoder that [`KeyStore::open`] runs after authentication, exposed to
    /// the fuzz targets only (cargo-fuzz builds with `--cfg fuzzing`).
    ///
    /// # Errors
    /// As [`KeyStore::open`] for malformed contents.
    #[cfg(fuzzing)]
    pub fn fuzz_decode_contents(bytes: &[u8]) -> Result<Self, KeystoreError> {
        Self::decode_contents(bytes)
    }

    /// The contents encoder that [`KeyStore::seal`] encrypts, for the fuzz targets only.
    ///
    /// # Errors
    /// As [`KeyStore::seal`].
    #[cfg(fuzzing)]
    pub fn fuzz_encode_contents(&self) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        self.encode_contents()
    }

    fn decode_contents(bytes: &[u8]) -> Result<Self, KeystoreError> {
        let bad = |what: &'static str| move |_: Malformed| KeystoreError::Contents(what);
        let mut r = Reader::new(bytes);
        if r.u8().map_err(bad("empty"))? != CONTENTS_FORMAT {
            return Err(KeystoreError::Contents("unknown contents format"));
        }
        let text = |r: &mut Reader<'_>| -> Result<String, KeystoreError> {
            let b = r.data().map_err(bad("truncated name"))?;
            String::from_utf8(b.to_vec()).map_err(|_| KeystoreError::Contents("a name is not UTF-8"))
        };
        let mut store = KeyStore::new();
        for _ in 0..r.u32().map_err(bad("truncated"))? {
            let name = text(&mut r)?;
            let protocol = text(&mut r)?;
            let mut num = || r.mpi(128).map(<[u8]>::to_vec).map_err(bad("malformed key"));
            let (p, q, g, y) = (num()?, num()?, num()?, num()?);
            let x = Zeroizing::new(num()?);
            let key = DsaKeyPair::from_components(&DsaComponents { p, q, g, y, x })
                .map_err(|_: CryptoError| KeystoreError::Contents("an account key is invalid"))?;
            if store.account(&name, &protocol).is_some() {
                return Err(KeystoreError::Contents("an account appears twice"));
            }
            store.accounts.push(Account { name, protocol, key });
        }
        for _ in 0..r.u32().map_err(bad("truncated"))? {
            let contact =
                ContactId { account: text(&mut r)?, protocol: text(&mut r)?, remote: text(&mut r)? };
            let n = r.u32().map_err(bad("truncated"))?;
            let mut fps = Vec::new();
            for _ in 0..n {
                let fingerprint = Fingerprint(r.array().map_err(bad("truncated fingerprint"))?);
                let trust = Trust::from_byte(r.u8().map_err(bad("truncated"))?)
                    .ok_or(KeystoreError::Contents("unknown trust level"))?;
                fps.push(KnownFingerprint { fingerprint, trust });
            }
            store.contacts.insert(contact, fps);
        }
        r.finish().map_err(bad("trailing bytes"))?;
        Ok(store)
    }

    /// Imports libotr's `otr.private_key` and/or `otr.fingerprints` contents. Everything is
    /// parsed and checked before the store changes: on error it is left as it was. Imported
    /// trust only ever raises the trust already recorded.
    ///
    /// # Errors
    /// [`KeystoreError::Libotr`] for a malformed file; [`KeystoreError::AccountExists`] when
    /// the store has a different key for an imported account and `replace_keys` is false.
    pub fn import_libotr(
        &mut self,
        private_key: Option<&[u8]>,
        fingerprints: Option<&[u8]>,
        replace_keys: bool,
    ) -> Result<ImportReport, KeystoreError> {
        let keys = private_key.map(libotr::parse_private_keys).transpose()?.unwrap_or_default();
        let fps = fingerprints.map(libotr::parse_fingerprints).transpose()?.unwrap_or_default();
        for k in &keys {
            if k.account.len() > usize::from(u16::MAX) || k.protocol.len() > usize::from(u16::MAX) {
                return Err(KeystoreError::NameTooLong);
            }
            if let Some(a) = self.account(&k.account, &k.protocol)
                && a.fingerprint() != k.key.fingerprint()
                && !replace_keys
            {
                return Err(KeystoreError::AccountExists {
                    account: k.account.clone(),
                    protocol: k.protocol.clone(),
                });
            }
        }
        for f in &fps {
            check_contact(&ContactId::new(f.account.as_str(), f.protocol.as_str(), f.remote.as_str()))?;
        }
        let mut report = ImportReport::default();
        for k in keys {
            if self.account(&k.account, &k.protocol).is_some_and(|a| a.fingerprint() == k.key.fingerprint()) {
                report.unchanged_accounts += 1;
                continue;
            }
            report.accounts.push((k.account.clone(), k.protocol.clone(), k.key.fingerprint()));
            self.add_account(&k.account, &k.protocol, k.key, true)?;
        }
        for f in fps {
            let contact = ContactId::new(f.account, f.protocol, f.remote);
            if !matches!(self.record_seen(&contact, f.fingerprint)?, Seen::Known { .. }) {
                report.new_fingerprints += 1;
            }
            let current = self.trust(&contact, &f.fingerprint).unwrap_or_default();
            if current == Trust::Unverified && f.trust.is_verified() {
                self.set_trust(&contact, &f.fingerprint, f.trust)?;
                report.trust_raised += 1;
            }
        }
        Ok(report)
    }

    /// Writes libotr's two files for everything in the store, so libotr (Pidgin, irssi-otr,
    /// …) loads the same keys, fingerprints and trust.
    ///
    /// # Errors
    /// [`KeystoreError::Libotr`] when a name cannot be written in libotr's formats (a NUL,
    /// tab or line break in it, or a line too long for libotr).
    pub fn export_libotr(&self) -> Result<LibotrExport, KeystoreError> {
        let private_key =
            libotr::write_private_keys(self.accounts.iter().map(|a| (a.name(), a.protocol(), a.key())))?;
        let entries: Vec<LibotrFingerprint> = self
            .contacts
            .iter()
            .flat_map(|(c, fps)| {
                fps.iter().map(|k| LibotrFingerprint {
                    remote: c.remote.clone(),
                    account: c.account.clone(),
                    protocol: c.protocol.clone(),
                    fingerprint: k.fingerprint,
                    trust: k.trust,
                })
            })
            .collect();
        let fingerprints = libotr::write_fingerprints(&entries)?;
        Ok(LibotrExport { private_key, fingerprints })
    }
}

fn check_contact(c: &ContactId) -> Result<(), KeystoreError> {
    let max = usize::from(u16::MAX);
    if c.account.len() > max || c.protocol.len() > max || c.remote.len() > max {
        return Err(KeystoreError::NameTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libotr::tests::{LIBOTR_FP, LIBOTR_KEY};
    use otr_core::InstanceTag;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// Small parameters so every test stays fast; the header carries them.
    const FAST: KdfParams = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };

    fn sample() -> KeyStore {
        let mut s = KeyStore::new();
        s.import_libotr(Some(LIBOTR_KEY.as_bytes()), None, false).unwrap();
        let bob = ContactId::new("alice@example.com", "xmpp", "bob@example.com");
        assert_eq!(s.record_seen(&bob, Fingerprint([1; 20])).unwrap(), Seen::New);
        s.mark_smp_verified(&bob, Fingerprint([1; 20])).unwrap();
        let carol = ContactId::new("alice@example.com", "xmpp", "carol");
        let _ = s.record_seen(&carol, Fingerprint([2; 20])).unwrap();
        s
    }

    fn same(a: &KeyStore, b: &KeyStore) {
        let fa: Vec<_> =
            a.accounts().map(|x| (x.name().to_owned(), x.protocol().to_owned(), x.fingerprint())).collect();
        let fb: Vec<_> =
            b.accounts().map(|x| (x.name().to_owned(), x.protocol().to_owned(), x.fingerprint())).collect();
        assert_eq!(fa, fb);
        assert_eq!(a.contacts, b.contacts);
    }

    #[test]
    fn seal_open_round_trip() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let store = sample();
        let key = SealKey::derive(b"correct horse", FAST, &mut rng).unwrap();
        let file = store.seal(&key, &mut rng).unwrap();
        let (back, key2) = KeyStore::open(&file, b"correct horse").unwrap();
        same(&store, &back);
        assert_eq!(back.accounts().next().unwrap().fingerprint().to_string(), LIBOTR_FP);
        assert_eq!(key2.params(), FAST);
        // Resealing with the returned key gives a different file (fresh nonce) that opens.
        let again = back.seal(&key2, &mut rng).unwrap();
        assert_ne!(again, file);
        same(&store, &KeyStore::open(&again, b"correct horse").unwrap().0);
        // An empty store too.
        let empty = KeyStore::new().seal(&key, &mut rng).unwrap();
        assert_eq!(KeyStore::open(&empty, b"correct horse").unwrap().0.accounts().count(), 0);
    }

    #[test]
    fn wrong_passphrase_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let key = SealKey::derive(b"right", FAST, &mut rng).unwrap();
        let file = sample().seal(&key, &mut rng).unwrap();
        assert_eq!(KeyStore::open(&file, b"wrong").unwrap_err(), KeystoreError::WrongPassphraseOrCorrupted);
        assert_eq!(KeyStore::open(&file, b"").unwrap_err(), KeystoreError::WrongPassphraseOrCorrupted);
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_detected() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let key = SealKey::derive(b"pw", FAST, &mut rng).unwrap();
        let file = sample().seal(&key, &mut rng).unwrap();
        for len in 0..file.len() {
            assert!(KeyStore::open(&file[..len], b"pw").is_err(), "truncated to {len} opened");
        }
        let mut extended = file.clone();
        extended.push(0);
        assert!(KeyStore::open(&extended, b"pw").is_err());
        for bit in 0..file.len() * 8 {
            let mut f = file.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            let err = KeyStore::open(&f, b"pw").unwrap_err();
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn absurd_parameters_are_refused_before_argon2() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let key = SealKey::derive(b"pw", FAST, &mut rng).unwrap();
        let file = KeyStore::new().seal(&key, &mut rng).unwrap();
        let with = |offset: usize, value: u32| {
            let mut f = file.clone();
            f[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
            f
        };
        // memory at 11, iterations at 15, parallelism at 19.
        for (offset, value, what) in [
            (11, u32::MAX, "memory (KiB)"),
            (11, KdfParams::MAX_MEMORY_KIB + 1, "memory (KiB)"),
            (11, 7, "memory (KiB)"),
            (15, u32::MAX, "iterations"),
            (15, 0, "iterations"),
            (19, 1000, "parallelism"),
            (19, 0, "parallelism"),
        ] {
            let start = std::time::Instant::now();
            match KeyStore::open(&with(offset, value), b"pw") {
                Err(KeystoreError::UnreasonableKdfParams { what: w, .. }) => assert_eq!(w, what),
                other => panic!("{other:?}"),
            }
            assert!(start.elapsed() < std::time::Duration::from_millis(100));
        }
        let mut work = with(11, KdfParams::MAX_MEMORY_KIB);
        work[15..19].copy_from_slice(&16u32.to_be_bytes());
        assert!(matches!(
            KeyStore::open(&work, b"pw"),
            Err(KeystoreError::UnreasonableKdfParams { what: "memory × iterations (KiB)", .. })
        ));
        assert!(matches!(
            SealKey::derive(b"pw", KdfParams { memory_kib: u32::MAX, ..FAST }, &mut rng),
            Err(KeystoreError::UnreasonableKdfParams { .. })
        ));
        assert!(KdfParams::DEFAULT.check().is_ok());
    }

    #[test]
    fn header_errors_are_specific() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let key = SealKey::derive(b"pw", FAST, &mut rng).unwrap();
        let file = KeyStore::new().seal(&key, &mut rng).unwrap();
        let mut f = file.clone();
        f[0] = b'X';
        assert_eq!(KeyStore::open(&f, b"pw").unwrap_err(), KeystoreError::NotAKeystore);
        let mut f = file.clone();
        f[9] = 2;
        assert_eq!(KeyStore::open(&f, b"pw").unwrap_err(), KeystoreError::UnsupportedVersion(2));
        let mut f = file.clone();
        f[10] = 9;
        assert_eq!(KeyStore::open(&f, b"pw").unwrap_err(), KeystoreError::UnsupportedKdf(9));
        assert!(matches!(KeyStore::open(&file[..HEADER_LEN], b"pw"), Err(KeystoreError::Truncated { .. })));
        assert_eq!(KeyStore::open(b"(privkeys)", b"pw").unwrap_err(), KeystoreError::NotAKeystore);
    }

    #[test]
    fn seen_new_known_changed_and_smp() {
        let mut s = KeyStore::new();
        let c = ContactId::new("me", "xmpp", "them");
        let (a, b) = (Fingerprint([0xaa; 20]), Fingerprint([0xbb; 20]));
        let tag = InstanceTag::random(&mut ChaCha20Rng::seed_from_u64(6));
        let secure = |fingerprint| Event::Secure {
            instance: tag,
            fingerprint,
            ssid: otr_core::Ssid([0; 8]),
            bold: otr_core::SsidHalf::First,
            refreshed: false,
            version: 3,
        };
        assert_eq!(
            s.observe(&c, &secure(a)).unwrap(),
            Some(Observation::Seen { fingerprint: a, seen: Seen::New })
        );
        assert_eq!(
            s.observe(&c, &secure(a)).unwrap(),
            Some(Observation::Seen { fingerprint: a, seen: Seen::Known { trust: Trust::Unverified } })
        );
        assert_eq!(
            s.observe(&c, &Event::SmpSucceeded { instance: tag, fingerprint: a }).unwrap(),
            Some(Observation::Verified { fingerprint: a })
        );
        assert_eq!(s.trust(&c, &a), Some(Trust::VerifiedSmp));
        match s.record_seen(&c, b).unwrap() {
            Seen::Changed { previous } => {
                assert_eq!(previous, [KnownFingerprint { fingerprint: a, trust: Trust::VerifiedSmp }]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.trust(&c, &b), Some(Trust::Unverified));
        assert!(s.set_trust(&c, &Fingerprint([0xcc; 20]), Trust::VerifiedManual).is_err());
        s.set_trust(&c, &b, Trust::VerifiedManual).unwrap();
        s.mark_smp_verified(&c, b).unwrap();
        assert_eq!(s.trust(&c, &b), Some(Trust::VerifiedManual), "manual verification is kept");
        // Another contact with the same key is a separate record.
        let other = ContactId::new("me", "xmpp", "someone else");
        assert_eq!(s.record_seen(&other, a).unwrap(), Seen::New);
        assert_eq!(s.set_trust_everywhere(&a, Trust::VerifiedManual), 2);
        assert_eq!(s.observe(&c, &Event::Ended { instance: tag }).unwrap(), None);
    }

    #[test]
    fn accounts_are_not_silently_replaced() {
        let mut s = sample();
        let key = s.accounts().next().unwrap().key().clone();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        assert!(matches!(
            s.generate_account("alice@example.com", "xmpp", &mut rng),
            Err(KeystoreError::AccountExists { .. })
        ));
        // Same key again: fine. Import of the same file: unchanged.
        s.add_account("alice@example.com", "xmpp", key, false).unwrap();
        let report = s.import_libotr(Some(LIBOTR_KEY.as_bytes()), None, false).unwrap();
        assert_eq!(report.unchanged_accounts, 1);
        // A different key under the name: refused unless replacing, and the store is unchanged.
        let mut fresh = KeyStore::new();
        fresh.add_account("alice@example.com", "xmpp", DsaKeyPair::generate(&mut rng), false).unwrap();
        let before = fresh.account("alice@example.com", "xmpp").unwrap().fingerprint();
        assert!(matches!(
            fresh.import_libotr(Some(LIBOTR_KEY.as_bytes()), None, false),
            Err(KeystoreError::AccountExists { .. })
        ));
        assert_eq!(fresh.account("alice@example.com", "xmpp").unwrap().fingerprint(), before);
        fresh.import_libotr(Some(LIBOTR_KEY.as_bytes()), None, true).unwrap();
        assert_eq!(fresh.account("alice@example.com", "xmpp").unwrap().fingerprint().to_string(), LIBOTR_FP);
        assert!(fresh.remove_account("alice@example.com", "xmpp").is_some());
        assert!(fresh.account("alice@example.com", "xmpp").is_none());
    }

    #[test]
    fn libotr_export_import_round_trip() {
        let store = sample();
        let export = store.export_libotr().unwrap();
        let text = String::from_utf8(export.fingerprints.clone()).unwrap();
        assert!(
            text.contains(&format!("bob@example.com\talice@example.com\txmpp\t{}\tsmp\n", "01".repeat(20)))
        );
        assert!(text.contains(&format!("carol\talice@example.com\txmpp\t{}\t\n", "02".repeat(20))));
        assert_eq!(&export.private_key[..], LIBOTR_KEY.as_bytes());
        let mut back = KeyStore::new();
        let report =
            back.import_libotr(Some(&export.private_key), Some(&export.fingerprints), false).unwrap();
        assert_eq!(report.accounts.len(), 1);
        assert_eq!(report.new_fingerprints, 2);
        assert_eq!(report.trust_raised, 1);
        same(&store, &back);
    }

    #[test]
    fn failed_import_changes_nothing() {
        let mut s = sample();
        let before = s.export_libotr().unwrap();
        let bad_fps = b"bob\talice@example.com\txmpp\tnot-a-fingerprint\n";
        assert!(s.import_libotr(Some(LIBOTR_KEY.as_bytes()), Some(bad_fps), false).is_err());
        assert!(s.import_libotr(Some(b"(privkeys (account"), None, false).is_err());
        let after = s.export_libotr().unwrap();
        assert_eq!(before.private_key, after.private_key);
        assert_eq!(before.fingerprints, after.fingerprints);
    }
}
