//! Domain values parsed once at the boundary ("parse, don't validate"): a [`Handle`] is
//! always valid once it exists.

use std::fmt;

/// A person's public Segue handle: 3–32 of `a-z 0-9 _`, stored lowercase so that
/// uniqueness ignores case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Handle(String);

/// Why a handle was refused, worded for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error("a handle needs at least 3 characters")]
    TooShort,
    #[error("a handle can have at most 32 characters")]
    TooLong,
    #[error("a handle may only use letters, digits and _ (no spaces or `{0}`)")]
    BadCharacter(char),
}

impl Handle {
    pub const MIN: usize = 3;
    pub const MAX: usize = 32;

    pub fn parse(raw: &str) -> Result<Self, HandleError> {
        let raw = raw.trim().trim_start_matches('@');
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return Err(HandleError::BadCharacter(c));
        }
        match raw.len() {
            n if n < Self::MIN => Err(HandleError::TooShort),
            n if n > Self::MAX => Err(HandleError::TooLong),
            _ => Ok(Self(raw.to_ascii_lowercase())),
        }
    }

    /// A valid handle made from any display name, for people who haven't picked one:
    /// "Carol Smith" becomes `carol_smith`, "李" becomes `user`.
    pub fn suggest(display_name: &str) -> Self {
        let mut s: String = display_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        s = s.trim_matches('_').to_owned();
        while s.contains("__") {
            s = s.replace("__", "_");
        }
        s.truncate(24);
        if s.len() < Self::MIN {
            s = "user".to_owned();
        }
        Self(s)
    }

    /// This handle with a numeric suffix, still within the length limit.
    pub fn with_suffix(&self, n: u32) -> Self {
        let suffix = n.to_string();
        let mut base = self.0.clone();
        base.truncate(Self::MAX - suffix.len());
        Self(base + &suffix)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lowercases() {
        assert_eq!(Handle::parse("@Bob_99").unwrap().as_str(), "bob_99");
        assert_eq!(Handle::parse("ab"), Err(HandleError::TooShort));
        assert_eq!(Handle::parse(&"a".repeat(33)), Err(HandleError::TooLong));
        assert_eq!(Handle::parse("bo b"), Err(HandleError::BadCharacter(' ')));
        assert_eq!(Handle::parse("bøb"), Err(HandleError::BadCharacter('ø')));
    }

    #[test]
    fn suggestions_are_valid() {
        assert_eq!(Handle::suggest("Carol  Smith!").as_str(), "carol_smith");
        assert_eq!(Handle::suggest("李").as_str(), "user");
        let long = Handle::suggest(&"x".repeat(40));
        assert!(Handle::parse(long.with_suffix(12345).as_str()).is_ok());
    }
}
