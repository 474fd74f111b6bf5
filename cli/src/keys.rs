//! Manage the encrypted key store: accounts' keys, contacts' fingerprints and trust, and
//! import from / export to libotr's files (Pidgin, irssi-otr, profanity, …).
//!
//! ```text
//! cargo run --example keys -- [--store PATH] COMMAND
//!   generate --account NAME [--protocol PROTO]   new key for an account (default protocol xmpp)
//!   list                                         accounts and known fingerprints
//!   import PATH [--replace]                      libotr's otr.private_key (and the
//!                                                otr.fingerprints beside it, if present)
//!   export DIR [--force]                         write DIR/otr.private_key and DIR/otr.fingerprints
//!   trust FP [--contact NAME]                    mark a fingerprint verified (manually)
//!   passwd                                       change the passphrase
//! ```
//!
//! The store is `$XDG_DATA_HOME/otr-rs/keystore.otr` (or the platform's data directory)
//! unless `--store` names a file or a directory. The passphrase comes from `OTR_PASSPHRASE`
//! (and, for `passwd`, the new one from `OTR_NEW_PASSPHRASE`) or is asked without echo.
//! `--kdf-memory KIB` and `--kdf-iterations N` set Argon2id's cost for a new store or `passwd`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use otr::keystore::{ContactId, KdfParams, Trust};
use otr::terminal::Escaped;
use otr::{Fingerprint, Store, system_rng};
use zeroize::Zeroizing;

struct Args {
    store: Option<PathBuf>,
    command: String,
    positional: Vec<String>,
    account: Option<String>,
    protocol: String,
    contact: Option<String>,
    replace: bool,
    force: bool,
    params: KdfParams,
    params_given: bool,
}

fn usage() -> String {
    "usage: keys [--store PATH] [--kdf-memory KIB] [--kdf-iterations N] \
     (generate --account NAME [--protocol PROTO] | list | import PATH [--replace] | \
     export DIR [--force] | trust FP [--contact NAME] | passwd)"
        .to_owned()
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        store: None,
        command: String::new(),
        positional: vec![],
        account: None,
        protocol: "xmpp".to_owned(),
        contact: None,
        replace: false,
        force: false,
        params: KdfParams::DEFAULT,
        params_given: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().ok_or(format!("{flag} needs a value"));
        let number = |flag: &str, v: String| v.parse::<u32>().map_err(|_| format!("{flag} needs a number"));
        match arg.as_str() {
            "--store" => a.store = Some(PathBuf::from(value("--store")?)),
            "--account" => a.account = Some(value("--account")?),
            "--protocol" => a.protocol = value("--protocol")?,
            "--contact" => a.contact = Some(value("--contact")?),
            "--replace" => a.replace = true,
            "--force" => a.force = true,
            "--kdf-memory" => {
                a.params.memory_kib = number("--kdf-memory", value("--kdf-memory")?)?;
                a.params_given = true;
            }
            "--kdf-iterations" => {
                a.params.iterations = number("--kdf-iterations", value("--kdf-iterations")?)?;
                a.params_given = true;
            }
            "-h" | "--help" => return Err(usage()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}\n{}", usage())),
            _ if a.command.is_empty() => a.command = arg,
            _ => a.positional.push(arg),
        }
    }
    if a.command.is_empty() {
        return Err(usage());
    }
    a.params.check().map_err(|e| e.to_string())?;
    Ok(a)
}

fn store_path(given: Option<&Path>) -> Result<PathBuf, String> {
    otr::store::store_path(given, dirs::data_dir())
        .ok_or_else(|| "cannot find the user's data directory; pass --store PATH".to_owned())
}

fn passphrase(env: &str, prompt: &str, confirm: bool) -> Result<Zeroizing<String>, String> {
    if let Ok(p) = std::env::var(env) {
        return Ok(Zeroizing::new(p));
    }
    let p = Zeroizing::new(
        rpassword::prompt_password(prompt).map_err(|e| format!("cannot read the passphrase: {e}"))?,
    );
    if p.is_empty() {
        return Err("an empty passphrase is not accepted".to_owned());
    }
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("Repeat it: ")
                .map_err(|e| format!("cannot read the passphrase: {e}"))?,
        );
        if *again != *p {
            return Err("the passphrases differ; nothing was changed".to_owned());
        }
    }
    Ok(p)
}

/// Opens the store, or (when `create` is allowed and there is none) creates it.
fn open(args: &Args, path: &Path, create: bool) -> Result<Store, String> {
    if path.exists() {
        let pass = passphrase("OTR_PASSPHRASE", "Passphrase for the key store: ", false)?;
        return Store::open(path, pass.as_bytes()).map_err(|e| e.to_string());
    }
    if !create {
        return Err(format!(
            "no key store at {}; create one with `keys generate` or `keys import`",
            path.display()
        ));
    }
    eprintln!("Creating a new key store at {}", path.display());
    let pass = passphrase("OTR_PASSPHRASE", "New passphrase for the key store: ", true)?;
    let start = Instant::now();
    let store =
        Store::create(path, pass.as_bytes(), args.params, &mut system_rng()).map_err(|e| e.to_string())?;
    report_kdf(args.params, start);
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
    let mut rng = system_rng();
    match args.command.as_str() {
        "generate" => {
            let account = args.account.clone().ok_or("generate needs --account NAME")?;
            let mut store = open(&args, &path, true)?;
            eprintln!("Generating a 1024-bit DSA key for {account} ({})…", args.protocol);
            let fp = store
                .keystore_mut()
                .generate_account(&account, &args.protocol, &mut rng)
                .map_err(|e| e.to_string())?
                .fingerprint();
            store.save(&mut rng).map_err(|e| e.to_string())?;
            println!("{account}\t{}\t{}", args.protocol, fp.to_human());
        }
        "list" => {
            let store = open(&args, &path, false)?;
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
        "import" => {
            let [file] = args.positional.as_slice() else {
                return Err("import needs the path of libotr's otr.private_key".to_owned());
            };
            let file = Path::new(file);
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
            let mut store = open(&args, &path, true)?;
            let report = store
                .keystore_mut()
                .import_libotr(Some(&keys), fps.as_deref(), args.replace)
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
        "export" => {
            let [dir] = args.positional.as_slice() else {
                return Err("export needs a directory".to_owned());
            };
            let dir = Path::new(dir);
            let store = open(&args, &path, false)?;
            let export = store.keystore().export_libotr().map_err(|e| e.to_string())?;
            otr::store::create_private_dir(dir).map_err(|e| e.to_string())?;
            write_file(&dir.join("otr.private_key"), &export.private_key, true, args.force)?;
            write_file(&dir.join("otr.fingerprints"), &export.fingerprints, false, args.force)?;
            println!("wrote {0}/otr.private_key and {0}/otr.fingerprints", dir.display());
        }
        "trust" => {
            if args.positional.is_empty() {
                return Err("trust needs a fingerprint".to_owned());
            }
            let fp = parse_fingerprint(&args.positional.join(" "))?;
            let mut store = open(&args, &path, false)?;
            let ks = store.keystore_mut();
            let n = match &args.contact {
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
                return Err(format!("{} is not a known fingerprint; see `keys list`", fp.to_human()));
            }
            store.save(&mut rng).map_err(|e| e.to_string())?;
            println!("{} marked verified for {n} contact(s)", fp.to_human());
        }
        "passwd" => {
            let mut store = open(&args, &path, false)?;
            let new = passphrase("OTR_NEW_PASSPHRASE", "New passphrase: ", true)?;
            let params = if args.params_given { args.params } else { store.kdf_params() };
            let start = Instant::now();
            store.change_passphrase(new.as_bytes(), Some(params), &mut rng).map_err(|e| e.to_string())?;
            report_kdf(params, start);
            println!("passphrase changed");
        }
        other => return Err(format!("unknown command {other}\n{}", usage())),
    }
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keys: {e}");
            ExitCode::FAILURE
        }
    }
}
