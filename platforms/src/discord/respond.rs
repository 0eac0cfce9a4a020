//! Answering an interaction within Discord's 3 seconds: the router runs the command
//! (replies inline); when it is done within `defer_after` the first reply is the
//! interaction's response, otherwise the response is a deferral and the reply edits it
//! when ready. Further replies follow as follow-up messages. Both the gateway and the
//! endpoint answer through here.

use std::sync::Arc;
use std::time::Duration;

use segue_bot::error::APOLOGY;
use segue_bot::outbox::Recorded;
use segue_bot::suggest::{Suggestion, suggest};
use segue_bot::{Button, ButtonAction, Content, Handled, Incoming, ReplyMode, Router};
use serenity::all::{
    AutocompleteChoice, ButtonStyle, CreateActionRow, CreateAllowedMentions,
    CreateAutocompleteResponse, CreateButton, CreateInteractionResponse,
    CreateInteractionResponseFollowup, CreateInteractionResponseMessage, EditInteractionResponse,
    MessageFlags,
};

use super::inbound::Token;
use super::rest::Rest;

/// Suggestions must arrive within Discord's 3 seconds, or not at all.
const SUGGEST_WITHIN: Duration = Duration::from_millis(2500);
/// Discord's limit on a message's content, in characters.
const MESSAGE_MAX: usize = 2000;
/// Discord's limits on components.
const BUTTONS_PER_ROW: usize = 5;
const ROWS: usize = 5;
const LABEL_MAX: usize = 80;
const CUSTOM_ID_MAX: usize = 100;

/// One message's worth of a reply.
#[derive(Clone, Debug)]
pub struct Piece {
    pub text: String,
    pub buttons: Vec<Button>,
    /// Only the person who asked sees it (notes about the interaction itself).
    pub ephemeral: bool,
    /// It replaces the message whose button was pressed (an in-place reply).
    pub replaces: bool,
}

impl From<Recorded> for Piece {
    fn from(r: Recorded) -> Self {
        Self {
            text: r.text,
            buttons: r.buttons,
            ephemeral: false,
            replaces: r.edits.is_some(),
        }
    }
}

impl Piece {
    fn note(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            buttons: Vec::new(),
            ephemeral: true,
            replaces: false,
        }
    }
}

/// Text as Discord shows it literally: markdown characters escaped outside links (a
/// handle like `carol_smith` must not turn italic), mentions neutralised by
/// [`no_mentions`].
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if line.starts_with(['#', '-']) {
            out.push('\\');
        }
        let mut first = true;
        for word in line.split(' ') {
            if !first {
                out.push(' ');
            }
            first = false;
            if word.starts_with("https://") || word.starts_with("http://") {
                out.push_str(word);
                continue;
            }
            for c in word.chars() {
                if matches!(
                    c,
                    '\\' | '*' | '_' | '~' | '`' | '|' | '[' | ']' | '<' | '>'
                ) {
                    out.push('\\');
                }
                out.push(c);
            }
        }
    }
    // The outbox split the text at Discord's 2,000 characters; escapes must not push a
    // piece over (Discord would refuse it), so such a piece goes as it is.
    if out.chars().count() > MESSAGE_MAX {
        return text.to_owned();
    }
    out
}

/// No pings from what Segue says: a track called "@everyone" stays text.
pub fn no_mentions() -> CreateAllowedMentions {
    CreateAllowedMentions::new()
}

/// Buttons as action rows: link buttons open their URL, the others send their command
/// line back as `custom_id`. Buttons Discord can't carry are left out, with a log line.
pub fn components(buttons: &[Button]) -> Vec<CreateActionRow> {
    let made: Vec<CreateButton> = buttons
        .iter()
        .filter_map(|b| {
            let label: String = b.label.chars().take(LABEL_MAX).collect();
            match &b.action {
                ButtonAction::Url(url) => Some(CreateButton::new_link(url).label(label)),
                ButtonAction::Data(data) if data.len() <= CUSTOM_ID_MAX => Some(
                    CreateButton::new(data)
                        .label(label)
                        .style(ButtonStyle::Primary),
                ),
                ButtonAction::Data(data) => {
                    tracing::warn!(
                        len = data.len(),
                        "button data too long for discord; left out"
                    );
                    None
                }
            }
        })
        .take(BUTTONS_PER_ROW * ROWS)
        .collect();
    made.chunks(BUTTONS_PER_ROW)
        .map(|row| CreateActionRow::Buttons(row.to_vec()))
        .collect()
}

/// What a handled interaction left to send after its first response.
pub struct Later {
    rest: Arc<Rest>,
    token: String,
    /// What to say when the handler had nothing to say.
    nothing: &'static str,
    /// The reply that replaces the deferral, when the response was one.
    edit: Option<tokio::task::JoinHandle<Vec<Piece>>>,
    followups: Vec<Piece>,
}

impl Later {
    /// Sends the edit and the follow-ups, in order. Call once the first response is out.
    pub async fn run(self) {
        let mut followups = self.followups;
        if let Some(task) = self.edit {
            let mut pieces = match task.await {
                Ok(pieces) => pieces,
                Err(e) => {
                    tracing::error!(error = %e, "discord interaction task failed");
                    vec![Piece::note(APOLOGY)]
                }
            };
            let first = if pieces.is_empty() {
                Piece::note(self.nothing)
            } else {
                pieces.remove(0)
            };
            let edit = EditInteractionResponse::new()
                .content(escape(&first.text))
                .allowed_mentions(no_mentions())
                .components(components(&first.buttons));
            if let Err(e) = self.rest.edit_original(&self.token, &edit).await {
                tracing::error!(error = %e, "could not edit a deferred discord response");
            }
            followups = pieces;
        }
        for piece in followups {
            let mut followup = CreateInteractionResponseFollowup::new()
                .content(escape(&piece.text))
                .allowed_mentions(no_mentions())
                .components(components(&piece.buttons));
            if piece.ephemeral {
                followup = followup.flags(MessageFlags::EPHEMERAL);
            }
            if let Err(e) = self.rest.followup(&self.token, &followup).await {
                tracing::error!(error = %e, "could not send a discord follow-up message");
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.edit.is_none() && self.followups.is_empty()
    }
}

/// Runs interactions through the router and shapes the answers.
#[derive(Clone)]
pub struct Responder {
    router: Arc<Router>,
    rest: Arc<Rest>,
    defer_after: Duration,
}

impl Responder {
    pub fn new(router: Arc<Router>, rest: Arc<Rest>, defer_after: Duration) -> Self {
        Self {
            router,
            rest,
            defer_after,
        }
    }

    pub fn rest(&self) -> &Arc<Rest> {
        &self.rest
    }

    /// Answers an autocomplete request: suggestions for the option being typed, from the
    /// command table's `suggest` for it (none when they take too long).
    pub async fn complete(&self, incoming: Incoming, option: &str) -> CreateInteractionResponse {
        let found = tokio::time::timeout(SUGGEST_WITHIN, self.suggestions(&incoming, option))
            .await
            .unwrap_or_default();
        let choices = found
            .into_iter()
            .map(|s| AutocompleteChoice::new(s.label, s.value))
            .collect();
        CreateInteractionResponse::Autocomplete(
            CreateAutocompleteResponse::new().set_choices(choices),
        )
    }

    async fn suggestions(&self, incoming: &Incoming, option: &str) -> Vec<Suggestion> {
        let core = self.router.core();
        let Content::Command { name, options } = &incoming.content else {
            return Vec::new();
        };
        let Some(arg) = core
            .commands
            .get(name)
            .and_then(|spec| spec.args.iter().find(|a| a.name == option))
        else {
            return Vec::new();
        };
        let typed = options
            .iter()
            .find(|(n, _)| n == option)
            .map_or("", |(_, v)| v.as_str());
        let person = match core
            .store
            .resolve_reaching(
                &incoming.user,
                &incoming.chat,
                incoming.chat_kind,
                incoming.private_chat.as_deref(),
            )
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "no suggestions: storage failed");
                return Vec::new();
            }
        };
        suggest(core, &person, arg.suggest, typed).await
    }

    /// Handles one interaction: the first response, and what to send after it.
    pub async fn answer(
        &self,
        incoming: Incoming,
        token: Token,
    ) -> (CreateInteractionResponse, Option<Later>) {
        let nothing = match incoming.content {
            Content::Button { .. } => "That button doesn't do anything any more.",
            _ => "Done.",
        };
        let router = self.router.clone();
        // Its own task: the deadline must not cut handling short.
        let mut task =
            tokio::spawn(async move { pieces(router.handle(incoming, ReplyMode::Inline).await) });
        let (first, later) = match tokio::time::timeout(self.defer_after, &mut task).await {
            Ok(joined) => {
                let mut pieces = joined.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "discord interaction task failed");
                    vec![Piece::note(APOLOGY)]
                });
                let first = if pieces.is_empty() {
                    Piece::note(nothing)
                } else {
                    pieces.remove(0)
                };
                let mut message = CreateInteractionResponseMessage::new()
                    .content(escape(&first.text))
                    .allowed_mentions(no_mentions())
                    .components(components(&first.buttons));
                if first.ephemeral {
                    message = message.ephemeral(true);
                }
                // An in-place reply to a button press updates the button's message
                // (response type 7); a deferred one is sent as a new message.
                let response = if first.replaces {
                    CreateInteractionResponse::UpdateMessage(message)
                } else {
                    CreateInteractionResponse::Message(message)
                };
                let later = Later {
                    rest: self.rest.clone(),
                    token: token.token,
                    nothing,
                    edit: None,
                    followups: pieces,
                };
                (response, later)
            }
            Err(_) => {
                tracing::debug!(interaction = %token.interaction_id, "slow handler: deferring");
                let later = Later {
                    rest: self.rest.clone(),
                    token: token.token,
                    nothing,
                    edit: Some(task),
                    followups: Vec::new(),
                };
                (
                    CreateInteractionResponse::Defer(CreateInteractionResponseMessage::new()),
                    later,
                )
            }
        };
        (first, (!later.is_empty()).then_some(later))
    }
}

/// The router's outcome as messages to show.
fn pieces(handled: Result<Handled, segue_bot::StoreError>) -> Vec<Piece> {
    match handled {
        Ok(Handled::Replied(recorded)) => coalesce(recorded.into_iter().map(Piece::from)),
        Ok(Handled::Duplicate) => vec![Piece::note("That was already handled.")],
        Err(e) => {
            tracing::error!(error = %e, "discord interaction not handled: storage failed");
            vec![Piece::note(APOLOGY)]
        }
    }
}

/// Joins a handler's replies into as few messages as Discord takes (2,000 characters, 25
/// buttons each): one answer is the common case, and a follow-up is a second request that
/// could reach Discord before the endpoint's response has.
fn coalesce(pieces: impl IntoIterator<Item = Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    for piece in pieces {
        if let Some(last) = out.last_mut()
            && last.ephemeral == piece.ephemeral
            && !piece.replaces
            && last.text.chars().count() + 2 + piece.text.chars().count() <= MESSAGE_MAX
            && last.buttons.len() + piece.buttons.len() <= BUTTONS_PER_ROW * ROWS
        {
            last.text.push_str("\n\n");
            last.text.push_str(&piece.text);
            last.buttons.extend(piece.buttons);
            continue;
        }
        out.push(piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_share_one_message_while_they_fit() {
        let piece = |text: String| Piece {
            text,
            buttons: vec![Button::command("b", "/help")],
            ephemeral: false,
            replaces: false,
        };
        let joined = coalesce([piece("one".into()), piece("two".into())]);
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0].text, "one\n\ntwo");
        assert_eq!(joined[0].buttons.len(), 2);
        let long = coalesce([piece("x".repeat(1500)), piece("y".repeat(600))]);
        assert_eq!(long.len(), 2, "over 2,000 characters together");
    }

    #[test]
    fn markdown_is_escaped_but_links_are_kept() {
        assert_eq!(escape("carol_smith *hi*"), "carol\\_smith \\*hi\\*");
        let link = "https://example.com/a_b?state=x_y";
        assert_eq!(escape(&format!("open {link}")), format!("open {link}"));
        assert_eq!(escape("- item\n# title"), "\\- item\n\\# title");
        assert_eq!(escape("<@123>"), "\\<@123\\>");
    }

    #[test]
    fn buttons_become_rows_of_five() {
        let buttons: Vec<Button> = (0..7)
            .map(|i| Button::command(format!("b{i}"), format!("/help {i}")))
            .collect();
        let rows = serde_json::to_value(components(&buttons)).unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 2);
        assert_eq!(rows[0]["components"].as_array().unwrap().len(), 5);
        assert_eq!(rows[0]["components"][0]["custom_id"], "/help 0");
        let link =
            serde_json::to_value(components(&[Button::link("Open", "https://x.test/")])).unwrap();
        assert_eq!(link[0]["components"][0]["style"], 5);
        assert_eq!(link[0]["components"][0]["url"], "https://x.test/");
    }
}
