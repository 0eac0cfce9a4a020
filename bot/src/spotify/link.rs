//! Linking a Spotify account: the signed, expiring, single-use OAuth `state`, the code
//! exchange behind the callback, and the 16-digit codes of the generic start page that
//! `/link <code>` redeems.

use rspotify::prelude::Id;

use super::accounts::TokenError;
use super::{LINK_VALID_FOR, Spotify, SpotifyError, vault::Grant};
use crate::ids::now_millis;
use crate::store::StoreError;

const STATE_VERSION: u8 = 1;

/// A verified `state`: who asked (none for the generic page) and until when it is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// Hex of the random nonce: spent once in `used_states`.
    pub nonce: String,
    /// The identity that sent `/link`; `None` for the generic start page.
    pub identity_id: Option<i64>,
    pub expires_at: i64,
}

/// Why a `state` (or a 16-digit code) is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the link is not valid")]
    Invalid,
    #[error("the link has expired")]
    Expired,
    #[error("the link was already used")]
    Used,
}

impl Spotify {
    /// A signed state for `/link` (naming the identity) or for the generic page (`None`),
    /// valid for [`LINK_VALID_FOR`].
    pub fn new_state(&self, identity_id: Option<i64>) -> String {
        self.state_until(
            identity_id,
            now_millis() + LINK_VALID_FOR.as_millis() as i64,
        )
    }

    /// A signed state valid until `expires_at` (Unix milliseconds; tests make expired
    /// ones with it).
    pub fn state_until(&self, identity_id: Option<i64>, expires_at: i64) -> String {
        let nonce: [u8; 16] = rand::random();
        let mut payload = vec![STATE_VERSION];
        payload.extend(nonce);
        payload.extend(expires_at.to_be_bytes());
        payload.extend(identity_id.unwrap_or(0).to_be_bytes());
        self.keys.sign(&payload)
    }

    /// Checks a state's signature and age (not whether it was used: see
    /// [`Spotify::spend_state`]).
    pub fn check_state(&self, state: &str) -> Result<LinkState, StateError> {
        let payload = self.keys.verify(state).ok_or(StateError::Invalid)?;
        if payload.len() != 33 || payload[0] != STATE_VERSION {
            return Err(StateError::Invalid);
        }
        let nonce: String = payload[1..17].iter().map(|b| format!("{b:02x}")).collect();
        let expires_at = i64::from_be_bytes(payload[17..25].try_into().expect("8 bytes"));
        let identity = i64::from_be_bytes(payload[25..33].try_into().expect("8 bytes"));
        if expires_at <= now_millis() {
            return Err(StateError::Expired);
        }
        Ok(LinkState {
            nonce,
            identity_id: (identity != 0).then_some(identity),
            expires_at,
        })
    }

    /// Marks a state used: `false` when it was used before.
    pub async fn spend_state(&self, state: &LinkState) -> Result<bool, StoreError> {
        self.store.spend_state(&state.nonce, state.expires_at).await
    }

    /// Exchanges the callback's code and reads whose account it is.
    pub async fn exchange(&self, code: &str) -> Result<Grant, SpotifyError> {
        let answer = self.exchange_code(code).await.map_err(|e| match e {
            TokenError::InvalidGrant(detail) => SpotifyError::Refused(detail),
            TokenError::Other(e) => e,
        })?;
        let Some(refresh) = answer.refresh_token.clone() else {
            return Err(SpotifyError::Refused(
                "the code exchange gave no refresh token".to_owned(),
            ));
        };
        let mut grant = Grant {
            access_token: answer.access_token.clone(),
            refresh_token: refresh,
            expires_at: answer.expires_at_ms(),
            scopes: answer.scope.clone().unwrap_or_default(),
            spotify_id: String::new(),
            spotify_name: String::new(),
        };
        let me = self.profile(&grant.access_token).await?;
        grant.spotify_id = me.id.id().to_owned();
        grant.spotify_name = me.display_name.unwrap_or_else(|| grant.spotify_id.clone());
        Ok(grant)
    }

    /// Stores a grant as this user's link (replacing an older one).
    pub async fn save_link(&self, user_id: i64, grant: &Grant) -> Result<(), SpotifyError> {
        let row = self.seal_link(user_id, grant);
        self.store.save_spotify_link(row).await?;
        self.forget_cached(user_id);
        tracing::info!(user_id, "Spotify linked");
        Ok(())
    }

    /// Parks a grant from the generic page under a fresh 16-digit code (returned, grouped
    /// in fours) until someone sends `/link <code>`.
    pub async fn park_grant(&self, grant: &Grant) -> Result<String, SpotifyError> {
        let code: String = (0..16)
            .map(|_| char::from(b'0' + rand::random_range(0..10u8)))
            .collect();
        let expires_at = now_millis() + LINK_VALID_FOR.as_millis() as i64;
        let row = self.seal_code(&crate::crypto::digest_hex(&code), grant, expires_at);
        self.store.park_link_code(row).await?;
        Ok(code
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" "))
    }

    /// Redeems a 16-digit code for this user: the parked link becomes theirs. Returns the
    /// Spotify account's name; [`StateError`] when the code is unknown, used or expired.
    pub async fn redeem_code(
        &self,
        user_id: i64,
        code: &str,
    ) -> Result<Result<String, StateError>, SpotifyError> {
        let digits: String = code
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        if digits.len() != 16 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Ok(Err(StateError::Invalid));
        }
        let Some(parked) = self
            .store
            .claim_link_code(&crate::crypto::digest_hex(&digits), now_millis())
            .await?
        else {
            return Ok(Err(StateError::Invalid));
        };
        let name = parked.spotify_name.clone();
        self.store
            .save_spotify_link(self.link_from_code(user_id, parked))
            .await?;
        self.forget_cached(user_id);
        tracing::info!(user_id, "Spotify linked with a code");
        Ok(Ok(name))
    }

    /// Deletes a user's link (their tokens); `false` when there was none.
    pub async fn unlink(&self, user_id: i64) -> Result<bool, SpotifyError> {
        let removed = self.store.delete_spotify_link(user_id).await?;
        self.forget_cached(user_id);
        Ok(removed)
    }
}
