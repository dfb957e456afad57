//! What the integration tests share: a tiny history builder, final states, assertions, and a
//! generator of random valid histories from a reference model.
//!
//! Test support only: it must never be used outside `tests/`, and it only builds histories
//! through the crate's public types (what a harness can write). Each test file uses part of it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use raftipam_history::*;

pub const POOL: &str = "global/10.0.0.0/24";

/// A tiny history builder: each call records one whole operation (invoke and completion
/// at the given times); `build` sorts the events by time, as a harness log would be.
#[derive(Default)]
pub struct Builder {
    pub events: Vec<Event>,
}

pub fn val(addr: Option<&str>, owner: Option<&str>) -> serde_json::Value {
    AddrValue {
        pool: Some(POOL.into()),
        addr: addr.map(|a| a.parse().unwrap()),
        owner: owner.map(Into::into),
        held_by: None,
    }
    .into()
}

impl Builder {
    pub fn ev(
        &mut self,
        process: u64,
        kind: EventKind,
        op: OperationKind,
        value: serde_json::Value,
        t_ns: u64,
    ) -> &mut Self {
        self.events.push(Event {
            process,
            kind,
            operation: op,
            value,
            node: Some(1),
            t_ns,
        });
        self
    }
    pub fn alloc_ok(&mut self, p: u64, owner: &str, addr: &str, t0: u64, t1: u64) -> &mut Self {
        self.ev(
            p,
            EventKind::Invoke,
            OperationKind::Allocate,
            val(None, Some(owner)),
            t0,
        )
        .ev(
            p,
            EventKind::Ok,
            OperationKind::Allocate,
            val(Some(addr), Some(owner)),
            t1,
        )
    }
    pub fn alloc_info(
        &mut self,
        p: u64,
        owner: &str,
        req: Option<&str>,
        t0: u64,
        t1: u64,
    ) -> &mut Self {
        self.ev(
            p,
            EventKind::Invoke,
            OperationKind::Allocate,
            val(req, Some(owner)),
            t0,
        )
        .ev(
            p,
            EventKind::Info,
            OperationKind::Allocate,
            serde_json::json!({"error": "timeout"}),
            t1,
        )
    }
    pub fn alloc_fail(
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
            EventKind::Invoke,
            OperationKind::Allocate,
            val(Some(req), Some(owner)),
            t0,
        )
        .ev(p, EventKind::Fail, OperationKind::Allocate, v, t1)
    }
    pub fn release(
        &mut self,
        p: u64,
        owner: &str,
        addr: &str,
        t0: u64,
        t1: u64,
        kind: EventKind,
    ) -> &mut Self {
        self.ev(
            p,
            EventKind::Invoke,
            OperationKind::Release,
            val(Some(addr), Some(owner)),
            t0,
        )
        .ev(
            p,
            kind,
            OperationKind::Release,
            val(Some(addr), Some(owner)),
            t1,
        )
    }
    /// A conflict report on `addr` completed with `kind`; an `ok` one says whether the address
    /// went into quarantine (it was free) or was held (a duplicate alarm).
    pub fn report_conflict(
        &mut self,
        p: u64,
        addr: &str,
        quarantined: bool,
        t0: u64,
        t1: u64,
        kind: EventKind,
    ) -> &mut Self {
        let op = || OperationKind::Other(REPORT_CONFLICT.into());
        let done = match kind {
            EventKind::Ok => {
                serde_json::json!({"pool": POOL, "addr": addr, "quarantined": quarantined})
            }
            _ => serde_json::json!({"pool": POOL, "addr": addr, "error": "refused"}),
        };
        self.ev(
            p,
            EventKind::Invoke,
            op(),
            serde_json::json!({"pool": POOL, "addr": addr, "mac": "02:00:00:00:00:01"}),
            t0,
        )
        .ev(p, kind, op(), done, t1)
    }
    /// An operator's clear of the conflict on `addr`, completed with `kind`.
    pub fn clear_conflict(
        &mut self,
        p: u64,
        addr: &str,
        t0: u64,
        t1: u64,
        kind: EventKind,
    ) -> &mut Self {
        let op = || OperationKind::Other(CLEAR_CONFLICT.into());
        let v = serde_json::json!({"pool": POOL, "addr": addr});
        self.ev(p, EventKind::Invoke, op(), v.clone(), t0)
            .ev(p, kind, op(), v, t1)
    }
    pub fn read(
        &mut self,
        p: u64,
        addr: &str,
        result: Option<&str>,
        t0: u64,
        t1: u64,
    ) -> &mut Self {
        self.ev(
            p,
            EventKind::Invoke,
            OperationKind::WhoHas,
            serde_json::json!({ "addr": addr }),
            t0,
        )
        .ev(
            p,
            EventKind::Ok,
            OperationKind::WhoHas,
            val(Some(addr), result),
            t1,
        )
    }
    pub fn build(&self) -> Vec<Event> {
        let mut v = self.events.clone();
        v.sort_by_key(|e| e.t_ns);
        v
    }
}

/// The same entries on nodes 1, 2 and 3.
pub fn fin(entries: &[(&str, &str)]) -> FinalState {
    let e: Vec<(IpAddr, String)> = entries
        .iter()
        .map(|(a, o)| (a.parse().unwrap(), o.to_string()))
        .collect();
    FinalState {
        replicas: (1..=3).map(|n| (n, e.clone())).collect(),
        digests: BTreeMap::new(),
    }
}

pub fn kinds(r: &Report) -> Vec<&'static str> {
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
            Violation::QuarantinedHandedOut { .. } => "quarantined_handed_out",
        })
        .collect()
}

pub fn assert_passes(h: &[Event], f: &FinalState) -> Report {
    let r = check(h, f);
    assert!(r.passed(), "expected a pass:\n{r}");
    r
}

pub fn assert_fails_with(h: &[Event], f: &FinalState, kind: &str) -> Report {
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

/// `k` owners each allocate and release 10.0.0.1, all in one window: an exponential
/// number of orders for the search to try.
pub fn owners_taking_turns(k: u64) -> Builder {
    let mut b = Builder::default();
    for i in 0..k {
        let o = format!("o{i}");
        b.alloc_ok(2 * i, &o, "10.0.0.1", 10 + i, 1000 + i).release(
            2 * i + 1,
            &o,
            "10.0.0.1",
            20 + i,
            1100 + i,
            EventKind::Ok,
        );
    }
    b
}

/// splitmix64: a small seeded PRNG (no `rand` crate).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Generates a valid history: a sequence of operations applied to a reference allocator
/// at linearization points 1000 ns apart, then made concurrent by giving each an invoke
/// before and a completion after its point, on client processes that each run one
/// operation at a time. Some operations end `info` (taking effect or not, possibly after
/// the info was recorded) or never complete; some fail (with or without `held_by`).
pub fn generate(
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
    let push = |events: &mut Vec<Event>, p: u64, kind, op: OperationKind, value, t| {
        events.push(Event {
            process: p,
            kind,
            operation: op,
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
                    EventKind::Ok,
                    AddrValue {
                        pool: Some(POOL.into()),
                        addr: Some(a),
                        owner: Some(owner),
                        held_by: None,
                    }
                    .into(),
                ),
                Err(Some(h)) if rng.chance(50) => {
                    (EventKind::Fail, serde_json::json!({ "held_by": h }))
                }
                Err(_) => (EventKind::Fail, serde_json::json!({ "error": "refused" })),
            };
            (OperationKind::Allocate, iv, dk, dv)
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
            (OperationKind::Release, v.clone(), EventKind::Ok, v)
        } else {
            let a = addrs[rng.below(addrs.len() as u64) as usize];
            let r = held.get(&a).cloned();
            (
                OperationKind::WhoHas,
                serde_json::json!({ "addr": a }),
                EventKind::Ok,
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
            EventKind::Invoke,
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
                    EventKind::Info,
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

pub fn reads(h: &[Event]) -> Vec<usize> {
    (0..h.len())
        .filter(|&i| h[i].operation == OperationKind::WhoHas && h[i].kind == EventKind::Ok)
        .collect()
}
