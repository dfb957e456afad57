//! What the fuzz targets run (`allocator-core/fuzz/`, cargo-fuzz on nightly), kept here so that
//! a stable test replays their committed corpora in CI (`tests/fuzz_corpus.rs`).
//!
//! Both panic on a broken promise — that is how a fuzzer sees it — and never on bad input.

use std::net::IpAddr;

use crate::report::{HostReport, ReportedLeak};
use crate::{Command, Detection, Mac, Op, Order, Owner, PoolId, PoolSpec, State};

/// Decodes `data` as a snapshot. A decoded state must hold every invariant and encode back to
/// the same bytes it decodes from again.
pub fn snapshot_decode(data: &[u8]) {
    if let Ok(st) = State::from_snapshot(data) {
        if let Err(e) = st.check_invariants() {
            panic!("a snapshot decoded to a broken state: {e}");
        }
        let again = st.to_snapshot();
        let st2 = State::from_snapshot(&again).expect("a state's own snapshot decodes");
        assert_eq!(st2.to_snapshot(), again, "snapshot encoding is not stable");
    }
}

/// Subnets (and ranges) the program's pools use: small ones so addresses run out, overlapping
/// ones so overlaps are refused, IPv6 ones, a shared subnet with a range.
const POOLS: &[(&str, Option<&str>)] = &[
    ("10.0.0.0/30", None),
    ("10.0.0.0/24", None),
    ("10.1.0.0/24", Some("10.1.0.128/25")),
    ("10.1.0.0/24", None),
    ("fd00::/126", None),
    ("fd00:1::/64", None),
];
const HOSTS: &[&str] = &["h1", "h2", "h3"];

fn pool_id(i: u8) -> PoolId {
    let (net, range) = POOLS[i as usize % POOLS.len()];
    PoolId::new(
        "global",
        net.parse().expect("constant subnet"),
        range.map(|r| r.parse().expect("constant range")),
    )
}

fn addr_in(pool: &PoolId, k: u8) -> IpAddr {
    let net = pool.subnet;
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(u32::from(k))).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(u128::from(k))).into()),
    }
}

/// Runs `data` as a program of commands, 4 bytes each (`op, a, b, c`), through
/// [`State::apply`]: pools requested, released and deleted, reservations, allocations (given
/// addresses and not, every order), releases (forced and not), heartbeats, reports naming
/// leaks, and snapshot round trips; op bytes 247 to 255 report a host's LAN checks, record a
/// container's MAC, raise the cluster version to 2 and report, clear and set the probation
/// of conflicts on the LAN. Every outcome is allowed;
/// every invariant must hold after every step, and a failed command must change nothing.
pub fn apply_program(data: &[u8]) {
    let mut st = State::default();
    let mut at_ms = 1_700_000_000_000u64;
    for (step, w) in data.chunks_exact(4).enumerate().take(4096) {
        let (op, a, b, c) = (w[0], w[1], w[2], w[3]);
        at_ms += u64::from(c) * 250;
        let pool = pool_id(a);
        let host = HOSTS[b as usize % HOSTS.len()];
        let op = match op {
            247 => Op::ReportLanChecks {
                host: host.into(),
                checks: vec![crate::LanCheck {
                    subnet: pool.subnet,
                    interface: "eth0".into(),
                    off: (c & 1 == 1).then(|| "no CAP_NET_RAW".to_string()),
                }],
            },
            248 => Op::RecordMac {
                addr: addr_in(&pool, c),
                pool,
                host: host.into(),
                seq: u64::from(c),
                mac: Mac([b & 0x02, 0x42, 0, 0, 0, c]),
            },
            249 => Op::SetClusterVersion { version: 2 },
            250..=253 => Op::ReportConflict {
                addr: addr_in(&pool, c),
                pool,
                // Sometimes a MAC no device has (all zeros): refused.
                mac: Mac([b & 0x02, 0, 0, 0, 0, b >> 2]),
                host: host.into(),
                how: [
                    Detection::Probe,
                    Detection::Watch,
                    Detection::Sweep,
                    Detection::Import,
                ][usize::from(op - 250)],
            },
            254 => Op::ClearConflict {
                addr: addr_in(&pool, c),
                pool,
            },
            255 => Op::SetProbation {
                pool,
                probation_ms: u64::from(c) * 1_000,
            },
            _ => match op % 10 {
                0 => {
                    let (net, range) = POOLS[a as usize % POOLS.len()];
                    Op::RequestPool {
                        spec: PoolSpec {
                            space: "global".into(),
                            subnet: net.parse().ok(),
                            range: range.and_then(|r| r.parse().ok()),
                            serial: c & 1 == 1,
                            cooldown_ms: u64::from(c & 2) * 1_000,
                            ..Default::default()
                        },
                        holder: host.into(),
                    }
                }
                1 => Op::ReleasePool {
                    pool,
                    holder: host.into(),
                },
                2 => Op::DeletePool {
                    pool,
                    force: c & 1 == 1,
                },
                3 => Op::Reserve {
                    addr: addr_in(&pool, c),
                    pool,
                    holder: host.into(),
                },
                4 | 5 => Op::Allocate {
                    addr: (c & 1 == 1).then(|| addr_in(&pool, c >> 1)),
                    pool,
                    owner: Owner::new(host, format!("e{}", b % 8)),
                    order: [Order::PoolDefault, Order::Lowest, Order::Serial][c as usize % 3],
                },
                6 => Op::Release {
                    addr: addr_in(&pool, c),
                    pool,
                    host: host.into(),
                    force: c & 128 != 0,
                },
                7 => Op::Heartbeat {
                    host: host.into(),
                    version: "0.1.0".into(),
                },
                8 => {
                    let held = st.allocations(&pool).unwrap_or_default();
                    let leaked = held
                        .get(c as usize % held.len().max(1))
                        .map(|x| ReportedLeak {
                            pool: pool.clone(),
                            addr: x.addr,
                            seq: x.seq,
                            endpoint: x.owner.endpoint.clone(),
                        })
                        .into_iter()
                        .collect::<Vec<_>>();
                    Op::Report {
                        host: host.into(),
                        report: HostReport {
                            leaked_total: leaked.len() as u64,
                            leaked,
                            ..Default::default()
                        },
                    }
                }
                _ => {
                    let bytes = st.to_snapshot();
                    st = State::from_snapshot(&bytes).expect("a state's own snapshot decodes");
                    assert_eq!(
                        st.to_snapshot(),
                        bytes,
                        "snapshot round trip changed the state"
                    );
                    continue;
                }
            },
        };
        let before = summary(&st);
        let r = st.apply(&Command {
            at_ms,
            op: op.clone(),
        });
        // A failed command changes nothing — except that time passes: addresses whose cooldown
        // ended by its time are free now, as they would be after any command.
        if r.is_err() {
            let after = summary(&st);
            assert!(
                after == before,
                "step {step}: failed {op:?} ({r:?}) changed the state:\nbefore {before:?}\nafter  {after:?}"
            );
        }
        // Every invariant, every 8 steps (the full check walks every structure).
        if step % 8 == 7 {
            if let Err(e) = st.check_invariants() {
                panic!("step {step}: after {op:?} -> {r:?}: {e}");
            }
        }
    }
    if let Err(e) = st.check_invariants() {
        panic!("at the end: {e}");
    }
}

/// Everything but cooling, cheaply: the sequence number and every pool's holders,
/// reservations and allocated count.
fn summary(st: &State) -> impl PartialEq + std::fmt::Debug {
    let pools: Vec<_> = st
        .pools()
        .into_iter()
        .map(|p| {
            (
                p.id,
                p.holders,
                p.reservations,
                p.usage.reserved,
                p.usage.allocated,
            )
        })
        .collect();
    (st.last_seq(), pools, st.conflicts())
}

#[cfg(test)]
mod tests {
    /// A program that raises the cluster version, reports conflicts (one with a MAC no device
    /// has), allocates around them, clears one, sets a probation and round-trips a snapshot.
    #[test]
    fn a_program_with_conflicts_on_the_lan_runs() {
        #[rustfmt::skip]
        let program = [
            249, 0, 0, 0,
            0, 1, 0, 0,    // request 10.0.0.0/24
            250, 1, 6, 1,  // report 10.0.0.1
            251, 1, 0, 2,  // report 10.0.0.2 with MAC 00:..: refused
            4, 1, 0, 1,    // allocate
            254, 1, 0, 1,  // clear 10.0.0.1
            255, 1, 0, 3,  // probation 3 s
            9, 0, 0, 0,    // snapshot round trip
            5, 1, 1, 3,    // allocate 10.0.0.1
        ];
        super::apply_program(&program);
    }
}
