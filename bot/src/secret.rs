//! A wrapper for secrets (tokens, keys) that never prints its value: configuration holds
//! them in this type so a stray `{:?}` or a serialized config shows `[redacted]`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string. `Debug`, `Display` and `Serialize` show `[redacted]` (or `""` when
/// empty, so "not set" stays visible); only [`Secret::expose`] gives the value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` is this secret. SHA-256 digests are compared in constant time,
    /// so neither the secret nor its length leaks through timing. An empty secret matches
    /// nothing.
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::{Digest, Sha256};
        if self.0.is_empty() {
            return false;
        }
        let a = Sha256::digest(presented.as_bytes());
        let b = Sha256::digest(self.0.as_bytes());
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }

    fn shown(&self) -> &'static str {
        if self.0.is_empty() { "" } else { "[redacted]" }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.shown())
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// Accepts strings, and numbers too: environment variables arrive parsed as TOML, so a
    /// numeric token would otherwise be rejected.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Str(String),
            Int(i64),
            Float(f64),
        }
        Ok(match Raw::deserialize(deserializer)? {
            Raw::Str(s) => Self(s),
            Raw::Int(i) => Self(i.to_string()),
            Raw::Float(f) => Self(f.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "\"[redacted]\" [redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(Secret::default().to_string(), "");
    }

    #[test]
    fn matches_only_the_same_text() {
        let s = Secret::new("hunter2");
        assert!(s.matches("hunter2"));
        assert!(!s.matches("hunter3") && !s.matches("hunter") && !s.matches(""));
        assert!(!Secret::default().matches(""));
    }
}
