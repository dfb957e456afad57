//! The checker: a history and the replicas' final state in, a [`Report`] out ([`check`],
//! [`check_with`], bounded by [`Limits`]; the final state is a [`FinalState`]).
//!
//! This module owns the three properties (see the crate documentation): (a) no double hold,
//! (b) durability and agreement of the final state, (c) linearizability per address, which it
//! reduces to register operations for the search in `linearizability.rs`. It must never read
//! files or parse text (a history comes parsed), never stop at the first violation, and never
//! panic or hang on a hostile history: a broken recording contract is a violation, an
//! intractable address is [`Report::undecided`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::history::{Event, EventKind, OperationKind};
use crate::linearizability::{
    search, RegisterEffect, RegisterOperation, Search, FREE, T_BEFORE_FINAL, T_FINAL, T_OPTIONAL,
};
use crate::operation::{
    pair, unique_owners, IllFormed, Operation, Outcome, Owners, TypedOperation,
};
use crate::report::{FinalRead, Hold, HoldPair, Report, Summary, Violation};

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

/// Checks a history against the final state with the default [`Limits`]; see the crate
/// documentation for the properties and the model.
#[must_use]
pub fn check(history: &[Event], final_state: &FinalState) -> Report {
    check_with(history, final_state, &Limits::default())
}

/// [`check`] with explicit limits.
#[must_use]
pub fn check_with(history: &[Event], final_state: &FinalState, limits: &Limits) -> Report {
    let mut owners = Owners::default();
    let mut ill_formed = Vec::new();
    let mut operations = pair(history, &mut owners, &mut ill_formed);
    let alloc_of = unique_owners(&mut operations, &mut ill_formed);
    let mut violations: Vec<Violation> = ill_formed
        .into_iter()
        .map(|IllFormed { index, problem }| Violation::IllFormed {
            index,
            event: history[index].clone(),
            problem,
        })
        .collect();
    let fin = FinalView::new(final_state, &mut owners);
    resolve_addresses(&mut operations, &fin);

    let mut by_addr: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
    for (k, r) in operations.iter().enumerate() {
        if let (true, Some(a)) = (
            r.usable && r.operation.kind.is_address_operation(),
            r.operation.addr,
        ) {
            by_addr.entry(a).or_default().push(k);
        }
    }
    let checker = Checker {
        operations: &operations,
        owners: &owners,
        fin: &fin,
        alloc_of: &alloc_of,
    };

    // (a)
    for (&addr, ks) in &by_addr {
        checker.double_holds(addr, ks, &mut violations);
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
    let flagged = checker.durability(final_state, &mut violations);

    // (c)
    let mut undecided = Vec::new();
    for (&addr, ks) in &by_addr {
        let final_owner = if flagged.contains(&addr) {
            None
        } else {
            fin.final_owner(addr)
        };
        match checker.linearizable(addr, ks, final_owner, limits.max_steps_per_address) {
            Ok(()) => {}
            Err(None) => undecided.push(addr),
            Err(Some(v)) => violations.push(*v),
        }
    }

    // (d)
    crate::quarantine::check(
        history,
        &operations,
        |o| match o.operation.outcome {
            Outcome::Ok => true,
            Outcome::Fail => false,
            Outcome::Info | Outcome::Pending => match (o.operation.addr, o.owner) {
                (Some(a), Some(owner)) => !fin.holding(a, owner).is_empty(),
                _ => false,
            },
        },
        &mut violations,
    );

    let summary = summarize(history, &operations, by_addr.len());
    Report {
        violations,
        undecided,
        summary,
    }
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
fn resolve_addresses(operations: &mut [TypedOperation], fin: &FinalView) {
    let mut seen: HashMap<u32, (u64, IpAddr)> = HashMap::new();
    for r in operations.iter().filter(|r| r.usable) {
        let (Some(addr), Some(o)) = (r.operation.addr, r.read.or(r.held_by)) else {
            continue;
        };
        let t = r.operation.completion_ns.unwrap_or(r.operation.invoke_ns);
        let e = seen.entry(o).or_insert((t, addr));
        if t < e.0 {
            *e = (t, addr);
        }
    }
    for r in operations.iter_mut() {
        if !(r.usable
            && r.operation.kind == OperationKind::Allocate
            && r.operation.addr.is_none()
            && r.unknown())
        {
            continue;
        }
        let Some(o) = r.owner else { continue };
        let found = fin
            .owner_addrs
            .get(&o)
            .and_then(|s| s.iter().next().copied())
            .or_else(|| seen.get(&o).map(|&(_, a)| a));
        if found.is_some() {
            r.operation.addr = found;
            r.operation.addr_inferred = true;
        }
    }
}

/// One check's inputs, indexed: the typed operations, the owners' names, the final state, and
/// each owner's allocate (an index into `operations`).
struct Checker<'a> {
    operations: &'a [TypedOperation],
    owners: &'a Owners,
    fin: &'a FinalView,
    alloc_of: &'a HashMap<u32, usize>,
}

impl Checker<'_> {
    fn name(&self, id: u32) -> String {
        self.owners.name(id).to_owned()
    }

    /// (a) on one address.
    fn double_holds(&self, addr: IpAddr, ks: &[usize], out: &mut Vec<Violation>) {
        let operations = self.operations;
        let holds: Vec<usize> = ks
            .iter()
            .copied()
            .filter(|&k| {
                let r = &operations[k];
                r.operation.kind == OperationKind::Allocate
                    && match r.operation.outcome {
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
            let r = &operations[k];
            if r.operation.kind == OperationKind::Release && r.operation.outcome != Outcome::Fail {
                if let Some(o) = r.owner {
                    releases.entry(o).or_default().push(k);
                }
            }
        }
        // For each hold: its earliest release that may follow the allocate's invoke.
        let free_by: Vec<(u64, Option<usize>)> = holds
            .iter()
            .map(|&h| {
                let inv = operations[h].operation.invoke_ns;
                let rels = operations[h]
                    .owner
                    .and_then(|o| releases.get(&o))
                    .map_or(&[][..], Vec::as_slice);
                rels.iter()
                    .filter(|&&r| operations[r].end() > inv)
                    .map(|&r| (operations[r].operation.invoke_ns, Some(r)))
                    .min()
                    .unwrap_or((u64::MAX, None))
            })
            .collect();
        // Hold i may come first iff its allocate was invoked, and a release of it invoked,
        // before hold j's allocate completed.
        let precedes = |i: usize, j: usize| {
            let end_j = operations[holds[j]].end();
            operations[holds[i]].operation.invoke_ns < end_j && free_by[i].0 < end_j
        };
        let mut pairs = Vec::new();
        let mut total = 0;
        for i in 0..holds.len() {
            for j in i + 1..holds.len() {
                if operations[holds[i]].owner == operations[holds[j]].owner
                    || precedes(i, j)
                    || precedes(j, i)
                {
                    continue;
                }
                total += 1;
                if pairs.len() < LISTED {
                    let (a, b) = if operations[holds[i]].operation.invoke_ns
                        <= operations[holds[j]].operation.invoke_ns
                    {
                        (i, j)
                    } else {
                        (j, i)
                    };
                    let hold = |x: usize| Hold {
                        owner: operations[holds[x]]
                            .operation
                            .owner
                            .clone()
                            .unwrap_or_default(),
                        allocate: operations[holds[x]].operation.clone(),
                        release: free_by[x].1.map(|r| operations[r].operation.clone()),
                        in_final_state: operations[holds[x]]
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
        let operations = self.operations;
        let mut released: HashSet<(IpAddr, u32)> = HashSet::new();
        for r in operations.iter().filter(|r| {
            r.usable
                && r.operation.kind == OperationKind::Release
                && r.operation.outcome != Outcome::Fail
        }) {
            if let (Some(a), Some(o)) = (r.operation.addr, r.owner) {
                released.insert((a, o));
            }
        }
        for r in operations
            .iter()
            .filter(|r| r.usable && r.operation.outcome == Outcome::Ok)
        {
            let (Some(addr), Some(o)) = (r.operation.addr, r.owner) else {
                continue;
            };
            match r.operation.kind {
                OperationKind::Allocate if !released.contains(&(addr, o)) => {
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
                            allocate: Box::new(r.operation.clone()),
                            missing_on,
                        });
                    }
                }
                OperationKind::Release => {
                    let present_on = self.fin.holding(addr, o);
                    if present_on.is_empty() {
                        continue;
                    }
                    // An allocation of that owner that may have taken effect after the release
                    // explains it.
                    let may_follow =
                        self.alloc_of
                            .get(&o)
                            .map(|&k| &operations[k])
                            .is_some_and(|a| {
                                a.usable
                                    && match a.operation.outcome {
                                        Outcome::Info | Outcome::Pending => {
                                            a.operation.addr.is_none_or(|x| x == addr)
                                        }
                                        Outcome::Ok => {
                                            a.operation.addr == Some(addr)
                                                && a.end() > r.operation.invoke_ns
                                        }
                                        Outcome::Fail => false,
                                    }
                            });
                    if !may_follow {
                        flagged.insert(addr);
                        out.push(Violation::ReleasedStillPresent {
                            addr,
                            owner: self.name(o),
                            release: Box::new(r.operation.clone()),
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
            let alloc = self.alloc_of.get(&o).map(|&k| &operations[k]);
            let reason = match alloc {
                None => Some("no allocate in the history used this owner".to_owned()),
                Some(a) if !a.usable => None, // already reported as ill-formed
                Some(a) if a.operation.outcome == Outcome::Fail => {
                    Some("its allocate failed, so it had no effect".to_owned())
                }
                Some(a) => match a.operation.addr {
                    Some(x) if x == addr => None,
                    Some(x) if a.operation.addr_inferred => Some(format!(
                        "the same owner also holds {x}; one allocate holds one address"
                    )),
                    Some(x) if a.operation.outcome == Outcome::Ok => {
                        Some(format!("its allocate was granted {x}"))
                    }
                    Some(x) => Some(format!("its allocate requested {x}")),
                    None => Some("its allocate has no address".to_owned()),
                },
            };
            if let Some(reason) = reason {
                flagged.insert(addr);
                let allocate = alloc.map(|a| Box::new(a.operation.clone()));
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
        let operations = self.operations;
        let mut ks = ks.to_vec();
        ks.sort_by_key(|&k| {
            (
                operations[k].operation.invoke_ns,
                operations[k].operation.invoke_index,
            )
        });
        let mut register_operations: Vec<RegisterOperation> = Vec::with_capacity(ks.len() + 1);
        for &k in &ks {
            let r = &operations[k];
            let call = r.operation.invoke_ns;
            let ret = r.operation.completion_ns.unwrap_or(call);
            let (effect, mandatory, ret) = match (&r.operation.kind, r.operation.outcome, r.owner) {
                (OperationKind::Allocate, Outcome::Ok, Some(o)) => {
                    (RegisterEffect::Allocate(o), true, ret)
                }
                (OperationKind::Allocate, Outcome::Info | Outcome::Pending, Some(o)) => {
                    if self.fin.holding(addr, o).is_empty() {
                        (RegisterEffect::Allocate(o), false, T_OPTIONAL)
                    } else {
                        (RegisterEffect::Allocate(o), true, T_BEFORE_FINAL)
                    }
                }
                (OperationKind::Allocate, Outcome::Fail, _) => match r.held_by {
                    Some(h) if r.requested == Some(addr) => (RegisterEffect::HeldBy(h), true, ret),
                    _ => continue,
                },
                (OperationKind::Release, Outcome::Ok, Some(o)) => {
                    (RegisterEffect::Release(o), true, ret)
                }
                (OperationKind::Release, Outcome::Info | Outcome::Pending, Some(o)) => {
                    (RegisterEffect::Release(o), false, T_OPTIONAL)
                }
                (OperationKind::WhoHas, Outcome::Ok, _) => {
                    (RegisterEffect::Read(r.read.unwrap_or(FREE)), true, ret)
                }
                _ => continue,
            };
            register_operations.push(RegisterOperation {
                effect,
                call,
                ret,
                mandatory,
                source: Some(k),
            });
        }
        if let Some(f) = final_owner {
            register_operations.push(RegisterOperation {
                effect: RegisterEffect::Read(f.unwrap_or(FREE)),
                call: T_FINAL,
                ret: T_FINAL,
                mandatory: true,
                source: None,
            });
        }
        let (prefix, state) = match search(&register_operations, max_steps) {
            Search::Linearizable => return Ok(()),
            Search::Undecided => return Err(None),
            Search::Fail { prefix, state } => (prefix, state),
        };
        let in_prefix: HashSet<usize> = prefix.iter().copied().collect();
        let stuck = (0..register_operations.len())
            .filter(|i| register_operations[*i].mandatory && !in_prefix.contains(i))
            .min_by_key(|&i| (register_operations[i].ret, register_operations[i].call));
        let mut all: Vec<Operation> = ks
            .iter()
            .map(|&k| operations[k].operation.clone())
            .collect();
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
                .filter_map(|&i| register_operations[i].source)
                .map(|k| operations[k].operation.clone())
                .collect(),
            state_after: (state != FREE).then(|| self.name(state)),
            stuck_on: stuck
                .and_then(|i| register_operations[i].source)
                .map(|k| Box::new(operations[k].operation.clone())),
            operations: all,
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

/// The counts of [`Summary`]: events and pending operations per operation name, processes,
/// time span, and the times of the `ok` completions.
fn summarize(history: &[Event], operations: &[TypedOperation], addresses: usize) -> Summary {
    let mut s = Summary {
        events: history.len(),
        addresses,
        ..Summary::default()
    };
    let mut processes = HashSet::new();
    for e in history {
        processes.insert(e.process);
        let c = s
            .by_operation
            .entry(e.operation.as_str().to_owned())
            .or_default();
        match e.kind {
            EventKind::Invoke => c.invoke += 1,
            EventKind::Ok => {
                c.ok += 1;
                s.ok_times.push(e.t_ns);
            }
            EventKind::Fail => c.fail += 1,
            EventKind::Info => c.info += 1,
        }
        s.first_ns = Some(s.first_ns.map_or(e.t_ns, |t| t.min(e.t_ns)));
        s.last_ns = Some(s.last_ns.map_or(e.t_ns, |t| t.max(e.t_ns)));
    }
    for r in operations
        .iter()
        .filter(|r| r.operation.outcome == Outcome::Pending)
    {
        s.by_operation
            .entry(r.operation.kind.as_str().to_owned())
            .or_default()
            .pending += 1;
    }
    s.processes = processes.len();
    s.ok_times.sort_unstable();
    s
}
