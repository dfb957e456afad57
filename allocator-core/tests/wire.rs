//! The encodings that are persisted or cross a connection, pinned byte for byte: every
//! variant of `Op`, `Outcome` and `AllocError`, the records they carry, and a snapshot.
//!
//! A Raft log written by one build is applied by the next, and nodes of two versions talk to
//! each other during an upgrade: a variant inserted, reordered or removed, or a field moved,
//! changes these bytes and fails this test. A new variant goes at the end of its enum (and a
//! line here); an existing line never changes.

use std::fmt::Write as _;
use std::net::IpAddr;

use allocator_core::{
    AddrRange, AllocError, Command, Config, DefaultPool, Holding, HostReport, LeakHint, Op, Order,
    Outcome, Owner, PoolId, PoolSpec, Released, ReportedLeak, ReportedMissing, State, StoredReport,
    Usage,
};
use serde::Serialize;

fn hex<T: Serialize>(v: &T) -> String {
    let bytes = postcard::to_allocvec(v).expect("encodes");
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn pool() -> PoolId {
    "g/10.0.0.0/24/10.0.0.128/25".parse().expect("pool id")
}

fn addr() -> IpAddr {
    "10.0.0.7".parse().expect("address")
}

fn report() -> HostReport {
    HostReport {
        endpoints: 3,
        allocations: 2,
        leaked: vec![ReportedLeak {
            pool: pool(),
            addr: addr(),
            seq: 9,
            endpoint: "e".into(),
        }],
        leaked_total: 1,
        missing: vec![ReportedMissing {
            addr: addr(),
            network: "n".into(),
            container: "c".into(),
            held_by: Some("h/x".into()),
        }],
        missing_total: 1,
        held_twice: 0,
    }
}

fn usage() -> Usage {
    Usage {
        size: 256,
        reserved: 2,
        allocated: 3,
        cooling: 1,
        free: 250,
    }
}

fn ops() -> Vec<Op> {
    let spec = PoolSpec::new("g")
        .subnet("10.0.0.0/24".parse().expect("subnet"))
        .range("10.0.0.128/25".parse().expect("range"))
        .v6(false)
        .prefix_len(24)
        .reserve([AddrRange::single(addr())])
        .serial(true)
        .cooldown_ms(5);
    vec![
        Op::RequestPool {
            spec,
            holder: "h".into(),
        },
        Op::ReleasePool {
            pool: pool(),
            holder: "h".into(),
        },
        Op::DeletePool {
            pool: pool(),
            force: true,
        },
        Op::Reserve {
            pool: pool(),
            addr: addr(),
            holder: "h".into(),
        },
        Op::Allocate {
            pool: pool(),
            addr: Some(addr()),
            owner: Owner::new("h", "e"),
            order: Order::Serial,
        },
        Op::Release {
            pool: pool(),
            addr: addr(),
            host: "h".into(),
            force: true,
        },
        Op::ReleaseIfUnchanged {
            pool: pool(),
            addr: addr(),
            host: "h".into(),
            seq: 300,
        },
        Op::Heartbeat {
            host: "h".into(),
            version: "1".into(),
        },
        Op::Report {
            host: "h".into(),
            report: report(),
        },
        Op::Restore {
            snapshot: vec![1, 2],
        },
        Op::ForgetHost { host: "h".into() },
        Op::AddJoinToken {
            hash: "ab".into(),
            expires_ms: 7,
        },
        Op::RevokeJoinToken { hash: "ab".into() },
        Op::Revoke { name: "n".into() },
        Op::RevokeSerial {
            serial: "a1".into(),
        },
        Op::RestoreChunk {
            restore: 1,
            offset: 2,
            total: 3,
            bytes: vec![4],
        },
    ]
}

fn outcomes() -> Vec<Outcome> {
    let net = "10.0.0.7/24".parse().expect("net");
    vec![
        Outcome::Pool {
            pool: pool(),
            created: true,
        },
        Outcome::PoolReleased { removed: true },
        Outcome::Reserved { addr: net },
        Outcome::Allocated {
            addr: net,
            seq: 300,
            existing: true,
        },
        Outcome::HostSeen { first: true },
        Outcome::Reported,
        Outcome::Restored {
            pools: 1,
            allocations: 2,
        },
        Outcome::JoinTokenAdded { tokens: 3 },
        Outcome::JoinTokenRevoked { existed: true },
        Outcome::Revoked { before_ms: 4 },
        Outcome::SerialRevoked { new: true },
        Outcome::RestoreStaged { have: 5 },
        Outcome::HostForgotten {
            allocations: 1,
            reservations: 2,
            pools: 3,
        },
        Outcome::Released {
            what: Released::Allocation,
        },
        Outcome::Released {
            what: Released::Reservation,
        },
        Outcome::Released {
            what: Released::Nothing,
        },
    ]
}

fn errors() -> Vec<AllocError> {
    let owner = Owner::new("h", "e");
    vec![
        AllocError::NoSuchPool(pool()),
        AllocError::Overlap {
            space: "g".into(),
            requested: "10.0.0.0/16".parse().expect("net"),
            existing: pool(),
        },
        AllocError::InvalidPool("x".into()),
        AllocError::NoDefaultSubnet {
            family: "IPv4".into(),
            prefix_len: 16,
        },
        AllocError::PoolFull {
            pool: pool(),
            usage: usage(),
            leaks: LeakHint {
                by_host: vec![("h".into(), 2)],
            },
        },
        AllocError::OutsidePool {
            addr: addr(),
            pool: pool(),
        },
        AllocError::HeldBy {
            addr: addr(),
            pool: pool(),
            owner: owner.clone(),
            seq: 3,
        },
        AllocError::Reserved {
            addr: addr(),
            pool: pool(),
            why: "w".into(),
        },
        AllocError::Cooling {
            addr: addr(),
            pool: pool(),
            until_ms: 4,
        },
        AllocError::OwnerHoldsOther {
            owner: owner.clone(),
            pool: pool(),
            held: addr(),
            asked: "10.0.0.8".parse().expect("address"),
        },
        AllocError::NotOwner {
            addr: addr(),
            pool: pool(),
            owner,
            host: "o".into(),
        },
        AllocError::Invalid("i".into()),
        AllocError::PoolInUse {
            pool: pool(),
            allocated: 5,
        },
        AllocError::NotEmpty("n".into()),
    ]
}

/// A state touching every part of a snapshot: pools (ranged, serial, cooling, reserve
/// ranges), allocations, a reservation, a heartbeat, a report, revocations, a join token.
fn sample_state() -> State {
    let mut st = State::default();
    let mut run = |at_ms: u64, op: Op| {
        st.apply(&Command { at_ms, op }).expect("applies");
    };
    let p: PoolId = "g/10.0.0.0/24".parse().expect("pool id");
    run(
        0,
        Op::RequestPool {
            spec: PoolSpec::new("g")
                .subnet(p.subnet)
                .reserve(["10.0.0.250-10.0.0.252".parse().expect("range")])
                .cooldown_ms(10_000)
                .serial(true),
            holder: "a".into(),
        },
    );
    for i in 0..4 {
        run(
            1_000,
            Op::Allocate {
                pool: p.clone(),
                addr: None,
                owner: Owner::new("a", format!("e{i}")),
                order: Order::PoolDefault,
            },
        );
    }
    run(
        2_000,
        Op::Release {
            pool: p.clone(),
            addr: "10.0.0.2".parse().expect("address"),
            host: "a".into(),
            force: false,
        },
    );
    run(
        2_000,
        Op::Reserve {
            pool: p.clone(),
            addr: "10.0.0.200".parse().expect("address"),
            holder: "b".into(),
        },
    );
    run(
        3_000,
        Op::Heartbeat {
            host: "a".into(),
            version: "0.1.0".into(),
        },
    );
    run(
        3_000,
        Op::Report {
            host: "a".into(),
            report: HostReport {
                leaked: vec![ReportedLeak {
                    pool: p.clone(),
                    addr: "10.0.0.3".parse().expect("address"),
                    seq: 3,
                    endpoint: "e2".into(),
                }],
                leaked_total: 1,
                ..Default::default()
            },
        },
    );
    run(4_000, Op::Revoke { name: "z".into() });
    run(
        4_000,
        Op::RevokeSerial {
            serial: "a1bff".into(),
        },
    );
    run(
        4_000,
        Op::AddJoinToken {
            hash: "c".repeat(64),
            expires_ms: 90_000,
        },
    );
    st
}

fn encodings() -> String {
    let mut out = String::new();
    for op in ops() {
        let _ = writeln!(out, "op {}", hex(&op));
    }
    let _ = writeln!(
        out,
        "command {}",
        hex(&Command {
            at_ms: 1_700_000_000_000,
            op: Op::Revoke { name: "n".into() },
        })
    );
    for o in outcomes() {
        let _ = writeln!(out, "outcome {}", hex(&o));
    }
    for e in errors() {
        let _ = writeln!(out, "error {}", hex(&e));
    }
    for order in [Order::PoolDefault, Order::Lowest, Order::Serial] {
        let _ = writeln!(out, "order {}", hex(&order));
    }
    let _ = writeln!(
        out,
        "stored-report {}",
        hex(&StoredReport {
            host: "h".into(),
            at_ms: 5,
            report: report(),
        })
    );
    let _ = writeln!(out, "config {}", hex(&Config::default()));
    let _ = writeln!(
        out,
        "default-pool {}",
        hex(&DefaultPool::new("10.0.0.0/8".parse().expect("net"), 24))
    );
    let allocation = sample_state()
        .allocations(&"g/10.0.0.0/24".parse().expect("id"))
        .expect("pool")[0]
        .clone();
    let _ = writeln!(
        out,
        "holding {}",
        hex(&Holding::Allocated {
            pool: pool(),
            allocation,
        })
    );
    let _ = writeln!(
        out,
        "holding {}",
        hex(&Holding::Reserved {
            pool: pool(),
            why: "w".into(),
        })
    );
    let _ = writeln!(
        out,
        "holding {}",
        hex(&Holding::Cooling {
            pool: pool(),
            until_ms: 1,
        })
    );
    let _ = writeln!(out, "pools {}", hex(&sample_state().pools()));
    let _ = writeln!(out, "hosts {}", hex(&sample_state().hosts()));
    let _ = writeln!(out, "snapshot {}", hex(&sample_state().to_snapshot()));
    out
}

#[test]
fn persisted_and_wire_encodings_never_change() {
    let got = encodings();
    if std::env::var_os("PRINT_WIRE").is_some() {
        println!("{got}");
    }
    assert_eq!(
        got, EXPECTED,
        "an encoding changed: see the top of this file"
    );
}

const EXPECTED: &str = "\
op 00016701000a0000001801000a0000801900011801000a000007000a00000701050168\n\
op 010167000a0000001801000a000080190168\n\
op 020167000a0000001801000a0000801901\n\
op 030167000a0000001801000a00008019000a0000070168\n\
op 040167000a0000001801000a0000801901000a0000070168016502\n\
op 050167000a0000001801000a00008019000a000007016801\n\
op 060167000a0000001801000a00008019000a0000070168ac02\n\
op 0701680131\n\
op 0801680302010167000a0000001801000a00008019000a0000070901650101000a000007016e01630103682f780100\n\
op 09020102\n\
op 0a0168\n\
op 0b02616207\n\
op 0c026162\n\
op 0d016e\n\
op 0e026131\n\
op 0f0102030104\n\
command 80d095ffbc310d016e\n\
outcome 000167000a0000001801000a0000801901\n\
outcome 0101\n\
outcome 02000a00000718\n\
outcome 03000a00000718ac0201\n\
outcome 0401\n\
outcome 05\n\
outcome 060102\n\
outcome 0703\n\
outcome 0801\n\
outcome 0904\n\
outcome 0a01\n\
outcome 0b05\n\
outcome 0c010203\n\
outcome 0d00\n\
outcome 0d01\n\
outcome 0d02\n\
error 000167000a0000001801000a00008019\n\
error 010167000a000000100167000a0000001801000a00008019\n\
error 020178\n\
error 03044950763410\n\
error 040167000a0000001801000a000080198002020301fa0101016802\n\
error 05000a0000070167000a0000001801000a00008019\n\
error 06000a0000070167000a0000001801000a000080190168016503\n\
error 07000a0000070167000a0000001801000a000080190177\n\
error 08000a0000070167000a0000001801000a0000801904\n\
error 09016801650167000a0000001801000a00008019000a000007000a000008\n\
error 0a000a0000070167000a0000001801000a0000801901680165016f\n\
error 0b0169\n\
error 0c0167000a0000001801000a0000801905\n\
error 0d016e\n\
order 00\n\
order 01\n\
order 02\n\
stored-report 0168050302010167000a0000001801000a00008019000a0000070901650101000a000007016e01630103682f780100\n\
config 0300ac1000000c1000c0a80000101401fd0000000000000000000000000000000840\n\
default-pool 000a0000000818\n\
holding 000167000a0000001801000a00008019000a00000101610265300101\n\
holding 010167000a0000001801000a000080190177\n\
holding 020167000a0000001801000a0000801901\n\
pools 010167000a00000018000101610101904e01000a0000fa000a0000fc04000a0000c801016201000a0000fa010e40672f31302e302e302e302f323401000a0000fb010e40672f31302e302e302e302f323401000a0000fc010e40672f31302e302e302e302f3234018002060301f601\n\
hosts 0201610105302e312e3001b81703000101b8170101016200000001000000\n\
snapshot b202524950414d534e500400441e1a610300ac1000000c1000c0a80000101401fd000000000000000000000000000000084004010161010167000a0000001804c80101016201fa01010e40672f31302e302e302e302f323401fb01010e40672f31302e302e302e302f323401fc01010e40672f31302e302e302e302f3234010102e05d03010101000265300303010002653204040100026533010167000a000000180001904e01016101010401000a0000fa000a0000fc01016105302e312e30b817010161b8170000010167000a0000001800000a000003030265320100000001017aa01f01406363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636390bf0501056131626666a01f00\n\
";
