//! What every subcommand asks the user for: the key store's place and passphrase, and secrets
//! that may come from the environment instead of a prompt.

use std::path::{Path, PathBuf};

use otr::keystore::KdfParams;
use otr::{Store, system_rng};
use zeroize::Zeroizing;

/// The key store file: `given` (a file, or a directory to hold `keystore.otr`), else
/// `$XDG_DATA_HOME/otr-rs/keystore.otr` or the platform's data directory.
///
/// # Errors
/// When no path is given and the platform has no data directory.
pub fn store_path(given: Option<&Path>) -> Result<PathBuf, String> {
    otr::store::store_path(given, dirs::data_dir())
        .ok_or_else(|| "cannot find the user's data directory; pass --store PATH".to_owned())
}

/// A secret from the environment variable `var`, else asked without echo (twice with
/// `confirm`). An empty answer at the prompt is refused.
///
/// # Errors
/// When the terminal cannot be read, the answer is empty, or the two answers differ.
pub fn secret(var: &str, prompt: &str, confirm: bool) -> Result<Zeroizing<String>, String> {
    if let Ok(v) = std::env::var(var) {
        return Ok(Zeroizing::new(v));
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .map_err(|e| format!("cannot read the secret from the terminal: {e} (or set {var})"))
    };
    let first = ask(prompt)?;
    if first.is_empty() {
        return Err("an empty secret is not accepted".to_owned());
    }
    if confirm && *ask("Repeat it: ")? != *first {
        return Err("the two entries differ; nothing was changed".to_owned());
    }
    Ok(first)
}

/// Opens the key store at `path` (passphrase from `OTR_PASSPHRASE` or a prompt), creating it
/// with `params` when there is none, and makes sure `account` has a key under `protocol`.
///
/// # Errors
/// A wrong passphrase, a damaged store, or a file that cannot be written.
pub fn open_for_account(
    path: &Path,
    account: &str,
    protocol: &str,
    params: KdfParams,
) -> Result<Store, String> {
    let mut rng = system_rng();
    let mut store = if path.exists() {
        let pass = secret("OTR_PASSPHRASE", "Passphrase for the key store: ", false)?;
        Store::open(path, pass.as_bytes()).map_err(|e| e.to_string())?
    } else {
        eprintln!("Creating a new key store at {}", path.display());
        let pass = secret("OTR_PASSPHRASE", "New passphrase for the key store: ", true)?;
        Store::create(path, pass.as_bytes(), params, &mut rng).map_err(|e| e.to_string())?
    };
    if store.keystore().account(account, protocol).is_none() {
        eprintln!("Generating a key for {account} (1024-bit DSA)...");
        store.keystore_mut().generate_account(account, protocol, &mut rng).map_err(|e| e.to_string())?;
        store.save(&mut rng).map_err(|e| e.to_string())?;
    }
    Ok(store)
}
