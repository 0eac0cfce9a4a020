//! Command handlers, one file per command family, and the command table that lists them.
//! Adding a command: write its handler file, add its entry to [`table`].

pub mod connect;
pub mod forget;
pub mod friends;
pub mod handle;
pub mod help;
pub mod link;
pub mod me;
pub mod notify;
pub mod now_playing;
pub mod ping;
pub mod public;
pub mod share;
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
            read_only: true,
            handler: handler!(start::run),
        },
        CommandSpec {
            name: "help",
            aliases: &[],
            description: "List the commands, or explain one",
            args: help::ARGS,
            read_only: true,
            handler: handler!(help::run),
        },
        CommandSpec {
            name: "ping",
            aliases: &[],
            description: "Check that the bot is alive",
            args: &[],
            read_only: true,
            handler: handler!(ping::run),
        },
        CommandSpec {
            name: "link",
            aliases: &[],
            description: "Link your Spotify account (or finish a link with its 16-digit code)",
            args: link::ARGS,
            read_only: false,
            handler: handler!(link::run),
        },
        CommandSpec {
            name: "unlink",
            aliases: &[],
            description: "Forget your Spotify tokens",
            args: &[],
            read_only: false,
            handler: handler!(link::unlink),
        },
        CommandSpec {
            name: "invite",
            aliases: &[],
            description: "Get a code and the line to send a friend",
            args: &[],
            read_only: false,
            handler: handler!(friends::invite),
        },
        CommandSpec {
            name: "accept",
            aliases: &[],
            description: "Become friends with whoever gave you this code",
            args: friends::ACCEPT_ARGS,
            read_only: false,
            handler: handler!(friends::accept),
        },
        CommandSpec {
            name: "friends",
            aliases: &[],
            description: "List your friends",
            args: &[],
            read_only: true,
            handler: handler!(friends::friends),
        },
        CommandSpec {
            name: "unfriend",
            aliases: &[],
            description: "Stop being friends with someone",
            args: friends::UNFRIEND_ARGS,
            read_only: false,
            handler: handler!(friends::unfriend),
        },
        CommandSpec {
            name: "share",
            aliases: &[],
            description: "Share a song with a friend; I tell you when they play it",
            args: share::SHARE_ARGS,
            read_only: false,
            handler: handler!(share::share),
        },
        CommandSpec {
            name: "shares",
            aliases: &[],
            description: "What you shared and what was shared with you",
            args: &[],
            read_only: true,
            handler: handler!(share::shares),
        },
        CommandSpec {
            name: "cancel",
            aliases: &[],
            description: "Stop watching a share",
            args: share::CANCEL_ARGS,
            read_only: false,
            handler: handler!(share::cancel),
        },
        CommandSpec {
            name: "nowplaying",
            aliases: &["np"],
            description: "What you (or someone public) play now, else the last track played",
            args: now_playing::ARGS,
            read_only: true,
            handler: handler!(now_playing::run),
        },
        CommandSpec {
            name: "public",
            aliases: &[],
            description: "Publish what you play as JSON at /api/users/<handle>/now-playing",
            args: public::ARGS,
            read_only: false,
            handler: handler!(public::run),
        },
        CommandSpec {
            name: "me",
            aliases: &[],
            description: "Your handle, your platforms, your Spotify link",
            args: &[],
            read_only: true,
            handler: handler!(me::run),
        },
        CommandSpec {
            name: "handle",
            aliases: &[],
            description: "Set your public handle (letters, digits and _, 3-32 characters)",
            args: handle::ARGS,
            read_only: false,
            handler: handler!(handle::run),
        },
        CommandSpec {
            name: "connect",
            aliases: &[],
            description: "Join your accounts on several platforms into one (gives or takes a code)",
            args: connect::ARGS,
            read_only: false,
            handler: handler!(connect::run),
        },
        CommandSpec {
            name: "notify",
            aliases: &[],
            description: "Get your notifications on this platform",
            args: notify::ARGS,
            read_only: false,
            handler: handler!(notify::run),
        },
        CommandSpec {
            name: "forget",
            aliases: &[],
            description: "Delete everything Segue keeps about you (asks first)",
            args: forget::ARGS,
            read_only: false,
            handler: handler!(forget::run),
        },
    ])
}
