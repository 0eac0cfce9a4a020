//! Start-up and long polling: learn the bot's username (getMe), set the command menu,
//! then either register the webhook or poll getUpdates, handing each update to the
//! router in order and answering button presses.

use std::time::Duration;

use segue_bot::{Handled, ReplyMode, Router};
use teloxide::Bot;
use teloxide::payloads::{GetUpdatesSetters, SetWebhookSetters};
use teloxide::prelude::Requester;
use teloxide::types::{CallbackQueryId, Update};

use super::{ALLOWED_UPDATES, Converted, Mode, Telegram, convert};
use crate::AdapterContext;

/// Seconds a getUpdates call waits for updates (below reqwest's 17 s client timeout).
const POLL_TIMEOUT: u32 = 10;

/// Runs until shutdown: start-up calls (retried), then polling in polling mode.
pub(super) async fn start(tg: Telegram, cx: AdapterContext) {
    let shutdown = cx.shutdown.clone();
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = run(tg, cx) => {}
    }
}

async fn run(tg: Telegram, cx: AdapterContext) {
    let me = retry("getMe", || async { tg.bot.get_me().await }).await;
    let username = me.username.clone().unwrap_or_default();
    tracing::info!(bot = %username, mode = ?tg.settings.mode, "connected to Telegram");
    let _ = tg.me.set(username);
    retry("setMyCommands", || {
        tg.register_commands(&cx.router.core().commands)
    })
    .await;
    match tg.settings.mode {
        Mode::Webhook => {
            retry("setWebhook", || async {
                let url = tg
                    .settings
                    .webhook_url
                    .parse()
                    .map_err(|e: url::ParseError| {
                        teloxide::RequestError::Api(teloxide::ApiError::Unknown(e.to_string()))
                    })?;
                tg.bot
                    .set_webhook(url)
                    .secret_token(tg.settings.webhook_secret.expose())
                    .allowed_updates(ALLOWED_UPDATES)
                    .await
            })
            .await;
            tracing::info!(url = %tg.settings.webhook_url, "Telegram webhook set");
        }
        Mode::Polling => poll(&tg, &cx.router).await,
    }
}

/// Retries a start-up call with backoff until it works (or shutdown cancels the task).
async fn retry<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, teloxide::RequestError>>,
{
    let mut wait = Duration::from_millis(500);
    loop {
        match call().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(call = what, error = %e, retry_in_ms = wait.as_millis() as u64, "Telegram call failed");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn poll(tg: &Telegram, router: &Router) {
    // A webhook left from webhook mode would make getUpdates fail.
    let info = retry("getWebhookInfo", || async {
        tg.bot.get_webhook_info().await
    })
    .await;
    if info.url.is_some() {
        retry("deleteWebhook", || async { tg.bot.delete_webhook().await }).await;
    }
    let mut offset: i32 = 0;
    let mut wait = Duration::from_millis(500);
    loop {
        let updates = match tg
            .bot
            .get_updates()
            .offset(offset)
            .timeout(POLL_TIMEOUT)
            .allowed_updates(ALLOWED_UPDATES)
            .await
        {
            Ok(u) => {
                wait = Duration::from_millis(500);
                u
            }
            Err(e) => {
                tracing::warn!(error = %e, "getUpdates failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        for update in updates {
            let next = update.id.as_offset();
            // In order: a chat's updates reach the router one after another.
            if handle_update(&tg.bot, router, &update, tg.me.get().map(String::as_str))
                .await
                .is_err()
            {
                // Storage is down: don't advance past this update; Telegram keeps it.
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
                break;
            }
            offset = next;
        }
    }
}

/// Converts and handles one update; `Err` when it could not be stored (retry it later).
pub(super) async fn handle_update(
    bot: &Bot,
    router: &Router,
    update: &Update,
    me: Option<&str>,
) -> Result<(), segue_bot::StoreError> {
    match convert(update, me) {
        Converted::Message(incoming, callback) => {
            let handled = router.handle(*incoming, ReplyMode::Outbox).await?;
            if let Some(id) = callback {
                answer_press(bot, id, &handled).await;
            }
        }
        Converted::Migrated(old, new) => {
            tracing::info!(
                old = old.0,
                new = new.0,
                "Telegram group became a supergroup"
            );
            router
                .core()
                .store
                .migrate_chat(
                    segue_bot::Platform::Telegram,
                    &old.0.to_string(),
                    &new.0.to_string(),
                )
                .await?;
        }
        Converted::Skip(why) => {
            tracing::debug!(update = update.id.0, why, "Telegram update skipped")
        }
    }
    Ok(())
}

/// Stops the spinner on a pressed button (the reply itself arrives as a message).
async fn answer_press(bot: &Bot, id: CallbackQueryId, handled: &Handled) {
    if matches!(handled, Handled::Duplicate) {
        return;
    }
    if let Err(e) = bot.answer_callback_query(id).await {
        tracing::debug!(error = %e, "answerCallbackQuery failed (the press may be too old)");
    }
}
