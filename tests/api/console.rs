//! The web console end to end: sessions, commands, bad input, the audit log and the
//! event stream.

use std::time::Duration;

use segue_bot::store::entities::message::status;
use segue_bot::{ChatAddress, Outgoing, Platform, Reply};
use serde_json::json;

use crate::helpers::{Backend, TestDb, backend_tests, spawn_app};

backend_tests!(
    help_lists_every_command,
    handles_are_validated_and_unique,
    bad_input_gets_the_documented_answer,
    every_message_is_audited_both_ways,
    event_stream_replays_after_last_event_id,
    notifications_wait_for_the_console,
    long_replies_are_split,
    replies_overtaking_notifications_lose_nothing,
    one_bad_message_does_not_fail_others,
    a_chat_goes_on_after_a_restart,
);

async fn help_lists_every_command(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let token = app.session("carol").await;
    let help = app.reply(&token, "/help").await;
    let table = segue_bot::handlers::table();
    for spec in table.iter() {
        assert!(
            help.contains(&spec.usage()) && help.contains(spec.description),
            "/help lacks /{}: {help}",
            spec.name
        );
    }
    let one = app.reply(&token, "/help handle").await;
    assert!(one.starts_with("/handle <name>"), "{one}");
    assert_eq!(app.reply(&token, "/ping").await, "pong");
    assert_eq!(
        app.reply(&token, "/PING").await,
        "pong",
        "names ignore case"
    );
    app.stop().await;
}

async fn handles_are_validated_and_unique(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let carol = app.session("Carol").await;
    let dave = app.session("Dave").await;

    assert!(app.reply(&carol, "/me").await.contains("You are @carol."));
    assert!(
        app.reply(&carol, "/handle ab")
            .await
            .contains("at least 3 characters")
    );
    assert!(
        app.reply(&carol, "/handle bad-name")
            .await
            .contains("only use letters")
    );
    assert!(
        app.reply(&carol, &format!("/handle {}", "x".repeat(33)))
            .await
            .contains("at most 32")
    );
    assert_eq!(
        app.reply(&carol, "/handle Carol_92").await,
        "Done: your handle is now @carol_92."
    );
    assert!(
        app.reply(&carol, "/me")
            .await
            .contains("You are @carol_92.")
    );
    // Taken, whatever the case.
    assert_eq!(
        app.reply(&dave, "/handle CAROL_92").await,
        "@carol_92 is taken. Please pick another one."
    );
    assert!(app.reply(&dave, "/me").await.contains("You are @dave."));
    // A second "Carol" gets a free handle of her own.
    let carol2 = app.session("Carol").await;
    app.reply(&carol, "/handle carol").await;
    let me = app.reply(&carol2, "/me").await;
    assert!(me.contains("@carol") && !me.contains("@carol_92"), "{me}");
    app.stop().await;
}

async fn bad_input_gets_the_documented_answer(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let token = app.session("erin").await;

    let unknown = app.reply(&token, "/dance").await;
    assert_eq!(
        unknown,
        "I don't know /dance. Send /help to see what I can do."
    );
    let missing = app.reply(&token, "/handle").await;
    assert!(
        missing.starts_with("Usage: /handle <name> (missing <name>)"),
        "{missing}"
    );
    let extra = app.reply(&token, "/ping now").await;
    assert!(extra.starts_with("Usage: /ping"), "{extra}");
    let chatter = app.reply(&token, "hello there").await;
    assert!(chatter.contains("/help"), "{chatter}");

    let url = format!("{}/console/api/messages", app.address);
    // 2 MB body.
    let big = json!({ "text": "a".repeat(2 * 1024 * 1024) });
    // Its own client: the server answers before reading the body, then drops the connection.
    let res = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&token)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_large");
    // Malformed JSON.
    let res = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"text\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_json");
    // Bad and missing sessions.
    for auth in [Some("not-a-session"), None] {
        let (status, body) = app
            .post_json("/console/api/messages", auth, &json!({"text": "/ping"}))
            .await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let res = app
        .client
        .get(format!("{}/console/api/events?session=nope", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Empty text, neither text nor data, a bad name.
    let (status, _) = app
        .post_json(
            "/console/api/messages",
            Some(&token),
            &json!({"text": "  "}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = app
        .post_json("/console/api/messages", Some(&token), &json!({}))
        .await;
    assert_eq!(status, 400);
    let (status, body) = app
        .post_json("/console/api/session", None, &json!({"name": ""}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    // Unknown API path: JSON 404.
    let res = app
        .client
        .get(format!("{}/console/api/nope", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    // Nothing of this broke the session.
    assert_eq!(app.reply(&token, "/ping").await, "pong");
    app.stop().await;
}

async fn every_message_is_audited_both_ways(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let token = app.session("frank").await;
    app.reply(&token, "/ping").await;
    app.reply(&token, "/nope").await;

    let session = app.core.store.session(&token).await.unwrap().unwrap();
    let log = app
        .core
        .store
        .chat_log(&ChatAddress::new(Platform::Web, &session.web_id), 100)
        .await
        .unwrap();
    let summary: Vec<(String, String, String)> = log
        .iter()
        .map(|m| (m.direction.clone(), m.text.clone(), m.status.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("in".into(), "/ping".into(), status::HANDLED.into()),
            ("out".into(), "pong".into(), status::DELIVERED.into()),
            ("in".into(), "/nope".into(), status::REJECTED.into()),
            (
                "out".into(),
                "I don't know /nope. Send /help to see what I can do.".into(),
                status::DELIVERED.into()
            ),
        ]
    );
    assert_eq!(log[0].detail.as_deref(), Some("ping"));
    assert_eq!(log[1].in_reply_to, Some(log[0].id));
    assert_eq!(log[0].user_id, Some(session.user_id));
    assert!(log[0].duration_ms.is_some() && log[1].finished_at.is_some());
    app.stop().await;
}

async fn event_stream_replays_after_last_event_id(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let token = app.session("gina").await;
    let mut live = app.events(&token, None).await;
    app.reply(&token, "/ping").await;
    app.reply(&token, "/help ping").await;
    let first = live.next(crate::helpers::WAIT).await.expect("first event");
    let second = live.next(crate::helpers::WAIT).await.expect("second event");
    assert_eq!(first.data["text"], "pong");
    assert_eq!(first.data["id"], first.id.as_str());
    assert!(second.data["text"].as_str().unwrap().starts_with("/ping"));
    drop(live);

    app.reply(&token, "/me").await;
    // Reconnecting after the first event gets the second and the one sent while away.
    let mut again = app.events(&token, Some(&first.id)).await;
    let a = again.next(crate::helpers::WAIT).await.unwrap();
    let b = again.next(crate::helpers::WAIT).await.unwrap();
    assert_eq!(a.id, second.id);
    assert!(
        b.data["text"]
            .as_str()
            .unwrap()
            .starts_with("You are @gina")
    );
    assert!(again.next(Duration::from_millis(300)).await.is_none());
    app.stop().await;
}

async fn notifications_wait_for_the_console(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let token = app.session("hana").await;
    let who = app.core.store.session(&token).await.unwrap().unwrap();
    let chat = ChatAddress::new(Platform::Web, &who.web_id);

    // Nobody connected: held.
    let sent = app
        .core
        .outbox
        .send(vec![Outgoing::new(
            chat.clone(),
            Reply::text("while you were away"),
        )])
        .await
        .unwrap();
    let id = sent[0].id;
    assert!(
        crate::helpers::eventually(crate::helpers::WAIT, || async {
            app.core.store.message(id).await.unwrap().unwrap().status == status::HELD
        })
        .await
    );
    // Connecting delivers it, once.
    let mut events = app.events(&token, None).await;
    let ev = events
        .next(crate::helpers::WAIT)
        .await
        .expect("held message");
    assert_eq!(ev.data["text"], "while you were away");
    assert!(
        crate::helpers::eventually(crate::helpers::WAIT, || async {
            app.core.store.message(id).await.unwrap().unwrap().status == status::DELIVERED
        })
        .await
    );
    // Connected: a new notification arrives live.
    app.core
        .outbox
        .send(vec![Outgoing::new(chat.clone(), Reply::text("live one"))])
        .await
        .unwrap();
    let ev = events
        .next(crate::helpers::WAIT)
        .await
        .expect("live message");
    assert_eq!(ev.data["text"], "live one");
    drop(events);
    let mut again = app.events(&token, None).await;
    assert!(
        again.next(Duration::from_millis(300)).await.is_none(),
        "nothing twice"
    );
    app.stop().await;
}

async fn long_replies_are_split(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let token = app.session("ivan").await;
    let who = app.core.store.session(&token).await.unwrap().unwrap();
    let chat = ChatAddress::new(Platform::Web, &who.web_id);
    let mut events = app.events(&token, None).await;
    // 7,499 characters: two messages at the web limit of 4,096.
    let long = "word ".repeat(1500);
    app.core
        .outbox
        .send(vec![Outgoing::new(chat, Reply::text(long.trim_end()))])
        .await
        .unwrap();
    let a = events.next(crate::helpers::WAIT).await.unwrap();
    let b = events.next(crate::helpers::WAIT).await.unwrap();
    let (a, b) = (
        a.data["text"].as_str().unwrap().to_owned(),
        b.data["text"].as_str().unwrap().to_owned(),
    );
    assert!(a.chars().count() <= 4096 && b.chars().count() <= 4096);
    assert!(
        format!("{a} {b}") == long.trim_end(),
        "pieces of {} and {} chars",
        a.len(),
        b.len()
    );
    assert!(events.next(Duration::from_millis(300)).await.is_none());
    app.stop().await;
}

async fn replies_overtaking_notifications_lose_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let token = app.session("jack").await;
    let who = app.core.store.session(&token).await.unwrap().unwrap();
    let chat = ChatAddress::new(Platform::Web, &who.web_id);
    let mut events = app.events(&token, None).await;
    // A notification gets its id first, then a reply (newer id) reaches the stream first.
    let (rows, _) = app.core.outbox.rows_for(
        Outgoing::new(chat.clone(), Reply::text("older notification")),
        None,
        false,
    );
    let older = rows[0].id;
    app.reply(&token, "/ping").await;
    app.core.store.record(rows).await.unwrap();
    app.core.outbox.wake();
    let mut texts = Vec::new();
    for _ in 0..2 {
        texts.push(events.next(crate::helpers::WAIT).await.expect("event").data["text"].clone());
    }
    assert_eq!(texts, vec![json!("pong"), json!("older notification")]);
    assert!(
        crate::helpers::eventually(crate::helpers::WAIT, || async {
            app.core.store.message(older).await.unwrap().unwrap().status == status::DELIVERED
        })
        .await
    );
    app.stop().await;
}

async fn one_bad_message_does_not_fail_others(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let token = app.session("kate").await;
    // Control characters are refused at the edge (PostgreSQL can't store NUL).
    let (status, body) = app
        .post_json(
            "/console/api/messages",
            Some(&token),
            &json!({"text": "/ping\u{0}"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // Many users at once share commits; all are answered and audited.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let t = app.session(&format!("u{i}")).await;
        let client = app.client.clone();
        let url = format!("{}/console/api/messages", app.address);
        tasks.push(tokio::spawn(async move {
            let res = client
                .post(url)
                .bearer_auth(t)
                .json(&json!({"text": "/ping"}))
                .send()
                .await
                .unwrap();
            res.status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(app.core.store.counts().await.unwrap().inbound, 20);
    // Wrong method and bad query strings answer in JSON too.
    let res = app
        .client
        .get(format!("{}/console/api/messages", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let res = app
        .client
        .get(format!(
            "{}/console/api/events?last_event_id=abc",
            app.address
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_query");
    app.stop().await;
}

/// A chat that talked before a restart is answered after it (its row exists, the
/// process's cache of known chats is empty).
async fn a_chat_goes_on_after_a_restart(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let token = app.session("carol").await;
    assert_eq!(app.reply(&token, "/ping").await, "pong");
    app.stop().await;
    let again = spawn_app(&db).await;
    assert_eq!(again.reply(&token, "/ping").await, "pong");
    again.stop().await;
}
