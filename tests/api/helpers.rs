//! Test harness: `spawn_app()` builds the same `Application` the binary runs on port 0
//! with a fresh database (a SQLite file in a temp dir, or a new PostgreSQL database),
//! plus fake platforms, an SSE reader and JSON helpers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use sea_orm::{ConnectionTrait, Database};
use segue::Config;
use segue::startup::{Application, Extras, Role};
use segue_bot::outbox::OutboxSettings;
use segue_bot::{Core, Deliver, DeliverError, OutboundMessage, Platform, Router, Secret};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Generates one test per backend from `async fn name(backend: Backend)`.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::helpers::postgres_url().is_none() {
                        eprintln!("SEGUE_TEST_DATABASE_URL is not set: PostgreSQL run skipped");
                        return;
                    }
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            }
        )*
    };
}
pub(crate) use backend_tests;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn postgres_url() -> Option<String> {
    std::env::var("SEGUE_TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A fresh database for one test (and the temp dir holding SQLite and the key file).
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub pg_name: Option<String>,
}

static PG_SWEEP: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
static DB_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => Self {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("segue.db").display()
                ),
                dir,
                pg_name: None,
            },
            Backend::Postgres => {
                let admin_url = postgres_url().expect("SEGUE_TEST_DATABASE_URL");
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("PostgreSQL at SEGUE_TEST_DATABASE_URL answers");
                PG_SWEEP.get_or_init(|| sweep_old_databases(&admin)).await;
                let name = format!(
                    "segue_t_{}_{}_{}_{}",
                    unix_secs(),
                    std::process::id(),
                    DB_COUNTER.fetch_add(1, Ordering::SeqCst),
                    rand::random::<u16>()
                );
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(b, _)| b)
                    .expect("database URL has a path");
                Self {
                    url: format!("{base}/{name}"),
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// Makes the database disappear under a running app.
    pub async fn destroy(&self, core: &Core) {
        match &self.pg_name {
            Some(name) => {
                let admin = Database::connect(&postgres_url().unwrap()).await.unwrap();
                admin
                    .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
                    .await
                    .expect("drop test database");
            }
            None => core.store.db().close_by_ref().await.expect("close pool"),
        }
    }
}

/// A test's PostgreSQL database goes with it: dropped when the test is done, passed or
/// failed, so runs don't pile databases up for autovacuum to visit (the sweep at start
/// only catches what a killed run left).
impl Drop for TestDb {
    fn drop(&mut self) {
        let (Some(name), Some(admin_url)) = (self.pg_name.take(), postgres_url()) else {
            return;
        };
        // Drop can't await; a thread of its own with a small runtime does the DROP.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = Database::connect(&admin_url).await.ok()?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()?;
                admin.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: a test database was left for the next run's sweep");
        }
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Drops test databases left by runs more than two hours old (a concurrent run's are
/// younger and left alone).
async fn sweep_old_databases(admin: &sea_orm::DatabaseConnection) {
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT datname FROM pg_database WHERE datname LIKE 'segue_t_%'",
        ))
        .await
        .unwrap_or_default();
    let cutoff = unix_secs().saturating_sub(2 * 3600);
    for row in rows {
        let Ok(name) = row.try_get::<String>("", "datname") else {
            continue;
        };
        let created: u64 = name
            .trim_start_matches("segue_t_")
            .split('_')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if created < cutoff {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

/// The configuration tests start from: ports 0, the given database, generous limits.
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".parse().unwrap();
    config.admin.bind = "127.0.0.1:0".parse().unwrap();
    config.server.shutdown_grace = Duration::from_secs(5);
    config.database.url = Secret::new(db.url.clone());
    config.database.max_connections = 5;
    config.security.key_file = db.dir.path().join("segue.key");
    config.security.admin_token = Secret::new(ADMIN_TOKEN);
    config.limits.user_burst = 1000;
    config.limits.user_per_second = 1000.0;
    config
}

/// A running application.
pub struct TestApp {
    pub address: String,
    pub admin_address: String,
    pub core: Arc<Core>,
    pub router: Arc<Router>,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
    pub client: reqwest::Client,
}

/// Short retries so backoff tests take milliseconds.
pub fn fast_outbox() -> OutboxSettings {
    OutboxSettings {
        lease: Duration::from_secs(30),
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        max_attempts: 5,
    }
}

pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(test_config(db), Vec::new()).await
}

pub async fn spawn_app_with(config: Config, deliverers: Vec<Arc<dyn Deliver>>) -> TestApp {
    start(config, deliverers, None, None).await
}

/// [`spawn_app_with`] running one part only (`segue serve --role …`).
pub async fn spawn_role(role: Role, config: Config, deliverers: Vec<Arc<dyn Deliver>>) -> TestApp {
    start(config, deliverers, None, Some(role)).await
}

/// Binds the public listener first, so that `server.public_url` is the app's own address
/// (OAuth redirects come back to it); `configure` adjusts the rest.
pub async fn spawn_app_at_own_url(db: &TestDb, configure: impl FnOnce(&mut Config)) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a port");
    let mut config = test_config(db);
    config.server.public_url = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    configure(&mut config);
    start(config, Vec::new(), Some(listener), None).await
}

async fn start(
    config: Config,
    deliverers: Vec<Arc<dyn Deliver>>,
    listener: Option<tokio::net::TcpListener>,
    role: Option<Role>,
) -> TestApp {
    // Warnings reach a failing test's output (captured otherwise).
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn")
        .try_init();
    let app = Application::build_with(
        config,
        Extras {
            role,
            deliverers,
            outbox: fast_outbox(),
            listener,
        },
    )
    .await
    .expect("application builds");
    let address = format!("http://{}", app.address());
    let admin_address = format!("http://{}", app.admin_address());
    let core = app.core();
    let router = app.router();
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        admin_address,
        core,
        router,
        shutdown,
        handle,
        client: reqwest::Client::new(),
    }
}

impl TestApp {
    /// Stops the app gracefully and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("stops within 10 s")
            .expect("task joins")
            .expect("runs without error");
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.address))
            .json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// The single number a SQL query answers (`SELECT COUNT(*) …`).
    pub async fn count(&self, sql: &str) -> i64 {
        let db = self.core.store.db();
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                sql,
            ))
            .await
            .expect("query runs")
            .expect("one row");
        row.try_get_by_index::<i64>(0).expect("a number")
    }

    /// Opens a console session; returns its token.
    pub async fn session(&self, name: &str) -> String {
        let (status, body) = self
            .post_json(
                "/console/api/session",
                None,
                &serde_json::json!({ "name": name }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["user"], name);
        body["session"].as_str().expect("session token").to_owned()
    }

    /// Sends console text; returns the reply texts.
    pub async fn say(&self, token: &str, text: &str) -> Vec<String> {
        let (status, body) = self
            .post_json(
                "/console/api/messages",
                Some(token),
                &serde_json::json!({ "text": text }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["replies"]
            .as_array()
            .expect("replies")
            .iter()
            .map(|r| r["text"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The first reply to `text`.
    pub async fn reply(&self, token: &str, text: &str) -> String {
        self.say(token, text)
            .await
            .into_iter()
            .next()
            .expect("at least one reply")
    }

    /// Opens the console event stream.
    pub async fn events(&self, token: &str, last_event_id: Option<&str>) -> SseReader {
        let mut req = self
            .client
            .get(format!("{}/console/api/events", self.address))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let res = req.send().await.expect("events request");
        assert_eq!(res.status(), 200);
        SseReader::from_response(res)
    }
}

/// Reads server-sent events from a streaming response.
pub struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: String,
    pub data: Value,
}

impl SseReader {
    pub fn from_response(res: reqwest::Response) -> Self {
        Self {
            stream: res.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the stream ended or nothing came within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = Some(v.trim().to_owned());
                    }
                }
                if let (Some(id), Some(data)) = (id, data) {
                    return Some(SseEvent {
                        id,
                        data: serde_json::from_str(&data).expect("event data is JSON"),
                    });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next()).await;
            match chunk {
                Ok(Some(Ok(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Whether the server ended the stream within `wait`.
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// A fake platform: records what it is asked to deliver and answers as told.
pub struct FakePlatform {
    pub platform: Platform,
    pub delivered: Mutex<Vec<OutboundMessage>>,
    pub calls: AtomicUsize,
    /// Answers to give, in order; once used up, deliveries succeed.
    pub script: Mutex<Vec<DeliverError>>,
    pub per_id: Mutex<HashMap<i64, usize>>,
}

impl FakePlatform {
    pub fn new(platform: Platform) -> Arc<Self> {
        Arc::new(Self {
            platform,
            delivered: Mutex::default(),
            calls: AtomicUsize::new(0),
            script: Mutex::default(),
            per_id: Mutex::default(),
        })
    }

    pub fn fail_with(&self, errors: Vec<DeliverError>) {
        *self.script.lock().unwrap() = errors;
    }

    pub fn delivered_texts(&self) -> Vec<String> {
        self.delivered
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.text.clone())
            .collect()
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Deliver for FakePlatform {
    fn platform(&self) -> Platform {
        self.platform
    }

    async fn deliver(&self, message: &OutboundMessage) -> Result<(), DeliverError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let scripted = {
            let mut script = self.script.lock().unwrap();
            (!script.is_empty()).then(|| script.remove(0))
        };
        if let Some(e) = scripted {
            return Err(e);
        }
        *self.per_id.lock().unwrap().entry(message.id).or_default() += 1;
        self.delivered.lock().unwrap().push(message.clone());
        Ok(())
    }
}

/// How long a test waits for something that should happen: generous, because CI runs
/// the whole suite at once on two cores, and a wait that holds returns at once.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `check` until it holds (every 20 ms, up to `wait`).
pub async fn eventually<F, Fut>(wait: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
