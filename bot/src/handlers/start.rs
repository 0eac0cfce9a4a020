//! `/start`: the welcome a new user sees first (Telegram sends it on "Start").

use crate::command::{Args, HandlerResult};
use crate::message::{Button, Reply};
use crate::router::Ctx;

pub async fn run(ctx: &Ctx, _args: Args) -> HandlerResult {
    let name = &ctx.incoming.user.display_name;
    Ok(vec![
        Reply::text(format!(
            "Hi {name}! I'm Segue. Share a song with a friend and I'll tell you when they \
             play it.\nYour handle is @{}; change it with /handle. Send /help to see \
             everything I can do.",
            ctx.person.handle
        ))
        .with_button(Button::command("Show commands", "/help")),
    ])
}
