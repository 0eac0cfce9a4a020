//! `/ping`: answers `pong`, to check the bot is alive end to end.

use crate::command::{Args, HandlerResult};
use crate::message::Reply;
use crate::router::Ctx;

pub async fn run(_ctx: &Ctx, _args: Args) -> HandlerResult {
    Ok(vec![Reply::text("pong")])
}
