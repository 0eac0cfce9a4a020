//! The command table as Discord slash commands (serenity's builders): one definition per
//! name and alias, typed options from each argument's kind. Registered with one bulk
//! overwrite by `segue register-commands` and at every start.

use segue_bot::{ArgKind, ArgSpec, CommandSpec, CommandTable, Suggest};
use serenity::all::{CommandOptionType, CreateCommand, CreateCommandOption};

/// Discord's limit on names and choice names.
const NAME_MAX: usize = 32;
/// Discord's limit on descriptions.
const DESCRIPTION_MAX: usize = 100;

/// Every command and alias of the table as a slash command definition.
pub fn definitions(table: &CommandTable) -> Vec<CreateCommand> {
    table
        .iter()
        .flat_map(|spec| {
            std::iter::once(spec.name)
                .chain(spec.aliases.iter().copied())
                .map(move |name| definition(spec, name))
        })
        .collect()
}

fn definition(spec: &CommandSpec, name: &str) -> CreateCommand {
    CreateCommand::new(clip(name, NAME_MAX))
        .description(clip(spec.description, DESCRIPTION_MAX))
        .set_options(spec.args.iter().map(option).collect())
}

fn option(arg: &ArgSpec) -> CreateCommandOption {
    let kind = match arg.kind {
        ArgKind::Integer => CommandOptionType::Integer,
        // A person is a Segue handle, typed; Discord's user picker names Discord
        // accounts, which need not be Segue users.
        ArgKind::String | ArgKind::Text | ArgKind::User | ArgKind::Choice(_) => {
            CommandOptionType::String
        }
    };
    let mut option = CreateCommandOption::new(
        kind,
        clip(arg.name, NAME_MAX),
        clip(arg.description, DESCRIPTION_MAX),
    )
    .required(arg.required);
    if let ArgKind::Choice(choices) = arg.kind {
        for choice in choices {
            option = option.add_string_choice(*choice, *choice);
        }
    } else if arg.suggest != Suggest::Nothing {
        // Discord asks as the person types (friends' handles, Spotify tracks).
        option = option.set_autocomplete(true);
    }
    option
}

fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_and_alias_becomes_a_slash_command() {
        let table = segue_bot::handlers::table();
        let defs = serde_json::to_value(definitions(&table)).unwrap();
        let names: Vec<&str> = defs
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"share"));
        assert!(names.contains(&"nowplaying"));
        assert!(names.contains(&"np"), "aliases are registered too");
        let share = defs
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "share")
            .unwrap();
        let options = share["options"].as_array().unwrap();
        assert_eq!(options[0]["name"], "friend");
        assert_eq!(options[0]["type"], 3);
        assert_eq!(options[0]["required"], true);
        assert_eq!(options[0]["autocomplete"], true, "friends are suggested");
        assert_eq!(options[1]["autocomplete"], true, "tracks are suggested");
        let public = defs
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "public")
            .unwrap();
        let choices = public["options"][0]["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 2, "on|off become choices");
    }
}
