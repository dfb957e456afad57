//! Everything a node keeps on disk, in one RocksDB database inside its data directory.
//!
//! The data directory holds a small metadata record (`raftipam-node.json`: format, version,
//! node id) next to the database. Opening checks that record *before* anything is written:
//! a directory that belongs to another node, was written by another program, or is damaged
//! gives a [`StoreError`] that says which, and is left untouched.
//!
//! Column families: `meta` (vote, last purged log id, committed log id), `logs` (the Raft
//! log, keyed by big-endian index) and `sm` (the latest snapshot of the state machine).

#[cfg(test)]
mod conformance;
mod log;
mod sm;

/// A crash point for the chaos harness: when the process was started with `FAILPOINTS`
/// naming this point with the `return` action (e.g. `FAILPOINTS='log::after_sync=0.2%1*return'`,
/// fail-rs syntax), it says which point and aborts right here, as a crash at that instant
/// would. Without `FAILPOINTS` it costs one map lookup; built without the `failpoints`
/// feature it is compiled out.
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| $crate::replication::store::crash($name))
    };
}
pub(crate) use crash_point;

/// Ends the process at a crash point (see `crash_point!`).
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub(crate) fn crash<T>(name: &str) -> T {
    eprintln!("raftipam failpoint {name}: aborting the process here (FAILPOINTS)");
    std::process::abort()
}

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use log::LogStore;
#[cfg(test)]
pub(crate) use sm::blob_roundtrip;
pub(crate) use sm::{fuzz_seed, fuzz_snapshot};
pub use sm::{Change, StateMachineStore};

pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_SM: &str = "sm";

const META_FILE: &str = "raftipam-node.json";
const DB_DIR: &str = "db";
const FORMAT: &str = "raftipam-data";
/// The data directory's format: 1 as raftipam 0.1 wrote it; 2 once its cluster's version is
/// past 1 (raftipam 0.1 refuses version 2, which it could no longer read safely).
const VERSION: u32 = 2;

/// Why a data directory could not be opened.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The directory is not empty and was not written by raftipam.
    #[error("{path} is not a raftipam data directory (it is not empty and has no {META_FILE}); refusing to touch it — give an empty or new directory")]
    Foreign {
        /// The directory.
        path: PathBuf,
    },
    /// The directory belongs to another node.
    #[error("{path} holds the data of node {found}, not node {expected}; give this node its own data directory or the right --id")]
    WrongNode {
        /// The directory.
        path: PathBuf,
        /// Node id recorded in it.
        found: u64,
        /// Node id asked for.
        expected: u64,
    },
    /// Written by a newer raftipam.
    #[error("{path} has data format version {found}; this build reads versions 1 to {VERSION}: run a newer raftipam")]
    Version {
        /// The directory.
        path: PathBuf,
        /// Version found.
        found: u32,
    },
    /// Its cluster was upgraded past what this binary can follow.
    #[error("{path} was last written by raftipam {written_by} and needs raftipam {needs} or newer (its cluster was upgraded with `raftipam cluster upgrade`); this binary is {}: run {needs} or newer", crate::transport::hello::binary_version())]
    TooOld {
        /// The directory.
        path: PathBuf,
        /// The release that last wrote it.
        written_by: String,
        /// The oldest release that can read it.
        needs: String,
    },
    /// The metadata record or the database is damaged.
    #[error("data directory {path} is damaged: {why}")]
    Damaged {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Another process (or another node in this one) has the database open.
    #[error("data directory {path} is in use by another raftipam node (its database is locked); stop that one first")]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// An I/O error.
    #[error("data directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// `raftipam-node.json`. Fields past `node_id` came with raftipam 0.2 (0.1 ignores them).
#[derive(Serialize, Deserialize)]
struct MetaRecord {
    format: String,
    version: u32,
    node_id: u64,
    /// The release that created the directory or last recorded its cluster version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    written_by: Option<String>,
    /// The oldest release that can read it (set when the cluster version is raised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    needs: Option<String>,
}

/// `major.minor` of a release string, for comparisons (`0.2.0` → (0, 2)).
pub(crate) fn release_of(s: &str) -> (u64, u64) {
    let mut it = s.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Opens (or creates) the data directory of node `node_id` and its database.
pub fn open_db(dir: &Path, node_id: u64) -> Result<Arc<DB>, StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let meta_path = dir.join(META_FILE);
    let fresh = if meta_path.exists() {
        check_meta(dir, &meta_path, node_id)?;
        false
    } else if dir.exists() {
        let mut entries = fs::read_dir(dir).map_err(io)?;
        if entries.next().is_some() {
            return Err(StoreError::Foreign {
                path: dir.to_path_buf(),
            });
        }
        true
    } else {
        true
    };
    if fresh {
        fs::create_dir_all(dir).map_err(io)?;
        write_meta(dir, &meta_path, node_id).map_err(io)?;
    }
    let db_path = dir.join(DB_DIR);
    if !fresh && !db_path.join("CURRENT").exists() {
        return Err(StoreError::Damaged {
            path: dir.to_path_buf(),
            why: format!("the database in {} is missing", db_path.display()),
        });
    }
    if !fresh {
        check_db_read_only(dir, &db_path)?;
    }
    let mut opts = Options::default();
    opts.create_if_missing(fresh);
    opts.create_missing_column_families(fresh);
    opts.set_paranoid_checks(true);
    let cfs = [CF_META, CF_LOGS, CF_SM]
        .into_iter()
        .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    let db = DB::open_cf_descriptors(&opts, &db_path, cfs).map_err(|e| {
        if e.to_string().contains("lock") {
            StoreError::InUse {
                path: dir.to_path_buf(),
            }
        } else {
            StoreError::Damaged {
                path: dir.to_path_buf(),
                why: format!("cannot open the database: {e}"),
            }
        }
    })?;
    Ok(Arc::new(db))
}

/// Opens an existing database read-only, with RocksDB's own log file written to a scratch
/// directory, so that a damaged database is reported before anything in the data directory
/// is written (a normal open would at least rotate RocksDB's `LOG`).
fn check_db_read_only(dir: &Path, db_path: &Path) -> Result<(), StoreError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let scratch =
        std::env::temp_dir().join(format!("raftipam-check-{}-{nanos}", std::process::id()));
    let mut opts = Options::default();
    opts.set_paranoid_checks(true);
    opts.set_db_log_dir(&scratch);
    let r = DB::open_cf_for_read_only(&opts, db_path, [CF_META, CF_LOGS, CF_SM], false);
    let _ = fs::remove_dir_all(&scratch);
    match r {
        Ok(db) => {
            drop(db);
            Ok(())
        }
        Err(e) => Err(StoreError::Damaged {
            path: dir.to_path_buf(),
            why: format!("cannot open the database: {e}"),
        }),
    }
}

/// Checks a data directory record's bytes as [`open_db`] would (the frozen bytes test).
#[cfg(test)]
pub(crate) fn check_meta_bytes(bytes: &[u8], node_id: u64) -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|source| StoreError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let path = dir.path().join(META_FILE);
    fs::write(&path, bytes).map_err(|source| StoreError::Io {
        path: path.clone(),
        source,
    })?;
    check_meta(dir.path(), &path, node_id)
}

fn check_meta(dir: &Path, meta_path: &Path, node_id: u64) -> Result<(), StoreError> {
    let bytes = fs::read(meta_path).map_err(|source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let damaged = |why: String| StoreError::Damaged {
        path: dir.to_path_buf(),
        why,
    };
    let rec: MetaRecord = serde_json::from_slice(&bytes)
        .map_err(|e| damaged(format!("{META_FILE} does not parse: {e}")))?;
    if rec.format != FORMAT {
        return Err(StoreError::Foreign {
            path: dir.to_path_buf(),
        });
    }
    if !(1..=VERSION).contains(&rec.version) {
        return Err(StoreError::Version {
            path: dir.to_path_buf(),
            found: rec.version,
        });
    }
    if let Some(needs) = &rec.needs {
        if release_of(needs) > release_of(crate::transport::hello::binary_version()) {
            return Err(StoreError::TooOld {
                path: dir.to_path_buf(),
                written_by: rec.written_by.clone().unwrap_or_else(|| needs.clone()),
                needs: needs.clone(),
            });
        }
    }
    if rec.node_id != node_id {
        return Err(StoreError::WrongNode {
            path: dir.to_path_buf(),
            found: rec.node_id,
            expected: node_id,
        });
    }
    Ok(())
}

fn write_meta(dir: &Path, meta_path: &Path, node_id: u64) -> std::io::Result<()> {
    write_record(
        dir,
        meta_path,
        &MetaRecord {
            format: FORMAT.to_string(),
            version: 1,
            node_id,
            written_by: Some(crate::transport::hello::binary_version().to_string()),
            needs: None,
        },
    )
}

/// Records in the data directory that its cluster is at `cluster_version` (called once the
/// node has applied it): from version 2 on, the directory needs raftipam 0.2 or newer, and
/// says so (format 2, which raftipam 0.1 refuses to open).
pub(crate) fn record_cluster_version(
    dir: &Path,
    node_id: u64,
    cluster_version: u32,
) -> std::io::Result<()> {
    if cluster_version < 2 {
        return Ok(());
    }
    let meta_path = dir.join(META_FILE);
    let needs = allocator_core::cluster::release_of(cluster_version) + ".0";
    if let Ok(old) = fs::read(&meta_path) {
        if let Ok(rec) = serde_json::from_slice::<MetaRecord>(&old) {
            if rec.version == VERSION
                && rec.needs.as_deref().map(release_of) >= Some(release_of(&needs))
            {
                return Ok(());
            }
        }
    }
    write_record(
        dir,
        &meta_path,
        &MetaRecord {
            format: FORMAT.to_string(),
            version: VERSION,
            node_id,
            written_by: Some(crate::transport::hello::binary_version().to_string()),
            needs: Some(needs),
        },
    )
}

fn write_record(dir: &Path, meta_path: &Path, rec: &MetaRecord) -> std::io::Result<()> {
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(&tmp, meta_path)?;
    fs::File::open(dir)?.sync_all()
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, std::io::Error> {
    postcard::to_allocvec(v).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, std::io::Error> {
    postcard::from_bytes(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, std::io::Error> {
    db.cf_handle(name)
        .ok_or_else(|| std::io::Error::other(format!("column family {name} is missing")))
}

pub(crate) fn db_err(e: rocksdb::Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_is_created_and_reopened_by_the_same_node() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("n1");
        drop(open_db(&dir, 1).unwrap());
        drop(open_db(&dir, 1).unwrap());
    }

    #[test]
    fn another_node_id_is_refused() {
        let t = tempfile::tempdir().unwrap();
        drop(open_db(t.path(), 1).unwrap());
        let e = open_db(t.path(), 2).unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::WrongNode {
                    found: 1,
                    expected: 2,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_directory_open_in_another_node_is_reported_in_use() {
        let t = tempfile::tempdir().unwrap();
        let db = open_db(t.path(), 1).unwrap();
        let e = open_db(t.path(), 1).unwrap_err();
        assert!(matches!(e, StoreError::InUse { .. }), "{e}");
        drop(db);
    }

    #[test]
    fn a_foreign_directory_is_refused_and_left_alone() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("notes.txt"), "hello").unwrap();
        let e = open_db(t.path(), 1).unwrap_err();
        assert!(matches!(e, StoreError::Foreign { .. }), "{e}");
        let names: Vec<_> = fs::read_dir(t.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_damaged_metadata_record_is_reported() {
        let t = tempfile::tempdir().unwrap();
        drop(open_db(t.path(), 1).unwrap());
        fs::write(t.path().join(META_FILE), "{garbage").unwrap();
        let e = open_db(t.path(), 1).unwrap_err();
        assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
    }

    #[test]
    fn a_damaged_database_is_reported() {
        let t = tempfile::tempdir().unwrap();
        drop(open_db(t.path(), 1).unwrap());
        fs::write(t.path().join(DB_DIR).join("CURRENT"), "MANIFEST-999999\n").unwrap();
        let e = open_db(t.path(), 1).unwrap_err();
        assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
    }

    /// After `cluster upgrade` the directory says which release it needs; a binary older than
    /// that refuses to open it and names both (raftipam 0.1 refuses format 2 by itself).
    #[test]
    fn a_directory_of_an_upgraded_cluster_refuses_an_older_binary_and_says_why() {
        let t = tempfile::tempdir().unwrap();
        drop(open_db(t.path(), 1).unwrap());
        let rec: serde_json::Value =
            serde_json::from_slice(&fs::read(t.path().join(META_FILE)).unwrap()).unwrap();
        assert_eq!(
            rec["version"], 1,
            "a new directory is readable by 0.1: {rec}"
        );
        record_cluster_version(t.path(), 1, 2).unwrap();
        let rec: serde_json::Value =
            serde_json::from_slice(&fs::read(t.path().join(META_FILE)).unwrap()).unwrap();
        assert_eq!(
            (rec["version"].clone(), rec["needs"].clone()),
            (2.into(), "0.2.0".into())
        );
        drop(open_db(t.path(), 1).expect("this release reads it"));
        // As a later release would record it:
        let later = MetaRecord {
            format: FORMAT.into(),
            version: VERSION,
            node_id: 1,
            written_by: Some("0.9.1".into()),
            needs: Some("0.9.0".into()),
        };
        write_record(t.path(), &t.path().join(META_FILE), &later).unwrap();
        let e = open_db(t.path(), 1).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, StoreError::TooOld { .. }), "{msg}");
        assert!(
            msg.contains("0.9.1") && msg.contains("0.9.0 or newer"),
            "{msg}"
        );
        let later = MetaRecord {
            version: VERSION + 1,
            needs: None,
            ..later
        };
        write_record(t.path(), &t.path().join(META_FILE), &later).unwrap();
        assert!(matches!(
            open_db(t.path(), 1),
            Err(StoreError::Version { found: 3, .. })
        ));
    }
}
