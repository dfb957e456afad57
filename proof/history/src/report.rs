//! The report: what [`check`](crate::check) found ([`Report`]): every broken promise
//! ([`Violation`], with the operations it cites) and what the history contains ([`Summary`],
//! [`OperationCounts`]).
//!
//! This module owns the report's types, their `Display` (for people) and their serde form (for
//! the harness's JSON artefacts). It must never decide anything: no violation is found or
//! dropped here, the checker fills the report in and this module only holds and prints it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::history::{format_time, Event};
use crate::operation::Operation;

/// One allocation's hold of an address, as [`Violation::DoubleHold`] cites it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The owner.
    pub owner: String,
    /// The allocation (`ok`, or unknown but present in the final state).
    pub allocate: Operation,
    /// Its earliest release that could have ended the hold (`ok` or unknown), if any.
    pub release: Option<Operation>,
    /// The replicas holding it in the final state.
    pub in_final_state: Vec<u64>,
}

/// Two holds of one address by different owners that no real-time order separates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldPair {
    /// The hold whose allocation was invoked first.
    pub first: Hold,
    /// The other.
    pub second: Hold,
}

/// How the final state entered the linearizability check of one address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalRead {
    /// Not used: the replicas disagree on the address, or it has a durability violation
    /// (reported on its own; one root cause, one report).
    NotUsed,
    /// Every replica has the address free.
    Free,
    /// Every replica has the address held by this owner.
    Held(String),
}

impl fmt::Display for FinalRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FinalRead::NotUsed => f.write_str("final state not used"),
            FinalRead::Free => f.write_str("ending free in the final state"),
            FinalRead::Held(o) => write!(f, "ending held by {o} in the final state"),
        }
    }
}

/// One broken promise, with the events involved. Each variant names its property
/// ([`Violation::property`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// The history breaks its recording contract (a completion without invoke, two open
    /// invokes in one process, a reused process or owner, a malformed value, time going
    /// backwards in one process...). The event is left out of the address checks, so the
    /// other results no longer vouch for it: fix the harness.
    IllFormed {
        /// Index of the offending event.
        index: usize,
        /// The event.
        event: Event,
        /// What is wrong, and what the harness should do.
        problem: String,
    },
    /// (a) Two owners held one address at once: both allocations happened (`ok`, or unknown
    /// and present in the final state), and neither was released (a release `ok` or unknown,
    /// invoked before the other allocation completed) in a way that orders the two holds.
    DoubleHold {
        /// The address.
        addr: IpAddr,
        /// The overlapping pairs (the first few).
        pairs: Vec<HoldPair>,
        /// How many overlapping pairs the address has in all.
        total_pairs: usize,
    },
    /// (a) One replica's final state holds an address more than once.
    DuplicateInFinalState {
        /// The replica.
        node: u64,
        /// The address.
        addr: IpAddr,
        /// Every owner it lists for the address.
        owners: Vec<String>,
    },
    /// (b) No final state was given: durability and agreement were not checked.
    NoFinalState,
    /// (b) An acknowledged allocation, never released, is missing from some replicas.
    LostAllocation {
        /// The address.
        addr: IpAddr,
        /// Its owner.
        owner: String,
        /// The acknowledged allocation.
        allocate: Box<Operation>,
        /// The replicas without it, each with whatever owner it holds there instead.
        missing_on: Vec<(u64, Option<String>)>,
    },
    /// (b) An acknowledged release's `(address, owner)` is still held by some replicas, though
    /// no allocation of that owner could have taken effect after the release.
    ReleasedStillPresent {
        /// The address.
        addr: IpAddr,
        /// The owner released.
        owner: String,
        /// The acknowledged release.
        release: Box<Operation>,
        /// The replicas still holding it.
        present_on: Vec<u64>,
    },
    /// (b) A replica holds `(address, owner)` that no allocation in the history could have
    /// produced: the owner never allocated, its allocate failed, it was granted or requested
    /// another address, or it holds several addresses. (A retry applied twice looks like this.)
    UnexpectedHolder {
        /// The address.
        addr: IpAddr,
        /// The owner.
        owner: String,
        /// The replicas holding it.
        nodes: Vec<u64>,
        /// Why no allocation explains it.
        reason: String,
        /// The owner's allocation, if there is one.
        allocate: Option<Box<Operation>>,
    },
    /// (b) A replica's final state differs from the reference replica's (the lowest node id).
    ReplicasDiffer {
        /// The reference replica.
        reference: u64,
        /// The differing replica.
        node: u64,
        /// The first entries only the reference holds.
        only_on_reference: Vec<(IpAddr, String)>,
        /// The first entries only `node` holds.
        only_on_node: Vec<(IpAddr, String)>,
        /// The number of entries on one side only, in all.
        differences: usize,
    },
    /// (b) The replicas' snapshot digests are not all equal.
    DigestsDiffer {
        /// Every digest given, by node.
        digests: Vec<(u64, String)>,
    },
    /// (c) The operations on one address cannot be ordered as a register `Free | Held(owner)`
    /// with each operation taking effect inside its interval (unknown ones: after their invoke,
    /// or never), ending in the final state.
    NotLinearizable {
        /// The address.
        addr: IpAddr,
        /// The final state, used as the last read unless the replicas disagree on the address
        /// or it has a (b) violation.
        final_read: FinalRead,
        /// The longest sequence of operations the search could linearize, in order: the failure
        /// is just after it.
        linearized: Vec<Operation>,
        /// The register after `linearized` (`None` = free).
        state_after: Option<String>,
        /// The operation that cannot be placed next (the earliest-completing one not in
        /// `linearized`); `None` when it is the final state that cannot be reached.
        stuck_on: Option<Box<Operation>>,
        /// Every operation on the address, by invoke time (`"ops"` in JSON).
        #[serde(rename = "ops")]
        operations: Vec<Operation>,
    },
    /// (d) An address in quarantine was handed out: a host's conflict report on it was
    /// acknowledged with the address free (`quarantined: true`), and an allocation invoked
    /// after that acknowledgement took it, with no clear of the conflict that could have come
    /// between the two (the run's probation outlasts it).
    QuarantinedHandedOut {
        /// The address.
        addr: IpAddr,
        /// The acknowledged report that put it in quarantine.
        report: Box<Operation>,
        /// The allocations that took it (`ok`, or unknown and present in the final state), the
        /// first few.
        allocations: Vec<Operation>,
        /// How many such allocations in all.
        total: usize,
    },
}

impl Violation {
    /// The property broken: `well_formed`, `no_double_hold`, `durability`, `linearizable` or
    /// `quarantine`.
    pub fn property(&self) -> &'static str {
        match self {
            Violation::IllFormed { .. } => "well_formed",
            Violation::DoubleHold { .. } | Violation::DuplicateInFinalState { .. } => {
                "no_double_hold"
            }
            Violation::NoFinalState
            | Violation::LostAllocation { .. }
            | Violation::ReleasedStillPresent { .. }
            | Violation::UnexpectedHolder { .. }
            | Violation::ReplicasDiffer { .. }
            | Violation::DigestsDiffer { .. } => "durability",
            Violation::NotLinearizable { .. } => "linearizable",
            Violation::QuarantinedHandedOut { .. } => "quarantine",
        }
    }

    /// The address concerned, if the violation is about one.
    pub fn addr(&self) -> Option<IpAddr> {
        match self {
            Violation::DoubleHold { addr, .. }
            | Violation::DuplicateInFinalState { addr, .. }
            | Violation::LostAllocation { addr, .. }
            | Violation::ReleasedStillPresent { addr, .. }
            | Violation::UnexpectedHolder { addr, .. }
            | Violation::NotLinearizable { addr, .. }
            | Violation::QuarantinedHandedOut { addr, .. } => Some(*addr),
            _ => None,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ", self.property())?;
        match self {
            Violation::IllFormed {
                index,
                event,
                problem,
            } => {
                write!(
                    f,
                    "event #{index} (process {}, {} {}, t {}): {problem}",
                    event.process,
                    event.operation,
                    event.kind,
                    format_time(event.t_ns)
                )
            }
            Violation::DoubleHold {
                addr,
                pairs,
                total_pairs,
            } => {
                write!(
                    f,
                    "{addr} held by two owners at once ({total_pairs} overlapping pair(s)): \
                     in each pair, neither owner's release was invoked before the other's \
                     allocation completed"
                )?;
                for (k, p) in pairs.iter().enumerate() {
                    write!(f, "\n    pair {}:", k + 1)?;
                    for h in [&p.first, &p.second] {
                        write!(f, "\n      {}: allocated by {}", h.owner, h.allocate)?;
                        match &h.release {
                            Some(r) => write!(f, "\n        earliest release: {r}")?,
                            None => f.write_str("\n        never released")?,
                        }
                        if !h.in_final_state.is_empty() {
                            write!(
                                f,
                                "\n        in the final state of nodes {:?}",
                                h.in_final_state
                            )?;
                        }
                    }
                }
                more(f, pairs.len(), *total_pairs, "pairs")
            }
            Violation::DuplicateInFinalState { node, addr, owners } => {
                write!(
                    f,
                    "node {node}'s final state holds {addr} {} times: {owners:?}",
                    owners.len()
                )
            }
            Violation::NoFinalState => {
                f.write_str("no replica in the final state: durability and agreement are unchecked")
            }
            Violation::LostAllocation {
                addr,
                owner,
                allocate,
                missing_on,
            } => {
                write!(
                    f,
                    "acknowledged allocation of {addr} to {owner}, never released, \
                     is missing from the final state:\n    {allocate}"
                )?;
                for (node, instead) in missing_on {
                    write!(
                        f,
                        "\n    node {node} holds {addr} for {}",
                        instead.as_deref().unwrap_or("nobody")
                    )?;
                }
                Ok(())
            }
            Violation::ReleasedStillPresent {
                addr,
                owner,
                release,
                present_on,
            } => {
                write!(
                    f,
                    "acknowledged release of {addr} by {owner} did not stick: \
                     nodes {present_on:?} still hold it\n    {release}"
                )
            }
            Violation::UnexpectedHolder {
                addr,
                owner,
                nodes,
                reason,
                allocate,
            } => {
                write!(
                    f,
                    "nodes {nodes:?} hold {addr} for {owner}, which no allocation explains: \
                     {reason}"
                )?;
                if let Some(a) = allocate {
                    write!(f, "\n    {a}")?;
                }
                Ok(())
            }
            Violation::ReplicasDiffer {
                reference,
                node,
                only_on_reference,
                only_on_node,
                differences,
            } => {
                write!(
                    f,
                    "node {node}'s final state differs from node {reference}'s \
                     ({differences} entries on one side only)"
                )?;
                for (a, o) in only_on_reference {
                    write!(f, "\n    only on node {reference}: {a} {o}")?;
                }
                for (a, o) in only_on_node {
                    write!(f, "\n    only on node {node}: {a} {o}")?;
                }
                more(
                    f,
                    only_on_reference.len() + only_on_node.len(),
                    *differences,
                    "entries",
                )
            }
            Violation::DigestsDiffer { digests } => {
                f.write_str("snapshot digests differ:")?;
                for (node, d) in digests {
                    write!(f, "\n    node {node}: {d}")?;
                }
                Ok(())
            }
            Violation::NotLinearizable {
                addr,
                final_read,
                linearized,
                state_after,
                stuck_on,
                operations,
            } => {
                write!(
                    f,
                    "{addr}: the {} operations on it are not linearizable ({final_read})",
                    operations.len()
                )?;
                write!(
                    f,
                    "\n    longest linearizable prefix ({} op(s)), leaving {}:",
                    linearized.len(),
                    state_after.as_deref().unwrap_or("free")
                )?;
                for o in linearized {
                    write!(f, "\n      {o}")?;
                }
                match stuck_on {
                    Some(o) => write!(f, "\n    cannot place next: {o}")?,
                    None => f.write_str("\n    cannot reach the final state")?,
                }
                f.write_str("\n    all operations on the address:")?;
                for o in operations {
                    write!(f, "\n      {o}")?;
                }
                Ok(())
            }
            Violation::QuarantinedHandedOut {
                addr,
                report,
                allocations,
                total,
            } => {
                write!(
                    f,
                    "{addr} was handed out {total} time(s) while in quarantine: a conflict \
                     report on it was acknowledged, no clear could have come between\n    \
                     report: {report}"
                )?;
                for a in allocations {
                    write!(f, "\n    handed out by: {a}")?;
                }
                more(f, allocations.len(), *total, "allocations")
            }
        }
    }
}

fn more(f: &mut fmt::Formatter<'_>, shown: usize, total: usize, what: &str) -> fmt::Result {
    if total > shown {
        write!(f, "\n    ... and {} more {what}", total - shown)?;
    }
    Ok(())
}

/// Counts of one operation kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationCounts {
    /// Invokes.
    pub invoke: usize,
    /// `ok` completions.
    pub ok: usize,
    /// `fail` completions.
    pub fail: usize,
    /// `info` completions.
    pub info: usize,
    /// Invokes never completed.
    pub pending: usize,
}

/// What the history contains, so the harness can require that the run did real work.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Events (lines) in the history.
    pub events: usize,
    /// Client processes.
    pub processes: usize,
    /// Counts per operation name (every operation, checked or not; `"by_op"` in JSON).
    #[serde(rename = "by_op")]
    pub by_operation: BTreeMap<String, OperationCounts>,
    /// Distinct addresses the address operations touched.
    pub addresses: usize,
    /// Time of the first event.
    pub first_ns: Option<u64>,
    /// Time of the last event.
    pub last_ns: Option<u64>,
    /// Times of every `ok` completion, sorted (not serialized).
    #[serde(skip)]
    pub(crate) ok_times: Vec<u64>,
}

impl Summary {
    /// The number of `ok` completions (of any operation) strictly before `t_ns`: e.g. require
    /// a minimum of successful operations before the first fault was injected.
    ///
    /// Answers 0 on a `Summary` read back from JSON (the times are not serialized).
    pub fn ok_before(&self, t_ns: u64) -> usize {
        self.ok_times.partition_point(|&t| t < t_ns)
    }

    /// Total `ok` completions.
    pub fn ok(&self) -> usize {
        self.by_operation.values().map(|c| c.ok).sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events by {} processes over {} addresses",
            self.events, self.processes, self.addresses
        )?;
        if let (Some(a), Some(b)) = (self.first_ns, self.last_ns) {
            write!(f, ", from {} to {}", format_time(a), format_time(b))?;
        }
        for (name, c) in &self.by_operation {
            write!(
                f,
                "\n  {name}: {} invoked, {} ok, {} fail, {} info, {} pending",
                c.invoke, c.ok, c.fail, c.info, c.pending
            )?;
        }
        Ok(())
    }
}

/// The result of [`check`](crate::check): every violation found, the addresses the search could not decide,
/// and the counts. `Display` is for people, serde for the harness's JSON artefacts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Every violation, grouped by property: well-formedness, (a), (b), (c), (d).
    pub violations: Vec<Violation>,
    /// Addresses whose linearizability search hit
    /// [`Limits::max_steps_per_address`](crate::Limits::max_steps_per_address): neither
    /// proved nor refuted. Treat as a failure to check, not as a pass.
    pub undecided: Vec<IpAddr>,
    /// What the history contains.
    pub summary: Summary,
}

impl Report {
    /// True when nothing was violated and every address was decided.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.undecided.is_empty()
    }

    /// The violations of one property (see [`Violation::property`]).
    pub fn of_property<'a>(
        &'a self,
        property: &'a str,
    ) -> impl Iterator<Item = &'a Violation> + 'a {
        self.violations
            .iter()
            .filter(move |v| v.property() == property)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "passed" } else { "FAILED" };
        writeln!(
            f,
            "history check {verdict}: {} violation(s), {} undecided address(es)",
            self.violations.len(),
            self.undecided.len()
        )?;
        writeln!(f, "{}", self.summary)?;
        for (k, v) in self.violations.iter().enumerate() {
            writeln!(f, "violation {}: {v}", k + 1)?;
        }
        if !self.undecided.is_empty() {
            writeln!(
                f,
                "undecided (the linearizability search hit its step limit): {:?}",
                self.undecided
            )?;
        }
        Ok(())
    }
}
