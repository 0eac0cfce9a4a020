//! `/connect` and `/connect <code>`: joins the sender's accounts on several platforms
//! into one person. The account that issued the code keeps its handle, settings and
//! Spotify link; the other's identities and history move over.

use std::time::Duration;

use crate::command::{ArgKind, ArgSpec, Args, HandlerResult};
use crate::crypto::digest_hex;
use crate::error::CommandError;
use crate::handlers::friends::{new_code, normalize_code};
use crate::handlers::link::private_only;
use crate::ids::now_millis;
use crate::message::Reply;
use crate::router::{Ctx, SenderChange};
use crate::store::entities::code::purpose;

pub const ARGS: &[ArgSpec] = &[ArgSpec::optional(
    "code",
    ArgKind::String,
    "The code /connect gave you on your other platform",
)];

/// How long a code works.
const VALID_FOR: Duration = Duration::from_secs(10 * 60);

pub async fn run(ctx: &Ctx, args: Args) -> HandlerResult {
    private_only(ctx, "connect")?;
    match args.str("code") {
        None => issue(ctx).await,
        Some(code) => redeem(ctx, code).await,
    }
}

async fn issue(ctx: &Ctx) -> HandlerResult {
    let (shown, code) = new_code();
    let expires_at = now_millis() + VALID_FOR.as_millis() as i64;
    ctx.core
        .store
        .create_code(
            purpose::CONNECT,
            ctx.person.user_id,
            &digest_hex(&code),
            expires_at,
        )
        .await?;
    Ok(vec![Reply::text(format!(
        "To join your account on another platform to this one, send this to me there within \
         10 minutes:\n/connect {shown}\nThis account keeps its handle @{} and its Spotify \
         link; the other account's friends, shares and history move here.",
        ctx.person.handle
    ))])
}

async fn redeem(ctx: &Ctx, code: &str) -> HandlerResult {
    let store = &ctx.core.store;
    let code = normalize_code(code);
    let invalid = || {
        CommandError::user(
            "That code isn't valid: codes work once, for 10 minutes. Send /connect on your \
             other platform for a new one.",
        )
    };
    if code.len() != 8 {
        return Err(invalid());
    }
    let Some(keep) = store
        .claim_code(purpose::CONNECT, &digest_hex(&code), now_millis())
        .await?
    else {
        return Err(invalid());
    };
    let me = ctx.person.user_id;
    if keep == me {
        return Err(CommandError::user(
            "That code is this account's own. Send it to me from your other platform.",
        ));
    }
    let Some(target) = store.user(keep).await?.filter(|u| u.banned_at.is_none()) else {
        return Err(invalid());
    };
    store.merge_users(keep, me).await?;
    if let Some(spotify) = &ctx.core.spotify {
        spotify.forget_cached(keep);
        spotify.forget_cached(me);
    }
    ctx.sender_changed(SenderChange::JoinedInto(keep));
    Ok(vec![Reply::text(format!(
        "Done: your {} account is now part of @{}. /me shows everything.",
        ctx.incoming.chat.platform, target.handle
    ))])
}
