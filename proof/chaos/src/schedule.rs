//! The fault schedule of a chaos run: drawn from a seed, written as JSON, replayable.
//!
//! A schedule is a list of [`Fault`]s, each at a time (ms after the workload starts) for a
//! duration, against targets named by role at that moment (the leader, a follower, a
//! minority with or without the leader...), resolved when the fault starts. The same seed and
//! settings always draw the same schedule ([`SplitMix64`], in `rng`, is ours, so it never changes with a
//! dependency's version); `--schedule FILE` replays one as written.

use serde::{Deserialize, Serialize};

use super::proxy::LinkFault;
pub use super::rng::SplitMix64;

/// Whom a fault hits, resolved when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The leader at that moment.
    Leader,
    /// A follower at that moment.
    Follower,
    /// Every node.
    All,
    /// A minority that contains the leader (the leader loses its quorum).
    MinorityWithLeader,
    /// A minority without the leader (the leader keeps its quorum).
    MinorityWithoutLeader,
}

/// What happens to the targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL, restarted from its data directory when the fault ends. An outage longer than
    /// the election timeout (and past a snapshot) makes the node catch up from a snapshot.
    Kill,
    /// SIGSTOP, SIGCONT when the fault ends (a paused process: a GC pause, a frozen VM).
    Pause,
    /// The targets cannot reach the others nor the others them (blackhole routes both ways).
    Partition,
    /// The targets cannot send to the others (their replies and requests are lost); the others
    /// still reach them.
    PartitionOneWay,
    /// A bridge: the targets split into two sides that cannot talk, with one node in the middle
    /// that talks to both (targets must be [`Target::All`]).
    Bridge,
    /// A membership change: the target is removed from the cluster (the leader too), its data
    /// wiped, and when the fault ends it joins again under a new id (a learner that catches up
    /// from a snapshot, then a voter).
    Rejoin,
    /// Growth and shrinkage: two spare nodes join as voters (3 → 5, or 5 → 7), and when the
    /// fault ends two voters — the leader and one other — are removed and wiped (back to 3).
    Grow,
    /// Every connection to the targets is slow: each chunk held a fixed delay plus jitter
    /// (through the node's proxy, [`super::proxy`]).
    Delay,
    /// Chunks to and from the targets are "lost" now and then: they arrive after a TCP
    /// retransmission timeout, and the rest of their connection waits behind them.
    Loss,
    /// Chunks to and from the targets get a wide random delay, so messages on different
    /// connections overtake each other.
    Reorder,
    /// The targets' connections carry only a few KiB a second (snapshots and catch-up crawl).
    Slow,
    /// A host floods the targets ([`crate::flood`]): many connections of full-map reads, the
    /// largest junk reports the nodes take, heartbeats too long to be taken.
    Flood,
    /// A rogue node attacks the targets ([`crate::rogue`]): node certificates of the cluster's
    /// CA bound to ids that are no member's (never added; removed earlier in the run) send
    /// Raft messages with a far higher term and calls forwarded as an admin. The run uses
    /// mutual TLS when its kinds or schedule have this one.
    RogueNode,
}

impl FaultKind {
    /// Faults made by the nodes' proxies (the run puts one in front of each node).
    pub fn is_link(self) -> bool {
        matches!(
            self,
            FaultKind::Delay | FaultKind::Loss | FaultKind::Reorder | FaultKind::Slow
        )
    }
}

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// When it starts, ms after the workload started.
    pub t_ms: u64,
    /// What.
    pub fault: FaultKind,
    /// Whom.
    pub targets: Target,
    /// How long, ms.
    pub duration_ms: u64,
    /// What the proxies do, for the link faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkFault>,
}

/// Settings the schedule is drawn for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Nodes in the cluster (3 or 5).
    pub nodes: usize,
    /// Length of the workload, ms; faults end by then.
    pub duration_ms: u64,
    /// Fault-free time at the start (the workload must succeed before the first fault).
    pub warmup_ms: u64,
    /// The node's election timeout upper bound, ms (long kills outlast it).
    pub election_ms: u64,
    /// Which kinds to draw from.
    pub kinds: Vec<FaultKind>,
    /// End with every node killed at once, then restarted.
    pub kill_all: bool,
}

/// Draws a schedule: faults one after another (each healed before the next), with gaps.
pub fn draw(seed: u64, plan: &Plan) -> Vec<Fault> {
    let mut rng = SplitMix64::new(seed ^ 0x5eed_c4a0_5000_0000);
    let mut out = Vec::new();
    // The last 15 s stay quiet: the cluster must be whole again before the run ends.
    let end = plan.duration_ms.saturating_sub(15_000);
    let mut t = plan.warmup_ms;
    let kinds = if plan.kinds.is_empty() {
        vec![FaultKind::Kill]
    } else {
        plan.kinds.clone()
    };
    let mut kill_all = plan.kill_all;
    while t < end {
        let kind = *rng.pick(&kinds);
        let duration_ms = match kind {
            // Shorter than the election timeout, or long enough to need a snapshot.
            FaultKind::Kill if rng.chance(0.5) => rng.range(200, plan.election_ms),
            FaultKind::Kill => rng.range(plan.election_ms * 4, plan.election_ms * 8),
            FaultKind::Pause => rng.range(plan.election_ms / 2, plan.election_ms * 4),
            k if k.is_link() => rng.range(plan.election_ms * 3, plan.election_ms * 8),
            _ => rng.range(plan.election_ms * 2, plan.election_ms * 6),
        };
        let targets = match kind {
            FaultKind::Bridge | FaultKind::Grow => Target::All,
            FaultKind::Kill | FaultKind::Pause | FaultKind::Rejoin => {
                *rng.pick(&[Target::Leader, Target::Follower])
            }
            FaultKind::Delay
            | FaultKind::Loss
            | FaultKind::Reorder
            | FaultKind::Slow
            | FaultKind::Flood
            | FaultKind::RogueNode => *rng.pick(&[Target::Leader, Target::Follower, Target::All]),
            FaultKind::Partition | FaultKind::PartitionOneWay => *rng.pick(&[
                Target::Leader,
                Target::Follower,
                Target::MinorityWithLeader,
                Target::MinorityWithoutLeader,
            ]),
        };
        let (targets, kind) = if kill_all && t + duration_ms > end / 2 {
            kill_all = false;
            (Target::All, FaultKind::Kill)
        } else {
            (targets, kind)
        };
        // Some delays reach past the election timeout: elections under a slow network.
        let link = match kind {
            FaultKind::Delay => Some(LinkFault::Delay {
                ms: rng.range(10, plan.election_ms / 4),
                jitter_ms: rng.range(0, plan.election_ms / 8),
            }),
            FaultKind::Loss => Some(LinkFault::Loss {
                percent: rng.range(5, 40) as u8,
            }),
            FaultKind::Reorder => Some(LinkFault::Delay {
                ms: 0,
                jitter_ms: rng.range(20, 120),
            }),
            FaultKind::Slow => Some(LinkFault::Slow {
                bytes_per_s: rng.range(8, 64) * 1024,
            }),
            _ => None,
        };
        if t + duration_ms >= end {
            break;
        }
        out.push(Fault {
            t_ms: t,
            fault: kind,
            targets,
            duration_ms,
            link,
        });
        t += duration_ms + rng.range(1_000, 4_000);
    }
    out
}

#[cfg(test)]
mod tests {

    /// The CI scenario `growth_to_five_and_back_with_the_leader_removed` (seed 409, 60 s,
    /// grow, kill, flood, rogue node; the run's 5 s warm-up and 2 s election timeout) draws
    /// every one of them — the growth, whose shrink removes the leader, under mutual TLS (the
    /// rogue needs it): its passing says something about each.
    #[test]
    fn the_ci_growth_scenario_draws_a_flood() {
        let all = [
            FaultKind::Grow,
            FaultKind::Kill,
            FaultKind::Flood,
            FaultKind::RogueNode,
        ];
        let plan = Plan {
            nodes: 3,
            duration_ms: 60_000,
            warmup_ms: 5_000,
            election_ms: 2_000,
            kinds: all.to_vec(),
            kill_all: false,
        };
        let kinds: Vec<FaultKind> = draw(409, &plan).iter().map(|f| f.fault).collect();
        for k in all {
            assert!(kinds.contains(&k), "{k:?} is not drawn: {kinds:?}");
        }
    }

    /// The CI scenario `mixed_faults_on_three_nodes` (seed 136, 90 s, kill, pause, partition,
    /// one-way, bridge and rogue node, every node killed once) draws every one of its kinds,
    /// the rogue node among them: its passing says something about the rogue.
    #[test]
    fn the_ci_mixed_scenario_draws_every_kind_and_a_rogue_node() {
        let plan = Plan {
            nodes: 3,
            duration_ms: 90_000,
            warmup_ms: 5_000,
            election_ms: 2_000,
            kinds: vec![
                FaultKind::Kill,
                FaultKind::Pause,
                FaultKind::Partition,
                FaultKind::PartitionOneWay,
                FaultKind::Bridge,
                FaultKind::RogueNode,
            ],
            kill_all: true,
        };
        let kinds: Vec<FaultKind> = draw(136, &plan).iter().map(|f| f.fault).collect();
        for k in &plan.kinds {
            assert!(kinds.contains(k), "{k:?} is not drawn: {kinds:?}");
        }
        // The kind's name in a schedule.json.
        assert_eq!(
            serde_json::to_string(&FaultKind::RogueNode).expect("json"),
            "\"rogue_node\""
        );
    }

    use super::*;

    fn plan() -> Plan {
        Plan {
            nodes: 3,
            duration_ms: 90_000,
            warmup_ms: 5_000,
            election_ms: 1_000,
            kinds: vec![
                FaultKind::Kill,
                FaultKind::Pause,
                FaultKind::Partition,
                FaultKind::PartitionOneWay,
                FaultKind::Bridge,
                FaultKind::Rejoin,
                FaultKind::Grow,
                FaultKind::Delay,
                FaultKind::Loss,
                FaultKind::Reorder,
                FaultKind::Slow,
            ],
            kill_all: true,
        }
    }

    #[test]
    fn a_seed_draws_one_schedule_and_seeds_differ() {
        let p = plan();
        assert_eq!(draw(7, &p), draw(7, &p));
        assert_ne!(draw(7, &p), draw(8, &p));
    }

    #[test]
    fn faults_follow_each_other_inside_the_run_and_kill_all_comes_once() {
        let p = plan();
        for seed in 0..200 {
            let s = draw(seed, &p);
            assert!(!s.is_empty(), "seed {seed}: no fault");
            assert!(s[0].t_ms >= p.warmup_ms);
            for w in s.windows(2) {
                assert!(
                    w[0].t_ms + w[0].duration_ms < w[1].t_ms,
                    "seed {seed}: overlap"
                );
            }
            let last = s.last().expect("a fault");
            assert!(last.t_ms + last.duration_ms < p.duration_ms - 15_000);
            let all = s
                .iter()
                .filter(|f| f.fault == FaultKind::Kill && f.targets == Target::All)
                .count();
            assert!(all <= 1, "seed {seed}: {all} kill-alls");
            let json = serde_json::to_string(&s).expect("json");
            let back: Vec<Fault> = serde_json::from_str(&json).expect("back");
            assert_eq!(back, s);
        }
    }

    #[test]
    fn link_faults_carry_what_the_proxies_do_and_the_others_nothing() {
        let p = plan();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            for f in draw(seed, &p) {
                assert_eq!(f.fault.is_link(), f.link.is_some(), "seed {seed}: {f:?}");
                match (f.fault, f.link) {
                    (FaultKind::Delay, Some(LinkFault::Delay { ms, .. })) => assert!(ms >= 10),
                    (FaultKind::Reorder, Some(LinkFault::Delay { ms, jitter_ms })) => {
                        assert_eq!(ms, 0);
                        assert!(jitter_ms >= 20);
                    }
                    (FaultKind::Loss, Some(LinkFault::Loss { percent })) => {
                        assert!((5..=40).contains(&percent))
                    }
                    (FaultKind::Slow, Some(LinkFault::Slow { bytes_per_s })) => {
                        assert!(bytes_per_s >= 8 * 1024)
                    }
                    (k, l) => assert!(!k.is_link() && l.is_none(), "seed {seed}: {k:?} with {l:?}"),
                }
                seen.insert(format!("{:?}", f.fault));
            }
        }
        for k in ["Delay", "Loss", "Reorder", "Slow"] {
            assert!(seen.contains(k), "no {k} drawn in 200 seeds");
        }
        // A schedule written before link faults existed (no "link" field) still reads.
        let old = r#"[{"t_ms":5000,"fault":"kill","targets":"leader","duration_ms":900}]"#;
        let back: Vec<Fault> = serde_json::from_str(old).expect("old schedule");
        assert_eq!(back[0].link, None);
    }

    #[test]
    fn splitmix_stays_the_same_generator() {
        // Schedules written by earlier runs must replay: the generator's output is fixed.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }
}
