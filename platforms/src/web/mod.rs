//! The web console platform: a page at `/console`, a JSON API to open a session and send
//! commands, and a server-sent event stream of every message sent to the session's user.
//! Replies ride on the POST response and on the stream; later messages (notifications)
//! reach the stream, or are held in the outbox until the user connects again.

mod api;
mod hub;

use std::sync::Arc;

use async_trait::async_trait;
use segue_bot::{Deliver, DeliverError, OutboundMessage, Platform};

use crate::{Adapter, AdapterContext};
pub use hub::{Hub, WebEvent};

/// The web console adapter.
#[derive(Debug, Clone, Default)]
pub struct WebConsole {
    hub: Arc<Hub>,
}

impl WebConsole {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Adapter for WebConsole {
    fn platform(&self) -> Platform {
        Platform::Web
    }

    fn deliverer(&self) -> Arc<dyn Deliver> {
        Arc::new(WebDeliver {
            hub: self.hub.clone(),
        })
    }

    fn routes(&self, cx: &AdapterContext) -> axum::Router {
        api::routes(api::State {
            router: cx.router.clone(),
            hub: self.hub.clone(),
            shutdown: cx.shutdown.clone(),
        })
    }
}

/// Delivers to open event streams; holds the message when the user has none open.
#[derive(Debug)]
struct WebDeliver {
    hub: Arc<Hub>,
}

#[async_trait]
impl Deliver for WebDeliver {
    fn platform(&self) -> Platform {
        Platform::Web
    }

    async fn deliver(&self, message: &OutboundMessage) -> Result<(), DeliverError> {
        let event = WebEvent::new(message.id, &message.text, &message.buttons);
        if self.hub.publish(&message.to.chat_id, event) {
            Ok(())
        } else {
            Err(DeliverError::Held {
                reason: "the console is not open; delivered when it connects".to_owned(),
            })
        }
    }
}
