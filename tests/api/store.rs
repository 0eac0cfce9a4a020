//! Storage below the router: the group commit that writes audit and outbox rows (an
//! array INSERT on PostgreSQL, multi-row INSERTs on SQLite) keeps what it is given, and
//! processes starting together on one database migrate it once.

use sea_orm::EntityTrait;
use segue_bot::store::NewMessage;
use segue_bot::store::entities::message::{self, status};
use segue_bot::{Button, ChatAddress, Platform};

use crate::helpers::{Backend, TestDb, backend_tests, spawn_app};

backend_tests!(
    the_group_commit_keeps_every_column,
    a_row_that_cant_be_written_fails_only_its_caller,
);

/// A row with every optional column set, and one with none.
fn full_and_bare(ids: (i64, i64)) -> (NewMessage, NewMessage) {
    let full = NewMessage {
        id: ids.0,
        inbound: false,
        chat: ChatAddress::new(Platform::Telegram, "-100123"),
        user_id: Some(77),
        external_id: Some("upd-9".into()),
        in_reply_to: Some(ids.1),
        text: "héllo, «world» 🎵\nline two".into(),
        buttons: vec![
            Button::link("Open", "https://open.spotify.com/track/x"),
            Button::command("Again", "/ping"),
        ],
        status: status::PENDING,
        detail: Some("waiting for a retry".into()),
        // Not due before 2100: the app's outbox worker, running beside the test, must
        // not pick the row up and change it while it is read back.
        next_attempt_at: Some(4_102_444_800_123),
        created_at: 1_700_000_000_000,
        finished_at: Some(1_700_000_000_456),
        duration_ms: Some(42),
    };
    let bare = NewMessage {
        id: ids.1,
        inbound: true,
        chat: ChatAddress::new(Platform::Web, "s1"),
        user_id: None,
        external_id: None,
        in_reply_to: None,
        text: String::new(),
        buttons: Vec::new(),
        status: status::HANDLED,
        detail: None,
        next_attempt_at: None,
        created_at: 1_700_000_000_001,
        finished_at: None,
        duration_ms: None,
    };
    (full, bare)
}

async fn the_group_commit_keeps_every_column(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let store = app.core.store.clone();
    let (full, bare) = full_and_bare((store.next_id(), store.next_id()));
    store
        .record(vec![full.clone(), bare.clone()])
        .await
        .expect("recorded");
    for row in [&full, &bare] {
        let stored = message::Entity::find_by_id(row.id)
            .one(store.db())
            .await
            .expect("read back")
            .expect("the row is there");
        assert_eq!(stored, row.model());
    }
    app.stop().await;
}

async fn a_row_that_cant_be_written_fails_only_its_caller(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let store = app.core.store.clone();
    let (taken, _) = full_and_bare((store.next_id(), store.next_id()));
    store.record(vec![taken.clone()]).await.expect("recorded");
    // Callers at once, so they may share a commit: one of them reuses a stored id.
    let fresh: Vec<NewMessage> = (0..8)
        .map(|_| full_and_bare((store.next_id(), store.next_id())).1)
        .collect();
    let bad = store.record(vec![taken.clone()]);
    let good = futures::future::join_all(fresh.iter().map(|m| store.record(vec![m.clone()])));
    let (bad, good) = tokio::join!(bad, good);
    assert!(bad.is_err(), "a duplicate id is refused");
    assert!(good.iter().all(Result::is_ok), "{good:?}");
    for row in &fresh {
        let stored = message::Entity::find_by_id(row.id)
            .one(store.db())
            .await
            .expect("read back");
        assert_eq!(stored, Some(row.model()));
    }
    app.stop().await;
}

/// Processes started together on a fresh PostgreSQL database (`segue serve --role …`)
/// take turns migrating instead of racing to create the same tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_migrate_once() {
    if crate::helpers::postgres_url().is_none() {
        eprintln!("SEGUE_TEST_DATABASE_URL is not set: PostgreSQL run skipped");
        return;
    }
    for _ in 0..3 {
        let db = TestDb::new(Backend::Postgres).await;
        let config = crate::helpers::test_config(&db);
        let starts = (0..3).map(|_| segue::startup::open_database(&config));
        for result in futures::future::join_all(starts).await {
            result.expect("every process gets an up-to-date database");
        }
    }
}

/// Processes on one PostgreSQL database never make the same message id: each holds a
/// node number of its own for as long as it runs, and a process that finds none free
/// refuses to start, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_on_one_database_hold_their_own_node_numbers() {
    use sea_orm::sqlx::{self, Connection};
    if crate::helpers::postgres_url().is_none() {
        eprintln!("SEGUE_TEST_DATABASE_URL is not set: PostgreSQL run skipped");
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    // Another process holds every number but one.
    let free: u16 = rand::random::<u16>() % 1024;
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let all_but_one = "SELECT COUNT(pg_advisory_lock($1, n)) FROM generate_series(0, 1023) AS n \
                       WHERE n <> $2";
    let held: i64 = sqlx::query_scalar(all_but_one)
        .bind(segue_bot::store::NODE_LOCK_CLASS)
        .bind(i32::from(free))
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert_eq!(held, 1023);

    let app = spawn_app(&db).await;
    assert_eq!(app.core.store.node(), free);
    let id = app.core.store.next_id();
    assert_eq!(
        (id >> 12) & 1023,
        i64::from(free),
        "ids carry the node number"
    );

    let Err(refused) = segue::Application::build(crate::helpers::test_config(&db)).await else {
        panic!("a third process started with no node number left");
    };
    let said = format!("{refused:#}");
    assert!(
        said.contains("node numbers for message ids are held"),
        "{said}"
    );
    app.stop().await;
    other.close().await.unwrap();
}
