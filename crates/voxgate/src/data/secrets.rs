//! Secrets that never enter the database (the key pepper, the storage master key): taken
//! from configuration, else from a file that is created with random contents, mode 0600, in a
//! 0700 directory, on first use.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};

/// The configured secret if there is one, else the contents of `file` (or, when `file` is
/// empty, of `<data_dir>/secrets/<name>`), created with 32 random bytes (hex) if missing.
/// Refuses a file readable by group or others, and a secret shorter than 32 bytes.
pub fn load_or_create(
    configured: Option<&SecretString>,
    file: &Path,
    data_dir: &Path,
    name: &str,
) -> anyhow::Result<SecretString> {
    let secret = match configured {
        Some(secret) => secret.clone(),
        None => read_or_create(&default_path(file, data_dir, name), name)?,
    };
    anyhow::ensure!(
        secret.expose_secret().len() >= 32,
        "the {name} must be at least 32 bytes"
    );
    Ok(secret)
}

fn default_path(file: &Path, data_dir: &Path, name: &str) -> PathBuf {
    if file.as_os_str().is_empty() {
        data_dir.join("secrets").join(name)
    } else {
        file.to_path_buf()
    }
}

fn read_or_create(path: &Path, name: &str) -> anyhow::Result<SecretString> {
    if !path.exists() {
        if let Some(dir) = path.parent() {
            // Only created here, never re-moded: the directory may be the operator's.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let hex = crate::util::hex(&crate::util::random_bytes::<32>());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create the {name} file {}", path.display()))?;
        file.write_all(hex.as_bytes())?;
        tracing::warn!(path = %path.display(), secret = name, "created a new secret file; keep it out of the database's backups");
    }
    let mode = std::fs::metadata(path)?.permissions().mode();
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the {name} file {} must not be readable by group or others",
        path.display()
    );
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {name} file {}", path.display()))?;
    Ok(SecretString::from(text.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_secret_is_private_stable_and_long_enough() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(None, Path::new(""), dir.path(), "master_key").expect("create");
        let path = dir.path().join("secrets/master_key");
        assert_eq!(
            std::fs::metadata(&path).expect("file").permissions().mode() & 0o777,
            0o600
        );
        let again = load_or_create(None, Path::new(""), dir.path(), "master_key").expect("read");
        assert_eq!(first.expose_secret(), again.expose_secret());
        assert_eq!(first.expose_secret().len(), 64);
    }

    #[test]
    fn readable_files_and_short_secrets_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, "x".repeat(40)).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load_or_create(None, &path, dir.path(), "master_key").unwrap_err();
        assert!(err.to_string().contains("group or others"), "{err}");
        let short = SecretString::from("too short".to_owned());
        assert!(load_or_create(Some(&short), &path, dir.path(), "master_key").is_err());
    }
}
