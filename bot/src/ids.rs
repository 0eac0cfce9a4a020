//! Message ids: 64-bit, time-ordered, made in the process (no database round trip), so
//! the group-commit writer can batch inserts and the web console can use them as
//! server-sent event ids that sort in send order.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// 2024-01-01T00:00:00Z in Unix milliseconds: ids count from here.
const EPOCH_MS: u64 = 1_704_067_200_000;
const NODE_BITS: u32 = 10;
const SEQ_BITS: u32 = 12;

/// The smallest id made at or after `unix_ms` (every id below it is older).
pub fn id_floor(unix_ms: i64) -> i64 {
    let ms = (unix_ms.max(0) as u64).saturating_sub(EPOCH_MS);
    (ms << (NODE_BITS + SEQ_BITS)) as i64
}

/// How many node numbers there are: processes on one database need one each.
pub const NODES: u16 = 1 << NODE_BITS;

/// Makes ids of the form `millis << 22 | node << 12 | sequence`. Ids from one process
/// strictly increase; processes on one database make different ids as long as their
/// node numbers differ ([`crate::store::Store::open`] sees to that on PostgreSQL).
#[derive(Debug)]
pub struct IdGenerator {
    node: u64,
    state: Mutex<(u64, u64)>,
}

impl IdGenerator {
    /// A generator with a random node number (one process, or SQLite).
    pub fn new() -> Self {
        Self::with_node(rand::random::<u16>() % NODES)
    }

    /// A generator for node number `node` (below [`NODES`]).
    pub fn with_node(node: u16) -> Self {
        Self {
            node: u64::from(node % NODES),
            state: Mutex::new((0, 0)),
        }
    }

    /// This generator's node number.
    pub fn node(&self) -> u16 {
        self.node as u16
    }

    pub fn next_id(&self) -> i64 {
        let now = now_ms().saturating_sub(EPOCH_MS);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last_ms, seq) = *state;
        let (ms, seq) = if now > last_ms {
            (now, 0)
        } else if seq + 1 < (1 << SEQ_BITS) {
            (last_ms, seq + 1)
        } else {
            // 4096 ids in one millisecond: borrow the next millisecond.
            (last_ms + 1, 0)
        };
        *state = (ms, seq);
        ((ms << (NODE_BITS + SEQ_BITS)) | (self.node << SEQ_BITS) | seq) as i64
    }
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

/// Milliseconds since the Unix epoch, the unit of every timestamp column.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// [`now_ms`] as the `i64` the database columns hold.
pub fn now_millis() -> i64 {
    now_ms() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_strictly_increase() {
        let g = IdGenerator::new();
        let mut last = 0;
        for _ in 0..20_000 {
            let id = g.next_id();
            assert!(id > last, "{id} after {last}");
            last = id;
        }
    }
}
