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
use crate::types::TypeConfig;

type C = TypeConfig;

const KEY_VOTE: &[u8] = b"vote";
const KEY_PURGED: &[u8] = b"last_purged_log_id";
const KEY_COMMITTED: &[u8] = b"committed";

/// The log store (and its reader: a cheap clone sharing the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: mpsc::Sender<IOFlushed<C>>,
    /// Bytes of entries appended since the store was opened (the snapshot policy weighs
    /// the log by them: [`crate::replication::snapshots`]).
    appended: Arc<std::sync::atomic::AtomicU64>,
}

impl LogStore {
    /// A log store over an open database; starts the syncer thread.
    ///
    /// Entries at or below the purge mark, if any, are deleted first: a store written by a
    /// version whose purge was two writes (the mark, then the deletion) may have stopped
    /// between them.
    /// The counter of bytes appended to this log since it was opened (shared).
    pub fn appended(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.appended.clone()
    }

    pub fn new(db: Arc<DB>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<IOFlushed<C>>();
        let sdb = db.clone();
        std::thread::Builder::new()
            .name("raftipam-wal-sync".into())
            .spawn(move || sync_loop(sdb, rx))?;
        let store = LogStore {
            db,
            syncer: tx,
            appended: Default::default(),
        };
        if let Some(purged) = store.get_meta::<LogIdOf<C>>(KEY_PURGED)? {
            let logs = cf(&store.db, CF_LOGS)?;
            let first = match store.db.iterator_cf(logs, IteratorMode::Start).next() {
                Some(item) => Some(index_of(&item.map_err(db_err)?.0)?),
                None => None,
            };
            if first.is_some_and(|i| i <= purged.index()) {
                let mut batch = WriteBatch::default();
                store.delete_entries(&mut batch, 0, purged.index())?;
                store.db.write(batch).map_err(db_err)?;
            }
        }
        Ok(store)
    }

    /// Adds to `batch` the deletion of every entry from `from` through `through` (inclusive;
    /// `delete_range`'s end is exclusive, so the very last key is deleted on its own).
    fn delete_entries(&self, batch: &mut WriteBatch, from: u64, through: u64) -> io::Result<()> {
        let logs = cf(&self.db, CF_LOGS)?;
        batch.delete_range_cf(logs, key(from), key(through.saturating_add(1)));
        if through == u64::MAX {
            batch.delete_cf(logs, key(u64::MAX));
        }
        Ok(())
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
        // A purge may reach past the last entry (after a snapshot install, the purge mark is
        // the snapshot's last log id): then the log is empty and ends at the mark. Entries
        // older than the mark never count (openraft refuses a last log id below it).
        let last_log_id = last.max(last_purged_log_id);
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
        let mut bytes = 0u64;
        for entry in entries {
            let e = encode(&entry)?;
            bytes += e.len() as u64;
            batch.put_cf(logs, key(entry.index()), e);
        }
        self.appended
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
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
        let mut batch = WriteBatch::default();
        self.delete_entries(&mut batch, from, u64::MAX)?;
        self.db.write(batch).map_err(db_err)
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        crash_point!("log::purge");
        // The mark and the deletion in one atomic write: a crash leaves both or neither.
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META)?, KEY_PURGED, encode(&log_id)?);
        self.delete_entries(&mut batch, 0, log_id.index())?;
        self.db.write(batch).map_err(db_err)?;
        crash_point!("log::after_purge");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;
    use std::time::{Duration, Instant};

    use openraft::storage::StorageHelper;
    use openraft::testing::{blank_ent, log_id};

    use super::*;
    use crate::replication::store::{open_db, StateMachineStore};

    /// Writes entries `1..=last` of term 1 straight into the log column family.
    fn put_entries(db: &DB, last: u64) {
        let logs = cf(db, CF_LOGS).unwrap();
        for i in 1..=last {
            let e: EntryOf<C> = blank_ent::<C>(1, 1, i);
            db.put_cf(logs, key(i), encode(&e).unwrap()).unwrap();
        }
    }

    /// Waits until the database has closed (the syncer thread gone), so no RocksDB thread
    /// outlives the test.
    fn wait_closed(db: Weak<DB>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while db.strong_count() > 0 {
            assert!(Instant::now() < deadline, "the database never closed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Chaos seed 8016: an older purge wrote its mark and stopped before deleting the entries
    /// it covered (a snapshot install had moved the mark past the last entry). The node must
    /// start: the log is empty and ends at the mark, and the stale entries are gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_interrupted_after_its_mark_leaves_a_store_openraft_starts_from() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path(), 1).unwrap();
        put_entries(&db, 5);
        let mark = log_id::<C>(2, 1, 9);
        db.put_cf(
            cf(&db, CF_META).unwrap(),
            KEY_PURGED,
            encode(&mark).unwrap(),
        )
        .unwrap();

        let mut log = LogStore::new(db.clone()).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(mark));
        assert_eq!(state.last_log_id, Some(mark));
        assert!(log.try_get_log_entries(0..100).await.unwrap().is_empty());

        let mut sm = StateMachineStore::open(db.clone()).unwrap();
        let initial = StorageHelper::new(&mut log, &mut sm)
            .with_id(1)
            .get_initial_state()
            .await
            .unwrap_or_else(|e| panic!("openraft refused the store: {e}"));
        assert_eq!(initial.log_ids.purged(), Some(&mark));
        assert_eq!(initial.log_ids.last(), Some(&mark));

        let weak = Arc::downgrade(&db);
        drop((log, sm, db));
        wait_closed(weak);
    }

    /// A purge past the last entry (as after a snapshot install) empties the log, which then
    /// ends at the purge mark; a purge inside the log keeps the entries after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_past_the_last_entry_leaves_an_empty_log_ending_at_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path(), 1).unwrap();
        put_entries(&db, 6);
        let mut log = LogStore::new(db.clone()).unwrap();

        log.purge(log_id::<C>(1, 1, 3)).await.unwrap();
        let kept: Vec<u64> = log
            .try_get_log_entries(0..100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.index())
            .collect();
        assert_eq!(kept, [4, 5, 6]);
        assert_eq!(
            log.get_log_state().await.unwrap().last_log_id,
            Some(log_id::<C>(1, 1, 6))
        );

        let mark = log_id::<C>(3, 2, 40);
        log.purge(mark).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(mark));
        assert_eq!(state.last_log_id, Some(mark));
        assert!(log.try_get_log_entries(0..100).await.unwrap().is_empty());

        let weak = Arc::downgrade(&db);
        drop((log, db));
        wait_closed(weak);
    }
}
