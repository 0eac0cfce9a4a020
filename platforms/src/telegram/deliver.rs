//! Sending to Telegram: `OutboundMessage` to sendMessage (plain text, no parse mode, so
//! nothing needs escaping; buttons as an inline keyboard) or, for an in-place reply to a
//! button press, editMessageText on the button's message; and Telegram's errors to
//! transient (429 with retry_after, network) or permanent (blocked, kicked, no such chat).

use async_trait::async_trait;
use segue_bot::{ButtonAction, DeliverError, DeliveryPolicy, OutboundMessage, Platform};
use teloxide::payloads::{EditMessageTextSetters, SendMessageSetters};
use teloxide::prelude::Requester;
use teloxide::types::{ChatId, InlineKeyboardButton, InlineKeyboardMarkup, MessageId};
use teloxide::{ApiError, Bot, RequestError};

/// Telegram's `Deliver`.
#[derive(Debug)]
pub struct TelegramDeliver {
    bot: Bot,
    policy: DeliveryPolicy,
}

impl TelegramDeliver {
    pub fn new(bot: Bot, limits: &super::Limits) -> Self {
        let limit = |r: f64| (r > 0.0).then_some(r);
        Self {
            bot,
            policy: DeliveryPolicy {
                max_per_second: limit(limits.max_per_second),
                max_per_chat_per_second: limit(limits.max_per_chat_per_second),
                // Telegram tolerates short bursts to one chat.
                chat_burst: 3,
                max_per_group_per_minute: limit(limits.max_per_group_per_minute),
            },
        }
    }

    /// Replaces a message's text and keyboard (editMessageText; no keyboard given removes
    /// the old one). Pressing the same button twice edits to the same text: that is done.
    async fn edit(
        &self,
        chat: i64,
        id: &str,
        text: &str,
        kb: Option<InlineKeyboardMarkup>,
    ) -> Result<(), RequestError> {
        let Ok(id) = id.parse::<i32>() else {
            return Err(RequestError::Api(ApiError::MessageToEditNotFound));
        };
        let mut request = self
            .bot
            .edit_message_text(ChatId(chat), MessageId(id), text);
        if let Some(kb) = kb {
            request = request.reply_markup(kb);
        }
        match request.await {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn keyboard(message: &OutboundMessage) -> Result<Option<InlineKeyboardMarkup>, DeliverError> {
    if message.buttons.is_empty() {
        return Ok(None);
    }
    let mut rows = Vec::with_capacity(message.buttons.len());
    for b in &message.buttons {
        let button = match &b.action {
            ButtonAction::Url(u) => {
                let url = u.parse().map_err(|e| DeliverError::Permanent {
                    reason: format!("button link {u:?} is not a URL: {e}"),
                })?;
                InlineKeyboardButton::url(b.label.clone(), url)
            }
            ButtonAction::Data(d) => InlineKeyboardButton::callback(b.label.clone(), d.clone()),
        };
        rows.push(vec![button]);
    }
    Ok(Some(InlineKeyboardMarkup::new(rows)))
}

/// Whether retrying can help.
pub fn classify(e: &RequestError) -> DeliverError {
    let reason = e.to_string();
    match e {
        RequestError::RetryAfter(s) => DeliverError::Transient {
            reason,
            retry_after: Some(s.duration()),
        },
        RequestError::Network(_) | RequestError::InvalidJson { .. } | RequestError::Io(_) => {
            DeliverError::Transient {
                reason,
                retry_after: None,
            }
        }
        RequestError::MigrateToChatId(_) => DeliverError::Transient {
            reason,
            retry_after: None,
        },
        RequestError::Api(ApiError::Unknown(_)) => DeliverError::Transient {
            reason,
            retry_after: None,
        },
        // Blocked, kicked, deactivated, chat not found, bad request: retrying won't help.
        RequestError::Api(_) => DeliverError::Permanent { reason },
    }
}

#[async_trait]
impl segue_bot::Deliver for TelegramDeliver {
    fn platform(&self) -> Platform {
        Platform::Telegram
    }

    fn policy(&self) -> DeliveryPolicy {
        self.policy
    }

    /// Group and supergroup chat ids are negative on Telegram.
    fn is_group(&self, chat_id: &str) -> bool {
        chat_id.starts_with('-')
    }

    async fn deliver(&self, message: &OutboundMessage) -> Result<(), DeliverError> {
        let chat: i64 = message
            .to
            .chat_id
            .parse()
            .map_err(|_| DeliverError::Permanent {
                reason: format!("{:?} is not a Telegram chat id", message.to.chat_id),
            })?;
        let kb = keyboard(message)?;
        if let Some(id) = &message.edits {
            match self.edit(chat, id, &message.text, kb.clone()).await {
                Ok(()) => return Ok(()),
                // Gone, too old, or not ours: say it in a new message instead.
                Err(RequestError::Api(
                    ApiError::MessageToEditNotFound | ApiError::MessageCantBeEdited,
                )) => {
                    tracing::debug!(chat, message = %id, "message can't be edited; sending anew");
                }
                Err(e) => return Err(classify(&e)),
            }
        }
        let mut request = self.bot.send_message(ChatId(chat), &message.text);
        if let Some(kb) = kb {
            request = request.reply_markup(kb);
        }
        request.await.map(|_| ()).map_err(|e| classify(&e))
    }
}
