//! `/public on|off`: publishes what the sender plays at
//! `/api/users/{handle}/now-playing` (JSON with CORS, for a website widget).

use crate::command::{ArgKind, ArgSpec, Args, HandlerResult};
use crate::message::Reply;
use crate::router::Ctx;

pub const ARGS: &[ArgSpec] = &[ArgSpec::required(
    "switch",
    ArgKind::Choice(&["on", "off"]),
    "on to publish, off to hide",
)];

pub async fn run(ctx: &Ctx, args: Args) -> HandlerResult {
    let on = args.str("switch") == Some("on");
    let store = &ctx.core.store;
    store.set_public(ctx.person.user_id, on).await?;
    if !on {
        return Ok(vec![Reply::text("Done: what you play is private again.")]);
    }
    let mut text = format!(
        "Done: what you play is public at {}/api/users/{}/now-playing\n/public off hides it.",
        ctx.core.settings.public_url.trim_end_matches('/'),
        ctx.person.handle
    );
    if store.spotify_link(ctx.person.user_id).await?.is_none() {
        text.push_str("\nLink Spotify with /link so there is something to show.");
    }
    Ok(vec![Reply::text(text)])
}
