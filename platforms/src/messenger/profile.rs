//! The Messenger Profile API body for `segue register-commands` (and `serve` at start):
//! the Get Started button and a persistent menu with the commands that need no
//! arguments, each a postback whose payload is the command line.

use segue_bot::CommandTable;
use serde_json::{Value, json};

/// The Get Started button's payload (converted to `/start` when pressed).
pub const GET_STARTED: &str = "GET_STARTED";

/// Messenger's persistent menu takes at most 20 items, titles of at most 30 characters.
const MENU_ITEMS: usize = 20;

/// `POST /me/messenger_profile` body for the command table.
pub fn profile(table: &CommandTable) -> Value {
    let items: Vec<Value> = table
        .iter()
        .filter(|c| c.args.iter().all(|a| !a.required))
        .take(MENU_ITEMS)
        .map(|c| json!({ "type": "postback", "title": format!("/{}", c.name), "payload": format!("/{}", c.name) }))
        .collect();
    json!({
        "get_started": { "payload": GET_STARTED },
        "persistent_menu": [{
            "locale": "default",
            "composer_input_disabled": false,
            "call_to_actions": items,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_menu_holds_the_commands_without_required_arguments() {
        let body = profile(&segue_bot::handlers::table());
        let items = body["persistent_menu"][0]["call_to_actions"]
            .as_array()
            .unwrap();
        assert!(items.len() <= MENU_ITEMS);
        assert!(items.iter().any(|i| i["payload"] == "/help"));
        assert!(items.iter().any(|i| i["payload"] == "/shares"));
        assert!(!items.iter().any(|i| i["payload"] == "/share"));
        assert_eq!(body["get_started"]["payload"], GET_STARTED);
    }
}
