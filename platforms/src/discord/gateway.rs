//! Gateway mode: serenity's client holds the websocket (HELLO, IDENTIFY, heartbeats,
//! reconnects) and hands each INTERACTION_CREATE to the responder; the first answer goes
//! back through the interaction callback, then the edit and follow-ups. Its REST base is
//! `discord.api_url`, with serenity's own ratelimiter off (it would ignore that URL).

use std::time::Duration;

use async_trait::async_trait;
use serenity::all::{
    ApplicationId, ClientBuilder, Context, EventHandler, GatewayIntents, HttpBuilder, Interaction,
    Ready,
};
use tokio_util::sync::CancellationToken;

use super::DiscordSettings;
use super::inbound::{Converted, convert};
use super::respond::Responder;

/// How long to wait before connecting again after the client stopped.
const RECONNECT_AFTER: Duration = Duration::from_secs(5);

struct Handler {
    responder: Responder,
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        tracing::info!(bot = %ready.user.name, "discord gateway ready");
    }

    async fn interaction_create(&self, _ctx: Context, interaction: Interaction) {
        let (incoming, token) = match convert(&interaction) {
            Converted::Message(incoming, token) => (incoming, token),
            Converted::Autocomplete(incoming, option) => {
                let answer = self.responder.complete(*incoming, &option).await;
                let (id, token) = (interaction.id().to_string(), interaction.token().to_owned());
                if let Err(e) = self
                    .responder
                    .rest()
                    .interaction_callback(&id, &token, &answer)
                    .await
                {
                    tracing::warn!(error = %e, "could not send discord suggestions");
                }
                return;
            }
            Converted::Ping => return,
            Converted::Skip(why) => {
                tracing::debug!(why, "Discord interaction skipped");
                return;
            }
        };
        let (id, tok) = (token.interaction_id.clone(), token.token.clone());
        let (first, later) = self.responder.answer(*incoming, token).await;
        match self
            .responder
            .rest()
            .interaction_callback(&id, &tok, &first)
            .await
        {
            Ok(()) => {
                if let Some(later) = later {
                    later.run().await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, interaction = %id, "could not answer a discord interaction")
            }
        }
    }
}

/// Runs the gateway connection until shutdown, reconnecting when it drops.
pub async fn run(settings: &DiscordSettings, responder: Responder, shutdown: CancellationToken) {
    let application_id = settings.application_id.parse::<u64>().ok();
    loop {
        let mut http = HttpBuilder::new(settings.token.expose())
            .proxy(settings.api_url.clone())
            .ratelimiter_disabled(true);
        if let Some(id) = application_id.filter(|id| *id != 0) {
            http = http.application_id(ApplicationId::new(id));
        }
        let client = ClientBuilder::new_with_http(http.build(), GatewayIntents::empty())
            .event_handler(Handler {
                responder: responder.clone(),
            })
            .await;
        let mut client = match client {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "could not start the discord gateway client");
                if wait_or_stop(&shutdown).await {
                    return;
                }
                continue;
            }
        };
        let shards = client.shard_manager.clone();
        tokio::select! {
            () = shutdown.cancelled() => {
                shards.shutdown_all().await;
                return;
            }
            result = client.start() => {
                match result {
                    Ok(()) => tracing::warn!("discord gateway closed; reconnecting"),
                    Err(e) => tracing::warn!(error = %e, "discord gateway failed; reconnecting"),
                }
            }
        }
        if wait_or_stop(&shutdown).await {
            return;
        }
    }
}

/// Waits before the next attempt; true when shutting down instead.
async fn wait_or_stop(shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(RECONNECT_AFTER) => false,
    }
}
