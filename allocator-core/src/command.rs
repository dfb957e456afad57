//! The commands the state machine applies and the outcomes it returns: the replicated form of
//! every write, what a Raft log persists and a client sends.
//!
//! Everything a replica needs to compute the same result travels inside the command: the
//! proposing node stamps the time once (`at_ms`), so `apply` never reads a clock.
//!
//! Owns [`Op`], [`Command`], [`Outcome`] and what they carry ([`PoolSpec`], [`Order`],
//! [`Released`]). Never applies anything (that is `state`), and never changes an encoding:
//! a variant or field is never inserted, reordered, renamed or removed — a new one goes at
//! the end (`tests/wire.rs` pins the bytes). Four operations are raftipam's own bookkeeping
//! rather than the allocator's ([`Op::AddJoinToken`], [`Op::RevokeJoinToken`],
//! [`Op::Revoke`], [`Op::RevokeSerial`]; see [`crate::cluster`]).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::conflict::{Detection, Mac};
use crate::id::{AddrRange, Owner, PoolId};
use crate::report::HostReport;

/// How an allocation without a preferred address picks one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Order {
    /// The pool's own setting (lowest free unless the pool was created serial).
    #[default]
    PoolDefault,
    /// Lowest free address.
    Lowest,
    /// The next free address after the last one handed out, wrapping around.
    Serial,
}

/// What to create (or join) with [`Op::RequestPool`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PoolSpec {
    /// Address space (`local`/`global` for Docker).
    pub space: String,
    /// The subnet; `None` takes the first free subnet of `prefix_len` from the default pools.
    pub subnet: Option<IpNet>,
    /// Sub-range that addresses without a preference come from.
    pub range: Option<IpNet>,
    /// With no subnet: IPv6 instead of IPv4.
    pub v6: bool,
    /// With no subnet: the prefix length wanted (default: the default pool's size).
    pub prefix_len: Option<u8>,
    /// Addresses never handed out, besides network and broadcast (applied when the pool is created).
    pub reserve: Vec<AddrRange>,
    /// Hand out addresses in serial order by default.
    pub serial: bool,
    /// Hold released addresses back from reuse for this long (ms).
    pub cooldown_ms: u64,
}

impl PoolSpec {
    /// A pool in address space `space` (`local`/`global` for Docker), everything else unset:
    /// give a subnet with [`PoolSpec::subnet`], or let the default pools choose one.
    ///
    /// ```
    /// use allocator_core::{AddrRange, PoolSpec};
    ///
    /// let spec = PoolSpec::new("global")
    ///     .subnet("10.1.0.0/24".parse().unwrap())
    ///     .range("10.1.0.128/25".parse().unwrap())
    ///     .reserve(["10.1.0.250-10.1.0.254".parse::<AddrRange>().unwrap()])
    ///     .serial(true)
    ///     .cooldown_ms(30_000);
    /// assert_eq!(spec.space, "global");
    /// // Without a subnet: the first free IPv6 /64 of the default pools.
    /// let v6 = PoolSpec::new("global").v6(true).prefix_len(64);
    /// assert!(v6.subnet.is_none());
    /// ```
    pub fn new(space: impl Into<String>) -> PoolSpec {
        PoolSpec {
            space: space.into(),
            ..PoolSpec::default()
        }
    }

    /// The subnet.
    pub fn subnet(mut self, subnet: IpNet) -> PoolSpec {
        self.subnet = Some(subnet);
        self
    }

    /// The sub-range that addresses without a preference come from (needs a subnet).
    pub fn range(mut self, range: IpNet) -> PoolSpec {
        self.range = Some(range);
        self
    }

    /// With no subnet: IPv6 (true) or IPv4 (false, the default).
    pub fn v6(mut self, v6: bool) -> PoolSpec {
        self.v6 = v6;
        self
    }

    /// With no subnet: the prefix length wanted (default: the default pool's size).
    pub fn prefix_len(mut self, prefix_len: u8) -> PoolSpec {
        self.prefix_len = Some(prefix_len);
        self
    }

    /// Adds addresses never handed out (besides network and broadcast).
    pub fn reserve(mut self, ranges: impl IntoIterator<Item = AddrRange>) -> PoolSpec {
        self.reserve.extend(ranges);
        self
    }

    /// Hand out addresses in serial order by default (true) or lowest first (false, the
    /// default).
    pub fn serial(mut self, serial: bool) -> PoolSpec {
        self.serial = serial;
        self
    }

    /// Hold released addresses back from reuse for this long (ms; 0, the default: reuse at
    /// once).
    pub fn cooldown_ms(mut self, cooldown_ms: u64) -> PoolSpec {
        self.cooldown_ms = cooldown_ms;
        self
    }
}

/// An operation on the allocator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Op {
    /// Create the pool, or join it if it exists: `holder` gains one reference.
    RequestPool {
        /// What to create.
        spec: PoolSpec,
        /// Who holds it (a host name).
        holder: String,
    },
    /// Drop one of `holder`'s references. The pool goes when nobody holds it and nothing in it
    /// is allocated.
    ReleasePool {
        /// The pool.
        pool: PoolId,
        /// Whose reference.
        holder: String,
    },
    /// Operator: delete a pool whoever holds it. Fails if addresses are allocated unless `force`.
    DeletePool {
        /// The pool.
        pool: PoolId,
        /// Also drop its allocations.
        force: bool,
    },
    /// Take a shared reservation on an address (the gateway, an aux address, a host's address).
    /// Several holders may reserve the same address; it is free again when all have released it.
    Reserve {
        /// The pool.
        pool: PoolId,
        /// The address.
        addr: IpAddr,
        /// Who reserves it.
        holder: String,
    },
    /// Allocate an address exclusively to `owner`.
    Allocate {
        /// The pool.
        pool: PoolId,
        /// A specific address (anywhere in the subnet), or any free one in the range.
        addr: Option<IpAddr>,
        /// Who gets it.
        owner: Owner,
        /// Order for an address without preference.
        order: Order,
    },
    /// Release an address: an allocation owned by `host`, or `host`'s reservation of it.
    /// Releasing a free address is a no-op.
    Release {
        /// The pool.
        pool: PoolId,
        /// The address.
        addr: IpAddr,
        /// Who releases.
        host: String,
        /// Operator override: release whoever holds it.
        force: bool,
    },
    /// Release an allocation only if it is still the same one: owned by `host` with sequence
    /// number `seq`. Reconciliation uses it, so an address released and handed out again since
    /// it was seen leaked is never freed by mistake. Anything else is a no-op.
    ReleaseIfUnchanged {
        /// The pool.
        pool: PoolId,
        /// The address.
        addr: IpAddr,
        /// The host that holds it.
        host: String,
        /// The sequence number it was seen with.
        seq: u64,
    },
    /// A shim's heartbeat: the host is alive, running `version`.
    Heartbeat {
        /// Host name.
        host: String,
        /// raftipam version of its shim.
        version: String,
    },
    /// A shim's finding at its last reconciliation pass (see [`crate::report`]). Replaces the
    /// host's previous report; changes no allocation.
    Report {
        /// Host name.
        host: String,
        /// What it found.
        report: HostReport,
    },
    /// Replace the whole, empty state with a backup (bytes of [`crate::State::to_snapshot`]):
    /// pools, allocations with their sequence numbers, cooling addresses, serial cursors,
    /// heartbeats and reports come back exactly. Refused unless the state holds no pool and
    /// never allocated ([`crate::State::is_empty`]); heartbeats and reports already received
    /// are kept where newer than the backup's.
    Restore {
        /// The backup's bytes.
        snapshot: Vec<u8>,
    },
    /// Operator: a host is gone for good. Releases every allocation it holds, its shares of
    /// reservations and its holds on pools, and forgets its heartbeat. Also revokes its
    /// certificates: as [`Op::Revoke`] does at cluster version 1; from version 2 on, its host
    /// certificates only (a node certificate of the same name stays good).
    ForgetHost {
        /// Host name.
        host: String,
    },
    /// Operator: a join token — the SHA-256 (hex) of its secret — valid until `expires_ms`.
    /// raftipam's own bookkeeping ([`crate::cluster`]): the allocator never reads it.
    /// A host holding the token may ask any node for a host certificate (`raftipam join`).
    /// Expired tokens are dropped when another is added; at most 1,024 are kept.
    AddJoinToken {
        /// SHA-256 of the token's secret, 64 lowercase hex digits.
        hash: String,
        /// When it stops being accepted (ms since the Unix epoch).
        expires_ms: u64,
    },
    /// Operator: a join token is no longer accepted. raftipam's own bookkeeping
    /// ([`crate::cluster`]).
    RevokeJoinToken {
        /// SHA-256 of the token's secret, as added.
        hash: String,
    },
    /// Operator: every certificate naming `name` issued before this command's time is revoked
    /// (the nodes refuse it at the handshake and on every call); certificates issued later
    /// are not. Revoking again moves the time forward. raftipam's own bookkeeping
    /// ([`crate::cluster`]).
    Revoke {
        /// The certificate name (a host's, a node's or an operator's).
        name: String,
    },
    /// Operator: the one certificate with this serial number is revoked, whatever it names
    /// (a key that leaked while others of the same name stay good). At most
    /// [`crate::MAX_REVOKED_SERIALS`] serials are kept. raftipam's own bookkeeping
    /// ([`crate::cluster`]).
    RevokeSerial {
        /// The serial number in hexadecimal ([`crate::cluster::canonical_serial`] form:
        /// lowercase, no separators, no leading zeros).
        serial: String,
    },
    /// Operator: one piece of a backup being restored (a backup larger than a request may
    /// carry is sent in pieces, in order). The pieces are kept in the state until the last one
    /// arrives, then the whole is restored as [`Op::Restore`] does. A piece at offset 0 starts
    /// a new restore, dropping any unfinished one.
    RestoreChunk {
        /// Chosen by the client, the same for every piece of one restore.
        restore: u64,
        /// Where this piece starts in the backup.
        offset: u64,
        /// Length of the whole backup.
        total: u64,
        /// The piece (at most [`crate::MAX_RESTORE_CHUNK`] bytes).
        bytes: Vec<u8>,
    },
    /// Raises the cluster version (raftipam's own, [`crate::cluster`]): what every member
    /// can apply. Never lowers it; a version this build does not know is refused. Proposed
    /// by `raftipam cluster upgrade` once every member runs a release that knows it.
    SetClusterVersion {
        /// The new cluster version.
        version: u32,
    },
    /// Adds a join token that may be used `uses` times (cluster version 2 on). Tokens of
    /// [`Op::AddJoinToken`] may be used until they expire.
    AddJoinTokenUses {
        /// SHA-256 of the token's secret, 64 lowercase hex digits.
        hash: String,
        /// When it expires (ms since the Unix epoch).
        expires_ms: u64,
        /// How many certificates it may give (at least 1).
        uses: u32,
    },
    /// Uses a join token once, as a node does before it signs a certificate for it (cluster
    /// version 2 on): a token of [`Op::AddJoinTokenUses`] is gone after its last use.
    UseJoinToken {
        /// SHA-256 of the token's secret.
        hash: String,
    },
    /// Operator: the quotas that bind the hosts (cluster version 2 on): the cluster's (no
    /// `host`) or one host's own, which replace the cluster's for it. `None` quotas go back to
    /// the cluster's (for a host) or to [`crate::Quotas::BUILT_IN`] (for the cluster).
    /// Operators' names ([`crate::OPERATOR_NAMES`]) are never bound.
    SetQuotas {
        /// One host, or the cluster (`None`).
        host: Option<String>,
        /// The quotas, or `None` to drop them.
        quotas: Option<crate::Quotas>,
    },
    /// Operator: adds a join token (cluster version 2 on) good for `uses` certificates, valid
    /// at most [`crate::cluster::MAX_JOIN_TOKEN_TTL_MS`] (7 days) from the command's time,
    /// and, with a `name`, only for a host of that name.
    AddJoinTokenFor {
        /// SHA-256 of the token's secret, 64 lowercase hex digits.
        hash: String,
        /// When it expires (ms since the Unix epoch).
        expires_ms: u64,
        /// How many certificates it may give (at least 1).
        uses: u32,
        /// The one host name it gives a certificate for.
        name: Option<String>,
    },
    /// A node is about to hand the certificate with `serial` for host `name` to a join
    /// request holding the token (cluster version 2 on): uses the token once and records the
    /// certificate. Refused (and nothing handed out) for a token unknown, expired or used up,
    /// bound to another name, or a name revoked, already known as a host or already issued.
    IssueJoinCert {
        /// SHA-256 of the token's secret.
        hash: String,
        /// The name in the certificate.
        name: String,
        /// Its serial ([`crate::cluster::canonical_serial`] form).
        serial: String,
    },
    /// A host saw a device answer for an address of a pool (cluster version 2 on; see
    /// [`crate::conflict`]): a free address goes into quarantine for the pool's probation, a
    /// held one raises a duplicate alarm. A host reports only as itself.
    ReportConflict {
        /// The pool.
        pool: PoolId,
        /// The address some device answered for.
        addr: IpAddr,
        /// The MAC that answered.
        mac: Mac,
        /// The host that saw it (the reporter).
        host: String,
        /// How it was found.
        how: Detection,
    },
    /// Operator: forgets the conflict record of an address (cluster version 2 on): a free
    /// address is no longer in quarantine.
    ClearConflict {
        /// The pool.
        pool: PoolId,
        /// The address.
        addr: IpAddr,
    },
    /// Operator: how long a free address of the pool stays in quarantine after a device was
    /// last seen answering for it (cluster version 2 on; default
    /// [`crate::conflict::DEFAULT_PROBATION_MS`]).
    SetProbation {
        /// The pool.
        pool: PoolId,
        /// The probation (ms, at most [`crate::conflict::MAX_PROBATION_MS`]).
        probation_ms: u64,
    },
    /// A host's agent records the MAC of the container an allocation of it serves (cluster
    /// version 2 on; Docker sends it with every endpoint's address request): a watcher on
    /// any host can then tell the container answering for its address from another device
    /// claiming it (a duplicate alarm). Kept while that allocation stays (same host and
    /// sequence number); a no-op for an allocation that is gone or not the host's.
    RecordMac {
        /// The pool.
        pool: PoolId,
        /// The address.
        addr: IpAddr,
        /// The host that holds it (the reporter).
        host: String,
        /// The allocation's sequence number.
        seq: u64,
        /// The container's MAC.
        mac: Mac,
    },
    /// A host's agent tells how it can check each subnet of the cluster's pools on the LAN
    /// (cluster version 2 on): on, or off and why (no `CAP_NET_RAW`, no interface on the
    /// subnet's link). Replaces the host's previous report; `host ls` and `status` show it,
    /// and hosts share the background sweeps among those whose checks are on.
    ReportLanChecks {
        /// The host (the reporter).
        host: String,
        /// One per subnet (at most [`crate::conflict::MAX_LAN_CHECKS`]).
        checks: Vec<crate::conflict::LanCheck>,
    },
}

/// A command: an operation and the time it was proposed at (ms since the Unix epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Time stamped by the proposing node; cooldowns are measured against it.
    pub at_ms: u64,
    /// The operation.
    pub op: Op,
}

impl Op {
    /// The operation's name for messages (`AddJoinTokenUses`).
    pub fn name(&self) -> String {
        let d = format!("{self:?}");
        d.split([' ', '(', '{'])
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Checks what can be checked of the operation alone, without the state: names within
    /// bounds, every address inside its pool's subnet and of its family, a range inside its
    /// subnet, a MAC a device can have, a report and LAN checks within their bounds, a
    /// probation within its bound. A node runs it before it proposes a client's write, so
    /// that what the state would refuse anyway costs no log entry. Every refusal here is one
    /// [`crate::State::apply`] makes too (with the same error, or
    /// [`AllocError::NoSuchPool`](crate::AllocError::NoSuchPool) where the pool is unknown),
    /// or of a name longer than any the state keeps: nothing a well-formed caller sends.
    pub fn check_shape(&self) -> Result<(), crate::AllocError> {
        use crate::limits::check_name;
        use crate::AllocError;
        let inside = |pool: &PoolId, addr: &IpAddr| {
            if pool.subnet.contains(addr) {
                Ok(())
            } else {
                Err(AllocError::OutsidePool {
                    addr: *addr,
                    pool: pool.clone(),
                })
            }
        };
        let device = |mac: &Mac| {
            if mac.is_unicast() {
                Ok(())
            } else {
                Err(AllocError::Invalid(format!(
                    "MAC {mac} cannot be a device's own (all zeros, multicast or broadcast)"
                )))
            }
        };
        match self {
            Op::RequestPool { spec, holder } => {
                check_name("holder", holder, false)?;
                check_name("address space", &spec.space, true)?;
                if let (Some(subnet), Some(range)) = (spec.subnet, spec.range) {
                    let subnet = subnet.trunc();
                    if !subnet.contains(&range) {
                        return Err(AllocError::Invalid(format!(
                            "range {range} is not inside subnet {subnet}"
                        )));
                    }
                }
            }
            Op::ReleasePool { holder, .. } => check_name("holder", holder, false)?,
            Op::Reserve { pool, addr, holder } => {
                check_name("holder", holder, false)?;
                inside(pool, addr)?;
            }
            Op::Allocate {
                pool, addr, owner, ..
            } => {
                check_name("host", &owner.host, false)?;
                check_name("endpoint", &owner.endpoint, true)?;
                if let Some(a) = addr {
                    inside(pool, a)?;
                }
            }
            Op::Release {
                pool, addr, host, ..
            }
            | Op::ReleaseIfUnchanged {
                pool, addr, host, ..
            } => {
                check_name("host", host, false)?;
                inside(pool, addr)?;
            }
            Op::Heartbeat { host, .. } => check_name("host", host, false)?,
            Op::Report { host, report } => {
                check_name("host", host, false)?;
                report.validate()?;
            }
            Op::ForgetHost { host } => check_name("host", host, false)?,
            Op::ReportConflict {
                pool,
                addr,
                mac,
                host,
                ..
            } => {
                check_name("host", host, false)?;
                device(mac)?;
                inside(pool, addr)?;
            }
            Op::ClearConflict { pool, addr } => inside(pool, addr)?,
            Op::SetProbation { probation_ms, .. }
                if *probation_ms > crate::conflict::MAX_PROBATION_MS =>
            {
                return Err(AllocError::Invalid(format!(
                    "a probation of {probation_ms} ms is longer than the {} ms (30 days) allowed",
                    crate::conflict::MAX_PROBATION_MS
                )));
            }
            Op::RecordMac {
                pool,
                addr,
                host,
                mac,
                ..
            } => {
                check_name("host", host, false)?;
                device(mac)?;
                inside(pool, addr)?;
            }
            Op::ReportLanChecks { host, checks } => {
                check_name("host", host, false)?;
                crate::state::validate_lan_checks(checks)
                    .map_err(|e| AllocError::Invalid(format!("LAN checks: {e}")))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The cluster version an operation needs: every member must be able to apply it before
    /// any is asked to (see [`crate::cluster`]).
    pub fn needs_cluster_version(&self) -> u32 {
        match self {
            Op::AddJoinTokenUses { .. }
            | Op::UseJoinToken { .. }
            | Op::SetQuotas { .. }
            | Op::AddJoinTokenFor { .. }
            | Op::IssueJoinCert { .. }
            | Op::ReportConflict { .. }
            | Op::ClearConflict { .. }
            | Op::SetProbation { .. }
            | Op::RecordMac { .. }
            | Op::ReportLanChecks { .. } => 2,
            _ => 1,
        }
    }
}

/// What a successful command did. The typed write methods of [`crate::State`] return the
/// same facts as plain values (e.g. [`crate::Allocated`]), each convertible into its variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Outcome {
    /// Result of [`Op::RequestPool`].
    Pool {
        /// The pool's id.
        pool: PoolId,
        /// Whether this request created it (false: joined an existing one).
        created: bool,
    },
    /// Result of [`Op::ReleasePool`] and [`Op::DeletePool`].
    PoolReleased {
        /// Whether the pool is gone now.
        removed: bool,
    },
    /// Result of [`Op::Reserve`].
    Reserved {
        /// The address, with the subnet's prefix length.
        addr: IpNet,
    },
    /// Result of [`Op::Allocate`].
    Allocated {
        /// The address, with the subnet's prefix length (what Docker wants back).
        addr: IpNet,
        /// Sequence number of the allocation (unchanged on an idempotent repeat).
        seq: u64,
        /// True when this repeated a request already granted to the same owner.
        existing: bool,
    },
    /// Result of [`Op::Heartbeat`].
    HostSeen {
        /// True the first time this host reports (or the first time after it was forgotten).
        first: bool,
    },
    /// Result of [`Op::Report`].
    Reported,
    /// Result of [`Op::Restore`].
    Restored {
        /// Pools restored.
        pools: u64,
        /// Allocations restored.
        allocations: u64,
    },
    /// Result of [`Op::AddJoinToken`].
    JoinTokenAdded {
        /// Tokens now accepted (this one included).
        tokens: u64,
    },
    /// Result of [`Op::RevokeJoinToken`].
    JoinTokenRevoked {
        /// Whether the token was accepted until now.
        existed: bool,
    },
    /// Result of [`Op::Revoke`]: certificates of the name issued before this time (ms since
    /// the Unix epoch) are revoked.
    Revoked {
        /// Revoked up to.
        before_ms: u64,
    },
    /// Result of [`Op::RevokeSerial`].
    SerialRevoked {
        /// False when the serial was revoked already.
        new: bool,
    },
    /// Result of [`Op::RestoreChunk`] before the last piece.
    RestoreStaged {
        /// Bytes of the backup received so far.
        have: u64,
    },
    /// Result of [`Op::ForgetHost`].
    HostForgotten {
        /// Allocations released.
        allocations: u64,
        /// Reservation references dropped.
        reservations: u64,
        /// Pool holds dropped.
        pools: u64,
    },
    /// Result of [`Op::Release`] and [`Op::ReleaseIfUnchanged`].
    Released {
        /// What was released.
        what: Released,
    },
    /// Result of [`Op::SetClusterVersion`].
    ClusterVersion {
        /// The cluster version now.
        version: u32,
        /// False when it was that already.
        changed: bool,
    },
    /// Result of [`Op::UseJoinToken`] and [`Op::IssueJoinCert`].
    JoinTokenUsed {
        /// Uses left (`None`: a token without a limit).
        left: Option<u32>,
    },
    /// Result of [`Op::SetQuotas`].
    QuotasSet {
        /// The quotas that bind the host (or the cluster's hosts) now.
        quotas: crate::Quotas,
    },
    /// Result of [`Op::ReportConflict`].
    ConflictReported {
        /// A free address: the end of its quarantine. `None`: the address is held (a
        /// duplicate alarm).
        until_ms: Option<u64>,
        /// Who holds the address, for a duplicate alarm.
        holder: Option<Owner>,
        /// Reports of this conflict so far (this one included).
        count: u64,
    },
    /// Result of [`Op::ClearConflict`].
    ConflictCleared {
        /// Whether the address had a conflict record.
        existed: bool,
    },
    /// Result of [`Op::SetProbation`].
    ProbationSet {
        /// The pool's probation now (ms).
        probation_ms: u64,
    },
    /// Result of [`Op::RecordMac`].
    MacRecorded {
        /// Whether the allocation was there (the host's, same sequence number) and got it.
        recorded: bool,
    },
}

/// What a release released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Released {
    /// An allocation (now free, or cooling down).
    Allocation,
    /// One reference of a shared reservation.
    Reservation,
    /// The address was free already: nothing to do.
    Nothing,
}
