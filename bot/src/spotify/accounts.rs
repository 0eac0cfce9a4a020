//! Spotify's accounts service: the authorize URL people are sent to, and the token
//! endpoint (authorization code, refresh token, client credentials). Called with reqwest
//! directly: rspotify keeps the old refresh token when Spotify rotates it, and doesn't
//! tell `invalid_grant` apart from other failures.

use std::time::Duration;

use serde::Deserialize;

use super::{SCOPES, Spotify, SpotifyError};
use crate::ids::now_millis;
use crate::secret::Secret;

/// A successful answer of the token endpoint; `Debug` shows no token.
#[derive(Debug, Deserialize)]
pub(super) struct TokenAnswer {
    pub access_token: Secret,
    pub expires_in: i64,
    /// Present on the code exchange, and on a refresh when Spotify rotates it.
    pub refresh_token: Option<Secret>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl TokenAnswer {
    pub fn expires_at_ms(&self) -> i64 {
        now_millis() + self.expires_in.max(0) * 1000
    }
}

#[derive(Debug, Deserialize)]
struct TokenErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Why the token endpoint said no.
#[derive(Debug)]
pub(super) enum TokenError {
    /// `invalid_grant`: the code or refresh token is no good (used, expired, revoked).
    InvalidGrant(String),
    Other(SpotifyError),
}

/// Attempts per call when Spotify answers 429 (short waits) or 5xx.
pub(super) const ATTEMPTS: u32 = 3;

/// The wait before attempt `n + 1` after a 5xx or network error.
pub(super) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 * 4u64.pow(attempt.saturating_sub(1)))
}

/// `Retry-After` in seconds (Spotify sends whole seconds); 1 s when missing or odd.
pub(super) fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    let secs = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs)
}

impl Spotify {
    /// Where to send a person to approve Segue, carrying `state` through.
    pub fn authorize_url(&self, state: &str) -> String {
        let mut url = match url::Url::parse(&format!("{}/authorize", self.settings.accounts_url)) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "spotify.accounts_url does not make a URL");
                return self.settings.accounts_url.clone();
            }
        };
        url.query_pairs_mut()
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &self.settings.redirect_uri)
            .append_pair("scope", &SCOPES.join(" "))
            .append_pair("state", state);
        url.into()
    }

    /// Exchanges an authorization code from the callback.
    pub(super) async fn exchange_code(&self, code: &str) -> Result<TokenAnswer, TokenError> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.settings.redirect_uri),
        ])
        .await
    }

    /// A fresh access token for a refresh token.
    pub(super) async fn refresh_grant(
        &self,
        refresh_token: &str,
    ) -> Result<TokenAnswer, TokenError> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// The app's own token (client credentials): tracks and search, no user needed.
    pub(super) async fn client_credentials(&self) -> Result<TokenAnswer, TokenError> {
        self.token_request(&[("grant_type", "client_credentials")])
            .await
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<TokenAnswer, TokenError> {
        let url = format!("{}/api/token", self.settings.accounts_url);
        let grant = form.first().map_or("", |(_, g)| *g);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .http
                .post(&url)
                .basic_auth(
                    &self.settings.client_id,
                    Some(self.settings.client_secret.expose()),
                )
                .form(form)
                .send()
                .await;
            let res = match sent {
                Ok(res) => res,
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(error = %e, grant, attempt, "Spotify token request failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => {
                    return Err(TokenError::Other(SpotifyError::Unavailable(e.to_string())));
                }
            };
            let status = res.status();
            if status.is_success() {
                return res.json::<TokenAnswer>().await.map_err(|e| {
                    TokenError::Other(SpotifyError::Unavailable(format!(
                        "unreadable token answer: {e}"
                    )))
                });
            }
            if status.as_u16() == 429 {
                let wait = retry_after(res.headers());
                if attempt < ATTEMPTS && wait <= self.settings.max_retry_wait {
                    tracing::warn!(
                        ?wait,
                        grant,
                        "Spotify token endpoint rate-limited us; waiting"
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(TokenError::Other(SpotifyError::RateLimited(wait)));
            }
            if status.is_server_error() {
                if attempt < ATTEMPTS {
                    tracing::warn!(%status, grant, attempt, "Spotify token endpoint failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                return Err(TokenError::Other(SpotifyError::Unavailable(format!(
                    "token endpoint answered {status}"
                ))));
            }
            let body = res.text().await.unwrap_or_default();
            let parsed = serde_json::from_str::<TokenErrorBody>(&body).ok();
            let detail = parsed.as_ref().map_or(body.clone(), |b| {
                format!(
                    "{}: {}",
                    b.error,
                    b.error_description.as_deref().unwrap_or("")
                )
            });
            if parsed.as_ref().is_some_and(|b| b.error == "invalid_grant") {
                return Err(TokenError::InvalidGrant(detail));
            }
            tracing::error!(%status, grant, detail, "Spotify token endpoint refused the request (check spotify.client_id and client_secret)");
            return Err(TokenError::Other(SpotifyError::Refused(format!(
                "{status} {detail}"
            ))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_answer_never_prints_its_tokens() {
        let answer: TokenAnswer = serde_json::from_str(
            r#"{"access_token":"AQD-access-123","expires_in":3600,"refresh_token":"AQC-refresh-456","scope":"user-read-recently-played"}"#,
        )
        .unwrap();
        let shown = format!("{answer:?}");
        assert!(
            !shown.contains("access-123") && !shown.contains("refresh-456"),
            "{shown}"
        );
        assert_eq!(answer.access_token.expose(), "AQD-access-123");
        assert_eq!(
            answer.refresh_token.as_ref().map(Secret::expose),
            Some("AQC-refresh-456")
        );
    }
}
