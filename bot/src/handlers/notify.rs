//! `/notify here`: picks the platform (this private chat) that gets the sender's
//! notifications. Without it they go where the person last talked to Segue.

use crate::command::{ArgKind, ArgSpec, Args, HandlerResult};
use crate::handlers::link::private_only;
use crate::message::Reply;
use crate::router::Ctx;

pub const ARGS: &[ArgSpec] = &[ArgSpec::required(
    "where",
    ArgKind::Choice(&["here"]),
    "here: this chat",
)];

pub async fn run(ctx: &Ctx, _args: Args) -> HandlerResult {
    private_only(ctx, "notify")?;
    ctx.core
        .store
        .set_notify_identity(ctx.person.user_id, ctx.person.identity_id)
        .await?;
    Ok(vec![Reply::text(format!(
        "Done: your notifications come here, on {}.",
        ctx.incoming.chat.platform
    ))])
}
