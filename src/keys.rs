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
        let text = std::fs::read_to_string(key_file)
            .with_context(|| format!("reading the secret key from {}", key_file.display()))?;
        return decode_key(&text)
            .with_context(|| format!("{} does not hold base64 of 32 bytes", key_file.display()));
    }
    let key: [u8; 32] = rand::random();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(key_file)
        .with_context(|| format!("creating the secret key file {}", key_file.display()))?;
    writeln!(file, "{}", STANDARD.encode(key))?;
    tracing::info!(path = %key_file.display(), "generated a new secret key (keep this file; it encrypts stored tokens)");
    Ok(key)
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
