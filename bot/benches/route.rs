//! Criterion benchmarks of the router: parsing a command line against the table, and
//! handling `/ping` end to end through `Router::handle` (dedupe, per-chat turn, sender
//! lookup, middleware, handler, audit + reply rows through the group-commit writer) on
//! an in-memory SQLite database.
//!
//! Run: `cargo bench -p segue-bot --bench route`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use segue_bot::command::CommandLine;
use segue_bot::outbox::OutboxSettings;
use segue_bot::store::{self, DbOptions};
use segue_bot::{
    ChatAddress, ChatKind, Content, Core, CoreSettings, Incoming, Metrics, Outbox, Platform,
    ReplyMode, Router, Store, UserRef,
};
use segue_migrations::{Migrator, MigratorTrait};

fn parse(c: &mut Criterion) {
    let table = segue_bot::handlers::table();
    let mut group = c.benchmark_group("parse");
    for line in ["/ping", "/help handle", "/handle@segue_bot carol_92"] {
        group.bench_function(line, |b| {
            b.iter(|| {
                let l = CommandLine::parse(black_box(line)).expect("a command");
                let spec = table.get(l.name).expect("known");
                black_box(spec.parse_args(l.args).expect("valid"))
            });
        });
    }
    group.finish();
}

fn route(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let router = rt.block_on(async {
        let db = store::connect(&DbOptions {
            url: "sqlite::memory:".to_owned(),
            max_connections: 1,
        })
        .await
        .expect("in-memory SQLite");
        Migrator::up(&db, None).await.expect("migrations");
        let store = Arc::new(Store::new(db));
        let metrics = Arc::new(Metrics::new());
        let outbox = Arc::new(Outbox::new(
            store.clone(),
            metrics.clone(),
            Vec::new(),
            OutboxSettings::default(),
        ));
        Arc::new(Router::new(Arc::new(Core {
            store,
            outbox,
            metrics,
            commands: segue_bot::handlers::table(),
            settings: CoreSettings {
                user_burst: u32::MAX,
                user_per_second: 1e9,
                public_url: "http://127.0.0.1:8080/".to_owned(),
                web_retention: Duration::from_secs(3600),
            },
            spotify: None,
            sharing: None,
        })))
    });
    let incoming = |text: &str| Incoming {
        external_id: None,
        chat: ChatAddress::new(Platform::Web, "bench"),
        chat_kind: ChatKind::Private,
        user: UserRef {
            platform: Platform::Web,
            id: "bench".to_owned(),
            display_name: "bench".to_owned(),
            username: None,
        },
        content: Content::Text(text.to_owned()),
        bot_username: None,
        private_chat: None,
        to_bot: false,
        on_message: None,
    };
    let mut group = c.benchmark_group("route");
    group.bench_function("/ping via Router::handle (SQLite in memory)", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                router
                    .handle(incoming("/ping"), ReplyMode::Inline)
                    .await
                    .expect("handled"),
            )
        });
    });
    group.bench_function("64 concurrent /ping (shared commits)", |b| {
        b.to_async(&rt).iter(|| async {
            let all = (0..64).map(|i| {
                let router = router.clone();
                let mut msg = incoming("/ping");
                msg.chat.chat_id = format!("chat{i}");
                msg.user.id = format!("user{i}");
                async move {
                    router
                        .handle(msg, ReplyMode::Inline)
                        .await
                        .expect("handled")
                }
            });
            black_box(futures::future::join_all(all).await)
        });
    });
    group.finish();
}

criterion_group!(benches, parse, route);
criterion_main!(benches);
