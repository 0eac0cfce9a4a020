//! Durations in words, for messages: "5 minutes", "2 hours", "3 days".

use chrono::TimeDelta;

/// "less than a minute", "a minute", "5 minutes", "an hour", "3 hours", "2 days".
pub fn span(d: TimeDelta) -> String {
    match d.num_minutes() {
        m if m < 1 => "less than a minute".to_owned(),
        1 => "a minute".to_owned(),
        m if m < 60 => format!("{m} minutes"),
        m if m < 120 => "an hour".to_owned(),
        m if m < 48 * 60 => format!("{} hours", m / 60),
        m => format!("{} days", m / (24 * 60)),
    }
}

/// "just now", "5 minutes ago", "3 hours ago".
pub fn ago(d: TimeDelta) -> String {
    if d.num_minutes() < 1 {
        "just now".to_owned()
    } else {
        format!("{} ago", span(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_for_spans() {
        assert_eq!(ago(TimeDelta::seconds(20)), "just now");
        assert_eq!(ago(TimeDelta::minutes(5)), "5 minutes ago");
        assert_eq!(span(TimeDelta::minutes(1)), "a minute");
        assert_eq!(span(TimeDelta::minutes(61)), "an hour");
        assert_eq!(span(TimeDelta::hours(30)), "30 hours");
        assert_eq!(span(TimeDelta::days(7)), "7 days");
    }
}
