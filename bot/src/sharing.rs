//! Song sharing: a share is stored, the friend gets the track, and play checks run on the
//! `[sharing]` schedule (first at `max(track length, min_first_check)`, then every
//! `fast_interval` for `fast_for`, then every `slow_interval` until `give_up_after`).
//!
//! Each *friend* with pending shares has one apalis job ([`PlayCheck`]), due at the
//! earliest next check of the shares to them (`friend_watches.check_at`). The job claims
//! that time with a conditional update (a stale or duplicate job finds it gone and does
//! nothing), reads the friend's recently-played history once, after a per-friend cursor,
//! and settles every share it answers: a played share is finished (whether due or not),
//! and each due share's `next_check_at` moves on the schedule, in one statement per
//! distinct next time. Then it makes the friend's job due at the earliest next check of
//! the shares still pending and enqueues that one job. A new share (or a resumed watch)
//! whose first check comes before the friend's job brings the job forward. So Spotify
//! calls, and jobs, grow with the friends due, not the shares.
//!
//! A pending share is never left without a check: the job time is in the database
//! before its job is enqueued, a run holds its claim as a lease (the time a retry is
//! due, should it die), and [`Sharing::reconcile`] (at start and every
//! `reconcile_every`) enqueues every friend's job not known to be enqueued and gives a
//! job to any friend whose pending shares lack one. Every share state change is a
//! conditional update: a retried or duplicated job notifies nobody twice, and the
//! notice is recorded in the same transaction as the change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;

use crate::ids::now_millis;
use crate::jobs::{CheckQueue, PlayCheck};
use crate::message::{Button, Outgoing, Reply};
use crate::outbox::Outbox;
use crate::spotify::{Spotify, SpotifyError};
use crate::store::entities::share::{self, status};
use crate::store::entities::{friend_watch, user};
use crate::store::{NewMessage, Store, StoreError};
use crate::when::{ago, span};

/// The `[sharing]` schedule.
#[derive(Clone, Debug)]
pub struct SharingSettings {
    pub min_first_check: Duration,
    pub fast_interval: Duration,
    pub fast_for: Duration,
    pub slow_interval: Duration,
    pub give_up_after: Duration,
    /// How often the worker looks for checks without a job and for unwatched shares past
    /// `give_up_after` ([`Sharing::tend`]: reconcile, expiry).
    pub reconcile_every: Duration,
}

impl Default for SharingSettings {
    fn default() -> Self {
        Self {
            min_first_check: Duration::from_secs(30),
            fast_interval: Duration::from_secs(5 * 60),
            fast_for: Duration::from_secs(3600),
            slow_interval: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(7 * 24 * 3600),
            reconcile_every: Duration::from_secs(60),
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl SharingSettings {
    /// The first check: after the song could have been heard once.
    pub fn first_check(&self, shared_at: i64, duration_ms: i64) -> i64 {
        shared_at + duration_ms.max(ms(self.min_first_check))
    }

    /// When the watch on a share made at `shared_at` ends.
    pub fn give_up_at(&self, shared_at: i64) -> i64 {
        shared_at.saturating_add(ms(self.give_up_after))
    }

    /// The check after one that failed at `now` (Spotify refused or was unavailable),
    /// `retry_after` at the soonest, or `None` when the watch is over: a share Spotify
    /// keeps refusing still ends at its give-up time.
    pub fn retry_check(&self, shared_at: i64, now: i64, retry_after: Duration) -> Option<i64> {
        let give_up = self.give_up_at(shared_at);
        if now >= give_up {
            return None;
        }
        // Never slower than the fast schedule would have checked.
        let wait = retry_after.max(RETRY_AFTER_FAILURE.min(self.fast_interval));
        Some(now.saturating_add(ms(wait)).min(give_up))
    }

    /// The check after one made at `now`, or `None` when the watch is over.
    pub fn next_check(&self, shared_at: i64, duration_ms: i64, now: i64) -> Option<i64> {
        let give_up = self.give_up_at(shared_at);
        if now >= give_up {
            return None;
        }
        let first = self.first_check(shared_at, duration_ms);
        let next = if now < first {
            first
        } else if now < first.saturating_add(ms(self.fast_for)) {
            now + ms(self.fast_interval)
        } else {
            now + ms(self.slow_interval)
        };
        Some(next.min(give_up))
    }

    /// How long a running check holds its friend's job: should the run die, the job is
    /// retried this long after it started (as a failed check would be).
    pub fn lease(&self) -> Duration {
        RETRY_AFTER_FAILURE.min(self.fast_interval)
    }
}

/// Retry a check this long after Spotify failed (or its `Retry-After`, when longer; or
/// `fast_interval`, when shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Why a share could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The friend has no platform we can reach them on.
    #[error("the friend can't be reached")]
    Unreachable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A share just made.
#[derive(Debug)]
pub struct Shared {
    pub share: share::Model,
    /// Whether the watch started (the friend has a working Spotify link).
    pub watched: bool,
}

/// The sharing service: one per process.
pub struct Sharing {
    settings: SharingSettings,
    store: Arc<Store>,
    outbox: Arc<Outbox>,
    spotify: Arc<Spotify>,
    queue: Arc<dyn CheckQueue>,
}

impl std::fmt::Debug for Sharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharing")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Short ids: lowercase letters and digits without look-alikes.
const SHORT_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

impl Sharing {
    pub fn new(
        settings: SharingSettings,
        store: Arc<Store>,
        outbox: Arc<Outbox>,
        spotify: Arc<Spotify>,
        queue: Arc<dyn CheckQueue>,
    ) -> Self {
        Self {
            settings,
            store,
            outbox,
            spotify,
            queue,
        }
    }

    pub fn settings(&self) -> &SharingSettings {
        &self.settings
    }

    pub fn spotify(&self) -> &Arc<Spotify> {
        &self.spotify
    }

    /// Shares a track with a friend: stores the share, sends the friend the track and
    /// schedules the first check (when the friend's Spotify is linked).
    pub async fn share(
        &self,
        sharer: &user::Model,
        friend: &user::Model,
        track: &crate::spotify::Item,
        track_id: &str,
        duration_ms: i64,
    ) -> Result<Shared, ShareError> {
        let Some(address) = self.store.notify_address(friend.id).await? else {
            return Err(ShareError::Unreachable);
        };
        let watched = self
            .store
            .spotify_link(friend.id)
            .await?
            .is_some_and(|l| l.broken_at.is_none());
        let now = now_millis();
        let mut row = share::Model {
            id: self.store.next_id(),
            short_id: String::new(),
            sharer_id: sharer.id,
            friend_id: friend.id,
            track_id: track_id.to_owned(),
            track_name: track.title.clone(),
            track_artist: track.by.clone(),
            track_url: track.url.clone(),
            duration_ms,
            shared_at: now,
            status: if watched {
                status::PENDING
            } else {
                status::WAITING
            }
            .to_owned(),
            next_check_at: watched.then(|| self.settings.first_check(now, duration_ms)),
            played_at: None,
            finished_at: None,
            notice_id: None,
        };
        let mut reply = Reply::text(format!(
            "@{} shared {} with you.",
            sharer.handle,
            describe(&row)
        ));
        if let Some(url) = &row.track_url {
            reply = reply.with_button(Button::link("Listen on Spotify", url));
        }
        let mut out = Outgoing::new(address, reply);
        out.user_id = Some(friend.id);
        // The friend's message gets its ids first, so the share can name it (`/shares`
        // says when it is held, e.g. outside Messenger's 24-hour window).
        let (notice, recorded) = self.outbox.rows_for(out, None, false);
        row.notice_id = recorded.last().map(|r| r.id);
        let mut tries = 0;
        loop {
            row.short_id = (0..6)
                .map(|_| char::from(SHORT_ALPHABET[rand::random_range(0..SHORT_ALPHABET.len())]))
                .collect();
            match self.store.insert_share(row.clone()).await {
                Ok(()) => break,
                Err(StoreError::Duplicate) if tries < 5 => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
        self.store.record(notice).await?;
        self.outbox.wake();
        if let Some(due_at) = row.next_check_at {
            self.bring_forward(friend.id, due_at, now - 1).await;
        }
        tracing::info!(
            share = row.id,
            sharer = sharer.id,
            friend = friend.id,
            watched,
            "shared"
        );
        Ok(Shared {
            share: row,
            watched,
        })
    }

    /// Stops watching a share (its sharer asked); `false` when it was already over.
    pub async fn cancel(&self, share_id: i64) -> Result<bool, StoreError> {
        self.store
            .finish_share(share_id, status::CANCELLED, None, now_millis(), Vec::new())
            .await
    }

    /// Starts watching the shares waiting for this friend to link Spotify (or paused by a
    /// broken link): their next check is due now.
    pub async fn resume(&self, friend_id: i64) -> Result<usize, StoreError> {
        let now = now_millis();
        let resumed = self.store.resume_shares_to(friend_id, now).await?;
        if let Some(oldest) = resumed.iter().map(|s| s.shared_at).min() {
            self.bring_forward(friend_id, now, oldest - 1).await;
            tracing::info!(friend = friend_id, shares = resumed.len(), "watch resumed");
        }
        Ok(resumed.len())
    }

    /// Enqueues the friends' jobs that are not known to be enqueued (the process stopped,
    /// or the queue failed, between deciding a job and enqueuing it; or a run died
    /// holding its lease), after giving a job time to every friend whose pending shares
    /// have none before their earliest check. Duplicates are harmless: only one job per
    /// due time claims it. How many jobs were enqueued.
    pub async fn reconcile(&self) -> Result<usize, StoreError> {
        let healed = self.store.heal_friend_checks().await?;
        if healed > 0 {
            tracing::info!(
                friends = healed,
                "pending shares without a friend's job: given one"
            );
        }
        let mut total = 0;
        loop {
            let missing = self.store.unscheduled_friend_checks(500).await?;
            if missing.is_empty() {
                return Ok(total);
            }
            let n = missing.len();
            let checks = missing
                .iter()
                .map(|&(friend_id, due_at)| PlayCheck { friend_id, due_at })
                .collect();
            if let Err(e) = self.queue.enqueue_many(checks).await {
                // The queue is down: the next reconcile tries again.
                tracing::error!(error = %e, "could not enqueue play checks");
                return Ok(total);
            }
            self.store.mark_friend_checks_scheduled(&missing).await?;
            total += n;
            if n < 500 {
                return Ok(total);
            }
        }
    }

    /// The worker's periodic round, every `reconcile_every`: enqueues checks that have no
    /// job ([`Sharing::reconcile`]) and ends the unwatched shares past their give-up time
    /// ([`Sharing::expire_unwatched`]). Idempotent: a round that finds nothing does nothing.
    pub async fn tend(&self) -> Result<(usize, usize), StoreError> {
        let reconciled = self.reconcile().await?;
        let expired = self.expire_unwatched(now_millis()).await?;
        Ok((reconciled, expired))
    }

    /// Ends the shares nobody could watch (the friend never linked Spotify, or their
    /// link stayed broken) once `give_up_after` has passed, telling each sharer once.
    pub async fn expire_unwatched(&self, now: i64) -> Result<usize, StoreError> {
        let cutoff = now.saturating_sub(ms(self.settings.give_up_after));
        let mut total = 0;
        loop {
            let due = self.store.unwatched_shares_before(cutoff, 500).await?;
            let n = due.len();
            for share in &due {
                if self.give_up(share, now).await? {
                    total += 1;
                }
            }
            if n < 500 {
                return Ok(total);
            }
        }
    }

    /// Makes the friend's job due at `due_at` unless it already is due sooner, and then
    /// enqueues it. A failure is logged: [`Sharing::reconcile`] repairs it.
    async fn bring_forward(&self, friend_id: i64, due_at: i64, cursor_ms: i64) {
        match self
            .store
            .bring_friend_check_forward(friend_id, due_at, cursor_ms)
            .await
        {
            Ok(true) => self.schedule(friend_id, due_at).await,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, friend = friend_id, "could not bring the friend's play check forward; it will be reconciled");
            }
        }
    }

    /// Enqueues the friend's job due at `due_at` and records that it is. A failure is
    /// logged: the job time is in the database, and [`Sharing::reconcile`] enqueues it.
    async fn schedule(&self, friend_id: i64, due_at: i64) {
        match self.queue.enqueue(PlayCheck { friend_id, due_at }).await {
            Ok(()) => {
                if let Err(e) = self
                    .store
                    .mark_friend_check_scheduled(friend_id, due_at)
                    .await
                {
                    tracing::warn!(error = %e, friend = friend_id, "could not mark a check scheduled; it will be reconciled");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, friend = friend_id, "could not enqueue a play check; it will be reconciled");
            }
        }
    }

    /// Runs one friend's play check (the job). `Err` only for storage failures; the
    /// friend's check is then due again after the lease ([`SharingSettings::lease`]).
    pub async fn run_check(&self, check: PlayCheck) -> Result<(), StoreError> {
        let now = now_millis();
        let lease = now.saturating_add(ms(self.settings.lease()));
        let Some(watch) = self
            .store
            .claim_friend_check(check.friend_id, check.due_at, lease)
            .await?
        else {
            tracing::debug!(
                friend = check.friend_id,
                due_at = check.due_at,
                "check superseded"
            );
            return Ok(());
        };
        // The shares due by the job's time are its to settle, even should the queue run
        // it a moment early.
        let read = match self.sweep(&watch, now, now.max(check.due_at)).await {
            Ok(read) => read,
            Err(e) => {
                // The claim holds the lease: have the retry enqueued now rather than at
                // the next reconcile (a duplicate of it is harmless).
                self.schedule(check.friend_id, lease).await;
                return Err(e);
            }
        };
        match self
            .store
            .end_friend_check(check.friend_id, lease, read)
            .await?
        {
            Some(Some(next)) => self.schedule(check.friend_id, next).await,
            Some(None) => tracing::debug!(friend = check.friend_id, "nothing left to watch"),
            // A share brought the friend's check forward meanwhile: that job goes on.
            None => tracing::debug!(friend = check.friend_id, "check taken over"),
        }
        Ok(())
    }

    /// Settles the friend's shares at `now`: reads their new plays (when any share is
    /// due by `due_by`), finishes every pending share that was played and moves each due
    /// one's next check (or gives it up). The history read, `(cursor, when)`, to record.
    async fn sweep(
        &self,
        watch: &friend_watch::Model,
        now: i64,
        due_by: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let friend_id = watch.friend_id;
        let pending = self.store.pending_shares_to(friend_id).await?;
        let due: Vec<&share::Model> = pending
            .iter()
            .filter(|s| s.next_check_at.is_some_and(|t| t <= due_by))
            .collect();
        if due.is_empty() {
            // A cancelled share's check, say: nothing to ask Spotify about.
            return Ok(None);
        }
        let after = watch.cursor_ms;
        let started = now_millis();
        let plays = match self.spotify.recently_played(friend_id, after).await {
            Ok(plays) => plays,
            Err(SpotifyError::NotLinked | SpotifyError::LinkBroken) => {
                self.pause(friend_id).await?;
                return Ok(None);
            }
            Err(SpotifyError::Store(e)) => return Err(e),
            Err(e) => {
                let retry_after = match e {
                    SpotifyError::RateLimited(d) => d,
                    _ => Duration::ZERO,
                };
                tracing::warn!(error = %e, friend = friend_id, shares = due.len(), "play check failed; rescheduled");
                self.settle(
                    &due,
                    |s| self.settings.retry_check(s.shared_at, now, retry_after),
                    now,
                )
                .await?;
                return Ok(None);
            }
        };
        let mut played = Vec::new();
        for share in &pending {
            let hit = plays
                .iter()
                .find(|p| p.track_id == share.track_id && p.played_at >= share.shared_at);
            if let Some(play) = hit {
                // Finished either way: by this run or by a racing one.
                self.finish_played(share, play.played_at).await?;
                played.push(share.id);
            }
        }
        let unplayed: Vec<&share::Model> = due
            .into_iter()
            .filter(|s| !played.contains(&s.id))
            .collect();
        self.settle(
            &unplayed,
            |s| self.settings.next_check(s.shared_at, s.duration_ms, now),
            now,
        )
        .await?;
        let cursor = plays
            .iter()
            .map(|p| p.played_at)
            .max()
            .unwrap_or(after)
            .max(after);
        tracing::debug!(
            friend = friend_id,
            plays = plays.len(),
            pending = pending.len(),
            played = played.len(),
            "friend swept"
        );
        Ok(Some((cursor, started)))
    }

    /// Moves each share's next check to `next(share)`, one statement per distinct time
    /// (shares in the same phase of the schedule share one), or gives it up at `now`
    /// when its watch is over.
    async fn settle(
        &self,
        shares: &[&share::Model],
        next: impl Fn(&share::Model) -> Option<i64>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut moves: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for share in shares {
            match next(share) {
                Some(at) => moves.entry(at).or_default().push(share.id),
                None => {
                    self.give_up(share, now).await?;
                }
            }
        }
        for (at, ids) in moves {
            self.store.move_checks(&ids, at).await?;
        }
        Ok(())
    }

    async fn finish_played(
        &self,
        share: &share::Model,
        played_at: i64,
    ) -> Result<bool, StoreError> {
        let friend = self.handle(share.friend_id).await?;
        let after = span(TimeDelta::milliseconds(played_at - share.shared_at));
        let text = format!(
            "@{friend} played {}, {after} after you shared it.",
            describe(share)
        );
        let notices = self.notice(share.sharer_id, text).await?;
        let done = self
            .store
            .finish_share(
                share.id,
                status::PLAYED,
                Some(played_at),
                now_millis(),
                notices,
            )
            .await?;
        if done {
            self.outbox.wake();
            tracing::info!(share = share.id, "share played");
        }
        Ok(done)
    }

    /// Ends a share as expired and tells its sharer why; `false` (and nobody told) when it
    /// was already over.
    async fn give_up(&self, share: &share::Model, now: i64) -> Result<bool, StoreError> {
        let friend = self.handle(share.friend_id).await?;
        let what = describe(share);
        let shared = ago(TimeDelta::milliseconds(now - share.shared_at));
        let unseen = |why: String| {
            format!(
                "{why}, so I couldn't see whether they played {what}, which you shared \
                 {shared}. I stopped watching."
            )
        };
        let text = match share.status.as_str() {
            status::WAITING => unseen(format!("@{friend} never linked Spotify")),
            status::PAUSED => unseen(format!("@{friend}'s Spotify link stayed broken")),
            _ => format!(
                "@{friend} hasn't played {what}, which you shared {shared}, so I stopped watching."
            ),
        };
        let notices = self.notice(share.sharer_id, text).await?;
        let done = self
            .store
            .finish_share(share.id, status::EXPIRED, None, now, notices)
            .await?;
        if done {
            self.outbox.wake();
            tracing::info!(share = share.id, was = %share.status, "share expired");
        }
        Ok(done)
    }

    /// The friend's Spotify link is gone or broken: pause the watch on every share to
    /// them and ask them, once, to link again.
    async fn pause(&self, friend_id: i64) -> Result<(), StoreError> {
        let paused = self.store.pause_shares_to(friend_id).await?;
        if paused == 0 {
            return Ok(());
        }
        tracing::info!(
            friend = friend_id,
            paused,
            "watch paused: Spotify link broken"
        );
        let notices = self
            .notice(
                friend_id,
                "I can't see your Spotify any more, so I can't tell your friends when you play \
                 what they shared. Send /link to connect it again."
                    .to_owned(),
            )
            .await?;
        self.store.record(notices).await?;
        self.outbox.wake();
        Ok(())
    }

    /// The outbox rows telling `user_id` something, on their notification platform (none
    /// when they can't be reached anywhere).
    async fn notice(&self, user_id: i64, text: String) -> Result<Vec<NewMessage>, StoreError> {
        let Some(to) = self.store.notify_address(user_id).await? else {
            tracing::info!(user_id, "nobody to tell: no reachable platform");
            return Ok(Vec::new());
        };
        let mut out = Outgoing::new(to, Reply::text(text));
        out.user_id = Some(user_id);
        Ok(self.outbox.rows_for(out, None, false).0)
    }

    async fn handle(&self, user_id: i64) -> Result<String, StoreError> {
        Ok(self
            .store
            .user(user_id)
            .await?
            .map_or_else(|| "someone".to_owned(), |u| u.handle))
    }
}

/// `‘Song’ by Artist`.
pub fn describe(share: &share::Model) -> String {
    format!("‘{}’ by {}", share.track_name, share.track_artist)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_goes_fast_then_slow_then_gives_up() {
        let s = SharingSettings::default();
        let min = 60_000;
        let t0 = 1_000_000;
        // A 3-minute song: first check after 3 minutes; a 10-second one: after 30 s.
        assert_eq!(s.first_check(t0, 180_000), t0 + 3 * min);
        assert_eq!(s.first_check(t0, 10_000), t0 + 30_000);
        let first = s.first_check(t0, 180_000);
        assert_eq!(s.next_check(t0, 180_000, t0), Some(first));
        assert_eq!(s.next_check(t0, 180_000, first), Some(first + 5 * min));
        let late = first + 61 * min;
        assert_eq!(s.next_check(t0, 180_000, late), Some(late + 60 * min));
        let week = 7 * 24 * 60 * min;
        assert_eq!(
            s.next_check(t0, 180_000, t0 + week - 10 * min),
            Some(t0 + week),
            "the last check is at give-up time"
        );
        assert_eq!(s.next_check(t0, 180_000, t0 + week), None);
    }

    #[test]
    fn failed_checks_retry_within_the_watch() {
        let s = SharingSettings::default();
        let t0 = 1_000_000;
        let week = 7 * 24 * 3600 * 1000;
        // A minute after a failure, or Spotify's Retry-After when longer.
        assert_eq!(s.retry_check(t0, t0, Duration::ZERO), Some(t0 + 60_000));
        assert_eq!(
            s.retry_check(t0, t0, Duration::from_secs(300)),
            Some(t0 + 300_000)
        );
        // Never past the give-up time, and none at or after it.
        assert_eq!(
            s.retry_check(t0, t0 + week - 10_000, Duration::ZERO),
            Some(t0 + week)
        );
        assert_eq!(s.retry_check(t0, t0 + week, Duration::ZERO), None);
        // A faster schedule retries at its own pace.
        let fast = SharingSettings {
            fast_interval: Duration::from_secs(5),
            ..SharingSettings::default()
        };
        assert_eq!(fast.retry_check(t0, t0, Duration::ZERO), Some(t0 + 5_000));
    }
}
