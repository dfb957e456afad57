//! The allocation state machine: [`State`], its replicated settings ([`Config`]) and
//! [`State::apply`], which hands each [`Op`] to the one function that carries it out.
//!
//! Owns the shape of the state and the dispatch. Never does the work itself: each concern has
//! its own file below, and each typed write method (`State::allocate`, ...) is the very
//! function `apply` calls, so both paths behave alike. Only `state` (and the snapshot decoder,
//! which builds a state) changes allocator state; the vocabulary it speaks (ids, commands,
//! errors, reports, query views, limits) never imports it.
//!
//! - `pools.rs`: creating, joining, releasing and deleting pools; picking a default subnet.
//! - `addresses.rs`: reservations, allocations and releases of one address.
//! - `hosts.rs`: the host-name table, heartbeats, forgetting a host.
//! - `reports.rs`: the hosts' reports and which reported leaks still stand.
//! - `restore.rs`: restoring a backup, whole or in pieces, into an empty state.
//! - `queries.rs`: what the state is asked (pools, allocations, hosts, who has an address).
//! - `invariants.rs`: [`State::check_invariants`].
//! - `credentials.rs`: raftipam's revocations and join tokens ([`crate::cluster`]).
//! - `quotas.rs`: per-host quotas and what each host holds.
//! - `conflicts.rs`: addresses a device on the LAN answered for, their quarantine, pools'
//!   probations ([`crate::conflict`]).

mod addresses;
mod conflicts;
mod credentials;
mod hosts;
mod invariants;
mod lan;

pub(crate) use lan::validate_checks as validate_lan_checks;
mod pools;
mod queries;
mod quotas;
mod reports;
mod restore;

use std::collections::BTreeMap;
use std::fmt;

use hashbrown::HashMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::command::{Command, Op, Outcome};
use crate::error::AllocError;
use crate::id::PoolId;
use crate::keyed::Keyed;
use crate::report::StoredReport;
use crate::subnet::Subnets;

pub use conflicts::ConflictReported;
pub(crate) use conflicts::Lan;
pub(crate) use credentials::Credentials;
pub use credentials::IssuedCert;
pub(crate) use hosts::Seen;
pub(crate) use pools::Pool;
pub(crate) use quotas::QuotaTable;
pub(crate) use restore::StagedRestore;

/// A block that subnets are carved from when a pool is requested without one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DefaultPool {
    /// The block, e.g. `172.16.0.0/12`.
    pub base: IpNet,
    /// Prefix length of the subnets carved from it, e.g. 16.
    pub size: u8,
}

impl DefaultPool {
    /// Subnets of prefix length `size` carved from `base`.
    pub fn new(base: IpNet, size: u8) -> DefaultPool {
        DefaultPool { base, size }
    }
}

/// Settings that are part of the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Config {
    /// Blocks for pools requested without a subnet, tried in order.
    pub default_pools: Vec<DefaultPool>,
}

impl Config {
    /// Settings with these default pools (tried in order).
    ///
    /// ```
    /// use allocator_core::{Config, DefaultPool, PoolSpec, State};
    ///
    /// let config = Config::new(vec![DefaultPool::new("10.200.0.0/16".parse().unwrap(), 24)]);
    /// let mut state = State::new(config);
    /// let got = state.request_pool(0, &PoolSpec::new("global"), "host-a").unwrap();
    /// assert_eq!(got.pool.to_string(), "global/10.200.0.0/24");
    /// ```
    pub fn new(default_pools: Vec<DefaultPool>) -> Config {
        Config { default_pools }
    }
}

impl Default for Config {
    /// Docker's convention: /16s of 172.16.0.0/12, then /20s of 192.168.0.0/16; IPv6 /64s of
    /// fd00::/8.
    fn default() -> Self {
        let dp = |base: &str, size| DefaultPool {
            base: base.parse().unwrap_or(IpNet::V4(Default::default())),
            size,
        };
        Config {
            default_pools: vec![
                dp("172.16.0.0/12", 16),
                dp("192.168.0.0/16", 20),
                dp("fd00::/8", 64),
            ],
        }
    }
}

/// The whole allocator: every pool of every address space.
///
/// Write with the typed methods ([`State::request_pool`], [`State::allocate`],
/// [`State::release`], ...) or, replicated, with [`State::apply`] of a [`Command`]: the same
/// functions either way. Read with the query methods. Deterministic: the same sequence of
/// writes gives the same state and results on every replica. A write that fails changes
/// nothing.
#[derive(Clone)]
pub struct State {
    pub(crate) config: Config,
    pub(crate) seq: u64,
    pub(crate) hosts: Vec<String>,
    pub(crate) host_ids: HashMap<String, u16>,
    pub(crate) subnets: Subnets,
    pub(crate) pools: Keyed<PoolId, Pool>,
    pub(crate) seen: BTreeMap<String, Seen>,
    pub(crate) reports: BTreeMap<String, StoredReport>,
    /// raftipam's revocations and join tokens ([`crate::cluster`]); the allocator never reads
    /// them.
    pub(crate) credentials: Credentials,
    /// A backup being restored in pieces ([`Op::RestoreChunk`]).
    pub(crate) staged: Option<StagedRestore>,
    /// The cluster version: what every member can apply ([`crate::cluster`]).
    pub(crate) cluster_version: u32,
    /// Per-host quotas an operator set ([`Op::SetQuotas`]).
    pub(crate) quotas: QuotaTable,
    /// Addresses each host holds (allocations and reserved addresses): derived, never
    /// persisted; what the address quota compares.
    pub(crate) usage: HashMap<String, u64>,
    /// Conflicts on the LAN and the pools' probations ([`crate::conflict`]).
    pub(crate) lan: Lan,
}

impl Default for State {
    fn default() -> Self {
        State::new(Config::default())
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("pools", &self.pools.len())
            .field("seq", &self.seq)
            .finish()
    }
}

impl State {
    /// An empty state.
    pub fn new(config: Config) -> State {
        State {
            config,
            seq: 0,
            hosts: Vec::new(),
            host_ids: HashMap::new(),
            subnets: Subnets::default(),
            pools: Keyed::default(),
            seen: BTreeMap::new(),
            reports: BTreeMap::new(),
            credentials: Credentials::default(),
            staged: None,
            cluster_version: 1,
            quotas: QuotaTable::default(),
            usage: HashMap::new(),
            lan: Lan::default(),
        }
    }

    /// The replicated settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Sequence number of the last allocation.
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// Applies one command: what every replica of a Raft log does with each entry. A command
    /// that fails changes nothing.
    ///
    /// Each operation is carried out by the same function as its typed method (for
    /// [`Op::Allocate`], [`State::allocate`] or [`State::allocate_addr`]), with the command's
    /// `at_ms` as the time; the result comes back as an [`Outcome`].
    ///
    /// ```
    /// use allocator_core::{Command, Op, Outcome, PoolSpec, State};
    ///
    /// let cmd = Command {
    ///     at_ms: 1_700_000_000_000,
    ///     op: Op::RequestPool {
    ///         spec: PoolSpec::new("global").subnet("10.1.0.0/24".parse().unwrap()),
    ///         holder: "host-a".into(),
    ///     },
    /// };
    /// // Two replicas, one log: the same outcome and the same state.
    /// let (mut a, mut b) = (State::default(), State::default());
    /// let out = a.apply(&cmd).unwrap();
    /// assert_eq!(b.apply(&cmd).unwrap(), out);
    /// assert!(matches!(out, Outcome::Pool { created: true, .. }));
    /// assert_eq!(a.to_snapshot(), b.to_snapshot());
    /// ```
    pub fn apply(&mut self, cmd: &Command) -> Result<Outcome, AllocError> {
        let now = cmd.at_ms;
        let needs = cmd.op.needs_cluster_version();
        if needs > self.cluster_version {
            return Err(AllocError::NeedsClusterVersion {
                what: cmd.op.name(),
                needs,
                current: self.cluster_version,
            });
        }
        if let Op::AddJoinToken { expires_ms, .. } | Op::AddJoinTokenUses { expires_ms, .. } =
            &cmd.op
        {
            // From cluster version 2 on (every member a 0.2), no token outlives 7 days.
            if self.cluster_version >= 2 {
                credentials::check_token_ttl(now, *expires_ms)?;
            }
        }
        match &cmd.op {
            Op::RequestPool { spec, holder } => {
                self.request_pool(now, spec, holder).map(Outcome::from)
            }
            Op::ReleasePool { pool, holder } => self
                .release_pool(now, pool, holder)
                .map(|removed| Outcome::PoolReleased { removed }),
            Op::DeletePool { pool, force } => self
                .delete_pool_as(pool, *force)
                .map(|()| Outcome::PoolReleased { removed: true }),
            Op::Reserve { pool, addr, holder } => self
                .reserve(now, pool, *addr, holder)
                .map(|addr| Outcome::Reserved { addr }),
            Op::Allocate {
                pool,
                addr,
                owner,
                order,
            } => self
                .allocate_as(now, pool, *addr, owner, *order)
                .map(Outcome::from),
            Op::Release {
                pool,
                addr,
                host,
                force,
            } => self
                .release_as(now, pool, *addr, host, *force)
                .map(|what| Outcome::Released { what }),
            Op::ReleaseIfUnchanged {
                pool,
                addr,
                host,
                seq,
            } => self
                .release_if_unchanged(now, pool, *addr, host, *seq)
                .map(|what| Outcome::Released { what }),
            Op::Heartbeat { host, version } => self
                .heartbeat(now, host, version)
                .map(|first| Outcome::HostSeen { first }),
            Op::Report { host, report } => self
                .store_report(now, host, report)
                .map(|()| Outcome::Reported),
            Op::Restore { snapshot } => self.restore(now, snapshot).map(Outcome::from),
            Op::ForgetHost { host } => self.forget_host(now, host).map(Outcome::from),
            Op::AddJoinToken { hash, expires_ms } => self
                .credentials
                .add_join_token(now, hash, *expires_ms)
                .map(|tokens| Outcome::JoinTokenAdded { tokens }),
            Op::RevokeJoinToken { hash } => Ok(Outcome::JoinTokenRevoked {
                existed: self.credentials.revoke_join_token(hash),
            }),
            Op::Revoke { name } => self
                .credentials
                .revoke_name(now, name)
                .map(|before_ms| Outcome::Revoked { before_ms }),
            Op::RevokeSerial { serial } => self
                .credentials
                .revoke_serial(now, serial)
                .map(|new| Outcome::SerialRevoked { new }),
            Op::RestoreChunk {
                restore,
                offset,
                total,
                bytes,
            } => self.restore_chunk(*restore, *offset, *total, bytes),
            Op::SetClusterVersion { version } => self.set_cluster_version(*version),
            Op::AddJoinTokenUses {
                hash,
                expires_ms,
                uses,
            } => self
                .credentials
                .add_join_token_uses(now, hash, *expires_ms, *uses)
                .map(|tokens| Outcome::JoinTokenAdded { tokens }),
            Op::UseJoinToken { hash } => self
                .credentials
                .use_join_token(now, hash)
                .map(|left| Outcome::JoinTokenUsed { left }),
            Op::SetQuotas { host, quotas } => self.set_quotas(host.as_deref(), *quotas),
            Op::AddJoinTokenFor {
                hash,
                expires_ms,
                uses,
                name,
            } => self
                .credentials
                .add_join_token_for(now, hash, *expires_ms, *uses, name.as_deref())
                .map(|tokens| Outcome::JoinTokenAdded { tokens }),
            Op::IssueJoinCert { hash, name, serial } => self
                .issue_join_cert(now, hash, name, serial)
                .map(|left| Outcome::JoinTokenUsed { left }),
            Op::ReportConflict {
                pool,
                addr,
                mac,
                host,
                how,
            } => self
                .report_conflict(now, pool, *addr, *mac, host, *how)
                .map(Outcome::from),
            Op::ClearConflict { pool, addr } => self
                .clear_conflict(now, pool, *addr)
                .map(|existed| Outcome::ConflictCleared { existed }),
            Op::SetProbation { pool, probation_ms } => self
                .set_probation(now, pool, *probation_ms)
                .map(|probation_ms| Outcome::ProbationSet { probation_ms }),
            Op::RecordMac {
                pool,
                addr,
                host,
                seq,
                mac,
            } => self
                .record_mac(now, pool, *addr, host, *seq, *mac)
                .map(|recorded| Outcome::MacRecorded { recorded }),
            Op::ReportLanChecks { host, checks } => self
                .report_lan_checks(now, host, checks)
                .map(|()| Outcome::Reported),
        }
    }

    /// The cluster version: what every member can apply (raftipam's own bookkeeping,
    /// [`crate::cluster`]); 1 for a state that never recorded one.
    pub fn cluster_version(&self) -> u32 {
        self.cluster_version
    }

    /// [`Op::SetClusterVersion`]: raises it, never lowers it, never past what this build
    /// knows.
    fn set_cluster_version(&mut self, version: u32) -> Result<Outcome, AllocError> {
        if version < self.cluster_version {
            return Err(AllocError::Invalid(format!(
                "the cluster version is {} and is never lowered (asked: {version})",
                self.cluster_version
            )));
        }
        if version > crate::cluster::CLUSTER_VERSION {
            return Err(AllocError::Invalid(format!(
                "cluster version {version} is newer than this build knows ({})",
                crate::cluster::CLUSTER_VERSION
            )));
        }
        let changed = version != self.cluster_version;
        self.cluster_version = version;
        Ok(Outcome::ClusterVersion { version, changed })
    }

    /// The key of a pool's subnet in `State::subnets`.
    fn subnet_key(id: &PoolId) -> (String, IpNet) {
        (id.space.clone(), id.subnet)
    }
}
