//! `/handle <name>`: sets your public handle, unique across Segue.

use crate::command::{ArgKind, ArgSpec, Args, HandlerResult};
use crate::error::CommandError;
use crate::message::Reply;
use crate::router::Ctx;
use crate::store::StoreError;
use crate::types::Handle;

pub const ARGS: &[ArgSpec] = &[ArgSpec::required(
    "name",
    ArgKind::String,
    "The handle you want",
)];

pub async fn run(ctx: &Ctx, args: Args) -> HandlerResult {
    let raw = args.str("name").unwrap_or_default();
    let handle = Handle::parse(raw).map_err(|e| {
        CommandError::user(format!(
            "That handle won't do: {e}. For example: /handle carol_92"
        ))
    })?;
    if handle.as_str() == ctx.person.handle {
        return Ok(vec![Reply::text(format!(
            "Your handle is already @{handle}."
        ))]);
    }
    match ctx.core.store.set_handle(ctx.person.user_id, &handle).await {
        Ok(()) => Ok(vec![Reply::text(format!(
            "Done: your handle is now @{handle}."
        ))]),
        Err(StoreError::HandleTaken) => Err(CommandError::user(format!(
            "@{handle} is taken. Please pick another one."
        ))),
        Err(e) => Err(e.into()),
    }
}
