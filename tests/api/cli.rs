//! The real `segue` binary: `commands`, `check-config`, and `serve` stopping promptly on
//! SIGTERM with event streams open.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{Backend, SseReader, TestDb};

fn segue() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_segue"));
    // A clean environment for configuration: only what each test sets.
    for (key, _) in std::env::vars() {
        if key.starts_with("SEGUE_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn commands_prints_the_table_as_text_and_json() {
    let out = segue()
        .args(["commands", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is only JSON");
    let names: Vec<&str> = table
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "start",
            "help",
            "ping",
            "link",
            "unlink",
            "invite",
            "accept",
            "friends",
            "unfriend",
            "share",
            "shares",
            "cancel",
            "nowplaying",
            "public",
            "me",
            "handle",
            "connect",
            "notify",
            "forget"
        ]
    );
    let by_name = |name: &str| {
        table
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    let handle = by_name("handle");
    assert_eq!(handle["usage"], "/handle <name>");
    assert_eq!(handle["args"][0]["type"], "string");
    assert_eq!(handle["args"][0]["required"], true);
    let np = by_name("nowplaying");
    assert_eq!(np["aliases"][0], "np");
    assert_eq!(np["args"][0]["type"], "user");
    let public = by_name("public");
    assert_eq!(public["usage"], "/public <on|off>");
    assert_eq!(public["args"][0]["type"], "choice");
    assert_eq!(public["args"][0]["choices"][1], "off");
    let out = segue().arg("commands").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("/help [command] — ")),
        "{text}"
    );
}

#[test]
fn check_config_validates_and_redacts() {
    let dir = tempfile::tempdir().unwrap();
    let good = segue()
        .current_dir(dir.path())
        .arg("check-config")
        .env("SEGUE_SECURITY__ADMIN_TOKEN", "very-secret-token")
        .env("SEGUE_LIMITS__USER_BURST", "5")
        .output()
        .unwrap();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let printed = String::from_utf8(good.stdout).unwrap();
    assert!(!printed.contains("very-secret-token"));
    assert!(
        printed.contains("admin_token = \"[redacted]\""),
        "{printed}"
    );
    assert!(printed.contains("user_burst = 5"));
    let parsed: toml::Value = toml::from_str(&printed).expect("prints TOML");
    assert_eq!(parsed["web"]["retention"].as_str(), Some("7days"));

    let cases = [
        (
            vec![("SEGUE_SERVER__BIND", "not-an-address")],
            "server.bind",
        ),
        (vec![("SEGUE_WEB__RETENTION", "soon")], "web.retention"),
        (
            vec![("SEGUE_SERVER__PUBLIC_URL", "ftp://x")],
            "server.public_url",
        ),
        (vec![("SEGUE_DATABASE__URL", "mysql://x")], "database.url"),
        (
            vec![("SEGUE_SECURITY__SECRET_KEY", "c2hvcnQ=")],
            "security.secret_key",
        ),
        (vec![("SEGUE_SERVER__COLOUR", "blue")], "colour"),
        (
            vec![("SEGUE_SPOTIFY__CLIENT_ID", "abc")],
            "spotify.client_id and spotify.client_secret go together",
        ),
        (
            vec![("SEGUE_SPOTIFY__API_URL", "ftp://x")],
            "spotify.api_url",
        ),
        // A malformed Discord key is a configuration error, not a panic at start.
        (
            vec![("SEGUE_DISCORD__PUBLIC_KEY", "not-hex")],
            "discord.public_key must be the application's public key",
        ),
        (
            vec![(
                "SEGUE_DISCORD__PUBLIC_KEY",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f70751zz",
            )],
            "discord.public_key",
        ),
        (
            vec![("SEGUE_DISCORD__TOKEN", "t")],
            "discord.application_id must be set",
        ),
        (
            vec![
                ("SEGUE_DISCORD__TOKEN", "t"),
                ("SEGUE_DISCORD__APPLICATION_ID", "1100000000000000001"),
                ("SEGUE_DISCORD__MODE", "interactions"),
            ],
            "discord.public_key must be set in interactions mode",
        ),
        (
            vec![("SEGUE_DISCORD__DEFER_AFTER", "5s")],
            "discord.defer_after",
        ),
    ];
    for (env, expected) in cases {
        let out = segue()
            .current_dir(dir.path())
            .arg("check-config")
            .envs(env.clone())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{env:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(expected), "{env:?}: {err}");
        assert!(out.stdout.is_empty());
    }
    // An unknown key in the file, and a missing file.
    let file = dir.path().join("segue.toml");
    std::fs::write(&file, "[web]\nconsole = true\nretension = \"1d\"\n").unwrap();
    let out = segue()
        .current_dir(dir.path())
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("retension"));
    let out = segue()
        .args(["check-config", "--config", "/nonexistent/segue.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// `segue register-commands` pushes the table to Discord (bulk overwrite, in the guild);
/// the ids stay text even from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_commands_pushes_slash_commands_to_discord() {
    use crate::fake_discord::{APP_ID, FakeDiscord, TOKEN};
    let fake = FakeDiscord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let url = fake.url.clone();
        let dir = dir.path().to_owned();
        move || {
            segue()
                .current_dir(&dir)
                .arg("register-commands")
                .env("SEGUE_DISCORD__TOKEN", TOKEN)
                .env("SEGUE_DISCORD__APPLICATION_ID", APP_ID)
                .env("SEGUE_DISCORD__GUILD_ID", "0012")
                .env("SEGUE_DISCORD__API_URL", url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("discord: 20 slash commands registered in guild 0012"),
        "{stdout}"
    );
    let puts = fake.bodies(
        "PUT",
        &format!("/applications/{APP_ID}/guilds/0012/commands"),
    );
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].as_array().unwrap().len(), 20, "19 commands and /np");
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

/// The example configuration is valid and says exactly what the defaults are.
#[test]
fn example_config_is_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/segue.example.toml");
    let out = segue()
        .current_dir(dir.path())
        .args(["check-config", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let defaults = segue()
        .current_dir(dir.path())
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(defaults.stdout).unwrap()
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_open_streams_exits_promptly() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (port, admin_port) = (free_port(), free_port());
    let mut child = segue()
        .current_dir(db.dir.path())
        .env("SEGUE_SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("SEGUE_ADMIN__BIND", format!("127.0.0.1:{admin_port}"))
        .env("SEGUE_DATABASE__URL", &db.url)
        // Far above the deadline below: a process that waited on its open streams
        // instead of ending them would be caught, however slow the machine.
        .env("SEGUE_SERVER__SHUTDOWN_GRACE", "60s")
        // Looks like a number to a TOML parser; must stay exactly this text.
        .env("SEGUE_SECURITY__ADMIN_TOKEN", "007123")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let up = crate::helpers::eventually(Duration::from_secs(20), || async {
        client.get(format!("{base}/healthz")).send().await.is_ok()
    })
    .await;
    assert!(up, "the binary starts with no configuration file");
    assert!(
        db.dir.path().join("segue.key").exists(),
        "the secret key is generated beside it"
    );

    let session: serde_json::Value = client
        .post(format!("{base}/console/api/session"))
        .json(&serde_json::json!({"name": "ola"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["session"].as_str().unwrap().to_owned();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let res = client
            .get(format!("{base}/console/api/events"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        streams.push(SseReader::from_response(res));
    }
    let pid = child.id().to_string();
    let started = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still running 20 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
    for s in &mut streams {
        assert!(
            s.ends_within(Duration::from_secs(1)).await,
            "streams end at shutdown"
        );
    }
}

#[test]
fn serve_names_its_roles_when_given_a_wrong_one() {
    let out = segue().args(["serve", "--role", "api"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'api'") && err.contains("web, worker, gateway"),
        "{err}"
    );
}
