//! Inbound: a Discord interaction (from the gateway or the endpoint, parsed by serenity)
//! becomes the neutral `Incoming`. Slash commands carry their options already split;
//! a button press carries the command line we put in its `custom_id`.

use segue_bot::{ChatAddress, ChatKind, Content, Incoming, Platform, UserRef};
use serenity::all::{CommandDataOptionValue, CommandInteraction, Interaction, User};

/// What to answer an interaction with, and where.
#[derive(Clone, Debug)]
pub struct Token {
    pub interaction_id: String,
    /// The interaction token (valid 15 minutes): callback, edits and follow-ups.
    pub token: String,
}

/// What one interaction is.
#[derive(Debug)]
pub enum Converted {
    /// Discord checks the endpoint: answer PONG.
    Ping,
    /// A command or button press for the router.
    Message(Box<Incoming>, Token),
    /// Someone is typing an option that Segue completes: the command so far (its options
    /// as typed), and the option being typed.
    Autocomplete(Box<Incoming>, String),
    /// Nothing Segue uses (autocomplete, modals); the reason, for the log.
    Skip(&'static str),
}

pub fn convert(interaction: &Interaction) -> Converted {
    match interaction {
        Interaction::Ping(_) => Converted::Ping,
        Interaction::Command(c) => {
            let options = c
                .data
                .options
                .iter()
                .filter_map(|o| option_text(&o.value).map(|v| (o.name.clone(), v)))
                .collect();
            Source::command(c).message(Content::Command {
                name: c.data.name.clone(),
                options,
            })
        }
        Interaction::Component(c) => Source {
            id: c.id.to_string(),
            channel: c.channel_id.to_string(),
            in_guild: c.guild_id.is_some(),
            user: &c.user,
            token: &c.token,
            message: Some(c.message.id.to_string()),
        }
        .message(Content::Button {
            data: c.data.custom_id.clone(),
        }),
        Interaction::Autocomplete(c) => {
            let Some(focused) = c.data.autocomplete() else {
                return Converted::Skip("autocomplete without a focused option");
            };
            let incoming = Source::command(c).incoming(Content::Command {
                name: c.data.name.clone(),
                options: vec![(focused.name.to_owned(), focused.value.to_owned())],
            });
            Converted::Autocomplete(Box::new(incoming), focused.name.to_owned())
        }
        Interaction::Modal(_) => Converted::Skip("modal submit"),
        _ => Converted::Skip("interaction type Segue does not use"),
    }
}

/// What every kind of interaction carries about where it came from.
struct Source<'a> {
    id: String,
    channel: String,
    in_guild: bool,
    user: &'a User,
    token: &'a str,
    /// For a button press: the message the button is on.
    message: Option<String>,
}

impl<'a> Source<'a> {
    fn command(c: &'a CommandInteraction) -> Self {
        Self {
            id: c.id.to_string(),
            channel: c.channel_id.to_string(),
            in_guild: c.guild_id.is_some(),
            user: &c.user,
            token: &c.token,
            message: None,
        }
    }

    fn message(self, content: Content) -> Converted {
        let token = Token {
            interaction_id: self.id.clone(),
            token: self.token.to_owned(),
        };
        Converted::Message(Box::new(self.incoming(content)), token)
    }

    fn incoming(&self, content: Content) -> Incoming {
        let user = self.user;
        Incoming {
            external_id: Some(self.id.clone()),
            chat: ChatAddress::new(Platform::Discord, self.channel.clone()),
            chat_kind: if self.in_guild {
                ChatKind::Group
            } else {
                ChatKind::Private
            },
            user: UserRef {
                platform: Platform::Discord,
                id: user.id.to_string(),
                display_name: user
                    .global_name
                    .clone()
                    .unwrap_or_else(|| user.name.clone()),
                username: Some(user.name.clone()),
            },
            content,
            bot_username: None,
            // In a server channel, the person's DM (opened when something is sent there).
            private_chat: self.in_guild.then(|| format!("@{}", user.id)),
            // Slash commands are always meant for the bot, and are commands already.
            to_bot: false,
            on_message: self.message.clone(),
        }
    }
}

/// An option's value as the command table's text.
fn option_text(value: &CommandDataOptionValue) -> Option<String> {
    Some(match value {
        CommandDataOptionValue::String(s) => s.clone(),
        CommandDataOptionValue::Integer(n) => n.to_string(),
        CommandDataOptionValue::Number(n) => n.to_string(),
        CommandDataOptionValue::Boolean(b) => b.to_string(),
        CommandDataOptionValue::User(id) => format!("<@{id}>"),
        CommandDataOptionValue::Autocomplete { value, .. } => value.clone(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Interaction {
        let path = format!(
            "{}/../../shared/fixtures/discord/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn the_shared_fixtures_convert() {
        assert!(matches!(convert(&fixture("ping.json")), Converted::Ping));
        let Converted::Message(share, token) = convert(&fixture("command_share.json")) else {
            panic!("a command");
        };
        assert_eq!(token.interaction_id, "1300000000000000002");
        assert_eq!(share.chat_kind, ChatKind::Group);
        assert_eq!(share.private_chat.as_deref(), Some("@80351110224678912"));
        assert_eq!(share.user.display_name, "Nelly");
        let Content::Command { name, options } = &share.content else {
            panic!("slash command");
        };
        assert_eq!(name, "share");
        assert_eq!(options[0], ("friend".to_owned(), "bob".to_owned()));
        let Converted::Message(help, _) = convert(&fixture("command_dm_help.json")) else {
            panic!("a command");
        };
        assert_eq!(help.chat_kind, ChatKind::Private);
        assert_eq!(help.chat.chat_id, "1200000000000000009");
        assert_eq!(help.private_chat, None);
        let Converted::Message(button, _) = convert(&fixture("button.json")) else {
            panic!("a button");
        };
        assert_eq!(
            button.content,
            Content::Button {
                data: "vote:skip".to_owned()
            }
        );
    }
}
