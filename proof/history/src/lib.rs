//! raftipam's history checker: did the cluster keep its promises under faults?
//!
//! The chaos harness (`raftipam-chaos`, the crate beside this one) runs a real 3- or 5-node cluster under
//! faults (`kill -9`, pauses, partitions) while concurrent client processes allocate, release
//! and read addresses. It records every operation as JSON lines (one [`Event`] per line, parsed
//! by [`parse_history`]) and, after healing, reads every replica's allocations
//! ([`FinalState`]). [`check`] then looks for every violation (not just the first) of:
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
//! - **(d) quarantine** — an address whose conflict report was acknowledged while it was free
//!   (a foreign device answers for it) is not handed out by an allocation invoked after that
//!   acknowledgement, unless a clear of the conflict could have come between the two
//!   ([`Violation::QuarantinedHandedOut`]; the `report_conflict` and `clear_conflict`
//!   operations, [`REPORT_CONFLICT`], [`CLEAR_CONFLICT`]);
//!
//! and counts what happened ([`Summary`], with [`Summary::ok_before`] for "enough successful
//! operations before the first fault"). A history that breaks its own recording contract is
//! reported too ([`Violation::IllFormed`]): a checker that silently skipped such events would
//! vouch for operations it never looked at.
//!
//! This crate is pure: text and values in, a [`Report`] out. It starts no process, touches no
//! file or network, and depends on nothing of raftipam (only `serde` and `serde_json`), so it
//! builds and tests in seconds, without RocksDB.
//!
//! ```
//! use raftipam_history::{check, parse_history, FinalState};
//!
//! // Client process 1 allocates any free address for owner `h1/o1` and gets 10.0.0.5;
//! // process 2 then reads who holds it.
//! let text = r#"
//! {"process":1,"type":"invoke","op":"allocate","value":{"pool":"global/10.0.0.0/24","addr":null,"owner":"h1/o1"},"node":null,"t_ns":100}
//! {"process":1,"type":"ok","op":"allocate","value":{"pool":"global/10.0.0.0/24","addr":"10.0.0.5","owner":"h1/o1"},"node":null,"t_ns":200}
//! {"process":2,"type":"invoke","op":"who_has","value":{"addr":"10.0.0.5"},"node":null,"t_ns":300}
//! {"process":2,"type":"ok","op":"who_has","value":{"addr":"10.0.0.5","owner":"h1/o1"},"node":null,"t_ns":400}
//! "#;
//! let history = parse_history(text).unwrap();
//! assert_eq!(history.events.len(), 4);
//!
//! // Both replicas still hold the allocation after the run.
//! let held = vec![("10.0.0.5".parse().unwrap(), "h1/o1".to_owned())];
//! let final_state = FinalState {
//!     replicas: [(1, held.clone()), (2, held)].into(),
//!     ..FinalState::default()
//! };
//! let report = check(&history, &final_state);
//! assert!(report.passed(), "{report}");
//! assert_eq!(report.summary.ok(), 2);
//!
//! // Had the replicas lost it, the report would say so.
//! let lost = FinalState {
//!     replicas: [(1, vec![]), (2, vec![])].into(),
//!     ..FinalState::default()
//! };
//! let report = check(&history, &lost);
//! assert!(report.of_property("durability").next().is_some(), "{report}");
//! ```
//!
//! # The model
//!
//! Each [`Operation`] is an invoke and (usually) a completion by the same client process
//! ([`Outcome`]):
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
//! Not checked: whether a refusal other than `held_by` ("pool full", "quarantined") was
//! justified, and anything about operations other than the three address operations and the
//! conflict reports and clears of (d).
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

//!
//! # Layout
//!
//! One module per concern, everything re-exported here:
//!
//! - `history`: the record format, one line ([`Event`]) and one file ([`parse_history`],
//!   [`History`]);
//! - `operation`: an invoke paired with its completion ([`Operation`], [`Outcome`]);
//! - `report`: what was found ([`Report`], [`Violation`], [`Summary`]);
//! - `checker`: the properties ([`check`], [`check_with`], [`Limits`], [`FinalState`]);
//! - `linearizability`: the search behind (c), on one address's register;
//! - `quarantine`: (d), conflict reports against allocations.
//!
//! # Names
//!
//! An [`Event`] is one recorded line (an invoke or a completion, [`EventKind`]); an
//! [`Operation`] is an invoke paired with its completion; which operation it is (allocate,
//! release, who_has, ...) is its [`OperationKind`] (the JSON field `op`).

#![deny(missing_docs)]

mod checker;
mod history;
mod linearizability;
mod operation;
mod quarantine;
mod report;

pub use checker::{check, check_with, FinalState, Limits, DEFAULT_MAX_STEPS_PER_ADDRESS};
pub use history::{
    parse_history, AddrValue, Event, EventKind, History, OperationKind, ParseError, TruncatedLine,
};
pub use operation::{Operation, Outcome};
pub use quarantine::{CLEAR_CONFLICT, REPORT_CONFLICT};
pub use report::{FinalRead, Hold, HoldPair, OperationCounts, Report, Summary, Violation};
