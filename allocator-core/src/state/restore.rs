//! Restoring a backup into an empty state: whole ([`Op::Restore`](crate::Op::Restore)) or in pieces
//! ([`Op::RestoreChunk`](crate::Op::RestoreChunk), staged in the state, and in its snapshots, until
//! the last piece).
//!
//! Owns [`StagedRestore`] and the rule that only an empty state takes a backup. Never decodes
//! bytes itself (that is `crate::snapshot`, which validates everything) and never merges a
//! backup into a state that holds pools or allocations.

use super::State;
use crate::command::Outcome;
use crate::error::AllocError;
use crate::limits::{MAX_RESTORE_BYTES, MAX_RESTORE_CHUNK};
use crate::results::Restored;

/// The pieces of a backup received so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StagedRestore {
    /// The client's id for this restore.
    pub(crate) restore: u64,
    /// Length of the whole backup.
    pub(crate) total: u64,
    /// The bytes received so far, in order.
    pub(crate) bytes: Vec<u8>,
}

impl State {
    /// True when the state holds no pool, subnet or allocation and never allocated (hosts'
    /// heartbeats and reports aside): what [`Op::Restore`](crate::Op::Restore) accepts.
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty() && self.subnets.is_empty() && self.hosts.is_empty() && self.seq == 0
    }

    /// [`AllocError::NotEmpty`] unless [`State::is_empty`]: what a restore requires.
    fn refuse_unless_empty(&self) -> Result<(), AllocError> {
        if self.is_empty() {
            return Ok(());
        }
        Err(AllocError::NotEmpty(format!(
            "{} pools, last sequence number {}",
            self.pools.len(),
            self.seq
        )))
    }

    /// One piece of a backup restored in pieces ([`Op::RestoreChunk`](crate::Op::RestoreChunk)):
    /// kept until the last one, then restored. Every refusal leaves the state as it was, so a
    /// retried piece is harmless.
    pub(super) fn restore_chunk(
        &mut self,
        restore: u64,
        offset: u64,
        total: u64,
        bytes: &[u8],
    ) -> Result<Outcome, AllocError> {
        self.refuse_unless_empty()?;
        if bytes.len() > MAX_RESTORE_CHUNK {
            return Err(AllocError::Invalid(format!(
                "a piece of a backup is {} bytes; at most {MAX_RESTORE_CHUNK} are allowed",
                bytes.len()
            )));
        }
        if total > MAX_RESTORE_BYTES {
            return Err(AllocError::Invalid(format!(
                "the backup is {total} bytes; at most {MAX_RESTORE_BYTES} can be restored"
            )));
        }
        let len = bytes.len() as u64;
        if offset == 0 {
            self.staged = Some(StagedRestore {
                restore,
                total,
                bytes: Vec::new(),
            });
        }
        let staged = match self.staged.as_mut() {
            Some(s) if s.restore == restore && s.total == total => s,
            _ => {
                return Err(AllocError::Invalid(format!(
                    "no restore {restore:#x} of {total} bytes is under way (another restore started, or its first piece never arrived): start again with `raftipam restore`"
                )))
            }
        };
        let have = staged.bytes.len() as u64;
        if offset != have || offset + len > total {
            return Err(AllocError::Invalid(format!(
                "a piece at bytes {offset}..{} does not follow the {have} bytes received of {total}: start again with `raftipam restore`",
                offset + len
            )));
        }
        staged.bytes.extend_from_slice(bytes);
        if offset + len < total {
            return Ok(Outcome::RestoreStaged { have: offset + len });
        }
        let Some(whole) = self.staged.take() else {
            return Err(AllocError::Invalid("no restore under way".into()));
        };
        let out = self.restore_whole(&whole.bytes);
        if out.is_err() {
            // A damaged backup: nothing was restored and the pieces are of no more use.
            self.staged = None;
        }
        out.map(Outcome::from)
    }

    /// Replaces the whole, empty state with a backup, the bytes of [`State::to_snapshot`]
    /// ([`Op::Restore`](crate::Op::Restore)): pools, allocations with their sequence numbers,
    /// cooling addresses, serial cursors, heartbeats and reports come back exactly. Refused unless
    /// the state is empty ([`State::is_empty`]), and for bytes that do not load; heartbeats,
    /// reports (and raftipam's revocations and join tokens) already here are kept where newer.
    ///
    /// ```
    /// use allocator_core::{Order, Owner, PoolSpec, State};
    ///
    /// let mut old = State::default();
    /// let spec = PoolSpec::new("global").subnet("10.1.0.0/24".parse().unwrap());
    /// let pool = old.request_pool(0, &spec, "host-a").unwrap().pool;
    /// old.allocate(0, &pool, &Owner::new("host-a", "web"), Order::Lowest).unwrap();
    /// let backup = old.to_snapshot();
    ///
    /// let mut new = State::default();
    /// let back = new.restore(9, &backup).unwrap();
    /// assert_eq!((back.pools, back.allocations), (1, 1));
    /// assert!(new.restore(9, &backup).is_err(), "no longer empty");
    /// ```
    pub fn restore(&mut self, now_ms: u64, snapshot: &[u8]) -> Result<Restored, AllocError> {
        let _ = now_ms; // a backup brings its own times
        self.restore_whole(snapshot)
    }

    /// [`Op::Restore`](crate::Op::Restore).
    fn restore_whole(&mut self, snapshot: &[u8]) -> Result<Restored, AllocError> {
        self.refuse_unless_empty()?;
        // A backup in a format some member cannot read (raftipam 0.1 reads format 4 and no
        // later) waits for the cluster version that every member reads it at.
        if crate::snapshot::format_of(snapshot).is_some_and(|v| v > 4) && self.cluster_version < 2 {
            return Err(AllocError::NeedsClusterVersion {
                what: "restoring a backup of snapshot format 5".into(),
                needs: 2,
                current: self.cluster_version,
            });
        }
        let mut restored = State::from_snapshot(snapshot)
            .map_err(|e| AllocError::Invalid(format!("the backup does not load: {e}")))?;
        let pools = restored.pools.len() as u64;
        let allocations = restored.subnets.values().map(|sn| sn.records.len()).sum();
        // Shims running while the backup is restored keep their newer heartbeats and reports.
        for (host, seen) in std::mem::take(&mut self.seen) {
            if restored
                .seen
                .get(&host)
                .is_none_or(|r| r.last_seen_ms < seen.last_seen_ms)
            {
                restored.seen.insert(host, seen);
            }
        }
        // raftipam's revocations and join tokens made while empty stand.
        restored
            .credentials
            .keep_while_restoring(std::mem::take(&mut self.credentials));
        for (host, report) in std::mem::take(&mut self.reports) {
            if restored
                .reports
                .get(&host)
                .is_none_or(|r| r.at_ms < report.at_ms)
            {
                restored.reports.insert(host, report);
            }
        }
        // The cluster version is the cluster's, not the backup's.
        restored.cluster_version = self.cluster_version;
        *self = restored;
        Ok(Restored { pools, allocations })
    }
}
