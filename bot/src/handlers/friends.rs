//! Friendships across platforms: `/invite` gives a code and the exact line for the
//! friend, `/accept <code>` makes two people friends, `/friends` lists them, `/unfriend`
//! ends one. Only friends can share songs with each other or see each other's `/np`.

use std::time::Duration;

use crate::command::{ArgKind, ArgSpec, Args, HandlerResult};
use crate::crypto::digest_hex;
use crate::error::CommandError;
use crate::ids::now_millis;
use crate::message::{Outgoing, Platform, Reply};
use crate::router::Ctx;
use crate::store::entities::code::purpose;
use crate::store::entities::user;

pub const ACCEPT_ARGS: &[ArgSpec] = &[ArgSpec::required(
    "code",
    ArgKind::String,
    "The code from your friend's /invite",
)];

pub const UNFRIEND_ARGS: &[ArgSpec] = &[ArgSpec::required("friend", ArgKind::User, "Their handle")];

/// How long an invite works.
const VALID_FOR: Duration = Duration::from_secs(24 * 3600);
/// No 0/O or 1/I, so codes survive being read aloud or retyped.
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A fresh 8-character code, shown as `ABCD-2345`, and its normalized form.
pub(crate) fn new_code() -> (String, String) {
    let code: String = (0..8)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect();
    (format!("{}-{}", &code[..4], &code[4..]), code)
}

/// `abcd-2345` and `ABCD2345` are the same code.
pub(crate) fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The Segue user someone means: a handle (with or without `@`), on Telegram and
/// Discord the `@username` of someone who has talked to the bot, and on Discord a picked
/// mention (`<@id>`).
pub(crate) async fn find_person(ctx: &Ctx, raw: &str) -> Result<user::Model, CommandError> {
    let platform = ctx.incoming.chat.platform;
    let store = &ctx.core.store;
    if platform == Platform::Discord
        && let Some(id) = discord_mention(raw)
    {
        return match store.user_by_platform_id(platform, id).await? {
            Some(u) => Ok(u),
            None => Err(CommandError::user(
                "They haven't used Segue yet. Ask them to send /start to me once, then you can /invite them.",
            )),
        };
    }
    let name = raw.trim().trim_start_matches('@');
    if let Some(u) = store.user_by_handle(name).await? {
        return Ok(u);
    }
    if matches!(platform, Platform::Telegram | Platform::Discord)
        && let Some(u) = store.user_by_username(platform, name).await?
    {
        return Ok(u);
    }
    Err(CommandError::user(format!(
        "I don't know @{name}. They need to talk to me once first (/start), then you can /invite them."
    )))
}

/// The user id in a Discord mention, `<@123>` or `<@!123>`.
fn discord_mention(raw: &str) -> Option<&str> {
    let id = raw
        .trim()
        .strip_prefix("<@")?
        .strip_suffix('>')?
        .trim_start_matches('!');
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

pub async fn invite(ctx: &Ctx, _args: Args) -> HandlerResult {
    let (shown, code) = new_code();
    ctx.core
        .store
        .create_code(
            purpose::INVITE,
            ctx.person.user_id,
            &digest_hex(&code),
            now_millis() + VALID_FOR.as_millis() as i64,
        )
        .await?;
    Ok(vec![
        Reply::text(
            "Send this line to a friend. They send it to me (on any platform) within 24 hours, \
             and you're friends:",
        ),
        Reply::text(format!("/accept {shown}")),
    ])
}

pub async fn accept(ctx: &Ctx, args: Args) -> HandlerResult {
    let code = normalize_code(args.str("code").unwrap_or_default());
    let store = &ctx.core.store;
    let invalid = || {
        CommandError::user(
            "That invite isn't valid: invites work once, for 24 hours. Ask your friend for a \
             new one (/invite).",
        )
    };
    if code.len() != 8 {
        return Err(invalid());
    }
    let Some(inviter_id) = store
        .claim_code(purpose::INVITE, &digest_hex(&code), now_millis())
        .await?
    else {
        return Err(invalid());
    };
    let me = ctx.person.user_id;
    if inviter_id == me {
        return Err(CommandError::user(
            "That's your own invite. Give the line to a friend instead.",
        ));
    }
    let Some(inviter) = store.user(inviter_id).await? else {
        return Err(invalid());
    };
    let new = store.befriend(inviter_id, me, now_millis()).await?;
    if !new {
        return Ok(vec![Reply::text(format!(
            "You and @{} are already friends.",
            inviter.handle
        ))]);
    }
    if let Some(to) = store.notify_address(inviter_id).await? {
        let mut out = Outgoing::new(
            to,
            Reply::text(format!(
                "@{me_handle} accepted your invite: you're friends now. Share a song with \
                 /share {me_handle} <track>.",
                me_handle = ctx.person.handle
            )),
        );
        out.user_id = Some(inviter_id);
        ctx.core.outbox.send(vec![out]).await?;
    }
    Ok(vec![Reply::text(format!(
        "You and @{h} are friends now. Share a song with /share {h} <track>.",
        h = inviter.handle
    ))])
}

pub async fn friends(ctx: &Ctx, _args: Args) -> HandlerResult {
    let friends = ctx.core.store.friends_of(ctx.person.user_id).await?;
    if friends.is_empty() {
        return Ok(vec![Reply::text(
            "No friends yet. Send /invite and give the line to a friend.",
        )]);
    }
    let names: Vec<String> = friends.iter().map(|f| format!("@{}", f.handle)).collect();
    Ok(vec![Reply::text(format!(
        "Your friends: {}",
        names.join(", ")
    ))])
}

pub async fn unfriend(ctx: &Ctx, args: Args) -> HandlerResult {
    let other = find_person(ctx, args.str("friend").unwrap_or_default()).await?;
    if ctx
        .core
        .store
        .unfriend(ctx.person.user_id, other.id)
        .await?
    {
        Ok(vec![Reply::text(format!(
            "You and @{} are no longer friends.",
            other.handle
        ))])
    } else {
        Ok(vec![Reply::text(format!(
            "@{} isn't your friend.",
            other.handle
        ))])
    }
}

#[cfg(test)]
mod tests {
    use super::discord_mention;

    #[test]
    fn discord_mentions_name_a_user_id() {
        assert_eq!(
            discord_mention("<@80351110224678912>"),
            Some("80351110224678912")
        );
        assert_eq!(discord_mention(" <@!42> "), Some("42"));
        assert_eq!(discord_mention("<@&42>"), None, "a role");
        assert_eq!(discord_mention("bob"), None);
    }
}
