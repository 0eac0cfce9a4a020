//! The live side of the console's event streams: one broadcast channel per connected
//! web user, created on connect and dropped when the last stream closes.

use std::collections::HashMap;
use std::sync::Mutex;

use segue_bot::{Button, ButtonAction};
use serde::Serialize;
use tokio::sync::broadcast;

/// One message as the console shows it (and as a POST reply carries it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WebEvent {
    /// The message id, as a string (JavaScript numbers can't hold all 64 bits).
    pub id: String,
    pub text: String,
    pub buttons: Vec<WebButton>,
}

/// A button: a link (`url`) or a command it sends back (`data`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WebButton {
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl WebEvent {
    pub fn new(id: i64, text: &str, buttons: &[Button]) -> Self {
        Self {
            id: id.to_string(),
            text: text.to_owned(),
            buttons: buttons
                .iter()
                .map(|b| {
                    let (url, data) = match &b.action {
                        ButtonAction::Url(u) => (Some(u.clone()), None),
                        ButtonAction::Data(d) => (None, Some(d.clone())),
                    };
                    WebButton {
                        label: b.label.clone(),
                        url,
                        data,
                    }
                })
                .collect(),
        }
    }

    pub fn numeric_id(&self) -> i64 {
        self.id.parse().unwrap_or(0)
    }
}

/// Open streams by web chat id.
#[derive(Debug, Default)]
pub struct Hub {
    chats: Mutex<HashMap<String, broadcast::Sender<WebEvent>>>,
}

impl Hub {
    /// Listens to a chat's live messages.
    pub fn subscribe(&self, chat_id: &str) -> broadcast::Receiver<WebEvent> {
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        chats
            .entry(chat_id.to_owned())
            .or_insert_with(|| broadcast::channel(256).0)
            .subscribe()
    }

    /// Sends to a chat's open streams; `false` when none is open.
    pub fn publish(&self, chat_id: &str, event: WebEvent) -> bool {
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = chats.get(chat_id) else {
            return false;
        };
        if tx.send(event).is_ok() {
            return true;
        }
        chats.remove(chat_id);
        false
    }

    /// Forgets a chat's channel once its last stream has closed.
    pub fn release(&self, chat_id: &str) {
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        if chats
            .get(chat_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            chats.remove(chat_id);
        }
    }

    /// How many web users have a stream open.
    pub fn connected(&self) -> usize {
        self.chats.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
