//! The outbox: accepted messages survive a restart and are delivered once; transient
//! failures are retried with backoff, permanent ones dead-lettered; a chat's order holds.

use std::sync::Arc;
use std::time::Duration;

use segue_bot::store::entities::message::status;
use segue_bot::{
    ChatAddress, ChatKind, Content, Deliver, DeliverError, Incoming, Outgoing, Platform, Reply,
    ReplyMode, UserRef,
};

use crate::helpers::{
    Backend, FakePlatform, TestDb, backend_tests, eventually, spawn_app_with, test_config,
};

backend_tests!(
    accepted_messages_survive_a_restart,
    permanent_failures_are_dead_lettered,
    transient_failures_are_retried_then_given_up,
    a_chats_messages_keep_their_order,
    replies_are_handed_over_without_a_scan,
    a_reply_waits_behind_its_chats_retry,
    handed_over_replies_keep_order_when_a_send_fails,
    rows_left_by_a_restart_keep_a_reply_behind_them,
);

fn transient() -> DeliverError {
    DeliverError::Transient {
        reason: "platform unavailable".into(),
        retry_after: None,
    }
}

/// A 429: the platform asks for `after` before the next try.
fn rate_limited(after: Duration) -> DeliverError {
    DeliverError::Transient {
        reason: "Too Many Requests".into(),
        retry_after: Some(after),
    }
}

fn tg_chat(id: &str) -> ChatAddress {
    ChatAddress::new(Platform::Telegram, id)
}

async fn accepted_messages_survive_a_restart(backend: Backend) {
    let db = TestDb::new(backend).await;
    let down = FakePlatform::new(Platform::Telegram);
    down.fail_with((0..1000).map(|_| transient()).collect());
    let app = spawn_app_with(test_config(&db), vec![down.clone() as Arc<dyn Deliver>]).await;
    let sent = app
        .core
        .outbox
        .send(vec![Outgoing::new(tg_chat("7"), Reply::text("survives"))])
        .await
        .unwrap();
    let id = sent[0].id;
    assert!(eventually(crate::helpers::WAIT, || async { down.calls() >= 1 }).await);
    app.stop().await;
    let row = {
        let again = spawn_app_with(test_config(&db), Vec::new()).await;
        let row = again.core.store.message(id).await.unwrap().unwrap();
        again.stop().await;
        row
    };
    assert_eq!(row.status, status::PENDING, "still owed after the restart");

    let up = FakePlatform::new(Platform::Telegram);
    let app = spawn_app_with(test_config(&db), vec![up.clone() as Arc<dyn Deliver>]).await;
    assert!(
        eventually(crate::helpers::WAIT, || async {
            app.core.store.message(id).await.unwrap().unwrap().status == status::DELIVERED
        })
        .await,
        "delivered after the restart"
    );
    // Another scan finds nothing more to do: delivered exactly once.
    app.core.outbox.deliver_due().await.unwrap();
    assert_eq!(up.per_id.lock().unwrap().get(&id), Some(&1));
    assert_eq!(up.delivered_texts(), vec!["survives"]);
    app.stop().await;
}

async fn permanent_failures_are_dead_lettered(backend: Backend) {
    let db = TestDb::new(backend).await;
    let tg = FakePlatform::new(Platform::Telegram);
    tg.fail_with(vec![DeliverError::Permanent {
        reason: "Forbidden: bot was blocked by the user".into(),
    }]);
    let app = spawn_app_with(test_config(&db), vec![tg.clone() as Arc<dyn Deliver>]).await;
    let id = reply_id(&app, ping("42", "update-1", "/ping")).await;
    assert!(reaches(&app, id, status::DEAD).await);
    for _ in 0..3 {
        app.core.outbox.deliver_due().await.unwrap();
    }
    assert_eq!(tg.calls(), 1, "a permanent failure is not retried");
    let row = app.core.store.message(id).await.unwrap().unwrap();
    assert_eq!(row.attempts, 1);
    assert!(row.detail.unwrap().contains("blocked"));
    let person = app
        .core
        .store
        .person_details(row.user_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        person.identities[0].unreachable_at.is_some(),
        "marked unreachable"
    );
    let counts = app.core.store.counts().await.unwrap();
    assert_eq!(counts.dead, 1);
    app.stop().await;
}

async fn transient_failures_are_retried_then_given_up(backend: Backend) {
    let db = TestDb::new(backend).await;
    let tg = FakePlatform::new(Platform::Telegram);
    tg.fail_with(vec![transient(), transient()]);
    let app = spawn_app_with(test_config(&db), vec![tg.clone() as Arc<dyn Deliver>]).await;
    let sent = app
        .core
        .outbox
        .send(vec![Outgoing::new(
            tg_chat("1"),
            Reply::text("third time lucky"),
        )])
        .await
        .unwrap();
    let id = sent[0].id;
    assert!(
        eventually(crate::helpers::WAIT, || async {
            app.core.store.message(id).await.unwrap().unwrap().status == status::DELIVERED
        })
        .await
    );
    assert_eq!(
        app.core.store.message(id).await.unwrap().unwrap().attempts,
        3
    );
    assert_eq!(tg.calls(), 3);

    // Failing every time: dead after max_attempts (5 in tests), not retried forever.
    tg.fail_with((0..100).map(|_| transient()).collect());
    let sent = app
        .core
        .outbox
        .send(vec![Outgoing::new(tg_chat("2"), Reply::text("never"))])
        .await
        .unwrap();
    let id = sent[0].id;
    assert!(
        eventually(crate::helpers::WAIT, || async {
            app.core.store.message(id).await.unwrap().unwrap().status == status::DEAD
        })
        .await
    );
    let row = app.core.store.message(id).await.unwrap().unwrap();
    assert_eq!(row.attempts, 5);
    assert!(row.detail.unwrap().starts_with("gave up after 5 attempts"));
    app.stop().await;
}

async fn a_chats_messages_keep_their_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let tg = FakePlatform::new(Platform::Telegram);
    tg.fail_with(vec![transient()]);
    let app = spawn_app_with(test_config(&db), vec![tg.clone() as Arc<dyn Deliver>]).await;
    let batch = (0..10)
        .map(|i| Outgoing::new(tg_chat("9"), Reply::text(format!("m{i}"))))
        .collect();
    app.core.outbox.send(batch).await.unwrap();
    assert!(
        eventually(crate::helpers::WAIT, || async {
            tg.delivered_texts().len() == 10
        })
        .await
    );
    let expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(
        tg.delivered_texts(),
        expected,
        "the first one's retry held the others back"
    );
    app.stop().await;
}

fn ping(chat: &str, update: &str, text: &str) -> Incoming {
    Incoming {
        external_id: Some(update.into()),
        chat: tg_chat(chat),
        chat_kind: ChatKind::Private,
        user: UserRef {
            platform: Platform::Telegram,
            id: chat.into(),
            display_name: "Jo".into(),
            username: Some("jo".into()),
        },
        content: Content::Text(text.into()),
        bot_username: Some("segue_bot".into()),
        private_chat: None,
        to_bot: false,
        on_message: None,
    }
}

/// The id of the (first) reply the router recorded, in outbox mode.
async fn reply_id(app: &crate::helpers::TestApp, incoming: Incoming) -> i64 {
    match app
        .router
        .handle(incoming, ReplyMode::Outbox)
        .await
        .unwrap()
    {
        segue_bot::Handled::Replied(replies) => replies[0].id,
        other => panic!("not handled: {other:?}"),
    }
}

/// Whether a message reaches `status` within 5 seconds.
async fn reaches(app: &crate::helpers::TestApp, id: i64, status: &str) -> bool {
    eventually(crate::helpers::WAIT, || async {
        app.core.store.message(id).await.unwrap().unwrap().status == status
    })
    .await
}

/// How many outbound messages the worker took from a lane (`segue_outbox_lane_total`).
fn lane_count(app: &crate::helpers::TestApp, lane: &str) -> u64 {
    let text = app.core.metrics.render(0);
    let prefix = format!("segue_outbox_lane_total{{lane=\"{lane}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

async fn fast_lane_opened(app: &crate::helpers::TestApp) {
    assert!(
        eventually(crate::helpers::WAIT, || async {
            app.core.outbox.fast_lane_open()
        })
        .await,
        "the worker opens the fast lane at start"
    );
}

async fn replies_are_handed_over_without_a_scan(backend: Backend) {
    let db = TestDb::new(backend).await;
    let tg = FakePlatform::new(Platform::Telegram);
    let app = spawn_app_with(test_config(&db), vec![tg.clone() as Arc<dyn Deliver>]).await;
    fast_lane_opened(&app).await;
    let id = reply_id(&app, ping("5", "u1", "/ping")).await;
    assert!(reaches(&app, id, status::DELIVERED).await);
    assert_eq!(tg.delivered_texts(), vec!["pong"]);
    let row = app.core.store.message(id).await.unwrap().unwrap();
    assert_eq!(row.attempts, 1);
    assert_eq!(row.next_attempt_at, None);
    assert_eq!(lane_count(&app, "fast"), 1, "handed over in memory");
    assert_eq!(lane_count(&app, "table"), 0, "no scan found it");
    // Delivered once, whatever later scans find.
    app.core.outbox.deliver_due().await.unwrap();
    assert_eq!(tg.per_id.lock().unwrap().get(&id), Some(&1));
    app.stop().await;
}

async fn a_reply_waits_behind_its_chats_retry(backend: Backend) {
    let db = TestDb::new(backend).await;
    let tg = FakePlatform::new(Platform::Telegram);
    // Long enough that the reply below is recorded while the chat still waits.
    tg.fail_with(vec![rate_limited(Duration::from_secs(2))]);
    let app = spawn_app_with(test_config(&db), vec![tg.clone() as Arc<dyn Deliver>]).await;
    fast_lane_opened(&app).await;
    app.core
        .outbox
        .send(vec![Outgoing::new(tg_chat("6"), Reply::text("first"))])
        .await
        .unwrap();
    assert!(eventually(crate::helpers::WAIT, || async { tg.calls() >= 1 }).await);
    // The notification waits for its retry: the chat is slow, the reply goes behind it.
    app.router
        .handle(ping("6", "u1", "/ping"), ReplyMode::Outbox)
        .await
        .unwrap();
    assert!(
        eventually(crate::helpers::WAIT, || async {
            tg.delivered_texts().len() == 2
        })
        .await
    );
    assert_eq!(tg.delivered_texts(), vec!["first", "pong"]);
    assert_eq!(lane_count(&app, "fast"), 0, "the reply took the table lane");
    // Nothing waits any more (once the round that sent them is done): the chat's next
    // reply is handed over.
    assert!(
        eventually(crate::helpers::WAIT, || async {
            !app.core.outbox.is_slow(&tg_chat("6"))
        })
        .await
    );
    app.router
        .handle(ping("6", "u2", "/ping"), ReplyMode::Outbox)
        .await
        .unwrap();
    assert!(
        eventually(crate::helpers::WAIT, || async {
            tg.delivered_texts().len() == 3
        })
        .await
    );
    assert_eq!(lane_count(&app, "fast"), 1);
    app.stop().await;
}

async fn handed_over_replies_keep_order_when_a_send_fails(backend: Backend) {
    let db = TestDb::new(backend).await;
    let tg = FakePlatform::new(Platform::Telegram);
    tg.fail_with(vec![transient()]);
    let app = spawn_app_with(test_config(&db), vec![tg.clone() as Arc<dyn Deliver>]).await;
    fast_lane_opened(&app).await;
    // The first reply's send fails; those after it, handed over in the same round or
    // later, wait for its retry.
    for (i, text) in ["/ping", "/ping hi", "/ping again"].into_iter().enumerate() {
        app.router
            .handle(ping("8", &format!("u{i}"), text), ReplyMode::Outbox)
            .await
            .unwrap();
    }
    assert!(
        eventually(crate::helpers::WAIT, || async {
            tg.delivered_texts().len() == 3
        })
        .await
    );
    let ids: Vec<i64> = tg.delivered.lock().unwrap().iter().map(|m| m.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "delivered in the order they were made");
    assert_eq!(tg.calls(), 4, "one failure, then each once");
    app.stop().await;
}

async fn rows_left_by_a_restart_keep_a_reply_behind_them(backend: Backend) {
    let db = TestDb::new(backend).await;
    let down = FakePlatform::new(Platform::Telegram);
    down.fail_with(vec![rate_limited(Duration::from_secs(2))]);
    let app = spawn_app_with(test_config(&db), vec![down.clone() as Arc<dyn Deliver>]).await;
    app.core
        .outbox
        .send(vec![Outgoing::new(tg_chat("7"), Reply::text("older"))])
        .await
        .unwrap();
    assert!(eventually(crate::helpers::WAIT, || async { down.calls() >= 1 }).await);
    app.stop().await;

    // After the restart the older row is still waiting out its retry: the new process
    // learns of it before it hands any reply over.
    let up = FakePlatform::new(Platform::Telegram);
    let app = spawn_app_with(test_config(&db), vec![up.clone() as Arc<dyn Deliver>]).await;
    fast_lane_opened(&app).await;
    app.router
        .handle(ping("7", "u1", "/ping"), ReplyMode::Outbox)
        .await
        .unwrap();
    assert!(
        eventually(crate::helpers::WAIT, || async {
            up.delivered_texts().len() == 2
        })
        .await
    );
    assert_eq!(up.delivered_texts(), vec!["older", "pong"]);
    app.stop().await;
}
