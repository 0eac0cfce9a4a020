//! Friends and song sharing end to end, against the fake Spotify (and the fake Telegram
//! for a second platform): invite/accept, `/share`, the apalis play checks on a short
//! configured schedule (the week-long schedule runs in seconds), the played and give-up
//! notices exactly once, cancel, non-friends, a friend who links later, a broken link,
//! coalesced Spotify calls and one job per friend (not per share), restarts and
//! reconcile, superseded and duplicate jobs, and `run_at` honoured to the second.

use std::time::{Duration, Instant};

use chrono::Utc;
use sea_orm::{ConnectionTrait, DbBackend};
use segue_bot::jobs::PlayCheck;

use crate::fake_spotify::{Failure, FakeSpotify};
use crate::fake_telegram::FakeTelegram;
use crate::helpers::{
    Backend, SseReader, TestApp, TestDb, backend_tests, eventually, spawn_app_at_own_url,
};

backend_tests!(
    share_across_platforms_and_hear_it_played,
    give_up_cancel_and_non_friends,
    checks_for_one_friend_share_one_spotify_call,
    one_job_settles_every_due_share_to_a_friend,
    a_share_due_before_the_friends_job_is_checked_on_time,
    friend_links_later_and_broken_links_pause,
    restart_and_reconcile_keep_every_share_watched,
    reconcile_also_runs_while_the_app_runs,
    a_share_spotify_keeps_refusing_expires,
    failed_checks_are_rescheduled_and_still_notice_the_play,
    waiting_shares_expire_and_the_sharer_is_told_once,
    a_retried_check_notifies_once,
    run_at_is_honoured_to_the_second,
    the_job_board_shows_play_checks_to_admins_only,
);

/// Short songs, so the first check isn't a whole song away.
const SHORT: &str = "1ShortSongForTests0001";
const OTHER: &str = "1ShortSongForTests0002";
const THIRD: &str = "1ShortSongForTests0003";
/// An hour long: its first check is an hour after sharing.
const LONG: &str = "1LongSongForTests00001";

fn short_schedule(c: &mut segue::Config) {
    c.sharing.min_first_check = Duration::from_secs(1);
    c.sharing.fast_interval = Duration::from_secs(1);
    c.sharing.fast_for = Duration::from_secs(2);
    c.sharing.slow_interval = Duration::from_secs(2);
    c.sharing.give_up_after = Duration::from_secs(6);
}

async fn fake() -> FakeSpotify {
    let fake = FakeSpotify::start().await;
    fake.add_track(SHORT, "Short Song", "The Testers", 1000);
    fake.add_track(OTHER, "Zebra Crossing", "The Testers", 1000);
    fake.add_track(THIRD, "Third Time", "The Testers", 1000);
    fake.add_track(LONG, "Long Song", "The Testers", 3_600_000);
    fake
}

async fn spawn(db: &TestDb, fake: &FakeSpotify) -> TestApp {
    spawn_with(db, fake, |_| {}).await
}

/// The app on the short schedule against the fake Spotify; `more` adjusts the rest.
async fn spawn_with(
    db: &TestDb,
    fake: &FakeSpotify,
    more: impl FnOnce(&mut segue::Config) + Send + 'static,
) -> TestApp {
    let fake = fake.clone();
    spawn_app_at_own_url(db, move |c| {
        fake.configure(c);
        short_schedule(c);
        more(c);
    })
    .await
}

/// Follows a `/link` URL in a browser.
async fn follow(url: &str) {
    let res = reqwest::get(url).await.unwrap();
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

fn url_in(text: &str) -> String {
    let start = text.find("http").unwrap();
    text[start..].split_whitespace().next().unwrap().to_owned()
}

/// A console user with Spotify linked as `spotify_id`, and their event stream.
async fn linked(app: &TestApp, fake: &FakeSpotify, name: &str) -> (String, SseReader) {
    let spotify_id = format!("{name}_sp");
    fake.add_user(&spotify_id, name);
    let token = app.session(name).await;
    fake.authorize_as(&spotify_id);
    follow(&url_in(&app.reply(&token, "/link").await)).await;
    let mut events = app.events(&token, None).await;
    assert!(
        notice(
            &mut events,
            "Done: your Spotify account",
            Duration::from_secs(10)
        )
        .await
        .is_some()
    );
    (token, events)
}

/// `a` invites, `b` accepts.
async fn befriend(app: &TestApp, a: &str, b: &str) {
    let lines = app.say(a, "/invite").await;
    let accept = lines.last().unwrap().clone();
    assert!(accept.starts_with("/accept "), "{lines:?}");
    let reply = app.reply(b, &accept).await;
    assert!(reply.contains("are friends now"), "{reply}");
}

/// The first event whose text starts with `prefix`, within `wait` (the console's stream
/// carries the user's replies too; they are skipped).
async fn notice(events: &mut SseReader, prefix: &str, wait: Duration) -> Option<String> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let e = events.next(left).await?;
        let text = e.data["text"].as_str().unwrap_or_default();
        if text.starts_with(prefix) {
            return Some(text.to_owned());
        }
    }
}

async fn share_status(app: &TestApp, short: &str) -> String {
    share_row(app, short).await.status
}

async fn share_row(app: &TestApp, short: &str) -> segue_bot::store::entities::share::Model {
    app.core
        .store
        .share_by_short_id(short)
        .await
        .unwrap()
        .unwrap()
}

const RECENTLY_PLAYED: &str = "/v1/me/player/recently-played";

/// The sharer's give-up notice starting with `prefix`: not before give_up_after (6 s)
/// from `started`, the share expired, and told once (still once 2 s later).
async fn gave_up_once(
    app: &TestApp,
    events: &mut SseReader,
    prefix: &str,
    started: Instant,
    short: &str,
) -> String {
    let text = notice(events, prefix, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("the give-up notice {prefix:?}"));
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "not before give_up_after"
    );
    assert_eq!(share_status(app, short).await, "expired");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let like = prefix.replace('\'', "''");
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM messages WHERE text LIKE '{like}%'"
        ))
        .await,
        1,
        "told once"
    );
    text
}

/// The `WHERE` condition on apalis's table picking a friend's play-check jobs (due at
/// `due_at`, when given).
fn jobs_of(db: &impl ConnectionTrait, friend_id: i64, due_at: Option<i64>) -> String {
    let queue = segue_jobs::play_check::QUEUE;
    let postgres = db.get_database_backend() == DbBackend::Postgres;
    let field = |f: &str| {
        if postgres {
            format!("(convert_from(job, 'UTF8')::jsonb ->> '{f}')::bigint")
        } else {
            format!("json_extract(CAST(job AS TEXT), '$.{f}')")
        }
    };
    let table = if postgres { "apalis.jobs" } else { "Jobs" };
    let mut sql = format!(
        "FROM {table} WHERE job_type = '{queue}' AND {} = {friend_id}",
        field("friend_id")
    );
    if let Some(due_at) = due_at {
        sql.push_str(&format!(" AND {} = {due_at}", field("due_at")));
    }
    sql
}

/// Deletes a friend's play-check jobs from apalis's own table, as if they had never been
/// enqueued; how many there were.
async fn drop_jobs(db: &impl ConnectionTrait, friend_id: i64) -> u64 {
    let sql = format!("DELETE {}", jobs_of(db, friend_id, None));
    db.execute_unprepared(&sql).await.unwrap().rows_affected()
}

/// Forgets that a friend's check was enqueued, and drops their jobs: what a failed
/// enqueue (or a crash before it) leaves behind.
async fn lose_jobs(db: &impl ConnectionTrait, friend_id: i64) {
    assert!(
        drop_jobs(db, friend_id).await >= 1,
        "the friend had a job in apalis's table"
    );
    db.execute_unprepared(&format!(
        "UPDATE friend_watches SET check_scheduled = false WHERE friend_id = {friend_id}"
    ))
    .await
    .unwrap();
}

/// The short id in a `/share` confirmation ("… /cancel abc123").
fn short_id(confirmation: &str) -> String {
    confirmation
        .rsplit("/cancel ")
        .next()
        .unwrap()
        .trim()
        .to_owned()
}

async fn share_across_platforms_and_hear_it_played(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let tg = FakeTelegram::start().await;
    let app = {
        let tg = tg.clone();
        spawn_with(&db, &fake, move |c| {
            c.telegram.token = segue_bot::Secret::new(tg.token.clone());
            c.telegram.api_url = tg.url.parse().unwrap();
        })
        .await
    };
    // Alice on the web console, Bob on Telegram; both link Spotify.
    let (alice, mut alice_events) = linked(&app, &fake, "alice").await;
    fake.add_user("bob_sp", "Bob");
    fake.authorize_as("bob_sp");
    tg.push_update(crate::telegram::message(1, 77, 77, "/handle bob"));
    tg.push_update(crate::telegram::message(2, 77, 77, "/link"));
    tg.wait_for("the link", |f| f.sent_to(77).len() == 2).await;
    follow(&url_in(&tg.sent_to(77)[1])).await;
    tg.wait_for("linked", |f| f.sent_to(77).len() == 3).await;

    // Not friends yet: no sharing.
    assert!(
        app.reply(&alice, &format!("/share bob spotify:track:{SHORT}"))
            .await
            .contains("isn't your friend yet")
    );
    let lines = app.say(&alice, "/invite").await;
    tg.push_update(crate::telegram::message(3, 77, 77, lines.last().unwrap()));
    tg.wait_for("accepted", |f| {
        f.sent_to(77).iter().any(|t| t.contains("friends now"))
    })
    .await;
    assert_eq!(
        notice(&mut alice_events, "@bob accepted", Duration::from_secs(10))
            .await
            .unwrap(),
        "@bob accepted your invite: you're friends now. Share a song with /share bob <track>."
    );
    assert_eq!(app.reply(&alice, "/friends").await, "Your friends: @bob");

    // Share by link (with ?si= and a locale path); Bob gets it on Telegram.
    let confirmation = app
        .reply(
            &alice,
            &format!("/share @bob https://open.spotify.com/intl-de/track/{SHORT}?si=x1"),
        )
        .await;
    assert!(
        confirmation.starts_with(
            "Shared ‘Short Song’ by The Testers with @bob. I'll tell you when they play it."
        ),
        "{confirmation}"
    );
    tg.wait_for("the shared track", |f| {
        f.sent_to(77).iter().any(|t| t.contains("@alice shared"))
    })
    .await;
    let got = tg
        .calls("sendMessage")
        .into_iter()
        .find(|c| {
            c.params["text"]
                .as_str()
                .unwrap_or("")
                .contains("@alice shared")
        })
        .unwrap();
    assert_eq!(
        got.params["text"],
        "@alice shared ‘Short Song’ by The Testers with you."
    );
    assert_eq!(
        got.params["reply_markup"]["inline_keyboard"][0][0]["url"],
        format!("https://open.spotify.com/track/{SHORT}")
    );

    // Bob plays it; the check notices; Alice hears it once.
    fake.record_play("bob_sp", SHORT, Utc::now());
    let played = notice(&mut alice_events, "@bob played", Duration::from_secs(15))
        .await
        .expect("the played notice");
    assert_eq!(
        played,
        "@bob played ‘Short Song’ by The Testers, less than a minute after you shared it."
    );
    let short = short_id(&confirmation);
    assert_eq!(share_status(&app, &short).await, "played");
    // Told once, even though checks kept coming for a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM messages WHERE text LIKE '@bob played%'")
            .await,
        1
    );
    let shares = app.reply(&alice, "/shares").await;
    assert!(
        shares.contains("to @bob") && shares.contains("played"),
        "{shares}"
    );
    tg.push_update(crate::telegram::message(4, 77, 77, "/shares"));
    tg.wait_for("bob's shares", |f| {
        f.sent_to(77)
            .iter()
            .any(|t| t.starts_with("Shared with you:"))
    })
    .await;
    app.stop().await;
}

async fn give_up_cancel_and_non_friends(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;
    let (carol, mut carol_events) = linked(&app, &fake, "carol").await;
    let (dan, _dan_events) = linked(&app, &fake, "dan").await;
    let (_erin, _) = linked(&app, &fake, "erin").await;
    befriend(&app, &carol, &dan).await;

    assert!(
        app.reply(&carol, &format!("/share erin spotify:track:{SHORT}"))
            .await
            .contains("@erin isn't your friend yet")
    );
    assert!(
        app.reply(&carol, "/share nobody something")
            .await
            .starts_with("I don't know @nobody.")
    );
    assert!(
        app.reply(
            &carol,
            "/share dan https://open.spotify.com/album/1A2GTWGtFfWp7KSQTwWOyo"
        )
        .await
        .starts_with("Usage: /share <friend> <track>")
    );
    assert!(
        app.reply(&carol, "/share carol x")
            .await
            .contains("yourself")
    );

    // Search words: the first hit is shared, and named.
    let wrong = app.reply(&carol, "/share dan zebra crossing").await;
    assert!(wrong.starts_with("Shared ‘Zebra Crossing’"), "{wrong}");
    let cancelled = app
        .reply(&carol, &format!("/cancel {}", short_id(&wrong)))
        .await;
    assert_eq!(
        cancelled,
        "Done: I stopped watching ‘Zebra Crossing’ by The Testers."
    );
    assert_eq!(
        app.reply(&carol, &format!("/cancel {}", short_id(&wrong)))
            .await,
        "That share is already over: you cancelled it."
    );
    assert!(
        app.reply(&dan, &format!("/cancel {}", short_id(&wrong)))
            .await
            .contains("You have no share")
    );

    // Never played: after give_up_after (6 s here) Carol hears it once.
    let kept = app.reply(&carol, &format!("/share dan {SHORT}")).await;
    assert!(kept.contains("Wrong one?"), "{kept}");
    let started = Instant::now();
    let gave_up = notice(
        &mut carol_events,
        "@dan hasn't played",
        Duration::from_secs(20),
    )
    .await
    .expect("the give-up notice");
    assert_eq!(
        gave_up,
        "@dan hasn't played ‘Short Song’ by The Testers, which you shared just now, so I \
         stopped watching."
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "not before give_up_after"
    );
    assert_eq!(share_status(&app, &short_id(&kept)).await, "expired");
    assert_eq!(share_status(&app, &short_id(&wrong)).await, "cancelled");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM messages WHERE text LIKE '@dan hasn''t played%'")
            .await,
        1,
        "told once"
    );
    // The schedule: first check after 1 s, fast every 1 s for 2 s, then every 2 s.
    // Nominally 4 or 5; fewer only when the machine is slow, more would mean the
    // schedule is wrong.
    let calls = fake.calls("/v1/me/player/recently-played");
    assert!((2..=7).contains(&calls), "{calls} checks");
    app.stop().await;
}

async fn checks_for_one_friend_share_one_spotify_call(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    // Time for all five shares to be made before the first check is due.
    let app = spawn_with(&db, &fake, |c| {
        c.sharing.min_first_check = Duration::from_secs(4);
    })
    .await;
    let mut sharers = Vec::new();
    let (fay, _) = linked(&app, &fake, "fay").await;
    for name in ["gus", "hal", "ida", "jon", "kim"] {
        let (token, events) = linked(&app, &fake, name).await;
        befriend(&app, &fay, &token).await;
        sharers.push((token, events));
    }
    // Five shares to Fay, due together: one history call answers all of them.
    let before = fake.calls("/v1/me/player/recently-played");
    let line = format!("/share fay {SHORT}");
    let shares: Vec<_> = sharers.iter().map(|(t, _)| app.reply(t, &line)).collect();
    for s in futures::future::join_all(shares).await {
        assert!(s.starts_with("Shared"), "{s}");
    }
    fake.record_play("fay_sp", SHORT, Utc::now());
    for (_, events) in &mut sharers {
        let played = notice(events, "@fay played", Duration::from_secs(15)).await;
        assert!(played.unwrap().starts_with("@fay played ‘Short Song’"));
    }
    let calls = fake.calls("/v1/me/player/recently-played") - before;
    assert!(
        calls <= 2,
        "{calls} Spotify calls for 5 shares due together"
    );
    app.stop().await;
}

async fn friend_links_later_and_broken_links_pause(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;
    let (lea, mut lea_events) = linked(&app, &fake, "lea").await;
    let max = app.session("max").await;
    let mut max_events = app.events(&max, None).await;
    befriend(&app, &lea, &max).await;

    // Max hasn't linked: delivered, not watched.
    let shared = app.reply(&lea, &format!("/share max {SHORT}")).await;
    assert!(shared.contains("@max hasn't linked Spotify"), "{shared}");
    assert!(
        notice(
            &mut max_events,
            "@lea shared ‘Short Song’",
            Duration::from_secs(10)
        )
        .await
        .is_some()
    );
    assert_eq!(share_status(&app, &short_id(&shared)).await, "waiting");
    assert!(
        app.reply(&lea, "/shares")
            .await
            .contains("waiting for @max to link Spotify")
    );

    // Max links: the watch starts, the play is noticed.
    fake.add_user("max_sp", "Max");
    fake.authorize_as("max_sp");
    fake.record_play("max_sp", SHORT, Utc::now());
    follow(&url_in(&app.reply(&max, "/link").await)).await;
    assert!(
        notice(
            &mut lea_events,
            "@max played ‘Short Song’",
            Duration::from_secs(15)
        )
        .await
        .is_some()
    );

    // A broken link pauses the watch, and Max is asked once to link again.
    fake.revoke("max_sp");
    let broken = app.reply(&lea, &format!("/share max {OTHER}")).await;
    let asked = notice(
        &mut max_events,
        "I can't see your Spotify",
        Duration::from_secs(15),
    )
    .await
    .unwrap();
    assert!(
        asked.ends_with("Send /link to connect it again."),
        "{asked}"
    );
    assert_eq!(share_status(&app, &short_id(&broken)).await, "paused");
    assert!(
        app.reply(&lea, "/shares")
            .await
            .contains("@max's Spotify link is broken")
    );
    app.stop().await;
}

async fn restart_and_reconcile_keep_every_share_watched(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;
    let (ned, _) = linked(&app, &fake, "ned").await;
    let (oli, _) = linked(&app, &fake, "oli").await;
    let (pat, _) = linked(&app, &fake, "pat").await;
    let (ria, _) = linked(&app, &fake, "ria").await;
    befriend(&app, &ned, &oli).await;
    befriend(&app, &ned, &pat).await;
    befriend(&app, &ned, &ria).await;
    // Two friends: a friend's job sweeps every share to them, so share two is to someone
    // else and nothing but that friend's own (reconciled) job can settle it.
    let one = short_id(&app.reply(&ned, &format!("/share oli {SHORT}")).await);
    let two = short_id(&app.reply(&ned, &format!("/share pat {OTHER}")).await);
    let pat_id = share_row(&app, &two).await.friend_id;
    let three = short_id(&app.reply(&ned, &format!("/share ria {THIRD}")).await);
    let ria_id = share_row(&app, &three).await.friend_id;
    app.stop().await;

    // The process "died" after storing share two but before enqueuing Pat's job: forget
    // that it was scheduled, and drop Pat's jobs from apalis's table.
    let db_conn = sea_orm::Database::connect(&db.url).await.unwrap();
    lose_jobs(&db_conn, pat_id).await;
    // And it "died" after storing share three but before recording Ria's job at all: no
    // watch row, no job. Reconcile must give Ria one from her pending share.
    drop_jobs(&db_conn, ria_id).await;
    db_conn
        .execute_unprepared(&format!(
            "DELETE FROM friend_watches WHERE friend_id = {ria_id}"
        ))
        .await
        .unwrap();
    drop(db_conn);
    fake.record_play("oli_sp", SHORT, Utc::now());
    fake.record_play("pat_sp", OTHER, Utc::now());
    fake.record_play("ria_sp", THIRD, Utc::now());

    let app = spawn(&db, &fake).await;
    let done = eventually(Duration::from_secs(15), || async {
        share_status(&app, &one).await == "played"
            && share_status(&app, &two).await == "played"
            && share_status(&app, &three).await == "played"
    })
    .await;
    assert!(done, "every share was checked after the restart");
    // Each played notice was recorded once.
    let notices = app
        .count(
            "SELECT COUNT(*) FROM messages WHERE text LIKE '@oli played%' \
             OR text LIKE '@pat played%' OR text LIKE '@ria played%'",
        )
        .await;
    assert_eq!(notices, 3);
    app.stop().await;
}

async fn reconcile_also_runs_while_the_app_runs(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn_with(&db, &fake, |c| {
        // The first check is a few seconds off, so its job is still waiting when dropped.
        c.sharing.min_first_check = Duration::from_secs(3);
        c.sharing.give_up_after = Duration::from_secs(30);
        c.sharing.reconcile_every = Duration::from_secs(1);
    })
    .await;
    let (wes, mut wes_events) = linked(&app, &fake, "wes").await;
    let (xia, _) = linked(&app, &fake, "xia").await;
    befriend(&app, &wes, &xia).await;
    let short = short_id(&app.reply(&wes, &format!("/share xia {SHORT}")).await);
    // The enqueue "failed" while the app runs: no job, and the share says so.
    lose_jobs(app.core.store.db(), share_row(&app, &short).await.friend_id).await;
    fake.record_play("xia_sp", SHORT, Utc::now());
    // No restart: the worker's periodic reconcile enqueues the check again.
    assert!(
        notice(&mut wes_events, "@xia played", Duration::from_secs(15))
            .await
            .is_some(),
        "the share was checked again without a restart"
    );
    assert_eq!(share_status(&app, &short).await, "played");
    app.stop().await;
}

async fn a_share_spotify_keeps_refusing_expires(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;
    let (yan, mut yan_events) = linked(&app, &fake, "yan").await;
    let (zoe, _) = linked(&app, &fake, "zoe").await;
    befriend(&app, &yan, &zoe).await;
    // Every history read is refused, for good.
    fake.fail_next(RECENTLY_PLAYED, 10_000, Failure::Status(403));
    let started = Instant::now();
    let short = short_id(&app.reply(&yan, &format!("/share zoe {SHORT}")).await);
    let gave_up = gave_up_once(&app, &mut yan_events, "@zoe hasn't played", started, &short).await;
    assert!(gave_up.ends_with("so I stopped watching."), "{gave_up}");
    // No more checks after giving up.
    let calls = fake.calls(RECENTLY_PLAYED);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fake.calls(RECENTLY_PLAYED),
        calls,
        "no checks after giving up"
    );
    assert!((2..=10).contains(&calls), "{calls} checks in 6 s");
    app.stop().await;
}

async fn failed_checks_are_rescheduled_and_still_notice_the_play(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn_with(&db, &fake, |c| {
        c.sharing.give_up_after = Duration::from_secs(60);
    })
    .await;
    let (amy, mut amy_events) = linked(&app, &fake, "amy").await;
    let (bea, _) = linked(&app, &fake, "bea").await;
    befriend(&app, &amy, &bea).await;
    // The first check is rate-limited for longer than a request waits (6 s > 5 s), the
    // next meets Spotify down (three 503s), the third gets through.
    fake.fail_next(
        RECENTLY_PLAYED,
        1,
        Failure::RateLimited {
            retry_after_secs: 6,
        },
    );
    fake.fail_next(RECENTLY_PLAYED, 3, Failure::Status(503));
    let before = fake.calls(RECENTLY_PLAYED);
    let short = short_id(&app.reply(&amy, &format!("/share bea {SHORT}")).await);
    fake.record_play("bea_sp", SHORT, Utc::now());

    assert!(
        eventually(crate::helpers::WAIT, || async {
            fake.calls(RECENTLY_PLAYED) > before
        })
        .await,
        "the first check ran"
    );
    let limited_at = Instant::now();
    let limited_ms = Utc::now().timestamp_millis();
    // Still watched, next check after Retry-After (6 s from the 429, which came just
    // before `limited_ms`).
    let wait_left = eventually(crate::helpers::WAIT, || async {
        let s = share_row(&app, &short).await;
        s.status == "pending" && s.next_check_at.unwrap_or(0) > limited_ms + 4000
    })
    .await;
    assert!(
        wait_left,
        "rescheduled after Retry-After: {:?}",
        share_row(&app, &short).await
    );

    let played = notice(&mut amy_events, "@bea played", Duration::from_secs(20))
        .await
        .expect("the play is noticed at a later check");
    assert!(played.starts_with("@bea played ‘Short Song’"), "{played}");
    assert!(
        limited_at.elapsed() >= Duration::from_secs(5),
        "Retry-After honoured: {:?}",
        limited_at.elapsed()
    );
    assert_eq!(share_status(&app, &short).await, "played");
    let calls = fake.calls(RECENTLY_PLAYED) - before;
    assert!(
        calls >= 5,
        "429, three 503s, then the read that saw it: {calls}"
    );
    app.stop().await;
}

async fn waiting_shares_expire_and_the_sharer_is_told_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn_with(&db, &fake, |c| {
        c.sharing.reconcile_every = Duration::from_secs(1);
    })
    .await;
    let (cat, mut cat_events) = linked(&app, &fake, "cat").await;
    let dov = app.session("dov").await;
    befriend(&app, &cat, &dov).await;
    let started = Instant::now();
    let shared = app.reply(&cat, &format!("/share dov {SHORT}")).await;
    assert!(shared.contains("@dov hasn't linked Spotify"), "{shared}");
    let short = short_id(&shared);
    assert_eq!(share_status(&app, &short).await, "waiting");

    let expired = gave_up_once(
        &app,
        &mut cat_events,
        "@dov never linked Spotify",
        started,
        &short,
    )
    .await;
    assert_eq!(
        expired,
        "@dov never linked Spotify, so I couldn't see whether they played ‘Short Song’ by The \
         Testers, which you shared just now. I stopped watching."
    );
    app.stop().await;
}

async fn a_retried_check_notifies_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn_with(&db, &fake, |c| {
        // The first check is far off: this test runs the checks itself.
        c.sharing.min_first_check = Duration::from_secs(3600);
    })
    .await;
    let (pia, _) = linked(&app, &fake, "pia").await;
    let (quinn, _) = linked(&app, &fake, "quinn").await;
    befriend(&app, &pia, &quinn).await;
    let short = short_id(&app.reply(&pia, &format!("/share quinn {SHORT}")).await);
    fake.record_play("quinn_sp", SHORT, Utc::now());
    let share = app
        .core
        .store
        .share_by_short_id(&short)
        .await
        .unwrap()
        .unwrap();
    let watch = app
        .core
        .store
        .friend_watch(share.friend_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        watch.check_at, share.next_check_at,
        "the friend's job is the share's"
    );
    let check = PlayCheck {
        friend_id: share.friend_id,
        due_at: watch.check_at.unwrap(),
    };
    let sharing = app.core.sharing.clone().unwrap();
    let before = fake.calls(RECENTLY_PLAYED);
    // The same job three times at once, then again (a retry after a crash).
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let s = sharing.clone();
            tokio::spawn(async move { s.run_check(check).await })
        })
        .collect();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    sharing.run_check(check).await.unwrap();
    assert_eq!(share_status(&app, &short).await, "played");
    let notices = app
        .count("SELECT COUNT(*) FROM messages WHERE text LIKE '@quinn played%'")
        .await;
    assert_eq!(notices, 1);
    assert_eq!(
        fake.calls(RECENTLY_PLAYED) - before,
        1,
        "one run claimed the job; the duplicates were superseded"
    );
    app.stop().await;
}

/// Three shares to one friend: two due at different times (both past), one not due. One
/// run of the friend's job settles both due shares with one Spotify call, moves the
/// unplayed one on the schedule, leaves the one not due alone, and enqueues one job at the
/// earliest next check; the same job again, or a stale one, does nothing.
async fn one_job_settles_every_due_share_to_a_friend(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn_with(&db, &fake, |c| {
        // Nothing comes due by itself: this test runs the friend's job.
        c.sharing.min_first_check = Duration::from_secs(3600);
        c.sharing.fast_interval = Duration::from_secs(60);
        c.sharing.fast_for = Duration::from_secs(3600);
        c.sharing.slow_interval = Duration::from_secs(3600);
        c.sharing.give_up_after = Duration::from_secs(7 * 24 * 3600);
    })
    .await;
    let (fay, _) = linked(&app, &fake, "fay").await;
    let (gus, _) = linked(&app, &fake, "gus").await;
    let (hal, _) = linked(&app, &fake, "hal").await;
    let (ida, _) = linked(&app, &fake, "ida").await;
    for sharer in [&gus, &hal, &ida] {
        befriend(&app, &fay, sharer).await;
    }
    let g = short_id(&app.reply(&gus, &format!("/share fay {SHORT}")).await);
    let h = short_id(&app.reply(&hal, &format!("/share fay {OTHER}")).await);
    let i = short_id(&app.reply(&ida, &format!("/share fay {THIRD}")).await);
    let (g_row, h_row, i_row) = (
        share_row(&app, &g).await,
        share_row(&app, &h).await,
        share_row(&app, &i).await,
    );
    let fay_id = g_row.friend_id;
    let watch = app.core.store.friend_watch(fay_id).await.unwrap().unwrap();
    assert_eq!(
        watch.check_at, g_row.next_check_at,
        "one job, at the earliest check"
    );
    assert!(watch.check_scheduled);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) {}",
            jobs_of(app.core.store.db(), fay_id, None)
        ))
        .await,
        1,
        "one job for three shares"
    );

    // Gus's share was made an hour ago and is two seconds overdue (its fast phase);
    // Hal's is a second overdue; Ida's is not due. The friend's job is due with Gus's.
    let now = Utc::now().timestamp_millis();
    let hour = 3_600_000;
    let due_at = now - 2000;
    let sql = [
        format!(
            "UPDATE shares SET shared_at = {}, next_check_at = {due_at} WHERE id = {}",
            now - hour - 100_000,
            g_row.id
        ),
        format!(
            "UPDATE shares SET next_check_at = {} WHERE id = {}",
            now - 1000,
            h_row.id
        ),
        format!("UPDATE friend_watches SET check_at = {due_at} WHERE friend_id = {fay_id}"),
    ];
    for q in sql {
        app.core.store.db().execute_unprepared(&q).await.unwrap();
    }
    fake.record_play("fay_sp", OTHER, Utc::now());
    let before = fake.calls(RECENTLY_PLAYED);
    let sharing = app.core.sharing.clone().unwrap();
    let check = PlayCheck {
        friend_id: fay_id,
        due_at,
    };
    let started = Utc::now().timestamp_millis();
    sharing.run_check(check).await.unwrap();
    let ended = Utc::now().timestamp_millis();
    assert_eq!(
        fake.calls(RECENTLY_PLAYED) - before,
        1,
        "one Spotify call for the friend"
    );

    let (g_now, h_now, i_now) = (
        share_row(&app, &g).await,
        share_row(&app, &h).await,
        share_row(&app, &i).await,
    );
    assert_eq!(h_now.status, "played");
    assert_eq!(g_now.status, "pending");
    let g_next = g_now.next_check_at.unwrap();
    assert!(
        (started + 60_000..=ended + 60_000).contains(&g_next),
        "the unplayed due share is next checked a fast interval on: {g_next} vs {started}"
    );
    assert_eq!(i_now, i_row, "the share not due is untouched");
    let watch = app.core.store.friend_watch(fay_id).await.unwrap().unwrap();
    assert_eq!(
        watch.check_at,
        Some(g_next),
        "the next job: the earliest next check"
    );
    assert!(watch.check_scheduled);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) {}",
            jobs_of(app.core.store.db(), fay_id, Some(g_next))
        ))
        .await,
        1,
        "that job is enqueued"
    );

    // The same job again (a retry), and a stale one: superseded, nobody told twice.
    sharing.run_check(check).await.unwrap();
    sharing
        .run_check(PlayCheck {
            friend_id: fay_id,
            due_at: i_row.next_check_at.unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(
        fake.calls(RECENTLY_PLAYED) - before,
        1,
        "superseded jobs don't call Spotify"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM messages WHERE text LIKE '@fay played%'")
            .await,
        1
    );
    assert_eq!(share_row(&app, &g).await.next_check_at, Some(g_next));
    app.stop().await;
}

/// The friend's job is an hour off (a long song); a short song shared after it is due in
/// a second: it brings the friend's job forward, and its play is noticed on time. Then
/// the job goes back to the long song's check.
async fn a_share_due_before_the_friends_job_is_checked_on_time(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn_with(&db, &fake, |c| {
        c.sharing.give_up_after = Duration::from_secs(7200);
    })
    .await;
    let (fay, _) = linked(&app, &fake, "fay").await;
    let (gus, _) = linked(&app, &fake, "gus").await;
    let (hal, mut hal_events) = linked(&app, &fake, "hal").await;
    befriend(&app, &fay, &gus).await;
    befriend(&app, &fay, &hal).await;
    let long = short_id(&app.reply(&gus, &format!("/share fay {LONG}")).await);
    let long_row = share_row(&app, &long).await;
    let hour_off = long_row.next_check_at.unwrap();
    assert!(hour_off - Utc::now().timestamp_millis() > 3_500_000);
    let fay_id = long_row.friend_id;
    let watch = app.core.store.friend_watch(fay_id).await.unwrap().unwrap();
    assert_eq!(watch.check_at, Some(hour_off));

    let shared = Instant::now();
    let short = short_id(&app.reply(&hal, &format!("/share fay {SHORT}")).await);
    fake.record_play("fay_sp", SHORT, Utc::now());
    assert!(
        notice(&mut hal_events, "@fay played", crate::helpers::WAIT)
            .await
            .is_some(),
        "the short song's check ran before the friend's hour-off job"
    );
    assert!(
        shared.elapsed() < Duration::from_secs(20),
        "{:?}",
        shared.elapsed()
    );
    assert_eq!(share_status(&app, &short).await, "played");
    let back = eventually(crate::helpers::WAIT, || async {
        let w = app.core.store.friend_watch(fay_id).await.unwrap().unwrap();
        w.check_at == Some(hour_off) && w.check_scheduled
    })
    .await;
    assert!(back, "the friend's job is the long song's check again");
    assert_eq!(share_status(&app, &long).await, "pending");
    app.stop().await;
}

async fn run_at_is_honoured_to_the_second(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn_with(&db, &fake, |c| {
        c.sharing.min_first_check = Duration::from_secs(3);
    })
    .await;
    let (rae, _) = linked(&app, &fake, "rae").await;
    let (sam, _) = linked(&app, &fake, "sam").await;
    befriend(&app, &rae, &sam).await;
    let before = fake.calls("/v1/me/player/recently-played");
    let shared_at = Instant::now();
    app.reply(&rae, &format!("/share sam {SHORT}")).await;
    let replied_at = Instant::now();
    // Due 3 s after sharing: never earlier (counted from before the command was sent);
    // at most about two seconds late (counted from its reply, so a slow round trip on
    // a loaded machine is not taken for a late job).
    let ran = eventually(crate::helpers::WAIT, || async {
        fake.calls("/v1/me/player/recently-played") > before
    })
    .await;
    let (at, late) = (shared_at.elapsed(), replied_at.elapsed());
    assert!(ran, "the first check ran");
    assert!(at >= Duration::from_millis(2900), "ran early: after {at:?}");
    assert!(
        late <= Duration::from_millis(5500),
        "ran late: {late:?} after the reply"
    );
    app.stop().await;
}

async fn the_job_board_shows_play_checks_to_admins_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn_with(&db, &fake, |c| {
        c.sharing.min_first_check = Duration::from_secs(3600);
    })
    .await;
    let (una, _) = linked(&app, &fake, "una").await;
    let (vic, _) = linked(&app, &fake, "vic").await;
    befriend(&app, &una, &vic).await;
    let short = short_id(&app.reply(&una, &format!("/share vic {SHORT}")).await);
    let share = app
        .core
        .store
        .share_by_short_id(&short)
        .await
        .unwrap()
        .unwrap();

    let admin = |path: &str| format!("{}{path}", app.admin_address);
    let tasks = admin(&format!(
        "/api/v1/queues/{}/tasks",
        segue_jobs::play_check::QUEUE
    ));
    assert_eq!(app.client.get(&tasks).send().await.unwrap().status(), 401);
    let res = app
        .client
        .get(&tasks)
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(
        body.contains(&format!("\"friend_id\":{}", share.friend_id)),
        "the board lists the pending check: {body}"
    );
    let page = app
        .client
        .get(admin("/"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<html") && html.contains(".wasm"), "{html}");

    // A real browser: headless Chromium runs the board's WebAssembly app and lists the
    // pending check, signed in; without the token it gets nothing.
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Chromium (.ci/run installs Debian's chromium package)"
        );
        eprintln!("chromium not installed: the browser part of this test is skipped");
        app.stop().await;
        return;
    };
    let host = app.admin_address.trim_start_matches("http://").to_owned();
    let signed_in = dump_dom(
        &chromium,
        &format!(
            "http://admin:{}@{host}/admin/login?next=/tasks",
            crate::helpers::ADMIN_TOKEN,
        ),
    )
    .await;
    // The tasks table: "<ULID> 0 Pending in 1 hours play-checks".
    let text = strip_tags(&signed_in);
    assert!(
        text.contains("Pending in ") && text.contains(segue_jobs::play_check::QUEUE),
        "the board lists the pending check: {text}"
    );
    let refused = dump_dom(&chromium, &format!("http://{host}/")).await;
    assert!(
        !refused.contains(segue_jobs::play_check::QUEUE),
        "{refused}"
    );
    app.stop().await;
}

/// A page's text: tags removed, white space folded.
fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_owned)
}

/// The page's DOM after its scripts ran (headless Chromium, virtual time).
async fn dump_dom(chromium: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .expect("chromium finishes")
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
