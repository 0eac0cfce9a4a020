//! Webhook payloads to neutral `Incoming` messages: text messages, quick replies and
//! postbacks (Get Started, menu items, template buttons), whose payloads are command
//! lines; echoes of the page's own messages, delivery and read receipts and anything
//! else are left alone.

use segue_bot::{ChatAddress, ChatKind, Content, Incoming, Platform, UserRef};
use serde::Deserialize;

use super::GET_STARTED;

/// A webhook POST body: `{"object":"page","entry":[{"messaging":[…]}]}`. Unknown fields
/// are allowed: Meta adds them over time.
#[derive(Debug, Deserialize)]
pub struct Payload {
    pub object: String,
    #[serde(default)]
    pub entry: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
pub struct Entry {
    #[serde(default)]
    pub messaging: Vec<Event>,
}

/// One messaging event. Every part is optional, so that an event kind Segue doesn't know
/// is skipped rather than failing the whole post (which Meta would retry forever).
#[derive(Clone, Debug, Deserialize)]
pub struct Event {
    #[serde(default)]
    pub sender: Option<Party>,
    #[serde(default)]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub postback: Option<Postback>,
    #[serde(default)]
    pub delivery: Option<serde_json::Value>,
    #[serde(default)]
    pub read: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Party {
    pub id: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub mid: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub is_echo: bool,
    #[serde(default)]
    pub quick_reply: Option<QuickReply>,
    #[serde(default)]
    pub attachments: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct QuickReply {
    #[serde(default)]
    pub payload: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Postback {
    #[serde(default)]
    pub mid: Option<String>,
    #[serde(default)]
    pub payload: Option<String>,
}

/// A body that isn't a page webhook.
#[derive(Debug, thiserror::Error)]
pub enum BadPayload {
    #[error("not JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("object is {0:?}, not \"page\"")]
    NotPage(String),
}

/// Parses a POST body into its events, in the order Meta sent them.
pub fn parse(body: &[u8]) -> Result<Vec<Event>, BadPayload> {
    let payload: Payload = serde_json::from_slice(body)?;
    if payload.object != "page" {
        return Err(BadPayload::NotPage(payload.object));
    }
    Ok(payload
        .entry
        .into_iter()
        .flat_map(|e| e.messaging)
        .collect())
}

/// What an event means for Segue.
#[derive(Debug)]
pub enum Converted {
    Message(Box<Incoming>),
    /// Nothing for us, with why.
    Skip(&'static str),
}

/// A postback or quick-reply payload as a command line: Segue's own payloads are
/// command lines already; Get Started is `/start`.
fn command_of(payload: &str) -> String {
    if payload == GET_STARTED {
        "/start".to_owned()
    } else {
        payload.to_owned()
    }
}

fn incoming(sender: &str, external_id: String, content: Content) -> Incoming {
    Incoming {
        external_id: Some(external_id),
        chat: ChatAddress::new(Platform::Messenger, sender),
        chat_kind: ChatKind::Private,
        user: UserRef {
            platform: Platform::Messenger,
            id: sender.to_owned(),
            // Names need a Graph profile call (and a permission); people pick a /handle.
            display_name: "Messenger user".to_owned(),
            username: None,
        },
        content,
        bot_username: None,
        private_chat: None,
        to_bot: false,
        on_message: None,
    }
}

impl Event {
    /// The sender's PSID (empty when the event has none).
    pub fn sender_id(&self) -> &str {
        self.sender.as_ref().map_or("", |p| p.id.as_str())
    }
}

/// Converts one event. Dedupe is by `mid`; a postback without one (older API versions)
/// gets an id from its sender, time and payload.
pub fn convert(event: &Event) -> Converted {
    let sender = event.sender_id();
    if sender.is_empty() {
        return Converted::Skip("event without a sender");
    }
    if let Some(m) = &event.message {
        if m.is_echo {
            return Converted::Skip("echo of the page's own message");
        }
        let Some(mid) = m.mid.clone() else {
            return Converted::Skip("message without a mid");
        };
        if let Some(payload) = m.quick_reply.as_ref().and_then(|q| q.payload.as_ref()) {
            let data = command_of(payload);
            return Converted::Message(Box::new(incoming(sender, mid, Content::Button { data })));
        }
        // A photo or a sticker isn't a command: the router answers it with the usual
        // pointer to /help, so the person isn't left wondering.
        let text = match (&m.text, &m.attachments) {
            (Some(text), _) => text.clone(),
            (None, Some(_)) => "[attachment]".to_owned(),
            (None, None) => return Converted::Skip("message without text or attachments"),
        };
        return Converted::Message(Box::new(incoming(sender, mid, Content::Text(text))));
    }
    if let Some(p) = &event.postback {
        let Some(payload) = &p.payload else {
            return Converted::Skip("postback without a payload");
        };
        let id = p.mid.clone().unwrap_or_else(|| {
            format!(
                "postback:{sender}:{}:{payload}",
                event.timestamp.unwrap_or_default()
            )
        });
        let data = command_of(payload);
        return Converted::Message(Box::new(incoming(sender, id, Content::Button { data })));
    }
    if event.delivery.is_some() {
        return Converted::Skip("delivery receipt");
    }
    if event.read.is_some() {
        return Converted::Skip("read receipt");
    }
    Converted::Skip("event kind Segue does not use")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<Event> {
        let path = format!(
            "{}/../../shared/fixtures/messenger/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        parse(&bytes).expect("fixture parses")
    }

    fn only(name: &str) -> Converted {
        let events = fixture(name);
        assert_eq!(events.len(), 1, "{name}");
        convert(&events[0])
    }

    #[test]
    fn fixtures_convert() {
        let Converted::Message(m) = only("text.json") else {
            panic!("text");
        };
        assert_eq!(m.chat.chat_id, "1254459154682919");
        assert_eq!(m.chat_kind, ChatKind::Private);
        assert_eq!(m.content, Content::Text("/help".into()));
        assert!(m.external_id.as_deref().unwrap().starts_with("m_AG5H"));

        let Converted::Message(m) = only("quick_reply.json") else {
            panic!("quick reply");
        };
        assert_eq!(
            m.content,
            Content::Button {
                data: "vote:skip".into()
            }
        );

        let Converted::Message(m) = only("postback.json") else {
            panic!("postback");
        };
        assert_eq!(
            m.content,
            Content::Button {
                data: "/start".into()
            }
        );
        assert_eq!(m.external_id.as_deref(), Some("m_postback0001"));

        assert!(matches!(only("echo.json"), Converted::Skip(_)));
        assert!(matches!(only("docs_sample.json"), Converted::Message(_)));

        let batched = fixture("batched.json");
        let senders: Vec<&str> = batched.iter().map(Event::sender_id).collect();
        assert_eq!(senders, ["111", "222", "111"]);
    }

    #[test]
    fn unknown_event_kinds_are_skipped_not_refused() {
        let events = parse(
            br#"{"object":"page","entry":[{"id":"P","time":1,"messaging":[
                {"recipient":{"id":"P"},"timestamp":1,"optin":{"ref":"x"}},
                {"sender":{"id":"9"},"recipient":{"id":"P"},"timestamp":1,"delivery":{"mids":["m"]}},
                {"sender":{"id":"9"},"recipient":{"id":"P"},"timestamp":1,
                 "message":{"mid":"m_s","attachments":[{"type":"image","payload":{"url":"https://x"}}]}}
            ]},{"id":"P","time":1,"standby":[{"sender":{"id":"9"}}]}]}"#,
        )
        .expect("parses");
        assert_eq!(events.len(), 3);
        assert!(matches!(
            convert(&events[0]),
            Converted::Skip("event without a sender")
        ));
        assert!(matches!(
            convert(&events[1]),
            Converted::Skip("delivery receipt")
        ));
        let Converted::Message(m) = convert(&events[2]) else {
            panic!("an attachment is answered");
        };
        assert_eq!(m.content, Content::Text("[attachment]".into()));
    }

    #[test]
    fn other_bodies_are_refused() {
        assert!(matches!(
            parse(br#"{"object":"instagram","entry":[]}"#),
            Err(BadPayload::NotPage(_))
        ));
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"entry":[]}"#).is_err());
    }
}
