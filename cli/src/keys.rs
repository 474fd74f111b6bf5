//! `otr keys`: the encrypted key store: accounts' keys, contacts' fingerprints and trust, and
//! import from / export to libotr's files (Pidgin, irssi-otr, profanity, …).
//!
//! The store is `$XDG_DATA_HOME/otr-rs/keystore.otr` (or the platform's data directory)
//! unless `--store` names a file or a directory. The passphrase comes from `OTR_PASSPHRASE`
//! (and, for `passwd`, the new one from `OTR_NEW_PASSPHRASE`) or is asked without echo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use otr::keystore::{ContactId, KdfParams, Trust};
use otr::terminal::Escaped;
use otr::{Fingerprint, Store, system_rng};
use zeroize::Zeroizing;

use crate::secrets::{secret, store_path};

/// `otr keys`: manage the encrypted key store.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The key store: a file, or a directory that holds `keystore.otr`
    /// [default: $XDG_DATA_HOME/otr-rs/keystore.otr]
    #[arg(long, global = true, value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Argon2id memory in KiB, for a new store or `passwd` [default: 65536]
    #[arg(long, global = true, value_name = "KIB")]
    pub kdf_memory: Option<u32>,
    /// Argon2id passes, for a new store or `passwd` [default: 3]
    #[arg(long, global = true, value_name = "N")]
    pub kdf_iterations: Option<u32>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The `otr keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Generate a new long-term key (1024-bit DSA) for an account that has none.
    Generate {
        /// The account name, e.g. alice@example.org.
        #[arg(long)]
        account: String,
        /// The protocol the account is on (the store keeps one key per account and protocol).
        #[arg(long, default_value = "xmpp")]
        protocol: String,
    },
    /// List the accounts and the fingerprints known for each contact, with their trust.
    List,
    /// Import libotr's otr.private_key (and the otr.fingerprints beside it, if present).
    Import {
        /// The path of otr.private_key, e.g. ~/.purple/otr.private_key.
        path: PathBuf,
        /// Replace an account's key when the file has a different one (the old key is lost).
        #[arg(long)]
        replace: bool,
    },
    /// Write DIR/otr.private_key and DIR/otr.fingerprints for libotr clients.
    Export {
        /// The directory to write to (created with mode 0700 if missing).
        dir: PathBuf,
        /// Overwrite files that exist.
        #[arg(long)]
        force: bool,
    },
    /// Mark a fingerprint verified after comparing it with the contact (manual check).
    Trust {
        /// The fingerprint: 40 hex digits, spaces allowed (several words are joined).
        #[arg(required = true, num_args = 1..)]
        fingerprint: Vec<String>,
        /// Only for this contact (default: every contact that used it).
        #[arg(long, value_name = "NAME")]
        contact: Option<String>,
    },
    /// Change the passphrase (the new one from OTR_NEW_PASSPHRASE or a prompt).
    Passwd,
}

impl Args {
    /// The Argon2id parameters asked for, and whether any was given.
    fn kdf_params(&self) -> Result<(KdfParams, bool), String> {
        let mut params = KdfParams::DEFAULT;
        params.memory_kib = self.kdf_memory.unwrap_or(params.memory_kib);
        params.iterations = self.kdf_iterations.unwrap_or(params.iterations);
        params.check().map_err(|e| e.to_string())?;
        Ok((params, self.kdf_memory.is_some() || self.kdf_iterations.is_some()))
    }
}

/// Runs `otr keys`; errors go to stderr.
pub fn main(args: Args) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otr keys: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the store, or (when `create` is allowed and there is none) creates it.
fn open(params: KdfParams, path: &Path, create: bool) -> Result<Store, String> {
    if path.exists() {
        let pass = secret("OTR_PASSPHRASE", "Passphrase for the key store: ", false)?;
        return Store::open(path, pass.as_bytes()).map_err(|e| e.to_string());
    }
    if !create {
        return Err(format!(
            "no key store at {}; create one with `otr keys generate` or `otr keys import`",
            path.display()
        ));
    }
    eprintln!("Creating a new key store at {}", path.display());
    let pass = secret("OTR_PASSPHRASE", "New passphrase for the key store: ", true)?;
    let start = Instant::now();
    let store = Store::create(path, pass.as_bytes(), params, &mut system_rng()).map_err(|e| e.to_string())?;
    report_kdf(params, start);
    Ok(store)
}

fn report_kdf(p: KdfParams, start: Instant) {
    eprintln!(
        "Argon2id: {} KiB, {} passes, {} lane(s): {} ms",
        p.memory_kib,
        p.iterations,
        p.parallelism,
        start.elapsed().as_millis()
    );
}

fn parse_fingerprint(text: &str) -> Result<Fingerprint, String> {
    let hex: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bad = || format!("{text:?} is not a fingerprint (40 hex digits, spaces allowed)");
    if hex.len() != 40 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut fp = [0u8; 20];
    for (i, b) in fp.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(Fingerprint(fp))
}

fn write_file(path: &Path, bytes: &[u8], secret: bool, force: bool) -> Result<(), String> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("{} exists; pass --force to overwrite it", path.display())
        } else {
            format!("cannot create {}: {e}", path.display())
        }
    })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn run(args: Args) -> Result<(), String> {
    let path = store_path(args.store.as_deref())?;
    let (params, params_given) = args.kdf_params()?;
    let mut rng = system_rng();
    match args.command {
        Command::Generate { account, protocol } => {
            let mut store = open(params, &path, true)?;
            eprintln!("Generating a 1024-bit DSA key for {account} ({protocol})…");
            let fp = store
                .keystore_mut()
                .generate_account(&account, &protocol, &mut rng)
                .map_err(|e| e.to_string())?
                .fingerprint();
            store.save(&mut rng).map_err(|e| e.to_string())?;
            println!("{account}\t{protocol}\t{}", fp.to_human());
        }
        Command::List => {
            let store = open(params, &path, false)?;
            let ks = store.keystore();
            println!("Accounts:");
            for a in ks.accounts() {
                // Names may come from imported libotr files, written by whoever reached them.
                println!(
                    "  {} ({})\n    {}",
                    Escaped(a.name()),
                    Escaped(a.protocol()),
                    a.fingerprint().to_human()
                );
            }
            println!("Known fingerprints:");
            for (c, fps) in ks.contacts() {
                println!("  {} (as {} on {})", Escaped(&c.remote), Escaped(&c.account), Escaped(&c.protocol));
                for k in fps {
                    println!("    {}  {}", k.fingerprint.to_human(), k.trust);
                }
            }
        }
        Command::Import { path: file, replace } => {
            let file = file.as_path();
            let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
            let keys = Zeroizing::new(read(file)?);
            let fp_path = file.with_file_name("otr.fingerprints");
            let fps = if fp_path.is_file() { Some(read(&fp_path)?) } else { None };
            // Parse before asking for the passphrase or creating anything.
            otr::keystore::libotr::parse_private_keys(&keys)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            if let Some(f) = &fps {
                otr::keystore::libotr::parse_fingerprints(f)
                    .map_err(|e| format!("{}: {e}", fp_path.display()))?;
            }
            let mut store = open(params, &path, true)?;
            let report = store
                .keystore_mut()
                .import_libotr(Some(&keys), fps.as_deref(), replace)
                .map_err(|e| e.to_string())?;
            store.save(&mut rng).map_err(|e| e.to_string())?;
            for (name, protocol, fp) in &report.accounts {
                println!("imported {} ({})\t{}", Escaped(name), Escaped(protocol), fp.to_human());
            }
            println!(
                "{} account(s) imported, {} already present; {} fingerprint(s) added{}, {} trust level(s) raised",
                report.accounts.len(),
                report.unchanged_accounts,
                report.new_fingerprints,
                if fps.is_some() { format!(" from {}", fp_path.display()) } else { String::new() },
                report.trust_raised
            );
        }
        Command::Export { dir, force } => {
            let dir = dir.as_path();
            let store = open(params, &path, false)?;
            let export = store.keystore().export_libotr().map_err(|e| e.to_string())?;
            otr::store::create_private_dir(dir).map_err(|e| e.to_string())?;
            write_file(&dir.join("otr.private_key"), &export.private_key, true, force)?;
            write_file(&dir.join("otr.fingerprints"), &export.fingerprints, false, force)?;
            println!("wrote {0}/otr.private_key and {0}/otr.fingerprints", dir.display());
        }
        Command::Trust { fingerprint, contact } => {
            let fp = parse_fingerprint(&fingerprint.join(" "))?;
            let mut store = open(params, &path, false)?;
            let ks = store.keystore_mut();
            let n = match &contact {
                Some(remote) => {
                    let contacts: Vec<ContactId> = ks
                        .contacts()
                        .filter(|(c, fps)| c.remote == *remote && fps.iter().any(|k| k.fingerprint == fp))
                        .map(|(c, _)| c.clone())
                        .collect();
                    for c in &contacts {
                        ks.set_trust(c, &fp, Trust::VerifiedManual).map_err(|e| e.to_string())?;
                    }
                    contacts.len()
                }
                None => ks.set_trust_everywhere(&fp, Trust::VerifiedManual),
            };
            if n == 0 {
                return Err(format!("{} is not a known fingerprint; see `otr keys list`", fp.to_human()));
            }
            store.save(&mut rng).map_err(|e| e.to_string())?;
            println!("{} marked verified for {n} contact(s)", fp.to_human());
        }
        Command::Passwd => {
            let mut store = open(params, &path, false)?;
            let new = secret("OTR_NEW_PASSPHRASE", "New passphrase: ", true)?;
            let params = if params_given { params } else { store.kdf_params() };
            let start = Instant::now();
            store.change_passphrase(new.as_bytes(), Some(params), &mut rng).map_err(|e| e.to_string())?;
            report_kdf(params, start);
            println!("passphrase changed");
        }
    }
    Ok(())
}
