//! The chaos test's history checker: did the cluster keep its promises under faults?
//!
//! The chaos harness runs a real 3- or 5-node cluster under faults (`kill -9`, pauses,
//! partitions) while concurrent client processes allocate, release and read addresses. It
//! records every operation as JSON lines ([`Event`], parsed by [`parse_history`]) and, after
//! healing, reads every replica's allocations ([`FinalState`]). [`check`] then looks for every
//! violation (not just the first) of:
//!
//! - **(a) no double hold** — no address is held by two owners at once
//!   ([`Violation::DoubleHold`]), and no replica holds one address twice
//!   ([`Violation::DuplicateInFinalState`]);
//! - **(b) durability and agreement** — an acknowledged allocation survives, an acknowledged
//!   release stays released, nothing appears that no allocation could have produced, and all
//!   replicas end identical ([`Violation::LostAllocation`], [`Violation::ReleasedStillPresent`],
//!   [`Violation::UnexpectedHolder`], [`Violation::ReplicasDiffer`],
//!   [`Violation::DigestsDiffer`], [`Violation::NoFinalState`]);
//! - **(c) linearizability** — per address, the history (reads included) is that of one
//!   register `Free | Held(owner)` whose operations each took effect at one instant between
//!   their invoke and their completion ([`Violation::NotLinearizable`]);
//!
//! and counts what happened ([`Summary`], with [`Summary::ok_before`] for "enough successful
//! operations before the first fault"). A history that breaks its own recording contract is
//! reported too ([`Violation::IllFormed`]): a checker that silently skipped such events would
//! vouch for operations it never looked at.
//!
//! # The model
//!
//! Each operation is an invoke and (usually) a completion by the same client process:
//!
//! - `ok`: it took effect exactly once, at an instant in `[invoke, completion]`;
//! - `fail`: it certainly had no effect (it is left out), but an allocate refused because the
//!   requested address was held may carry `held_by`: the address was held by that owner at an
//!   instant in `[invoke, completion]`;
//! - `info` (timeout, connection reset) and an invoke never completed (*pending*): unknown, it
//!   took effect at an instant after its invoke (possibly long after its completion), or
//!   never.
//!
//! Unknown allocations are resolved from the final state: present on a replica means it
//! happened. An unknown allocation of "any address" is attached to the address its owner holds
//! in the final state, else to the first address where a read or a `held_by` showed its owner.
//!
//! The final state is a last read of every address, after every operation: an unknown
//! allocation absent from the final state may still be linearized (it happened, and was then
//! released) but cannot be left holding the address. An address whose final state is already
//! reported under (b) (lost, unexplained, or differing between replicas) is checked under (c)
//! without that last read: one root cause, one report.
//!
//! Not checked: whether a refusal other than `held_by` ("pool full") was justified, and
//! anything about operations other than the three address operations.
//!
//! # What the harness must guarantee when recording
//!
//! - **One clock.** `t_ns` of every event comes from one monotonic clock shared by all client
//!   processes (e.g. `CLOCK_MONOTONIC` minus a start value handed to every client, or a single
//!   recording process): the real-time order between two processes' operations is what (a)
//!   and (c) check against. Take the invoke time *before* sending the request and the
//!   completion time *after* the answer arrived.
//! - **One operation at a time per process**; after an `info`, retire the process and continue
//!   with a new process id (the unknown operation may still take effect).
//! - **Retries are one operation**: one invoke before the first attempt, one completion after
//!   the last; every attempt carries the same request id and owner. Each allocate has an owner
//!   never used by another allocate (a release names the owner of the allocate it undoes).
//! - **Fresh pools**: every address is free when the history starts (or its allocation is in
//!   the history). Pools holding addresses are not deleted during the run.
//! - **Addresses are the identity**: the checker keys everything by IP address, so the pools of
//!   one run must not overlap (two address spaces reusing one subnet would be mixed up).
//! - **The final state is read after quiescence**: all clients stopped, the faults healed, and
//!   every replica has applied the same log (e.g. the same last-applied index on every node,
//!   twice, some seconds apart). It lists the workload's allocations only (no gateway or other
//!   reservations), with their owners as the workload named them.
//! - **One owner per read**: a `who_has` `ok` carries the one owner holding the address, or
//!   `null`; the workload does not use shared reservations (several holders of one address).
//!   A release the allocator refuses (held by another host) is recorded as `fail`.
//! - **Write whole lines**: one JSON object per line, each written with a single `write`; a line
//!   cut short by a crash of the writer can only be the last one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The default bound on the linearizability search of one address, in search steps.
///
/// A step looks at one operation at one point of the search. One address with 20,000
/// operations from 10 concurrent clients stays under it (about 0.2 s in release mode);
/// the bound is there so that an adversarial history makes the address
/// [`Report::undecided`] instead of hanging the test. Reaching it takes tens of milliseconds,
/// and memory for at most one memoized configuration per step (each about as large as the
/// number of operations in flight at once).
pub const DEFAULT_MAX_STEPS_PER_ADDRESS: u64 = 1_000_000;

/// How many pairs, entries or operations one violation lists before it only counts the rest.
const LISTED: usize = 16;

// ============================================================================================
// The record format
// ============================================================================================

/// The `type` of a record: an operation's invoke, or one of its three possible completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// The client is about to send the request (record it before sending).
    Invoke,
    /// The operation took effect; the value carries its result.
    Ok,
    /// The operation certainly did not take effect (the allocator refused it).
    Fail,
    /// Unknown outcome (timeout, connection reset): it may take effect at any time after its
    /// invoke, or never. The process must not be used again.
    Info,
}

/// The `op` of a record. Only `allocate`, `release` and `who_has` are checked; every other
/// operation name (`heartbeat`, `report`, `pool_create`, ...) is kept and counted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Op {
    /// Allocate an address to an owner. Invoke value: `{pool, addr, owner}` with `addr` the
    /// requested address or `null` for any free one. `ok` value: `addr` is the address granted.
    /// A `fail` may carry `{"held_by": OWNER}` when the requested address was held by another.
    Allocate,
    /// Release an owner's address. Value `{pool, addr, owner}`. Releasing an address that owner
    /// does not hold is a no-op that still answers `ok`.
    Release,
    /// Read who holds an address, linearizably. Invoke value `{addr}`; `ok` value
    /// `{addr, owner}` with `owner` null when the address is free.
    WhoHas,
    /// Any other operation, by its name: counted, not checked.
    Other(String),
}

impl Op {
    /// The name used in the history's `op` field.
    pub fn as_str(&self) -> &str {
        match self {
            Op::Allocate => "allocate",
            Op::Release => "release",
            Op::WhoHas => "who_has",
            Op::Other(name) => name,
        }
    }

    fn is_address_op(&self) -> bool {
        matches!(self, Op::Allocate | Op::Release | Op::WhoHas)
    }
}

impl From<String> for Op {
    fn from(name: String) -> Op {
        match name.as_str() {
            "allocate" => Op::Allocate,
            "release" => Op::Release,
            "who_has" => Op::WhoHas,
            _ => Op::Other(name),
        }
    }
}

impl From<Op> for String {
    fn from(op: Op) -> String {
        match op {
            Op::Other(name) => name,
            known => known.as_str().to_owned(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the history: an operation's invoke or completion, by one client process.
///
/// ```json
/// {"process":3,"type":"invoke","op":"allocate","value":{"pool":"global/10.0.0.0/16","addr":null,"owner":"h1/p3-17"},"node":2,"t_ns":123456}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The client process. It runs one operation at a time (invoke, then its completion) and
    /// retires after an `info`.
    pub process: u64,
    /// Invoke or completion (`"type"` in JSON).
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The operation.
    pub op: Op,
    /// Its arguments (invoke) or result (completion); for address operations the fields of
    /// [`AddrValue`], for other operations anything.
    #[serde(default)]
    pub value: serde_json::Value,
    /// The node the client talked to, if known.
    #[serde(default)]
    pub node: Option<u64>,
    /// Monotonic nanoseconds since the start of the run, from one clock shared by every process.
    pub t_ns: u64,
}

impl Event {
    /// The value of an address operation as its typed fields.
    ///
    /// # Errors
    ///
    /// When the value is not a JSON object, or a field has the wrong type.
    pub fn addr_value(&self) -> Result<AddrValue, String> {
        if !self.value.is_object() {
            return Err(format!("value must be a JSON object, found {}", self.value));
        }
        AddrValue::deserialize(&self.value).map_err(|e| e.to_string())
    }
}

/// The value of an `allocate`, `release` or `who_has` record (unknown fields are ignored).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrValue {
    /// The pool (`space/subnet[/range]`); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The address: requested (allocate invoke; `null` = any), granted (allocate `ok`),
    /// released, or read.
    #[serde(default)]
    pub addr: Option<IpAddr>,
    /// The owner allocating or releasing; for a `who_has` `ok`, the owner read (`null` = free).
    #[serde(default)]
    pub owner: Option<String>,
    /// On an allocate `fail`: the owner that held the requested address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

impl From<AddrValue> for serde_json::Value {
    fn from(v: AddrValue) -> serde_json::Value {
        use serde_json::Value;
        let mut m = serde_json::Map::new();
        if let Some(pool) = v.pool {
            m.insert("pool".into(), Value::String(pool));
        }
        m.insert(
            "addr".into(),
            v.addr.map_or(Value::Null, |a| Value::String(a.to_string())),
        );
        m.insert("owner".into(), v.owner.map_or(Value::Null, Value::String));
        if let Some(holder) = v.held_by {
            m.insert("held_by".into(), Value::String(holder));
        }
        Value::Object(m)
    }
}

/// A parsed history file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The events, in file order; a report's event index (`#12`) is a position in this list.
    pub events: Vec<Event>,
    /// The 1-based line number of each event (blank lines are skipped, so they can differ).
    pub lines: Vec<usize>,
    /// Set when the last line was cut short (a writer killed mid-line) and has been dropped.
    pub truncated_last_line: Option<TruncatedLine>,
}

/// A history reads as its events: `check(&history, &final_state)`.
impl std::ops::Deref for History {
    type Target = [Event];

    fn deref(&self) -> &[Event] {
        &self.events
    }
}

/// A last line that did not parse and had no final newline: a crashed writer's partial write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruncatedLine {
    /// Its 1-based line number.
    pub line: usize,
    /// Its beginning.
    pub excerpt: String,
    /// Why it did not parse.
    pub error: String,
}

/// A history line that is not a valid [`Event`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("history line {line}: {message} (line: {excerpt})")]
pub struct ParseError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
    /// The line's beginning.
    pub excerpt: String,
}

/// Parses a JSON-lines history: one [`Event`] per line, blank lines ignored.
///
/// A malformed line is an error naming its line number, except the last line when the text
/// does not end with a newline: that is a writer killed mid-line, dropped and reported in
/// [`History::truncated_last_line`].
///
/// # Errors
///
/// A [`ParseError`] naming the first malformed line (other than a truncated last one).
pub fn parse_history(text: &str) -> Result<History, ParseError> {
    let unterminated = !text.trim_end_matches([' ', '\t', '\r']).ends_with('\n');
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let mut history = History {
        events: Vec::with_capacity(lines.len()),
        lines: Vec::with_capacity(lines.len()),
        truncated_last_line: None,
    };
    for (k, &(line, l)) in lines.iter().enumerate() {
        match serde_json::from_str::<Event>(l) {
            Ok(event) => {
                history.events.push(event);
                history.lines.push(line);
            }
            Err(e) if k + 1 == lines.len() && unterminated => {
                history.truncated_last_line = Some(TruncatedLine {
                    line,
                    excerpt: excerpt(l),
                    error: e.to_string(),
                });
            }
            Err(e) => {
                return Err(ParseError {
                    line,
                    message: e.to_string(),
                    excerpt: excerpt(l),
                });
            }
        }
    }
    Ok(history)
}

fn excerpt(line: &str) -> String {
    const MAX: usize = 160;
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    }
}

/// What every replica holds after the run, read after healing and quiescence.
///
/// ```json
/// {"replicas": {"1": [["10.0.0.5", "h1/p3-17"]], "2": [["10.0.0.5", "h1/p3-17"]]},
///  "digests": {"1": "9f2c...", "2": "9f2c..."}}
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    /// Per node id, every `(address, owner)` it holds (the workload's allocations only).
    pub replicas: BTreeMap<u64, Vec<(IpAddr, String)>>,
    /// Per node id, a digest of its state snapshot, when the harness took them; all must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<u64, String>,
}

// ============================================================================================
// The report
// ============================================================================================

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Took effect, within its interval.
    Ok,
    /// Certainly had no effect.
    Fail,
    /// Unknown: may take effect at any time after its invoke, or never.
    Info,
    /// Invoked but never completed in the history (the client died or the run stopped): the
    /// same as `info`.
    Pending,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
            Outcome::Pending => "pending",
        })
    }
}

/// One operation of the history (an invoke and its completion), as a violation cites it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The operation.
    pub op: Op,
    /// How it ended.
    pub outcome: Outcome,
    /// The client process.
    pub process: u64,
    /// Index of its invoke in the history (0-based; see [`History::lines`] for line numbers).
    pub invoke_index: usize,
    /// Index of its completion, if any.
    pub completion_index: Option<usize>,
    /// Time of its invoke.
    pub invoke_ns: u64,
    /// Time of its completion, if any.
    pub completion_ns: Option<u64>,
    /// The node the client talked to (the completion's, else the invoke's).
    pub node: Option<u64>,
    /// The pool named in the invoke.
    pub pool: Option<String>,
    /// The address: granted (allocate `ok`), requested (other allocates; `None` = any),
    /// released, or read.
    pub addr: Option<IpAddr>,
    /// True when `addr` of an unknown allocate of any address was inferred: from the final
    /// state, or from a read or `held_by` naming its owner.
    #[serde(default, skip_serializing_if = "is_false")]
    pub addr_inferred: bool,
    /// Allocate and release: the owner. `who_has` `ok`: the owner read (`None` = free).
    pub owner: Option<String>,
    /// An allocate `fail`'s `held_by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p{} {} {} [#{} @{}",
            self.process,
            self.op,
            self.outcome,
            self.invoke_index,
            ns(self.invoke_ns)
        )?;
        match (self.completion_index, self.completion_ns) {
            (Some(i), Some(t)) => write!(f, ", #{i} @{}]", ns(t))?,
            _ => f.write_str(", no completion]")?,
        }
        if let Some(node) = self.node {
            write!(f, " node {node}")?;
        }
        match self.addr {
            Some(a) => write!(
                f,
                " {a}{}",
                if self.addr_inferred {
                    " (inferred)"
                } else {
                    ""
                }
            )?,
            None if self.op == Op::Allocate => f.write_str(" any address")?,
            None => {}
        }
        match (&self.op, self.outcome, &self.owner) {
            (Op::WhoHas, Outcome::Ok, owner) => {
                write!(f, " -> {}", owner.as_deref().unwrap_or("free"))?
            }
            (_, _, Some(owner)) => write!(f, " owner {owner}")?,
            _ => {}
        }
        if let Some(holder) = &self.held_by {
            write!(f, " held_by {holder}")?;
        }
        Ok(())
    }
}

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
        /// Every operation on the address, by invoke time.
        ops: Vec<Operation>,
    },
}

impl Violation {
    /// The property broken: `well_formed`, `no_double_hold`, `durability` or `linearizable`.
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
            | Violation::NotLinearizable { addr, .. } => Some(*addr),
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
                    event.op,
                    type_name(event.kind),
                    ns(event.t_ns)
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
                ops,
            } => {
                write!(
                    f,
                    "{addr}: the {} operations on it are not linearizable ({final_read})",
                    ops.len()
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
                for o in ops {
                    write!(f, "\n      {o}")?;
                }
                Ok(())
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

fn type_name(kind: EventType) -> &'static str {
    match kind {
        EventType::Invoke => "invoke",
        EventType::Ok => "ok",
        EventType::Fail => "fail",
        EventType::Info => "info",
    }
}

/// Seconds with microseconds, for people.
fn ns(t: u64) -> String {
    format!("{}.{:06}s", t / 1_000_000_000, (t % 1_000_000_000) / 1_000)
}

/// Counts of one operation kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
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
    /// Counts per operation name (every operation, checked or not).
    pub by_op: BTreeMap<String, OpCounts>,
    /// Distinct addresses the address operations touched.
    pub addresses: usize,
    /// Time of the first event.
    pub first_ns: Option<u64>,
    /// Time of the last event.
    pub last_ns: Option<u64>,
    /// Times of every `ok` completion, sorted (not serialized).
    #[serde(skip)]
    ok_times: Vec<u64>,
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
        self.by_op.values().map(|c| c.ok).sum()
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
            write!(f, ", from {} to {}", ns(a), ns(b))?;
        }
        for (op, c) in &self.by_op {
            write!(
                f,
                "\n  {op}: {} invoked, {} ok, {} fail, {} info, {} pending",
                c.invoke, c.ok, c.fail, c.info, c.pending
            )?;
        }
        Ok(())
    }
}

/// The result of [`check`]: every violation found, the addresses the search could not decide,
/// and the counts. `Display` is for people, serde for the harness's JSON artefacts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Every violation, grouped by property: well-formedness, (a), (b), (c).
    pub violations: Vec<Violation>,
    /// Addresses whose linearizability search hit [`Limits::max_steps_per_address`]: neither
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

/// Bounds on the checker's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Search steps allowed per address before it is reported undecided
    /// (default [`DEFAULT_MAX_STEPS_PER_ADDRESS`]).
    pub max_steps_per_address: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_steps_per_address: DEFAULT_MAX_STEPS_PER_ADDRESS,
        }
    }
}

// ============================================================================================
// The checker
// ============================================================================================

/// Checks a history against the final state with the default [`Limits`]; see the module
/// documentation for the properties and the model.
#[must_use]
pub fn check(history: &[Event], final_state: &FinalState) -> Report {
    check_with(history, final_state, &Limits::default())
}

/// [`check`] with explicit limits.
#[must_use]
pub fn check_with(history: &[Event], final_state: &FinalState, limits: &Limits) -> Report {
    let mut owners = Owners::default();
    let mut violations = Vec::new();
    let mut recs = pair(history, &mut owners, &mut violations);
    let alloc_of = unique_owners(history, &mut recs, &mut violations);
    let fin = FinalView::new(final_state, &mut owners);
    resolve_addresses(&mut recs, &fin);

    let mut by_addr: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
    for (k, r) in recs.iter().enumerate() {
        if let (true, Some(a)) = (r.usable && r.op.op.is_address_op(), r.op.addr) {
            by_addr.entry(a).or_default().push(k);
        }
    }
    let ctx = Ctx {
        recs: &recs,
        owners: &owners,
        fin: &fin,
        alloc_of: &alloc_of,
    };

    // (a)
    for (&addr, ks) in &by_addr {
        ctx.double_holds(addr, ks, &mut violations);
    }
    for (&node, entries) in &final_state.replicas {
        let mut at: BTreeMap<IpAddr, Vec<&str>> = BTreeMap::new();
        for (a, o) in entries {
            at.entry(*a).or_default().push(o);
        }
        for (addr, os) in at {
            if os.len() > 1 {
                let owners = os.into_iter().map(str::to_owned).collect();
                violations.push(Violation::DuplicateInFinalState { node, addr, owners });
            }
        }
    }

    // (b)
    let flagged = ctx.durability(final_state, &mut violations);

    // (c)
    let mut undecided = Vec::new();
    for (&addr, ks) in &by_addr {
        let final_owner = if flagged.contains(&addr) {
            None
        } else {
            fin.final_owner(addr)
        };
        match ctx.linearizable(addr, ks, final_owner, limits.max_steps_per_address) {
            Ok(()) => {}
            Err(None) => undecided.push(addr),
            Err(Some(v)) => violations.push(*v),
        }
    }

    let summary = summarize(history, &recs, by_addr.len());
    Report {
        violations,
        undecided,
        summary,
    }
}

/// Owner names interned as small integers.
#[derive(Default)]
struct Owners {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Owners {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(name.to_owned(), id);
        self.names.push(name.to_owned());
        id
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }
}

/// An operation with what the checks need.
struct Rec {
    op: Operation,
    /// False when the operation broke the recording contract: reported, then left out.
    usable: bool,
    /// Allocate and release: the owner.
    owner: Option<u32>,
    /// `who_has` `ok`: the owner read (`None` = free).
    read: Option<u32>,
    /// Allocate `fail`: the holder reported (only with a requested address).
    held_by: Option<u32>,
    /// Allocate: the address requested at invoke.
    requested: Option<IpAddr>,
}

impl Rec {
    /// Time by which it certainly took effect, if it did: its completion if `ok`, else never.
    fn end(&self) -> u64 {
        match (self.op.outcome, self.op.completion_ns) {
            (Outcome::Ok | Outcome::Fail, Some(t)) => t,
            _ => u64::MAX,
        }
    }

    fn unknown(&self) -> bool {
        matches!(self.op.outcome, Outcome::Info | Outcome::Pending)
    }
}

fn ill(out: &mut Vec<Violation>, history: &[Event], index: usize, problem: String) {
    out.push(Violation::IllFormed {
        index,
        event: history[index].clone(),
        problem,
    });
}

/// Pairs invokes with completions per process, and types the values of address operations.
fn pair(history: &[Event], owners: &mut Owners, out: &mut Vec<Violation>) -> Vec<Rec> {
    let mut recs: Vec<Rec> = Vec::with_capacity(history.len() / 2 + 1);
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut retired: HashMap<u64, usize> = HashMap::new();
    let mut last_done: HashMap<u64, (usize, u64)> = HashMap::new();
    for (i, e) in history.iter().enumerate() {
        if e.kind == EventType::Invoke {
            if let Some(prev) = open.remove(&e.process) {
                let p = recs[prev].op.invoke_index;
                let problem = format!(
                    "process {} invoked again while its operation invoked at #{p} had no \
                     completion (that one is treated as pending); a process runs one operation \
                     at a time",
                    e.process
                );
                ill(out, history, i, problem);
            }
            if let Some(&j) = retired.get(&e.process) {
                let problem = format!(
                    "process {} had an unknown outcome (info at #{j}) and must be retired; \
                     continue with a new process id",
                    e.process
                );
                ill(out, history, i, problem);
            }
            if let Some(&(j, t)) = last_done.get(&e.process) {
                if e.t_ns < t {
                    let problem = format!(
                        "invoke at {} is before this process's previous completion \
                         (#{j} at {}): t_ns must come from one monotonic clock",
                        ns(e.t_ns),
                        ns(t)
                    );
                    ill(out, history, i, problem);
                }
            }
            let mut rec = Rec {
                op: Operation {
                    op: e.op.clone(),
                    outcome: Outcome::Pending,
                    process: e.process,
                    invoke_index: i,
                    completion_index: None,
                    invoke_ns: e.t_ns,
                    completion_ns: None,
                    node: e.node,
                    pool: None,
                    addr: None,
                    addr_inferred: false,
                    owner: None,
                    held_by: None,
                },
                usable: true,
                owner: None,
                read: None,
                held_by: None,
                requested: None,
            };
            if e.op.is_address_op() {
                if let Err(problem) = type_invoke(e, &mut rec, owners) {
                    ill(out, history, i, format!("{} invoke: {problem}", e.op));
                    rec.usable = false;
                }
            }
            open.insert(e.process, recs.len());
            recs.push(rec);
            continue;
        }
        let Some(k) = open.remove(&e.process) else {
            let why = match retired.get(&e.process) {
                Some(j) => format!(" (the process already ended with an info at #{j})"),
                None => String::new(),
            };
            ill(
                out,
                history,
                i,
                format!(
                    "a completion with no open invoke in process {}{why}: was the invoke recorded?",
                    e.process
                ),
            );
            continue;
        };
        let rec = &mut recs[k];
        rec.op.completion_index = Some(i);
        rec.op.completion_ns = Some(e.t_ns);
        rec.op.outcome = match e.kind {
            EventType::Ok => Outcome::Ok,
            EventType::Fail => Outcome::Fail,
            _ => Outcome::Info,
        };
        if e.node.is_some() {
            rec.op.node = e.node;
        }
        if rec.op.op != e.op {
            ill(
                out,
                history,
                i,
                format!(
                    "completes a {} but the open invoke #{} is a {}",
                    e.op, rec.op.invoke_index, rec.op.op
                ),
            );
            rec.usable = false;
        } else if e.t_ns < rec.op.invoke_ns {
            let problem = format!(
                "completion at {} precedes its invoke #{} at {}: t_ns must come from one \
                 monotonic clock",
                ns(e.t_ns),
                rec.op.invoke_index,
                ns(rec.op.invoke_ns)
            );
            ill(out, history, i, problem);
            rec.usable = false;
        } else if rec.usable {
            if let Err(problem) = type_completion(e, rec, owners) {
                ill(
                    out,
                    history,
                    i,
                    format!("{} {}: {problem}", e.op, type_name(e.kind)),
                );
                rec.usable = false;
            }
        }
        last_done.insert(e.process, (i, e.t_ns));
        if e.kind == EventType::Info {
            retired.insert(e.process, i);
        }
    }
    recs
}

fn type_invoke(e: &Event, rec: &mut Rec, owners: &mut Owners) -> Result<(), String> {
    let v = e.addr_value()?;
    rec.op.pool = v.pool;
    match e.op {
        Op::Allocate => {
            let owner = v.owner.ok_or("no owner")?;
            rec.owner = Some(owners.id(&owner));
            rec.op.owner = Some(owner);
            rec.requested = v.addr;
            rec.op.addr = v.addr;
        }
        Op::Release => {
            let owner = v.owner.ok_or("no owner")?;
            rec.op.addr = Some(v.addr.ok_or("no addr")?);
            rec.owner = Some(owners.id(&owner));
            rec.op.owner = Some(owner);
        }
        _ => rec.op.addr = Some(v.addr.ok_or("no addr")?),
    }
    Ok(())
}

fn type_completion(e: &Event, rec: &mut Rec, owners: &mut Owners) -> Result<(), String> {
    match (&e.op, e.kind) {
        (Op::Allocate, EventType::Ok) => {
            let v = e.addr_value()?;
            let granted = v
                .addr
                .ok_or("no addr: an ok allocate must carry the address granted")?;
            if let (Some(o), Some(mine)) = (&v.owner, &rec.op.owner) {
                if o != mine {
                    return Err(format!("owner {o} differs from the invoke's {mine}"));
                }
            }
            if let Some(r) = rec.requested {
                if r != granted {
                    return Err(format!(
                        "requested {r} but was granted {granted}: the allocator must grant \
                         the requested address or refuse"
                    ));
                }
            }
            rec.op.addr = Some(granted);
        }
        (Op::Allocate, EventType::Fail) => {
            // `held_by` is only meaningful for a requested address; a malformed fail value is
            // not an error (the operation had no effect).
            if let (Some(_), Ok(v)) = (rec.requested, e.addr_value()) {
                if let Some(h) = v.held_by {
                    rec.held_by = Some(owners.id(&h));
                    rec.op.held_by = Some(h);
                }
            }
        }
        (Op::WhoHas, EventType::Ok) => {
            let v = e.addr_value()?;
            if e.value.get("owner").is_none() {
                return Err(
                    "no owner field: an ok who_has carries the owner read, or null when free"
                        .into(),
                );
            }
            if let (Some(a), Some(mine)) = (v.addr, rec.op.addr) {
                if a != mine {
                    return Err(format!("answers for {a} but the invoke asked for {mine}"));
                }
            }
            rec.read = v.owner.as_deref().map(|o| owners.id(o));
            rec.op.owner = v.owner;
        }
        _ => {}
    }
    Ok(())
}

/// Each owner names one allocate: reports reuse, and maps owner → its (first) allocate.
fn unique_owners(
    history: &[Event],
    recs: &mut [Rec],
    out: &mut Vec<Violation>,
) -> HashMap<u32, usize> {
    let mut alloc_of: HashMap<u32, usize> = HashMap::new();
    for k in 0..recs.len() {
        let r = &recs[k];
        let (Op::Allocate, Some(o)) = (&r.op.op, r.owner) else {
            continue;
        };
        let Some(&j) = alloc_of.get(&o) else {
            alloc_of.insert(o, k);
            continue;
        };
        if r.usable {
            let first = recs[j].op.invoke_index;
            let problem = format!(
                "owner {} was already used by the allocate invoked at #{first}: every allocate \
                 needs a fresh owner (a retry is recorded as one operation)",
                r.op.owner.as_deref().unwrap_or("")
            );
            ill(out, history, r.op.invoke_index, problem);
            recs[k].usable = false;
        }
    }
    alloc_of
}

/// The final state, indexed.
struct FinalView {
    nodes: Vec<u64>,
    /// `(address, owner)` → the replicas holding it.
    present: HashMap<(IpAddr, u32), Vec<u64>>,
    /// Address → per replica, the owners it lists (only addresses some replica holds).
    at: HashMap<IpAddr, BTreeMap<u64, Vec<u32>>>,
    /// Owner → the addresses it holds on some replica.
    owner_addrs: HashMap<u32, BTreeSet<IpAddr>>,
}

impl FinalView {
    fn new(state: &FinalState, owners: &mut Owners) -> FinalView {
        let mut v = FinalView {
            nodes: state.replicas.keys().copied().collect(),
            present: HashMap::new(),
            at: HashMap::new(),
            owner_addrs: HashMap::new(),
        };
        for (&node, entries) in &state.replicas {
            for (a, o) in entries {
                let o = owners.id(o);
                let nodes = v.present.entry((*a, o)).or_default();
                if nodes.last() != Some(&node) {
                    nodes.push(node);
                }
                v.at.entry(*a).or_default().entry(node).or_default().push(o);
                v.owner_addrs.entry(o).or_default().insert(*a);
            }
        }
        v
    }

    fn holding(&self, addr: IpAddr, owner: u32) -> &[u64] {
        self.present.get(&(addr, owner)).map_or(&[], Vec::as_slice)
    }

    /// What every replica agrees the address ends as (`Some(None)`: free everywhere), or
    /// `None` when there are no replicas or they disagree or hold it twice.
    fn final_owner(&self, addr: IpAddr) -> Option<Option<u32>> {
        if self.nodes.is_empty() {
            return None;
        }
        let Some(per_node) = self.at.get(&addr) else {
            return Some(None);
        };
        let first = per_node.values().next()?;
        let agreed = per_node.len() == self.nodes.len()
            && first.len() == 1
            && per_node.values().all(|os| os == first);
        agreed.then_some(Some(first[0]))
    }

    fn owner_on(&self, addr: IpAddr, node: u64) -> Option<u32> {
        self.at.get(&addr)?.get(&node)?.first().copied()
    }
}

/// Attaches each unknown allocate of "any address" to the address its owner was seen at.
fn resolve_addresses(recs: &mut [Rec], fin: &FinalView) {
    let mut seen: HashMap<u32, (u64, IpAddr)> = HashMap::new();
    for r in recs.iter().filter(|r| r.usable) {
        let (Some(addr), Some(o)) = (r.op.addr, r.read.or(r.held_by)) else {
            continue;
        };
        let t = r.op.completion_ns.unwrap_or(r.op.invoke_ns);
        let e = seen.entry(o).or_insert((t, addr));
        if t < e.0 {
            *e = (t, addr);
        }
    }
    for r in recs.iter_mut() {
        if !(r.usable && r.op.op == Op::Allocate && r.op.addr.is_none() && r.unknown()) {
            continue;
        }
        let Some(o) = r.owner else { continue };
        let found = fin
            .owner_addrs
            .get(&o)
            .and_then(|s| s.iter().next().copied())
            .or_else(|| seen.get(&o).map(|&(_, a)| a));
        if found.is_some() {
            r.op.addr = found;
            r.op.addr_inferred = true;
        }
    }
}

struct Ctx<'a> {
    recs: &'a [Rec],
    owners: &'a Owners,
    fin: &'a FinalView,
    alloc_of: &'a HashMap<u32, usize>,
}

impl Ctx<'_> {
    fn name(&self, id: u32) -> String {
        self.owners.name(id).to_owned()
    }

    /// (a) on one address.
    fn double_holds(&self, addr: IpAddr, ks: &[usize], out: &mut Vec<Violation>) {
        let recs = self.recs;
        let holds: Vec<usize> = ks
            .iter()
            .copied()
            .filter(|&k| {
                let r = &recs[k];
                r.op.op == Op::Allocate
                    && match r.op.outcome {
                        Outcome::Ok => true,
                        Outcome::Info | Outcome::Pending => r
                            .owner
                            .is_some_and(|o| !self.fin.holding(addr, o).is_empty()),
                        Outcome::Fail => false,
                    }
            })
            .collect();
        if holds.len() < 2 {
            return;
        }
        let mut releases: HashMap<u32, Vec<usize>> = HashMap::new();
        for &k in ks {
            let r = &recs[k];
            if r.op.op == Op::Release && r.op.outcome != Outcome::Fail {
                if let Some(o) = r.owner {
                    releases.entry(o).or_default().push(k);
                }
            }
        }
        // For each hold: its earliest release that may follow the allocate's invoke.
        let free_by: Vec<(u64, Option<usize>)> = holds
            .iter()
            .map(|&h| {
                let inv = recs[h].op.invoke_ns;
                let rels = recs[h]
                    .owner
                    .and_then(|o| releases.get(&o))
                    .map_or(&[][..], Vec::as_slice);
                rels.iter()
                    .filter(|&&r| recs[r].end() > inv)
                    .map(|&r| (recs[r].op.invoke_ns, Some(r)))
                    .min()
                    .unwrap_or((u64::MAX, None))
            })
            .collect();
        // Hold i may come first iff its allocate was invoked, and a release of it invoked,
        // before hold j's allocate completed.
        let precedes = |i: usize, j: usize| {
            let end_j = recs[holds[j]].end();
            recs[holds[i]].op.invoke_ns < end_j && free_by[i].0 < end_j
        };
        let mut pairs = Vec::new();
        let mut total = 0;
        for i in 0..holds.len() {
            for j in i + 1..holds.len() {
                if recs[holds[i]].owner == recs[holds[j]].owner || precedes(i, j) || precedes(j, i)
                {
                    continue;
                }
                total += 1;
                if pairs.len() < LISTED {
                    let (a, b) = if recs[holds[i]].op.invoke_ns <= recs[holds[j]].op.invoke_ns {
                        (i, j)
                    } else {
                        (j, i)
                    };
                    let hold = |x: usize| Hold {
                        owner: recs[holds[x]].op.owner.clone().unwrap_or_default(),
                        allocate: recs[holds[x]].op.clone(),
                        release: free_by[x].1.map(|r| recs[r].op.clone()),
                        in_final_state: recs[holds[x]]
                            .owner
                            .map_or(Vec::new(), |o| self.fin.holding(addr, o).to_vec()),
                    };
                    pairs.push(HoldPair {
                        first: hold(a),
                        second: hold(b),
                    });
                }
            }
        }
        if total > 0 {
            out.push(Violation::DoubleHold {
                addr,
                pairs,
                total_pairs: total,
            });
        }
    }

    /// (b): returns the addresses with a durability or agreement violation, whose final state
    /// is then not used by (c) (one root cause, one report).
    fn durability(&self, state: &FinalState, out: &mut Vec<Violation>) -> HashSet<IpAddr> {
        let mut flagged = HashSet::new();
        if state.replicas.is_empty() {
            out.push(Violation::NoFinalState);
            return flagged;
        }
        // Agreement.
        for entries in state.replicas.values() {
            let mut by_addr: HashMap<IpAddr, usize> = HashMap::new();
            for (a, _) in entries {
                *by_addr.entry(*a).or_default() += 1;
            }
            flagged.extend(by_addr.into_iter().filter(|&(_, n)| n > 1).map(|(a, _)| a));
        }
        let sorted: BTreeMap<u64, Vec<(IpAddr, &str)>> = state
            .replicas
            .iter()
            .map(|(&n, es)| {
                let mut v: Vec<(IpAddr, &str)> = es.iter().map(|(a, o)| (*a, o.as_str())).collect();
                v.sort_unstable();
                (n, v)
            })
            .collect();
        let mut it = sorted.iter();
        if let Some((&reference, base)) = it.next() {
            for (&node, other) in it {
                let (only_ref, only_node) = diff(base, other);
                if only_ref.is_empty() && only_node.is_empty() {
                    continue;
                }
                flagged.extend(only_ref.iter().chain(&only_node).map(|e| e.0));
                let differences = only_ref.len() + only_node.len();
                let own = |v: Vec<(IpAddr, &str)>| {
                    v.into_iter()
                        .take(LISTED)
                        .map(|(a, o)| (a, o.to_owned()))
                        .collect()
                };
                out.push(Violation::ReplicasDiffer {
                    reference,
                    node,
                    only_on_reference: own(only_ref),
                    only_on_node: own(only_node),
                    differences,
                });
            }
        }
        if state.digests.values().collect::<BTreeSet<_>>().len() > 1 {
            out.push(Violation::DigestsDiffer {
                digests: state.digests.iter().map(|(n, d)| (*n, d.clone())).collect(),
            });
        }

        // Acknowledged allocations survive; acknowledged releases stick.
        let recs = self.recs;
        let mut released: HashSet<(IpAddr, u32)> = HashSet::new();
        for r in recs
            .iter()
            .filter(|r| r.usable && r.op.op == Op::Release && r.op.outcome != Outcome::Fail)
        {
            if let (Some(a), Some(o)) = (r.op.addr, r.owner) {
                released.insert((a, o));
            }
        }
        for r in recs
            .iter()
            .filter(|r| r.usable && r.op.outcome == Outcome::Ok)
        {
            let (Some(addr), Some(o)) = (r.op.addr, r.owner) else {
                continue;
            };
            match r.op.op {
                Op::Allocate if !released.contains(&(addr, o)) => {
                    let holding = self.fin.holding(addr, o);
                    let missing_on: Vec<(u64, Option<String>)> = self
                        .fin
                        .nodes
                        .iter()
                        .filter(|n| !holding.contains(n))
                        .map(|&n| (n, self.fin.owner_on(addr, n).map(|x| self.name(x))))
                        .collect();
                    if !missing_on.is_empty() {
                        flagged.insert(addr);
                        out.push(Violation::LostAllocation {
                            addr,
                            owner: self.name(o),
                            allocate: Box::new(r.op.clone()),
                            missing_on,
                        });
                    }
                }
                Op::Release => {
                    let present_on = self.fin.holding(addr, o);
                    if present_on.is_empty() {
                        continue;
                    }
                    // An allocation of that owner that may have taken effect after the release
                    // explains it.
                    let may_follow = self.alloc_of.get(&o).map(|&k| &recs[k]).is_some_and(|a| {
                        a.usable
                            && match a.op.outcome {
                                Outcome::Info | Outcome::Pending => {
                                    a.op.addr.is_none_or(|x| x == addr)
                                }
                                Outcome::Ok => a.op.addr == Some(addr) && a.end() > r.op.invoke_ns,
                                Outcome::Fail => false,
                            }
                    });
                    if !may_follow {
                        flagged.insert(addr);
                        out.push(Violation::ReleasedStillPresent {
                            addr,
                            owner: self.name(o),
                            release: Box::new(r.op.clone()),
                            present_on: present_on.to_vec(),
                        });
                    }
                }
                _ => {}
            }
        }

        // Nothing appears that no allocation explains.
        let mut entries: Vec<(&(IpAddr, u32), &Vec<u64>)> = self.fin.present.iter().collect();
        entries.sort_unstable_by(|x, y| {
            (x.0 .0, self.owners.name(x.0 .1)).cmp(&(y.0 .0, self.owners.name(y.0 .1)))
        });
        for (&(addr, o), nodes) in entries {
            let alloc = self.alloc_of.get(&o).map(|&k| &recs[k]);
            let reason = match alloc {
                None => Some("no allocate in the history used this owner".to_owned()),
                Some(a) if !a.usable => None, // already reported as ill-formed
                Some(a) if a.op.outcome == Outcome::Fail => {
                    Some("its allocate failed, so it had no effect".to_owned())
                }
                Some(a) => match a.op.addr {
                    Some(x) if x == addr => None,
                    Some(x) if a.op.addr_inferred => Some(format!(
                        "the same owner also holds {x}; one allocate holds one address"
                    )),
                    Some(x) if a.op.outcome == Outcome::Ok => {
                        Some(format!("its allocate was granted {x}"))
                    }
                    Some(x) => Some(format!("its allocate requested {x}")),
                    None => Some("its allocate has no address".to_owned()),
                },
            };
            if let Some(reason) = reason {
                flagged.insert(addr);
                let allocate = alloc.map(|a| Box::new(a.op.clone()));
                out.push(Violation::UnexpectedHolder {
                    addr,
                    owner: self.name(o),
                    nodes: nodes.clone(),
                    reason,
                    allocate,
                });
            }
        }
        flagged
    }

    /// (c) on one address: `Err(None)` when undecided.
    fn linearizable(
        &self,
        addr: IpAddr,
        ks: &[usize],
        final_owner: Option<Option<u32>>,
        max_steps: u64,
    ) -> Result<(), Option<Box<Violation>>> {
        let recs = self.recs;
        let mut ks = ks.to_vec();
        ks.sort_by_key(|&k| (recs[k].op.invoke_ns, recs[k].op.invoke_index));
        let mut ops: Vec<ROp> = Vec::with_capacity(ks.len() + 1);
        for &k in &ks {
            let r = &recs[k];
            let call = r.op.invoke_ns;
            let ret = r.op.completion_ns.unwrap_or(call);
            let (kind, mandatory, ret) = match (&r.op.op, r.op.outcome, r.owner) {
                (Op::Allocate, Outcome::Ok, Some(o)) => (RKind::Alloc(o), true, ret),
                (Op::Allocate, Outcome::Info | Outcome::Pending, Some(o)) => {
                    if self.fin.holding(addr, o).is_empty() {
                        (RKind::Alloc(o), false, T_OPTIONAL)
                    } else {
                        (RKind::Alloc(o), true, T_BEFORE_FINAL)
                    }
                }
                (Op::Allocate, Outcome::Fail, _) => match r.held_by {
                    Some(h) if r.requested == Some(addr) => (RKind::HeldBy(h), true, ret),
                    _ => continue,
                },
                (Op::Release, Outcome::Ok, Some(o)) => (RKind::Release(o), true, ret),
                (Op::Release, Outcome::Info | Outcome::Pending, Some(o)) => {
                    (RKind::Release(o), false, T_OPTIONAL)
                }
                (Op::WhoHas, Outcome::Ok, _) => (RKind::Read(r.read.unwrap_or(FREE)), true, ret),
                _ => continue,
            };
            ops.push(ROp {
                kind,
                call,
                ret,
                mandatory,
                rec: Some(k),
            });
        }
        if let Some(f) = final_owner {
            ops.push(ROp {
                kind: RKind::Read(f.unwrap_or(FREE)),
                call: T_FINAL,
                ret: T_FINAL,
                mandatory: true,
                rec: None,
            });
        }
        let (prefix, state) = match search(&ops, max_steps) {
            Search::Linearizable => return Ok(()),
            Search::Undecided => return Err(None),
            Search::Fail { prefix, state } => (prefix, state),
        };
        let in_prefix: HashSet<usize> = prefix.iter().copied().collect();
        let stuck = (0..ops.len())
            .filter(|i| ops[*i].mandatory && !in_prefix.contains(i))
            .min_by_key(|&i| (ops[i].ret, ops[i].call));
        let mut all: Vec<Operation> = ks.iter().map(|&k| recs[k].op.clone()).collect();
        all.sort_by_key(|o| (o.invoke_ns, o.invoke_index));
        Err(Some(Box::new(Violation::NotLinearizable {
            addr,
            final_read: match final_owner {
                None => FinalRead::NotUsed,
                Some(None) => FinalRead::Free,
                Some(Some(o)) => FinalRead::Held(self.name(o)),
            },
            linearized: prefix
                .iter()
                .filter_map(|&i| ops[i].rec)
                .map(|k| recs[k].op.clone())
                .collect(),
            state_after: (state != FREE).then(|| self.name(state)),
            stuck_on: stuck
                .and_then(|i| ops[i].rec)
                .map(|k| Box::new(recs[k].op.clone())),
            ops: all,
        })))
    }
}

/// Entries of sorted `a` not in `b`, and of `b` not in `a`.
fn diff<T: Ord + Copy>(a: &[T], b: &[T]) -> (Vec<T>, Vec<T>) {
    let (mut i, mut j) = (0, 0);
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    while i < a.len() || j < b.len() {
        if j == b.len() || (i < a.len() && a[i] < b[j]) {
            only_a.push(a[i]);
            i += 1;
        } else if i == a.len() || b[j] < a[i] {
            only_b.push(b[j]);
            j += 1;
        } else {
            i += 1;
            j += 1;
        }
    }
    (only_a, only_b)
}

fn summarize(history: &[Event], recs: &[Rec], addresses: usize) -> Summary {
    let mut s = Summary {
        events: history.len(),
        addresses,
        ..Summary::default()
    };
    let mut processes = HashSet::new();
    for e in history {
        processes.insert(e.process);
        let c = s.by_op.entry(e.op.as_str().to_owned()).or_default();
        match e.kind {
            EventType::Invoke => c.invoke += 1,
            EventType::Ok => {
                c.ok += 1;
                s.ok_times.push(e.t_ns);
            }
            EventType::Fail => c.fail += 1,
            EventType::Info => c.info += 1,
        }
        s.first_ns = Some(s.first_ns.map_or(e.t_ns, |t| t.min(e.t_ns)));
        s.last_ns = Some(s.last_ns.map_or(e.t_ns, |t| t.max(e.t_ns)));
    }
    for r in recs.iter().filter(|r| r.op.outcome == Outcome::Pending) {
        s.by_op
            .entry(r.op.op.as_str().to_owned())
            .or_default()
            .pending += 1;
    }
    s.processes = processes.len();
    s.ok_times.sort_unstable();
    s
}

// ============================================================================================
// The linearizability search (Wing & Gong, with Lowe's just-in-time linearization and memo)
// ============================================================================================

/// The register's "free" state; any other value is an owner id.
const FREE: u32 = u32::MAX;
/// Return time of an optional operation: it need never be linearized.
const T_OPTIONAL: u64 = u64::MAX;
/// Call and return time of the final read, after every real operation.
const T_FINAL: u64 = u64::MAX - 1;
/// Return time of an unknown operation that certainly happened: before the final read.
const T_BEFORE_FINAL: u64 = u64::MAX - 2;

/// A register operation on one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RKind {
    /// Free -> Held(owner).
    Alloc(u32),
    /// Held(owner) -> Free; otherwise no change.
    Release(u32),
    /// The state is this owner (or `FREE`); no change.
    Read(u32),
    /// The state is Held(owner); no change.
    HeldBy(u32),
}

struct ROp {
    kind: RKind,
    call: u64,
    ret: u64,
    /// Must be linearized (else it may be left out).
    mandatory: bool,
    /// The record it comes from; `None` for the final read.
    rec: Option<usize>,
}

enum Search {
    Linearizable,
    Undecided,
    /// The longest linearized prefix (indices into the ops) and the state after it.
    Fail {
        prefix: Vec<usize>,
        state: u32,
    },
}

/// Searches for a linearization of `ops` (sorted by call time) starting from Free.
///
/// The history is a doubly linked list of call and return entries in time order (calls before
/// returns at equal times: such operations count as concurrent). Walking from the head, an
/// operation whose call is reached may be linearized now; reaching the return of an operation
/// not yet linearized means the current prefix is a dead end, so the search backtracks. Visited
/// (linearized set, state) configurations are memoized, which bounds the search by the number
/// of distinct configurations. Prunings keep it small, all sound and complete:
///
/// - an operation that cannot change the state in any continuation (a read, a `held_by`, a
///   release whose owner's allocation is behind us) is linearized as soon as it can be,
///   without a branch: any linearization placing it later can place it there;
/// - an unknown operation is left out, without a branch, once it can no longer matter (an
///   allocation whose owner nothing will read or release any more, a release whose owner's
///   hold is over), and is not tried where it would change nothing.
///
/// The memo key stores the linearized set from its first gap on (every operation called
/// before it is linearized), so a long history costs memory by its concurrency, not its length.
fn search(ops: &[ROp], max_steps: u64) -> Search {
    let n = ops.len();
    let mandatory = ops.iter().filter(|o| o.mandatory).count();
    if mandatory == 0 {
        return Search::Linearizable;
    }
    // Owners, numbered locally: each has at most one allocation here, and some uses (the
    // releases, reads and refusals naming it).
    let mut local: HashMap<u32, usize> = HashMap::new();
    let owner: Vec<Option<usize>> = ops
        .iter()
        .map(|o| {
            let id = match o.kind {
                RKind::Alloc(x) | RKind::Release(x) | RKind::HeldBy(x) => x,
                RKind::Read(x) if x != FREE => x,
                RKind::Read(_) => return None,
            };
            let next = local.len();
            Some(*local.entry(id).or_insert(next))
        })
        .collect();
    let mut uses_left = vec![0usize; local.len()];
    let mut has_alloc = vec![false; local.len()];
    for (o, l) in ops.iter().zip(&owner) {
        if let Some(l) = *l {
            match o.kind {
                RKind::Alloc(_) => has_alloc[l] = true,
                _ => uses_left[l] += 1,
            }
        }
    }
    // Unknown operations that can never matter are left out from the start.
    let active: Vec<bool> = ops
        .iter()
        .zip(&owner)
        .map(|(o, l)| match (o.mandatory, o.kind, *l) {
            (false, RKind::Alloc(_), Some(l)) => uses_left[l] > 0,
            (false, RKind::Release(_), Some(l)) => has_alloc[l],
            _ => true,
        })
        .collect();
    // "The owner's allocation is behind us": linearized, left out, or absent.
    let mut alloc_done: Vec<bool> = has_alloc.iter().map(|h| !h).collect();
    for (i, o) in ops.iter().enumerate() {
        if let (false, RKind::Alloc(_), Some(l)) = (active[i], o.kind, owner[i]) {
            alloc_done[l] = true;
        }
    }

    let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate().filter(|(i, _)| active[*i]) {
        entries.push((o.call, false, i));
        entries.push((o.ret, true, i));
    }
    entries.sort_unstable();
    // Node 0 is the head, 1..=m the entries, m+1 the tail.
    let m = entries.len();
    let (head, tail) = (0, m + 1);
    let mut next: Vec<usize> = (1..=tail + 1).collect();
    let mut prev: Vec<usize> = (0..=tail).map(|e| e.wrapping_sub(1)).collect();
    let mut is_ret = vec![false; tail + 1];
    let mut op_of = vec![0; tail + 1];
    let (mut call_e, mut ret_e) = (vec![0; n], vec![0; n]);
    for (k, &(_, r, i)) in entries.iter().enumerate() {
        is_ret[k + 1] = r;
        op_of[k + 1] = i;
        if r {
            ret_e[i] = k + 1;
        } else {
            call_e[i] = k + 1;
        }
    }
    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        for e in [call_e[i], ret_e[i]] {
            next[prev[e]] = next[e];
            prev[next[e]] = prev[e];
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        for e in [ret_e[i], call_e[i]] {
            next[prev[e]] = e;
            prev[next[e]] = e;
        }
    };

    /// What to do with the operation whose call the walk reached.
    enum Act {
        /// Not now.
        Skip,
        /// Linearize it, with the alternative of trying it later.
        Branch(u32),
        /// Linearize it (or leave it out: `left_out`), without alternative.
        Force { state: u32, left_out: bool },
    }
    struct Frame {
        op: usize,
        prev_state: u32,
        forced: bool,
        left_out: bool,
        prev_alloc_done: bool,
    }
    let mut bits = vec![0u64; n.div_ceil(64)];
    // Memo key: (index of the first word with a gap, the words from there, state).
    let mut seen: HashSet<(u32, Box<[u64]>, u32)> = HashSet::new();
    let key = |bits: &[u64], state: u32| {
        let first = bits
            .iter()
            .position(|&w| w != u64::MAX)
            .unwrap_or(bits.len());
        let last = bits
            .iter()
            .rposition(|&w| w != 0)
            .map_or(first, |l| (l + 1).max(first));
        (first as u32, Box::<[u64]>::from(&bits[first..last]), state)
    };
    let mut stack: Vec<Frame> = Vec::new();
    let (mut state, mut done, mut steps) = (FREE, 0usize, 0u64);
    let (mut best, mut best_state) = (Vec::new(), FREE);
    let mut entry = next[head];
    loop {
        steps += 1;
        if steps > max_steps {
            return Search::Undecided;
        }
        let mut backtrack = entry == tail || is_ret[entry];
        if !backtrack {
            let i = op_of[entry];
            let o = &ops[i];
            let l = owner[i];
            let act = match o.kind {
                RKind::Alloc(x) => match l {
                    Some(l) if !o.mandatory && uses_left[l] == 0 => Act::Force {
                        state,
                        left_out: true,
                    },
                    _ if state == FREE => Act::Branch(x),
                    _ => Act::Skip,
                },
                RKind::Release(x) => {
                    let over = l.is_some_and(|l| alloc_done[l]) && state != x;
                    match (over, o.mandatory) {
                        (true, mandatory) => Act::Force {
                            state,
                            left_out: !mandatory,
                        },
                        _ if state == x => Act::Branch(FREE),
                        (false, true) => Act::Branch(state),
                        (false, false) => Act::Skip,
                    }
                }
                RKind::Read(v) | RKind::HeldBy(v) if v == state => Act::Force {
                    state,
                    left_out: false,
                },
                RKind::Read(_) | RKind::HeldBy(_) => Act::Skip,
            };
            let (after, forced, left_out) = match act {
                Act::Skip => (None, false, false),
                Act::Branch(s) => (Some(s), false, false),
                Act::Force { state, left_out } => (Some(state), true, left_out),
            };
            match after {
                None => entry = next[entry],
                Some(after) => {
                    bits[i / 64] |= 1 << (i % 64);
                    if seen.insert(key(&bits, after)) {
                        let mut prev_alloc_done = false;
                        if let Some(l) = l {
                            if let RKind::Alloc(_) = o.kind {
                                prev_alloc_done = alloc_done[l];
                                alloc_done[l] = true;
                            } else {
                                uses_left[l] -= 1;
                            }
                        }
                        stack.push(Frame {
                            op: i,
                            prev_state: state,
                            forced,
                            left_out,
                            prev_alloc_done,
                        });
                        state = after;
                        lift(&mut next, &mut prev, i);
                        if o.mandatory {
                            done += 1;
                            if done == mandatory {
                                return Search::Linearizable;
                            }
                        }
                        if stack.len() > best.len() {
                            best = stack.iter().filter(|f| !f.left_out).map(|f| f.op).collect();
                            best_state = state;
                        }
                        entry = next[head];
                    } else {
                        bits[i / 64] &= !(1 << (i % 64));
                        // A forced step's configuration already failed: so does this one.
                        backtrack = forced;
                        entry = next[entry];
                    }
                }
            }
        }
        if backtrack {
            loop {
                let Some(f) = stack.pop() else {
                    return Search::Fail {
                        prefix: best,
                        state: best_state,
                    };
                };
                bits[f.op / 64] &= !(1 << (f.op % 64));
                state = f.prev_state;
                unlift(&mut next, &mut prev, f.op);
                if let Some(l) = owner[f.op] {
                    if let RKind::Alloc(_) = ops[f.op].kind {
                        alloc_done[l] = f.prev_alloc_done;
                    } else {
                        uses_left[l] += 1;
                    }
                }
                if ops[f.op].mandatory {
                    done -= 1;
                }
                if !f.forced {
                    entry = next[call_e[f.op]];
                    break;
                }
            }
        }
    }
}

// ============================================================================================
// Tests
// ============================================================================================

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const POOL: &str = "global/10.0.0.0/24";

    /// A tiny history builder: each call records one whole operation (invoke and completion
    /// at the given times); `build` sorts the events by time, as a harness log would be.
    #[derive(Default)]
    struct B {
        events: Vec<Event>,
    }

    fn val(addr: Option<&str>, owner: Option<&str>) -> serde_json::Value {
        AddrValue {
            pool: Some(POOL.into()),
            addr: addr.map(|a| a.parse().unwrap()),
            owner: owner.map(Into::into),
            held_by: None,
        }
        .into()
    }

    impl B {
        fn ev(
            &mut self,
            process: u64,
            kind: EventType,
            op: Op,
            value: serde_json::Value,
            t_ns: u64,
        ) -> &mut Self {
            self.events.push(Event {
                process,
                kind,
                op,
                value,
                node: Some(1),
                t_ns,
            });
            self
        }
        fn alloc_ok(&mut self, p: u64, owner: &str, addr: &str, t0: u64, t1: u64) -> &mut Self {
            self.ev(
                p,
                EventType::Invoke,
                Op::Allocate,
                val(None, Some(owner)),
                t0,
            )
            .ev(
                p,
                EventType::Ok,
                Op::Allocate,
                val(Some(addr), Some(owner)),
                t1,
            )
        }
        fn alloc_info(
            &mut self,
            p: u64,
            owner: &str,
            req: Option<&str>,
            t0: u64,
            t1: u64,
        ) -> &mut Self {
            self.ev(
                p,
                EventType::Invoke,
                Op::Allocate,
                val(req, Some(owner)),
                t0,
            )
            .ev(
                p,
                EventType::Info,
                Op::Allocate,
                serde_json::json!({"error": "timeout"}),
                t1,
            )
        }
        fn alloc_fail(
            &mut self,
            p: u64,
            owner: &str,
            req: &str,
            held_by: Option<&str>,
            t0: u64,
            t1: u64,
        ) -> &mut Self {
            let v = match held_by {
                Some(h) => serde_json::json!({ "held_by": h }),
                None => serde_json::json!({ "error": "pool full" }),
            };
            self.ev(
                p,
                EventType::Invoke,
                Op::Allocate,
                val(Some(req), Some(owner)),
                t0,
            )
            .ev(p, EventType::Fail, Op::Allocate, v, t1)
        }
        fn release(
            &mut self,
            p: u64,
            owner: &str,
            addr: &str,
            t0: u64,
            t1: u64,
            kind: EventType,
        ) -> &mut Self {
            self.ev(
                p,
                EventType::Invoke,
                Op::Release,
                val(Some(addr), Some(owner)),
                t0,
            )
            .ev(p, kind, Op::Release, val(Some(addr), Some(owner)), t1)
        }
        fn read(
            &mut self,
            p: u64,
            addr: &str,
            result: Option<&str>,
            t0: u64,
            t1: u64,
        ) -> &mut Self {
            self.ev(
                p,
                EventType::Invoke,
                Op::WhoHas,
                serde_json::json!({ "addr": addr }),
                t0,
            )
            .ev(p, EventType::Ok, Op::WhoHas, val(Some(addr), result), t1)
        }
        fn build(&self) -> Vec<Event> {
            let mut v = self.events.clone();
            v.sort_by_key(|e| e.t_ns);
            v
        }
    }

    /// The same entries on nodes 1, 2 and 3.
    fn fin(entries: &[(&str, &str)]) -> FinalState {
        let e: Vec<(IpAddr, String)> = entries
            .iter()
            .map(|(a, o)| (a.parse().unwrap(), o.to_string()))
            .collect();
        FinalState {
            replicas: (1..=3).map(|n| (n, e.clone())).collect(),
            digests: BTreeMap::new(),
        }
    }

    fn kinds(r: &Report) -> Vec<&'static str> {
        r.violations
            .iter()
            .map(|v| match v {
                Violation::IllFormed { .. } => "ill_formed",
                Violation::DoubleHold { .. } => "double_hold",
                Violation::DuplicateInFinalState { .. } => "duplicate_in_final_state",
                Violation::NoFinalState => "no_final_state",
                Violation::LostAllocation { .. } => "lost_allocation",
                Violation::ReleasedStillPresent { .. } => "released_still_present",
                Violation::UnexpectedHolder { .. } => "unexpected_holder",
                Violation::ReplicasDiffer { .. } => "replicas_differ",
                Violation::DigestsDiffer { .. } => "digests_differ",
                Violation::NotLinearizable { .. } => "not_linearizable",
            })
            .collect()
    }

    fn assert_passes(h: &[Event], f: &FinalState) -> Report {
        let r = check(h, f);
        assert!(r.passed(), "expected a pass:\n{r}");
        r
    }

    fn assert_fails_with(h: &[Event], f: &FinalState, kind: &str) -> Report {
        let r = check(h, f);
        assert!(
            kinds(&r).contains(&kind),
            "expected a {kind} violation:\n{r}"
        );
        // Every report is printable and round-trips through JSON.
        let json = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.violations, r.violations);
        assert!(!r.to_string().is_empty());
        r
    }

    #[test]
    fn clean_concurrent_history_passes() {
        let h = B::default()
            .alloc_ok(1, "a", "10.0.0.1", 10, 50)
            .alloc_ok(2, "b", "10.0.0.2", 20, 40) // concurrent with a's allocate
            .read(3, "10.0.0.1", None, 15, 30) // concurrent with a's allocate: may read free...
            .read(4, "10.0.0.1", Some("a"), 25, 60) // ...or a
            .release(1, "a", "10.0.0.1", 60, 90, EventType::Ok)
            .read(3, "10.0.0.1", Some("a"), 70, 80) // concurrent with the release
            .alloc_ok(2, "c", "10.0.0.1", 85, 120) // concurrent with the release: after it
            .read(4, "10.0.0.1", Some("c"), 121, 130)
            .read(3, "10.0.0.2", Some("b"), 100, 110)
            .ev(
                5,
                EventType::Invoke,
                Op::Other("heartbeat".into()),
                serde_json::json!("h1"),
                5,
            )
            .ev(
                5,
                EventType::Ok,
                Op::Other("heartbeat".into()),
                serde_json::Value::Null,
                6,
            )
            .build();
        let r = assert_passes(&h, &fin(&[("10.0.0.1", "c"), ("10.0.0.2", "b")]));
        assert_eq!(r.summary.addresses, 2);
        assert_eq!(
            r.summary.by_op["allocate"],
            OpCounts {
                invoke: 3,
                ok: 3,
                ..OpCounts::default()
            }
        );
        assert_eq!(r.summary.by_op["heartbeat"].ok, 1);
        assert_eq!(r.summary.ok_before(50), 3); // heartbeat at 6, read at 30, b at 40
        assert_eq!(r.summary.ok_before(51), 4);
        assert_eq!(r.summary.ok(), 10);
    }

    #[test]
    fn two_owners_overlapping_is_a_double_hold() {
        // b's allocate completes before a's release is even invoked.
        let h = B::default()
            .alloc_ok(1, "a", "10.0.0.1", 10, 20)
            .alloc_ok(2, "b", "10.0.0.1", 30, 40)
            .release(1, "a", "10.0.0.1", 50, 60, EventType::Ok)
            .build();
        let r = assert_fails_with(&h, &fin(&[("10.0.0.1", "b")]), "double_hold");
        let Some(Violation::DoubleHold {
            addr,
            pairs,
            total_pairs: 1,
        }) = r.of_property("no_double_hold").next()
        else {
            panic!("{r}")
        };
        assert_eq!(addr.to_string(), "10.0.0.1");
        assert_eq!(
            (
                pairs[0].first.owner.as_str(),
                pairs[0].second.owner.as_str()
            ),
            ("a", "b")
        );
        assert_eq!(
            pairs[0].first.release.as_ref().map(|o| o.invoke_index),
            Some(4)
        );
        // The same history is not linearizable either (b allocated a held address).
        assert!(kinds(&r).contains(&"not_linearizable"));

        // With the release invoked before b's allocate completed, it is fine.
        let h = B::default()
            .alloc_ok(1, "a", "10.0.0.1", 10, 20)
            .alloc_ok(2, "b", "10.0.0.1", 30, 55)
            .release(1, "a", "10.0.0.1", 50, 60, EventType::Ok)
            .build();
        assert_passes(&h, &fin(&[("10.0.0.1", "b")]));
    }

    #[test]
    fn acknowledged_allocation_missing_from_a_replica() {
        let h = B::default().alloc_ok(1, "a", "10.0.0.1", 10, 20).build();
        let mut f = fin(&[("10.0.0.1", "a")]);
        f.replicas.insert(2, vec![]);
        let r = assert_fails_with(&h, &f, "lost_allocation");
        let Some(Violation::LostAllocation { missing_on, .. }) = r
            .violations
            .iter()
            .find(|v| matches!(v, Violation::LostAllocation { .. }))
        else {
            panic!()
        };
        assert_eq!(missing_on, &vec![(2, None)]);
        assert!(kinds(&r).contains(&"replicas_differ"));
        // One root cause: the final state is not used as a read on that address.
        assert!(!kinds(&r).contains(&"not_linearizable"), "{r}");
        // Missing everywhere.
        assert_fails_with(&h, &fin(&[]), "lost_allocation");
    }

    #[test]
    fn acknowledged_release_still_present() {
        let h = B::default()
            .alloc_ok(1, "a", "10.0.0.1", 10, 20)
            .release(1, "a", "10.0.0.1", 30, 40, EventType::Ok)
            .build();
        let r = assert_fails_with(&h, &fin(&[("10.0.0.1", "a")]), "released_still_present");
        assert!(!kinds(&r).contains(&"lost_allocation"));
        // A release concurrent with its allocation may come first (a no-op): then it stays.
        let h = B::default()
            .alloc_ok(1, "a", "10.0.0.1", 10, 35)
            .release(2, "a", "10.0.0.1", 30, 40, EventType::Ok)
            .build();
        assert_passes(&h, &fin(&[("10.0.0.1", "a")]));
    }

    #[test]
    fn replicas_and_digests_that_differ() {
        let h = B::default()
            .alloc_ok(1, "a", "10.0.0.1", 10, 20)
            .alloc_info(2, "b", None, 10, 20)
            .build();
        let mut f = fin(&[("10.0.0.1", "a")]);
        f.replicas.insert(
            3,
            vec![
                ("10.0.0.1".parse().unwrap(), "a".into()),
                ("10.0.0.2".parse().unwrap(), "b".into()),
            ],
        );
        let r = assert_fails_with(&h, &f, "replicas_differ");
        let Some(Violation::ReplicasDiffer {
            reference: 1,
            node: 3,
            only_on_reference,
            only_on_node,
            differences: 1,
        }) = r
            .violations
            .iter()
            .find(|v| matches!(v, Violation::ReplicasDiffer { .. }))
        else {
            panic!("{r}")
        };
        assert!(only_on_reference.is_empty());
        assert_eq!(
            only_on_node,
            &vec![("10.0.0.2".parse().unwrap(), "b".to_owned())]
        );
        assert_eq!(r.violations.len(), 1, "{r}");

        let mut f = fin(&[("10.0.0.1", "a")]);
        f.digests = [
            (1, "x".to_owned()),
            (2, "x".to_owned()),
            (3, "y".to_owned()),
        ]
        .into();
        assert_fails_with(&h, &f, "digests_differ");
        f.digests.insert(3, "x".into());
        assert_passes(&h, &f);
    }

    #[test]
    fn duplicate_and_unexplained_entries_in_the_final_state() {
        let h = B::default().alloc_ok(1, "a", "10.0.0.1", 10, 20).build();
        let r = assert_fails_with(
            &h,
            &fin(&[("10.0.0.1", "a"), ("10.0.0.1", "z")]),
            "duplicate_in_final_state",
        );
        assert!(kinds(&r).contains(&"unexpected_holder"));
        // An allocation applied twice (say, a retry) holds a second address.
        assert_fails_with(
            &h,
            &fin(&[("10.0.0.1", "a"), ("10.0.0.2", "a")]),
            "unexpected_holder",
        );
        assert_fails_with(&[], &FinalState::default(), "no_final_state");
    }

    #[test]
    fn stale_read_after_release_is_not_linearizable() {
        let h = B::default()
            .alloc_ok(1, "a", "10.0.0.1", 10, 20)
            .release(1, "a", "10.0.0.1", 30, 40, EventType::Ok)
            .read(2, "10.0.0.1", Some("a"), 50, 60)
            .build();
        let r = assert_fails_with(&h, &fin(&[]), "not_linearizable");
        let Some(Violation::NotLinearizable {
            linearized,
            stuck_on,
            state_after,
            ops,
            ..
        }) = r.of_property("linearizable").next()
        else {
            panic!()
        };
        assert_eq!(linearized.len(), 2);
        assert_eq!(state_after, &None);
        assert_eq!(stuck_on.as_ref().map(|o| o.op.clone()), Some(Op::WhoHas));
        assert_eq!(ops.len(), 3);
        assert_eq!(r.violations.len(), 1, "{r}");
    }

    #[test]
    fn read_of_an_owner_before_its_allocate_is_not_linearizable() {
        let h = B::default()
            .read(2, "10.0.0.1", Some("a"), 5, 8)
            .alloc_ok(1, "a", "10.0.0.1", 10, 20)
            .build();
        assert_fails_with(&h, &fin(&[("10.0.0.1", "a")]), "not_linearizable");
    }

    #[test]
    fn read_of_free_while_surely_held_is_not_linearizable() {
        let h = B::default()
            .alloc_ok(1, "a", "10.0.0.1", 10, 20)
            .read(2, "10.0.0.1", None, 30, 40)
            .release(1, "a", "10.0.0.1", 50, 60, EventType::Ok)
            .build();
        assert_fails_with(&h, &fin(&[]), "not_linearizable");
    }

    #[test]
    fn unknown_allocation_absent_from_final_state_is_accepted() {
        let h = B::default()
            .alloc_info(1, "a", Some("10.0.0.1"), 10, 20)
            .alloc_info(3, "x", None, 10, 20)
            .alloc_ok(2, "b", "10.0.0.1", 30, 40)
            .read(4, "10.0.0.1", Some("b"), 45, 50)
            .build();
        assert_passes(&h, &fin(&[("10.0.0.1", "b")]));
    }

    #[test]
    fn unknown_allocation_present_in_final_state_happened() {
        // x asked for any address and timed out; the final state shows it got 10.0.0.1, which
        // b was granted and never released: they overlap.
        let h = B::default()
            .alloc_info(1, "x", None, 10, 20)
            .alloc_ok(2, "b", "10.0.0.1", 30, 40)
            .build();
        let mut f = fin(&[("10.0.0.1", "x")]);
        for es in f.replicas.values_mut() {
            es.push(("10.0.0.1".parse().unwrap(), "b".into()));
        }
        let r = assert_fails_with(&h, &f, "double_hold");
        let Some(Violation::DoubleHold { pairs, .. }) = r.of_property("no_double_hold").next()
        else {
            panic!()
        };
        assert!(pairs[0].first.allocate.addr_inferred);
        assert_eq!(pairs[0].first.in_final_state, vec![1, 2, 3]);

        // b holds 10.0.0.1 from before x's allocate was invoked and never releases it.
        let h = B::default()
            .alloc_ok(2, "b", "10.0.0.1", 1, 5)
            .alloc_info(1, "x", Some("10.0.0.1"), 10, 20)
            .build();
        assert_passes(&h, &fin(&[("10.0.0.1", "b")])); // x absent: it never happened
                                                       // Present: it happened, over b.
        let r = assert_fails_with(&h, &fin(&[("10.0.0.1", "x")]), "not_linearizable");
        assert!(
            kinds(&r).contains(&"double_hold") && kinds(&r).contains(&"lost_allocation"),
            "{r}"
        );
        // An unknown allocation may take effect long after its info: after a read of free.
        let h = B::default()
            .alloc_info(1, "x", Some("10.0.0.1"), 10, 20)
            .read(2, "10.0.0.1", None, 30, 40)
            .build();
        assert_passes(&h, &fin(&[]));
        assert_passes(&h, &fin(&[("10.0.0.1", "x")]));
        // ...unless it took effect after the read (long after its timeout): fine.
        let h = B::default()
            .alloc_info(1, "x", Some("10.0.0.1"), 35, 36)
            .read(2, "10.0.0.1", None, 30, 40)
            .build();
        assert_passes(&h, &fin(&[("10.0.0.1", "x")]));
        // Seen by a read but gone from the final state without a release: not linearizable.
        let h = B::default()
            .alloc_info(1, "x", None, 10, 20)
            .read(2, "10.0.0.1", Some("x"), 30, 40)
            .build();
        assert_fails_with(&h, &fin(&[]), "not_linearizable");
    }

    #[test]
    fn fail_with_held_by() {
        let base = || {
            let mut b = B::default();
            b.alloc_ok(1, "a", "10.0.0.1", 10, 20).release(
                1,
                "a",
                "10.0.0.1",
                100,
                110,
                EventType::Ok,
            );
            b
        };
        // Consistent: a holds it during the refusal.
        let h = base()
            .alloc_fail(2, "b", "10.0.0.1", Some("a"), 30, 40)
            .build();
        assert_passes(&h, &fin(&[]));
        // Inconsistent: the refusal names an owner that never held it, or comes after the release.
        let h = base()
            .alloc_fail(2, "b", "10.0.0.1", Some("q"), 30, 40)
            .build();
        assert_fails_with(&h, &fin(&[]), "not_linearizable");
        let h = base()
            .alloc_fail(2, "b", "10.0.0.1", Some("a"), 120, 130)
            .build();
        assert_fails_with(&h, &fin(&[]), "not_linearizable");
        // A fail without held_by is simply left out.
        let h = base()
            .alloc_fail(2, "b", "10.0.0.1", None, 120, 130)
            .build();
        assert_passes(&h, &fin(&[]));
    }

    /// `k` owners each allocate and release 10.0.0.1, all in one window: an exponential
    /// number of orders for the search to try.
    fn owners_taking_turns(k: u64) -> B {
        let mut b = B::default();
        for i in 0..k {
            let o = format!("o{i}");
            b.alloc_ok(2 * i, &o, "10.0.0.1", 10 + i, 1000 + i).release(
                2 * i + 1,
                &o,
                "10.0.0.1",
                20 + i,
                1100 + i,
                EventType::Ok,
            );
        }
        b
    }

    #[test]
    fn step_cap_reports_undecided() {
        // k owners each allocate and release one address, all concurrently, and a read in the
        // same window returns an owner that never existed: the search must exhaust an
        // exponential space to refute it.
        let mut b = owners_taking_turns(12);
        b.read(99, "10.0.0.1", Some("o0"), 900, 1300);
        b.read(98, "10.0.0.1", Some("ghost"), 900, 1300);
        let h = b.build();
        let t = std::time::Instant::now();
        let r = check_with(
            &h,
            &fin(&[]),
            &Limits {
                max_steps_per_address: 20_000,
            },
        );
        assert!(t.elapsed().as_secs() < 5);
        assert_eq!(
            r.undecided,
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()],
            "{r}"
        );
        assert!(!r.passed());
        assert!(r.to_string().contains("undecided"));
    }

    #[test]
    fn parse_tolerates_a_truncated_last_line() {
        let h = B::default().alloc_ok(1, "a", "10.0.0.1", 10, 20).build();
        let mut text = String::new();
        for e in &h {
            text.push_str(&serde_json::to_string(e).unwrap());
            text.push_str("\n\n");
        }
        let parsed = parse_history(&text).unwrap();
        assert_eq!(parsed.events, h);
        assert_eq!(parsed.lines, vec![1, 3]);
        assert!(check(&parsed, &fin(&[("10.0.0.1", "a")])).passed());
        assert!(parsed.truncated_last_line.is_none());

        text.push_str(r#"{"process":2,"type":"inv"#);
        let parsed = parse_history(&text).unwrap();
        assert_eq!(parsed.events, h);
        assert_eq!(parsed.truncated_last_line.as_ref().map(|t| t.line), Some(5));

        // The same line terminated, or anywhere but last, is an error with its line number.
        text.push('\n');
        assert_eq!(parse_history(&text).unwrap_err().line, 5);
        let bad = format!(
            "{}\nnot json\n{}\n",
            serde_json::to_string(&h[0]).unwrap(),
            serde_json::to_string(&h[1]).unwrap()
        );
        let e = parse_history(&bad).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("line 2"), "{e}");

        // The documented example lines parse.
        let example = r#"{"process":3,"type":"invoke","op":"allocate","value":{"pool":"global/10.0.0.0/16","addr":null,"owner":"h1/p3-17"},"node":2,"t_ns":123456}
{"process":3,"type":"ok","op":"allocate","value":{"pool":"global/10.0.0.0/16","addr":"10.0.0.5","owner":"h1/p3-17"},"node":2,"t_ns":130000}"#;
        let parsed = parse_history(example).unwrap();
        assert_eq!(parsed.events.len(), 2);
        assert_eq!(parsed.events[0].op, Op::Allocate);
        assert_passes(&parsed.events, &fin(&[("10.0.0.5", "h1/p3-17")]));
    }

    #[test]
    fn ill_formed_histories_are_reported() {
        let mut b = B::default();
        b.ev(
            1,
            EventType::Ok,
            Op::Allocate,
            val(Some("10.0.0.1"), Some("a")),
            5,
        ); // no invoke
        b.alloc_info(2, "b", None, 10, 20)
            .alloc_ok(2, "c", "10.0.0.2", 30, 40); // reused after info
        b.alloc_ok(3, "c", "10.0.0.3", 50, 60); // owner reused
        b.ev(
            4,
            EventType::Invoke,
            Op::Release,
            serde_json::json!({"addr": "10.0.0.9"}),
            70,
        ); // no owner
        b.ev(
            5,
            EventType::Invoke,
            Op::WhoHas,
            serde_json::json!({"addr": "10.0.0.2"}),
            80,
        )
        .ev(
            5,
            EventType::Ok,
            Op::WhoHas,
            serde_json::json!({"addr": "10.0.0.2"}),
            90,
        );
        let r = check(&b.build(), &fin(&[("10.0.0.2", "c")]));
        let ill: Vec<usize> = r
            .of_property("well_formed")
            .map(|v| {
                if let Violation::IllFormed { index, .. } = v {
                    *index
                } else {
                    0
                }
            })
            .collect();
        assert_eq!(ill.len(), 5, "{r}");
        assert_eq!(r.violations.len(), 5, "{r}");
    }

    /// Every linearization, by brute force: all subsets of the optional operations, all
    /// orders that respect real time.
    fn brute_force(ops: &[ROp]) -> bool {
        fn place(ops: &[ROp], chosen: &[usize], placed: &mut Vec<bool>, state: u32) -> bool {
            if placed.iter().zip(chosen).all(|(p, _)| *p) {
                return true;
            }
            for (k, &i) in chosen.iter().enumerate() {
                let ready = !placed[k]
                    && chosen
                        .iter()
                        .zip(placed.iter())
                        .all(|(&j, &p)| p || j == i || ops[j].ret >= ops[i].call);
                if !ready {
                    continue;
                }
                let after = match ops[i].kind {
                    RKind::Alloc(o) => (state == FREE).then_some(o),
                    RKind::Release(o) => Some(if state == o { FREE } else { state }),
                    RKind::Read(v) | RKind::HeldBy(v) => (state == v).then_some(state),
                };
                if let Some(after) = after {
                    placed[k] = true;
                    if place(ops, chosen, placed, after) {
                        return true;
                    }
                    placed[k] = false;
                }
            }
            false
        }
        let optional: Vec<usize> = (0..ops.len()).filter(|&i| !ops[i].mandatory).collect();
        (0..1u32 << optional.len()).any(|mask| {
            let chosen: Vec<usize> = (0..ops.len())
                .filter(|&i| {
                    ops[i].mandatory
                        || optional
                            .iter()
                            .position(|&j| j == i)
                            .is_some_and(|b| mask >> b & 1 == 1)
                })
                .collect();
            place(ops, &chosen, &mut vec![false; chosen.len()], FREE)
        })
    }

    #[test]
    fn search_agrees_with_brute_force() {
        let mut rng = Rng(1);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..30_000 {
            let mut ops = Vec::new();
            let owners = 1 + rng.below(3) as u32;
            for o in 0..owners {
                if rng.chance(80) {
                    let call = rng.below(20);
                    let (mandatory, ret) = match rng.below(4) {
                        0 => (false, T_OPTIONAL),
                        1 => (true, T_BEFORE_FINAL),
                        _ => (true, call + rng.below(10)),
                    };
                    ops.push(ROp {
                        kind: RKind::Alloc(o),
                        call,
                        ret,
                        mandatory,
                        rec: None,
                    });
                }
            }
            for _ in 0..rng.below(7) {
                let call = rng.below(25);
                let o = rng.below(u64::from(owners) + 1) as u32;
                let v = if o == owners { FREE } else { o };
                let (kind, optional_ok) = match rng.below(3) {
                    0 if v != FREE => (RKind::Release(v), true),
                    1 if v != FREE => (RKind::HeldBy(v), false),
                    _ => (RKind::Read(v), false),
                };
                let (mandatory, ret) = if optional_ok && rng.chance(30) {
                    (false, T_OPTIONAL)
                } else {
                    (true, call + rng.below(10))
                };
                ops.push(ROp {
                    kind,
                    call,
                    ret,
                    mandatory,
                    rec: None,
                });
            }
            if rng.chance(50) {
                let o = rng.below(u64::from(owners) + 1) as u32;
                let v = if o == owners { FREE } else { o };
                ops.push(ROp {
                    kind: RKind::Read(v),
                    call: T_FINAL,
                    ret: T_FINAL,
                    mandatory: true,
                    rec: None,
                });
            }
            ops.sort_by_key(|o| o.call);
            let expected = brute_force(&ops);
            let got = match search(&ops, 1_000_000) {
                Search::Linearizable => true,
                Search::Fail { .. } => false,
                Search::Undecided => panic!("undecided on {} ops", ops.len()),
            };
            let shown: Vec<_> = ops
                .iter()
                .map(|o| (o.kind, o.call, o.ret, o.mandatory))
                .collect();
            assert_eq!(got, expected, "{shown:?}");
            if expected {
                yes += 1;
            } else {
                no += 1;
            }
        }
        eprintln!("search vs brute force: {yes} linearizable, {no} not");
        assert!(yes > 5_000 && no > 5_000);
    }

    // ---- random histories from a reference model ----

    /// splitmix64: a small seeded PRNG (no `rand` crate).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// Generates a valid history: a sequence of operations applied to a reference allocator
    /// at linearization points 1000 ns apart, then made concurrent by giving each an invoke
    /// before and a completion after its point, on client processes that each run one
    /// operation at a time. Some operations end `info` (taking effect or not, possibly after
    /// the info was recorded) or never complete; some fail (with or without `held_by`).
    fn generate(
        seed: u64,
        n_ops: usize,
        n_addrs: u32,
        n_slots: usize,
        width: u64,
    ) -> (Vec<Event>, FinalState) {
        let mut rng = Rng(seed);
        let addrs: Vec<IpAddr> = (0..n_addrs)
            .map(|k| IpAddr::V4(Ipv4Addr::from(0x0a00_0001 + k)))
            .collect();
        let mut held: BTreeMap<IpAddr, String> = BTreeMap::new();
        let mut slots: Vec<(u64, u64)> = (0..n_slots as u64).map(|p| (p, 0)).collect();
        let mut next_process = n_slots as u64;
        let mut events = Vec::with_capacity(2 * n_ops);
        let push = |events: &mut Vec<Event>, p: u64, kind, op: Op, value, t| {
            events.push(Event {
                process: p,
                kind,
                op,
                value,
                node: Some(1 + t % 3),
                t_ns: t,
            });
        };
        for i in 0..n_ops {
            let lin = width + 1000 * (i as u64 + 1);
            let free: Vec<usize> = (0..slots.len()).filter(|&k| slots[k].1 + 1 < lin).collect();
            let k = if free.is_empty() {
                slots.push((next_process, 0));
                next_process += 1;
                slots.len() - 1
            } else {
                free[rng.below(free.len() as u64) as usize]
            };
            let (p, busy) = slots[k];
            let lo = (busy + 1).max(lin - width);
            let inv = lo + rng.below(lin - lo);
            // 0: normal, 1: info, 2: pending.
            let class = match rng.below(100) {
                0..=5 => 1,
                6 => 2,
                _ => 0,
            };
            let effect = class == 0 || rng.chance(50);
            let roll = rng.below(100);
            let (op, inv_value, done_kind, done_value) = if roll < 35 {
                let owner = format!("h{}/o{i}", p % 4);
                let requested = rng
                    .chance(30)
                    .then(|| addrs[rng.below(addrs.len() as u64) as usize]);
                let result = match requested {
                    Some(a) => match held.get(&a) {
                        Some(h) => Err(Some(h.clone())),
                        None => Ok(a),
                    },
                    None => addrs
                        .iter()
                        .find(|a| !held.contains_key(a))
                        .copied()
                        .ok_or(None),
                };
                if let (true, Ok(a)) = (effect, &result) {
                    held.insert(*a, owner.clone());
                }
                let iv: serde_json::Value = AddrValue {
                    pool: Some(POOL.into()),
                    addr: requested,
                    owner: Some(owner.clone()),
                    held_by: None,
                }
                .into();
                let (dk, dv) = match result {
                    Ok(a) => (
                        EventType::Ok,
                        AddrValue {
                            pool: Some(POOL.into()),
                            addr: Some(a),
                            owner: Some(owner),
                            held_by: None,
                        }
                        .into(),
                    ),
                    Err(Some(h)) if rng.chance(50) => {
                        (EventType::Fail, serde_json::json!({ "held_by": h }))
                    }
                    Err(_) => (EventType::Fail, serde_json::json!({ "error": "refused" })),
                };
                (Op::Allocate, iv, dk, dv)
            } else if roll < 60 {
                let (a, o) = match held.iter().nth(rng.below(held.len() as u64) as usize) {
                    Some((a, o)) if rng.chance(90) => (*a, o.clone()),
                    _ => (
                        addrs[rng.below(addrs.len() as u64) as usize],
                        format!("nobody{i}"),
                    ),
                };
                if effect && held.get(&a) == Some(&o) {
                    held.remove(&a);
                }
                let v: serde_json::Value = AddrValue {
                    pool: Some(POOL.into()),
                    addr: Some(a),
                    owner: Some(o),
                    held_by: None,
                }
                .into();
                (Op::Release, v.clone(), EventType::Ok, v)
            } else {
                let a = addrs[rng.below(addrs.len() as u64) as usize];
                let r = held.get(&a).cloned();
                (
                    Op::WhoHas,
                    serde_json::json!({ "addr": a }),
                    EventType::Ok,
                    AddrValue {
                        pool: None,
                        addr: Some(a),
                        owner: r,
                        held_by: None,
                    }
                    .into(),
                )
            };
            push(
                &mut events,
                p,
                EventType::Invoke,
                op.clone(),
                inv_value,
                inv,
            );
            match class {
                0 => {
                    let t = lin + 1 + rng.below(width);
                    push(&mut events, p, done_kind, op, done_value, t);
                    slots[k].1 = t;
                }
                1 => {
                    let t = inv + 1 + rng.below(lin + width - inv);
                    push(
                        &mut events,
                        p,
                        EventType::Info,
                        op,
                        serde_json::json!({ "error": "timeout" }),
                        t,
                    );
                    slots[k] = (next_process, t);
                    next_process += 1;
                }
                _ => {
                    slots[k] = (next_process, inv);
                    next_process += 1;
                }
            }
        }
        events.sort_by_key(|e| e.t_ns);
        let entries: Vec<(IpAddr, String)> = held.into_iter().collect();
        let f = FinalState {
            replicas: (1..=3).map(|n| (n, entries.clone())).collect(),
            digests: (1..=3).map(|n| (n, "d".to_owned())).collect(),
        };
        (events, f)
    }

    fn reads(h: &[Event]) -> Vec<usize> {
        (0..h.len())
            .filter(|&i| h[i].op == Op::WhoHas && h[i].kind == EventType::Ok)
            .collect()
    }

    #[test]
    fn random_valid_histories_pass_and_a_flipped_read_fails() {
        let (mut ghost_fail, mut flips, mut flip_fail) = (0, 0, 0);
        for seed in 0..200u64 {
            let (n_addrs, slots, width) = match seed % 4 {
                0 => (1, 3, 2_500),
                1 => (3, 5, 4_000),
                2 => (8, 8, 6_000),
                _ => (40, 12, 10_000),
            };
            let (h, f) = generate(seed, 300, n_addrs, slots, width);
            let r = check(&h, &f);
            assert!(r.passed(), "seed {seed}:\n{r}");
            assert!(r.summary.by_op["who_has"].ok > 0);

            // A read naming an owner that never existed always fails.
            let rs = reads(&h);
            let mut rng = Rng(seed);
            let i = rs[rng.below(rs.len() as u64) as usize];
            let mut bad = h.clone();
            bad[i].value["owner"] = "ghost".into();
            let r = check(&bad, &f);
            let addr: IpAddr = bad[i].value["addr"].as_str().unwrap().parse().unwrap();
            assert!(
                r.violations
                    .iter()
                    .any(|v| v.property() == "linearizable" && v.addr() == Some(addr)),
                "seed {seed}:\n{r}"
            );
            ghost_fail += 1;

            // A plausible flip (held <-> free, or another real owner) usually fails.
            let mut bad = h.clone();
            let other = h
                .iter()
                .find(|e| {
                    e.op == Op::Allocate
                        && e.kind == EventType::Ok
                        && e.value["addr"] == h[i].value["addr"]
                        && e.value["owner"] != h[i].value["owner"]
                })
                .map(|e| e.value["owner"].clone());
            bad[i].value["owner"] = match (&h[i].value["owner"], other) {
                (serde_json::Value::Null, Some(o)) => o,
                (serde_json::Value::Null, None) => continue,
                _ => serde_json::Value::Null,
            };
            flips += 1;
            if !check(&bad, &f).passed() {
                flip_fail += 1;
            }
        }
        eprintln!(
            "ghost reads caught: {ghost_fail}/200; plausible flips caught: {flip_fail}/{flips}"
        );
        assert!(
            flip_fail * 2 > flips,
            "plausible flips caught: {flip_fail}/{flips}"
        );
    }

    #[test]
    fn a_hot_address_is_decided_quickly() {
        // 2,000 operations on two addresses, 10 concurrent processes.
        let (h, f) = generate(7, 2_000, 2, 10, 10_000);
        let t = std::time::Instant::now();
        let r = check(&h, &f);
        assert!(r.passed(), "{r}");
        eprintln!(
            "hot addresses: {} events checked in {:?}",
            h.len(),
            t.elapsed()
        );
    }

    /// `cargo test --release -- --ignored --nocapture timing`
    #[test]
    #[ignore = "timing: run with --release -- --ignored --nocapture"]
    fn timing_200k_events_over_5000_addresses() {
        let (h, f) = generate(42, 100_000, 5_000, 40, 40_000);
        let mut text = String::new();
        for e in &h {
            text.push_str(&serde_json::to_string(e).unwrap());
            text.push('\n');
        }
        let t = std::time::Instant::now();
        let parsed = parse_history(&text).unwrap();
        let parse = t.elapsed();
        let t = std::time::Instant::now();
        let r = check(&parsed.events, &f);
        let elapsed = t.elapsed();
        assert!(r.passed(), "{r}");
        eprintln!(
            "{} events ({} MB), {} addresses: parse {parse:?}, check {elapsed:?}",
            h.len(),
            text.len() / 1_000_000,
            r.summary.addresses
        );
        eprintln!("{}", r.summary);

        // One hot address: 20,000 operations, 10 concurrent processes.
        let (h, f) = generate(43, 20_000, 1, 10, 10_000);
        let t = std::time::Instant::now();
        let r = check(&h, &f);
        assert!(r.passed(), "{r}");
        eprintln!(
            "one hot address: {} events checked in {:?}",
            h.len(),
            t.elapsed()
        );

        // And the cost of an undecided address at the default cap.
        let mut b = owners_taking_turns(16);
        b.read(98, "10.0.0.1", Some("ghost"), 900, 1300);
        let t = std::time::Instant::now();
        let r = check(&b.build(), &fin(&[]));
        eprintln!(
            "one undecided address at the default cap: {:?} ({:?})",
            t.elapsed(),
            r.undecided
        );
    }
}
