//! openraft's own storage conformance suite (`openraft::testing::log::Suite`) against our
//! RocksDB log store and state machine store: the vote, log appends and truncation, purge,
//! membership and initial state as openraft expects them, each case on a fresh data
//! directory.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};

use super::{open_db, LogStore, StateMachineStore};
use crate::types::TypeConfig;

/// Every database the suite opened, and its directory: kept until each database has closed,
/// so no RocksDB thread outlives the test (a process exiting under a RocksDB background
/// thread aborts).
#[derive(Clone, Default)]
struct RocksBuilder {
    opened: Arc<Mutex<Vec<Opened>>>,
}

/// A database the suite opened (weakly, to see it close) and its directory.
type Opened = (Weak<rocksdb::DB>, tempfile::TempDir);

fn io_err(e: impl std::fmt::Display) -> StorageError<TypeConfig> {
    StorageError::from_io_error(
        ErrorSubject::Store,
        ErrorVerb::Write,
        std::io::Error::other(e.to_string()),
    )
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore> for RocksBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(io_err)?;
        let db = open_db(dir.path(), 1).map_err(io_err)?;
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((Arc::downgrade(&db), dir));
        let log = LogStore::new(db.clone()).map_err(io_err)?;
        let sm = StateMachineStore::open(db).map_err(io_err)?;
        Ok(((), log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_rocksdb_stores_pass_openraft_storage_conformance_suite() {
    let builder = RocksBuilder::default();
    let result = Suite::test_all(builder.clone()).await;
    // Every database closed (its stores dropped, their threads gone) before the directories go.
    let deadline = Instant::now() + Duration::from_secs(30);
    while builder
        .opened
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|(db, _)| db.strong_count() > 0)
    {
        assert!(
            Instant::now() < deadline,
            "a database of the suite never closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Err(e) = result {
        panic!("openraft's storage suite failed on our stores: {e}");
    }
}
