//! Segue's integration tests: one test binary (every extra binary re-links the whole
//! tree). Each test runs on SQLite and, when `SEGUE_TEST_DATABASE_URL` is set, on a fresh
//! PostgreSQL database too (see `helpers::backend_tests!`).

mod fake_discord;
mod fake_messenger;
mod fake_spotify;
mod fake_telegram;
mod helpers;
mod openapi;

mod admin;
mod cli;
mod console;
mod discord;
mod health;
mod messenger;
mod outbox;
mod router;
mod sharing;
mod spotify;
mod store;
mod telegram;
