//! Command handlers, one file per command family, and the command table that lists them.
//! Adding a command: write its handler file, add its entry to [`table`].

pub mod handle;
pub mod help;
pub mod me;
pub mod ping;
pub mod start;

use crate::command::{CommandSpec, CommandTable};
use crate::handler;

/// Every command Segue knows, in the order `/help` lists them.
pub fn table() -> CommandTable {
    CommandTable::new(vec![
        CommandSpec {
            name: "start",
            aliases: &[],
            description: "Welcome, and what Segue can do",
            args: &[],
            handler: handler!(start::run),
        },
        CommandSpec {
            name: "help",
            aliases: &[],
            description: "List the commands, or explain one",
            args: help::ARGS,
            handler: handler!(help::run),
        },
        CommandSpec {
            name: "ping",
            aliases: &[],
            description: "Check that the bot is alive",
            args: &[],
            handler: handler!(ping::run),
        },
        CommandSpec {
            name: "me",
            aliases: &[],
            description: "Your handle and the platforms you use Segue on",
            args: &[],
            handler: handler!(me::run),
        },
        CommandSpec {
            name: "handle",
            aliases: &[],
            description: "Set your public handle (letters, digits and _, 3-32 characters)",
            args: handle::ARGS,
            handler: handler!(handle::run),
        },
    ])
}
