//! The two secrets Segue makes for itself when none is configured: the secret key (kept in
//! a 0600 file beside the database, never inside it) and the admin token (fresh each run).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// Decodes a base64 secret key of exactly 32 bytes.
pub fn decode_key(text: &str) -> Option<[u8; 32]> {
    STANDARD.decode(text.trim()).ok()?.try_into().ok()
}

/// The configured key, else the one in `key_file`, else a new one written there.
pub fn secret_key(configured: &str, key_file: &Path) -> anyhow::Result<[u8; 32]> {
    if !configured.is_empty() {
        return decode_key(configured).context("security.secret_key is not base64 of 32 bytes");
    }
    if key_file.exists() {
        warn_if_readable_by_others(key_file);
        let text = std::fs::read_to_string(key_file)
            .with_context(|| format!("reading the secret key from {}", key_file.display()))?;
        return decode_key(&text)
            .with_context(|| format!("{} does not hold base64 of 32 bytes", key_file.display()));
    }
    let key: [u8; 32] = rand::random();
    write_new_key(key_file, &STANDARD.encode(key))?;
    tracing::info!(path = %key_file.display(), "generated a new secret key (keep this file; it encrypts stored tokens)");
    Ok(key)
}

/// Writes the key file whole or not at all: a private temporary file, synced, then
/// linked into place (which fails rather than overwrite a key another process wrote).
fn write_new_key(key_file: &Path, encoded: &str) -> anyhow::Result<()> {
    let dir = key_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".segue.key.{}.tmp", rand::random::<u32>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| -> anyhow::Result<()> {
        let mut file = options
            .open(&tmp)
            .with_context(|| format!("creating a key file in {}", dir.display()))?;
        writeln!(file, "{encoded}")?;
        file.sync_all()?;
        std::fs::hard_link(&tmp, key_file)
            .with_context(|| format!("creating the secret key file {}", key_file.display()))?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

fn warn_if_readable_by_others(key_file: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(key_file)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %key_file.display(), "the secret key file is readable by other users; chmod 600 it");
        }
    }
}

/// A value derived from the secret key for one purpose (hex of SHA-256 over key and
/// label): stable across restarts, useless for recovering the key.
pub fn derive_hex(key: &[u8; 32], label: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(key);
    h.update(label.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random admin token.
pub fn generate_admin_token() -> String {
    let bytes: [u8; 24] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segue.key");
        let first = secret_key("", &path).unwrap();
        let second = secret_key("", &path).unwrap();
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(decode_key("dG9vIHNob3J0").is_none());
    }
}
