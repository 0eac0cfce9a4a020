//! What someone is playing: the current item (`/me/player/currently-playing`; 204 means
//! nothing), else the last played track (`/me/player/recently-played?limit=1`). Podcasts
//! and local files are described politely. Answers are kept per user for
//! [`NOW_PLAYING_CACHE`], and concurrent lookups for one user share one call, so any
//! request rate costs at most one Spotify call per user per 10 seconds.

use std::time::Instant;

use chrono::{DateTime, Utc};
use rspotify::AuthCodeSpotify;
use rspotify::clients::OAuthClient;
use rspotify::model::{AdditionalType, FullTrack, PlayableItem, TimeLimits};
use rspotify::prelude::Id;

use super::{NOW_PLAYING_CACHE, Spotify, SpotifyError, slot};

/// What kind of thing is playing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemKind {
    Track,
    /// A podcast episode.
    Episode,
    /// A file from the person's own computer: no Spotify link to it.
    LocalFile,
}

/// A track or episode, as people are told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub kind: ItemKind,
    /// The song's or episode's name.
    pub title: String,
    /// The artists (joined with commas), or the podcast's name.
    pub by: String,
    /// `https://open.spotify.com/…`, when there is one.
    pub url: Option<String>,
}

/// Something someone plays now or played last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listening {
    pub item: Item,
    /// Playing right now (not paused).
    pub playing: bool,
    /// When it was last played; `None` while it plays.
    pub played_at: Option<DateTime<Utc>>,
}

/// What someone plays: `None` when Spotify knows of nothing played lately.
pub type NowPlaying = Option<Listening>;

/// One entry of someone's recently-played history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Play {
    pub track_id: String,
    /// Unix milliseconds.
    pub played_at: i64,
}

/// Pages of history read per call at most (Spotify keeps the last 50 plays anyway).
const HISTORY_PAGES: usize = 4;

pub(super) struct Cached {
    at: Instant,
    answer: Result<NowPlaying, SpotifyError>,
}

const TYPES: [AdditionalType; 2] = [AdditionalType::Track, AdditionalType::Episode];

impl Item {
    pub fn from_track(track: &FullTrack) -> Self {
        let by = track
            .artists
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            kind: if track.is_local {
                ItemKind::LocalFile
            } else {
                ItemKind::Track
            },
            title: track.name.clone(),
            by: if by.is_empty() {
                "an unknown artist".to_owned()
            } else {
                by
            },
            url: track.external_urls.get("spotify").cloned(),
        }
    }

    /// `‘Song’ by Artist`, `the episode ‘Title’ of Show`, or `‘Song’ by Artist (a local
    /// file)`.
    pub fn describe(&self) -> String {
        match self.kind {
            ItemKind::Track => format!("‘{}’ by {}", self.title, self.by),
            ItemKind::Episode => format!("the episode ‘{}’ of {}", self.title, self.by),
            ItemKind::LocalFile => format!("‘{}’ by {} (a local file)", self.title, self.by),
        }
    }
}

impl Listening {
    /// "alice is listening to ‘X’ by Y" or "alice last listened to ‘X’ by Y".
    pub fn sentence(&self, who: &str) -> String {
        if self.playing {
            format!("{who} is listening to {}", self.item.describe())
        } else {
            format!("{who} last listened to {}", self.item.describe())
        }
    }
}

impl Spotify {
    /// What this user plays now, else played last; cached for [`NOW_PLAYING_CACHE`].
    pub async fn now_playing(&self, user_id: i64) -> Result<NowPlaying, SpotifyError> {
        let slot = slot(&self.playing, user_id);
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref()
            && c.at.elapsed() < NOW_PLAYING_CACHE
        {
            return match &c.answer {
                Ok(answer) => Ok(answer.clone()),
                Err(e) => Err(e.cacheable().unwrap_or(SpotifyError::NotLinked)),
            };
        }
        let answer = self.fetch_now_playing(user_id).await;
        let keep = match &answer {
            Ok(a) => Some(Ok(a.clone())),
            Err(e) => e.cacheable().map(Err),
        };
        *cached = keep.map(|answer| Cached {
            at: Instant::now(),
            answer,
        });
        answer
    }

    /// The plays after `after_ms` (Unix ms), oldest first: the `after` cursor, so each
    /// call reads only what is new.
    pub async fn recently_played(
        &self,
        user_id: i64,
        after_ms: i64,
    ) -> Result<Vec<Play>, SpotifyError> {
        let mut plays = Vec::new();
        let mut after = after_ms;
        for _ in 0..HISTORY_PAGES {
            let since = chrono::DateTime::from_timestamp_millis(after).unwrap_or_default();
            let page = self
                .as_user(
                    user_id,
                    "recently-played",
                    |c: AuthCodeSpotify| async move {
                        c.current_user_recently_played(Some(50), Some(TimeLimits::After(since)))
                            .await
                    },
                )
                .await?;
            let full = page.items.len() == 50;
            let mut batch: Vec<Play> = page
                .items
                .iter()
                .filter_map(|p| {
                    Some(Play {
                        track_id: p.track.id.as_ref()?.id().to_owned(),
                        played_at: p.played_at.timestamp_millis(),
                    })
                })
                .collect();
            batch.sort_by_key(|p| p.played_at);
            match batch.last() {
                Some(last) if full && last.played_at > after => after = last.played_at,
                _ => {
                    plays.extend(batch);
                    break;
                }
            }
            plays.extend(batch);
        }
        plays.sort_by_key(|p| p.played_at);
        plays.dedup();
        Ok(plays)
    }

    async fn fetch_now_playing(&self, user_id: i64) -> Result<NowPlaying, SpotifyError> {
        let current = self
            .as_user(
                user_id,
                "currently-playing",
                |c: AuthCodeSpotify| async move { c.current_playing(None, Some(&TYPES)).await },
            )
            .await?;
        if let Some(ctx) = current {
            let item = match &ctx.item {
                Some(PlayableItem::Track(t)) => Some(Item::from_track(t)),
                Some(PlayableItem::Episode(e)) => Some(Item {
                    kind: ItemKind::Episode,
                    title: e.name.clone(),
                    by: e.show.name.clone(),
                    url: e.external_urls.get("spotify").cloned(),
                }),
                // An ad, or something rspotify doesn't know: fall back to history.
                Some(PlayableItem::Unknown(_)) | None => None,
            };
            if let Some(item) = item {
                return Ok(Some(Listening {
                    item,
                    playing: ctx.is_playing,
                    played_at: (!ctx.is_playing).then_some(ctx.timestamp),
                }));
            }
        }
        let history = self
            .as_user(user_id, "recently-played", |c: AuthCodeSpotify| async move {
                c.current_user_recently_played(Some(1), None).await
            })
            .await?;
        Ok(history.items.first().map(|play| Listening {
            item: Item::from_track(&play.track),
            playing: false,
            played_at: Some(play.played_at),
        }))
    }
}
