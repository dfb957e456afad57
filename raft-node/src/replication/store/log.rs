//! The Raft log and vote in RocksDB.
//!
//! Durability is the point of this file: openraft is told that entries are stored only after
//! the write-ahead log holding them has been synced to disk, and `save_vote` returns only
//! after the vote is synced. Appends are group-committed: entries are written (readable) at
//! once, and one syncer thread syncs the WAL for every append that arrived since its last
//! sync, then completes all of their callbacks. Concurrent writes therefore share disk syncs.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::{LogState, OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use super::{cf, crash_point, db_err, decode, encode, CF_LOGS, CF_META};
use crate::replication::types::TypeConfig;

type C = TypeConfig;

const KEY_VOTE: &[u8] = b"vote";
const KEY_PURGED: &[u8] = b"last_purged_log_id";
const KEY_COMMITTED: &[u8] = b"committed";

/// The log store (and its reader: a cheap clone sharing the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: mpsc::Sender<IOFlushed<C>>,
}

impl LogStore {
    /// A log store over an open database; starts the syncer thread.
    pub fn new(db: Arc<DB>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<IOFlushed<C>>();
        let sdb = db.clone();
        std::thread::Builder::new()
            .name("raftipam-wal-sync".into())
            .spawn(move || sync_loop(sdb, rx))?;
        Ok(LogStore { db, syncer: tx })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self
            .db
            .get_cf(cf(&self.db, CF_META)?, key)
            .map_err(db_err)?
        {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], v: &T) -> io::Result<()> {
        self.db
            .put_cf(cf(&self.db, CF_META)?, key, encode(v)?)
            .map_err(db_err)
    }
}

/// Syncs the WAL once for every group of appends waiting, then completes their callbacks.
/// Ends when every sender (every clone of the log store) is gone.
fn sync_loop(db: Arc<DB>, rx: mpsc::Receiver<IOFlushed<C>>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while let Ok(more) = rx.try_recv() {
            group.push(more);
        }
        crash_point!("log::before_sync");
        match db.flush_wal(true) {
            Ok(()) => {
                crash_point!("log::after_sync");
                group.into_iter().for_each(|cb| cb.io_completed(Ok(())))
            }
            Err(e) => {
                let msg = e.to_string();
                for cb in group {
                    cb.io_completed(Err(io::Error::other(msg.clone())));
                }
            }
        }
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(k: &[u8]) -> io::Result<u64> {
    let b: [u8; 8] = k
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad log key"))?;
    Ok(u64::from_be_bytes(b))
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let logs = cf(&self.db, CF_LOGS)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(logs, IteratorMode::From(&key(start), Direction::Forward))
        {
            let (k, v) = item.map_err(db_err)?;
            let idx = index_of(&k)?;
            if !range.contains(&idx) {
                break;
            }
            let entry: EntryOf<C> = decode(&v)?;
            if entry.index() != idx {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("log entry at key {idx} has index {}", entry.index()),
                ));
            }
            out.push(entry);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let logs = cf(&self.db, CF_LOGS)?;
        let last = match self.db.iterator_cf(logs, IteratorMode::End).next() {
            None => None,
            Some(item) => {
                let (_, v) = item.map_err(db_err)?;
                let e: EntryOf<C> = decode(&v)?;
                Some(e.log_id())
            }
        };
        let last_purged_log_id: Option<LogIdOf<C>> = self.get_meta(KEY_PURGED)?;
        let last_log_id = last.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        crash_point!("vote::before_save");
        self.put_meta(KEY_VOTE, vote)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush_wal(true).map_err(db_err))
            .await
            .map_err(io::Error::other)??;
        crash_point!("vote::after_save");
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        // Not synced: it rides along with the next WAL sync. Losing it only means a restarted
        // node re-applies less from its own log and waits for the leader for the rest.
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self
            .get_meta::<Option<LogIdOf<C>>>(KEY_COMMITTED)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let logs = cf(&self.db, CF_LOGS)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(logs, key(entry.index()), encode(&entry)?);
        }
        // Written (readable) now; durable once the syncer has synced the WAL.
        if let Err(e) = self.db.write(batch) {
            let err = db_err(e);
            callback.io_completed(Err(io::Error::other(err.to_string())));
            return Err(err);
        }
        if let Err(mpsc::SendError(cb)) = self.syncer.send(callback) {
            cb.io_completed(Err(io::Error::other("the WAL syncer has stopped")));
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        self.db
            .delete_range_cf(cf(&self.db, CF_LOGS)?, key(from), key(u64::MAX))
            .map_err(db_err)?;
        // delete_range's end is exclusive: remove the very last key too.
        self.db
            .delete_cf(cf(&self.db, CF_LOGS)?, key(u64::MAX))
            .map_err(db_err)
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.put_meta(KEY_PURGED, &log_id)?;
        crash_point!("log::purge");
        self.db
            .delete_range_cf(cf(&self.db, CF_LOGS)?, key(0), key(log_id.index() + 1))
            .map_err(db_err)
    }
}
