//! Domain values parsed once at the boundary ("parse, don't validate"): a [`Handle`] is
//! always valid once it exists, and a [`TrackRef`] is a Spotify track id or words to
//! search for.

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

/// What `/share` was given for the track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackRef {
    /// A Spotify track id (22 base62 characters), from an `open.spotify.com` URL (with or
    /// without `?si=` and locale paths such as `/intl-de/`), a `spotify:track:` URI, or
    /// bare.
    Id(String),
    /// Anything else: words to search for.
    Search(String),
}

/// Why a track reference was refused, worded for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackRefError {
    #[error("say which track: a Spotify link, a spotify:track: URI or some words")]
    Empty,
    #[error("that's a Spotify {0} link; I can share tracks")]
    NotATrack(String),
    #[error("that Spotify link has no valid track id")]
    BadId,
    #[error("that's not a Spotify link")]
    OtherSite,
}

fn is_track_id(id: &str) -> bool {
    id.len() == 22 && id.chars().all(|c| c.is_ascii_alphanumeric())
}

impl TrackRef {
    pub fn parse(raw: &str) -> Result<Self, TrackRefError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(TrackRefError::Empty);
        }
        if let Some(rest) = raw.strip_prefix("spotify:") {
            let mut parts = rest.split(':');
            return match (parts.next(), parts.next()) {
                (Some("track"), Some(id)) if is_track_id(id) => Ok(Self::Id(id.to_owned())),
                (Some("track"), _) => Err(TrackRefError::BadId),
                (Some(kind), _) => Err(TrackRefError::NotATrack(kind.to_owned())),
                (None, _) => Err(TrackRefError::BadId),
            };
        }
        if raw.starts_with("http://") || raw.starts_with("https://") {
            let url = url::Url::parse(raw).map_err(|_| TrackRefError::OtherSite)?;
            if !matches!(
                url.host_str(),
                Some("open.spotify.com" | "play.spotify.com")
            ) {
                return Err(TrackRefError::OtherSite);
            }
            let mut segments = url
                .path_segments()
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty() && !s.starts_with("intl-"));
            return match (segments.next(), segments.next()) {
                (Some("track"), Some(id)) if is_track_id(id) => Ok(Self::Id(id.to_owned())),
                (Some("track"), _) => Err(TrackRefError::BadId),
                (Some(kind), _) => Err(TrackRefError::NotATrack(kind.to_owned())),
                (None, _) => Err(TrackRefError::BadId),
            };
        }
        if is_track_id(raw) && raw.chars().any(|c| c.is_ascii_digit()) {
            // A bare id, as Spotify's "copy ID" gives it.
            return Ok(Self::Id(raw.to_owned()));
        }
        Ok(Self::Search(
            raw.split_whitespace().collect::<Vec<_>>().join(" "),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_refs_from_links_uris_and_words() {
        let id = "4uLU6hMCjMI75M1A2tKUQC";
        for raw in [
            format!("https://open.spotify.com/track/{id}"),
            format!("https://open.spotify.com/track/{id}?si=abc123"),
            format!("https://open.spotify.com/intl-de/track/{id}?si=x&utm_source=copy"),
            format!("spotify:track:{id}"),
            format!("  http://open.spotify.com/track/{id}/  "),
            id.to_owned(),
        ] {
            assert_eq!(
                TrackRef::parse(&raw),
                Ok(TrackRef::Id(id.to_owned())),
                "{raw}"
            );
        }
        assert_eq!(
            TrackRef::parse("never  gonna give"),
            Ok(TrackRef::Search("never gonna give".to_owned()))
        );
        assert_eq!(
            TrackRef::parse("https://open.spotify.com/album/1A2GTWGtFfWp7KSQTwWOyo"),
            Err(TrackRefError::NotATrack("album".to_owned()))
        );
        assert_eq!(
            TrackRef::parse("https://open.spotify.com/track/short"),
            Err(TrackRefError::BadId)
        );
        assert_eq!(
            TrackRef::parse("spotify:playlist:37i9dQZF1DXcBWIGoYBM5M"),
            Err(TrackRefError::NotATrack("playlist".to_owned()))
        );
        assert_eq!(
            TrackRef::parse("https://youtube.com/watch?v=dQw4w9WgXcQ"),
            Err(TrackRefError::OtherSite)
        );
        assert_eq!(TrackRef::parse("  "), Err(TrackRefError::Empty));
    }

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
