//! The data directory's permissions: only the relay's own user may read what is in it.
//!
//! The accounts file holds password hashes and the message store tells who writes to whom, so
//! the directory is created `0700` and the relay's files `0600`. A directory or file found
//! looser at start is tightened, with a warning (it may have been read already). Other
//! systems than Unix keep their default permissions.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// Creates `dir` (and missing parents) with mode `0700`, or tightens an existing `dir` and the
/// files directly in it to `0700` / `0600`.
///
/// # Errors
/// If the directory cannot be created, listed or changed.
pub(crate) fn secure_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        tighten(dir, 0o700)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                tighten(&entry.path(), 0o600)?;
            }
        }
        fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
            let now = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if now & !mode != 0 {
                tracing::warn!(
                    path = %path.display(),
                    was = format!("{now:o}"),
                    now = format!("{mode:o}"),
                    "other users could read this; its permissions are tightened"
                );
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            Ok(())
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// Options that create a file readable and writable by its owner only (`0600`).
pub(crate) fn private() -> OpenOptions {
    let mut opts = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts
}

/// Holds an exclusive lock on `path` (created `0600` if missing) until dropped; waits while
/// another process holds it. Advisory: it orders the relay's own writers.
///
/// # Errors
/// If the file cannot be opened or locked.
pub(crate) fn lock(path: &Path) -> std::io::Result<File> {
    let file = private().read(true).write(true).create(true).truncate(false).open(path)?;
    #[cfg(unix)]
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(file)
}
