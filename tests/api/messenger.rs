//! Messenger end to end, through the real app against the fake Graph API: webhook
//! verification, signatures (Meta's documented sample and the shared fixtures with their
//! exact signatures), malformed bodies, batched entries in order per sender, replayed
//! `mid`s, quick replies and postbacks, the profile, and the 24-hour window: a share to a
//! Messenger friend who hasn't written for a day is held, shown as such in `/shares`, and
//! delivered with their next message.

use std::time::Duration;

use chrono::Utc;
use sea_orm::ConnectionTrait;
use segue_bot::{ChatAddress, Outgoing, Platform, Reply, Secret};
use serde_json::{Value, json};

use crate::fake_messenger::{FakeMessenger, WINDOW_MS};
use crate::fake_spotify::FakeSpotify;
use crate::helpers::{
    Backend, TestApp, TestDb, backend_tests, eventually, spawn_app_at_own_url, spawn_app_with,
    test_config,
};

backend_tests!(
    verification_answers_only_the_right_token,
    signed_fixtures_end_to_end,
    bad_signatures_and_bodies_are_refused,
    quick_replies_and_postbacks_reach_handlers,
    a_notice_outside_the_window_waits_for_the_next_message,
    a_person_who_blocked_the_page_is_dead_lettered,
);

const APP_SECRET: &str = "test_app_secret";
const VERIFY: &str = "verify-me-123";

fn configure(c: &mut segue::Config, fake: &FakeMessenger) {
    c.messenger.page_access_token = Secret::new(fake.token.clone());
    c.messenger.app_secret = Secret::new(APP_SECRET);
    c.messenger.verify_token = Secret::new(VERIFY);
    c.messenger.graph_url = fake.url.parse().unwrap();
}

/// A fresh database, the fake Graph API (these PSIDs wrote just now) and the app.
async fn setup(backend: Backend, wrote: &[&str]) -> (TestDb, FakeMessenger, TestApp) {
    let db = TestDb::new(backend).await;
    let fake = FakeMessenger::start().await;
    for psid in wrote {
        fake.user_wrote(psid);
    }
    let mut c = test_config(&db);
    configure(&mut c, &fake);
    let app = spawn_app_with(c, Vec::new()).await;
    (db, fake, app)
}

fn sign(body: &[u8]) -> String {
    let tag = segue_bot::crypto::hmac_sha256(APP_SECRET.as_bytes(), body);
    format!(
        "sha256={}",
        tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

async fn post(app: &TestApp, body: &[u8], signature: Option<&str>) -> u16 {
    let mut req = app
        .client
        .post(format!("{}/webhooks/messenger", app.address))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("X-Hub-Signature-256", s);
    }
    req.send().await.unwrap().status().as_u16()
}

/// A freshly signed webhook with these events.
async fn post_events(app: &TestApp, events: Vec<Value>) {
    let body = serde_json::to_vec(&json!({
        "object": "page",
        "entry": [{ "id": "PAGE_ID", "time": Utc::now().timestamp_millis(), "messaging": events }]
    }))
    .unwrap();
    assert_eq!(post(app, &body, Some(&sign(&body))).await, 200);
}

fn text(psid: &str, mid: &str, text: &str) -> Value {
    json!({ "sender": { "id": psid }, "recipient": { "id": "PAGE_ID" },
            "timestamp": Utc::now().timestamp_millis(), "message": { "mid": mid, "text": text } })
}

fn quick_reply(psid: &str, mid: &str, label: &str, payload: &str) -> Value {
    json!({ "sender": { "id": psid }, "recipient": { "id": "PAGE_ID" },
            "timestamp": Utc::now().timestamp_millis(),
            "message": { "mid": mid, "text": label, "quick_reply": { "payload": payload } } })
}

fn postback(psid: &str, mid: &str, title: &str, payload: &str) -> Value {
    json!({ "sender": { "id": psid }, "recipient": { "id": "PAGE_ID" },
            "timestamp": Utc::now().timestamp_millis(),
            "postback": { "mid": mid, "title": title, "payload": payload } })
}

fn fixtures_dir() -> String {
    format!(
        "{}/../shared/fixtures/messenger",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A fixture's exact bytes and its signature from SIGNATURES.tsv.
fn fixture(name: &str) -> (Vec<u8>, String) {
    let dir = fixtures_dir();
    let body = std::fs::read(format!("{dir}/{name}")).unwrap();
    let table = std::fs::read_to_string(format!("{dir}/SIGNATURES.tsv")).unwrap();
    let signature = table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.split_once('\t')
                .filter(|(f, _)| *f == name)
                .map(|(_, s)| s.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("{name} is not in SIGNATURES.tsv"));
    (body, signature)
}

async fn verification_answers_only_the_right_token(backend: Backend) {
    let (_db, _fake, app) = setup(backend, &[]).await;
    let get = |query: &str| {
        let url = format!("{}/webhooks/messenger?{query}", app.address);
        let client = app.client.clone();
        async move {
            let res = client.get(url).send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let (status, body) = get(&format!(
        "hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=1158201444"
    ))
    .await;
    assert_eq!((status, body.as_str()), (200, "1158201444"));
    let (status, body) = get("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1").await;
    assert_eq!(status, 403);
    assert!(!body.contains('1') || body.contains("error"), "{body}");
    let (status, _) = get(&format!(
        "hub.mode=unsubscribe&hub.verify_token={VERIFY}&hub.challenge=1"
    ))
    .await;
    assert_eq!(status, 403);
    let (status, _) = get("").await;
    assert_eq!(status, 403);
    app.stop().await;
}

async fn signed_fixtures_end_to_end(backend: Backend) {
    let (_db, fake, app) = setup(backend, &["1254459154682919", "PSID", "111", "222"]).await;
    fake.wait_for("the profile", |f| !f.profiles().is_empty())
        .await;
    let profile = &fake.profiles()[0];
    assert_eq!(profile["get_started"]["payload"], "GET_STARTED");
    let menu = profile["persistent_menu"][0]["call_to_actions"]
        .as_array()
        .unwrap();
    assert!(menu.iter().any(|i| i["payload"] == "/help"), "{menu:?}");

    // Meta's documented sample, with its documented signature.
    let (body, signature) = fixture("docs_sample.json");
    assert_eq!(
        signature,
        "sha256=eec1906d2e5dc1a43a1014f196b421cf9d7b6696ead890eadf906dbbfe03f791"
    );
    assert_eq!(post(&app, &body, Some(&signature)).await, 200);
    fake.wait_for("an answer to the sample", |f| f.sent_to("PSID").len() == 1)
        .await;
    assert!(
        fake.texts_to("PSID")[0].starts_with("I answer commands."),
        "{:?}",
        fake.texts_to("PSID")
    );

    let alice = "1254459154682919";
    for name in [
        "echo.json",
        "text.json",
        "quick_reply.json",
        "postback.json",
    ] {
        let (body, signature) = fixture(name);
        assert_eq!(post(&app, &body, Some(&signature)).await, 200, "{name}");
    }
    fake.wait_for("three answers to the fixtures", |f| {
        f.sent_to(alice).len() == 3
    })
    .await;
    let texts = fake.texts_to(alice);
    assert!(texts[0].starts_with("Here is what I can do"), "{texts:?}");
    assert!(texts[1].starts_with("I answer commands."), "{texts:?}");
    assert!(texts[2].contains("I'm Segue"), "{texts:?}");
    // The echo is the page's own message: nothing answered it, nothing recorded.
    assert!(fake.sent_to("PAGE_ID").is_empty());
    assert_eq!(
        app.count("SELECT COUNT(*) FROM messages WHERE external_id = 'm_echo0001'")
            .await,
        0
    );

    // Batched entries: each sender's events in order.
    let (body, signature) = fixture("batched.json");
    assert_eq!(post(&app, &body, Some(&signature)).await, 200);
    fake.wait_for("the batch's answers", |f| {
        f.sent_to("111").len() == 2 && f.sent_to("222").len() == 1
    })
    .await;
    assert_eq!(fake.texts_to("111"), ["pong", "pong"]);
    assert!(fake.texts_to("222")[0].starts_with("Here is what I can do"));
    let order = app
        .count("SELECT COUNT(*) FROM messages WHERE external_id = 'm_batch_1' AND id < (SELECT id FROM messages WHERE external_id = 'm_batch_3')")
        .await;
    assert_eq!(order, 1, "m_batch_1 was handled before m_batch_3");

    // A replayed mid is answered 200 and handled once: the marker after it (same sender,
    // so handled after it) proves the replay has been looked at.
    let (body, signature) = fixture("text.json");
    assert_eq!(post(&app, &body, Some(&signature)).await, 200);
    post_events(&app, vec![text(alice, "m_marker", "/ping")]).await;
    fake.wait_for("the marker's answer", |f| {
        f.texts_to(alice).last().map(String::as_str) == Some("pong")
    })
    .await;
    assert_eq!(fake.sent_to(alice).len(), 4, "{:?}", fake.texts_to(alice));
    assert!(fake.sent().iter().all(|s| s.messaging_type == "RESPONSE"));
    assert!(fake.rejected().is_empty(), "{:?}", fake.rejected());
    app.stop().await;
}

async fn bad_signatures_and_bodies_are_refused(backend: Backend) {
    let (_db, _fake, app) = setup(backend, &[]).await;
    let (body, signature) = fixture("text.json");
    assert_eq!(post(&app, &body, None).await, 401);
    assert_eq!(post(&app, &body, Some("sha256=00")).await, 401);
    let wrong = signature.replace("sha256=0", "sha256=1");
    assert_eq!(post(&app, &body, Some(&wrong)).await, 401);
    // Signed with another secret.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    assert_eq!(post(&app, &tampered, Some(&signature)).await, 401);
    // Signed, but not a page webhook.
    for bad in [
        &b"{not json"[..],
        br#"{"object":"instagram","entry":[]}"#,
        br#"{"entry":[]}"#,
    ] {
        assert_eq!(post(&app, bad, Some(&sign(bad))).await, 400);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 0);
    app.stop().await;
}

async fn quick_replies_and_postbacks_reach_handlers(backend: Backend) {
    let (_db, fake, app) = setup(backend, &["777"]).await;
    post_events(
        &app,
        vec![
            quick_reply("777", "m_q1", "Ping", "/ping"),
            postback("777", "m_p1", "/help", "/help"),
            postback("777", "m_p2", "Get Started", "GET_STARTED"),
            text("777", "m_t1", "hello"),
            text("777", "m_t2", "/nosuch"),
        ],
    )
    .await;
    fake.wait_for("five answers", |f| f.sent_to("777").len() == 5)
        .await;
    let texts = fake.texts_to("777");
    assert_eq!(texts[0], "pong");
    assert!(texts[1].starts_with("Here is what I can do"), "{texts:?}");
    assert!(texts[2].contains("I'm Segue"), "{texts:?}");
    assert!(texts[3].starts_with("I answer commands."), "{texts:?}");
    assert!(texts[4].contains("/help"), "{texts:?}");
    let handled = app
        .count("SELECT COUNT(*) FROM messages WHERE platform = 'messenger' AND direction = 'in' AND status = 'handled'")
        .await;
    assert_eq!(handled, 3);
    app.stop().await;
}

async fn a_notice_outside_the_window_waits_for_the_next_message(backend: Backend) {
    const TRACK: &str = "1ShortSongForTests0001";
    let db = TestDb::new(backend).await;
    let fake = FakeMessenger::start().await;
    let spotify = FakeSpotify::start().await;
    spotify.add_track(TRACK, "Short Song", "The Testers", 1000);
    let (f, s) = (fake.clone(), spotify.clone());
    let app = spawn_app_at_own_url(&db, move |c| {
        s.configure(c);
        configure(c, &f);
    })
    .await;
    let bob = "424242";
    fake.user_wrote(bob);
    post_events(&app, vec![text(bob, "m_b1", "/handle bob_m")]).await;
    fake.wait_for("bob's handle", |f| f.sent_to(bob).len() == 1)
        .await;

    let alice = app.session("alice").await;
    let accept = app.say(&alice, "/invite").await.last().unwrap().clone();
    post_events(&app, vec![text(bob, "m_b2", &accept)]).await;
    fake.wait_for("bob accepted", |f| f.sent_to(bob).len() == 2)
        .await;
    assert!(
        fake.texts_to(bob)[1].contains("are friends now"),
        "{:?}",
        fake.texts_to(bob)
    );

    // A day passes without bob writing.
    let day_ago = Utc::now().timestamp_millis() - WINDOW_MS - 3_600_000;
    fake.user_wrote_at(bob, day_ago);
    app.core
        .store
        .db()
        .execute_unprepared(&format!(
            "UPDATE identities SET window_opened_at = {day_ago} WHERE platform = 'messenger'"
        ))
        .await
        .unwrap();
    // …which the app would have seen as a day of silence (the window is written at most
    // once a minute, and remembered).
    let bob_user = app
        .count("SELECT user_id FROM identities WHERE platform = 'messenger'")
        .await;
    app.core.store.forget_cached_user(bob_user);

    let reply = app
        .reply(&alice, &format!("/share bob_m spotify:track:{TRACK}"))
        .await;
    assert!(reply.starts_with("Shared ‘Short Song’"), "{reply}");
    let held = "SELECT COUNT(*) FROM messages WHERE platform = 'messenger' AND status = 'held'";
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.count(held).await == 1
        })
        .await
    );
    assert_eq!(
        fake.sent_to(bob).len(),
        2,
        "nothing was sent outside the window"
    );
    let shares = app.reply(&alice, "/shares").await;
    assert!(
        shares.contains("not delivered yet: it will reach @bob_m when they next message Segue"),
        "{shares}"
    );

    // bob writes again: the share arrives first (an update), then the answer.
    fake.user_wrote(bob);
    post_events(&app, vec![text(bob, "m_b3", "/ping")]).await;
    fake.wait_for("the held share and the answer", |f| {
        f.sent_to(bob).len() == 4
    })
    .await;
    let sent = fake.sent_to(bob);
    assert_eq!(
        sent[2].text(),
        "@alice shared ‘Short Song’ by The Testers with you."
    );
    assert_eq!(sent[2].messaging_type, "UPDATE");
    let button = &sent[2].message["attachment"]["payload"]["buttons"][0];
    assert_eq!(button["type"], "web_url");
    assert_eq!(button["title"], "Listen on Spotify");
    assert_eq!(
        (sent[3].text(), sent[3].messaging_type.as_str()),
        ("pong", "RESPONSE")
    );
    assert_eq!(app.count(held).await, 0);
    let shares = app.reply(&alice, "/shares").await;
    assert!(!shares.contains("not delivered yet"), "{shares}");
    assert!(fake.rejected().is_empty(), "{:?}", fake.rejected());
    app.stop().await;
}

async fn a_person_who_blocked_the_page_is_dead_lettered(backend: Backend) {
    let (_db, fake, app) = setup(backend, &["555"]).await;
    post_events(&app, vec![text("555", "m_1", "/ping")]).await;
    fake.wait_for("pong", |f| f.sent_to("555").len() == 1).await;
    fake.block("555");
    let to = ChatAddress::new(Platform::Messenger, "555");
    app.core
        .outbox
        .send(vec![Outgoing::new(to, Reply::text("a notice"))])
        .await
        .unwrap();
    let dead = "SELECT COUNT(*) FROM messages WHERE platform = 'messenger' AND status = 'dead'";
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.count(dead).await == 1
        })
        .await
    );
    let unreachable = "SELECT COUNT(*) FROM identities WHERE platform = 'messenger' AND unreachable_at IS NOT NULL";
    assert_eq!(app.count(unreachable).await, 1);
    assert_eq!(fake.sent_to("555").len(), 1);
    app.stop().await;
}

/// `segue register-commands` sets the Get Started button and the menu.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_commands_sets_the_messenger_profile() {
    let fake = FakeMessenger::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_segue"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SEGUE_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .arg("register-commands")
        .current_dir(dir.path())
        .env("SEGUE_MESSENGER__PAGE_ACCESS_TOKEN", &fake.token)
        .env("SEGUE_MESSENGER__APP_SECRET", APP_SECRET)
        .env("SEGUE_MESSENGER__VERIFY_TOKEN", VERIFY)
        .env("SEGUE_MESSENGER__GRAPH_URL", &fake.url)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("messenger: Get Started button and "),
        "{stdout}"
    );
    let profiles = fake.profiles();
    assert_eq!(profiles.len(), 1);
    let items = profiles[0]["persistent_menu"][0]["call_to_actions"]
        .as_array()
        .unwrap();
    assert!(items.iter().all(|i| i["type"] == "postback"));
    assert!(
        stdout.contains(&format!("{} menu items", items.len())),
        "{stdout}"
    );
}

/// The fake refuses what Meta refuses (so the tests above prove something).
#[tokio::test]
async fn the_fake_graph_api_enforces_the_rules() {
    let fake = FakeMessenger::start().await;
    fake.user_wrote("1");
    fake.user_wrote_at("2", Utc::now().timestamp_millis() - WINDOW_MS - 1000);
    let client = reqwest::Client::new();
    let send = |token: &str, body: Value| {
        let req = client
            .post(format!("{}/me/messages", fake.url))
            .query(&[("access_token", token)])
            .json(&body);
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let msg = |psid: &str, message: Value| json!({ "recipient": { "id": psid }, "messaging_type": "UPDATE", "message": message });
    let code = |v: &Value| {
        (
            v["error"]["code"].as_i64(),
            v["error"]["error_subcode"].as_i64(),
        )
    };
    let token = fake.token.clone();
    let (s, _) = send(&token, msg("1", json!({ "text": "hi" }))).await;
    assert_eq!(s, 200);
    let (s, v) = send("wrong", msg("1", json!({ "text": "hi" }))).await;
    assert_eq!((s, code(&v)), (400, (Some(190), None)));
    let (_, v) = send(&token, msg("1", json!({ "text": "x".repeat(2001) }))).await;
    assert_eq!(code(&v), (Some(100), None));
    let buttons: Vec<Value> = (0..4)
        .map(|i| json!({ "type": "web_url", "url": "https://x", "title": format!("b{i}") }))
        .collect();
    let template = json!({ "attachment": { "type": "template", "payload": { "template_type": "button", "text": "t", "buttons": buttons } } });
    let (_, v) = send(&token, msg("1", template)).await;
    assert_eq!(code(&v), (Some(100), None));
    let replies: Vec<Value> = (0..14)
        .map(|i| json!({ "content_type": "text", "title": format!("q{i}"), "payload": "p" }))
        .collect();
    let (_, v) = send(
        &token,
        msg("1", json!({ "text": "t", "quick_replies": replies })),
    )
    .await;
    assert_eq!(code(&v), (Some(100), None));
    let (_, v) = send(&token, json!({ "recipient": { "id": "1" }, "messaging_type": "UPDATE", "message": { "text": "t" }, "extra": 1 })).await;
    assert_eq!(code(&v), (Some(100), None));
    let (_, v) = send(
        &token,
        json!({ "messaging_type": "UPDATE", "message": { "text": "t" } }),
    )
    .await;
    assert_eq!(code(&v), (Some(100), None));
    let (_, v) = send(&token, msg("2", json!({ "text": "late" }))).await;
    assert_eq!(code(&v), (Some(10), Some(2_018_278)));
    assert_eq!(fake.sent().len(), 1);
}
