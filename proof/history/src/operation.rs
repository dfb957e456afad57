//! Operations: an invoke and its completion by one client process, paired from the history's
//! events ([`Operation`], how it ended: [`Outcome`]).
//!
//! This module owns the pairing (per process, one operation at a time), the typing of the
//! address operations' values, and the recording contract those need: a completion without
//! invoke, a reused process or owner, a malformed value are returned as [`IllFormed`] and the
//! operation is marked unusable. It must never judge the cluster: what a usable operation
//! implies about the replicas or the register is the checker's business, and it never builds a
//! report (the checker turns [`IllFormed`] into violations).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::history::{format_time, Event, EventKind, OperationKind};

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
    /// Which operation (`"op"` in JSON).
    #[serde(rename = "op")]
    pub kind: OperationKind,
    /// How it ended.
    pub outcome: Outcome,
    /// The client process.
    pub process: u64,
    /// Index of its invoke in the history (0-based; see
    /// [`History::lines`](crate::History::lines) for line numbers).
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
            self.kind,
            self.outcome,
            self.invoke_index,
            format_time(self.invoke_ns)
        )?;
        match (self.completion_index, self.completion_ns) {
            (Some(i), Some(t)) => write!(f, ", #{i} @{}]", format_time(t))?,
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
            None if self.kind == OperationKind::Allocate => f.write_str(" any address")?,
            None => {}
        }
        match (&self.kind, self.outcome, &self.owner) {
            (OperationKind::WhoHas, Outcome::Ok, owner) => {
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

/// Owner names interned as small integers.
#[derive(Default)]
pub(crate) struct Owners {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Owners {
    pub(crate) fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(name.to_owned(), id);
        self.names.push(name.to_owned());
        id
    }

    pub(crate) fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }
}

/// An [`Operation`] with its values typed and its owners interned: what the checks need.
pub(crate) struct TypedOperation {
    pub(crate) operation: Operation,
    /// False when the operation broke the recording contract: reported, then left out.
    pub(crate) usable: bool,
    /// Allocate and release: the owner.
    pub(crate) owner: Option<u32>,
    /// `who_has` `ok`: the owner read (`None` = free).
    pub(crate) read: Option<u32>,
    /// Allocate `fail`: the holder reported (only with a requested address).
    pub(crate) held_by: Option<u32>,
    /// Allocate: the address requested at invoke.
    pub(crate) requested: Option<IpAddr>,
}

impl TypedOperation {
    /// Time by which it certainly took effect, if it did: its completion if `ok`, else never.
    pub(crate) fn end(&self) -> u64 {
        match (self.operation.outcome, self.operation.completion_ns) {
            (Outcome::Ok | Outcome::Fail, Some(t)) => t,
            _ => u64::MAX,
        }
    }

    pub(crate) fn unknown(&self) -> bool {
        matches!(self.operation.outcome, Outcome::Info | Outcome::Pending)
    }
}

/// An event that breaks the recording contract: its index in the history, and what is wrong.
pub(crate) struct IllFormed {
    pub(crate) index: usize,
    pub(crate) problem: String,
}

/// Pairs invokes with completions per process, and types the values of address operations.
/// Contract breaches are appended to `out`, in history order.
pub(crate) fn pair(
    history: &[Event],
    owners: &mut Owners,
    out: &mut Vec<IllFormed>,
) -> Vec<TypedOperation> {
    let mut ill = |index: usize, problem: String| out.push(IllFormed { index, problem });
    let mut operations: Vec<TypedOperation> = Vec::with_capacity(history.len() / 2 + 1);
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut retired: HashMap<u64, usize> = HashMap::new();
    let mut last_done: HashMap<u64, (usize, u64)> = HashMap::new();
    for (i, e) in history.iter().enumerate() {
        if e.kind == EventKind::Invoke {
            if let Some(prev) = open.remove(&e.process) {
                let p = operations[prev].operation.invoke_index;
                let problem = format!(
                    "process {} invoked again while its operation invoked at #{p} had no \
                     completion (that one is treated as pending); a process runs one operation \
                     at a time",
                    e.process
                );
                ill(i, problem);
            }
            if let Some(&j) = retired.get(&e.process) {
                let problem = format!(
                    "process {} had an unknown outcome (info at #{j}) and must be retired; \
                     continue with a new process id",
                    e.process
                );
                ill(i, problem);
            }
            if let Some(&(j, t)) = last_done.get(&e.process) {
                if e.t_ns < t {
                    let problem = format!(
                        "invoke at {} is before this process's previous completion \
                         (#{j} at {}): t_ns must come from one monotonic clock",
                        format_time(e.t_ns),
                        format_time(t)
                    );
                    ill(i, problem);
                }
            }
            let mut typed = TypedOperation {
                operation: Operation {
                    kind: e.operation.clone(),
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
            if e.operation.is_address_operation() {
                if let Err(problem) = type_invoke(e, &mut typed, owners) {
                    ill(i, format!("{} invoke: {problem}", e.operation));
                    typed.usable = false;
                }
            }
            open.insert(e.process, operations.len());
            operations.push(typed);
            continue;
        }
        let Some(k) = open.remove(&e.process) else {
            let why = match retired.get(&e.process) {
                Some(j) => format!(" (the process already ended with an info at #{j})"),
                None => String::new(),
            };
            ill(
                i,
                format!(
                    "a completion with no open invoke in process {}{why}: was the invoke recorded?",
                    e.process
                ),
            );
            continue;
        };
        let typed = &mut operations[k];
        typed.operation.completion_index = Some(i);
        typed.operation.completion_ns = Some(e.t_ns);
        typed.operation.outcome = match e.kind {
            EventKind::Ok => Outcome::Ok,
            EventKind::Fail => Outcome::Fail,
            _ => Outcome::Info,
        };
        if e.node.is_some() {
            typed.operation.node = e.node;
        }
        if typed.operation.kind != e.operation {
            ill(
                i,
                format!(
                    "completes a {} but the open invoke #{} is a {}",
                    e.operation, typed.operation.invoke_index, typed.operation.kind
                ),
            );
            typed.usable = false;
        } else if e.t_ns < typed.operation.invoke_ns {
            let problem = format!(
                "completion at {} precedes its invoke #{} at {}: t_ns must come from one \
                 monotonic clock",
                format_time(e.t_ns),
                typed.operation.invoke_index,
                format_time(typed.operation.invoke_ns)
            );
            ill(i, problem);
            typed.usable = false;
        } else if typed.usable {
            if let Err(problem) = type_completion(e, typed, owners) {
                ill(i, format!("{} {}: {problem}", e.operation, e.kind));
                typed.usable = false;
            }
        }
        last_done.insert(e.process, (i, e.t_ns));
        if e.kind == EventKind::Info {
            retired.insert(e.process, i);
        }
    }
    operations
}

fn type_invoke(e: &Event, typed: &mut TypedOperation, owners: &mut Owners) -> Result<(), String> {
    let v = e.addr_value()?;
    typed.operation.pool = v.pool;
    match e.operation {
        OperationKind::Allocate => {
            let owner = v.owner.ok_or("no owner")?;
            typed.owner = Some(owners.id(&owner));
            typed.operation.owner = Some(owner);
            typed.requested = v.addr;
            typed.operation.addr = v.addr;
        }
        OperationKind::Release => {
            let owner = v.owner.ok_or("no owner")?;
            typed.operation.addr = Some(v.addr.ok_or("no addr")?);
            typed.owner = Some(owners.id(&owner));
            typed.operation.owner = Some(owner);
        }
        _ => typed.operation.addr = Some(v.addr.ok_or("no addr")?),
    }
    Ok(())
}

fn type_completion(
    e: &Event,
    typed: &mut TypedOperation,
    owners: &mut Owners,
) -> Result<(), String> {
    match (&e.operation, e.kind) {
        (OperationKind::Allocate, EventKind::Ok) => {
            let v = e.addr_value()?;
            let granted = v
                .addr
                .ok_or("no addr: an ok allocate must carry the address granted")?;
            if let (Some(o), Some(mine)) = (&v.owner, &typed.operation.owner) {
                if o != mine {
                    return Err(format!("owner {o} differs from the invoke's {mine}"));
                }
            }
            if let Some(r) = typed.requested {
                if r != granted {
                    return Err(format!(
                        "requested {r} but was granted {granted}: the allocator must grant \
                         the requested address or refuse"
                    ));
                }
            }
            typed.operation.addr = Some(granted);
        }
        (OperationKind::Allocate, EventKind::Fail) => {
            // `held_by` is only meaningful for a requested address; a malformed fail value is
            // not an error (the operation had no effect).
            if let (Some(_), Ok(v)) = (typed.requested, e.addr_value()) {
                if let Some(h) = v.held_by {
                    typed.held_by = Some(owners.id(&h));
                    typed.operation.held_by = Some(h);
                }
            }
        }
        (OperationKind::WhoHas, EventKind::Ok) => {
            let v = e.addr_value()?;
            if e.value.get("owner").is_none() {
                return Err(
                    "no owner field: an ok who_has carries the owner read, or null when free"
                        .into(),
                );
            }
            if let (Some(a), Some(mine)) = (v.addr, typed.operation.addr) {
                if a != mine {
                    return Err(format!("answers for {a} but the invoke asked for {mine}"));
                }
            }
            typed.read = v.owner.as_deref().map(|o| owners.id(o));
            typed.operation.owner = v.owner;
        }
        _ => {}
    }
    Ok(())
}

/// Each owner names one allocate: reports reuse (appended to `out`), and maps owner → the
/// index of its (first) allocate.
pub(crate) fn unique_owners(
    operations: &mut [TypedOperation],
    out: &mut Vec<IllFormed>,
) -> HashMap<u32, usize> {
    let mut alloc_of: HashMap<u32, usize> = HashMap::new();
    for k in 0..operations.len() {
        let o = &operations[k];
        let (OperationKind::Allocate, Some(owner)) = (&o.operation.kind, o.owner) else {
            continue;
        };
        let Some(&j) = alloc_of.get(&owner) else {
            alloc_of.insert(owner, k);
            continue;
        };
        if o.usable {
            let first = operations[j].operation.invoke_index;
            let problem = format!(
                "owner {} was already used by the allocate invoked at #{first}: every allocate \
                 needs a fresh owner (a retry is recorded as one operation)",
                o.operation.owner.as_deref().unwrap_or("")
            );
            out.push(IllFormed {
                index: o.operation.invoke_index,
                problem,
            });
            operations[k].usable = false;
        }
    }
    alloc_of
}
