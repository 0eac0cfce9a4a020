//! Who sent a message: platform identities resolved to Segue users (created on first
//! contact with a unique handle), handles, and reachability.

use std::time::{Duration, Instant};

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, sea_query::Expr,
};

use super::entities::{chat, identity, user};
use super::{Store, StoreError, clear_if_full, is_unique_violation};
use crate::ids::now_millis;
use crate::message::{ChatAddress, ChatKind, UserRef};
use crate::types::Handle;

/// How long a resolved person stays cached (other processes may change a handle).
const CACHE_TTL: Duration = Duration::from_secs(30);
/// `last_seen_at` is written at most this often per identity.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// `window_opened_at` likewise. The recorded time is then at most this much older than
/// the person's last message: the window looks shorter than it is, never longer.
const WINDOW_EVERY: Duration = Duration::from_secs(60);

/// The Segue user behind a message, as handlers need them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    pub user_id: i64,
    pub identity_id: i64,
    pub handle: String,
    pub banned: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Cached {
    person: Person,
    chat_id: String,
    at: Instant,
}

/// A user with all their platform identities, for `/me` and the admin pages.
#[derive(Clone, Debug)]
pub struct PersonDetails {
    pub user: user::Model,
    pub identities: Vec<identity::Model>,
}

impl Store {
    /// The person behind `sender`, creating user and identity on first contact. Updates
    /// the display name and the chat we last talked in.
    pub async fn resolve(
        &self,
        sender: &UserRef,
        chat: &ChatAddress,
        kind: ChatKind,
    ) -> Result<Person, StoreError> {
        self.resolve_reaching(sender, chat, kind, None).await
    }

    /// [`Self::resolve`], for a message in a group that names where the sender can be
    /// reached privately (`Incoming::private_chat`).
    pub async fn resolve_reaching(
        &self,
        sender: &UserRef,
        chat: &ChatAddress,
        kind: ChatKind,
        private_chat: Option<&str>,
    ) -> Result<Person, StoreError> {
        self.remember_chat(chat, kind).await?;
        let key = (sender.platform, sender.id.clone());
        if let Some(c) = self
            .people
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && c.at.elapsed() < TOUCH_EVERY.min(CACHE_TTL)
            && (kind == ChatKind::Group || c.chat_id == chat.chat_id)
        {
            return Ok(c.person.clone());
        }
        let private_chat = match kind {
            ChatKind::Private => Some(chat.chat_id.clone()),
            ChatKind::Group => private_chat.map(str::to_owned),
        };
        let person = self.resolve_uncached(sender, private_chat).await?;
        let mut people = self.people.lock().unwrap_or_else(|e| e.into_inner());
        clear_if_full(&mut people);
        people.insert(
            key,
            Cached {
                person: person.clone(),
                chat_id: chat.chat_id.clone(),
                at: Instant::now(),
            },
        );
        Ok(person)
    }

    async fn resolve_uncached(
        &self,
        sender: &UserRef,
        private_chat: Option<String>,
    ) -> Result<Person, StoreError> {
        let now = now_millis();
        for _ in 0..3 {
            if let Some(found) = identity::Entity::find()
                .filter(identity::Column::Platform.eq(sender.platform.as_str()))
                .filter(identity::Column::PlatformUserId.eq(&sender.id))
                .one(&self.db)
                .await?
            {
                let mut active: identity::ActiveModel = found.clone().into();
                active.display_name = Set(sender.display_name.clone());
                active.username = Set(sender.username.clone());
                active.last_seen_at = Set(now);
                if let Some(c) = &private_chat {
                    active.last_chat_id = Set(Some(c.clone()));
                    // Talking to us again means we can reach them again.
                    active.unreachable_at = Set(None);
                }
                active.update(&self.db).await?;
                let u = user::Entity::find_by_id(found.user_id)
                    .one(&self.db)
                    .await?
                    .ok_or_else(|| StoreError::Db(sea_orm::DbErr::RecordNotFound("user".into())))?;
                return Ok(Person {
                    user_id: u.id,
                    identity_id: found.id,
                    handle: u.handle,
                    banned: u.banned_at.is_some(),
                });
            }
            let u = self.create_user(&sender.display_name).await?;
            let row = identity::ActiveModel {
                user_id: Set(u.id),
                platform: Set(sender.platform.as_str().to_owned()),
                platform_user_id: Set(sender.id.clone()),
                display_name: Set(sender.display_name.clone()),
                username: Set(sender.username.clone()),
                last_chat_id: Set(private_chat.clone()),
                last_seen_at: Set(now),
                unreachable_at: Set(None),
                window_opened_at: Set(None),
                created_at: Set(now),
                ..Default::default()
            };
            match row.insert(&self.db).await {
                Ok(ident) => {
                    tracing::info!(user_id = u.id, handle = %u.handle, platform = %sender.platform, "new user");
                    return Ok(Person {
                        user_id: u.id,
                        identity_id: ident.id,
                        handle: u.handle,
                        banned: false,
                    });
                }
                // Another request created the identity first: use theirs.
                Err(e) if is_unique_violation(&e) => {
                    user::Entity::delete_by_id(u.id).exec(&self.db).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Db(sea_orm::DbErr::Custom(
            "identity kept changing while resolving it".into(),
        )))
    }

    async fn create_user(&self, display_name: &str) -> Result<user::Model, StoreError> {
        let base = Handle::suggest(display_name);
        let mut n = 1u32;
        loop {
            // carol, carol2, carol3, then random suffixes: a popular name costs a few
            // tries, not dozens.
            let handle = match n {
                1 => base.clone(),
                n if n <= 3 => base.with_suffix(n),
                _ => base.with_suffix(rand::random::<u32>() % 1_000_000),
            };
            let row = user::ActiveModel {
                handle: Set(handle.as_str().to_owned()),
                created_at: Set(now_millis()),
                banned_at: Set(None),
                ..Default::default()
            };
            match row.insert(&self.db).await {
                Ok(u) => return Ok(u),
                Err(e) if is_unique_violation(&e) && n < 20 => n += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn remember_chat(&self, chat: &ChatAddress, kind: ChatKind) -> Result<(), StoreError> {
        let key = (chat.platform, chat.chat_id.clone());
        if self
            .chats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return Ok(());
        }
        let row = chat::ActiveModel {
            platform: Set(chat.platform.as_str().to_owned()),
            chat_id: Set(chat.chat_id.clone()),
            kind: Set(kind.as_str().to_owned()),
            title: Set(None),
            created_at: Set(now_millis()),
            ..Default::default()
        };
        // The conflict to ignore is the chat's own (platform, chat id), not the row id:
        // after a restart, or a supergroup's move, the chat is there but not cached.
        chat::Entity::insert(row)
            .on_conflict_do_nothing_on([chat::Column::Platform, chat::Column::ChatId])
            .exec_without_returning(&self.db)
            .await?;
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        if chats.len() >= super::CACHE_LIMIT {
            chats.clear();
        }
        chats.insert(key);
        Ok(())
    }

    /// Sets a user's handle; [`StoreError::HandleTaken`] when another user has it.
    pub async fn set_handle(&self, user_id: i64, handle: &Handle) -> Result<(), StoreError> {
        let res = user::Entity::update_many()
            .col_expr(user::Column::Handle, Expr::value(handle.as_str()))
            .filter(user::Column::Id.eq(user_id))
            .exec(&self.db)
            .await;
        match res {
            Ok(_) => {
                self.forget_cached_user(user_id);
                Ok(())
            }
            Err(e) if is_unique_violation(&e) => Err(StoreError::HandleTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// Bans or unbans a user: a banned user's messages are recorded but not answered.
    pub async fn set_banned(&self, user_id: i64, banned: bool) -> Result<(), StoreError> {
        user::Entity::update_many()
            .col_expr(user::Column::BannedAt, Expr::value(banned.then(now_millis)))
            .filter(user::Column::Id.eq(user_id))
            .exec(&self.db)
            .await?;
        self.forget_cached_user(user_id);
        Ok(())
    }

    /// Drops a user's cached entries, people and web sessions (after a change to them).
    pub fn forget_cached_user(&self, user_id: i64) {
        self.people
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, c| c.person.user_id != user_id);
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (user, _)| *user != user_id);
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| s.user_id != user_id);
    }

    /// A user and all their identities.
    pub async fn person_details(&self, user_id: i64) -> Result<Option<PersonDetails>, StoreError> {
        let Some(user) = user::Entity::find_by_id(user_id).one(&self.db).await? else {
            return Ok(None);
        };
        let identities = identity::Entity::find()
            .filter(identity::Column::UserId.eq(user_id))
            .order_by_asc(identity::Column::Id)
            .all(&self.db)
            .await?;
        Ok(Some(PersonDetails { user, identities }))
    }

    /// Records that the person wrote to us at `at` (their messaging window opens again);
    /// `false` when it was recorded less than a minute ago and nothing was written.
    pub async fn open_window(&self, person: &Person, at: i64) -> Result<bool, StoreError> {
        let recent = self
            .windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&person.identity_id)
            .is_some_and(|(_, written)| written.elapsed() < WINDOW_EVERY);
        if recent {
            return Ok(false);
        }
        identity::Entity::update_many()
            .col_expr(identity::Column::WindowOpenedAt, Expr::value(at))
            .filter(identity::Column::Id.eq(person.identity_id))
            .exec(&self.db)
            .await?;
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        clear_if_full(&mut windows);
        windows.insert(person.identity_id, (person.user_id, Instant::now()));
        Ok(true)
    }

    /// When the people behind these private chats last wrote to us on `platform`
    /// (chats whose person never did are left out).
    pub async fn windows_opened(
        &self,
        platform: crate::message::Platform,
        chats: &[&str],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let found = identity::Entity::find()
            .filter(identity::Column::Platform.eq(platform.as_str()))
            .filter(identity::Column::LastChatId.is_in(chats.iter().copied()))
            .filter(identity::Column::WindowOpenedAt.is_not_null())
            .all(&self.db)
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|i| Some((i.last_chat_id?, i.window_opened_at?)))
            .collect())
    }

    /// Marks whoever we talk to in this private chat as unreachable on that platform.
    pub async fn mark_unreachable(&self, chat: &ChatAddress) -> Result<(), StoreError> {
        identity::Entity::update_many()
            .col_expr(identity::Column::UnreachableAt, Expr::value(now_millis()))
            .filter(identity::Column::Platform.eq(chat.platform.as_str()))
            .filter(identity::Column::LastChatId.eq(&chat.chat_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// A chat's id changed (a Telegram group became a supergroup): the chat keeps its
    /// history and the messages still on their way follow it.
    pub async fn migrate_chat(
        &self,
        platform: crate::message::Platform,
        old: &str,
        new: &str,
    ) -> Result<(), StoreError> {
        use super::entities::message;
        let p = platform.as_str();
        let moved = chat::Entity::update_many()
            .col_expr(chat::Column::ChatId, Expr::value(new))
            .filter(chat::Column::Platform.eq(p))
            .filter(chat::Column::ChatId.eq(old))
            .exec(&self.db)
            .await;
        match moved {
            Ok(_) => {}
            // The new id was seen already: keep that row.
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(e.into()),
        }
        message::Entity::update_many()
            .col_expr(message::Column::ChatId, Expr::value(new))
            .filter(message::Column::Platform.eq(p))
            .filter(message::Column::ChatId.eq(old))
            .filter(
                message::Column::Status.is_in([message::status::PENDING, message::status::HELD]),
            )
            .exec(&self.db)
            .await?;
        self.chats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(platform, old.to_owned()));
        Ok(())
    }

    /// The most recent users, for the admin pages.
    pub async fn recent_users(&self, limit: u64) -> Result<Vec<user::Model>, StoreError> {
        use sea_orm::QuerySelect;
        Ok(user::Entity::find()
            .order_by_desc(user::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }
}
