//! The encodings that are persisted or cross a connection, frozen release by release: every
//! variant of `Op`, `Outcome` and `AllocError`, the records they carry, and a snapshot, against
//! the golden files `tests/compat/<release>/allocator-core.golden` (see `raftipam_compat`).
//!
//! A Raft log written by one release is applied by the next, and nodes of two releases talk
//! to each other during an upgrade: a variant inserted, reordered or removed, or a field
//! moved, changes these bytes and fails this test. A new variant goes at the end of its enum
//! (and gets a sample here and a line in this release's file); an existing line never changes.

use std::net::IpAddr;

use allocator_core::{
    AddrRange, AddressOnLan, AllocError, Command, Config, Conflict, ConflictRecord, Conflicts,
    DefaultPool, Detection, DuplicateAlarm, Holding, HostLan, HostReport, LanCheck, LeakHint, Mac,
    Op, Order, Outcome, Owner, PoolId, PoolSpec, Quotas, Released, ReportedLeak, ReportedMissing,
    State, StoredReport, Usage,
};
use raftipam_compat::Catalog;

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

fn mac() -> Mac {
    Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x02])
}

fn conflict_record() -> ConflictRecord {
    ConflictRecord {
        pool: pool(),
        addr: addr(),
        mac: mac(),
        host: "h".into(),
        first_seen_ms: 1,
        last_seen_ms: 2,
        how: Detection::Watch,
        count: 3,
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
        // 0.2.0
        Op::SetClusterVersion { version: 2 },
        Op::AddJoinTokenUses {
            hash: "ab".into(),
            expires_ms: 7,
            uses: 1,
        },
        Op::UseJoinToken { hash: "ab".into() },
        Op::SetQuotas {
            host: Some("h".into()),
            quotas: Some(Quotas::new(Some(2), Some(3), Some(16), None)),
        },
        Op::AddJoinTokenFor {
            hash: "ab".into(),
            expires_ms: 7,
            uses: 1,
            name: Some("h".into()),
        },
        Op::IssueJoinCert {
            hash: "ab".into(),
            name: "h".into(),
            serial: "a1".into(),
        },
        // Conflicts on the LAN (0.2.0, cluster version 2).
        Op::ReportConflict {
            pool: pool(),
            addr: addr(),
            mac: mac(),
            host: "h".into(),
            how: Detection::Probe,
        },
        Op::ClearConflict {
            pool: pool(),
            addr: addr(),
        },
        Op::SetProbation {
            pool: pool(),
            probation_ms: 86_400_000,
        },
        // Containers' MACs and hosts' LAN checks (0.2.0, cluster version 2).
        Op::RecordMac {
            pool: pool(),
            addr: addr(),
            host: "h".into(),
            seq: 4,
            mac: mac(),
        },
        Op::ReportLanChecks {
            host: "h".into(),
            checks: vec![lan_check()],
        },
    ]
}

fn lan_check() -> LanCheck {
    LanCheck {
        subnet: "10.0.0.0/24".parse().expect("net"),
        interface: "br0".into(),
        off: Some("checks need CAP_NET_RAW".into()),
    }
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
        // 0.2.0
        Outcome::ClusterVersion {
            version: 2,
            changed: true,
        },
        Outcome::JoinTokenUsed { left: Some(1) },
        Outcome::QuotasSet {
            quotas: Quotas::BUILT_IN,
        },
        Outcome::ConflictReported {
            until_ms: Some(86_400_002),
            holder: None,
            count: 3,
        },
        Outcome::ConflictReported {
            until_ms: None,
            holder: Some(Owner::new("h", "e")),
            count: 1,
        },
        Outcome::ConflictCleared { existed: true },
        Outcome::ProbationSet {
            probation_ms: 86_400_000,
        },
        Outcome::MacRecorded { recorded: true },
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
        // 0.2.0
        AllocError::NeedsClusterVersion {
            what: "w".into(),
            needs: 2,
            current: 1,
        },
        AllocError::QuotaExceeded {
            quota: "pools".into(),
            host: "h".into(),
            used: 2,
            limit: 2,
        },
        AllocError::Quarantined {
            addr: addr(),
            pool: pool(),
            mac: mac(),
            host: "h".into(),
            until_ms: 86_400_002,
        },
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

/// One sample of every variant of every persisted or wire type of this crate.
fn catalog() -> Catalog {
    let mut c = Catalog::new();
    for op in ops() {
        c.add("op", op);
    }
    c.add(
        "command",
        Command {
            at_ms: 1_700_000_000_000,
            op: Op::Revoke { name: "n".into() },
        },
    );
    for o in outcomes() {
        c.add("outcome", o);
    }
    for e in errors() {
        c.add("error", e);
    }
    for order in [Order::PoolDefault, Order::Lowest, Order::Serial] {
        c.add("order", order);
    }
    c.add(
        "stored-report",
        StoredReport {
            host: "h".into(),
            at_ms: 5,
            report: report(),
        },
    );
    c.add("config", Config::default());
    c.add(
        "default-pool",
        DefaultPool::new("10.0.0.0/8".parse().expect("net"), 24),
    );
    let allocation = sample_state()
        .allocations(&"g/10.0.0.0/24".parse().expect("id"))
        .expect("pool")[0]
        .clone();
    c.add(
        "holding",
        Holding::Allocated {
            pool: pool(),
            allocation,
        },
    );
    c.add(
        "holding",
        Holding::Reserved {
            pool: pool(),
            why: "w".into(),
        },
    );
    c.add(
        "holding",
        Holding::Cooling {
            pool: pool(),
            until_ms: 1,
        },
    );
    for how in [
        Detection::Probe,
        Detection::Watch,
        Detection::Sweep,
        Detection::Import,
    ] {
        c.add("detection", how);
    }
    c.add("conflict-record", conflict_record());
    c.add(
        "conflicts",
        Conflicts {
            quarantined: vec![Conflict {
                record: conflict_record(),
                until_ms: 86_400_002,
            }],
            alarms: vec![DuplicateAlarm {
                record: conflict_record(),
                holder: Owner::new("h", "e"),
                seq: 4,
            }],
        },
    );
    c.add("lan-check", lan_check());
    c.add(
        "host-lan",
        HostLan {
            host: "h".into(),
            at_ms: 9,
            checks: vec![lan_check()],
        },
    );
    c.add(
        "address-on-lan",
        AddressOnLan {
            pool: pool(),
            holder: Some((Owner::new("h", "e"), 4)),
            mac: Some(mac()),
            reserved: false,
            conflict: Some(conflict_record()),
        },
    );
    c.add_named("pools", sample_state().pools());
    c.add_named("hosts", sample_state().hosts());
    // A snapshot: the bytes a node stores and sends; they must load into the same state.
    let snap = sample_state().to_snapshot();
    let expect = snap.clone();
    c.add_bytes("snapshot/v4", snap, move |b| {
        let st = State::from_snapshot(b).map_err(|e| format!("do not load: {e}"))?;
        (st.to_snapshot() == expect)
            .then_some(())
            .ok_or_else(|| "load into another state".to_string())
    });
    // Format 5: a cluster at version 2, with a limited join token.
    let mut v2 = sample_state();
    for op in [
        Op::SetClusterVersion { version: 2 },
        Op::AddJoinTokenUses {
            hash: "e".repeat(64),
            expires_ms: 90_000,
            uses: 3,
        },
        Op::SetQuotas {
            host: None,
            quotas: Some(Quotas::new(Some(8), None, Some(20), Some(56))),
        },
        Op::SetQuotas {
            host: Some("b".into()),
            quotas: Some(Quotas::NONE),
        },
        Op::AddJoinTokenFor {
            hash: "f".repeat(64),
            expires_ms: 90_000,
            uses: 2,
            name: Some("new-host".into()),
        },
        Op::IssueJoinCert {
            hash: "f".repeat(64),
            name: "new-host".into(),
            serial: "1f2e".into(),
        },
    ] {
        v2.apply(&Command { at_ms: 5_000, op }).expect("applies");
    }
    let snap = v2.to_snapshot();
    let expect = snap.clone();
    c.add_bytes("snapshot/v5", snap, move |b| {
        let st = State::from_snapshot(b).map_err(|e| format!("do not load: {e}"))?;
        (st.to_snapshot() == expect && st.cluster_version() == 2)
            .then_some(())
            .ok_or_else(|| "load into another state".to_string())
    });
    // Format 6: conflicts on the LAN (a quarantine and a duplicate alarm) and a probation.
    let p: PoolId = "g/10.0.0.0/24".parse().expect("pool id");
    for op in [
        Op::SetProbation {
            pool: p.clone(),
            probation_ms: 3_600_000,
        },
        Op::ReportConflict {
            pool: p.clone(),
            addr: "10.0.0.9".parse().expect("address"),
            mac: mac(),
            host: "a".into(),
            how: Detection::Probe,
        },
        Op::ReportConflict {
            pool: p,
            addr: "10.0.0.1".parse().expect("address"),
            mac: Mac([0x02, 0, 0, 0, 0, 7]),
            host: "b".into(),
            how: Detection::Watch,
        },
    ] {
        v2.apply(&Command { at_ms: 6_000, op }).expect("applies");
    }
    let snap = v2.to_snapshot();
    let expect = snap.clone();
    c.add_bytes("snapshot/v6", snap, move |b| {
        let st = State::from_snapshot(b).map_err(|e| format!("do not load: {e}"))?;
        let c = st.conflicts();
        (st.to_snapshot() == expect && c.quarantined.len() == 1 && c.alarms.len() == 1)
            .then_some(())
            .ok_or_else(|| "load into another state".to_string())
    });
    // Format 7: a container's MAC and a host's LAN checks besides format 6's.
    let web = v2
        .allocate(
            7_000,
            &p7(),
            &Owner::new("a", "mac-web"),
            allocator_core::Order::Lowest,
        )
        .expect("allocates");
    for op in [
        Op::RecordMac {
            pool: p7(),
            addr: web.addr.addr(),
            host: "a".into(),
            seq: web.seq,
            mac: Mac([0x02, 0x42, 0, 0, 0, 9]),
        },
        Op::ReportLanChecks {
            host: "a".into(),
            checks: vec![lan_check()],
        },
    ] {
        v2.apply(&Command { at_ms: 7_000, op }).expect("applies");
    }
    let snap = v2.to_snapshot();
    let expect = snap.clone();
    let addr7 = web.addr.addr();
    c.add_bytes("snapshot/v7", snap, move |b| {
        let st = State::from_snapshot(b).map_err(|e| format!("do not load: {e}"))?;
        (st.to_snapshot() == expect
            && st.on_lan(addr7)[0].mac.is_some()
            && st.lan_checks().len() == 1)
            .then_some(())
            .ok_or_else(|| "load into another state".to_string())
    });
    c
}

fn p7() -> PoolId {
    "g/10.0.0.0/24".parse().expect("pool id")
}

#[test]
fn every_release_s_encodings_still_decode_to_the_same_values() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat");
    catalog().check(&dir, "allocator-core.golden", env!("CARGO_PKG_VERSION"));
}
