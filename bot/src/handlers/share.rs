//! `/share <friend> <track>`, `/shares` and `/cancel <id>`: sharing a song with a friend
//! and watching for them to play it (the watch itself is `crate::sharing`).

use chrono::{TimeDelta, Utc};

use crate::command::{ArgKind, ArgSpec, Args, HandlerResult, Suggest};
use crate::error::CommandError;
use crate::handlers::friends::find_person;
use crate::message::Reply;
use crate::router::Ctx;
use crate::sharing::{ShareError, Sharing, describe};
use crate::spotify::{Item, SpotifyError};
use crate::store::entities::message::status as message_status;
use crate::store::entities::share::{self, status};
use crate::types::TrackRef;
use crate::when::{ago, span};

pub const SHARE_ARGS: &[ArgSpec] = &[
    ArgSpec::required("friend", ArgKind::User, "Who gets it: a friend's handle"),
    ArgSpec::required(
        "track",
        ArgKind::Text,
        "A Spotify track link, a spotify:track: URI, or words to search for",
    )
    .suggesting(Suggest::Tracks),
];

pub const CANCEL_ARGS: &[ArgSpec] = &[ArgSpec::required(
    "share",
    ArgKind::String,
    "The share's id, as /shares shows it",
)];

fn sharing(ctx: &Ctx) -> Result<&Sharing, CommandError> {
    ctx.core.sharing.as_deref().ok_or_else(|| {
        CommandError::user(
            "Sharing needs Spotify, and Spotify isn't set up on this Segue yet: the operator \
             needs to set spotify.client_id and spotify.client_secret.",
        )
    })
}

pub async fn share(ctx: &Ctx, args: Args) -> HandlerResult {
    let sharing = sharing(ctx)?;
    let store = &ctx.core.store;
    let track_ref = TrackRef::parse(args.str("track").unwrap_or_default())
        .map_err(|e| CommandError::Usage(e.to_string()))?;
    let friend = find_person(ctx, args.str("friend").unwrap_or_default()).await?;
    if friend.id == ctx.person.user_id {
        return Err(CommandError::user(
            "You can't share with yourself. Send /friends to see who you can share with.",
        ));
    }
    if !store.are_friends(ctx.person.user_id, friend.id).await? {
        return Err(CommandError::user(format!(
            "@{} isn't your friend yet. Send /invite and give them the line it gives you.",
            friend.handle
        )));
    }
    let spotify = sharing.spotify();
    let track = match &track_ref {
        TrackRef::Id(id) => {
            let id = rspotify::model::TrackId::from_id(id.clone())
                .map_err(|_| CommandError::Usage("that track id isn't valid".to_owned()))?;
            match spotify.track(&id).await {
                Ok(t) => t,
                Err(SpotifyError::NotFound) => {
                    return Err(CommandError::user(
                        "Spotify doesn't know that track. Check the link?",
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        TrackRef::Search(words) => {
            let mut found = spotify.search_tracks(words, 1).await?;
            if found.is_empty() {
                return Err(CommandError::user(format!(
                    "I found nothing on Spotify for “{words}”."
                )));
            }
            found.remove(0)
        }
    };
    let Some(track_id) = track.id.as_ref().map(|id| {
        use rspotify::prelude::Id;
        id.id().to_owned()
    }) else {
        return Err(CommandError::user(
            "That track is a local file: it can't be shared.",
        ));
    };
    let item = Item::from_track(&track);
    let Some(me) = store.user(ctx.person.user_id).await? else {
        return Err(CommandError::user(
            "I can't find you any more. Send /start.",
        ));
    };
    let duration_ms = track.duration.num_milliseconds();
    let shared = match sharing
        .share(&me, &friend, &item, &track_id, duration_ms)
        .await
    {
        Ok(s) => s,
        Err(ShareError::Unreachable) => {
            return Err(CommandError::user(format!(
                "I can't reach @{} on any platform right now, so I didn't share it.",
                friend.handle
            )));
        }
        Err(ShareError::Store(e)) => return Err(e.into()),
    };
    let s = &shared.share;
    let mut text = format!("Shared {} with @{}.", describe(s), friend.handle);
    if shared.watched {
        text.push_str(" I'll tell you when they play it.");
    } else {
        text.push_str(&format!(
            " @{} hasn't linked Spotify, so I can't watch for it yet; I'll start when they do.",
            friend.handle
        ));
    }
    text.push_str(&format!("\nWrong one? /cancel {}", s.short_id));
    Ok(vec![Reply::text(text)])
}

/// One line about a share, for `/shares`; `held` when the friend hasn't got it yet (their
/// platform's messaging window is closed).
fn line(s: &share::Model, other: &str, sent: bool, held: bool) -> String {
    let now = Utc::now().timestamp_millis();
    let state = match s.status.as_str() {
        status::PLAYED => {
            let after = s.played_at.unwrap_or(s.shared_at) - s.shared_at;
            format!(
                "played, {} after sharing",
                span(TimeDelta::milliseconds(after))
            )
        }
        status::PENDING if sent => "watching".to_owned(),
        status::PENDING => "not played yet".to_owned(),
        status::WAITING if sent => format!("waiting for @{other} to link Spotify"),
        status::WAITING | status::PAUSED if !sent => {
            "not watched: send /link so your friend hears when you play it".to_owned()
        }
        status::PAUSED => format!("paused: @{other}'s Spotify link is broken"),
        status::EXPIRED => "not played (I stopped watching)".to_owned(),
        status::CANCELLED => "cancelled".to_owned(),
        other => other.to_owned(),
    };
    let whom = if sent {
        format!("to @{other}")
    } else {
        format!("from @{other}")
    };
    let mut line = format!(
        "{} {} {whom}, {}: {state}",
        s.short_id,
        describe(s),
        ago(TimeDelta::milliseconds(now - s.shared_at))
    );
    if held && sent {
        line.push_str(&format!(
            " (not delivered yet: it will reach @{other} when they next message Segue)"
        ));
    }
    line
}

pub async fn shares(ctx: &Ctx, _args: Args) -> HandlerResult {
    let store = &ctx.core.store;
    let me = ctx.person.user_id;
    let mut text = String::new();
    for (sent, title) in [(true, "You shared:"), (false, "Shared with you:")] {
        let list = store.recent_shares(me, sent, 10).await?;
        if list.is_empty() {
            continue;
        }
        let notices: Vec<i64> = list.iter().filter_map(|s| s.notice_id).collect();
        let statuses = store.message_statuses(&notices).await?;
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(title);
        for s in &list {
            let other_id = if sent { s.friend_id } else { s.sharer_id };
            let other = store
                .user(other_id)
                .await?
                .map_or_else(|| "someone".to_owned(), |u| u.handle);
            text.push('\n');
            let held = s
                .notice_id
                .and_then(|id| statuses.get(&id))
                .is_some_and(|st| st == message_status::HELD);
            text.push_str(&line(s, &other, sent, held));
        }
    }
    if text.is_empty() {
        text = "Nothing shared yet. Share a song with /share <friend> <track>.".to_owned();
    } else {
        text.push_str("\n\nStop watching one with /cancel <id>.");
    }
    Ok(vec![Reply::text(text)])
}

pub async fn cancel(ctx: &Ctx, args: Args) -> HandlerResult {
    let sharing = sharing(ctx)?;
    let id = args.str("share").unwrap_or_default().trim();
    let found = ctx
        .core
        .store
        .share_by_short_id(id)
        .await?
        .filter(|s| s.sharer_id == ctx.person.user_id);
    let Some(share) = found else {
        return Err(CommandError::user(format!(
            "You have no share {id}. /shares lists yours."
        )));
    };
    if sharing.cancel(share.id).await? {
        Ok(vec![Reply::text(format!(
            "Done: I stopped watching {}.",
            describe(&share)
        ))])
    } else {
        let why = match share.status.as_str() {
            status::PLAYED => "they played it",
            status::EXPIRED => "I had already stopped watching it",
            status::CANCELLED => "you cancelled it",
            _ => "it just ended",
        };
        Ok(vec![Reply::text(format!(
            "That share is already over: {why}."
        ))])
    }
}
