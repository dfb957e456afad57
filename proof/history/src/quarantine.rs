//! (d) Quarantine: an address a host reported a conflict on (a foreign device answering for
//! it on the LAN) while it was free is not handed out while the report stands.
//!
//! The workload records `report_conflict` operations (invoke value `{pool, addr, mac}`, `ok`
//! value `{pool, addr, quarantined}`: `quarantined` true when the address was free or cooling
//! and went into quarantine, false for a duplicate alarm on a held address) and
//! `clear_conflict` operations (`{pool, addr}`). The run keeps the pool's probation far longer
//! than the run (24 h by default), so a quarantine ends only by a clear.
//!
//! The rule: for an acknowledged report `R` with `quarantined: true` on address `A`, an
//! allocation of `A` that happened (`ok`, or unknown and present in the final state) and was
//! invoked after `R` completed is a violation, unless a clear of `A` that may have taken
//! effect (`ok` or unknown) could lie between the two: invoked before the allocation
//! completed, and not completed before `R` was invoked. An allocation invoked before `R`
//! completed may legitimately precede the report (the report then finds the address held or
//! cooling), so it is not judged. The final state needs no check of its own: an allocation in
//! it was invoked in the history (else it is reported under (b)), and is judged here.
//!
//! This module only reads values of the two conflict operations; it must never judge the
//! address operations themselves (the other properties do).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::history::{Event, OperationKind};
use crate::operation::{Outcome, TypedOperation};
use crate::report::Violation;

/// The name of a conflict report in the history's `op` field.
pub const REPORT_CONFLICT: &str = "report_conflict";
/// The name of a conflict clear in the history's `op` field.
pub const CLEAR_CONFLICT: &str = "clear_conflict";

/// How many allocations one violation lists before it only counts the rest.
const LISTED: usize = 16;

fn addr_of(v: &serde_json::Value) -> Option<IpAddr> {
    v.get("addr")?.as_str()?.parse().ok()
}

fn is(op: &TypedOperation, name: &str) -> bool {
    matches!(&op.operation.kind, OperationKind::Other(n) if n == name)
}

/// Appends a [`Violation::QuarantinedHandedOut`] for every acknowledged quarantine whose
/// address an allocation handed out while it stood. `happened` says whether an allocation
/// took effect (`ok`, or unknown and present in the final state).
pub(crate) fn check(
    history: &[Event],
    operations: &[TypedOperation],
    happened: impl Fn(&TypedOperation) -> bool,
    out: &mut Vec<Violation>,
) {
    // Per address: the quarantining reports, the clears that may have taken effect, the
    // allocations that happened.
    let mut reports: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
    let mut clears: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
    for (k, o) in operations.iter().enumerate() {
        if is(o, REPORT_CONFLICT) && o.operation.outcome == Outcome::Ok {
            let Some(done) = o.operation.completion_index.map(|i| &history[i]) else {
                continue;
            };
            let quarantined = done.value.get("quarantined").and_then(|q| q.as_bool());
            if let (Some(true), Some(a)) = (
                quarantined,
                addr_of(&done.value).or_else(|| addr_of(&history[o.operation.invoke_index].value)),
            ) {
                reports.entry(a).or_default().push(k);
            }
        } else if is(o, CLEAR_CONFLICT) && o.operation.outcome != Outcome::Fail {
            if let Some(a) = addr_of(&history[o.operation.invoke_index].value) {
                clears.entry(a).or_default().push(k);
            }
        }
    }
    if reports.is_empty() {
        return;
    }
    let mut allocations: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
    for (k, o) in operations.iter().enumerate() {
        if let (OperationKind::Allocate, true, Some(a)) =
            (&o.operation.kind, o.usable, o.operation.addr)
        {
            if reports.contains_key(&a) && happened(o) {
                allocations.entry(a).or_default().push(k);
            }
        }
    }
    let none = Vec::new();
    for (addr, rs) in &reports {
        let cs = clears.get(addr).unwrap_or(&none);
        for &r in rs {
            let report = &operations[r].operation;
            let Some(acked) = report.completion_ns else {
                continue;
            };
            let inside: Vec<usize> = allocations
                .get(addr)
                .unwrap_or(&none)
                .iter()
                .copied()
                .filter(|&a| {
                    let alloc = &operations[a];
                    if alloc.operation.invoke_ns <= acked {
                        return false;
                    }
                    let alloc_end = alloc.operation.completion_ns.unwrap_or(u64::MAX);
                    !cs.iter().any(|&c| {
                        let clear = &operations[c].operation;
                        let clear_end = match clear.outcome {
                            Outcome::Ok => clear.completion_ns.unwrap_or(u64::MAX),
                            _ => u64::MAX,
                        };
                        clear.invoke_ns < alloc_end && clear_end > report.invoke_ns
                    })
                })
                .collect();
            if inside.is_empty() {
                continue;
            }
            out.push(Violation::QuarantinedHandedOut {
                addr: *addr,
                report: Box::new(report.clone()),
                total: inside.len(),
                allocations: inside
                    .iter()
                    .take(LISTED)
                    .map(|&a| operations[a].operation.clone())
                    .collect(),
            });
        }
    }
}
