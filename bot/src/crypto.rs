//! Keys derived from `security.secret_key`, for what the core keeps secret: sealing tokens
//! at rest (ChaCha20-Poly1305, under the Spotify vault) and signing short-lived tokens
//! such as the OAuth `state` (HMAC-SHA256). The secret key itself never leaves the process
//! and is never written to the database; what is stored names the key that sealed it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// What can go wrong opening something sealed or signed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Sealed under another key: `security.secret_key` changed since it was stored.
    #[error("sealed with key {stored}, but the current key is {current}")]
    OtherKey { stored: String, current: String },
    /// Not what we sealed: corrupted or tampered with.
    #[error("the sealed value is damaged")]
    Damaged,
}

/// The keys derived from the secret key. Cheap to share behind an `Arc`.
pub struct Keys {
    seal: ChaCha20Poly1305,
    sign: [u8; 32],
    key_id: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// A sub-key for one purpose: HMAC-SHA256(secret key, label).
fn derive(secret: &[u8; 32], label: &str) -> [u8; 32] {
    let mut mac = hmac(secret);
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

impl Keys {
    pub fn new(secret: &[u8; 32]) -> Self {
        let seal_key = derive(secret, "segue/seal/v1");
        let id = Sha256::digest(derive(secret, "segue/key-id/v1"));
        Self {
            seal: ChaCha20Poly1305::new(&seal_key.into()),
            sign: derive(secret, "segue/sign/v1"),
            key_id: id[..4].iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// A short public name for the current key, stored beside what it seals so that a
    /// later key rotation knows which key opens which row.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Encrypts and authenticates `plaintext`: base64url of a random 96-bit nonce followed
    /// by the ciphertext and tag.
    pub fn seal(&self, plaintext: &str) -> String {
        let nonce_bytes: [u8; 12] = rand::random();
        let nonce = Nonce::from(nonce_bytes);
        let sealed = self
            .seal
            .encrypt(&nonce, plaintext.as_bytes())
            .expect("ChaCha20-Poly1305 encrypts any message under 256 GiB");
        let mut out = nonce_bytes.to_vec();
        out.extend(sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens what [`Keys::seal`] made under the key named `key_id`.
    pub fn open(&self, key_id: &str, sealed: &str) -> Result<String, CryptoError> {
        if key_id != self.key_id {
            return Err(CryptoError::OtherKey {
                stored: key_id.to_owned(),
                current: self.key_id.clone(),
            });
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| CryptoError::Damaged)?;
        if bytes.len() < 12 {
            return Err(CryptoError::Damaged);
        }
        let (nonce, body) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| CryptoError::Damaged)?;
        let plain = self
            .seal
            .decrypt(&Nonce::from(nonce), body)
            .map_err(|_| CryptoError::Damaged)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Damaged)
    }

    /// `base64url(payload).base64url(HMAC)`: a token only this key could have made.
    pub fn sign(&self, payload: &[u8]) -> String {
        let mut mac = hmac(&self.sign);
        mac.update(payload);
        let tag = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The payload of a token from [`Keys::sign`], when its signature holds (checked in
    /// constant time).
    pub fn verify(&self, token: &str) -> Option<Vec<u8>> {
        let (payload, tag) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = hmac(&self.sign);
        mac.update(&payload);
        mac.verify_slice(&tag).ok()?;
        Some(payload)
    }
}

/// HMAC-SHA256 of `message` under `key` (platform webhook signatures).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = hmac(key);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Whether `tag` is the HMAC-SHA256 of `message` under `key`, compared in constant time.
pub fn hmac_sha256_matches(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
    let mut mac = hmac(key);
    mac.update(message);
    mac.verify_slice(tag).is_ok()
}

/// SHA-256 as lowercase hex: how one-time codes are stored (never the code itself).
pub fn digest_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_text_opens_only_with_its_key() {
        let keys = Keys::new(&[7; 32]);
        let sealed = keys.seal("refresh-token-123");
        assert!(!sealed.contains("refresh-token-123"));
        assert_ne!(
            sealed,
            keys.seal("refresh-token-123"),
            "fresh nonce each time"
        );
        assert_eq!(
            keys.open(keys.key_id(), &sealed).unwrap(),
            "refresh-token-123"
        );

        let other = Keys::new(&[8; 32]);
        assert_ne!(other.key_id(), keys.key_id());
        assert!(matches!(
            other.open(keys.key_id(), &sealed),
            Err(CryptoError::OtherKey { .. })
        ));

        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        bytes[14] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(
            keys.open(keys.key_id(), &tampered),
            Err(CryptoError::Damaged)
        );
        assert_eq!(keys.open(keys.key_id(), "x"), Err(CryptoError::Damaged));
    }

    #[test]
    fn signatures_hold_only_for_the_signed_payload() {
        let keys = Keys::new(&[1; 32]);
        let token = keys.sign(b"hello");
        assert_eq!(keys.verify(&token).unwrap(), b"hello");
        let (_, tag) = token.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(b"hellp"));
        assert!(keys.verify(&forged).is_none());
        assert!(Keys::new(&[2; 32]).verify(&token).is_none());
        assert!(keys.verify("no-dot").is_none());
    }
}
