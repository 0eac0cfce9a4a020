//! Web console sessions: server-issued random tokens, stored hashed, cached in memory.

use base64::Engine;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};

use super::entities::{identity, session};
use super::{Store, StoreError, clear_if_full};
use crate::crypto::digest_hex;
use crate::ids::now_millis;

/// The web identity a session token stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSession {
    pub identity_id: i64,
    pub user_id: i64,
    /// The identity's platform user id (also its chat id on the web platform).
    pub web_id: String,
    pub display_name: String,
}

impl Store {
    /// Issues a new session token for an identity. Only its hash is stored.
    pub async fn create_session(&self, identity_id: i64) -> Result<String, StoreError> {
        let bytes: [u8; 32] = rand::random();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = now_millis();
        session::ActiveModel {
            token_hash: Set(digest_hex(&token)),
            identity_id: Set(identity_id),
            created_at: Set(now),
            last_used_at: Set(now),
        }
        .insert(&self.db)
        .await?;
        Ok(token)
    }

    /// The session behind a token, or `None` for an unknown token.
    pub async fn session(&self, token: &str) -> Result<Option<WebSession>, StoreError> {
        // The memory cache is keyed by the token itself (it never leaves the process),
        // sparing a hash per request; the database only ever sees the hash.
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
        {
            return Ok(Some(s.clone()));
        }
        let Some(row) = session::Entity::find_by_id(digest_hex(token))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let Some(ident) = identity::Entity::find_by_id(row.identity_id)
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let found = WebSession {
            identity_id: ident.id,
            user_id: ident.user_id,
            web_id: ident.platform_user_id,
            display_name: ident.display_name,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        clear_if_full(&mut sessions);
        sessions.insert(token.to_owned(), found.clone());
        Ok(Some(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_are_served_from_memory_after_the_first_lookup() {
        let db = crate::store::connect(&crate::store::DbOptions {
            url: "sqlite::memory:".to_owned(),
            max_connections: 1,
        })
        .await
        .unwrap();
        let store = Store::new(db);
        // No schema at all: a database lookup fails, so an answer proves the cache.
        assert!(store.session("tok").await.is_err());
        store.sessions.lock().unwrap().insert(
            "tok".to_owned(),
            WebSession {
                identity_id: 1,
                user_id: 1,
                web_id: "w".to_owned(),
                display_name: "n".to_owned(),
            },
        );
        assert_eq!(store.session("tok").await.unwrap().unwrap().web_id, "w");
        assert_eq!(digest_hex("tok").len(), 64);
    }
}
