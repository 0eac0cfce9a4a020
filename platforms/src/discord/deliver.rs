//! Outbound for the outbox: notifications and other messages that are not an
//! interaction's answer. `@<user id>` addresses a person's DM (opened once, then
//! remembered); anything else is a channel id. Discord's error codes decide between
//! retrying, dead-lettering (closed DMs: 50007) and waiting out a rate limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use segue_bot::{DeliverError, DeliveryPolicy, OutboundMessage, Platform};
use serenity::all::CreateMessage;

use super::respond::{components, escape, no_mentions};
use super::rest::{Rest, RestError, codes};

/// How many DM channel ids to remember before starting over.
const DM_CACHE: usize = 100_000;

pub struct DiscordDeliver {
    rest: Arc<Rest>,
    /// User id → DM channel id.
    dms: Mutex<HashMap<String, String>>,
    max_per_second: f64,
}

impl DiscordDeliver {
    pub fn new(rest: Arc<Rest>, max_per_second: f64) -> Self {
        Self {
            rest,
            dms: Mutex::default(),
            max_per_second,
        }
    }

    async fn channel_for(&self, chat_id: &str) -> Result<String, RestError> {
        let Some(user_id) = chat_id.strip_prefix('@') else {
            return Ok(chat_id.to_owned());
        };
        if let Some(ch) = self
            .dms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user_id)
        {
            return Ok(ch.clone());
        }
        let channel = self.rest.create_dm(user_id).await?;
        let mut dms = self.dms.lock().unwrap_or_else(|e| e.into_inner());
        if dms.len() >= DM_CACHE {
            dms.clear();
        }
        dms.insert(user_id.to_owned(), channel.clone());
        Ok(channel)
    }

    fn forget_dm(&self, chat_id: &str) {
        if let Some(user_id) = chat_id.strip_prefix('@') {
            self.dms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(user_id);
        }
    }
}

#[async_trait]
impl segue_bot::Deliver for DiscordDeliver {
    fn platform(&self) -> Platform {
        Platform::Discord
    }

    fn policy(&self) -> DeliveryPolicy {
        DeliveryPolicy {
            // Discord: 50 requests/s per bot; opening a DM is a request too.
            max_per_second: (self.max_per_second > 0.0).then_some(self.max_per_second),
            // A channel takes 5 messages per 5 seconds.
            max_per_chat_per_second: Some(1.0),
            chat_burst: 5,
            max_per_group_per_minute: None,
        }
    }

    async fn deliver(&self, message: &OutboundMessage) -> Result<(), DeliverError> {
        let chat_id = &message.to.chat_id;
        let body = CreateMessage::new()
            .content(escape(&message.text))
            .allowed_mentions(no_mentions())
            .components(components(&message.buttons));
        let sent = match self.channel_for(chat_id).await {
            Ok(channel) => self.rest.create_message(&channel, &body).await,
            Err(e) => Err(e),
        };
        sent.map_err(|e| {
            if matches!(e, RestError::Api { code, .. } if code == codes::UNKNOWN_CHANNEL) {
                self.forget_dm(chat_id);
            }
            deliver_error(e)
        })
    }
}

/// Discord's answer as the outbox's verdict.
pub fn deliver_error(e: RestError) -> DeliverError {
    match e {
        RestError::RateLimited { retry_after } => DeliverError::Transient {
            reason: "discord rate limit".to_owned(),
            retry_after: Some(retry_after),
        },
        e if e.is_transient() => DeliverError::Transient {
            reason: e.to_string(),
            retry_after: None,
        },
        RestError::Api { code, .. } if code == codes::CANNOT_MESSAGE_USER => {
            DeliverError::Permanent {
                reason: "the person's DMs are closed to Segue (discord 50007)".to_owned(),
            }
        }
        e => DeliverError::Permanent {
            reason: e.to_string(),
        },
    }
}
