//! `/forget` and `/forget yes`: deletes everything Segue keeps about the sender, after
//! asking once.

use crate::command::{ArgKind, ArgSpec, Args, HandlerResult};
use crate::message::{Button, Reply};
use crate::router::{Ctx, SenderChange};

pub const ARGS: &[ArgSpec] = &[ArgSpec::optional(
    "confirm",
    ArgKind::Choice(&["yes"]),
    "yes, to go ahead",
)];

pub async fn run(ctx: &Ctx, args: Args) -> HandlerResult {
    if args.str("confirm").is_none() {
        return Ok(vec![
            Reply::text(format!(
                "This deletes everything I keep about you: your handle @{}, your accounts on \
                 every platform, your Spotify link and our message history. It can't be \
                 undone. To go ahead, send /forget yes",
                ctx.person.handle
            ))
            .with_button(Button::command("Yes, forget me", "/forget yes")),
        ]);
    }
    let user_id = ctx.person.user_id;
    if let Some(spotify) = &ctx.core.spotify {
        spotify.forget_cached(user_id);
    }
    ctx.core.store.forget_user(user_id).await?;
    ctx.sender_changed(SenderChange::Forgotten);
    // Pressed on the question, the answer replaces it, and its button goes with it.
    Ok(vec![
        Reply::text(
            "Done: I've forgotten everything about you. If you write to me again, we start \
             fresh.",
        )
        .in_place(),
    ])
}
