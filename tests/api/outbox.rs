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
);

fn transient() -> DeliverError {
    DeliverError::Transient {
        reason: "platform unavailable".into(),
        retry_after: None,
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
    assert!(eventually(Duration::from_secs(5), || async { down.calls() >= 1 }).await);
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
        eventually(Duration::from_secs(5), || async {
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
    let incoming = Incoming {
        external_id: Some("update-1".into()),
        chat: tg_chat("42"),
        chat_kind: ChatKind::Private,
        user: UserRef {
            platform: Platform::Telegram,
            id: "42".into(),
            display_name: "Jo".into(),
            username: Some("jo".into()),
        },
        content: Content::Text("/ping".into()),
        bot_username: Some("segue_bot".into()),
        private_chat: None,
        to_bot: false,
        on_message: None,
    };
    let segue_bot::Handled::Replied(replies) = app
        .router
        .handle(incoming, ReplyMode::Outbox)
        .await
        .unwrap()
    else {
        panic!("handled");
    };
    let id = replies[0].id;
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.core.store.message(id).await.unwrap().unwrap().status == status::DEAD
        })
        .await
    );
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
        eventually(Duration::from_secs(10), || async {
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
        eventually(Duration::from_secs(10), || async {
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
        eventually(Duration::from_secs(10), || async {
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
