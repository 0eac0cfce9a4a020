//! Discord end to end, both modes, through the real app against the fake Discord: the
//! signed shared fixtures, bad and missing signatures, a replayed interaction, a slow
//! handler that must defer, a button press, notifications by DM (closed DMs
//! dead-lettered, 429s waited out, channel limits kept), command registration, and the
//! gateway (HELLO / IDENTIFY / READY / INTERACTION_CREATE).

use std::time::Duration;

use segue::config::DiscordMode;
use segue_bot::store::entities::message::status;
use segue_bot::{Button, ChatAddress, Outgoing, Platform, Reply, Secret};
use serde_json::{Value, json};

use crate::fake_discord::{self, APP_ID, FakeDiscord, PUBLIC_KEY, TOKEN, fixture, fresh, sign};
use crate::helpers::{
    Backend, TestApp, TestDb, backend_tests, eventually, spawn_app_with, test_config,
};

backend_tests!(
    interactions_endpoint_end_to_end,
    slow_handlers_defer_then_edit,
    notifications_go_by_dm,
    gateway_end_to_end,
    tracks_are_suggested_from_spotify,
);

const GUILD: &str = "1200000000000000001";

fn config(db: &TestDb, fake: &FakeDiscord, mode: DiscordMode) -> segue::Config {
    let mut c = test_config(db);
    c.discord.token = Secret::new(TOKEN);
    c.discord.application_id = APP_ID.to_owned();
    c.discord.public_key = PUBLIC_KEY.to_owned();
    c.discord.api_url = fake.url.parse().unwrap();
    c.discord.mode = mode;
    c.discord.guild_id = GUILD.to_owned();
    // Answers come inline unless a test asks for deferrals: a loaded CI machine must not
    // turn a slow handler into a deferral the test didn't expect.
    c.discord.defer_after = Duration::from_secs(30);
    c
}

/// Posts a body to the endpoint with the given signature headers; an answer must fit
/// the spec's interaction response.
async fn post_signed(app: &TestApp, body: &str, ts: &str, sig: Option<&str>) -> (u16, Value) {
    let mut req = app
        .client
        .post(format!("{}/webhooks/discord", app.address))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(sig) = sig {
        req = req
            .header("x-signature-ed25519", sig)
            .header("x-signature-timestamp", ts);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(Value::Null);
    if status == 200 {
        let problems = SPEC.with(|spec| {
            let schema = spec.request_schema(
                "post",
                "/interactions/{interaction_id}/{interaction_token}/callback",
            );
            spec.check(schema, &body)
        });
        assert!(problems.is_empty(), "{body}: {problems:?}");
    }
    (status, body)
}

thread_local! {
    /// The spec, for checking the endpoint's answers (loaded once per test thread).
    static SPEC: crate::openapi::Spec = crate::openapi::Spec::load(&format!(
        "{}/../shared/specs/discord-openapi-v10.json",
        env!("CARGO_MANIFEST_DIR")
    ));
}

/// Signs and posts an interaction as Discord would now.
async fn interact(app: &TestApp, interaction: &Value) -> (u16, Value) {
    let body = interaction.to_string();
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = sign(&ts, body.as_bytes());
    post_signed(app, &body, &ts, Some(&sig)).await
}

fn command(id: u64, name: &str, options: Value) -> Value {
    let mut v = fresh("command_share.json", id);
    v["data"]["name"] = json!(name);
    v["data"]["options"] = options;
    v
}

async fn registered(fake: &FakeDiscord) -> Vec<Value> {
    let path = format!("/applications/{APP_ID}/guilds/{GUILD}/commands");
    assert!(
        fake.wait_for(Duration::from_secs(10), |calls| calls
            .iter()
            .any(|c| c.path.ends_with(&path)))
            .await,
        "commands are registered at start"
    );
    fake.bodies("PUT", &path)
}

async fn interactions_endpoint_end_to_end(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = FakeDiscord::start().await;
    let app = spawn_app_with(config(&db, &fake, DiscordMode::Interactions), Vec::new()).await;

    // The command table, registered in the guild with one bulk overwrite, fits the spec.
    let defs = registered(&fake).await;
    let names: Vec<&str> = defs[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    for name in ["help", "share", "nowplaying", "np", "link"] {
        assert!(names.contains(&name), "{name} registered: {names:?}");
    }

    // The shared fixtures, with their recorded signatures.
    let (ts, sig) = fake_discord::fixture_signature("ping.json");
    let (status, body) = post_signed(&app, &fixture("ping.json"), &ts, Some(&sig)).await;
    assert_eq!((status, &body), (200, &json!({"type": 1, "data": null})));

    let (ts, sig) = fake_discord::fixture_signature("command_dm_help.json");
    let help = fixture("command_dm_help.json");
    let (status, body) = post_signed(&app, &help, &ts, Some(&sig)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], 4);
    let text = body["data"]["content"].as_str().unwrap();
    assert!(text.contains("/share"), "help lists the commands: {text}");

    // A replayed interaction is not handled twice.
    let (status, again) = post_signed(&app, &help, &ts, Some(&sig)).await;
    assert_eq!(status, 200);
    assert_eq!(again["data"]["content"], "That was already handled.");
    assert_eq!(again["data"]["flags"], 64, "only the person sees it");
    let handled = app
        .count("SELECT COUNT(*) FROM messages WHERE direction = 'in' AND external_id = '1300000000000000003'")
        .await;
    assert_eq!(handled, 1);

    let (ts, sig) = fake_discord::fixture_signature("command_share.json");
    let (status, body) = post_signed(&app, &fixture("command_share.json"), &ts, Some(&sig)).await;
    assert_eq!(status, 200);
    let text = body["data"]["content"].as_str().unwrap();
    // Options arrive as the handler's arguments; without Spotify set up, sharing says so.
    assert!(text.contains("Spotify isn't set up"), "{text}");

    let (ts, sig) = fake_discord::fixture_signature("button.json");
    let (status, body) = post_signed(&app, &fixture("button.json"), &ts, Some(&sig)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["content"],
        "That button doesn't do anything any more."
    );

    // Wrong, missing and stale signatures: 401.
    let (ts, sig) = fake_discord::fixture_signature("ping.json");
    let mut bad = sig.clone();
    bad.replace_range(0..2, if &sig[0..2] == "00" { "01" } else { "00" });
    assert_eq!(
        post_signed(&app, &fixture("ping.json"), &ts, Some(&bad))
            .await
            .0,
        401
    );
    assert_eq!(
        post_signed(&app, &fixture("ping.json"), &ts, None).await.0,
        401
    );
    assert_eq!(
        post_signed(&app, &fixture("ping.json"), "1700000001", Some(&sig))
            .await
            .0,
        401
    );
    assert_eq!(
        post_signed(&app, &help.replace("help", "ping"), &ts, Some(&sig))
            .await
            .0,
        401
    );

    // Signed but not an interaction: 400.
    let (status, body) = interact(&app, &json!({"hello": "world"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_interaction");

    // /start has a button; pressing it runs /help.
    let (_, start) = interact(&app, &command(2_000_001, "start", json!([]))).await;
    let button = &start["data"]["components"][0]["components"][0];
    assert_eq!(button["custom_id"], "/help", "{start}");
    let mut press = fresh("button.json", 2_000_002);
    press["data"]["custom_id"] = json!("/help");
    let (_, pressed) = interact(&app, &press).await;
    assert!(
        pressed["data"]["content"]
            .as_str()
            .unwrap()
            .contains("/share"),
        "{pressed}"
    );

    // Options arrive typed: /handle with its name.
    let (_, set) = interact(
        &app,
        &command(
            2_000_003,
            "handle",
            json!([{"name": "name", "type": 3, "value": "nelly_d"}]),
        ),
    )
    .await;
    assert!(
        set["data"]["content"].as_str().unwrap().contains("nelly"),
        "{set}"
    );
    // Markdown is escaped so the handle shows as typed.
    let (_, me) = interact(&app, &command(2_000_004, "me", json!([]))).await;
    assert!(
        me["data"]["content"]
            .as_str()
            .unwrap()
            .contains("nelly\\_d"),
        "{me}"
    );

    // /invite's two replies (the explanation, the line to forward) come as one answer:
    // no follow-up that could race the response.
    let (_, invite) = interact(&app, &command(2_000_007, "invite", json!([]))).await;
    let text = invite["data"]["content"].as_str().unwrap();
    assert!(
        text.contains("Send this line") && text.contains("/accept "),
        "{text}"
    );
    assert!(
        fake.bodies("POST", "/webhooks/").is_empty(),
        "no follow-ups"
    );

    // Autocomplete: a friend's handle is suggested as Nelly types.
    app.session("bob").await;
    let nelly = app
        .count("SELECT user_id FROM identities WHERE platform = 'discord'")
        .await;
    let bob_id = app.count("SELECT id FROM users WHERE handle = 'bob'").await;
    app.core
        .store
        .befriend(nelly, bob_id, chrono::Utc::now().timestamp_millis())
        .await
        .unwrap();
    let mut typing = command(
        2_000_005,
        "share",
        json!([{"name": "friend", "type": 3, "value": "b", "focused": true}]),
    );
    typing["type"] = json!(4);
    let (status, suggested) = interact(&app, &typing).await;
    assert_eq!(status, 200);
    assert_eq!(
        suggested,
        json!({"type": 8, "data": {"choices": [{"name": "@bob", "value": "bob"}]}})
    );
    typing["id"] = json!("2000006");
    typing["data"]["options"][0]["value"] = json!("x");
    let (_, none) = interact(&app, &typing).await;
    assert_eq!(none["data"]["choices"], json!([]));

    // An answer that replaces its question updates the button's message (type 7), and
    // takes the button away.
    let (_, question) = interact(&app, &command(2_000_008, "forget", json!([]))).await;
    assert_eq!(question["type"], 4);
    let yes = &question["data"]["components"][0]["components"][0];
    assert_eq!(yes["custom_id"], "/forget yes", "{question}");
    let mut press = fresh("button.json", 2_000_009);
    press["data"]["custom_id"] = json!("/forget yes");
    let (_, done) = interact(&app, &press).await;
    assert_eq!(done["type"], 7, "{done}");
    assert!(
        done["data"]["content"]
            .as_str()
            .unwrap()
            .starts_with("Done: I've forgotten everything"),
        "{done}"
    );
    assert_eq!(done["data"]["components"], json!([]));

    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    app.stop().await;
}

async fn slow_handlers_defer_then_edit(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = FakeDiscord::start().await;
    let mut c = config(&db, &fake, DiscordMode::Interactions);
    // Every handler is "slow" against a zero deadline.
    c.discord.defer_after = Duration::ZERO;
    let app = spawn_app_with(c, Vec::new()).await;

    let (status, body) = interact(&app, &command(3_000_001, "help", json!([]))).await;
    assert_eq!(status, 200);
    assert_eq!(body["type"], 5, "deferred: {body}");
    let edit = format!("/webhooks/{APP_ID}/token-3000001/messages/@original");
    assert!(
        fake.wait_for(crate::helpers::WAIT, |calls| calls
            .iter()
            .any(|c| c.path == format!("/api/v10{edit}")))
            .await,
        "the deferral is edited"
    );
    let edits = fake.bodies("PATCH", &edit);
    assert!(edits[0]["content"].as_str().unwrap().contains("/share"));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    app.stop().await;
}

async fn notifications_go_by_dm(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = FakeDiscord::start().await;
    let app = spawn_app_with(config(&db, &fake, DiscordMode::Interactions), Vec::new()).await;
    registered(&fake).await;

    // Nelly uses Segue in a server channel only; her notifications go to her DMs.
    let (_, _) = interact(&app, &command(4_000_001, "ping", json!([]))).await;
    let user_id = app
        .count("SELECT user_id FROM identities WHERE platform = 'discord'")
        .await;
    let to = app
        .core
        .store
        .notify_address(user_id)
        .await
        .unwrap()
        .expect("reachable by DM");
    assert_eq!(
        to,
        ChatAddress::new(Platform::Discord, "@80351110224678912")
    );
    let mut note = Outgoing::new(
        to.clone(),
        Reply::text("bob played ‘Song’ by Artist").with_button(Button::link(
            "Listen on Spotify",
            "https://open.spotify.com/track/4uLU6hMCjMI75M1A2tKUQC",
        )),
    );
    note.user_id = Some(user_id);
    // The first send meets a 429: it is waited out, not lost.
    fake.inject(
        "POST",
        "/channels/",
        429,
        json!({"message": "You are being rate limited.", "retry_after": 0.2, "global": false}),
    );
    app.core.outbox.send(vec![note.clone()]).await.unwrap();
    // Then 7 more to the same DM: never over the channel's 5 per 5 s.
    for i in 0..7 {
        let mut n = note.clone();
        n.text = format!("note {i}");
        app.core.outbox.send(vec![n]).await.unwrap();
    }
    assert!(
        fake.wait_for(Duration::from_secs(15), |calls| calls
            .iter()
            .filter(|c| c.path.contains("/channels/") && c.status == 200)
            .count()
            == 8)
            .await,
        "all 8 delivered: {:?}",
        fake.calls()
    );
    let sent = fake.bodies("POST", "/channels/");
    assert!(sent[0]["content"].as_str().unwrap().contains("bob played"));
    assert_eq!(sent[0]["components"][0]["components"][0]["style"], 5);
    assert_eq!(sent[0]["allowed_mentions"]["parse"], json!([]), "no pings");
    assert_eq!(sent[7]["content"], "note 6", "in order");
    assert_eq!(
        fake.bodies("POST", "/users/@me/channels").len(),
        1,
        "the DM channel is opened once"
    );
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());

    // Closed DMs (50007): dead-lettered at once, and the person marked unreachable.
    fake.close_dms("80351110224678912");
    let mut c2 = note.clone();
    c2.text = "once more".into();
    app.core.outbox.send(vec![c2]).await.unwrap();
    let dead = eventually(crate::helpers::WAIT, || async {
        app.count(&format!(
            "SELECT COUNT(*) FROM messages WHERE status = '{}' AND platform = 'discord'",
            status::DEAD
        ))
        .await
            == 1
    })
    .await;
    assert!(dead, "dead-lettered");
    let unreachable = app
        .count("SELECT COUNT(*) FROM identities WHERE platform = 'discord' AND unreachable_at IS NOT NULL")
        .await;
    assert_eq!(unreachable, 1);
    let attempts = fake.calls().iter().filter(|c| c.status == 403).count();
    assert_eq!(attempts, 1, "not retried");
    app.stop().await;
}

async fn gateway_end_to_end(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = FakeDiscord::start().await;
    let app = spawn_app_with(config(&db, &fake, DiscordMode::Gateway), Vec::new()).await;
    // No endpoint in gateway mode.
    let (status, _) = interact(&app, &command(5_000_000, "help", json!([]))).await;
    assert_eq!(status, 404);

    let identify = fake
        .identified(Duration::from_secs(15))
        .await
        .expect("the client identifies");
    assert_eq!(
        identify["token"]
            .as_str()
            .unwrap()
            .trim_start_matches("Bot "),
        TOKEN
    );

    let mut help = fresh("command_dm_help.json", 5_000_001);
    help["token"] = json!("gw-token");
    fake.dispatch_interaction(help);
    let callback = "/interactions/5000001/gw-token/callback";
    assert!(
        fake.wait_for(Duration::from_secs(10), |calls| calls
            .iter()
            .any(|c| c.path.ends_with(callback)))
            .await,
        "answered through the callback"
    );
    let answer = &fake.bodies("POST", callback)[0];
    assert_eq!(answer["type"], 4);
    assert!(
        answer["data"]["content"]
            .as_str()
            .unwrap()
            .contains("/share")
    );
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    app.stop().await;
}

async fn tracks_are_suggested_from_spotify(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = FakeDiscord::start().await;
    let spotify = crate::fake_spotify::FakeSpotify::start().await;
    spotify.add_track("4uLU6hMCjMI75M1A2tKUQC", "Never Again", "Artist", 200_000);
    let mut c = config(&db, &fake, DiscordMode::Interactions);
    spotify.configure(&mut c);
    let app = spawn_app_with(c, Vec::new()).await;
    let mut typing = command(
        6_000_001,
        "share",
        json!([
            {"name": "friend", "type": 3, "value": "bob"},
            {"name": "track", "type": 3, "value": "never", "focused": true}
        ]),
    );
    typing["type"] = json!(4);
    let (status, suggested) = interact(&app, &typing).await;
    assert_eq!(status, 200);
    assert_eq!(
        suggested["data"]["choices"],
        json!([{"name": "Never Again — Artist", "value": "spotify:track:4uLU6hMCjMI75M1A2tKUQC"}])
    );
    // A link is complete as it is: nothing to suggest, and no Spotify call.
    typing["id"] = json!("6000002");
    typing["data"]["options"][1]["value"] =
        json!("https://open.spotify.com/track/4uLU6hMCjMI75M1A2tKUQC");
    let (_, none) = interact(&app, &typing).await;
    assert_eq!(none["data"]["choices"], json!([]));
    app.stop().await;
}
