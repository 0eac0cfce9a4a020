//! Play-check throughput: N pending shares across M friends, all due at once, worked by
//! the real application (apalis worker, sharing service, rspotify) against a minimal fake
//! Spotify on loopback. Reports checks per second (shares settled), Spotify calls per
//! sweep (must equal the friends due) and the database size per pending share.
//!
//! Progress is read without competing with the worker: the fake Spotify counts calls and
//! notes the first, and the database is only counted (every 100 ms) once every friend
//! has been called, to see the last shares settled. While the worker enqueues, the small
//! `friend_watches` table is counted every 500 ms.
//!
//! ```sh
//! SEGUE_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo bench --bench play_checks -- --shares 100000 --friends 10000
//! ```
//!
//! A fresh database is created on that server for each run (and dropped after). Without
//! the variable the run uses a SQLite file in a temp dir.

#![allow(clippy::print_stdout)] // the report is the output

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use segue::Config;
use segue::startup::{Application, open_database};
use segue_bot::Secret;
use segue_bot::crypto::Keys;

struct Args {
    shares: usize,
    friends: usize,
    /// Seconds until every check is due: enough for the worker to enqueue them all first.
    due_in: u64,
    /// `database.max_connections`.
    connections: u32,
}

fn args() -> Args {
    let mut a = Args {
        shares: 100_000,
        friends: 10_000,
        due_in: 120,
        connections: 10,
    };
    let argv: Vec<String> = std::env::args().collect();
    for pair in argv.windows(2) {
        match pair[0].as_str() {
            "--shares" => a.shares = pair[1].parse().unwrap_or(a.shares),
            "--friends" => a.friends = pair[1].parse().unwrap_or(a.friends),
            "--due-in" => a.due_in = pair[1].parse().unwrap_or(a.due_in),
            "--connections" => a.connections = pair[1].parse().unwrap_or(a.connections),
            _ => {}
        }
    }
    a
}

/// A minimal Spotify: recently-played answers an empty page (nobody played anything, so
/// every check runs its whole course), counted, the first call's time noted.
async fn fake_spotify(calls: Arc<AtomicUsize>, first: Arc<OnceLock<Instant>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/v1/me/player/recently-played",
        axum::routing::get(move || {
            first.get_or_init(Instant::now);
            calls.fetch_add(1, Ordering::Relaxed);
            async {
                axum::Json(serde_json::json!({
                    "href": "x", "limit": 50, "next": null,
                    "cursors": null, "total": 0, "items": []
                }))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn exec(db: &sea_orm::DatabaseConnection, sql: String) {
    db.execute_unprepared(&sql).await.expect("bench insert");
}

/// Inserts `rows` (SQL tuples) into `table (columns)`, 500 at a time.
async fn insert(db: &sea_orm::DatabaseConnection, table: &str, columns: &str, rows: Vec<String>) {
    for chunk in rows.chunks(500) {
        exec(
            db,
            format!("INSERT INTO {table} ({columns}) VALUES {}", chunk.join(",")),
        )
        .await;
    }
}

async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let a = args();
    let dir = tempfile::tempdir()?;
    let server = std::env::var("SEGUE_BENCH_DATABASE_URL").ok();
    let db_name = format!("segue_bench_{}", std::process::id());
    let url = match &server {
        Some(admin) => {
            let admin_db = Database::connect(admin).await?;
            admin_db
                .execute_unprepared(&format!("CREATE DATABASE {db_name}"))
                .await?;
            let base = admin.rsplit_once('/').context("URL with a database")?.0;
            format!("{base}/{db_name}")
        }
        None => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        ),
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let first_call = Arc::new(OnceLock::new());
    let spotify = fake_spotify(calls.clone(), first_call.clone()).await;

    let key = [7u8; 32];
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".parse()?;
    config.admin.bind = "127.0.0.1:0".parse()?;
    config.database.url = Secret::new(url.clone());
    config.database.max_connections = a.connections;
    config.security.secret_key = Secret::new(base64::engine::general_purpose::STANDARD.encode(key));
    config.security.key_file = dir.path().join("segue.key");
    config.spotify.client_id = "bench".to_owned();
    config.spotify.client_secret = Secret::new("bench");
    config.spotify.accounts_url = spotify.parse()?;
    config.spotify.api_url = format!("{spotify}/v1").parse()?;
    // One check per share in the measured window.
    config.sharing.min_first_check = Duration::from_secs(1);
    config.sharing.fast_interval = Duration::from_secs(3600);
    config.sharing.give_up_after = Duration::from_secs(24 * 3600);
    config.log.level = "warn".to_owned();

    // The data: friends with Spotify links, sharers, pending shares all due in 10 s.
    let db = open_database(&config).await?;
    let keys = Keys::new(&key);
    let now = segue_bot::ids::now_millis();
    let sharers = 100.min(a.friends);
    let users = a.friends + sharers;
    eprintln!(
        "inserting {users} users, {} links, {} shares",
        a.friends, a.shares
    );
    let started = Instant::now();
    insert(
        &db,
        "users",
        "id, handle, created_at",
        (1..=users)
            .map(|i| format!("({i}, 'u{i}', {now})"))
            .collect(),
    )
    .await;
    let access = keys.seal("bench-access-token");
    let refresh = keys.seal("bench-refresh-token");
    let far = now + 30 * 24 * 3600 * 1000;
    insert(
        &db,
        "spotify_links",
        "user_id, spotify_id, spotify_name, key_id, refresh_token, access_token, access_expires_at, scopes, linked_at, updated_at",
        (1..=a.friends)
            .map(|i| {
                format!(
                    "({i}, 'sp{i}', 'sp{i}', '{}', '{refresh}', '{access}', {far}, '', {now}, {now})",
                    keys.key_id()
                )
            })
            .collect(),
    )
    .await;
    let due = now + a.due_in as i64 * 1000;
    insert(
        &db,
        "shares",
        "id, short_id, sharer_id, friend_id, track_id, track_name, track_artist, track_url, duration_ms, shared_at, status, next_check_at",
        (0..a.shares)
            .map(|i| {
                let friend = i % a.friends + 1;
                let sharer = a.friends + i % sharers + 1;
                format!(
                    "({}, 's{i}', {sharer}, {friend}, '4uLU6hMCjMI75M1A2tKUQC', 'Song', 'Artist', NULL, 1000, {}, 'pending', {due})",
                    i + 1,
                    now - 1000,
                )
            })
            .collect(),
    )
    .await;
    eprintln!("inserted in {:.1?}", started.elapsed());
    drop(db);

    // The real application: its worker reconciles (enqueues) every share, then checks.
    let app = Application::build(config).await?;
    let core = app.core();
    let shutdown = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());
    let db = core.store.db().clone();
    let enqueue_started = Instant::now();
    let before = calls.load(Ordering::Relaxed);
    // The worker gives every friend a job (reconcile) and enqueues it.
    let mut enqueued_at = None;
    while enqueued_at.is_none() && first_call.get().is_none() {
        let scheduled = count(
            &db,
            "SELECT COUNT(*) FROM friend_watches WHERE check_scheduled = true",
        )
        .await;
        if scheduled >= a.friends as i64 {
            let t = Instant::now();
            enqueued_at = Some(t);
            eprintln!(
                "enqueued {} friends' jobs ({} checks) in {:.1?} ({:.0} checks/s)",
                a.friends,
                a.shares,
                t - enqueue_started,
                a.shares as f64 / (t - enqueue_started).as_secs_f64()
            );
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    if enqueued_at.is_none() {
        eprintln!("warning: checks started before all were enqueued; raise --due-in");
    }
    // Every friend called, then every share settled (its next check moved on). A stall
    // (no call for 30 s) ends the wait, and the count below says what was missed.
    while first_call.get().is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut seen, mut moved) = (0, Instant::now());
    while calls.load(Ordering::Relaxed) - before < a.friends {
        let now_calls = calls.load(Ordering::Relaxed);
        if now_calls != seen {
            (seen, moved) = (now_calls, Instant::now());
        } else if moved.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "warning: no Spotify call for 30 s; {} of {} friends called",
                seen - before,
                a.friends
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = loop {
        let done = count(
            &db,
            &format!("SELECT COUNT(*) FROM shares WHERE next_check_at <> {due}"),
        )
        .await;
        if done >= a.shares as i64 || moved.elapsed() > Duration::from_secs(60) {
            if done < a.shares as i64 {
                eprintln!("warning: only {done} of {} shares settled", a.shares);
            }
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = first_call.get().map_or(Duration::ZERO, |f| last - *f);
    let sweeps = calls.load(Ordering::Relaxed) - before;
    let (table_bytes, apalis_bytes) = match db.get_database_backend() {
        DbBackend::Postgres => (
            count(
                &db,
                "SELECT (pg_total_relation_size('shares') + pg_total_relation_size('friend_watches'))::bigint",
            )
            .await,
            count(
                &db,
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'apalis' AND c.relkind = 'r'",
            )
            .await,
        ),
        _ => (
            count(
                &db,
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            )
            .await,
            0,
        ),
    };
    println!("backend            {:?}", db.get_database_backend());
    println!("pending shares     {}", a.shares);
    println!("friends due        {}", a.friends);
    println!(
        "checks             {} in {:.2?} = {:.0} checks/s",
        a.shares,
        elapsed,
        a.shares as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    println!(
        "Spotify calls      {sweeps} ({:.2} per friend due)",
        sweeps as f64 / a.friends as f64
    );
    if apalis_bytes > 0 {
        println!(
            "database size      shares and friend_watches {:.0} B + apalis {:.0} B per pending share",
            table_bytes as f64 / a.shares as f64,
            apalis_bytes as f64 / a.shares as f64
        );
    } else if table_bytes > 0 {
        println!(
            "database size      {:.0} B per pending share (the whole SQLite file, users and links too)",
            table_bytes as f64 / a.shares as f64,
        );
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), running).await;
    if let Some(admin) = &server {
        drop(db);
        let admin_db = Database::connect(admin).await?;
        let _ = admin_db
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .await;
    }
    Ok(())
}
