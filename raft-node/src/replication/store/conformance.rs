//! openraft's own storage conformance suite (`openraft::testing::log::Suite`) against our
//! RocksDB log store and state machine store: the vote, log appends and truncation, purge,
//! membership and initial state as openraft expects them, each case on a fresh data
//! directory.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};

use super::{open_db, LogStore, StateMachineStore};
use crate::replication::types::TypeConfig;

struct RocksBuilder;

fn io_err(e: impl std::fmt::Display) -> StorageError<TypeConfig> {
    StorageError::from_io_error(
        ErrorSubject::Store,
        ErrorVerb::Write,
        std::io::Error::other(e.to_string()),
    )
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(io_err)?;
        let db = open_db(dir.path(), 1).map_err(io_err)?;
        let log = LogStore::new(db.clone()).map_err(io_err)?;
        let sm = StateMachineStore::open(db).map_err(io_err)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_rocksdb_stores_pass_openraft_storage_conformance_suite() {
    if let Err(e) = Suite::test_all(RocksBuilder).await {
        panic!("openraft's storage suite failed on our stores: {e}");
    }
}
