//! When a node builds a snapshot (and purges the log behind it).
//!
//! Building one encodes the whole allocator state, so its cost grows with the state: a
//! million allocations take about a second (encode, write, sync), ten million ten times that.
//! Snapshotting every fixed number of entries (`--snapshot-every`) makes a big state spend
//! most of its time snapshotting: measured on a 2-vCPU machine, a cluster filling its third
//! million allocations with a snapshot every 10,000 entries fell from 20,000 to 7,800
//! allocations a second, its p99 from 8 ms to 440 ms.
//!
//! So a snapshot is due when at least `--snapshot-every` entries were applied since the last
//! one **and** the log since then is about as large as the snapshot itself (estimated as
//! [`BYTES_PER_ENTRY`] per entry): the snapshot's cost is then spread over as many entries as
//! it has bytes / [`BYTES_PER_ENTRY`], a constant cost per entry at any size, and the log kept
//! between snapshots — replayed at a restart — is never much larger than the snapshot.
//! Snapshots under [`SIZED_FROM_BYTES`] (4 MiB, some 200,000 allocations; every chaos run and
//! every test) are built every `--snapshot-every` entries exactly, as before.
//!
//! Entries are not all 128 bytes: a host may send writes of up to a mebibyte that are
//! refused only when applied (a junk report). So the log is also weighed by its real bytes:
//! a snapshot is due as well once the entries appended since the last one are larger than
//! both the snapshot and [`LOG_BYTES_FLOOR`] — the log a node keeps (and replays at a
//! restart) stays bounded by the state's size, whatever the entries carry.
//!
//! openraft's own policy counts entries only; it is turned off (`SnapshotPolicy::Never`) and
//! [`run`] watches the applied index and asks openraft for a snapshot when one is due.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use tokio::time::Instant;

use super::store::StateMachineStore;
use crate::types::Raft;

/// A log entry's size as this policy estimates it (an allocation with its owner and request
/// id, as stored, is about this size).
pub(crate) const BYTES_PER_ENTRY: u64 = 128;

/// Snapshots smaller than this are built every `--snapshot-every` entries, whatever their
/// size (they take milliseconds; the chaos runs rely on frequent snapshots of small states).
pub(crate) const SIZED_FROM_BYTES: u64 = 4 << 20;

/// The log bytes since the last snapshot that make one due, whatever the number of entries
/// (unless the snapshot itself is larger).
pub(crate) const LOG_BYTES_FLOOR: u64 = 64 << 20;

/// True when the log appended since the last snapshot (`log_bytes`) is heavier than both the
/// snapshot (`snapshot_bytes`) and [`LOG_BYTES_FLOOR`].
pub(crate) fn heavy(log_bytes: u64, snapshot_bytes: u64) -> bool {
    log_bytes >= snapshot_bytes.max(LOG_BYTES_FLOOR)
}

/// True when a snapshot is due: `applied` entries applied, the last snapshot at `snapshot`
/// (indices; `None`: none yet) and `snapshot_bytes` long.
pub(crate) fn due(
    applied: Option<u64>,
    snapshot: Option<u64>,
    every: u64,
    snapshot_bytes: u64,
) -> bool {
    let Some(applied) = applied else {
        return false;
    };
    let since = snapshot.map_or(applied + 1, |s| applied.saturating_sub(s));
    let sized = if snapshot_bytes >= SIZED_FROM_BYTES {
        snapshot_bytes / BYTES_PER_ENTRY
    } else {
        0
    };
    since >= every.max(1).max(sized)
}

/// Watches the applied index and triggers a snapshot when [`due`]; one at a time (a build
/// that has not shown up in a minute is asked for again). Ends when Raft stops.
pub(crate) async fn run(
    raft: Raft,
    sm: StateMachineStore,
    every: u64,
    appended: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::Ordering;
    let mut rx = raft.metrics();
    let mut asked: Option<(u64, Instant)> = None;
    // The appended-bytes count when the last snapshot was asked for (or the node started:
    // the log it found is counted by entries only).
    let mut base = appended.load(Ordering::Relaxed);
    loop {
        let (applied, snapshot) = {
            let m = rx.borrow_watched();
            (
                m.last_applied.as_ref().map(|l| l.index),
                m.snapshot.as_ref().map(|l| l.index),
            )
        };
        if let Some((at, when)) = asked {
            let built = snapshot.is_some_and(|s| s >= at);
            if built || when.elapsed() > Duration::from_secs(60) {
                asked = None;
            }
        }
        let log_bytes = appended.load(Ordering::Relaxed).saturating_sub(base);
        let snapshot_bytes = sm.snapshot_bytes();
        if asked.is_none()
            && (due(applied, snapshot, every, snapshot_bytes) || heavy(log_bytes, snapshot_bytes))
        {
            base = appended.load(Ordering::Relaxed);
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            asked = Some((applied.unwrap_or(0), Instant::now()));
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_heavier_than_the_snapshot_and_the_floor_is_due() {
        assert!(!heavy(LOG_BYTES_FLOOR - 1, 0));
        assert!(heavy(LOG_BYTES_FLOOR, 0));
        assert!(heavy(LOG_BYTES_FLOOR, LOG_BYTES_FLOOR));
        // A state larger than the floor: the log must outweigh it.
        assert!(!heavy(100 << 20, 200 << 20));
        assert!(heavy(200 << 20, 200 << 20));
    }

    #[test]
    fn small_states_snapshot_every_n_entries() {
        assert!(!due(None, None, 100, 0));
        assert!(!due(Some(98), None, 100, 0)); // 99 entries (0..=98)
        assert!(due(Some(99), None, 100, 0)); // 100 entries
        assert!(!due(Some(199), Some(100), 100, 5_000));
        assert!(due(Some(200), Some(100), 100, 5_000));
        // Under 4 MiB the size does not count.
        assert!(due(Some(200), Some(100), 100, SIZED_FROM_BYTES - 1));
        assert!(!due(Some(200), Some(100), 100, SIZED_FROM_BYTES));
    }

    #[test]
    fn big_states_wait_until_the_log_is_as_large_as_the_snapshot() {
        // A 19 MiB snapshot (a million allocations): ~155,000 entries, not 10,000.
        let bytes = 19 << 20;
        let n = bytes / BYTES_PER_ENTRY;
        assert!(!due(
            Some(1_000_000 + 10_000),
            Some(1_000_000),
            10_000,
            bytes
        ));
        assert!(!due(
            Some(1_000_000 + n - 1),
            Some(1_000_000),
            10_000,
            bytes
        ));
        assert!(due(Some(1_000_000 + n), Some(1_000_000), 10_000, bytes));
        // --snapshot-every still sets the floor.
        assert!(!due(Some(1_000_000 + n), Some(1_000_000), n + 1, bytes));
    }
}
