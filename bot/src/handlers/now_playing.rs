//! `/nowplaying [friend]` (`/np`): what you, a friend, or someone who made it public play
//! now, else the last track played.

use chrono::Utc;

use crate::command::{ArgKind, ArgSpec, Args, HandlerResult};
use crate::error::CommandError;
use crate::handlers::friends::find_person;
use crate::handlers::link::spotify;
use crate::message::{Button, Reply};
use crate::router::Ctx;
use crate::spotify::Listening;

pub const ARGS: &[ArgSpec] = &[ArgSpec::optional(
    "friend",
    ArgKind::User,
    "Whose music (a handle); yours when left out",
)];

pub async fn run(ctx: &Ctx, args: Args) -> HandlerResult {
    let spotify = spotify(ctx)?;
    let store = &ctx.core.store;
    let (user_id, who) = match args.str("friend") {
        None => (ctx.person.user_id, None),
        Some(handle) => {
            let other = find_person(ctx, handle).await?;
            if other.id == ctx.person.user_id {
                (other.id, None)
            } else if other.public_now_playing
                || store.are_friends(ctx.person.user_id, other.id).await?
            {
                (other.id, Some(other.handle))
            } else {
                return Err(CommandError::user(format!(
                    "Only friends can see each other's music, and @{} isn't your friend yet \
                     (/invite).",
                    other.handle
                )));
            }
        }
    };
    let listening = spotify
        .now_playing(user_id)
        .await
        .map_err(|e| match (&who, e) {
            (Some(h), crate::spotify::SpotifyError::NotLinked) => {
                CommandError::user(format!("@{h} hasn't linked Spotify."))
            }
            (Some(h), crate::spotify::SpotifyError::LinkBroken) => {
                CommandError::user(format!("I can't see @{h}'s Spotify right now."))
            }
            (_, e) => e.into(),
        })?;
    let subject = who.as_ref().map_or("You".to_owned(), |h| format!("@{h}"));
    let Some(l) = listening else {
        let have = if who.is_some() { "hasn't" } else { "haven't" };
        return Ok(vec![Reply::text(format!(
            "{subject} {have} played anything on Spotify lately."
        ))]);
    };
    Ok(vec![describe(&subject, &l, who.is_some())])
}

fn describe(subject: &str, l: &Listening, third_person: bool) -> Reply {
    let verb = match (l.playing, third_person) {
        (true, true) => "is listening to",
        (true, false) => "are listening to",
        (false, _) => "last listened to",
    };
    let mut text = format!("{subject} {verb} {}", l.item.describe());
    if let Some(at) = l.played_at {
        text.push_str(&format!(" ({})", crate::when::ago(Utc::now() - at)));
    }
    text.push('.');
    let mut reply = Reply::text(text);
    if let Some(url) = &l.item.url {
        reply = reply.with_button(Button::link("Open in Spotify", url));
    }
    reply
}
