//! Telegram end to end, both modes, through the real app against the fake Bot API:
//! commands, buttons, groups and `@botname`, the shared fixtures, redeliveries, secrets.

use segue::config::TelegramMode;
use segue::startup::Role;
use std::time::Duration;

use segue_bot::store::entities::message::status;
use segue_bot::{ChatAddress, Outgoing, Platform, Reply, Secret};
use serde_json::{Value, json};

use crate::fake_telegram::FakeTelegram;
use crate::helpers::{Backend, TestDb, backend_tests, spawn_app_with, spawn_role, test_config};

backend_tests!(
    polling_end_to_end,
    webhook_end_to_end,
    rate_limits_are_never_exceeded,
    blocked_users_are_dead_lettered,
    a_group_upgraded_to_a_supergroup_keeps_its_chat,
    replies_to_the_bot_in_a_group_are_answered,
    a_pressed_button_can_edit_its_message,
    roles_split_the_work_across_processes,
);

const SECRET: &str = "s3cr_et-1";

fn config(db: &TestDb, fake: &FakeTelegram, mode: TelegramMode) -> segue::Config {
    let mut c = test_config(db);
    c.telegram.token = Secret::new(fake.token.clone());
    c.telegram.api_url = fake.url.parse().unwrap();
    c.telegram.mode = mode;
    c.telegram.webhook_secret = Secret::new(SECRET);
    c.server.public_url = "https://segue.example".parse().unwrap();
    c
}

fn chat(id: i64) -> Value {
    if id > 0 {
        json!({ "id": id, "type": "private", "first_name": "Alice" })
    } else {
        json!({ "id": id, "type": "supergroup", "title": "Friends" })
    }
}

fn user(id: i64) -> Value {
    json!({ "id": id, "is_bot": false, "first_name": format!("U{id}"), "username": format!("u{id}") })
}

pub(crate) fn message(update_id: i64, chat_id: i64, from: i64, text: &str) -> Value {
    json!({ "update_id": update_id, "message": {
        "message_id": update_id, "date": 1_700_000_000, "chat": chat(chat_id), "from": user(from), "text": text
    }})
}

fn press(update_id: i64, chat_id: i64, from: i64, data: &str) -> Value {
    json!({ "update_id": update_id, "callback_query": {
        "id": format!("q{update_id}"), "from": user(from), "chat_instance": "ci", "data": data,
        "message": { "message_id": 1, "date": 1_700_000_000, "chat": chat(chat_id), "text": "menu" }
    }})
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../shared/fixtures/telegram/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn polling_end_to_end(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = FakeTelegram::start().await;
    let app = spawn_app_with(config(&db, &fake, TelegramMode::Polling), Vec::new()).await;

    fake.wait_for("the command menu", |f| !f.calls("setMyCommands").is_empty())
        .await;
    let commands = &fake.calls("setMyCommands")[0].params["commands"];
    assert_eq!(
        commands[1],
        json!({ "command": "help", "description": "List the commands, or explain one" })
    );
    assert_eq!(fake.calls("getMe").len(), 1);

    // Private chat: commands, a handle, a button press.
    fake.push_update(message(1, 111, 111, "/help"));
    fake.push_update(message(2, 111, 111, "/handle tg_alice"));
    fake.push_update(press(3, 111, 111, "/ping"));
    fake.wait_for("three replies", |f| f.sent_to(111).len() == 3)
        .await;
    let sent = fake.sent_to(111);
    assert!(sent[0].starts_with("Here is what I can do"), "{sent:?}");
    assert_eq!(sent[1], "Done: your handle is now @tg_alice.");
    assert_eq!(sent[2], "pong");
    fake.wait_for("the press answered", |f| {
        !f.calls("answerCallbackQuery").is_empty()
    })
    .await;
    assert_eq!(
        fake.calls("answerCallbackQuery")[0].params["callback_query_id"],
        "q3"
    );

    // A group: only commands for us.
    for (i, text) in ["hello all", "/ping@other_bot", "/ping@segue_bot", "/me"]
        .iter()
        .enumerate()
    {
        fake.push_update(message(10 + i as i64, -100200, 222, text));
    }
    fake.wait_for("the group's replies", |f| f.sent_to(-100200).len() == 2)
        .await;
    let group = fake.sent_to(-100200);
    assert_eq!(group[0], "pong");
    assert!(group[1].starts_with("You are @u222."), "{group:?}");

    // The shared fixtures (update ids 10000-10004), in update id order as Telegram sends
    // them: pushed out of order, a getUpdates between the two pushes would move the offset
    // past the later-pushed, lower id and the fake would never serve it.
    for name in [
        "command_private.json",
        "command_group_addressed.json",
        "callback_query.json",
        "plain_text.json",
        "edited_message.json",
    ] {
        fake.push_update(fixture(name));
    }
    let answered = crate::helpers::eventually(Duration::from_secs(20), || async {
        fake.sent_to(123456789).len() == 2
    })
    .await;
    if !answered {
        let log = app
            .core
            .store
            .chat_log(&ChatAddress::new(Platform::Telegram, "123456789"), 20)
            .await
            .unwrap();
        panic!(
            "fixture answers missing; sent {:?}; log {log:#?}",
            fake.sent_to(123456789)
        );
    }
    let alice = fake.sent_to(123456789);
    assert_eq!(
        alice[0],
        "Sharing needs Spotify, and Spotify isn't set up on this Segue yet: the operator needs to set spotify.client_id and spotify.client_secret."
    );
    assert_eq!(
        alice[1],
        "I answer commands. Send /help to see what I can do."
    );
    fake.wait_for("the fixture press answered", |f| {
        f.calls("answerCallbackQuery")
            .iter()
            .any(|c| c.params["callback_query_id"] == "4382bfdwdsb323b2d9")
    })
    .await;
    // The addressed group command is answered; the "vote:skip" press in a group is not a
    // command, so it gets no message.
    assert_eq!(
        fake.sent_to(-1001234567890),
        vec!["I don't know /skip. Send /help to see what I can do."]
    );
    assert!(
        fake.rejected().is_empty(),
        "requests outside the spec: {:?}",
        fake.rejected()
    );
    assert!(fake.calls("setWebhook").is_empty());
    app.stop().await;
}

async fn webhook_end_to_end(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = FakeTelegram::start().await;
    let app = spawn_app_with(config(&db, &fake, TelegramMode::Webhook), Vec::new()).await;
    fake.wait_for("setWebhook", |f| !f.calls("setWebhook").is_empty())
        .await;
    let set = &fake.calls("setWebhook")[0].params;
    assert_eq!(set["url"], "https://segue.example/webhooks/telegram");
    assert_eq!(set["secret_token"], SECRET);
    assert_eq!(
        set["allowed_updates"],
        json!(["message", "edited_message", "callback_query"])
    );

    let url = format!("{}/webhooks/telegram", app.address);
    let post = |body: Value, secret: Option<&str>| {
        let mut req = app.client.post(&url).json(&body);
        if let Some(s) = secret {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        req.send()
    };
    let res = post(fixture("command_private.json"), Some(SECRET))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The same update again (Telegram retried it): answered once.
    assert_eq!(
        post(fixture("command_private.json"), Some(SECRET))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post(message(7, 123456789, 123456789, "/ping"), Some(SECRET))
            .await
            .unwrap()
            .status(),
        200
    );
    fake.wait_for("two replies", |f| f.sent_to(123456789).len() >= 2)
        .await;
    assert_eq!(
        fake.sent_to(123456789),
        vec![
            "Sharing needs Spotify, and Spotify isn't set up on this Segue yet: the operator needs to set spotify.client_id and spotify.client_secret.",
            "pong"
        ]
    );

    for secret in [Some("wrong"), None] {
        let res = post(message(8, 5, 5, "/ping"), secret).await.unwrap();
        assert_eq!(res.status(), 401);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    for bad in [
        json!({"message": {}}),
        json!({"update_id": 9, "message": {"bogus": true}}),
    ] {
        let res = post(bad, Some(SECRET)).await.unwrap();
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_update");
    }
    assert!(fake.sent_to(5).is_empty());
    assert!(
        fake.calls("getUpdates").is_empty(),
        "no polling in webhook mode"
    );
    assert!(
        fake.rejected().is_empty(),
        "requests outside the spec: {:?}",
        fake.rejected()
    );
    app.stop().await;
}

async fn rate_limits_are_never_exceeded(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = FakeTelegram::start().await;
    let app = spawn_app_with(config(&db, &fake, TelegramMode::Polling), Vec::new()).await;
    // 300 messages to 30 private chats, and 6 to one group, all at once.
    let mut out = Vec::new();
    for i in 0..10 {
        for chat in 1..=30 {
            out.push(Outgoing::new(
                ChatAddress::new(Platform::Telegram, chat.to_string()),
                Reply::text(format!("m{i}")),
            ));
        }
    }
    for i in 0..6 {
        out.push(Outgoing::new(
            ChatAddress::new(Platform::Telegram, "-100777"),
            Reply::text(format!("g{i}")),
        ));
    }
    app.core.outbox.send(out).await.unwrap();
    fake.wait_up_to(Duration::from_secs(40), "all 306 messages", |f| {
        f.calls("sendMessage").len() == 306
    })
    .await;
    assert_eq!(
        fake.violations(),
        Vec::<String>::new(),
        "no message broke Telegram's limits"
    );
    for chat in [1, 17, 30] {
        let expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        assert_eq!(fake.sent_to(chat), expected, "chat {chat} in order");
    }
    assert_eq!(fake.sent_to(-100777).len(), 6);
    // Rows are marked delivered when their round ends, just after the sends.
    let drained = crate::helpers::eventually(crate::helpers::WAIT, || async {
        app.core.store.outbox_depth().await.unwrap() == 0
    })
    .await;
    assert!(drained, "every message marked delivered");
    app.stop().await;
}

async fn blocked_users_are_dead_lettered(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = FakeTelegram::start().await;
    fake.block(999);
    let app = spawn_app_with(config(&db, &fake, TelegramMode::Polling), Vec::new()).await;
    fake.push_update(message(1, 999, 999, "/ping"));
    let chat = ChatAddress::new(Platform::Telegram, "999");
    let dead = crate::helpers::eventually(crate::helpers::WAIT, || async {
        let log = app.core.store.chat_log(&chat, 10).await.unwrap();
        log.iter()
            .any(|m| m.direction == "out" && m.status == status::DEAD)
    })
    .await;
    assert!(dead, "the reply to a blocked user is dead-lettered");
    let log = app.core.store.chat_log(&chat, 10).await.unwrap();
    let reply = log.iter().find(|m| m.direction == "out").unwrap();
    assert_eq!(reply.attempts, 1, "not retried");
    assert!(reply.detail.as_deref().unwrap().contains("blocked"));
    let person = app
        .core
        .store
        .person_details(reply.user_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(person.identities[0].unreachable_at.is_some());
    app.stop().await;
}

async fn a_group_upgraded_to_a_supergroup_keeps_its_chat(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = FakeTelegram::start().await;
    let app = spawn_app_with(config(&db, &fake, TelegramMode::Webhook), Vec::new()).await;
    let url = format!("{}/webhooks/telegram", app.address);
    let post = |body: Value| {
        app.client
            .post(&url)
            .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
            .json(&body)
            .send()
    };
    let group = json!({ "id": -4001, "type": "group", "title": "Friends" });
    let ping = json!({ "update_id": 1, "message": {
        "message_id": 1, "date": 1_700_000_000, "chat": group, "from": user(7), "text": "/ping"
    }});
    assert_eq!(post(ping).await.unwrap().status(), 200);
    // Telegram's service message in the old group when it becomes a supergroup.
    let upgraded = json!({ "update_id": 2, "message": {
        "message_id": 2, "date": 1_700_000_001, "chat": group, "from": user(7),
        "migrate_to_chat_id": -1_000_000_004_001_i64
    }});
    assert_eq!(post(upgraded).await.unwrap().status(), 200);
    let chats = |id: &str| {
        let sql =
            format!("SELECT COUNT(*) FROM chats WHERE platform = 'telegram' AND chat_id = '{id}'");
        let app = &app;
        async move { app.count(&sql).await }
    };
    assert_eq!(chats("-4001").await, 0, "the old id is gone");
    assert_eq!(
        chats("-1000000004001").await,
        1,
        "the chat carries the new id"
    );
    // The supergroup goes on as the same chat.
    let again = json!({ "update_id": 3, "message": {
        "message_id": 3, "date": 1_700_000_002,
        "chat": { "id": -1_000_000_004_001_i64, "type": "supergroup", "title": "Friends" },
        "from": user(7), "text": "/ping"
    }});
    assert_eq!(post(again).await.unwrap().status(), 200);
    assert_eq!(chats("-1000000004001").await, 1);
    // The reply reaches the supergroup.
    fake.wait_for("a reply to the supergroup", |f| {
        f.calls("sendMessage")
            .iter()
            .any(|c| c.params["chat_id"] == json!(-1_000_000_004_001_i64))
    })
    .await;
    app.stop().await;
}

/// A group message that replies to `to` (a message from `from_user`).
fn reply_in_group(update_id: i64, group: i64, from: i64, text: &str, to: Value) -> Value {
    let mut update = message(update_id, group, from, text);
    update["message"]["reply_to_message"] = json!({
        "message_id": 500 + update_id, "date": 1_700_000_000, "chat": chat(group),
        "from": to, "text": "earlier"
    });
    update
}

async fn replies_to_the_bot_in_a_group_are_answered(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = FakeTelegram::start().await;
    let app = spawn_app_with(config(&db, &fake, TelegramMode::Polling), Vec::new()).await;
    fake.wait_for("getMe", |f| !f.calls("getMe").is_empty())
        .await;
    let segue = json!({ "id": 42, "is_bot": true, "first_name": "Segue", "username": "segue_bot" });
    let other_bot =
        json!({ "id": 43, "is_bot": true, "first_name": "Other", "username": "other_bot" });
    let group = -100300;
    // Replies to Segue are meant for it: plain text and unknown commands get help.
    fake.push_update(reply_in_group(1, group, 7, "what now?", segue.clone()));
    fake.push_update(reply_in_group(2, group, 7, "/skip", segue.clone()));
    // Replies to people and to other bots are group chatter, as before.
    fake.push_update(reply_in_group(3, group, 7, "nice one", user(8)));
    fake.push_update(reply_in_group(4, group, 7, "/skip", other_bot));
    fake.push_update(message(5, group, 7, "what now?"));
    // A command is a command, reply or not.
    fake.push_update(reply_in_group(6, group, 7, "/ping", user(8)));
    // A chat's updates are handled, and answered, in order: the last update's answer
    // comes after everything else.
    fake.wait_for("the last update's answer", |f| {
        f.sent_to(group).last().is_some_and(|t| t == "pong")
    })
    .await;
    assert_eq!(
        fake.sent_to(group),
        vec![
            "I answer commands. Send /help to see what I can do.",
            "I don't know /skip. Send /help to see what I can do.",
            "pong",
        ]
    );
    let log = app
        .core
        .store
        .chat_log(&ChatAddress::new(Platform::Telegram, group.to_string()), 20)
        .await
        .unwrap();
    let ignored = log
        .iter()
        .filter(|m| m.direction == "in" && m.status == status::IGNORED)
        .count();
    assert_eq!(ignored, 3, "the chatter is logged as ignored: {log:#?}");
    assert!(fake.rejected().is_empty(), "{:?}", fake.rejected());
    app.stop().await;
}

/// A button press on the message `message_id` in a private chat.
fn press_on(update_id: i64, chat_id: i64, message_id: i64, data: &str) -> Value {
    let mut update = press(update_id, chat_id, chat_id, data);
    update["callback_query"]["message"]["message_id"] = json!(message_id);
    update
}

async fn a_pressed_button_can_edit_its_message(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = FakeTelegram::start().await;
    let app = spawn_app_with(config(&db, &fake, TelegramMode::Polling), Vec::new()).await;
    let alice = 3131;
    fake.push_update(message(1, alice, alice, "/forget"));
    fake.wait_for("the question", |f| f.sent_to(alice).len() == 1)
        .await;
    let question = fake.sent_to(alice).remove(0);
    let id = fake.message_id(alice, &question).unwrap();
    let (_, keyboard) = fake.shown(alice, id).unwrap();
    assert_eq!(
        keyboard["inline_keyboard"][0][0]["callback_data"],
        "/forget yes"
    );

    // Pressing "Yes, forget me" replaces the question, button and all.
    fake.push_update(press_on(2, alice, id, "/forget yes"));
    fake.wait_for("the edit", |f| !f.calls("editMessageText").is_empty())
        .await;
    let edit = fake.calls("editMessageText").remove(0).params;
    assert_eq!(edit["chat_id"], alice);
    assert_eq!(edit["message_id"], id);
    assert!(edit.get("reply_markup").is_none(), "the button is gone");
    let done =
        "Done: I've forgotten everything about you. If you write to me again, we start fresh.";
    assert_eq!(fake.shown(alice, id).unwrap(), (json!(done), Value::Null));
    assert_eq!(
        fake.sent_to(alice).len(),
        1,
        "no new message: {:?}",
        fake.sent_to(alice)
    );

    // The same answer typed (no button) is a new message.
    fake.push_update(message(3, alice, alice, "/forget yes"));
    fake.wait_for("a new message", |f| f.sent_to(alice).len() == 2)
        .await;
    assert_eq!(fake.sent_to(alice)[1], done);

    // A button on a message Telegram won't edit (gone, or too old): the answer is sent
    // as a new message instead of being lost.
    fake.push_update(press_on(4, alice, 999_999, "/forget yes"));
    fake.wait_for("the answer anew", |f| f.sent_to(alice).len() == 3)
        .await;
    assert_eq!(fake.sent_to(alice)[2], done);
    assert_eq!(fake.calls("editMessageText").len(), 2);
    fake.wait_for("every press answered", |f| {
        f.calls("answerCallbackQuery").len() == 2
    })
    .await;
    let drained = crate::helpers::eventually(crate::helpers::WAIT, || async {
        app.core.store.outbox_depth().await.unwrap() == 0
    })
    .await;
    assert!(drained, "nothing left in the outbox");
    assert!(fake.rejected().is_empty(), "{:?}", fake.rejected());
    app.stop().await;
}

/// `segue serve --role …`: three processes on one database. Only the gateway polls
/// Telegram and sets the menu, only the worker delivers (the gateway's replies wait in the
/// outbox table for it), only the web role serves HTTP.
async fn roles_split_the_work_across_processes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = FakeTelegram::start().await;
    let cfg = || config(&db, &fake, TelegramMode::Polling);
    let web = spawn_role(Role::Web, cfg(), Vec::new()).await;
    let token = web.session("Ann").await;
    assert_eq!(web.say(&token, "/ping").await, vec!["pong"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        fake.calls("getUpdates").is_empty() && fake.calls("setMyCommands").is_empty(),
        "the web role leaves Telegram to the gateway"
    );

    let gateway = spawn_role(Role::Gateway, cfg(), Vec::new()).await;
    fake.wait_for("the command menu", |f| !f.calls("setMyCommands").is_empty())
        .await;
    fake.push_update(message(1, 111, 111, "/ping"));
    let pending = "SELECT count(*) FROM messages WHERE direction = 'out' AND status = 'pending'";
    assert!(
        crate::helpers::eventually(crate::helpers::WAIT, || async {
            web.count(pending).await == 1
        })
        .await,
        "the gateway records its reply for a worker"
    );
    assert!(
        fake.sent_to(111).is_empty(),
        "nobody delivers without a worker"
    );

    let worker = spawn_role(Role::Worker, cfg(), Vec::new()).await;
    fake.wait_for("the reply, sent by the worker", |f| {
        f.sent_to(111) == ["pong"]
    })
    .await;
    // Outside the web role the listener serves health and metrics only.
    let get = |path: &str| {
        let url = format!("{}{path}", worker.address);
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/healthz").await, 200);
    assert_eq!(get("/metrics").await, 200);
    assert_eq!(get("/console").await, 404, "no console on a worker");
    assert_eq!(
        fake.calls("setMyCommands").len(),
        1,
        "only the gateway sets the menu"
    );
    for app in [worker, gateway, web] {
        app.stop().await;
    }
}
