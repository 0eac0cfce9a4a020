//! One-time secrets kept out of the audit log. The codes tables store only hashes, and
//! `messages` must not undo that: [`mask`] hides the secrets in a text before it stays in
//! the log. The store applies it to every inbound row as it is recorded, to outbound rows
//! delivered inline, and to outbox rows once they are delivered (until then a row's text
//! is what the outbox delivers).

use std::borrow::Cow;

/// What a secret becomes in the log.
pub const HIDDEN: &str = "[hidden]";

/// Commands whose arguments are one-time secrets: `/connect <code>`, `/accept <code>`,
/// `/link <16-digit code>`.
const SECRET_COMMANDS: &[&str] = &["connect", "accept", "link"];

/// `text` with its secrets masked:
/// - on a line that starts with `/connect`, `/accept` or `/link` (`/link@bot` too), the
///   rest of the line;
/// - `state=` values (the `/link` URL's signed state);
/// - words in the code formats: `ABCD-2345` (connect and invite codes) and 16 digits.
///
/// Borrowed when there was nothing to mask.
pub fn mask(text: &str) -> Cow<'_, str> {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let line = mask_command(line, &mut changed);
        mask_words(&line, &mut out, &mut changed);
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// A line starting with a secret command keeps only the command.
fn mask_command<'a>(line: &'a str, changed: &mut bool) -> Cow<'a, str> {
    let trimmed = line.trim_start();
    let Some(rest) = trimmed.strip_prefix('/') else {
        return Cow::Borrowed(line);
    };
    let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (word, args) = rest.split_at(word_end);
    let name = word.split('@').next().unwrap_or_default();
    if args.trim().is_empty() || !SECRET_COMMANDS.iter().any(|c| name.eq_ignore_ascii_case(c)) {
        return Cow::Borrowed(line);
    }
    *changed = true;
    let indent = &line[..line.len() - trimmed.len()];
    Cow::Owned(format!("{indent}/{word} {HIDDEN}"))
}

/// Copies `line` to `out`, masking `state=` values and code-shaped words.
fn mask_words(line: &str, out: &mut String, changed: &mut bool) {
    let mut rest = line;
    while !rest.is_empty() {
        let start = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(end);
        match mask_word(word) {
            Some(masked) => {
                *changed = true;
                out.push_str(&masked);
            }
            None => out.push_str(word),
        }
        rest = tail;
    }
}

fn mask_word(word: &str) -> Option<String> {
    if let Some(at) = word.find("state=") {
        let value_start = at + "state=".len();
        let value_end = word[value_start..]
            .find(['&', '#', '"', '\''])
            .map_or(word.len(), |e| value_start + e);
        if value_end > value_start && &word[value_start..value_end] != HIDDEN {
            return Some(format!(
                "{}{HIDDEN}{}",
                &word[..value_start],
                &word[value_end..]
            ));
        }
        return None;
    }
    // Punctuation around a code ("ABCD-2345." or "(ABCD-2345)") stays.
    let core = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if core.is_empty() || !is_code(core) {
        return None;
    }
    let at = word.find(core).unwrap_or(0);
    Some(format!(
        "{}{HIDDEN}{}",
        &word[..at],
        &word[at + core.len()..]
    ))
}

/// `ABCD-2345` (letters and digits, not digits only, any case), or 16 digits (optionally
/// in groups of four joined by `-`).
fn is_code(word: &str) -> bool {
    let pair = word.split_once('-').filter(|(a, b)| {
        [a, b]
            .iter()
            .all(|p| p.len() == 4 && p.chars().all(|c| c.is_ascii_alphanumeric()))
            && !word.chars().all(|c| c.is_ascii_digit() || c == '-')
    });
    let digits: String = word.chars().filter(|c| *c != '-').collect();
    let sixteen = digits.len() == 16
        && digits.chars().all(|c| c.is_ascii_digit())
        && (!word.contains('-') || word.split('-').all(|g| g.len() == 4));
    pair.is_some() || sixteen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_commands_keep_only_the_command() {
        assert_eq!(mask("/connect ABCD-2345"), "/connect [hidden]");
        assert_eq!(mask("/accept abcd2345"), "/accept [hidden]");
        assert_eq!(mask("/link 1234 5678 1234 5678"), "/link [hidden]");
        assert_eq!(
            mask("/link@segue_bot 1234567812345678"),
            "/link@segue_bot [hidden]"
        );
        assert_eq!(mask("/link code:1234567812345678"), "/link [hidden]");
        assert_eq!(
            mask("To join, send this:\n/connect WXYZ-7890\nThis account keeps @ann."),
            "To join, send this:\n/connect [hidden]\nThis account keeps @ann."
        );
    }

    #[test]
    fn link_states_and_code_shaped_words_are_hidden() {
        assert_eq!(
            mask("Open this link:\nhttp://x/auth/spotify/start?state=v1.abc_DEF-123"),
            "Open this link:\nhttp://x/auth/spotify/start?state=[hidden]"
        );
        assert_eq!(mask("?a=1&state=xyz&b=2"), "?a=1&state=[hidden]&b=2");
        assert_eq!(mask("your code (ABCD-2345)."), "your code ([hidden]).");
        assert_eq!(mask("code 1234-5678-1234-5678"), "code [hidden]");
    }

    #[test]
    fn everything_else_is_left_alone() {
        for text in [
            "/link",
            "/connect",
            "Send /link to connect it again.",
            "/share bob spotify:track:1ShortSongForTests0001",
            "the 2024-2025 season",
            "‘Short Song’ by The Testers - live",
            "",
            "line one\n\nline three",
        ] {
            assert!(matches!(mask(text), Cow::Borrowed(_)), "{text}");
        }
    }
}
