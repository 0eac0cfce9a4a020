//! Web API calls through rspotify, with Segue's policy around them: the right token in
//! each call (a user's from the vault, or the app's), 429 waits `Retry-After` when it is
//! short, 5xx and network errors are retried with backoff, a 401 refreshes the token
//! once, and every failure ends as a [`SpotifyError`].

use std::future::Future;
use std::sync::Arc;

use rspotify::clients::{BaseClient, OAuthClient};
use rspotify::model::{FullTrack, PrivateUser, SearchResult, SearchType, TrackId};
use rspotify::{AuthCodeSpotify, ClientError, Token};

use super::accounts::{ATTEMPTS, backoff, retry_after};
use super::{Spotify, SpotifyError};
use crate::secret::Secret;

/// One failed call, classified.
enum Failure {
    /// 429 with this `Retry-After`.
    RateLimited(std::time::Duration),
    /// 401: the token is not (or no longer) accepted.
    Unauthorized,
    NotFound,
    /// 5xx or the network: worth another try.
    Transient(String),
    /// Anything else: another try won't help.
    Final(String),
}

async fn classify(err: ClientError) -> Failure {
    match err {
        ClientError::Http(http) => match *http {
            rspotify::http::HttpError::StatusCode(res) => {
                let status = res.status();
                match status.as_u16() {
                    429 => Failure::RateLimited(retry_after(res.headers())),
                    401 => Failure::Unauthorized,
                    404 => Failure::NotFound,
                    s if s >= 500 => Failure::Transient(format!("answered {status}")),
                    _ => {
                        let body = res.text().await.unwrap_or_default();
                        Failure::Final(format!("answered {status}: {body}"))
                    }
                }
            }
            rspotify::http::HttpError::Client(e) => Failure::Transient(e.to_string()),
        },
        ClientError::ParseJson(e) => Failure::Final(format!("unexpected answer: {e}")),
        other => Failure::Final(other.to_string()),
    }
}

impl Spotify {
    /// rspotify with this token in it (sharing the template's HTTP client).
    fn client(&self, token: &Secret) -> AuthCodeSpotify {
        let mut client = self.template.clone();
        client.token = Arc::new(rspotify::sync::Mutex::new(Some(Token {
            access_token: token.expose().to_owned(),
            // Not used: refreshing is the vault's job (`token_refreshing` is off).
            expires_in: chrono::TimeDelta::seconds(3600),
            expires_at: None,
            refresh_token: None,
            scopes: Default::default(),
        })));
        client
    }

    /// Runs `call` with retries. `Err(None)` means Spotify answered 401.
    async fn attempt<T, F, Fut>(
        &self,
        token: &Secret,
        what: &str,
        call: &F,
    ) -> Result<T, Option<SpotifyError>>
    where
        F: Fn(AuthCodeSpotify) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match call(self.client(token)).await {
                Ok(v) => return Ok(v),
                Err(e) => classify(e).await,
            };
            match failure {
                Failure::RateLimited(wait)
                    if attempt < ATTEMPTS && wait <= self.settings.max_retry_wait =>
                {
                    tracing::warn!(what, ?wait, "Spotify rate-limited us; waiting");
                    tokio::time::sleep(wait).await;
                }
                Failure::RateLimited(wait) => {
                    tracing::warn!(what, ?wait, "Spotify rate-limited us; giving up for now");
                    return Err(Some(SpotifyError::RateLimited(wait)));
                }
                Failure::Transient(detail) if attempt < ATTEMPTS => {
                    tracing::warn!(what, attempt, detail, "Spotify call failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Failure::Transient(detail) => {
                    tracing::error!(what, detail, "Spotify call failed; giving up");
                    return Err(Some(SpotifyError::Unavailable(detail)));
                }
                Failure::Unauthorized => return Err(None),
                Failure::NotFound => return Err(Some(SpotifyError::NotFound)),
                Failure::Final(detail) => {
                    tracing::error!(what, detail, "Spotify refused a call");
                    return Err(Some(SpotifyError::Refused(detail)));
                }
            }
        }
    }

    /// Calls the Web API as `user_id`, refreshing their token once if Spotify says 401.
    pub(super) async fn as_user<T, F, Fut>(
        &self,
        user_id: i64,
        what: &str,
        call: F,
    ) -> Result<T, SpotifyError>
    where
        F: Fn(AuthCodeSpotify) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let token = self.access_token(user_id).await?;
        match self.attempt(&token, what, &call).await {
            Ok(v) => Ok(v),
            Err(Some(e)) => Err(e),
            Err(None) => {
                tracing::info!(
                    user_id,
                    what,
                    "Spotify refused an access token; refreshing it"
                );
                let token = self.user_token(user_id, Some(token.expose())).await?;
                match self.attempt(&token, what, &call).await {
                    Ok(v) => Ok(v),
                    Err(Some(e)) => Err(e),
                    // A token fresh from the refresh is refused too: the link is broken,
                    // recorded as such like a rejected refresh token.
                    Err(None) => Err(self
                        .mark_broken(user_id, "a freshly refreshed access token got 401")
                        .await),
                }
            }
        }
    }

    /// Calls the Web API with the app's token (tracks, search).
    async fn as_app<T, F, Fut>(&self, what: &str, call: F) -> Result<T, SpotifyError>
    where
        F: Fn(AuthCodeSpotify) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let token = self.app_token().await?;
        match self.attempt(&token, what, &call).await {
            Ok(v) => Ok(v),
            Err(Some(e)) => Err(e),
            Err(None) => {
                // The app token was revoked early: get a new one, once.
                *self.app_token.lock().await = None;
                let token = self.app_token().await?;
                self.attempt(&token, what, &call).await.map_err(|e| {
                    e.unwrap_or_else(|| {
                        SpotifyError::Refused("the app token is not accepted".to_owned())
                    })
                })
            }
        }
    }

    /// The profile behind a fresh access token (during linking).
    pub(super) async fn profile(&self, token: &Secret) -> Result<PrivateUser, SpotifyError> {
        self.attempt(
            token,
            "me",
            &|c: AuthCodeSpotify| async move { c.me().await },
        )
        .await
        .map_err(|e| {
            e.unwrap_or_else(|| SpotifyError::Refused("a fresh token was refused".to_owned()))
        })
    }

    /// A track by id, with the app's token (works before anyone links).
    pub async fn track(&self, id: &TrackId<'static>) -> Result<FullTrack, SpotifyError> {
        self.as_app("track", |c: AuthCodeSpotify| {
            let id = id.clone();
            async move { c.track(id, None).await }
        })
        .await
    }

    /// The first tracks matching `query`, with the app's token.
    pub async fn search_tracks(
        &self,
        query: &str,
        limit: u32,
    ) -> Result<Vec<FullTrack>, SpotifyError> {
        let found = self
            .as_app("search", |c: AuthCodeSpotify| async move {
                c.search(query, SearchType::Track, None, None, Some(limit), None)
                    .await
            })
            .await?;
        Ok(match found {
            SearchResult::Tracks(page) => page.items,
            _ => Vec::new(),
        })
    }
}
