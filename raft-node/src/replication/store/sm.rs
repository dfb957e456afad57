//! The state machine: allocator-core's [`State`] in memory, plus the table of client
//! sessions that makes retried requests idempotent.
//!
//! The state itself is not written on every apply: the Raft log already holds every command
//! durably. What is persisted is the snapshot (allocator state + sessions + the last applied
//! log id and membership), written with a synced write whenever openraft builds or installs
//! one. On start the node loads that snapshot and openraft re-applies the log after it.
//!
//! **Sessions.** Each entry carries a [`RequestId`] `(client, serial)` and the client's
//! `acked_below` mark. The outcome of every applied request is kept per client until the
//! client says it has seen it (its serial falls below `acked_below`), so a retry of a
//! request whose first attempt was committed gets the first outcome back instead of being
//! applied again. Bounds: at most [`MAX_OUTCOMES_PER_CLIENT`] outcomes per client, and a
//! client silent for [`SESSION_TTL_MS`] (by the commands' own clock) is forgotten. All of this
//! is a function of the log, so every replica keeps the same table.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use allocator_core::State;
use futures::TryStreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StoredMembership};
use rocksdb::{WriteOptions, DB};
use serde::{Deserialize, Serialize};

use super::{cf, crash_point, db_err, decode, encode, CF_SM};
use crate::transport::wire::{WireAllocError, WireResult};
use crate::types::{Request, Response, TypeConfig};

type C = TypeConfig;

/// Outcomes kept per client at most (a client with more requests in flight than this loses
/// idempotency for its oldest ones).
pub const MAX_OUTCOMES_PER_CLIENT: usize = 4096;
/// A client whose last request is older than this (1 hour) is forgotten.
pub const SESSION_TTL_MS: u64 = 3_600_000;
const SWEEP_EVERY_MS: u64 = 60_000;
const KEY_SNAPSHOT: &[u8] = b"snapshot";
const BLOB_VERSION: u16 = 1;

/// One client's remembered outcomes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Session {
    last_at_ms: u64,
    acked_below: u64,
    outcomes: BTreeMap<u64, WireResult>,
}

/// The table of client sessions.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Sessions {
    next_sweep_ms: u64,
    clients: BTreeMap<u64, Session>,
}

impl Sessions {
    /// Applies `req` to `state` unless it was applied before.
    fn apply(&mut self, state: &mut State, req: &Request) -> Response {
        let at = req.cmd.at_ms;
        if at >= self.next_sweep_ms {
            self.clients
                .retain(|_, s| s.last_at_ms.saturating_add(SESSION_TTL_MS) >= at);
            self.next_sweep_ms = at.saturating_add(SWEEP_EVERY_MS);
        }
        let s = self.clients.entry(req.id.client).or_default();
        s.last_at_ms = s.last_at_ms.max(at);
        if req.acked_below > s.acked_below {
            s.acked_below = req.acked_below;
            s.outcomes = s.outcomes.split_off(&req.acked_below);
        }
        if let Some(prev) = s.outcomes.get(&req.id.serial) {
            return Response::Done(prev.clone());
        }
        if req.id.serial < s.acked_below {
            return Response::Stale;
        }
        let r = state.apply(&req.cmd).map_err(WireAllocError);
        s.outcomes.insert(req.id.serial, r.clone());
        while s.outcomes.len() > MAX_OUTCOMES_PER_CLIENT {
            s.outcomes.pop_first();
        }
        Response::Done(r)
    }
}

/// The in-memory state machine, shared between openraft and the query path.
#[derive(Clone)]
pub struct SmData {
    /// The allocator.
    pub state: State,
    sessions: Sessions,
    /// Last log id applied.
    pub last_applied: Option<LogIdOf<C>>,
    /// Last membership applied.
    pub membership: StoredMembershipOf<C>,
}

impl SmData {
    /// No state, no sessions, nothing applied.
    fn empty() -> SmData {
        SmData {
            state: State::default(),
            sessions: Sessions::default(),
            last_applied: None,
            membership: StoredMembership::default(),
        }
    }

    /// The snapshot blob of this state machine (what [`restore`] reads back).
    fn encode_blob(&self) -> io::Result<Vec<u8>> {
        encode(&Blob {
            version: BLOB_VERSION,
            state: self.state.to_snapshot(),
            sessions: self.sessions.clone(),
        })
    }
}

/// What a snapshot carries (postcard).
#[derive(Serialize, Deserialize)]
struct Blob {
    version: u16,
    state: Vec<u8>,
    sessions: Sessions,
}

/// A snapshot as stored in the `sm` column family.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMetaOf<C>,
    data: Vec<u8>,
}

/// The state machine store: cheap to clone, all clones share the same state.
#[derive(Clone)]
pub struct StateMachineStore {
    data: Arc<RwLock<SmData>>,
    db: Arc<DB>,
    changes: tokio::sync::broadcast::Sender<Change>,
    /// Bytes of the latest stored snapshot (0: none), for the snapshot policy.
    snapshot_bytes: Arc<std::sync::atomic::AtomicU64>,
}

/// What an applied entry changed, for watchers (the web view's live updates). Only built
/// while someone watches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `allocated`, `released`, `pool`, `host`, `membership`, `snapshot` or `other`.
    pub kind: &'static str,
    /// The pool, as `SPACE/SUBNET[/RANGE]`.
    pub pool: Option<String>,
    /// The address.
    pub addr: Option<std::net::IpAddr>,
    /// The host.
    pub host: Option<String>,
    /// The log index of the entry.
    pub index: u64,
}

/// Changes a watcher may fall behind by before it is told to read everything again.
const CHANGES_BUFFERED: usize = 4096;

impl Change {
    /// A change of `kind` at `index` that names no pool, address or host (yet).
    fn bare(kind: &'static str, index: u64) -> Change {
        Change {
            kind,
            pool: None,
            addr: None,
            host: None,
            index,
        }
    }

    fn of(
        index: u64,
        payload: &openraft::type_config::alias::EntryPayloadOf<C>,
        resp: &Response,
    ) -> Change {
        use allocator_core::{Op, Outcome};
        let mut c = Change::bare("other", index);
        let req = match payload {
            EntryPayload::Normal(req) => req,
            EntryPayload::Membership(_) => {
                c.kind = "membership";
                return c;
            }
            EntryPayload::Blank => return c,
        };
        let ok = matches!(resp, Response::Done(Ok(_)));
        match (&req.cmd.op, resp) {
            (
                Op::Allocate { pool, owner, .. },
                Response::Done(Ok(Outcome::Allocated { addr, .. })),
            ) => {
                c.kind = "allocated";
                c.pool = Some(pool.to_string());
                c.addr = Some(addr.addr());
                c.host = Some(owner.host.clone());
            }
            (
                Op::Release {
                    pool, addr, host, ..
                }
                | Op::ReleaseIfUnchanged {
                    pool, addr, host, ..
                },
                _,
            ) if ok => {
                c.kind = "released";
                c.pool = Some(pool.to_string());
                c.addr = Some(addr.to_owned());
                c.host = Some(host.clone());
            }
            (Op::Reserve { pool, addr, holder }, _) if ok => {
                c.kind = "pool";
                c.pool = Some(pool.to_string());
                c.addr = Some(addr.to_owned());
                c.host = Some(holder.clone());
            }
            (Op::RequestPool { holder, .. }, Response::Done(Ok(Outcome::Pool { pool, .. }))) => {
                c.kind = "pool";
                c.pool = Some(pool.to_string());
                c.host = Some(holder.clone());
            }
            (Op::ReleasePool { pool, .. } | Op::DeletePool { pool, .. }, _) if ok => {
                c.kind = "pool";
                c.pool = Some(pool.to_string());
            }
            (Op::Heartbeat { host, .. } | Op::Report { host, .. } | Op::ForgetHost { host }, _)
                if ok =>
            {
                c.kind = "host";
                c.host = Some(host.clone());
            }
            (Op::Restore { .. } | Op::RestoreChunk { .. }, _) if ok => c.kind = "snapshot",
            _ => {}
        }
        c
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl StateMachineStore {
    /// Opens the state machine: the latest stored snapshot, or an empty state.
    pub fn open(db: Arc<DB>) -> io::Result<Self> {
        let mut data = SmData::empty();
        let mut bytes = 0;
        if let Some(snap) = load_snapshot(&db)? {
            restore(&mut data, &snap.meta, &snap.data)?;
            bytes = snap.data.len() as u64;
        }
        Ok(StateMachineStore {
            data: Arc::new(RwLock::new(data)),
            db,
            changes: tokio::sync::broadcast::channel(CHANGES_BUFFERED).0,
            snapshot_bytes: Arc::new(bytes.into()),
        })
    }

    /// Bytes of the latest snapshot stored (built or installed; 0: none yet).
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every change applied from now on. A receiver that falls more than 4,096 changes behind
    /// gets `Lagged` and should read the whole state again; so does one that sees a change of
    /// kind `snapshot` (a snapshot installed or a backup restored).
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Read access to the state (never held across an await).
    pub fn read(&self) -> RwLockReadGuard<'_, SmData> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, SmData> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    async fn persist(&self, snap: StoredSnapshot) -> io::Result<()> {
        let db = self.db.clone();
        let bytes = self.snapshot_bytes.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(cur) = load_snapshot(&db)? {
                if cur.meta.last_log_id > snap.meta.last_log_id {
                    return Ok(()); // a newer one was installed meanwhile
                }
            }
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            db.put_cf_opt(cf(&db, CF_SM)?, KEY_SNAPSHOT, encode(&snap)?, &wo)
                .map_err(db_err)?;
            bytes.store(snap.data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }
}

fn load_snapshot(db: &DB) -> io::Result<Option<StoredSnapshot>> {
    match db.get_cf(cf(db, CF_SM)?, KEY_SNAPSHOT).map_err(db_err)? {
        Some(b) => Ok(Some(decode(&b)?)),
        None => Ok(None),
    }
}

fn restore(data: &mut SmData, meta: &SnapshotMetaOf<C>, bytes: &[u8]) -> io::Result<()> {
    let blob: Blob = decode(bytes)?;
    if blob.version != BLOB_VERSION {
        return Err(invalid(format!(
            "snapshot blob version {} is not supported",
            blob.version
        )));
    }
    let state = State::from_snapshot(&blob.state).map_err(|e| invalid(e.to_string()))?;
    data.state = state;
    data.sessions = blob.sessions;
    data.last_applied = meta.last_log_id;
    data.membership = meta.last_membership.clone();
    Ok(())
}

/// The fuzz target `snapshot` (see `crate::fuzzing::snapshot`): `bytes` restored as a
/// snapshot blob into an empty state machine; one that restores must hold every allocator
/// invariant, and its own encoding must restore to the same bytes. Returns whether it restored.
pub(crate) fn fuzz_snapshot(bytes: &[u8]) -> bool {
    let meta = SnapshotMetaOf::<C>::default();
    let mut data = SmData::empty();
    if restore(&mut data, &meta, bytes).is_err() {
        return false;
    }
    if let Err(e) = data.state.check_invariants() {
        panic!("a snapshot restored to a broken state: {e}");
    }
    let once = data.encode_blob().expect("a restored state encodes");
    let mut again = SmData::empty();
    restore(&mut again, &meta, &once).expect("a state machine's own snapshot restores");
    assert_eq!(
        again.encode_blob().expect("a restored state encodes"),
        once,
        "snapshot encoding is not stable"
    );
    true
}

/// Restores a snapshot blob into an empty state machine and encodes it again (the frozen
/// bytes test: an older release's blob must still load into the same state).
#[cfg(test)]
pub(crate) fn blob_roundtrip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let meta = SnapshotMetaOf::<C>::default();
    let mut data = SmData::empty();
    restore(&mut data, &meta, bytes).map_err(|e| format!("do not load: {e}"))?;
    data.encode_blob().map_err(|e| format!("re-encode: {e}"))
}

/// A snapshot blob of a small cluster's state (a pool, two allocations, a client's
/// session): the `snapshot` fuzz target's starting input.
pub(crate) fn fuzz_seed() -> Vec<u8> {
    use allocator_core::{Command, Op, Owner, PoolSpec};
    let mut d = SmData::empty();
    let spec = {
        let mut spec = PoolSpec::default();
        spec.space = "global".into();
        spec.subnet = Some("10.0.0.0/24".parse().expect("a constant subnet"));
        spec
    };
    let cmds = [
        Op::RequestPool {
            spec,
            holder: "h1".into(),
        },
        Op::Allocate {
            pool: "global/10.0.0.0/24".parse().expect("a constant pool id"),
            addr: None,
            owner: Owner::new("h1", "web"),
            order: Default::default(),
        },
    ];
    for (serial, op) in cmds.into_iter().enumerate() {
        let req = Request {
            id: crate::api::RequestId {
                client: 7,
                serial: serial as u64,
            },
            acked_below: 0,
            cmd: Command { at_ms: 1_000, op },
        };
        d.sessions.apply(&mut d.state, &req);
    }
    d.encode_blob().expect("a small state encodes")
}

/// Builds snapshots from the shared state.
pub struct SnapshotBuilder {
    sm: StateMachineStore,
    /// A copy of the state as applied when openraft asked for the builder (between two
    /// applies): the build encodes it without holding the live state, so applying goes on
    /// meanwhile. Copying a million allocations takes ~28 ms where encoding them takes
    /// ~125 ms (2 vCPU EPYC); the copy costs memory for as long as the build runs.
    view: Arc<SmData>,
}

impl RaftSnapshotBuilder<C> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Vec<u8>>, io::Error> {
        // Encoding a big state takes a while: off the async workers.
        let view = self.view.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || -> io::Result<_> {
            let meta = SnapshotMeta {
                last_log_id: view.last_applied,
                last_membership: view.membership.clone(),
            };
            Ok((meta, view.encode_blob()?))
        })
        .await
        .map_err(io::Error::other)??;
        crash_point!("snapshot::build");
        self.sm
            .persist(StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            })
            .await?;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "snapshot built");
        Ok(openraft::Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<C> for StateMachineStore {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let d = self.read();
        Ok((d.last_applied, d.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let resp = {
                let mut guard = self.write();
                let d = &mut *guard;
                let resp = match &entry.payload {
                    EntryPayload::Blank => Response::None,
                    EntryPayload::Normal(req) => d.sessions.apply(&mut d.state, req),
                    EntryPayload::Membership(m) => {
                        d.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Response::None
                    }
                };
                d.last_applied = Some(entry.log_id);
                resp
            };
            if self.changes.receiver_count() > 0 {
                let _ = self
                    .changes
                    .send(Change::of(entry.log_id.index, &entry.payload, &resp));
            }
            crash_point!("sm::apply");
            if let Some(r) = responder {
                r.send(resp);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // openraft asks between two applies: the copy is the state as of the last applied.
        SnapshotBuilder {
            sm: self.clone(),
            view: Arc::new(self.read().clone()),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        {
            let mut d = self.write();
            restore(&mut d, meta, &snapshot)?;
        }
        if self.changes.receiver_count() > 0 {
            let index = meta.last_log_id.map_or(0, |l| l.index);
            let _ = self.changes.send(Change::bare("snapshot", index));
        }
        crash_point!("snapshot::install");
        self.persist(StoredSnapshot {
            meta: meta.clone(),
            data: snapshot,
        })
        .await?;
        tracing::info!(last_log_id = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<C, Vec<u8>>>, io::Error> {
        let db = self.db.clone();
        let s = tokio::task::spawn_blocking(move || load_snapshot(&db))
            .await
            .map_err(io::Error::other)??;
        Ok(s.map(|s| openraft::Snapshot {
            meta: s.meta,
            snapshot: s.data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RequestId;
    use allocator_core::{Command, Op, PoolSpec};

    fn req(client: u64, serial: u64, acked_below: u64, at_ms: u64) -> Request {
        let spec = {
            let mut spec = PoolSpec::default();
            spec.space = "g".into();
            spec.subnet = Some("10.0.0.0/24".parse().unwrap());
            spec
        };
        Request {
            id: RequestId { client, serial },
            acked_below,
            cmd: Command {
                at_ms,
                op: Op::RequestPool {
                    spec,
                    holder: format!("h{serial}"),
                },
            },
        }
    }

    #[test]
    fn a_retried_request_is_answered_from_the_table_and_not_applied_twice() {
        let mut st = State::default();
        let mut s = Sessions::default();
        let a = s.apply(&mut st, &req(7, 1, 1, 0));
        let b = s.apply(&mut st, &req(7, 1, 1, 5));
        assert_eq!(a, b);
        let pool = &st.pools()[0];
        assert_eq!(pool.holders.len(), 1);
    }

    #[test]
    fn acknowledged_outcomes_are_forgotten_and_late_duplicates_are_stale() {
        let mut st = State::default();
        let mut s = Sessions::default();
        s.apply(&mut st, &req(7, 1, 1, 0));
        s.apply(&mut st, &req(7, 2, 2, 0));
        assert_eq!(s.clients[&7].outcomes.len(), 1);
        assert_eq!(s.apply(&mut st, &req(7, 1, 1, 0)), Response::Stale);
    }

    #[test]
    fn idle_clients_expire() {
        let mut st = State::default();
        let mut s = Sessions::default();
        s.apply(&mut st, &req(1, 1, 1, 0));
        s.apply(&mut st, &req(2, 1, 1, SESSION_TTL_MS + SWEEP_EVERY_MS + 1));
        assert!(!s.clients.contains_key(&1));
    }
}
