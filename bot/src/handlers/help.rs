//! `/help [command]`: the command list, or one command's usage, from the command table.

use crate::command::{ArgKind, ArgSpec, Args, HandlerResult};
use crate::error::CommandError;
use crate::message::Reply;
use crate::router::Ctx;

pub const ARGS: &[ArgSpec] = &[ArgSpec::optional(
    "command",
    ArgKind::String,
    "The command to explain",
)];

pub async fn run(ctx: &Ctx, args: Args) -> HandlerResult {
    let commands = &ctx.core.commands;
    if let Some(name) = args.str("command") {
        let Some(spec) = commands.get(name) else {
            return Err(CommandError::user(format!(
                "There is no /{}. Send /help for the list.",
                name.trim_start_matches('/')
            )));
        };
        let mut text = format!("{}\n{}", spec.usage(), spec.description);
        for arg in spec.args {
            text.push_str(&format!("\n  {}: {}", arg.name, arg.description));
        }
        if !spec.aliases.is_empty() {
            let aliases: Vec<String> = spec.aliases.iter().map(|a| format!("/{a}")).collect();
            text.push_str(&format!("\nAlso: {}", aliases.join(", ")));
        }
        return Ok(vec![Reply::text(text)]);
    }
    let mut text = String::from("Here is what I can do:\n");
    for spec in commands.iter() {
        text.push_str(&format!("{} — {}\n", spec.usage(), spec.description));
    }
    text.push_str("Send /help <command> for details.");
    Ok(vec![Reply::text(text)])
}
