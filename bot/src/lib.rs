//! Segue's neutral core: platform adapters turn their events into [`Incoming`] values, the
//! [`Router`] runs middleware and a handler from the command table, and every reply
//! leaves as an [`Outgoing`] through the persisted [`Outbox`]. Nothing here names a
//! platform crate or a web framework.

pub mod command;
pub mod core;
pub mod crypto;
pub mod error;
pub mod handlers;
pub mod ids;
pub mod jobs;
pub mod message;
pub mod metrics;
pub mod middleware;
pub mod outbox;
pub mod redact;
pub mod router;
pub mod secret;
pub mod sharing;
pub mod split;
pub mod spotify;
pub mod store;
pub mod suggest;
pub mod types;
pub mod when;

pub use crate::core::{Core, CoreSettings};
pub use command::{ArgKind, ArgSpec, ArgValue, Args, CommandSpec, CommandTable, Suggest};
pub use error::CommandError;
pub use message::{
    Button, ButtonAction, ChatAddress, ChatKind, Content, Incoming, Outgoing, Platform, Reply,
    UserRef,
};
pub use metrics::Metrics;
pub use outbox::{Deliver, DeliverError, DeliveryPolicy, OutboundMessage, Outbox};
pub use router::{Handled, ReplyMode, Router};
pub use secret::Secret;
pub use store::{Store, StoreError};
