//! The neutral message types: what a platform adapter turns its events into
//! ([`Incoming`]) and what handlers answer with ([`Reply`], addressed as [`Outgoing`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A chat platform Segue talks on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// The built-in web console.
    Web,
    Telegram,
    Discord,
    Messenger,
}

impl Platform {
    pub const ALL: [Self; 4] = [Self::Web, Self::Telegram, Self::Discord, Self::Messenger];

    /// The lowercase name stored in the database and shown in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Telegram => "telegram",
            Self::Discord => "discord",
            Self::Messenger => "messenger",
        }
    }

    /// The longest text one message may carry on this platform, in characters.
    pub fn text_limit(self) -> usize {
        match self {
            Self::Web => 4096,
            Self::Telegram => 4096,
            Self::Discord => 2000,
            Self::Messenger => 2000,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name was not one of Segue's platforms.
#[derive(Debug, thiserror::Error)]
#[error("unknown platform `{0}`")]
pub struct UnknownPlatform(pub String);

impl FromStr for Platform {
    type Err = UnknownPlatform;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPlatform(s.to_owned()))
    }
}

/// Where a message goes: a chat on one platform.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatAddress {
    pub platform: Platform,
    /// The platform's own chat id, as text (Telegram chat id, Discord channel id, PSID…).
    pub chat_id: String,
}

impl ChatAddress {
    pub fn new(platform: Platform, chat_id: impl Into<String>) -> Self {
        Self {
            platform,
            chat_id: chat_id.into(),
        }
    }
}

impl fmt::Display for ChatAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.platform, self.chat_id)
    }
}

/// Who sent a message, as the platform knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub platform: Platform,
    /// The platform's stable user id.
    pub id: String,
    /// What the person is called there (may change, not unique).
    pub display_name: String,
    /// A platform username such as Telegram's `@name`, when there is one.
    pub username: Option<String>,
}

/// A private conversation with one person, or a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    Private,
    Group,
}

impl ChatKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Group => "group",
        }
    }
}

/// What an incoming message carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Plain text as typed; `/name args` is parsed by the router.
    Text(String),
    /// A command the platform already parsed (Discord slash commands): name and typed
    /// option values in the command table's terms.
    Command {
        name: String,
        options: Vec<(String, String)>,
    },
    /// A press of a button whose callback data we set (always a command line).
    Button { data: String },
}

/// One inbound event, converted at the platform's edge.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// The platform's id for this event (update id, interaction id, mid), for dedupe.
    pub external_id: Option<String>,
    pub chat: ChatAddress,
    pub chat_kind: ChatKind,
    pub user: UserRef,
    pub content: Content,
    /// The bot's own username on this platform, so `/cmd@other_bot` can be ignored.
    pub bot_username: Option<String>,
    /// Where the sender can be reached privately when `chat` is a group: a chat id on
    /// this platform for their notifications (Discord: `@<user id>`, a DM opened on
    /// delivery). `None` where only private chats reach a person.
    pub private_chat: Option<String>,
    /// The platform marked it as meant for the bot without a command: in a group, a
    /// reply to one of the bot's messages. Such a message is answered as in a private
    /// chat (unknown commands and plain text get help); group chatter is not.
    pub to_bot: bool,
    /// For a button press: the platform's id of the message the button is on, so that an
    /// in-place reply ([`Reply::in_place`]) can replace that message.
    pub on_message: Option<String>,
}

/// What a button does when pressed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ButtonAction {
    /// Opens a link.
    Url(String),
    /// Sends this callback data (a command line) back to the bot.
    Data(String),
}

/// A button under a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub label: String,
    pub action: ButtonAction,
}

impl Button {
    pub fn link(label: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            action: ButtonAction::Url(url.into()),
        }
    }

    pub fn command(label: impl Into<String>, command_line: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            action: ButtonAction::Data(command_line.into()),
        }
    }
}

/// A handler's answer: text and buttons, not yet addressed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub buttons: Vec<Button>,
    /// Replace the message whose button was pressed instead of sending a new one (see
    /// [`Reply::in_place`]).
    pub in_place: bool,
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            buttons: Vec::new(),
            in_place: false,
        }
    }

    /// Answering a button press, this reply replaces the message the button was on (its
    /// text and buttons: none left if it has none), where the platform can edit messages
    /// (Telegram's editMessageText, Discord's message update). Elsewhere, or when the
    /// message wasn't a button press, it is sent as a new message.
    pub fn in_place(mut self) -> Self {
        self.in_place = true;
        self
    }

    pub fn with_button(mut self, button: Button) -> Self {
        self.buttons.push(button);
        self
    }
}

/// A message on its way out: a reply or notification addressed to a chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: ChatAddress,
    pub text: String,
    pub buttons: Vec<Button>,
    /// The Segue user it is meant for, when known (marks them unreachable on permanent
    /// delivery failures).
    pub user_id: Option<i64>,
    /// The platform's id of a message in `to` that this one replaces (an edit in
    /// place); `None` sends a new message.
    pub edits: Option<String>,
}

impl Outgoing {
    pub fn new(to: ChatAddress, reply: Reply) -> Self {
        Self {
            to,
            text: reply.text,
            buttons: reply.buttons,
            user_id: None,
            edits: None,
        }
    }
}
