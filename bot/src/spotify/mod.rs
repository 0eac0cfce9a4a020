//! Spotify, as handlers and the HTTP layer see it: linking an account (authorize URL,
//! signed single-use state, code exchange, 16-digit codes for the generic page), the
//! token vault (sealed tokens, single-flight refresh), and what a person is playing (a
//! short per-user cache in front of the Web API). The Web API is called through rspotify;
//! the accounts service's token endpoint directly, since rspotify drops rotated refresh
//! tokens.

mod accounts;
mod api;
mod link;
mod playing;
mod vault;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rspotify::AuthCodeSpotify;

pub use link::{LinkState, StateError};
pub use playing::{Item, ItemKind, Listening, NowPlaying, Play};
pub use vault::Grant;

use crate::crypto::{CryptoError, Keys};
use crate::secret::Secret;
use crate::store::{Store, StoreError};

/// The scopes Segue asks for: recently played and now playing today; playback control
/// for party skips later.
pub const SCOPES: &[&str] = &[
    "user-read-recently-played",
    "user-read-currently-playing",
    "user-read-playback-state",
    "user-modify-playback-state",
];

/// How long a `/link` state or a generic-page code stays valid.
pub const LINK_VALID_FOR: Duration = Duration::from_secs(10 * 60);

/// How long what someone is playing is served from memory.
pub const NOW_PLAYING_CACHE: Duration = Duration::from_secs(10);

/// Settings from the `[spotify]` configuration section.
#[derive(Clone, Debug)]
pub struct SpotifySettings {
    pub client_id: String,
    pub client_secret: Secret,
    /// The accounts service (`/authorize`, `/api/token`), without a trailing slash.
    pub accounts_url: String,
    /// The Web API base, e.g. `https://api.spotify.com/v1`, without a trailing slash.
    pub api_url: String,
    /// `<public_url>/auth/spotify/callback`: registered in Spotify's dashboard.
    pub redirect_uri: String,
    /// The longest `Retry-After` worth waiting for inside one request; longer ones are
    /// reported as "busy" instead of holding a chat's turn.
    pub max_retry_wait: Duration,
}

/// What can go wrong talking to Spotify. Each variant has a plain sentence for users in
/// [`SpotifyError::user_message`].
#[derive(Debug, thiserror::Error)]
pub enum SpotifyError {
    /// The person has no Spotify link.
    #[error("no Spotify account is linked")]
    NotLinked,
    /// Spotify rejected the stored refresh token (revoked, or the app was removed): the
    /// person has to `/link` again.
    #[error("the Spotify link is broken")]
    LinkBroken,
    /// Spotify asked us to wait longer than we wait inside one request.
    #[error("rate limited by Spotify for {0:?}")]
    RateLimited(Duration),
    /// Spotify didn't answer usefully after retries (5xx, network).
    #[error("Spotify is unavailable: {0}")]
    Unavailable(String),
    /// Spotify refused the request itself (a 4xx other than 401/404/429).
    #[error("Spotify refused the request: {0}")]
    Refused(String),
    /// No such track (or other object).
    #[error("not found on Spotify")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SpotifyError {
    /// What to tell the person, in plain words.
    pub fn user_message(&self) -> String {
        match self {
            Self::NotLinked => "You haven't linked Spotify yet. Send /link to do it.".to_owned(),
            Self::LinkBroken => "Spotify no longer accepts your link (access was removed or \
                                 expired). Send /link to connect it again."
                .to_owned(),
            Self::RateLimited(wait) => format!(
                "Spotify is busy right now. Please try again in {} seconds.",
                wait.as_secs().max(1)
            ),
            Self::Unavailable(_) => {
                "Spotify isn't answering right now. Please try again in a minute.".to_owned()
            }
            Self::Refused(_) | Self::Store(_) => crate::error::APOLOGY.to_owned(),
            Self::NotFound => "Spotify doesn't know that one.".to_owned(),
        }
    }

    /// A copy of the errors worth caching for a moment: every Spotify-side outcome, so a
    /// request rate never becomes a Spotify call rate. Only our own storage failing is
    /// not kept (`None`).
    fn cacheable(&self) -> Option<Self> {
        match self {
            Self::NotLinked => Some(Self::NotLinked),
            Self::LinkBroken => Some(Self::LinkBroken),
            Self::RateLimited(d) => Some(Self::RateLimited(*d)),
            Self::Unavailable(s) => Some(Self::Unavailable(s.clone())),
            Self::Refused(s) => Some(Self::Refused(s.clone())),
            Self::NotFound => Some(Self::NotFound),
            Self::Store(_) => None,
        }
    }
}

impl From<CryptoError> for SpotifyError {
    fn from(e: CryptoError) -> Self {
        // A row we can't open is as good as no link: it has to be made again.
        tracing::error!(error = %e, "a stored Spotify token can't be opened");
        Self::LinkBroken
    }
}

type Slot<T> = Arc<tokio::sync::Mutex<Option<T>>>;

/// The Spotify service: one per process, shared by handlers and the HTTP layer.
pub struct Spotify {
    settings: SpotifySettings,
    keys: Arc<Keys>,
    store: Arc<Store>,
    http: reqwest::Client,
    /// rspotify with our base URLs; cloned per call with the right token in it.
    template: AuthCodeSpotify,
    /// The client-credentials token for track lookups and search.
    app_token: tokio::sync::Mutex<Option<vault::CachedToken>>,
    /// Per user: the current access token; its lock makes refreshes single-flight.
    tokens: Mutex<HashMap<i64, Slot<vault::CachedToken>>>,
    /// Per user: what they play, for [`NOW_PLAYING_CACHE`]; its lock makes lookups
    /// single-flight.
    playing: Mutex<HashMap<i64, Slot<playing::Cached>>>,
}

impl std::fmt::Debug for Spotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spotify")
            .field("client_id", &self.settings.client_id)
            .field("accounts_url", &self.settings.accounts_url)
            .field("api_url", &self.settings.api_url)
            .finish_non_exhaustive()
    }
}

/// Entries kept per in-memory map before it is cleared.
const CACHE_LIMIT: usize = 100_000;

impl Spotify {
    pub fn new(settings: SpotifySettings, keys: Arc<Keys>, store: Arc<Store>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let template = AuthCodeSpotify::with_config(
            rspotify::Credentials::new(&settings.client_id, settings.client_secret.expose()),
            rspotify::OAuth::default(),
            rspotify::Config {
                api_base_url: format!("{}/", settings.api_url),
                auth_base_url: format!("{}/", settings.accounts_url),
                token_refreshing: false,
                token_cached: false,
                ..Default::default()
            },
        );
        Self {
            settings,
            keys,
            store,
            http,
            template,
            app_token: tokio::sync::Mutex::default(),
            tokens: Mutex::default(),
            playing: Mutex::default(),
        }
    }

    pub fn settings(&self) -> &SpotifySettings {
        &self.settings
    }

    /// Drops everything held in memory about a user (after `/unlink`, `/forget`, a merge).
    pub fn forget_cached(&self, user_id: i64) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&user_id);
        self.playing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&user_id);
    }
}

/// The per-key slot of a map of async locks, created on first use.
fn slot<T>(map: &Mutex<HashMap<i64, Slot<T>>>, key: i64) -> Slot<T> {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= CACHE_LIMIT && !map.contains_key(&key) {
        map.clear();
    }
    map.entry(key).or_default().clone()
}
