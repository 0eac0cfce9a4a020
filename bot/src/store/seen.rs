//! Batched dedupe reads for [`super::Store::begin_sighting`]: every first sighting of a
//! platform event asks whether `seen_updates` already has its id. One task answers all
//! the questions waiting at once with a single indexed query, so under load the read
//! costs a fraction of a round trip per event instead of one each; alone, a question
//! waits for nothing.

use std::collections::HashSet;

use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::entities::seen_update;
use crate::message::Platform;

/// Ids in one query at most (well under both backends' limits on bound parameters).
const MAX_IDS: usize = 500;
/// Queries in flight at once: one answering while the next batch gathers.
const IN_FLIGHT: usize = 2;

struct Ask {
    platform: Platform,
    id: String,
    done: oneshot::Sender<Result<bool, String>>,
}

#[derive(Debug, Clone)]
pub(super) struct SeenReader {
    tx: mpsc::UnboundedSender<Ask>,
}

impl SeenReader {
    pub(super) fn start(db: DatabaseConnection) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(db, rx));
        Self { tx }
    }

    /// Whether the event's id is in `seen_updates` (handled before).
    pub(super) async fn seen(&self, platform: Platform, id: &str) -> Result<bool, StoreError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Ask {
                platform,
                id: id.to_owned(),
                done,
            })
            .map_err(|_| StoreError::WriterStopped)?;
        match answer.await {
            Ok(Ok(seen)) => Ok(seen),
            Ok(Err(e)) => Err(StoreError::Db(DbErr::Custom(e))),
            Err(_) => Err(StoreError::WriterStopped),
        }
    }
}

async fn run(db: DatabaseConnection, rx: mpsc::UnboundedReceiver<Ask>) {
    super::batch::run(
        rx,
        IN_FLIGHT,
        MAX_IDS,
        |_| 1,
        move |asks| {
            let db = db.clone();
            async move { answer(&db, asks).await }
        },
    )
    .await;
}

/// One query for every waiting question; each gets its own answer.
async fn answer(db: &DatabaseConnection, asks: Vec<Ask>) {
    let platforms: HashSet<&'static str> = asks.iter().map(|a| a.platform.as_str()).collect();
    let found = seen_update::Entity::find()
        .select_only()
        .column(seen_update::Column::Platform)
        .column(seen_update::Column::ExternalId)
        .filter(seen_update::Column::ExternalId.is_in(asks.iter().map(|a| a.id.clone())))
        .filter(seen_update::Column::Platform.is_in(platforms))
        .into_tuple::<(String, String)>()
        .all(db)
        .await;
    match found {
        Ok(rows) => {
            let seen: HashSet<(String, String)> = rows.into_iter().collect();
            for a in asks {
                let key = (a.platform.as_str().to_owned(), a.id);
                let _ = a.done.send(Ok(seen.contains(&key)));
            }
        }
        Err(e) => {
            let e = e.to_string();
            for a in asks {
                let _ = a.done.send(Err(e.clone()));
            }
        }
    }
}
