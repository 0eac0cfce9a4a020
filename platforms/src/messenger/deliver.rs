//! Sending to Messenger: `OutboundMessage` to Send API bodies — plain text, quick replies
//! for command buttons, a button template when there are links — with `RESPONSE` for
//! replies and `UPDATE` for the rest (which the outbox only lets through inside the
//! 24-hour window), and Graph's errors to transient (rate limits, outages), held (outside
//! the window after all) or permanent (the person can't be reached).

use std::time::Duration;

use async_trait::async_trait;
use segue_bot::{Button, ButtonAction, DeliverError, DeliveryPolicy, OutboundMessage, Platform};
use serde_json::{Value, json};

use super::graph::{Graph, GraphError};

/// Send API limits.
const QUICK_REPLIES: usize = 13;
const TEMPLATE_BUTTONS: usize = 3;
const TITLE: usize = 20;
const TEMPLATE_TEXT: usize = 640;
const PAYLOAD: usize = 1000;

/// Messenger's `Deliver`.
#[derive(Debug)]
pub(super) struct MessengerDeliver {
    graph: Graph,
    policy: DeliveryPolicy,
}

impl MessengerDeliver {
    pub(super) fn new(graph: Graph, max_per_second: f64) -> Self {
        Self {
            graph,
            policy: DeliveryPolicy {
                max_per_second: (max_per_second > 0.0).then_some(max_per_second),
                chat_burst: 1,
                ..DeliveryPolicy::default()
            },
        }
    }
}

/// At most `max` characters, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max - 1).collect();
    s.push('…');
    s
}

fn template_button(b: &Button) -> Value {
    match &b.action {
        ButtonAction::Url(url) => {
            json!({ "type": "web_url", "url": url, "title": clip(&b.label, TITLE) })
        }
        ButtonAction::Data(data) => json!({
            "type": "postback",
            "title": clip(&b.label, TITLE),
            "payload": clip(data, PAYLOAD),
        }),
    }
}

fn button_template(text: &str, buttons: &[Button]) -> Value {
    json!({ "attachment": { "type": "template", "payload": {
        "template_type": "button",
        "text": text,
        "buttons": buttons.iter().map(template_button).collect::<Vec<_>>(),
    }}})
}

/// The `message` objects for one outbound message, sent in order: usually one; two or
/// more when the text is too long for a button template, or there are too many buttons.
pub(super) fn messages(text: &str, buttons: &[Button]) -> Vec<Value> {
    if buttons.is_empty() {
        return vec![json!({ "text": text })];
    }
    let all_commands = buttons
        .iter()
        .all(|b| matches!(b.action, ButtonAction::Data(_)));
    if all_commands && buttons.len() <= QUICK_REPLIES {
        let replies: Vec<Value> = buttons
            .iter()
            .map(|b| {
                let ButtonAction::Data(data) = &b.action else {
                    unreachable!("all command buttons")
                };
                json!({
                    "content_type": "text",
                    "title": clip(&b.label, TITLE),
                    "payload": clip(data, PAYLOAD),
                })
            })
            .collect();
        return vec![json!({ "text": text, "quick_replies": replies })];
    }
    if buttons.len() <= TEMPLATE_BUTTONS && text.chars().count() <= TEMPLATE_TEXT {
        return vec![button_template(text, buttons)];
    }
    // The text alone, then the buttons three at a time.
    let mut out = vec![json!({ "text": text })];
    for chunk in buttons.chunks(TEMPLATE_BUTTONS) {
        out.push(button_template("More:", chunk));
    }
    out
}

/// What a Graph error means for this message.
pub(super) fn classify(e: &GraphError) -> DeliverError {
    let reason = e.to_string();
    let transient = |retry_after: Option<Duration>| DeliverError::Transient {
        reason: reason.clone(),
        retry_after,
    };
    match e {
        GraphError::Network(_) => transient(None),
        GraphError::Http { status } if *status >= 500 || *status == 429 => transient(None),
        // Not Graph speaking (a wrong messenger.graph_url, a proxy): not the recipient's
        // fault, so keep the message and retry slowly.
        GraphError::Http { .. } => {
            tracing::error!(error = %e, "the Graph API answered without Graph's error body: check messenger.graph_url");
            transient(Some(Duration::from_secs(300)))
        }
        GraphError::Api { status, error } => match (error.code, error.error_subcode) {
            // Outside the 24-hour window after all (the window we recorded was off).
            (10, Some(2_018_278 | 2_018_065)) => DeliverError::Held {
                reason: "outside Messenger's 24-hour window: sent when they next write".into(),
            },
            // Rate limits: application, user, page, Send API.
            (4 | 17 | 32 | 613 | 80_006, _) => transient(Some(Duration::from_secs(30))),
            // Temporary failures.
            (1 | 2 | 1200, _) => transient(None),
            // The page token or its permissions: the operator must fix it; keep the
            // message (and don't blame the recipient) meanwhile.
            (190 | 102 | 200..=299, None) | (10, None) | (230, _) => {
                tracing::error!(error = %e, "Messenger rejected the page token or its permissions: check messenger.page_access_token");
                transient(Some(Duration::from_secs(300)))
            }
            // The person isn't available, has blocked the page, or doesn't exist.
            (551, _) | (200, Some(1_545_041)) | (100, Some(2_018_001)) | (10, Some(_)) => {
                DeliverError::Permanent { reason }
            }
            _ if *status >= 500 => transient(None),
            // A body Messenger refuses: retrying won't change it.
            _ => {
                tracing::error!(error = %e, "Messenger refused a message Segue built");
                DeliverError::Permanent { reason }
            }
        },
    }
}

#[async_trait]
impl segue_bot::Deliver for MessengerDeliver {
    fn platform(&self) -> Platform {
        Platform::Messenger
    }

    fn policy(&self) -> DeliveryPolicy {
        self.policy
    }

    fn reply_window(&self) -> Option<Duration> {
        Some(super::WINDOW)
    }

    async fn deliver(&self, message: &OutboundMessage) -> Result<(), DeliverError> {
        // Replies answer a message from within the window; everything else is an update
        // (the outbox holds those outside the window).
        let messaging_type = if message.in_reply_to.is_some() {
            "RESPONSE"
        } else {
            "UPDATE"
        };
        for body in messages(&message.text, &message.buttons) {
            let request = json!({
                "recipient": { "id": message.to.chat_id },
                "messaging_type": messaging_type,
                "message": body,
            });
            if let Err(e) = self.graph.post("me/messages", &request).await {
                let verdict = classify(&e);
                tracing::warn!(id = message.id, to = %message.to, error = %e, "Messenger Send API call failed");
                return Err(verdict);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messenger::graph::GraphErrorBody;

    fn api(code: i64, sub: Option<i64>) -> GraphError {
        GraphError::Api {
            status: 400,
            error: GraphErrorBody {
                message: "x".into(),
                kind: "OAuthException".into(),
                code,
                error_subcode: sub,
                fbtrace_id: None,
            },
        }
    }

    #[test]
    fn bodies_fit_the_send_api() {
        assert_eq!(messages("hi", &[]), vec![json!({ "text": "hi" })]);
        let quick = messages(
            "pick",
            &[Button::command("A very long label indeed", "/help")],
        );
        assert_eq!(
            quick[0]["quick_replies"][0]["title"],
            "A very long label i…"
        );
        assert_eq!(quick[0]["quick_replies"][0]["payload"], "/help");
        let link = messages("go", &[Button::link("Open", "https://x.example")]);
        assert_eq!(link[0]["attachment"]["payload"]["template_type"], "button");
        assert_eq!(
            link[0]["attachment"]["payload"]["buttons"][0]["type"],
            "web_url"
        );
        let long = "x".repeat(700);
        let split = messages(&long, &[Button::link("Open", "https://x.example")]);
        assert_eq!(split.len(), 2);
        assert_eq!(split[0]["text"], long);
        let many: Vec<Button> = (0..4)
            .map(|i| Button::link(format!("L{i}"), "https://x"))
            .collect();
        assert_eq!(messages("t", &many).len(), 3);
    }

    #[test]
    fn errors_are_classified() {
        assert!(matches!(
            classify(&api(10, Some(2_018_278))),
            DeliverError::Held { .. }
        ));
        assert!(matches!(
            classify(&api(613, None)),
            DeliverError::Transient {
                retry_after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            classify(&api(551, Some(1_545_041))),
            DeliverError::Permanent { .. }
        ));
        assert!(matches!(
            classify(&api(190, None)),
            DeliverError::Transient { .. }
        ));
        assert!(matches!(
            classify(&api(100, None)),
            DeliverError::Permanent { .. }
        ));
        assert!(matches!(
            classify(&GraphError::Http { status: 502 }),
            DeliverError::Transient { .. }
        ));
        assert!(matches!(
            classify(&GraphError::Http { status: 404 }),
            DeliverError::Transient {
                retry_after: Some(_),
                ..
            }
        ));
    }
}
