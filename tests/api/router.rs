//! The router as a platform adapter drives it: redeliveries, group chats and `@bot`
//! suffixes, buttons, the per-user rate limit, bans.

use std::sync::Arc;

use segue_bot::store::entities::message::status;
use segue_bot::{
    ChatAddress, ChatKind, Content, Deliver, Handled, Incoming, Platform, ReplyMode, UserRef,
};

use crate::helpers::{Backend, FakePlatform, TestDb, backend_tests, spawn_app_with, test_config};

backend_tests!(
    redelivered_events_are_answered_once,
    one_of_two_processes_answers_a_shared_event,
    redeliveries_dont_run_commands_that_change_things_again,
    events_arriving_together_are_deduped_each,
    handled_events_stay_handled_across_the_key_migration,
    a_senders_look_up_uses_the_identity_key,
    groups_answer_only_commands_for_us,
    buttons_run_their_command,
    users_over_the_rate_limit_are_told_to_slow_down,
    banned_users_get_no_answer,
);

fn incoming(
    chat: &str,
    kind: ChatKind,
    user: &str,
    content: Content,
    ext: Option<&str>,
) -> Incoming {
    Incoming {
        external_id: ext.map(str::to_owned),
        chat: ChatAddress::new(Platform::Telegram, chat),
        chat_kind: kind,
        user: UserRef {
            platform: Platform::Telegram,
            id: user.to_owned(),
            display_name: format!("user {user}"),
            username: None,
        },
        content,
        bot_username: Some("segue_bot".into()),
        private_chat: None,
        to_bot: false,
        on_message: None,
    }
}

fn text(t: &str) -> Content {
    Content::Text(t.to_owned())
}

fn replies(h: Handled) -> Vec<String> {
    match h {
        Handled::Replied(r) => r.into_iter().map(|r| r.text).collect(),
        Handled::Duplicate => panic!("unexpected duplicate"),
    }
}

/// Hands a message to the router as an outbox-mode platform does; the reply texts.
async fn send(app: &crate::helpers::TestApp, msg: Incoming) -> Vec<String> {
    replies(app.router.handle(msg, ReplyMode::Outbox).await.unwrap())
}

/// The audit log of a Telegram chat, oldest first.
async fn tg_log(
    app: &crate::helpers::TestApp,
    chat: &str,
) -> Vec<segue_bot::store::entities::message::Model> {
    app.core
        .store
        .chat_log(&ChatAddress::new(Platform::Telegram, chat), 100)
        .await
        .unwrap()
}

async fn app_with_fake(
    backend: Backend,
    tweak: impl FnOnce(&mut segue::Config),
) -> (crate::helpers::TestApp, Arc<FakePlatform>, TestDb) {
    let db = TestDb::new(backend).await;
    let tg = FakePlatform::new(Platform::Telegram);
    let mut config = test_config(&db);
    tweak(&mut config);
    let app = spawn_app_with(config, vec![tg.clone() as Arc<dyn Deliver>]).await;
    (app, tg, db)
}

async fn redelivered_events_are_answered_once(backend: Backend) {
    let (app, _tg, _db) = app_with_fake(backend, |_| {}).await;
    let msg = incoming("5", ChatKind::Private, "5", text("/ping"), Some("1001"));
    let first = app
        .router
        .handle(msg.clone(), ReplyMode::Outbox)
        .await
        .unwrap();
    assert_eq!(replies(first), vec!["pong"]);
    let again = app.router.handle(msg, ReplyMode::Outbox).await.unwrap();
    assert_eq!(again, Handled::Duplicate);
    let log = tg_log(&app, "5").await;
    assert_eq!(log.len(), 2, "one inbound, one reply");
    app.stop().await;
}

/// A read-only command (`/ping`) skips the dedupe read. Two processes handling the same
/// event at once both run it, and the group commit lets exactly one of them answer: the
/// other finds the event's marker taken and drops its reply unsent.
async fn one_of_two_processes_answers_a_shared_event(backend: Backend) {
    let (a, tg_a, db) = app_with_fake(backend, |_| {}).await;
    let tg_b = FakePlatform::new(Platform::Telegram);
    let b = spawn_app_with(test_config(&db), vec![tg_b.clone() as Arc<dyn Deliver>]).await;
    assert_eq!(
        send(
            &a,
            incoming("6", ChatKind::Private, "6", text("/ping"), None)
        )
        .await,
        ["pong"]
    );
    for n in 0..5 {
        let msg = incoming(
            "6",
            ChatKind::Private,
            "6",
            text("/ping"),
            Some(&format!("20{n}")),
        );
        let (x, y) = tokio::join!(
            a.router.handle(msg.clone(), ReplyMode::Outbox),
            b.router.handle(msg, ReplyMode::Outbox)
        );
        let answered = [x.unwrap(), y.unwrap()]
            .into_iter()
            .filter(|h| *h != Handled::Duplicate)
            .count();
        assert_eq!(answered, 1, "event {n}");
    }
    assert!(
        crate::helpers::eventually(crate::helpers::WAIT, || async {
            tg_a.calls() + tg_b.calls() == 6
        })
        .await,
        "six pongs sent: {} + {}",
        tg_a.calls(),
        tg_b.calls()
    );
    assert_eq!(
        tg_log(&a, "6").await.len(),
        12,
        "six events, each with one reply"
    );
    b.stop().await;
    a.stop().await;
}

/// A command that changes things (`/invite` makes a code) is checked against the dedupe
/// markers before it runs: its redelivery doesn't run it again.
async fn redeliveries_dont_run_commands_that_change_things_again(backend: Backend) {
    let (app, _tg, _db) = app_with_fake(backend, |_| {}).await;
    let msg = incoming("7", ChatKind::Private, "7", text("/invite"), Some("3001"));
    let first = app
        .router
        .handle(msg.clone(), ReplyMode::Outbox)
        .await
        .unwrap();
    assert!(matches!(first, Handled::Replied(_)), "{first:?}");
    let codes = app.count("SELECT count(*) FROM codes").await;
    assert_eq!(codes, 1);
    let again = app.router.handle(msg, ReplyMode::Outbox).await.unwrap();
    assert_eq!(again, Handled::Duplicate);
    assert_eq!(
        app.count("SELECT count(*) FROM codes").await,
        codes,
        "no second code"
    );
    app.stop().await;
}

/// Migration m20261203_000001 re-keys `seen_updates` (event id first): the markers
/// recorded before it, and after reverting it, still stop redeliveries.
async fn handled_events_stay_handled_across_the_key_migration(backend: Backend) {
    use segue_migrations::{Migrator, MigratorTrait};
    let (app, _tg, _db) = app_with_fake(backend, |_| {}).await;
    let db = app.core.store.db();
    let event = |ext: &str| incoming("9", ChatKind::Private, "9", text("/ping"), Some(ext));
    assert_eq!(send(&app, event("before")).await, vec!["pong"]);
    // Back to before m20261203_000001 (the newer migrations first).
    Migrator::down(db, Some(2))
        .await
        .expect("migration reverts");
    assert_eq!(
        app.router
            .handle(event("before"), ReplyMode::Outbox)
            .await
            .unwrap(),
        Handled::Duplicate,
        "kept by the down migration"
    );
    assert_eq!(send(&app, event("between")).await, vec!["pong"]);
    Migrator::up(db, None)
        .await
        .expect("migration applies again");
    for ext in ["before", "between"] {
        assert_eq!(
            app.router
                .handle(event(ext), ReplyMode::Outbox)
                .await
                .unwrap(),
            Handled::Duplicate,
            "{ext} kept by the up migration"
        );
    }
    assert_eq!(send(&app, event("after")).await, vec!["pong"]);
    assert_eq!(
        tg_log(&app, "9").await.len(),
        6,
        "three handled, each with its reply"
    );
    app.stop().await;
}

/// The dedupe reads of events arriving at once are answered by one query: each event
/// still gets its own answer, across chats and platforms' ids.
async fn events_arriving_together_are_deduped_each(backend: Backend) {
    let (app, _tg, _db) = app_with_fake(backend, |_| {}).await;
    let event = |i: usize| {
        incoming(
            &format!("{}", 700 + i % 7),
            ChatKind::Private,
            &format!("{}", 700 + i % 7),
            text("/ping"),
            Some(&format!("ev{i}")),
        )
    };
    // Ten handled before, one at a time.
    for i in 0..10 {
        assert_eq!(send(&app, event(i)).await, vec!["pong"]);
    }
    // Forty at once: the ten again and thirty new ones.
    let handled =
        futures::future::join_all((0..40).map(|i| app.router.handle(event(i), ReplyMode::Outbox)))
            .await;
    for (i, h) in handled.into_iter().enumerate() {
        let h = h.unwrap();
        if i < 10 {
            assert_eq!(h, Handled::Duplicate, "event {i} was handled before");
        } else {
            assert_eq!(replies(h), vec!["pong"], "event {i} is new");
        }
    }
    let inbound = app
        .count("SELECT COUNT(*) FROM messages WHERE direction = 'in'")
        .await;
    assert_eq!(inbound, 40, "each event recorded once");
    app.stop().await;
}

async fn groups_answer_only_commands_for_us(backend: Backend) {
    let (app, _tg, _db) = app_with_fake(backend, |_| {}).await;
    let group = |t: &str| incoming("-100", ChatKind::Group, "6", text(t), None);
    assert!(send(&app, group("hello all")).await.is_empty());
    assert!(send(&app, group("/ping@other_bot")).await.is_empty());
    assert!(send(&app, group("/dance")).await.is_empty());
    assert_eq!(send(&app, group("/ping@Segue_Bot")).await, vec!["pong"]);
    assert_eq!(send(&app, group("/ping")).await, vec!["pong"]);
    let unknown = send(&app, group("/dance@segue_bot")).await;
    assert!(unknown[0].contains("/help"));
    let log = tg_log(&app, "-100").await;
    let ignored = log.iter().filter(|m| m.status == status::IGNORED).count();
    assert_eq!(ignored, 3);
    app.stop().await;
}

async fn buttons_run_their_command(backend: Backend) {
    let (app, tg, _db) = app_with_fake(backend, |_| {}).await;
    let start = send(
        &app,
        incoming("8", ChatKind::Private, "8", text("/start"), None),
    )
    .await;
    assert!(start[0].starts_with("Hi user 8!"));
    let press = Content::Button {
        data: "/help".into(),
    };
    let help = send(&app, incoming("8", ChatKind::Private, "8", press, None)).await;
    assert!(help[0].starts_with("Here is what I can do"));
    // Slash commands already parsed by a platform (Discord) take typed options.
    let slash = Content::Command {
        name: "help".into(),
        options: vec![("command".into(), "ping".into())],
    };
    let one = send(&app, incoming("8", ChatKind::Private, "8", slash, None)).await;
    assert!(one[0].starts_with("/ping"));
    assert!(
        crate::helpers::eventually(crate::helpers::WAIT, || async {
            tg.delivered_texts().len() == 3
        })
        .await,
        "all three replies delivered through the outbox"
    );
    let delivered = tg.delivered.lock().unwrap().clone();
    assert_eq!(
        delivered[0].buttons.len(),
        1,
        "the start message carries its button"
    );
    app.stop().await;
}

async fn users_over_the_rate_limit_are_told_to_slow_down(backend: Backend) {
    let (app, _tg, _db) = app_with_fake(backend, |c| {
        c.limits.user_burst = 3;
        c.limits.user_per_second = 0.01;
    })
    .await;
    // Group chatter doesn't count against the limit.
    for _ in 0..5 {
        let chatter = incoming("-5", ChatKind::Group, "3", text("just talking"), None);
        app.router.handle(chatter, ReplyMode::Outbox).await.unwrap();
    }
    let mut answers = Vec::new();
    for _ in 0..6 {
        let msg = incoming("3", ChatKind::Private, "3", text("/ping"), None);
        answers.extend(send(&app, msg).await);
    }
    assert_eq!(&answers[..3], ["pong", "pong", "pong"]);
    assert!(
        answers[3].starts_with(
            "Slow down a little: you can send 3 commands at once, then one every 100 seconds."
        ),
        "{}",
        answers[3]
    );
    // Another user is not affected.
    let other = incoming("4", ChatKind::Private, "4", text("/ping"), None);
    assert_eq!(send(&app, other).await, vec!["pong"]);
    app.stop().await;
}

async fn banned_users_get_no_answer(backend: Backend) {
    let (app, _tg, _db) = app_with_fake(backend, |_| {}).await;
    let msg = || incoming("11", ChatKind::Private, "11", text("/ping"), None);
    assert_eq!(send(&app, msg()).await, vec!["pong"]);
    let log = tg_log(&app, "11").await;
    app.core
        .store
        .set_banned(log[0].user_id.unwrap(), true)
        .await
        .unwrap();
    assert!(send(&app, msg()).await.is_empty());
    let log = tg_log(&app, "11").await;
    assert_eq!(log.last().unwrap().status, status::BANNED);
    app.core
        .store
        .set_banned(log[0].user_id.unwrap(), false)
        .await
        .unwrap();
    assert_eq!(send(&app, msg()).await, vec!["pong"]);
    app.stop().await;
}

/// The query plan of a statement, one line per row (PostgreSQL's generic plan, as a
/// prepared statement gets it after a few runs; SQLite's query plan).
async fn plan(app: &crate::helpers::TestApp, pg_params: &str, sql: &str, args: &str) -> String {
    use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
    let db = app.core.store.db();
    let backend = db.get_database_backend();
    let txn = db.begin().await.unwrap();
    let run = |q: String| Statement::from_string(backend, q);
    let rows = if backend == DbBackend::Postgres {
        txn.execute_unprepared("SET LOCAL plan_cache_mode = force_generic_plan")
            .await
            .unwrap();
        txn.execute_unprepared(&format!("PREPARE plan_probe ({pg_params}) AS {sql}"))
            .await
            .unwrap();
        let rows = txn
            .query_all_raw(run(format!("EXPLAIN EXECUTE plan_probe ({args})")))
            .await
            .unwrap();
        txn.execute_unprepared("DEALLOCATE plan_probe")
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.try_get_by_index::<String>(0).unwrap())
            .collect::<Vec<_>>()
    } else {
        let mut sql = sql.to_owned();
        for (i, arg) in args.split(", ").enumerate() {
            sql = sql.replace(&format!("${}", i + 1), arg);
        }
        txn.query_all_raw(run(format!("EXPLAIN QUERY PLAN {sql}")))
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get_by_index::<String>(3).unwrap())
            .collect()
    };
    txn.rollback().await.unwrap();
    rows.join("\n")
}

/// Migration m20261203_000002: a sender is looked up by the unique identity key, both
/// columns, even on a table younger than its statistics (where PostgreSQL used to match
/// the chat index on the platform alone and filter every identity); the chat look-ups
/// keep an index of their own.
async fn a_senders_look_up_uses_the_identity_key(backend: Backend) {
    let (app, _tg, _db) = app_with_fake(backend, |_| {}).await;
    for i in 0..20 {
        let id = format!("{}", 500 + i);
        let msg = incoming(&id, ChatKind::Private, &id, text("/ping"), None);
        assert_eq!(send(&app, msg).await, vec!["pong"]);
    }
    let sender = plan(
        &app,
        "text, text",
        "SELECT id FROM identities WHERE platform = $1 AND platform_user_id = $2 LIMIT 1",
        "'telegram', '507'",
    )
    .await;
    assert!(sender.contains("identities_platform_user"), "{sender}");
    assert!(
        sender.contains("platform_user_id") && !sender.contains("Filter"),
        "both columns are the index condition: {sender}"
    );
    let chat = plan(
        &app,
        "text, text",
        "SELECT id FROM identities WHERE platform = $1 AND last_chat_id = $2",
        "'telegram', '507'",
    )
    .await;
    assert!(chat.contains("identities_last_chat_platform"), "{chat}");
    app.stop().await;
}
