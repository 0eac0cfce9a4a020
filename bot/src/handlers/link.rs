//! `/link`, `/link <code>` and `/unlink`: connecting a Spotify account. `/link` answers
//! with a personal one-time link (signed state naming this identity, valid 10 minutes);
//! `/link <code>` finishes a link made through the generic start page; `/unlink` deletes
//! the tokens.

use std::sync::Arc;

use crate::command::{ArgKind, ArgSpec, Args, HandlerResult};
use crate::error::CommandError;
use crate::message::{Button, ChatKind, Reply};
use crate::router::Ctx;
use crate::spotify::{LINK_VALID_FOR, Spotify, StateError};

pub const ARGS: &[ArgSpec] = &[ArgSpec::optional(
    "code",
    ArgKind::Text,
    "The 16-digit code shown after linking on the Spotify page",
)];

/// Spotify, or a sentence saying it isn't set up here.
pub(crate) fn spotify(ctx: &Ctx) -> Result<&Arc<Spotify>, CommandError> {
    ctx.core.spotify.as_ref().ok_or_else(|| {
        CommandError::user(
            "Spotify isn't set up on this Segue yet: the operator needs to set \
             spotify.client_id and spotify.client_secret.",
        )
    })
}

/// Commands that concern one person only are answered in private chats.
pub(crate) fn private_only(ctx: &Ctx, command: &str) -> Result<(), CommandError> {
    if ctx.incoming.chat_kind == ChatKind::Private {
        Ok(())
    } else {
        Err(CommandError::user(format!(
            "Please send /{command} to me in a private chat: it's personal."
        )))
    }
}

pub async fn run(ctx: &Ctx, args: Args) -> HandlerResult {
    let spotify = spotify(ctx)?;
    private_only(ctx, "link")?;
    if let Some(code) = args.str("code") {
        return redeem(ctx, spotify, code).await;
    }
    let state = spotify.new_state(Some(ctx.person.identity_id));
    let url = format!(
        "{}/auth/spotify/start?state={state}",
        ctx.core.settings.public_url.trim_end_matches('/')
    );
    let mut text = String::new();
    if let Some(link) = ctx.core.store.spotify_link(ctx.person.user_id).await? {
        text.push_str(&format!(
            "You're linked as {} now; linking again replaces it.\n",
            link.spotify_name
        ));
    }
    text.push_str(&format!(
        "Open this link to connect your Spotify account. It works once, for the next {} \
         minutes:\n{url}",
        LINK_VALID_FOR.as_secs() / 60
    ));
    Ok(vec![
        Reply::text(text).with_button(Button::link("Connect Spotify", url)),
    ])
}

async fn redeem(ctx: &Ctx, spotify: &Spotify, code: &str) -> HandlerResult {
    let digits: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    if digits.len() != 16 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(CommandError::Usage("the code is 16 digits".to_owned()));
    }
    match spotify.redeem_code(ctx.person.user_id, &digits).await? {
        Ok(name) => {
            ctx.core.spotify_linked(ctx.person.user_id).await;
            Ok(vec![Reply::text(format!(
                "Done: your Spotify account {name} is linked. Try /np."
            ))])
        }
        Err(StateError::Invalid | StateError::Expired | StateError::Used) => {
            Err(CommandError::user(format!(
                "That code isn't valid: codes work once, for 10 minutes. Get a new one at \
                 {}/auth/spotify/start, or send /link for a personal link.",
                ctx.core.settings.public_url.trim_end_matches('/')
            )))
        }
    }
}

/// `/unlink`: forgets the Spotify tokens.
pub async fn unlink(ctx: &Ctx, _args: Args) -> HandlerResult {
    let spotify = spotify(ctx)?;
    if spotify.unlink(ctx.person.user_id).await? {
        Ok(vec![Reply::text(
            "Done: I deleted your Spotify tokens. Send /link to connect again.",
        )])
    } else {
        Ok(vec![Reply::text("You had no Spotify account linked.")])
    }
}
