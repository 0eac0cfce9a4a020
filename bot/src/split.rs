//! Splitting over-long texts at a platform's limit: at the last paragraph break, else
//! line break, else space before the limit, and only mid-word when a word is longer than
//! a whole message.

/// Splits `text` into pieces of at most `limit` characters.
pub fn split_text(text: &str, limit: usize) -> Vec<String> {
    assert!(limit > 0, "a platform limit is never zero");
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.chars().count() > limit {
        // Byte offset just past the `limit`th character.
        let hard = rest
            .char_indices()
            .nth(limit)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let window = &rest[..hard];
        let cut = ["\n\n", "\n", " "]
            .iter()
            .filter_map(|sep| window.rfind(sep).filter(|&i| i > 0))
            .next()
            .unwrap_or(hard);
        pieces.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest.to_owned());
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_piece() {
        assert_eq!(split_text("hello", 10), vec!["hello"]);
        assert_eq!(split_text("", 10), vec![""]);
    }

    #[test]
    fn splits_at_line_then_space_then_hard() {
        assert_eq!(split_text("aaaa\nbbbb cccc", 10), vec!["aaaa", "bbbb cccc"]);
        assert_eq!(split_text("aaa bbb ccc ddd", 8), vec!["aaa bbb", "ccc ddd"]);
        assert_eq!(split_text("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
    }

    #[test]
    fn counts_characters_not_bytes() {
        let text = "ü".repeat(5000);
        let pieces = split_text(&text, 2000);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.chars().count() <= 2000));
        assert_eq!(pieces.concat(), text);
    }
}
