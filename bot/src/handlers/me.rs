//! `/me`: your handle and the platform accounts joined to you.

use crate::command::{Args, HandlerResult};
use crate::error::CommandError;
use crate::message::Reply;
use crate::router::Ctx;

pub async fn run(ctx: &Ctx, _args: Args) -> HandlerResult {
    let Some(details) = ctx.core.store.person_details(ctx.person.user_id).await? else {
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
        text.push_str(&line);
    }
    Ok(vec![Reply::text(text)])
}
