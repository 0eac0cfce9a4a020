//! The `segue` composition root: configuration, start-up, the public HTTP app and the
//! admin listener. The binary (`main.rs`) is a thin CLI over this library, so tests build
//! the same `Application` the binary runs.

pub mod admin;
pub mod config;
pub mod http;
pub mod keys;
pub mod oauth;
pub mod public_api;
pub mod startup;
pub mod telemetry;

pub use config::Config;
pub use startup::Application;
