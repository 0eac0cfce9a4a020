//! `/me`: your handle, the platform accounts joined to you, your Spotify link and where
//! notifications go.

use crate::command::{Args, HandlerResult};
use crate::error::CommandError;
use crate::message::Reply;
use crate::router::Ctx;

pub async fn run(ctx: &Ctx, _args: Args) -> HandlerResult {
    let store = &ctx.core.store;
    let Some(details) = store.person_details(ctx.person.user_id).await? else {
        return Err(CommandError::user(
            "I can't find you any more. Send /start to begin again.",
        ));
    };
    let mut text = format!("You are @{}.\nPlatforms:", details.user.handle);
    for ident in &details.identities {
        let mut line = format!("\n  {}: {}", ident.platform, ident.display_name);
        if let Some(u) = &ident.username {
            line.push_str(&format!(" (@{u})"));
        }
        if ident.unreachable_at.is_some() {
            line.push_str(" (I can't reach you there)");
        }
        if details.user.notify_identity_id == Some(ident.id) {
            line.push_str(" (notifications go here)");
        }
        text.push_str(&line);
    }
    let spotify = match store.spotify_link(details.user.id).await? {
        Some(link) if link.broken_at.is_some() => {
            format!("{} (the link is broken: send /link)", link.spotify_name)
        }
        Some(link) => format!("linked as {}", link.spotify_name),
        None => "not linked (send /link)".to_owned(),
    };
    text.push_str(&format!("\nSpotify: {spotify}"));
    if details.user.public_now_playing {
        text.push_str("\nWhat you play is public (/public off hides it).");
    }
    Ok(vec![Reply::text(text)])
}
