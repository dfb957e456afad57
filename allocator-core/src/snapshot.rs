//! The whole state as bytes: what a Raft snapshot carries and what a backup holds.
//!
//! Layout: `RIPAMSNP` (8 bytes), format version (u16 LE), CRC-32 of the body (u32 LE), then
//! the body in postcard. Damaged, truncated or foreign bytes give a [`SnapshotError`] that says
//! which, never a panic; a decoded state is validated and its invariants checked before use.
//!
//! Owns the snapshot format and its versions (every older version still loads). Never changes
//! a layout once written: a new field goes into a new version.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cluster::{canonical_serial, MAX_ISSUED_CERTS};
use crate::conflict::{ConflictRecord, HostLan, Mac};
use crate::id::AddrRange;
use crate::id::PoolId;
use crate::limits::{MAX_BITS, MAX_HOSTS, MAX_NAME_LEN, MAX_RESTORE_BYTES, MAX_SEQ};
use crate::quota::Quotas;
use crate::report::StoredReport;
use crate::state::{Config, IssuedCert, Pool, Seen, StagedRestore, State};
use crate::subnet::Subnet;

const MAGIC: &[u8; 8] = b"RIPAMSNP";
/// Version 2 added hosts' reports, version 3 revoked certificate names and join tokens,
/// version 4 revoked serials and a restore under way, version 5 the cluster version and join
/// tokens' uses (and, in 0.2, quotas, join tokens' names and the certificates given to
/// joins); earlier versions (without them) are still read. Version 5 is written only
/// once the cluster version is past 1 (raftipam 0.1 reads version 4 and no later). Version 6
/// adds the conflicts on the LAN and the pools' probations, and is written only while the
/// state holds some (their operations need cluster version 2). Version 7 adds the
/// containers' MACs and the hosts' LAN-check reports to version 6's `lan`, and is written
/// only while the state holds some of those (cluster version 2 too).
const VERSION: u16 = 7;
const HEADER: usize = 8 + 2 + 4;

/// Why a snapshot could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Not a raftipam snapshot at all.
    #[error("not a raftipam snapshot (bad magic bytes); is this the right file?")]
    Foreign,
    /// Written by a newer raftipam.
    #[error("snapshot format version {0} is not supported by this build (it reads version {VERSION}); upgrade raftipam")]
    Version(u16),
    /// The checksum does not match: the bytes were damaged.
    #[error("snapshot is damaged: checksum mismatch (expected {expected:08x}, found {found:08x})")]
    Checksum {
        /// Stored checksum.
        expected: u32,
        /// Checksum of the bytes found.
        found: u32,
    },
    /// The body does not decode or describes an impossible state.
    #[error("snapshot is damaged: {0}")]
    Invalid(String),
}

#[derive(Serialize, Deserialize)]
struct SnapAlloc<'a> {
    off: u128,
    seq: u64,
    at_s: u32,
    host: u16,
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Serialize, Deserialize)]
struct SnapSubnet<'a> {
    space: String,
    net: IpNet,
    reservations: Vec<(u128, Vec<(String, u32)>)>,
    cooling: Vec<(u128, u64)>,
    #[serde(borrow)]
    allocs: Vec<SnapAlloc<'a>>,
}

#[derive(Serialize, Deserialize)]
struct SnapPool {
    id: PoolId,
    serial: bool,
    cooldown_ms: u64,
    holders: Vec<(String, u32)>,
    cursor: Option<u128>,
    reserve: Vec<AddrRange>,
}

/// The body. `R` is the reports: `()` in version 1 (postcard writes nothing for it), a list
/// from version 2; `V` the revocations and join tokens: `()` before version 3, lists from
/// version 3; `X` the revoked serials and a restore under way: `()` before version 4; `Y` the
/// cluster version and the join tokens' uses left: `()` before version 5; `Z` the conflicts
/// on the LAN and the probations: `()` before version 6.
#[derive(Serialize, Deserialize)]
struct SnapState<'a, R, V, X, Y, Z = ()> {
    config: Config,
    seq: u64,
    hosts: Vec<String>,
    #[serde(borrow)]
    subnets: Vec<SnapSubnet<'a>>,
    pools: Vec<SnapPool>,
    /// Heartbeats: host, version, last seen (ms).
    seen: Vec<(String, String, u64)>,
    reports: R,
    /// Revoked certificate names and the time before which they are revoked, and join
    /// tokens (hash, expiry).
    revoked: V,
    /// Revoked serials (serial, when), and the restore under way (id, total, bytes so far).
    extra: X,
    /// The cluster version and the join tokens' uses left (token hash, uses).
    cluster: Y,
    /// The conflict records and the pools' probations (pool, ms).
    lan: Z,
}

/// Version 6's `lan`.
type LanPart = (Vec<ConflictRecord>, Vec<(PoolId, u64)>);

/// The MACs recorded in one subnet: its space, the subnet, then (offset, sequence number,
/// MAC) per allocation.
type SubnetMacs<'a> = (&'a str, IpNet, Vec<(u128, u64, Mac)>);

/// Version 7's `lan`: version 6's, the containers' MACs (space, subnet, then offset, sequence
/// number, MAC) and the hosts' LAN-check reports.
type LanPart7 = (
    Vec<ConflictRecord>,
    Vec<(PoolId, u64)>,
    Vec<(String, IpNet, Vec<(u128, u64, Mac)>)>,
    Vec<HostLan>,
);

/// Version 5's `cluster`: the cluster version, the join tokens' uses left (hash, uses), the
/// cluster's quotas, hosts' own quotas, the names join tokens are bound to (hash, name) and
/// the certificates given to joins.
type ClusterPart = (
    u32,
    Vec<(String, u32)>,
    Option<Quotas>,
    Vec<(String, Quotas)>,
    Vec<(String, String)>,
    Vec<IssuedCert>,
);

/// Version 4's `extra`.
type Extra = (Vec<(String, u64)>, Option<(u64, u64, Vec<u8>)>);

/// The format version in a snapshot's header, if it has one of ours (a backup's format, before
/// it is sent: a cluster still at cluster version 1 reads format 4 and no later).
pub fn format_of(bytes: &[u8]) -> Option<u16> {
    (bytes.len() >= HEADER && &bytes[..8] == MAGIC)
        .then(|| u16::from_le_bytes([bytes[8], bytes[9]]))
}

fn bad(msg: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid(msg.into())
}

impl State {
    /// Encodes the whole state.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let subnets = self
            .subnets
            .iter()
            .map(|((space, net), sn)| SnapSubnet {
                space: space.clone(),
                net: *net,
                reservations: sn
                    .reservations
                    .iter()
                    .map(|(o, h)| (*o, h.iter().map(|(k, v)| (k.clone(), *v)).collect()))
                    .collect(),
                cooling: sn.cooling.iter().map(|(o, u)| (*o, *u)).collect(),
                allocs: sn
                    .records
                    .iter_sorted()
                    .into_iter()
                    .map(|(off, r)| SnapAlloc {
                        off,
                        seq: r.seq,
                        at_s: r.at_s,
                        host: r.host,
                        name: String::from_utf8_lossy(r.name),
                    })
                    .collect(),
            })
            .collect();
        let pools = self
            .pools
            .iter()
            .map(|(id, p)| SnapPool {
                id: id.clone(),
                serial: p.serial,
                cooldown_ms: p.cooldown_ms,
                holders: p.holders.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                cursor: p.cursor,
                reserve: p.reserve.clone(),
            })
            .collect();
        // Written in the cluster version's format: a cluster still at version 1 has members
        // of raftipam 0.1, which read snapshot format 4 and no later.
        // Conflicts on the LAN (cluster version 2 on) need format 6; without any, the format
        // stays the one a node of the release before reads.
        let macs: Vec<SubnetMacs<'_>> = self
            .subnets
            .iter()
            .filter(|(_, sn)| !sn.macs.is_empty())
            .map(|((space, net), sn)| {
                (
                    space.as_str(),
                    *net,
                    sn.macs.iter().map(|(o, (q, m))| (*o, *q, *m)).collect(),
                )
            })
            .collect();
        let seven = !macs.is_empty() || !self.lan.hosts.is_empty();
        let lan = (seven || !self.lan.is_empty()).then(|| {
            (
                self.lan.iter().collect::<Vec<&ConflictRecord>>(),
                self.lan
                    .probation
                    .iter()
                    .map(|(p, ms)| (p, *ms))
                    .collect::<Vec<(&PoolId, u64)>>(),
            )
        });
        let cluster =
            (lan.is_some() || self.cluster_version > 1 || !self.credentials.token_uses.is_empty())
                .then(|| {
                    (
                        self.cluster_version,
                        self.credentials
                            .token_uses
                            .iter()
                            .map(|(h, u)| (h.as_str(), *u))
                            .collect::<Vec<(&str, u32)>>(),
                        self.quotas.cluster,
                        self.quotas
                            .hosts
                            .iter()
                            .map(|(h, q)| (h.as_str(), *q))
                            .collect::<Vec<(&str, Quotas)>>(),
                        self.credentials
                            .token_names
                            .iter()
                            .map(|(h, n)| (h.as_str(), n.as_str()))
                            .collect::<Vec<(&str, &str)>>(),
                        self.credentials
                            .issued
                            .values()
                            .collect::<Vec<&IssuedCert>>(),
                    )
                });
        let snap = SnapState {
            config: self.config.clone(),
            seq: self.seq,
            hosts: self.hosts.clone(),
            subnets,
            pools,
            seen: self
                .seen
                .iter()
                .map(|(h, s)| (h.clone(), s.version.clone(), s.last_seen_ms))
                .collect(),
            reports: self.reports.values().collect::<Vec<&StoredReport>>(),
            revoked: (
                self.credentials
                    .revoked
                    .iter()
                    .map(|(n, t)| (n.as_str(), *t))
                    .collect::<Vec<(&str, u64)>>(),
                self.credentials
                    .join_tokens
                    .iter()
                    .map(|(h, t)| (h.as_str(), *t))
                    .collect::<Vec<(&str, u64)>>(),
            ),
            extra: (
                self.credentials
                    .revoked_serials
                    .iter()
                    .map(|(n, t)| (n.as_str(), *t))
                    .collect::<Vec<(&str, u64)>>(),
                self.staged
                    .as_ref()
                    .map(|s| (s.restore, s.total, s.bytes.as_slice())),
            ),
            cluster: (),
            lan: (),
        };
        // Serialising plain owned data into a Vec cannot fail.
        let (version, body) = match (cluster, lan) {
            (Some(cluster), Some((records, probations))) if seven => {
                let snap = SnapState {
                    config: snap.config,
                    seq: snap.seq,
                    hosts: snap.hosts,
                    subnets: snap.subnets,
                    pools: snap.pools,
                    seen: snap.seen,
                    reports: snap.reports,
                    revoked: snap.revoked,
                    extra: snap.extra,
                    cluster,
                    lan: (
                        records,
                        probations,
                        macs,
                        self.lan.hosts.values().collect::<Vec<&HostLan>>(),
                    ),
                };
                (7u16, postcard::to_allocvec(&snap).unwrap_or_default())
            }
            (Some(cluster), Some(lan)) => {
                let snap = SnapState {
                    config: snap.config,
                    seq: snap.seq,
                    hosts: snap.hosts,
                    subnets: snap.subnets,
                    pools: snap.pools,
                    seen: snap.seen,
                    reports: snap.reports,
                    revoked: snap.revoked,
                    extra: snap.extra,
                    cluster,
                    lan,
                };
                (6u16, postcard::to_allocvec(&snap).unwrap_or_default())
            }
            (Some(cluster), None) => {
                let snap = SnapState {
                    config: snap.config,
                    seq: snap.seq,
                    hosts: snap.hosts,
                    subnets: snap.subnets,
                    pools: snap.pools,
                    seen: snap.seen,
                    reports: snap.reports,
                    revoked: snap.revoked,
                    extra: snap.extra,
                    cluster,
                    lan: (),
                };
                (5u16, postcard::to_allocvec(&snap).unwrap_or_default())
            }
            (None, _) => (4u16, postcard::to_allocvec(&snap).unwrap_or_default()),
        };
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a state written by [`State::to_snapshot`], validating everything.
    pub fn from_snapshot(bytes: &[u8]) -> Result<State, SnapshotError> {
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(SnapshotError::Foreign);
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if !(1..=VERSION).contains(&version) {
            return Err(SnapshotError::Version(version));
        }
        let expected = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
        let body = &bytes[HEADER..];
        let found = crc32fast::hash(body);
        if found != expected {
            return Err(SnapshotError::Checksum { expected, found });
        }
        let cannot = |e: postcard::Error| bad(format!("cannot decode: {e}"));
        type Lists = (Vec<(String, u64)>, Vec<(String, u64)>);
        let mut lan: Option<LanPart7> = None;
        let (state, tokens, extra, cluster) = match version {
            1 => {
                let snap: SnapState<'_, (), (), (), ()> =
                    postcard::from_bytes(body).map_err(cannot)?;
                (
                    rebuild(snap, Vec::new(), Vec::new())?,
                    Vec::new(),
                    None,
                    None,
                )
            }
            2 => {
                let mut snap: SnapState<'_, Vec<StoredReport>, (), (), ()> =
                    postcard::from_bytes(body).map_err(cannot)?;
                let reports = std::mem::take(&mut snap.reports);
                (rebuild(snap, reports, Vec::new())?, Vec::new(), None, None)
            }
            3 => {
                let mut snap: SnapState<'_, Vec<StoredReport>, Lists, (), ()> =
                    postcard::from_bytes(body).map_err(cannot)?;
                let reports = std::mem::take(&mut snap.reports);
                let (revoked, tokens) = std::mem::take(&mut snap.revoked);
                (rebuild(snap, reports, revoked)?, tokens, None, None)
            }
            4 => {
                let mut snap: SnapState<'_, Vec<StoredReport>, Lists, Extra, ()> =
                    postcard::from_bytes(body).map_err(cannot)?;
                let reports = std::mem::take(&mut snap.reports);
                let (revoked, tokens) = std::mem::take(&mut snap.revoked);
                let extra = std::mem::take(&mut snap.extra);
                (rebuild(snap, reports, revoked)?, tokens, Some(extra), None)
            }
            5 => {
                let mut snap: SnapState<'_, Vec<StoredReport>, Lists, Extra, ClusterPart> =
                    postcard::from_bytes(body).map_err(cannot)?;
                let reports = std::mem::take(&mut snap.reports);
                let (revoked, tokens) = std::mem::take(&mut snap.revoked);
                let extra = std::mem::take(&mut snap.extra);
                let cluster = std::mem::take(&mut snap.cluster);
                (
                    rebuild(snap, reports, revoked)?,
                    tokens,
                    Some(extra),
                    Some(cluster),
                )
            }
            6 => {
                let mut snap: SnapState<'_, Vec<StoredReport>, Lists, Extra, ClusterPart, LanPart> =
                    postcard::from_bytes(body).map_err(cannot)?;
                let (records, probations) = std::mem::take(&mut snap.lan);
                lan = Some((records, probations, Vec::new(), Vec::new()));
                let reports = std::mem::take(&mut snap.reports);
                let (revoked, tokens) = std::mem::take(&mut snap.revoked);
                let extra = std::mem::take(&mut snap.extra);
                let cluster = std::mem::take(&mut snap.cluster);
                (
                    rebuild(snap, reports, revoked)?,
                    tokens,
                    Some(extra),
                    Some(cluster),
                )
            }
            _ => {
                let mut snap: SnapState<
                    '_,
                    Vec<StoredReport>,
                    Lists,
                    Extra,
                    ClusterPart,
                    LanPart7,
                > = postcard::from_bytes(body).map_err(cannot)?;
                lan = Some(std::mem::take(&mut snap.lan));
                let reports = std::mem::take(&mut snap.reports);
                let (revoked, tokens) = std::mem::take(&mut snap.revoked);
                let extra = std::mem::take(&mut snap.extra);
                let cluster = std::mem::take(&mut snap.cluster);
                (
                    rebuild(snap, reports, revoked)?,
                    tokens,
                    Some(extra),
                    Some(cluster),
                )
            }
        };
        let mut state = state;
        for (hash, until) in tokens {
            if state.credentials.join_tokens.contains_key(&hash)
                || state.credentials.add_join_token(0, &hash, until).is_err()
            {
                return Err(bad(format!("join token {hash:?} is not valid")));
            }
        }
        if let Some((serials, staged)) = extra {
            for (serial, at) in serials {
                if state.is_serial_revoked(&serial)
                    || state.credentials.revoke_serial(at, &serial).is_err()
                {
                    return Err(bad(format!("revoked serial {serial:?} is not valid")));
                }
            }
            if let Some((restore, total, bytes)) = staged {
                if bytes.len() as u64 > total || total > MAX_RESTORE_BYTES {
                    return Err(bad(format!(
                        "a restore under way holds {} bytes of {total}",
                        bytes.len()
                    )));
                }
                state.staged = Some(StagedRestore {
                    restore,
                    total,
                    bytes,
                });
            }
        }
        if let Some((version, uses, quotas, host_quotas, names, issued)) = cluster {
            if !(1..=crate::cluster::CLUSTER_VERSION).contains(&version) {
                return Err(bad(format!(
                    "cluster version {version} is not one this build knows (1 to {})",
                    crate::cluster::CLUSTER_VERSION
                )));
            }
            state.cluster_version = version;
            for (hash, n) in uses {
                if n == 0 || !state.credentials.join_tokens.contains_key(&hash) {
                    return Err(bad(format!("join token {hash:?}'s uses are not valid")));
                }
                state.credentials.token_uses.insert(hash, n);
            }
            for q in quotas.iter().chain(host_quotas.iter().map(|(_, q)| q)) {
                q.check()
                    .map_err(|e| bad(format!("a quota is not valid: {e}")))?;
            }
            if host_quotas.len() > MAX_HOSTS {
                return Err(bad("more hosts have their own quotas than a state holds"));
            }
            state.quotas.cluster = quotas;
            for (host, q) in host_quotas {
                if host.is_empty() || host.len() > MAX_NAME_LEN {
                    return Err(bad(format!("host {host:?} of a quota is not valid")));
                }
                state.quotas.hosts.insert(host, q);
            }
            for (hash, name) in names {
                if !state.credentials.join_tokens.contains_key(&hash)
                    || name.is_empty()
                    || name.len() > MAX_NAME_LEN
                {
                    return Err(bad(format!("join token {hash:?}'s name is not valid")));
                }
                state.credentials.token_names.insert(hash, name);
            }
            if issued.len() > MAX_ISSUED_CERTS {
                return Err(bad(
                    "more join certificates are recorded than a state keeps",
                ));
            }
            for cert in issued {
                if canonical_serial(&cert.serial).as_deref() != Some(cert.serial.as_str())
                    || cert.name.is_empty()
                    || cert.name.len() > MAX_NAME_LEN
                    || cert.role.len() > MAX_NAME_LEN
                    || cert.token.len() > 64
                    || state.credentials.issued.contains_key(&cert.serial)
                {
                    return Err(bad(format!(
                        "the join certificate record {:?} is not valid",
                        cert.serial
                    )));
                }
                state.credentials.issued.insert(cert.serial.clone(), cert);
            }
        }
        if let Some((records, probations, macs, hosts)) = lan {
            if records.len() > crate::conflict::MAX_CONFLICTS {
                return Err(bad("more conflict records than a state keeps"));
            }
            for rec in records {
                let space = rec.pool.space.clone();
                if state.lan.get(&space, rec.addr).is_some() {
                    return Err(bad(format!("the conflict on {} appears twice", rec.addr)));
                }
                state.lan.insert(&space, rec);
            }
            for (pool, ms) in probations {
                if state.lan.probation.insert(pool.clone(), ms).is_some() {
                    return Err(bad(format!("the probation of pool {pool} appears twice")));
                }
            }
            for (space, net, entries) in macs {
                let sn = state
                    .subnets
                    .get_mut(&(space.clone(), net))
                    .ok_or_else(|| bad(format!("MACs recorded for {net}, which is no subnet")))?;
                for (off, seq, mac) in entries {
                    if sn.macs.insert(off, (seq, mac)).is_some() {
                        return Err(bad(format!("a MAC of {net} appears twice")));
                    }
                }
            }
            for h in hosts {
                if state.lan.hosts.insert(h.host.clone(), h).is_some() {
                    return Err(bad("a host's LAN checks appear twice"));
                }
            }
            state.check_invariants().map_err(bad)?;
        }
        Ok(state)
    }
}

/// Builds the state from a decoded body (whatever its version's `reports` and `revoked`
/// fields), the reports and the revocations.
fn rebuild<R, V, X, Y, Z>(
    snap: SnapState<'_, R, V, X, Y, Z>,
    reports: Vec<StoredReport>,
    revoked: Vec<(String, u64)>,
) -> Result<State, SnapshotError> {
    let mut state = State::new(snap.config);
    state.seq = snap.seq;
    if snap.hosts.len() > MAX_HOSTS {
        return Err(bad("too many hosts"));
    }
    for (i, h) in snap.hosts.iter().enumerate() {
        if state.host_ids.insert(h.clone(), i as u16).is_some() {
            return Err(bad(format!("host {h:?} appears twice")));
        }
    }
    state.hosts = snap.hosts;
    for s in snap.subnets {
        let net = s.net.trunc();
        if net != s.net {
            return Err(bad(format!("subnet {} is not normalised", s.net)));
        }
        if u32::from(net.max_prefix_len() - net.prefix_len()) > MAX_BITS {
            return Err(bad(format!("subnet {net} is too large")));
        }
        let mut sn = Subnet::new(net);
        let size = sn.size();
        for (off, holders) in s.reservations {
            if off >= size
                || sn.fixed_reason(off).is_some()
                || holders.is_empty()
                || holders.iter().any(|(_, c)| *c == 0)
            {
                return Err(bad(format!("bad reservation at offset {off} of {net}")));
            }
            sn.bitmap.set(off);
            if sn
                .reservations
                .insert(off, holders.into_iter().collect::<BTreeMap<_, _>>())
                .is_some()
            {
                return Err(bad(format!(
                    "reservation at offset {off} of {net} appears twice"
                )));
            }
        }
        for (off, until) in s.cooling {
            if off >= size || !sn.bitmap.set(off) {
                return Err(bad(format!("bad cooling entry at offset {off} of {net}")));
            }
            sn.start_cooling(off, until);
        }
        for a in s.allocs {
            if a.off >= size
                || usize::from(a.host) >= state.hosts.len()
                || a.name.len() > MAX_NAME_LEN
                || a.seq > state.seq
                || a.seq > MAX_SEQ
            {
                return Err(bad(format!("bad allocation at offset {} of {net}", a.off)));
            }
            if !sn.bitmap.set(a.off) {
                return Err(bad(format!("offset {} of {net} is used twice", a.off)));
            }
            if !a.name.is_empty()
                && sn
                    .records
                    .find_owner(&sn.records.owner_key(a.host, a.name.as_bytes()))
                    .is_some()
            {
                return Err(bad(format!(
                    "owner of offset {} of {net} holds two addresses",
                    a.off
                )));
            }
            if !sn.records.has_room() {
                return Err(bad(format!("{net} holds too many allocations")));
            }
            sn.records.insert(
                a.off,
                a.seq,
                a.at_s,
                &sn.records.owner_key(a.host, a.name.as_bytes()),
            );
        }
        if !state.subnets.insert_new((s.space.clone(), net), sn) {
            return Err(bad(format!(
                "subnet {net} of space {} appears twice",
                s.space
            )));
        }
    }
    let mut counts: HashMap<(String, IpNet), u32> = HashMap::new();
    for p in snap.pools {
        let key = (p.id.space.clone(), p.id.subnet);
        let sn = state
            .subnets
            .get(&key)
            .ok_or_else(|| bad(format!("pool {} has no subnet", p.id)))?;
        let (lo, hi) = match p.id.range {
            Some(r) => match (sn.offset(r.network()), sn.offset(r.broadcast())) {
                (Some(lo), Some(hi)) => (lo, hi),
                _ => return Err(bad(format!("pool {} has a range outside its subnet", p.id))),
            },
            None => (0, sn.size() - 1),
        };
        *counts.entry(key.clone()).or_default() += 1;
        let pool = Pool {
            sid: state.subnets.id_of(&key).unwrap_or(usize::MAX),
            key,
            serial: p.serial,
            cooldown_ms: p.cooldown_ms,
            holders: p.holders.into_iter().collect(),
            cursor: p.cursor,
            reserve: p.reserve,
            lo,
            hi,
        };
        if !state.pools.insert_new(p.id.clone(), pool) {
            return Err(bad(format!("pool {} appears twice", p.id)));
        }
    }
    for (host, version, last_seen_ms) in snap.seen {
        let seen = Seen {
            version,
            last_seen_ms,
        };
        if state.seen.insert(host.clone(), seen).is_some() {
            return Err(bad(format!("heartbeat of host {host:?} appears twice")));
        }
    }
    for r in reports {
        r.validate()
            .map_err(|e| bad(format!("report of host {:?}: {e}", r.host)))?;
        let host = r.host.clone();
        if state.reports.insert(host.clone(), r).is_some() {
            return Err(bad(format!("report of host {host:?} appears twice")));
        }
    }
    for (name, before) in revoked {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(bad(format!(
                "revoked certificate name {name:?} is not a name"
            )));
        }
        if state
            .credentials
            .revoked
            .insert(name.clone(), before)
            .is_some()
        {
            return Err(bad(format!(
                "revoked certificate name {name:?} appears twice"
            )));
        }
    }
    for (key, sn) in state.subnets.iter_mut() {
        sn.pools = counts.get(key).copied().unwrap_or(0);
    }
    state.recount_usage();
    state.check_invariants().map_err(bad)?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AllocError, Command, Op, Order, Outcome, Owner, PoolSpec};
    use proptest::prelude::*;

    fn sample() -> State {
        let mut s = State::default();
        let spec = PoolSpec {
            space: "g".into(),
            subnet: Some("10.0.0.0/24".parse().unwrap()),
            cooldown_ms: 1000,
            ..Default::default()
        };
        let op = Op::RequestPool {
            spec,
            holder: "a".into(),
        };
        s.apply(&Command { at_ms: 0, op }).unwrap();
        let pool: PoolId = "g/10.0.0.0/24".parse().unwrap();
        for i in 0..10 {
            let op = Op::Allocate {
                pool: pool.clone(),
                addr: None,
                owner: Owner::new("a", format!("e{i}")),
                order: Order::Lowest,
            };
            s.apply(&Command { at_ms: 1, op }).unwrap();
        }
        let op = Op::Release {
            pool: pool.clone(),
            addr: "10.0.0.3".parse().unwrap(),
            host: "a".into(),
            force: false,
        };
        s.apply(&Command { at_ms: 2, op }).unwrap();
        let op = Op::Reserve {
            pool,
            addr: "10.0.0.254".parse().unwrap(),
            holder: "a".into(),
        };
        s.apply(&Command { at_ms: 2, op }).unwrap();
        s
    }

    #[test]
    fn snapshot_round_trips_byte_for_byte() {
        let s = sample();
        let bytes = s.to_snapshot();
        let t = State::from_snapshot(&bytes).unwrap();
        assert_eq!(t.to_snapshot(), bytes);
        assert_eq!(t.pools(), s.pools());
    }

    #[test]
    fn damaged_snapshots_are_refused_with_the_reason() {
        let bytes = sample().to_snapshot();
        assert_eq!(
            State::from_snapshot(b"hello").unwrap_err(),
            SnapshotError::Foreign
        );
        let mut v = bytes.clone();
        v[8] = 9;
        assert!(matches!(
            State::from_snapshot(&v),
            Err(SnapshotError::Version(9))
        ));
        let mut v = bytes.clone();
        let last = v.len() - 1;
        v[last] ^= 0xff;
        assert!(matches!(
            State::from_snapshot(&v),
            Err(SnapshotError::Checksum { .. })
        ));
        let v = &bytes[..bytes.len() - 3];
        assert!(State::from_snapshot(v).is_err());
    }

    /// Re-stamps a body with a valid header, so the decoder's validation (not the CRC) is tested.
    fn with_header(body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoder(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = State::from_snapshot(&body);
            let _ = State::from_snapshot(&with_header(&body));
        }

        #[test]
        fn mutated_valid_bodies_never_panic_and_decode_only_to_valid_states(pos in any::<usize>(), val in any::<u8>()) {
            let bytes = sample().to_snapshot();
            let mut body = bytes[HEADER..].to_vec();
            let i = pos % body.len();
            body[i] = val;
            if let Ok(s) = State::from_snapshot(&with_header(&body)) {
                prop_assert!(s.check_invariants().is_ok());
            }
        }
    }

    #[test]
    fn revocations_survive_a_snapshot() {
        let mut st = sample();
        let at = |ms| Command {
            at_ms: ms,
            op: Op::Revoke { name: "h9".into() },
        };
        st.apply(&at(5_000)).expect("revoke");
        st.apply(&at(4_000))
            .expect("an earlier revocation keeps the later time");
        assert!(st.is_revoked("h9", 4_999));
        assert!(
            !st.is_revoked("h9", 5_000),
            "issued at or after the revocation"
        );
        assert!(!st.is_revoked("h8", 0));
        let back = State::from_snapshot(&st.to_snapshot()).expect("loads");
        assert_eq!(back.revocations(), vec![("h9".to_string(), 5_000)]);
        assert_eq!(back.to_snapshot(), st.to_snapshot());
    }

    #[test]
    fn join_tokens_expire_are_revoked_and_survive_a_snapshot() {
        let mut st = sample();
        let h = |c: char| c.to_string().repeat(64);
        let cmd = |at_ms, op| Command { at_ms, op };
        let add = |hash: String, expires_ms| Op::AddJoinToken { hash, expires_ms };
        st.apply(&cmd(1_000, add(h('a'), 5_000))).expect("add");
        st.apply(&cmd(1_000, add(h('b'), 2_000))).expect("add");
        assert!(st.join_token_valid(&h('a'), 4_999));
        assert!(!st.join_token_valid(&h('a'), 5_000), "expired");
        assert!(!st.join_token_valid(&h('c'), 0), "unknown");
        assert!(
            st.apply(&cmd(1_000, add("A".repeat(64), 9_000))).is_err(),
            "uppercase hex"
        );
        assert!(
            st.apply(&cmd(1_000, add("ab".into(), 9_000))).is_err(),
            "short"
        );
        let back = State::from_snapshot(&st.to_snapshot()).expect("loads");
        assert_eq!(back.join_tokens(), st.join_tokens());
        // Adding drops the expired ones; revoking stops one at once.
        st.apply(&cmd(3_000, add(h('c'), 9_000))).expect("add");
        assert_eq!(st.join_tokens().len(), 2, "b expired and was dropped");
        let r = st.apply(&cmd(3_000, Op::RevokeJoinToken { hash: h('a') }));
        assert_eq!(r, Ok(Outcome::JoinTokenRevoked { existed: true }));
        assert!(!st.join_token_valid(&h('a'), 3_001));
    }

    #[test]
    fn revoked_serials_are_kept_spelled_once_and_survive_a_snapshot() {
        let mut st = sample();
        let cmd = |serial: &str| Command {
            at_ms: 7_000,
            op: Op::RevokeSerial {
                serial: serial.into(),
            },
        };
        assert_eq!(
            st.apply(&cmd("a1bff")),
            Ok(Outcome::SerialRevoked { new: true })
        );
        assert_eq!(
            st.apply(&cmd("a1bff")),
            Ok(Outcome::SerialRevoked { new: false })
        );
        for bad in ["A1BFF", "0a1bff", "a1:bf", "", "zz"] {
            assert!(
                st.apply(&cmd(bad)).is_err(),
                "{bad:?} is not the one spelling"
            );
        }
        assert!(st.is_serial_revoked("a1bff"));
        assert!(!st.is_serial_revoked("a1bfe"));
        let back = State::from_snapshot(&st.to_snapshot()).expect("loads");
        assert_eq!(back.revoked_serials(), vec![("a1bff".to_string(), 7_000)]);
        assert_eq!(back.to_snapshot(), st.to_snapshot());
    }

    /// A backup restored in pieces: out-of-order, foreign and oversized pieces are refused
    /// without changing anything; a snapshot taken half-way carries the pieces, so a replica
    /// that installs it finishes the restore exactly like the others.
    #[test]
    fn a_backup_restores_in_pieces_even_across_a_snapshot() {
        let backup = sample().to_snapshot();
        let total = backup.len() as u64;
        let piece = |restore: u64, offset: usize, end: usize| Command {
            at_ms: 9_000,
            op: Op::RestoreChunk {
                restore,
                offset: offset as u64,
                total,
                bytes: backup[offset..end].to_vec(),
            },
        };
        let third = backup.len() / 3;
        let mut st = State::default();
        assert!(st.apply(&piece(7, third, 2 * third)).is_err(), "no start");
        assert_eq!(
            st.apply(&piece(7, 0, third)),
            Ok(Outcome::RestoreStaged { have: third as u64 })
        );
        let before = st.to_snapshot();
        for bad in [piece(7, 0, third - 1), piece(8, third, 2 * third)] {
            let mut later = bad.clone();
            if let Op::RestoreChunk { offset, .. } = &mut later.op {
                *offset = (*offset).max(1);
            }
            assert!(st.apply(&later).is_err(), "{:?}", later.op);
        }
        assert!(st.apply(&piece(7, third + 1, 2 * third)).is_err(), "a gap");
        assert_eq!(st.to_snapshot(), before, "refusals change nothing");
        // A replica installing a snapshot taken now ends up identical.
        let mut replica = State::from_snapshot(&before).expect("loads half-way");
        for s in [&mut st, &mut replica] {
            assert_eq!(
                s.apply(&piece(7, third, 2 * third)),
                Ok(Outcome::RestoreStaged {
                    have: 2 * third as u64
                })
            );
            assert!(matches!(
                s.apply(&piece(7, 2 * third, backup.len())),
                Ok(Outcome::Restored { .. })
            ));
        }
        assert_eq!(st.to_snapshot(), replica.to_snapshot());
        assert_eq!(st.all_allocations(), sample().all_allocations());
        assert!(st.staged.is_none(), "nothing left over");
        // Now the state holds something: no further restore.
        assert!(matches!(
            st.apply(&piece(9, 0, third)),
            Err(AllocError::NotEmpty(_))
        ));
    }

    #[test]
    fn a_damaged_backup_in_pieces_restores_nothing() {
        let mut backup = sample().to_snapshot();
        let n = backup.len();
        backup[n - 1] ^= 0xff;
        let mut st = State::default();
        let r = st.apply(&Command {
            at_ms: 1,
            op: Op::RestoreChunk {
                restore: 1,
                offset: 0,
                total: n as u64,
                bytes: backup,
            },
        });
        assert!(matches!(r, Err(AllocError::Invalid(_))), "{r:?}");
        assert!(st.is_empty() && st.staged.is_none());
    }

    #[test]
    fn older_snapshots_still_load() {
        let st = sample();
        let v4 = st.to_snapshot();
        // Version 3 had no revoked serials or restore under way, version 2 no revocations or
        // join tokens, version 1 no reports either: their bodies are version 4's without the
        // empty lists' lengths (and the `None`).
        for (version, cut) in [(3u16, 2), (2, 4), (1, 5)] {
            let body = &v4[HEADER..v4.len() - cut];
            let mut old = Vec::new();
            old.extend_from_slice(MAGIC);
            old.extend_from_slice(&version.to_le_bytes());
            old.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
            old.extend_from_slice(body);
            let back = State::from_snapshot(&old).expect("an older snapshot loads");
            assert_eq!(back.to_snapshot(), v4, "version {version}");
        }
        let mut v8 = v4.clone();
        v8[8] = 8;
        assert_eq!(
            State::from_snapshot(&v8).err(),
            Some(SnapshotError::Version(8))
        );
    }

    /// Format 5 is written only once the cluster version is past 1 (raftipam 0.1 reads
    /// format 4 and no later), and carries the cluster version and the tokens' uses.
    #[test]
    fn the_cluster_version_chooses_the_format_and_survives_a_snapshot() {
        let mut st = sample();
        assert_eq!(format_of(&st.to_snapshot()), Some(4));
        let at = |op| Command { at_ms: 10, op };
        let hash = "d".repeat(64);
        let gated = st.apply(&at(Op::AddJoinTokenUses {
            hash: hash.clone(),
            expires_ms: 1_000,
            uses: 2,
        }));
        assert!(
            matches!(
                gated,
                Err(AllocError::NeedsClusterVersion {
                    needs: 2,
                    current: 1,
                    ..
                })
            ),
            "{gated:?}"
        );
        assert_eq!(
            format_of(&st.to_snapshot()),
            Some(4),
            "a refused op changes nothing"
        );
        st.apply(&at(Op::SetClusterVersion { version: 2 }))
            .expect("raised");
        st.apply(&at(Op::AddJoinTokenUses {
            hash: hash.clone(),
            expires_ms: 1_000,
            uses: 2,
        }))
        .expect("allowed at version 2");
        let v5 = st.to_snapshot();
        assert_eq!(format_of(&v5), Some(5));
        let mut back = State::from_snapshot(&v5).expect("loads");
        assert_eq!(back.cluster_version(), 2);
        assert_eq!(back.to_snapshot(), v5);
        assert_eq!(
            back.apply(&at(Op::UseJoinToken { hash: hash.clone() })),
            Ok(Outcome::JoinTokenUsed { left: Some(1) })
        );
        assert_eq!(
            back.apply(&at(Op::UseJoinToken { hash: hash.clone() })),
            Ok(Outcome::JoinTokenUsed { left: Some(0) })
        );
        assert!(
            back.apply(&at(Op::UseJoinToken { hash })).is_err(),
            "used up"
        );
        assert!(
            back.apply(&at(Op::SetClusterVersion { version: 1 }))
                .is_err(),
            "never lowered"
        );
        assert!(
            back.apply(&at(Op::SetClusterVersion { version: 99 }))
                .is_err(),
            "never past what the build knows"
        );
    }

    #[test]
    fn reports_survive_a_snapshot_and_bad_ones_are_refused() {
        use crate::{HostReport, ReportedLeak};
        let mut st = sample();
        let pool: PoolId = "g/10.0.0.0/24".parse().unwrap();
        let a = st.allocations(&pool).unwrap()[0].clone();
        let report = HostReport {
            leaked: vec![ReportedLeak {
                pool: pool.clone(),
                addr: a.addr,
                seq: a.seq,
                endpoint: a.owner.endpoint.clone(),
            }],
            leaked_total: 1,
            ..Default::default()
        };
        let op = Op::Report {
            host: a.owner.host.clone(),
            report: report.clone(),
        };
        st.apply(&Command { at_ms: 7, op }).unwrap();
        assert_eq!(
            st.current_leaks(&pool).by_host,
            vec![(a.owner.host.clone(), 1)]
        );
        let back = State::from_snapshot(&st.to_snapshot()).unwrap();
        assert_eq!(back.reports(), st.reports());
        assert_eq!(back.report(&a.owner.host).unwrap().at_ms, 7);
        // Totals below the list's length, or too many entries, are refused and change nothing.
        let mut lying = report.clone();
        lying.leaked_total = 0;
        let op = Op::Report {
            host: "z".into(),
            report: lying,
        };
        assert!(st.apply(&Command { at_ms: 8, op }).is_err());
        assert!(st.report("z").is_none());
    }

    #[test]
    fn restore_is_exact_refused_when_not_empty_and_keeps_newer_heartbeats() {
        let mut src = sample();
        let beat = |host: &str| Op::Heartbeat {
            host: host.into(),
            version: "1".into(),
        };
        src.apply(&Command {
            at_ms: 50,
            op: beat("old"),
        })
        .unwrap();
        src.apply(&Command {
            at_ms: 50,
            op: beat("live"),
        })
        .unwrap();
        let backup = src.to_snapshot();
        // A new cluster whose shim already beat (later than the backup's) takes the backup.
        let mut dst = State::default();
        dst.apply(&Command {
            at_ms: 90,
            op: beat("live"),
        })
        .unwrap();
        let out = dst
            .apply(&Command {
                at_ms: 100,
                op: Op::Restore {
                    snapshot: backup.clone(),
                },
            })
            .unwrap();
        let allocations = src.all_allocations().len() as u64;
        assert_eq!(
            out,
            Outcome::Restored {
                pools: 1,
                allocations
            }
        );
        assert_eq!(dst.all_allocations(), src.all_allocations());
        assert_eq!(dst.last_seq(), src.last_seq());
        let seen = |s: &State, h: &str| {
            s.hosts()
                .into_iter()
                .find(|i| i.name == h)
                .and_then(|i| i.last_seen_ms)
        };
        assert_eq!(seen(&dst, "live"), Some(90), "the newer heartbeat stays");
        assert_eq!(seen(&dst, "old"), Some(50));
        // Into a fresh state: byte for byte. Into a state holding something: refused, unchanged.
        let mut fresh = State::default();
        let op = Op::Restore {
            snapshot: backup.clone(),
        };
        fresh
            .apply(&Command {
                at_ms: 1,
                op: op.clone(),
            })
            .unwrap();
        assert_eq!(fresh.to_snapshot(), backup);
        let before = dst.to_snapshot();
        let err = dst.apply(&Command { at_ms: 2, op }).unwrap_err();
        assert!(matches!(err, crate::AllocError::NotEmpty(_)), "{err}");
        assert_eq!(dst.to_snapshot(), before);
        // Damaged bytes: refused with the reason, the empty state stays empty.
        let mut bad = backup.clone();
        bad[HEADER + 3] ^= 0x55;
        let mut empty = State::default();
        let err = empty
            .apply(&Command {
                at_ms: 3,
                op: Op::Restore { snapshot: bad },
            })
            .unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(empty.is_empty());
    }
}
