//! Spotify accounts end to end through the web console and the HTTP routes, against the
//! fake Spotify: `/link` → consent → linked message in chat → `/np`; the generic page's
//! 16-digit code; every bad-state case; the token vault (sealed at rest, single-flight
//! refresh, rotation, revocation); Spotify failures in plain words; the public
//! now-playing API with CORS and its cache bound; `/connect`, `/notify here`, `/forget`.

use std::time::Duration;

use chrono::Utc;
use sea_orm::{ConnectionTrait, Statement};
use segue_bot::{ChatAddress, ChatKind, Content, Handled, Incoming, Platform, ReplyMode, UserRef};

use crate::fake_spotify::{CLIENT_ID, Failure, FakeSpotify, Playing};
use crate::fake_telegram::FakeTelegram;
use crate::helpers::{Backend, TestApp, TestDb, backend_tests, spawn_app_at_own_url};

backend_tests!(
    link_then_now_playing,
    generic_page_gives_a_code_for_link,
    bad_states_and_failed_consent_store_nothing,
    refresh_is_single_flight_and_keeps_rotated_tokens,
    tokens_are_sealed_at_rest,
    revoked_links_ask_to_link_again,
    spotify_failures_are_told_in_plain_words,
    podcasts_local_files_and_history,
    public_now_playing_api,
    spotify_refusals_are_cached_like_answers,
    a_refreshed_token_refused_again_breaks_the_link,
    connect_joins_platforms_and_notify_here_picks_one,
    one_time_codes_stay_out_of_the_log,
    forget_leaves_no_row_about_the_person,
    without_spotify_configured_commands_say_so,
    telegram_link_then_now_playing,
    track_lookups_and_search_need_no_link,
);

/// "Never Gonna Give You Up" by Rick Astley, in the fake's default catalogue.
const SONG: &str = "4uLU6hMCjMI75M1A2tKUQC";

async fn spawn(db: &TestDb, fake: &FakeSpotify) -> TestApp {
    let fake = fake.clone();
    spawn_app_at_own_url(db, move |c| fake.configure(c)).await
}

/// The app against the fake Spotify and a fake Telegram (polling).
async fn spawn_with_telegram(db: &TestDb, fake: &FakeSpotify) -> (TestApp, FakeTelegram) {
    let tg = FakeTelegram::start().await;
    let (tg_url, tg_token) = (tg.url.clone(), tg.token.clone());
    let spotify = fake.clone();
    let app = spawn_app_at_own_url(db, move |c| {
        spotify.configure(c);
        c.telegram.token = segue_bot::Secret::new(tg_token);
        c.telegram.api_url = tg_url.parse().unwrap();
    })
    .await;
    (app, tg)
}

async fn fake() -> FakeSpotify {
    FakeSpotify::start().await
}

/// A browser: follows redirects (start → Spotify → callback).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .unwrap()
}

/// Opens a URL in the browser: status and page text.
async fn open(url: &str) -> (u16, String) {
    let res = browser().get(url).send().await.expect("page loads");
    (res.status().as_u16(), res.text().await.unwrap_or_default())
}

/// The first URL in a text.
fn url_in(text: &str) -> String {
    let start = text
        .find("http")
        .unwrap_or_else(|| panic!("no URL in {text:?}"));
    text[start..].split_whitespace().next().unwrap().to_owned()
}

/// A console user whose Spotify (`spotify_id` at the fake) is linked through `/link`.
async fn linked_user(app: &TestApp, fake: &FakeSpotify, name: &str, spotify_id: &str) -> String {
    fake.add_user(spotify_id, &format!("{name} on Spotify"));
    let token = app.session(name).await;
    let link = app.reply(&token, "/link").await;
    fake.authorize_as(spotify_id);
    let (status, page) = open(&url_in(&link)).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Spotify is linked"), "{page}");
    token
}

async fn user_id(app: &TestApp, handle: &str) -> i64 {
    app.core
        .store
        .user_by_handle(handle)
        .await
        .unwrap()
        .expect("user exists")
        .id
}

async fn link_then_now_playing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;

    let token = app.session("alice").await;
    assert_eq!(
        app.reply(&token, "/np").await,
        "You haven't linked Spotify yet. Send /link to do it."
    );
    let link = app.reply(&token, "/link").await;
    assert!(link.contains("works once"), "{link}");
    let url = url_in(&link);
    assert!(url.starts_with(&format!("{}/auth/spotify/start?state=", app.address)));

    // The start page sends the browser to Spotify with our client id, scopes and state.
    fake.add_user("alice_sp", "Alice S");
    fake.authorize_as("alice_sp");
    let (status, page) = open(&url).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("connected as Alice S"), "{page}");
    let asked = fake.authorize_requests();
    let asked = asked.last().unwrap();
    assert_eq!(asked["client_id"], CLIENT_ID);
    assert_eq!(
        asked["redirect_uri"],
        format!("{}/auth/spotify/callback", app.address)
    );
    for scope in segue_bot::spotify::SCOPES {
        assert!(asked["scope"].split(' ').any(|s| s == *scope), "{scope}");
    }

    // The chat hears about it (held for the console until a stream opens).
    let mut events = app.events(&token, None).await;
    let linked = events
        .next(crate::helpers::WAIT)
        .await
        .expect("linked message");
    assert_eq!(
        linked.data["text"],
        "Done: your Spotify account Alice S is linked. Try /np to see what you play."
    );

    fake.set_playing(
        "alice_sp",
        Playing::Track {
            id: SONG.to_owned(),
            progress_ms: 30_000,
            is_playing: true,
        },
    );
    assert_eq!(
        app.reply(&token, "/np").await,
        "You are listening to ‘Never Gonna Give You Up’ by Rick Astley."
    );
    let me = app.reply(&token, "/me").await;
    assert!(me.contains("Spotify: linked as Alice S"), "{me}");

    // The same link works once.
    let (status, page) = open(&url).await;
    assert_eq!(status, 400);
    assert!(page.contains("already used"), "{page}");

    // /unlink deletes the tokens.
    assert_eq!(
        app.reply(&token, "/unlink").await,
        "Done: I deleted your Spotify tokens. Send /link to connect again."
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM spotify_links").await, 0);
    assert!(app.reply(&token, "/np").await.contains("haven't linked"));
    app.stop().await;
}

async fn generic_page_gives_a_code_for_link(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;
    fake.add_user("bob_sp", "Bob");
    fake.authorize_as("bob_sp");

    let (status, page) = open(&format!("{}/auth/spotify/start", app.address)).await;
    assert_eq!(status, 200, "{page}");
    let code: String = {
        let at = page.find("/link ").expect("the page gives the command") + 6;
        page[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ' ')
            .collect::<String>()
            .trim()
            .to_owned()
    };
    let digits: String = code.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(digits.len(), 16, "{code:?}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM spotify_link_codes").await,
        1
    );

    let token = app.session("bob").await;
    assert_eq!(
        app.reply(&token, "/link 1234")
            .await
            .lines()
            .next()
            .unwrap(),
        "Usage: /link [code] (the code is 16 digits)"
    );
    assert!(
        app.reply(&token, "/link 0000 0000 0000 0000")
            .await
            .contains("isn't valid")
    );
    assert_eq!(
        app.reply(&token, &format!("/link {code}")).await,
        "Done: your Spotify account Bob is linked. Try /np."
    );
    assert!(
        app.reply(&token, &format!("/link {digits}"))
            .await
            .contains("isn't valid"),
        "a code works once"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM spotify_link_codes").await,
        0
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM spotify_links").await, 1);
    app.stop().await;
}

async fn bad_states_and_failed_consent_store_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;
    fake.add_user("carol_sp", "Carol");
    fake.authorize_as("carol_sp");
    let token = app.session("carol").await;
    let url = url_in(&app.reply(&token, "/link").await);
    let spotify = app.core.spotify.as_ref().unwrap();
    let callback = format!("{}/auth/spotify/callback", app.address);

    // Tampered: one character of the signature changed.
    let mut tampered = url.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let (status, page) = open(&tampered).await;
    assert_eq!(status, 400);
    assert!(page.contains("isn't valid"), "{page}");

    // Expired.
    let old = spotify.state_until(Some(1), segue_bot::ids::now_millis() - 1);
    let (status, page) = open(&format!("{callback}?code=x&state={old}")).await;
    assert_eq!(status, 400);
    assert!(page.contains("expired"), "{page}");
    let (status, _) = open(&format!("{}/auth/spotify/start?state={old}", app.address)).await;
    assert_eq!(status, 400);

    // No state, no code.
    let (status, _) = open(&callback).await;
    assert_eq!(status, 400);
    let fresh = spotify.new_state(None);
    let (status, page) = open(&format!("{callback}?state={fresh}")).await;
    assert_eq!(status, 400, "{page}");

    // Consent denied.
    fake.deny_next_authorize();
    let (status, page) = open(&url).await;
    assert_eq!(status, 403);
    assert!(page.contains("Nothing was linked"), "{page}");

    // The exchange fails (Spotify down): a clear page.
    fake.fail_next_token(5, Failure::Status(503));
    let url = url_in(&app.reply(&token, "/link").await);
    let (status, page) = open(&url).await;
    assert_eq!(status, 502);
    assert!(page.contains("Nothing was stored"), "{page}");

    assert_eq!(app.count("SELECT COUNT(*) FROM spotify_links").await, 0);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM spotify_link_codes").await,
        0
    );
    assert!(
        app.reply(&token, "/me")
            .await
            .contains("Spotify: not linked")
    );
    app.stop().await;
}

async fn refresh_is_single_flight_and_keeps_rotated_tokens(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    // Tokens count as stale a minute before they expire: 63 s means stale after 3 s,
    // time enough for all 50 callers to get the fresh one on a loaded machine.
    fake.set_token_lifetime(Duration::from_secs(63));
    fake.rotate_refresh_tokens(true);
    let app = spawn(&db, &fake).await;
    linked_user(&app, &fake, "dave", "dave_sp").await;
    let uid = user_id(&app, "dave").await;
    let spotify = app.core.spotify.clone().unwrap();

    for round in 1..=2 {
        tokio::time::sleep(Duration::from_millis(3100)).await;
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let s = spotify.clone();
                tokio::spawn(async move { s.access_token(uid).await })
            })
            .collect();
        let mut tokens = Vec::new();
        for c in calls {
            tokens.push(c.await.unwrap().unwrap().expose().to_owned());
        }
        assert_eq!(
            fake.refreshes("dave_sp"),
            round,
            "one refresh for 50 callers"
        );
        tokens.dedup();
        assert_eq!(tokens.len(), 1);
        // The rotated refresh token was stored: the next round's refresh works with it.
    }
    assert_eq!(fake.issued_refresh_tokens("dave_sp").len(), 3);
    app.stop().await;
}

async fn tokens_are_sealed_at_rest(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    fake.set_token_lifetime(Duration::from_secs(61));
    let app = spawn(&db, &fake).await;
    let token = linked_user(&app, &fake, "erin", "erin_sp").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fake.set_playing("erin_sp", Playing::Nothing);
    app.reply(&token, "/np").await;
    assert_eq!(fake.refreshes("erin_sp"), 1);

    let mut secrets = fake.issued_refresh_tokens("erin_sp");
    secrets.extend(fake.issued_access_tokens("erin_sp"));
    let key = std::fs::read_to_string(db.dir.path().join("segue.key")).unwrap();
    secrets.push(key.trim().to_owned());
    assert!(secrets.len() >= 4);

    // Every column of every row of every table that could hold them, as text.
    let dbc = app.core.store.db();
    for table in [
        "spotify_links",
        "spotify_link_codes",
        "messages",
        "users",
        "identities",
    ] {
        let rows = dbc
            .query_all_raw(Statement::from_string(
                dbc.get_database_backend(),
                format!("SELECT * FROM {table}"),
            ))
            .await
            .unwrap();
        for row in rows {
            for i in 0..row.column_names().len() {
                let text = row
                    .try_get_by_index::<Option<String>>(i)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                for s in &secrets {
                    assert!(
                        !text.contains(s.as_str()),
                        "{table} holds a secret in clear"
                    );
                }
            }
        }
    }
    if backend == Backend::Sqlite {
        // The database files themselves, write-ahead log included.
        for file in ["segue.db", "segue.db-wal"] {
            let bytes = std::fs::read(db.dir.path().join(file)).unwrap_or_default();
            for s in &secrets {
                assert!(
                    !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                    "{file} holds a secret in clear"
                );
            }
        }
    }
    app.stop().await;
}

async fn revoked_links_ask_to_link_again(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    fake.set_token_lifetime(Duration::from_secs(61));
    let app = spawn(&db, &fake).await;
    let token = linked_user(&app, &fake, "frank", "frank_sp").await;
    fake.revoke("frank_sp");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.reply(&token, "/np").await,
        "Spotify no longer accepts your link (access was removed or expired). Send /link to \
         connect it again."
    );
    assert!(
        app.reply(&token, "/me")
            .await
            .contains("the link is broken")
    );
    // Relinking mends it.
    fake.add_user("frank_sp", "Frank again");
    fake.authorize_as("frank_sp");
    let (status, _) = open(&url_in(&app.reply(&token, "/link").await)).await;
    assert_eq!(status, 200);
    app.core
        .spotify
        .as_ref()
        .unwrap()
        .forget_cached(user_id(&app, "frank").await);
    assert!(
        app.reply(&token, "/me")
            .await
            .contains("Spotify: linked as")
    );
    app.stop().await;
}

async fn spotify_failures_are_told_in_plain_words(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;
    let token = linked_user(&app, &fake, "gina", "gina_sp").await;
    let uid = user_id(&app, "gina").await;
    let spotify = app.core.spotify.clone().unwrap();
    fake.set_playing(
        "gina_sp",
        Playing::Track {
            id: SONG.to_owned(),
            progress_ms: 0,
            is_playing: true,
        },
    );

    // A short 429 is waited out, a 5xx retried: the answer comes.
    fake.fail_next(
        "/v1/me/player",
        1,
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    fake.fail_next("/v1/me/player", 1, Failure::Status(502));
    assert!(app.reply(&token, "/np").await.contains("Never Gonna"));

    // Spotify down: three tries, then plain words, no error dump.
    spotify.forget_cached(uid);
    fake.fail_next("/v1/me/player", 3, Failure::Status(503));
    let before = fake.calls("/v1/me/player");
    assert_eq!(
        app.reply(&token, "/np").await,
        "Spotify isn't answering right now. Please try again in a minute."
    );
    assert_eq!(fake.calls("/v1/me/player") - before, 3);
    // The failure is remembered for the cache's 10 seconds: no hammering.
    assert!(app.reply(&token, "/np").await.contains("isn't answering"));
    assert_eq!(fake.calls("/v1/me/player") - before, 3);

    // A long rate limit is reported, not waited for.
    spotify.forget_cached(uid);
    fake.fail_next(
        "/v1/me/player",
        1,
        Failure::RateLimited {
            retry_after_secs: 30,
        },
    );
    assert_eq!(
        app.reply(&token, "/np").await,
        "Spotify is busy right now. Please try again in 30 seconds."
    );
    app.stop().await;
}

async fn podcasts_local_files_and_history(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;
    let token = linked_user(&app, &fake, "hana", "hana_sp").await;
    let uid = user_id(&app, "hana").await;
    let spotify = app.core.spotify.clone().unwrap();

    let np = |playing: Playing| {
        fake.set_playing("hana_sp", playing);
        spotify.forget_cached(uid);
        app.reply(&token, "/np")
    };
    assert_eq!(
        np(Playing::Episode {
            name: "Episode 12".into(),
            show: "Song Exploder".into()
        })
        .await,
        "You are listening to the episode ‘Episode 12’ of Song Exploder."
    );
    assert_eq!(
        np(Playing::LocalFile {
            name: "Demo".into(),
            artist: "Hana".into()
        })
        .await,
        "You are listening to ‘Demo’ by Hana (a local file)."
    );
    assert_eq!(
        np(Playing::Nothing).await,
        "You haven't played anything on Spotify lately."
    );
    fake.record_play("hana_sp", SONG, Utc::now() - chrono::TimeDelta::minutes(5));
    assert_eq!(
        np(Playing::Nothing).await,
        "You last listened to ‘Never Gonna Give You Up’ by Rick Astley (5 minutes ago)."
    );
    app.stop().await;
}

async fn public_now_playing_api(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;
    let token = linked_user(&app, &fake, "ivy", "ivy_sp").await;
    let api = format!("{}/api/users/ivy/now-playing", app.address);
    let get = |url: String| {
        let client = app.client.clone();
        async move {
            let res = client
                .get(url)
                .header("Origin", "https://ivy.example")
                .send()
                .await
                .unwrap();
            let cors = res
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap().to_owned());
            (
                res.status().as_u16(),
                cors,
                res.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };

    // Off by default: 404, as JSON, with CORS.
    let (status, cors, body) = get(api.clone()).await;
    assert_eq!((status, cors.as_deref()), (404, Some("*")));
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _, _) = get(format!("{}/api/users/nobody/now-playing", app.address)).await;
    assert_eq!(status, 404);

    let on = app.reply(&token, "/public on").await;
    assert!(on.contains(&api), "{on}");
    fake.set_playing(
        "ivy_sp",
        Playing::Track {
            id: SONG.to_owned(),
            progress_ms: 1000,
            is_playing: true,
        },
    );
    let (status, cors, body) = get(format!("{}/api/users/IVY/now-playing", app.address)).await;
    assert_eq!((status, cors.as_deref()), (200, Some("*")));
    assert_eq!(body["songName"], "Never Gonna Give You Up");
    assert_eq!(body["artistName"], "Rick Astley");
    assert_eq!(body["isPlaying"], true);
    assert_eq!(
        body["response"],
        "ivy is listening to ‘Never Gonna Give You Up’ by Rick Astley"
    );
    assert_eq!(
        body["trackUrl"],
        format!("https://open.spotify.com/track/{SONG}")
    );
    assert!(body["playedAt"].is_null());

    // Any request rate costs at most one Spotify call per user per 10 seconds.
    let before = fake.calls("/v1/me/player/currently-playing");
    let requests: Vec<_> = (0..200).map(|_| tokio::spawn(get(api.clone()))).collect();
    for r in requests {
        assert_eq!(r.await.unwrap().0, 200);
    }
    assert_eq!(fake.calls("/v1/me/player/currently-playing"), before);

    // Last played, after the cache: RFC 3339 UTC.
    fake.set_playing("ivy_sp", Playing::Nothing);
    let played = Utc::now() - chrono::TimeDelta::hours(2);
    fake.record_play("ivy_sp", SONG, played);
    app.core
        .spotify
        .as_ref()
        .unwrap()
        .forget_cached(user_id(&app, "ivy").await);
    let (_, _, body) = get(api.clone()).await;
    assert_eq!(body["isPlaying"], false);
    assert_eq!(
        body["playedAt"],
        played.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    assert!(
        body["response"]
            .as_str()
            .unwrap()
            .starts_with("ivy last listened to")
    );

    // Others may look too, in chat.
    let other = app.session("otto").await;
    assert!(
        app.reply(&other, "/np @ivy")
            .await
            .starts_with("@ivy last listened to ‘Never Gonna Give You Up’"),
    );
    assert!(app.reply(&token, "/public off").await.contains("private"));
    assert_eq!(get(api).await.0, 404);
    assert_eq!(
        app.reply(&other, "/np ivy").await,
        "Only friends can see each other's music, and @ivy isn't your friend yet (/invite)."
    );
    assert!(
        app.reply(&other, "/np nobody")
            .await
            .starts_with("I don't know @nobody.")
    );
    app.stop().await;
}

async fn spotify_refusals_are_cached_like_answers(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;
    let token = linked_user(&app, &fake, "rey", "rey_sp").await;
    app.reply(&token, "/public on").await;
    let api = format!("{}/api/users/rey/now-playing", app.address);
    const PLAYING: &str = "/v1/me/player/currently-playing";
    // Spotify refuses (403), then doesn't know (404): each answer is kept 10 s like a
    // good one, so 50 public requests cost one Spotify call.
    for failure in [Failure::Status(403), Failure::Status(404)] {
        app.core
            .spotify
            .as_ref()
            .unwrap()
            .forget_cached(user_id(&app, "rey").await);
        fake.fail_next(PLAYING, 1000, failure);
        let before = fake.calls(PLAYING);
        for _ in 0..50 {
            let res = app.client.get(&api).send().await.unwrap();
            assert_eq!(res.status(), 503, "{failure:?}");
        }
        let calls = fake.calls(PLAYING) - before;
        assert!(
            calls <= 2,
            "{calls} Spotify calls for 50 requests ({failure:?})"
        );
    }
    app.stop().await;
}

async fn a_refreshed_token_refused_again_breaks_the_link(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;
    let token = linked_user(&app, &fake, "sue", "sue_sp").await;
    let refreshes = fake.refreshes("sue_sp");
    // 401, a refresh, and 401 again for the fresh token.
    fake.fail_next("/v1/me/player/currently-playing", 2, Failure::Status(401));
    assert_eq!(
        app.reply(&token, "/np").await,
        "Spotify no longer accepts your link (access was removed or expired). Send /link to \
         connect it again."
    );
    assert_eq!(fake.refreshes("sue_sp") - refreshes, 1, "refreshed once");
    // Recorded, not just answered: /me says so, and no more calls are made.
    let me = app.reply(&token, "/me").await;
    assert!(me.contains("the link is broken"), "{me}");
    let calls = fake.calls("/v1/me/player");
    app.core
        .spotify
        .as_ref()
        .unwrap()
        .forget_cached(user_id(&app, "sue").await);
    assert!(
        app.reply(&token, "/np")
            .await
            .starts_with("Spotify no longer accepts")
    );
    assert_eq!(fake.calls("/v1/me/player"), calls);
    app.stop().await;
}

/// A Telegram private message, handled inline so the replies come back here.
async fn telegram(app: &TestApp, user: &str, text: &str) -> Vec<String> {
    let msg = Incoming {
        external_id: None,
        chat: ChatAddress::new(Platform::Telegram, user),
        chat_kind: ChatKind::Private,
        user: UserRef {
            platform: Platform::Telegram,
            id: user.to_owned(),
            display_name: format!("tg {user}"),
            username: None,
        },
        content: Content::Text(text.to_owned()),
        bot_username: Some("segue_bot".into()),
        private_chat: None,
        to_bot: false,
        on_message: None,
    };
    match app.router.handle(msg, ReplyMode::Inline).await.unwrap() {
        Handled::Replied(r) => r.into_iter().map(|r| r.text).collect(),
        Handled::Duplicate => panic!("duplicate"),
    }
}

async fn connect_joins_platforms_and_notify_here_picks_one(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;
    let token = linked_user(&app, &fake, "jack", "jack_sp").await;
    let jack = user_id(&app, "jack").await;

    let issued = app.reply(&token, "/connect").await;
    let line = issued
        .lines()
        .find(|l| l.starts_with("/connect "))
        .expect("the exact line to send")
        .to_owned();

    // Telegram first: a user of its own, who then joins.
    telegram(&app, "555", "/ping").await;
    let before = app
        .core
        .store
        .person_details(jack)
        .await
        .unwrap()
        .unwrap()
        .identities
        .len();
    assert_eq!(before, 1, "jack has only the web identity so far");
    assert!(telegram(&app, "555", "/connect ABCD-EFGH").await[0].contains("isn't valid"));
    let joined = telegram(&app, "555", &line.to_lowercase()).await;
    assert_eq!(
        joined,
        ["Done: your telegram account is now part of @jack. /me shows everything."]
    );
    let me = telegram(&app, "555", "/me").await.join("\n");
    assert!(me.starts_with("You are @jack."), "{me}");
    assert!(
        me.contains("web: jack") && me.contains("telegram: tg 555"),
        "{me}"
    );
    assert!(me.contains("Spotify: linked as jack on Spotify"), "{me}");
    assert!(
        telegram(&app, "555", &line).await[0].contains("isn't valid"),
        "once"
    );

    // Notifications: where they last talked, unless /notify here says otherwise.
    let tg = ChatAddress::new(Platform::Telegram, "555");
    let web = app.core.store.notify_address(jack).await.unwrap().unwrap();
    assert_eq!(web, tg, "telegram was the last one");
    app.reply(&token, "/notify here").await;
    let chosen = app.core.store.notify_address(jack).await.unwrap().unwrap();
    assert_eq!(chosen.platform, Platform::Web);
    telegram(&app, "555", "/ping").await;
    assert_eq!(
        app.core.store.notify_address(jack).await.unwrap().unwrap(),
        chosen,
        "the choice sticks"
    );
    assert!(
        app.reply(&token, "/me")
            .await
            .contains("(notifications go here)")
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users").await,
        1,
        "the telegram user was joined into jack"
    );
    app.stop().await;
}

/// The word after `prefix` in the line that starts with it.
fn code_after(text: &str, prefix: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {text:?}"));
    line[prefix.len()..].trim().to_owned()
}

async fn one_time_codes_stay_out_of_the_log(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let (app, tg) = spawn_with_telegram(&db, &fake).await;
    // On the console (inline replies): a /connect code and a /link state.
    let web = app.session("nia").await;
    let connect = code_after(&app.reply(&web, "/connect").await, "/connect ");
    let link = app.reply(&web, "/link").await;
    let state = url_in(&link)
        .split("state=")
        .nth(1)
        .expect("a state in the link")
        .to_owned();
    // On Telegram (through the outbox): an invite code, then the /connect code redeemed.
    tg.push_update(crate::telegram::message(1, 88, 88, "/invite"));
    tg.wait_for("the invite", |f| f.sent_to(88).len() == 2)
        .await;
    let invite = code_after(&tg.sent_to(88)[1], "/accept ");
    tg.push_update(crate::telegram::message(
        2,
        88,
        88,
        &format!("/connect {connect}"),
    ));
    tg.wait_for("joined", |f| {
        f.sent_to(88)
            .iter()
            .any(|t| t.starts_with("Done: your telegram account"))
    })
    .await;
    // Someone accepts the invite on the console.
    let friend = app.session("oz").await;
    app.reply(&friend, &format!("/accept {}", invite.to_lowercase()))
        .await;

    let secrets = [
        connect.clone(),
        connect.replace('-', ""),
        invite.clone(),
        invite.replace('-', ""),
        state.clone(),
    ];
    let leaks = secrets
        .iter()
        .map(|s| {
            format!(
                "LOWER(text) LIKE '%{0}%' OR LOWER(COALESCE(buttons, '')) LIKE '%{0}%'",
                s.to_lowercase()
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    let leaks = format!("SELECT COUNT(*) FROM messages WHERE {leaks}");
    assert!(
        crate::helpers::eventually(crate::helpers::WAIT, || async {
            app.count(&leaks).await == 0
        })
        .await,
        "{} rows of messages still hold a code or state",
        app.count(&leaks).await
    );
    // The log still says what happened, and the recipients got the real thing.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM messages WHERE text LIKE '%/connect [hidden]%'")
            .await,
        2,
        "the reply's line and the Telegram message"
    );
    assert!(tg.sent_to(88)[1].contains(&invite));
    assert!(link.contains(&state));
    // Nothing is left owed (the accept's notice to Telegram may still be on its way).
    let owed = "SELECT COUNT(*) FROM messages WHERE status = 'pending'";
    assert!(
        crate::helpers::eventually(crate::helpers::WAIT, || async {
            app.count(owed).await == 0
        })
        .await,
        "{} messages still pending",
        app.count(owed).await
    );
    app.stop().await;
}

async fn forget_leaves_no_row_about_the_person(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;
    let token = linked_user(&app, &fake, "kim", "kim_sp").await;
    let other = app.session("lee").await;
    app.reply(&other, "/ping").await;
    let kim = user_id(&app, "kim").await;
    app.reply(&token, "/public on").await;
    app.reply(&token, "/connect").await;
    telegram(&app, "777", "/ping").await;

    let ask = app.reply(&token, "/forget").await;
    assert!(ask.contains("/forget yes"), "{ask}");
    assert_eq!(
        app.reply(&token, "/forget yes").await,
        "Done: I've forgotten everything about you. If you write to me again, we start fresh."
    );
    for (table, column) in [
        ("users", "id"),
        ("identities", "user_id"),
        ("messages", "user_id"),
        ("spotify_links", "user_id"),
        ("codes", "user_id"),
    ] {
        let n = app
            .count(&format!(
                "SELECT COUNT(*) FROM {table} WHERE {column} = {kim}"
            ))
            .await;
        assert_eq!(n, 0, "{table} still has a row about kim");
    }
    // Nothing in their chat, not even the goodbye; lee's rows are untouched.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM identities").await,
        2,
        "lee and the telegram user remain"
    );
    let kim_texts = app
        .count("SELECT COUNT(*) FROM messages WHERE text LIKE '%forget%' OR text LIKE '%kim%'")
        .await;
    assert_eq!(kim_texts, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1);
    // The old session is gone.
    let (status, _) = app
        .post_json(
            "/console/api/messages",
            Some(&token),
            &serde_json::json!({"text": "/me"}),
        )
        .await;
    assert_eq!(status, 401);
    assert!(app.reply(&other, "/ping").await == "pong");
    app.stop().await;
}

async fn without_spotify_configured_commands_say_so(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app_at_own_url(&db, |_| {}).await;
    let token = app.session("nora").await;
    for cmd in ["/link", "/np", "/unlink"] {
        assert!(
            app.reply(&token, cmd)
                .await
                .starts_with("Spotify isn't set up on this Segue yet"),
            "{cmd}"
        );
    }
    let (status, page) = open(&format!("{}/auth/spotify/start", app.address)).await;
    assert_eq!(status, 404);
    assert!(page.contains("isn't set up"));
    // A group is no place for a personal link.
    let msg = Incoming {
        external_id: None,
        chat: ChatAddress::new(Platform::Telegram, "-100"),
        chat_kind: ChatKind::Group,
        user: UserRef {
            platform: Platform::Telegram,
            id: "9".into(),
            display_name: "nine".into(),
            username: None,
        },
        content: Content::Text("/notify here".into()),
        bot_username: Some("segue_bot".into()),
        private_chat: None,
        to_bot: false,
        on_message: None,
    };
    let Handled::Replied(r) = app.router.handle(msg, ReplyMode::Inline).await.unwrap() else {
        panic!("duplicate")
    };
    assert_eq!(
        r[0].text,
        "Please send /notify to me in a private chat: it's personal."
    );
    app.stop().await;
}

async fn telegram_link_then_now_playing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let (app, tg) = spawn_with_telegram(&db, &fake).await;
    fake.add_user("tg_sp", "Telegram Tom");
    fake.authorize_as("tg_sp");

    tg.push_update(crate::telegram::message(1, 42, 42, "/link"));
    tg.wait_for("the link", |f| !f.sent_to(42).is_empty()).await;
    let sent = tg.calls("sendMessage");
    let button = &sent[0].params["reply_markup"]["inline_keyboard"][0][0];
    assert_eq!(button["text"], "Connect Spotify");
    let (status, page) = open(button["url"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{page}");
    tg.wait_for("the linked message", |f| {
        f.sent_to(42)
            .iter()
            .any(|t| t.contains("Telegram Tom is linked"))
    })
    .await;

    fake.set_playing(
        "tg_sp",
        Playing::Track {
            id: SONG.to_owned(),
            progress_ms: 5,
            is_playing: false,
        },
    );
    tg.push_update(crate::telegram::message(2, 42, 42, "/np"));
    tg.wait_for("now playing", |f| f.sent_to(42).len() == 3)
        .await;
    assert!(
        tg.sent_to(42)[2]
            .starts_with("You last listened to ‘Never Gonna Give You Up’ by Rick Astley"),
        "{:?}",
        tg.sent_to(42)
    );
    app.stop().await;
}

async fn track_lookups_and_search_need_no_link(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = fake().await;
    let app = spawn(&db, &fake).await;
    let spotify = app.core.spotify.clone().unwrap();
    let id = rspotify::model::TrackId::from_id(SONG).unwrap();
    let track = spotify.track(&id).await.unwrap();
    assert_eq!(track.name, "Never Gonna Give You Up");
    let found = spotify.search_tracks("rick astley", 5).await.unwrap();
    assert_eq!(found[0].name, "Never Gonna Give You Up");
    let missing = rspotify::model::TrackId::from_id("0000000000000000000000").unwrap();
    assert!(matches!(
        spotify.track(&missing).await,
        Err(segue_bot::spotify::SpotifyError::NotFound)
    ));
    assert_eq!(
        fake.token_calls("client_credentials"),
        1,
        "the app token is reused"
    );
    app.stop().await;
}
