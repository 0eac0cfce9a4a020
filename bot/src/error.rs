//! The handler layer's error: either a sentence meant for the user, or an internal
//! failure that is logged and answered with a plain apology.

use crate::store::StoreError;

/// What can go wrong inside a command handler.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request can't be done, and this sentence tells the user why.
    #[error("{0}")]
    User(String),
    /// The arguments don't fit; the router answers with the command's usage line.
    #[error("bad arguments: {0}")]
    Usage(String),
    /// A storage failure: logged in full, the user gets a generic apology.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::spotify::SpotifyError> for CommandError {
    /// Spotify's failures become plain sentences; storage failures stay internal.
    fn from(e: crate::spotify::SpotifyError) -> Self {
        match e {
            crate::spotify::SpotifyError::Store(e) => Self::Store(e),
            e => Self::User(e.user_message()),
        }
    }
}

impl CommandError {
    pub fn user(message: impl Into<String>) -> Self {
        Self::User(message.into())
    }
}

/// The sentence a user sees when something broke on our side.
pub const APOLOGY: &str = "Sorry, something went wrong on our side. Please try again in a moment.";
