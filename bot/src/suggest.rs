//! Suggestions while someone types an argument (Discord's autocomplete). A command's
//! table entry says what each argument may be completed with; this finds candidates for
//! what was typed so far. Platform-neutral: an adapter asks, then shows them.

use crate::command::Suggest;
use crate::core::Core;
use crate::spotify::Item;
use crate::store::Person;

/// The most suggestions shown at once (Discord's limit).
pub const MAX: usize = 25;
/// Spotify tracks suggested for search words.
const TRACKS: u32 = 5;
/// Discord's limit on a choice's name and value.
const CHOICE_MAX: usize = 100;

/// One candidate: what is shown, and what the argument becomes when it is picked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suggestion {
    pub label: String,
    pub value: String,
}

/// Candidates for `typed` as an argument completed with `what`. Failures (storage,
/// Spotify) give no suggestions and a log line: typing goes on either way.
pub async fn suggest(core: &Core, person: &Person, what: Suggest, typed: &str) -> Vec<Suggestion> {
    match what {
        Suggest::Nothing => Vec::new(),
        Suggest::Friends => friends(core, person, typed).await,
        Suggest::Tracks => tracks(core, typed).await,
    }
}

async fn friends(core: &Core, person: &Person, typed: &str) -> Vec<Suggestion> {
    let typed = typed.trim().trim_start_matches('@').to_lowercase();
    let friends = match core.store.friends_of(person.user_id).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "no friend suggestions: storage failed");
            return Vec::new();
        }
    };
    friends
        .into_iter()
        .filter(|u| u.handle.to_lowercase().starts_with(&typed))
        .take(MAX)
        .map(|u| Suggestion {
            label: format!("@{}", u.handle),
            value: u.handle,
        })
        .collect()
}

async fn tracks(core: &Core, typed: &str) -> Vec<Suggestion> {
    let words = typed.trim();
    // Links and ids are complete as they are; one letter finds nothing useful.
    if words.chars().count() < 2 || words.contains("spotify.com") || words.starts_with("spotify:") {
        return Vec::new();
    }
    let Some(spotify) = core.spotify.as_ref() else {
        return Vec::new();
    };
    let found = match spotify.search_tracks(words, TRACKS).await {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(error = %e, "no track suggestions: Spotify failed");
            return Vec::new();
        }
    };
    found
        .iter()
        .filter_map(|track| {
            use rspotify::prelude::Id;
            let id = track.id.as_ref()?.id().to_owned();
            let item = Item::from_track(track);
            let label: String = format!("{} — {}", item.title, item.by)
                .chars()
                .take(CHOICE_MAX)
                .collect();
            Some(Suggestion {
                label,
                value: format!("spotify:track:{id}"),
            })
        })
        .collect()
}
