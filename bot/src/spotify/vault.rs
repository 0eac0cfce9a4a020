//! The token vault: a linked person's tokens, sealed in `spotify_links` with the key from
//! `security.secret_key`, and access tokens refreshed before they expire, once per user
//! however many requests need one at the same moment (a per-user lock; rspotify's own
//! refresh is per call). A refresh token Spotify rejects marks the link broken.

use super::accounts::TokenError;
use super::{Spotify, SpotifyError, slot};
use crate::ids::now_millis;
use crate::secret::Secret;
use crate::store::entities::{spotify_link, spotify_link_code};

/// Refresh this long before Spotify's expiry (rspotify itself counts 10 s early).
const MARGIN_MS: i64 = 60_000;

/// Tokens fresh from Spotify, before they are sealed.
#[derive(Clone, Debug)]
pub struct Grant {
    pub access_token: Secret,
    pub refresh_token: Secret,
    /// Unix milliseconds.
    pub expires_at: i64,
    pub scopes: String,
    pub spotify_id: String,
    pub spotify_name: String,
}

/// An access token held in memory, with its expiry (Unix milliseconds).
#[derive(Clone, Debug)]
pub(super) struct CachedToken {
    pub token: Secret,
    pub expires_at: i64,
}

impl CachedToken {
    fn fresh(&self) -> bool {
        self.expires_at - MARGIN_MS > now_millis()
    }
}

impl Spotify {
    /// A grant's link row for a user: the parked form, claimed at once.
    pub(super) fn seal_link(&self, user_id: i64, grant: &Grant) -> spotify_link::Model {
        self.link_from_code(user_id, self.seal_code("", grant, 0))
    }

    /// A grant with both tokens sealed under the current key.
    pub(super) fn seal_code(
        &self,
        code_hash: &str,
        grant: &Grant,
        expires_at: i64,
    ) -> spotify_link_code::Model {
        spotify_link_code::Model {
            code_hash: code_hash.to_owned(),
            spotify_id: grant.spotify_id.clone(),
            spotify_name: grant.spotify_name.clone(),
            key_id: self.keys.key_id().to_owned(),
            refresh_token: self.keys.seal(grant.refresh_token.expose()),
            access_token: self.keys.seal(grant.access_token.expose()),
            access_expires_at: grant.expires_at,
            scopes: grant.scopes.clone(),
            expires_at,
        }
    }

    /// A parked link becomes a user's (still sealed: nothing is opened on the way).
    pub(super) fn link_from_code(
        &self,
        user_id: i64,
        parked: spotify_link_code::Model,
    ) -> spotify_link::Model {
        let now = now_millis();
        spotify_link::Model {
            user_id,
            spotify_id: parked.spotify_id,
            spotify_name: parked.spotify_name,
            key_id: parked.key_id,
            refresh_token: parked.refresh_token,
            access_token: parked.access_token,
            access_expires_at: parked.access_expires_at,
            scopes: parked.scopes,
            broken_at: None,
            linked_at: now,
            updated_at: now,
        }
    }

    /// A valid access token for this user, refreshed when needed (single-flight).
    pub async fn access_token(&self, user_id: i64) -> Result<Secret, SpotifyError> {
        self.user_token(user_id, None).await
    }

    /// Like [`Spotify::access_token`], but never answers with `rejected`, a token Spotify
    /// just refused with 401 (revoked early): that one is refreshed, unless another
    /// request has already done so.
    pub(super) async fn user_token(
        &self,
        user_id: i64,
        rejected: Option<&str>,
    ) -> Result<Secret, SpotifyError> {
        let usable = |t: &CachedToken| t.fresh() && Some(t.token.expose()) != rejected;
        let slot = slot(&self.tokens, user_id);
        let mut held = slot.lock().await;
        if let Some(t) = held.as_ref().filter(|t| usable(t)) {
            return Ok(t.token.clone());
        }
        let link = self
            .store
            .spotify_link(user_id)
            .await?
            .ok_or(SpotifyError::NotLinked)?;
        if link.broken_at.is_some() {
            return Err(SpotifyError::LinkBroken);
        }
        // Another process (or this one before a restart) may have refreshed already.
        let stored = CachedToken {
            token: Secret::new(self.keys.open(&link.key_id, &link.access_token)?),
            expires_at: link.access_expires_at,
        };
        if usable(&stored) {
            *held = Some(stored.clone());
            return Ok(stored.token);
        }
        let refresh = self.keys.open(&link.key_id, &link.refresh_token)?;
        match self.refresh_grant(&refresh).await {
            Ok(answer) => {
                let token = answer.access_token.clone();
                let expires_at = answer.expires_at_ms();
                let refresh = answer
                    .refresh_token
                    .as_ref()
                    .map_or(refresh.as_str(), Secret::expose);
                self.store
                    .update_spotify_tokens(
                        user_id,
                        self.keys.key_id(),
                        &self.keys.seal(token.expose()),
                        expires_at,
                        &self.keys.seal(refresh),
                    )
                    .await?;
                tracing::debug!(
                    user_id,
                    rotated = answer.refresh_token.is_some(),
                    "Spotify token refreshed"
                );
                *held = Some(CachedToken {
                    token: token.clone(),
                    expires_at,
                });
                Ok(token)
            }
            Err(TokenError::InvalidGrant(detail)) => {
                *held = None;
                Err(self
                    .mark_broken(user_id, &format!("refresh token rejected: {detail}"))
                    .await)
            }
            Err(TokenError::Other(e)) => Err(e),
        }
    }

    /// Spotify no longer accepts this user's tokens: the link is recorded as broken (so
    /// `/me` says so, shares to them pause, and `/link` mends it) and the access token
    /// held in memory is dropped. Answers the error to return.
    pub(super) async fn mark_broken(&self, user_id: i64, why: &str) -> SpotifyError {
        tracing::warn!(
            user_id,
            why,
            "Spotify refused our tokens; the link is broken"
        );
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&user_id);
        match self.store.mark_spotify_broken(user_id).await {
            Ok(()) => SpotifyError::LinkBroken,
            Err(e) => SpotifyError::Store(e),
        }
    }

    /// The app's client-credentials token (for tracks and search), renewed when needed.
    pub(super) async fn app_token(&self) -> Result<Secret, SpotifyError> {
        let mut held = self.app_token.lock().await;
        if let Some(t) = held.as_ref().filter(|t| t.fresh()) {
            return Ok(t.token.clone());
        }
        let answer = self.client_credentials().await.map_err(|e| match e {
            TokenError::InvalidGrant(d) => SpotifyError::Refused(d),
            TokenError::Other(e) => e,
        })?;
        let t = CachedToken {
            token: answer.access_token.clone(),
            expires_at: answer.expires_at_ms(),
        };
        *held = Some(t.clone());
        Ok(t.token)
    }
}
