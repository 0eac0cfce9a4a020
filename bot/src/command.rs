//! The command table: every chat command's name, aliases, description and typed
//! arguments. It drives parsing, `/help`, `segue commands`, and later Telegram's menu and
//! Discord's slash definitions, so arguments carry option types from the start.

use std::collections::HashMap;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::error::CommandError;
use crate::message::Reply;
use crate::router::Ctx;

/// What a handler returns: zero or more replies to the chat the command came from.
pub type HandlerResult = Result<Vec<Reply>, CommandError>;

/// A command handler: an async function of the invocation context and parsed arguments.
pub type Handler = for<'a> fn(&'a Ctx, Args) -> BoxFuture<'a, HandlerResult>;

/// Turns `async fn run(ctx: &Ctx, args: Args) -> HandlerResult` into a [`Handler`].
#[macro_export]
macro_rules! handler {
    ($f:path) => {
        |ctx, args| ::std::boxed::Box::pin($f(ctx, args))
    };
}

/// The type of one argument (a Discord option type, a Telegram free-text word).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "choices")]
pub enum ArgKind {
    /// One word.
    String,
    /// Everything to the end of the line (only as the last argument).
    Text,
    /// A whole number.
    Integer,
    /// A person: a Segue handle (`@bob` or `bob`), or a platform user pick on Discord.
    User,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
}

/// What a platform that completes arguments as people type (Discord's autocomplete) may
/// suggest for one (see `crate::suggest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suggest {
    Nothing,
    /// The person's friends' handles (the default for [`ArgKind::User`]).
    Friends,
    /// Spotify tracks matching the words typed so far.
    Tracks,
}

/// One argument of a command.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ArgSpec {
    pub name: &'static str,
    pub description: &'static str,
    #[serde(flatten)]
    pub kind: ArgKind,
    pub required: bool,
    #[serde(skip)]
    pub suggest: Suggest,
}

impl ArgSpec {
    pub const fn required(name: &'static str, kind: ArgKind, description: &'static str) -> Self {
        Self {
            name,
            description,
            kind,
            required: true,
            suggest: Self::default_suggest(kind),
        }
    }

    pub const fn optional(name: &'static str, kind: ArgKind, description: &'static str) -> Self {
        Self {
            name,
            description,
            kind,
            required: false,
            suggest: Self::default_suggest(kind),
        }
    }

    /// Completes this argument with `suggest` where the platform can.
    pub const fn suggesting(self, suggest: Suggest) -> Self {
        Self { suggest, ..self }
    }

    const fn default_suggest(kind: ArgKind) -> Suggest {
        match kind {
            ArgKind::User => Suggest::Friends,
            _ => Suggest::Nothing,
        }
    }
}

/// One command: its table entry.
#[derive(Clone, Copy, Serialize)]
pub struct CommandSpec {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub description: &'static str,
    pub args: &'static [ArgSpec],
    /// The handler only reads: it changes nothing a second run would change again. A
    /// platform event that asks for such a command skips the dedupe read; if it was a
    /// redelivery after all, its marker is found taken when its rows are committed, and
    /// its replies are dropped unsent (see `Router::handle`).
    #[serde(skip)]
    pub read_only: bool,
    #[serde(skip)]
    pub handler: Handler,
}

impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSpec")
            .field("name", &self.name)
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

impl CommandSpec {
    /// The usage line, e.g. `/handle <name>` or `/help [command]`.
    pub fn usage(&self) -> String {
        let mut s = format!("/{}", self.name);
        for arg in self.args {
            let shown = match arg.kind {
                ArgKind::Choice(choices) => choices.join("|"),
                _ => arg.name.to_owned(),
            };
            if arg.required {
                s.push_str(&format!(" <{shown}>"));
            } else {
                s.push_str(&format!(" [{shown}]"));
            }
        }
        s
    }

    /// Parses the text after the command name into typed arguments.
    pub fn parse_args(&self, raw: &str) -> Result<Args, String> {
        let mut rest = raw.trim();
        let mut values = Vec::new();
        for (i, arg) in self.args.iter().enumerate() {
            let last = i + 1 == self.args.len();
            let word = if arg.kind == ArgKind::Text || last && arg.kind == ArgKind::String {
                std::mem::take(&mut rest)
            } else {
                let (word, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                rest = tail.trim_start();
                word
            };
            if word.is_empty() {
                if arg.required {
                    return Err(format!("missing <{}>", arg.name));
                }
                continue;
            }
            values.push((arg.name, ArgValue::parse(arg, word)?));
        }
        if !rest.is_empty() {
            return Err(format!("unexpected `{rest}`"));
        }
        Ok(Args(values))
    }

    /// Builds arguments from options a platform already split (Discord slash commands).
    pub fn args_from_options(&self, options: &[(String, String)]) -> Result<Args, String> {
        let mut values = Vec::new();
        for arg in self.args {
            match options.iter().find(|(name, _)| name == arg.name) {
                Some((_, value)) => values.push((arg.name, ArgValue::parse(arg, value)?)),
                None if arg.required => return Err(format!("missing <{}>", arg.name)),
                None => {}
            }
        }
        Ok(Args(values))
    }
}

/// A parsed argument value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgValue {
    Str(String),
    Int(i64),
}

impl ArgValue {
    fn parse(spec: &ArgSpec, word: &str) -> Result<Self, String> {
        match spec.kind {
            ArgKind::String | ArgKind::Text | ArgKind::User => Ok(Self::Str(word.to_owned())),
            ArgKind::Integer => word
                .parse()
                .map(Self::Int)
                .map_err(|_| format!("<{}> must be a whole number", spec.name)),
            ArgKind::Choice(choices) => choices
                .iter()
                .find(|c| c.eq_ignore_ascii_case(word))
                .map(|c| Self::Str((*c).to_owned()))
                .ok_or_else(|| format!("<{}> must be one of {}", spec.name, choices.join(", "))),
        }
    }
}

/// The typed arguments of one invocation, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args(Vec<(&'static str, ArgValue)>);

impl Args {
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.iter().find_map(|(n, v)| match v {
            ArgValue::Str(s) if *n == name => Some(s.as_str()),
            _ => None,
        })
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.0.iter().find_map(|(n, v)| match v {
            ArgValue::Int(i) if *n == name => Some(*i),
            _ => None,
        })
    }
}

/// All commands, looked up by name or alias (case-insensitive).
#[derive(Debug)]
pub struct CommandTable {
    commands: Vec<CommandSpec>,
    index: HashMap<String, usize>,
}

impl CommandTable {
    /// Builds the table; panics at start-up on a duplicate name, which is a programming
    /// error in the table itself.
    pub fn new(commands: Vec<CommandSpec>) -> Self {
        let mut index = HashMap::new();
        for (i, c) in commands.iter().enumerate() {
            for name in std::iter::once(&c.name).chain(c.aliases) {
                let previous = index.insert(name.to_ascii_lowercase(), i);
                assert!(previous.is_none(), "command name /{name} is used twice");
            }
        }
        Self { commands, index }
    }

    pub fn get(&self, name: &str) -> Option<&CommandSpec> {
        let name = name.trim_start_matches('/').to_ascii_lowercase();
        self.index.get(&name).map(|&i| &self.commands[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &CommandSpec> {
        self.commands.iter()
    }

    /// The table as JSON, as `segue commands --format json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.commands
                .iter()
                .map(|c| {
                    let mut v = serde_json::to_value(c).unwrap_or_default();
                    v["usage"] = c.usage().into();
                    v
                })
                .collect(),
        )
    }

    /// The table as text: one `usage — description` line per command.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.commands {
            out.push_str(&c.usage());
            if !c.aliases.is_empty() {
                let aliases: Vec<String> = c.aliases.iter().map(|a| format!("/{a}")).collect();
                out.push_str(&format!(" (also {})", aliases.join(", ")));
            }
            out.push_str(" — ");
            out.push_str(c.description);
            out.push('\n');
        }
        out
    }
}

/// A command line split into its name, an optional `@bot` suffix and the rest.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandLine<'a> {
    pub name: &'a str,
    pub bot: Option<&'a str>,
    pub args: &'a str,
}

impl<'a> CommandLine<'a> {
    /// `"/handle@segue_bot  bob"` → name `handle`, bot `segue_bot`, args `bob`. `None` when
    /// the text isn't a command.
    pub fn parse(text: &'a str) -> Option<Self> {
        let text = text.trim_start();
        let body = text.strip_prefix('/')?;
        let (head, args) = body
            .split_once(char::is_whitespace)
            .map(|(h, a)| (h, a.trim()))
            .unwrap_or((body, ""));
        let (name, bot) = match head.split_once('@') {
            Some((n, b)) => (n, Some(b)),
            None => (head, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        Some(Self { name, bot, args })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_command_lines() {
        let l = CommandLine::parse("/handle@segue_bot  bob ").unwrap();
        assert_eq!(
            (l.name, l.bot, l.args),
            ("handle", Some("segue_bot"), "bob")
        );
        assert_eq!(CommandLine::parse("/ping").unwrap().args, "");
        assert!(CommandLine::parse("hello").is_none());
        assert!(CommandLine::parse("/").is_none());
        assert!(CommandLine::parse("/ 1").is_none());
        assert!(CommandLine::parse("/a-b").is_none());
    }
}
