//! sea-orm entities, one module per table; the schema itself lives in the migrations crate.

pub mod chat;
pub mod code;
pub mod friend_watch;
pub mod friendship;
pub mod identity;
pub mod message;
pub mod seen_update;
pub mod session;
pub mod share;
pub mod spotify_link;
pub mod spotify_link_code;
pub mod used_state;
pub mod user;
