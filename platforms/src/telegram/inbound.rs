//! Telegram updates to neutral `Incoming` messages: text messages (in groups, commands
//! and replies to the bot's messages; `@botname` is understood by the router), button
//! presses (callback queries, with the message the button is on);
//! edited messages and everything else are left alone.

use segue_bot::{ChatAddress, ChatKind, Content, Incoming, Platform, UserRef};
use teloxide::types::{CallbackQueryId, Chat, ChatId, Update, UpdateKind, User};

/// What an update means for Segue.
#[derive(Debug)]
pub enum Converted {
    /// Hand it to the router; answer the callback query with this id afterwards.
    Message(Box<Incoming>, Option<CallbackQueryId>),
    /// A group became a supergroup: its chat id changed from the first to the second.
    Migrated(ChatId, ChatId),
    /// Nothing for us (edited message, a photo, a channel post…), with why.
    Skip(&'static str),
}

fn user_ref(user: &User) -> UserRef {
    UserRef {
        platform: Platform::Telegram,
        id: user.id.0.to_string(),
        display_name: user.full_name(),
        username: user.username.clone(),
    }
}

/// Private chats are one person; groups and supergroups are groups.
fn kind_of(chat: &Chat) -> ChatKind {
    if chat.is_private() {
        ChatKind::Private
    } else {
        ChatKind::Group
    }
}

/// Whether `user` is this bot (`me` is its username; unknown, nobody is).
fn is_me(user: &User, me: Option<&str>) -> bool {
    match (user.is_bot, user.username.as_deref(), me) {
        (true, Some(name), Some(me)) => name.eq_ignore_ascii_case(me),
        _ => false,
    }
}

/// Converts one update. `bot_username` is the bot's own `@name`, when known.
pub fn convert(update: &Update, bot_username: Option<&str>) -> Converted {
    let external_id = Some(update.id.0.to_string());
    let bot_username = bot_username.map(str::to_owned);
    match &update.kind {
        UpdateKind::Message(m) => {
            if let Some(new) = m.migrate_to_chat_id() {
                return Converted::Migrated(m.chat.id, *new);
            }
            let Some(text) = m.text() else {
                return Converted::Skip("not a text message");
            };
            let Some(from) = m.from.as_ref() else {
                return Converted::Skip("no sender (channel or anonymous admin)");
            };
            if m.chat.is_channel() {
                return Converted::Skip("channel post");
            }
            let chat_kind = kind_of(&m.chat);
            // In a group, a reply to one of our messages is meant for us.
            let to_bot = chat_kind == ChatKind::Group
                && m.reply_to_message()
                    .and_then(|r| r.from.as_ref())
                    .is_some_and(|u| is_me(u, bot_username.as_deref()));
            Converted::Message(
                Box::new(Incoming {
                    external_id,
                    chat: ChatAddress::new(Platform::Telegram, m.chat.id.0.to_string()),
                    chat_kind,
                    user: user_ref(from),
                    content: Content::Text(text.to_owned()),
                    bot_username,
                    private_chat: None,
                    to_bot,
                    on_message: None,
                }),
                None,
            )
        }
        UpdateKind::CallbackQuery(q) => {
            let (Some(data), Some(message)) = (q.data.as_ref(), q.message.as_ref()) else {
                return Converted::Skip("callback query without data or message");
            };
            let chat = message.chat();
            let chat_kind = kind_of(chat);
            Converted::Message(
                Box::new(Incoming {
                    external_id,
                    chat: ChatAddress::new(Platform::Telegram, chat.id.0.to_string()),
                    chat_kind,
                    user: user_ref(&q.from),
                    content: Content::Button { data: data.clone() },
                    bot_username,
                    private_chat: None,
                    to_bot: false,
                    on_message: Some(message.id().0.to_string()),
                }),
                Some(q.id.clone()),
            )
        }
        UpdateKind::EditedMessage(_) => Converted::Skip("edited message"),
        _ => Converted::Skip("update kind Segue does not use"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Update {
        let path = format!(
            "{}/../../shared/fixtures/telegram/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).expect("fixture parses")
    }

    #[test]
    fn fixtures_convert() {
        let Converted::Message(m, None) =
            convert(&fixture("command_private.json"), Some("segue_bot"))
        else {
            panic!("private command");
        };
        assert_eq!(m.chat_kind, ChatKind::Private);
        assert_eq!(m.external_id.as_deref(), Some("10000"));
        assert_eq!(m.user.username.as_deref(), Some("alice"));
        assert!(matches!(&m.content, Content::Text(t) if t.starts_with("/share bob")));

        let Converted::Message(m, None) =
            convert(&fixture("command_group_addressed.json"), Some("segue_bot"))
        else {
            panic!("group command");
        };
        assert_eq!(m.chat_kind, ChatKind::Group);
        assert_eq!(m.chat.chat_id, "-1001234567890");

        let Converted::Message(m, Some(q)) = convert(&fixture("callback_query.json"), None) else {
            panic!("button press");
        };
        assert_eq!(q.0, "4382bfdwdsb323b2d9");
        assert_eq!(
            m.content,
            Content::Button {
                data: "vote:skip".into()
            }
        );

        assert!(matches!(
            convert(&fixture("edited_message.json"), None),
            Converted::Skip("edited message")
        ));
        assert!(matches!(
            convert(&fixture("plain_text.json"), None),
            Converted::Message(..)
        ));
    }
}
