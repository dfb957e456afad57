//! Attacks on a real node (RocksDB, TLS, TCP on loopback) by a caller holding one stolen or
//! leftover certificate, each as the attacker would run it: through the node's own port,
//! with the crate's own transport. Each test says what it does and that it fails on
//! 4b9aa6a (release 0.1.0), where the node believed any node certificate.

use std::path::Path;
use std::time::{Duration, Instant};

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use tarpc::context::Context;

use super::{Node, NodeConfig};
use crate::api::{Identity, Role};
use crate::tls::certs::{create_ca, issue, Leaf};
use crate::tls::Tls;
use crate::transport::codec::{connect, CHANNEL_API, CHANNEL_RAFT};
use crate::transport::rpc::{ApiRpcClient, RaftRpcClient, Via};
use crate::types::TypeConfig;

type C = TypeConfig;

const DAY: Duration = Duration::from_secs(86_400);

fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A certificate of `role` and `name` issued by the CA in `ca`, loaded from `dir/<sub>`.
fn cert(ca: &Path, dir: &Path, sub: &str, leaf: Leaf) -> Tls {
    let out = dir.join(sub);
    issue(ca, &leaf, &out).expect("issue");
    Tls::load(&out).expect("load")
}

fn leaf(role: Role, name: &str, addrs: Vec<String>, node_id: Option<u64>) -> Leaf {
    Leaf {
        role,
        name: name.into(),
        addrs,
        lifetime: DAY,
        node_id,
    }
}

fn ctx() -> Context {
    let mut c = tarpc::context::current();
    c.deadline = Instant::now() + Duration::from_secs(10);
    c
}

struct Lab {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    ca: std::path::PathBuf,
    node: Node,
    addr: String,
}

/// A one-node TLS cluster: node 1, leader.
async fn lab() -> Lab {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let ca = dir.join("ca");
    create_ca(&ca, DAY).expect("ca");
    let listen = free_addr();
    let tls = cert(
        &ca,
        &dir,
        "n1",
        leaf(Role::Node, "h1", vec![listen.to_string()], Some(1)),
    );
    let mut cfg = NodeConfig::new(1, listen, dir.join("data1"));
    cfg.tls = Some(tls);
    let node = Node::start(cfg).await.expect("start");
    node.init().await.expect("init");
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.status().state != "Leader" {
        assert!(Instant::now() < deadline, "no leader: {:?}", node.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Lab {
        addr: listen.to_string(),
        _dir: tmp,
        dir,
        ca,
        node,
    }
}

async fn raft_client(addr: &str, tls: &Tls) -> RaftRpcClient {
    let t = connect(addr, CHANNEL_RAFT, Duration::from_secs(10), Some(tls))
        .await
        .expect("the port accepts the certificate");
    RaftRpcClient::new(tarpc::client::Config::default(), t).spawn()
}

/// A node certificate that is no member's — made for a node that was never added, or kept
/// from one removed — asks for votes and sends appends with a far higher term. The member
/// refuses both and keeps its term and its leadership. On 4b9aa6a any node certificate was
/// served on the Raft channel: the leader took term 100 and stepped down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_of_no_member_cannot_disrupt_the_leader() {
    let lab = lab().await;
    let term = lab.node.status().term;
    for (sub, l) in [
        ("rogue9", leaf(Role::Node, "node-9", vec![], Some(9))),
        ("rogue-legacy", leaf(Role::Node, "node-9", vec![], None)),
    ] {
        let rogue = cert(&lab.ca, &lab.dir, sub, l);
        let c = raft_client(&lab.addr, &rogue).await;
        let vote = openraft::Vote::new(100, 9);
        let asked = c.vote(ctx(), VoteRequest::<C>::new(vote, None)).await;
        assert!(
            !matches!(asked, Ok(Ok(_))),
            "{sub}: the vote request was served: {asked:?}"
        );
        let append = AppendEntriesRequest::<C> {
            vote,
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        };
        let sent = c.append(ctx(), append).await;
        assert!(
            !matches!(sent, Ok(Ok(_))),
            "{sub}: the append was served: {sent:?}"
        );
    }
    let after = lab.node.status();
    assert_eq!(after.term, term, "the term moved: {after:?}");
    assert_eq!(after.state, "Leader", "{after:?}");
    assert!(
        lab.node
            .metrics_text()
            .contains("raftipam_refused_total{what=\"raft\"}"),
        "the refusals are counted"
    );
    lab.node.shutdown().await.expect("shutdown");
}

/// The member's own certificate, sending as another node id (1's key claiming to be node 7)
/// is refused too: a certificate acts only as the member it is bound to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_certificate_cannot_speak_for_another_id() {
    let lab = lab().await;
    let own = Tls::load(&lab.dir.join("n1")).expect("load");
    let c = raft_client(&lab.addr, &own).await;
    let asked = c
        .vote(
            ctx(),
            VoteRequest::<C>::new(openraft::Vote::new(50, 7), None),
        )
        .await;
    assert!(!matches!(asked, Ok(Ok(_))), "served: {asked:?}");
    assert_eq!(lab.node.status().state, "Leader");
    lab.node.shutdown().await.expect("shutdown");
}

/// A node certificate that is no member's forwards an operator's call (`ForgetHost` of
/// another host, as "admin"): refused. On 4b9aa6a the node believed the caller a node
/// certificate named and ran it as admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_of_no_member_cannot_forward_as_admin() {
    let lab = lab().await;
    let rogue = cert(
        &lab.ca,
        &lab.dir,
        "rogue",
        leaf(Role::Node, "node-9", vec![], Some(9)),
    );
    let t = connect(
        &lab.addr,
        CHANNEL_API,
        Duration::from_secs(10),
        Some(&rogue),
    )
    .await
    .expect("connect");
    let c = ApiRpcClient::new(tarpc::client::Config::default(), t).spawn();
    let admin = Identity {
        role: Role::Admin,
        name: "admin".into(),
    };
    let r = c
        .write(
            ctx(),
            crate::api::WriteRequest {
                id: crate::api::RequestId {
                    client: 42,
                    serial: 1,
                },
                acked_below: 1,
                op: allocator_core::Op::Revoke { name: "h1".into() },
            },
            Via::Forwarded(Some(admin)),
        )
        .await
        .expect("an answer");
    let e = r.expect_err("refused");
    assert!(e.to_string().contains("may not forward"), "{e}");
    assert!(
        !lab.node.with_state(|s| s.is_revoked("h1", 0)),
        "the revocation was applied"
    );
    lab.node.shutdown().await.expect("shutdown");
}

/// A host pipelines thousands of reads over one connection and never reads the answers:
/// the node serves at most [`super::conn::MAX_IN_FLIGHT_PER_CONN`] of them at once (the
/// rest wait in the socket). On 4b9aa6a every request was spawned as it arrived, each
/// holding a copy of its answer, until the node ran out of memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_that_are_never_read_are_bounded_per_connection() {
    use futures::SinkExt;
    let lab = lab().await;
    // Answers of some 30 KB each: a few fill the socket's buffers.
    let client = lab.node.client();
    let mut spec = allocator_core::PoolSpec::default();
    spec.space = "global".into();
    spec.subnet = Some("10.40.0.0/22".parse().expect("subnet"));
    let pool = client.create_pool(spec, "h2").await.expect("pool");
    let mut load = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (client, pool) = (client.clone(), pool.clone());
        load.spawn(async move {
            for i in 0..50 {
                client
                    .allocate(
                        &pool,
                        None,
                        allocator_core::Owner::new("h2", format!("e{w}-{i}")),
                    )
                    .await
                    .expect("allocate");
            }
        });
    }
    while let Some(r) = load.join_next().await {
        r.expect("load");
    }
    let host = cert(
        &lab.ca,
        &lab.dir,
        "h2",
        leaf(Role::Host, "h2", vec![], None),
    );
    // The raw transport: requests sent, answers never read.
    let mut t = connect::<
        tarpc::Response<crate::transport::rpc::ApiRpcResponse>,
        tarpc::ClientMessage<crate::transport::rpc::ApiRpcRequest>,
    >(&lab.addr, CHANNEL_API, Duration::from_secs(10), Some(&host))
    .await
    .expect("connect");
    let mut deadline = tarpc::context::current();
    deadline.deadline = Instant::now() + Duration::from_secs(600);
    let sent = 3_000u64;
    for id in 1..=sent {
        let req = tarpc::ClientMessage::Request(tarpc::Request {
            context: deadline,
            id,
            message: crate::transport::rpc::ApiRpcRequest::Read {
                query: crate::api::Query::AllAllocations,
                consistency: crate::api::Consistency::Local,
                via: Via::Direct,
            },
        });
        if t.send(req).await.is_err() {
            break;
        }
    }
    // Let the node take what it will.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = lab.node.inner.metrics.api_in_flight_peak.get();
    assert!(
        peak as usize <= super::conn::MAX_IN_FLIGHT_PER_CONN,
        "{peak} requests of one connection were served at once"
    );
    drop(t);
    lab.node.shutdown().await.expect("shutdown");
}

/// A host sends a mebibyte-sized junk report, then a heartbeat with a kilobyte "version":
/// both refused before they are proposed — nothing of them reaches the log or the state. On
/// 4b9aa6a both were proposed (stored in every voter's log) and kept in the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cannot_fill_the_log_with_junk_writes() {
    let lab = lab().await;
    let host = cert(
        &lab.ca,
        &lab.dir,
        "h2",
        leaf(Role::Host, "h2", vec![], None),
    );
    let t = connect(&lab.addr, CHANNEL_API, Duration::from_secs(10), Some(&host))
        .await
        .expect("connect");
    let c = ApiRpcClient::new(tarpc::client::Config::default(), t).spawn();
    let junk = allocator_core::HostReport {
        leaked: (0..1024)
            .map(|i| allocator_core::ReportedLeak {
                pool: allocator_core::PoolId::new(
                    "global",
                    "10.0.0.0/24".parse().expect("net"),
                    None,
                ),
                addr: "10.0.0.1".parse().expect("addr"),
                seq: i,
                endpoint: "x".repeat(1000),
            })
            .collect(),
        ..Default::default()
    };
    let write = |serial, op| crate::api::WriteRequest {
        id: crate::api::RequestId { client: 7, serial },
        acked_below: serial,
        op,
    };
    let pool = allocator_core::PoolId::new("global", "10.0.0.0/24".parse().expect("net"), None);
    let logged_before = lab.node.status().last_log_index;
    for (serial, op) in [
        // Writes the operation alone shows the state would refuse: an address outside its
        // pool, a MAC no device has, a name longer than any the state keeps. On 4b9aa6a
        // (and before check_shape) each was proposed, logged on every voter, then refused.
        (
            3,
            allocator_core::Op::Allocate {
                pool: pool.clone(),
                addr: Some("192.0.2.1".parse().expect("addr")),
                owner: allocator_core::Owner::new("h2", "x"),
                order: allocator_core::Order::Lowest,
            },
        ),
        (
            4,
            allocator_core::Op::RecordMac {
                pool: pool.clone(),
                addr: "10.0.0.9".parse().expect("addr"),
                host: "h2".into(),
                seq: 1,
                mac: allocator_core::Mac::BROADCAST,
            },
        ),
        (
            5,
            allocator_core::Op::Allocate {
                pool: pool.clone(),
                addr: None,
                owner: allocator_core::Owner::new("h2", "e".repeat(4096)),
                order: allocator_core::Order::Lowest,
            },
        ),
        (
            6,
            allocator_core::Op::Release {
                pool: pool.clone(),
                addr: "fd00::1".parse().expect("addr"),
                host: "h2".into(),
                force: false,
            },
        ),
    ] {
        let r = c
            .write(ctx(), write(serial, op), Via::Direct)
            .await
            .expect("an answer");
        assert!(r.is_err(), "served: {r:?}");
    }
    assert_eq!(
        lab.node.status().last_log_index,
        logged_before,
        "a write the operation alone shows refused reached the log"
    );
    for (serial, op) in [
        (
            1,
            allocator_core::Op::Report {
                host: "h2".into(),
                report: junk,
            },
        ),
        (
            2,
            allocator_core::Op::Heartbeat {
                host: "h2".into(),
                version: "9".repeat(1024),
            },
        ),
    ] {
        let r = c
            .write(ctx(), write(serial, op), Via::Direct)
            .await
            .expect("an answer");
        assert!(r.is_err(), "served: {r:?}");
    }
    let (hosts, reports) = lab
        .node
        .with_state(|s| (s.hosts().len(), s.reports().len()));
    assert_eq!((hosts, reports), (0, 0), "the junk reached the state");
    lab.node.shutdown().await.expect("shutdown");
}

/// One host certificate opens connection after connection and keeps them: past its
/// identity's limit the node closes the new ones, and another host still gets in. On
/// 4b9aa6a one identity could hold all 4,096 slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_cannot_hold_every_connection() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ca = dir.join("ca");
    create_ca(&ca, DAY).expect("ca");
    let listen = free_addr();
    let mut cfg = NodeConfig::new(1, listen, dir.join("data1"));
    cfg.tls = Some(cert(
        &ca,
        dir,
        "n1",
        leaf(Role::Node, "n1", vec![listen.to_string()], Some(1)),
    ));
    cfg.max_connections = 12;
    cfg.max_connections_per_identity = 4;
    let node = Node::start(cfg).await.expect("start");
    node.init().await.expect("init");
    let addr = listen.to_string();
    let greedy = cert(&ca, dir, "h2", leaf(Role::Host, "h2", vec![], None));
    let other = cert(&ca, dir, "h3", leaf(Role::Host, "h3", vec![], None));
    let status_of = |tls: Tls| {
        let addr = addr.clone();
        async move {
            let t = connect(&addr, CHANNEL_API, Duration::from_secs(10), Some(&tls)).await?;
            let c = ApiRpcClient::new(tarpc::client::Config::default(), t).spawn();
            c.status(ctx())
                .await
                .map(|_| c)
                .map_err(|e| std::io::Error::other(e.to_string()))
        }
    };
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(
            status_of(greedy.clone())
                .await
                .unwrap_or_else(|e| panic!("connection {i} of h2: {e}")),
        );
    }
    for _ in 0..3 {
        assert!(
            status_of(greedy.clone()).await.is_err(),
            "a fifth connection of h2 was served"
        );
    }
    status_of(other).await.expect("another host still gets in");
    assert!(node
        .metrics_text()
        .contains("raftipam_refused_total{what=\"connection\"}"));
    drop(held);
    node.shutdown().await.expect("shutdown");
}

#[test]
fn ipv6_addresses_are_grouped_by_their_64() {
    use std::net::IpAddr;
    let g = |s: &str| super::accept::address_group(s.parse::<IpAddr>().expect("ip"));
    assert_eq!(g("2001:db8:1:2::1"), g("2001:db8:1:2:ffff:1:2:3"));
    assert_ne!(g("2001:db8:1:2::1"), g("2001:db8:1:3::1"));
    assert_eq!(g("::ffff:10.0.0.1"), g("10.0.0.1"));
    assert_ne!(g("10.0.0.1"), g("10.0.0.2"));
}

/// Host h3 sends a write under host h2's client id and serial (seen on the wire, or guessed):
/// it gets its own answer, not h2's, and h2's write is not taken for a repeat of h3's. On
/// 4b9aa6a sessions were keyed by the client id alone: h3 was handed h2's allocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cannot_read_or_shadow_another_hosts_session() {
    let lab = lab().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.node.with_state(|s| s.cluster_version()) < 2 {
        assert!(Instant::now() < deadline, "cluster version 2 not reached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = lab.node.client();
    let mut spec = allocator_core::PoolSpec::default();
    spec.space = "global".into();
    spec.subnet = Some("10.41.0.0/24".parse().expect("subnet"));
    let pool = client.create_pool(spec, "h2").await.expect("pool");
    let mut got = Vec::new();
    for h in ["h2", "h3"] {
        let tls = cert(&lab.ca, &lab.dir, h, leaf(Role::Host, h, vec![], None));
        let t = connect(&lab.addr, CHANNEL_API, Duration::from_secs(10), Some(&tls))
            .await
            .expect("connect");
        let c = ApiRpcClient::new(tarpc::client::Config::default(), t).spawn();
        let r = c
            .write(
                ctx(),
                crate::api::WriteRequest {
                    id: crate::api::RequestId {
                        client: 99,
                        serial: 1,
                    },
                    acked_below: 1,
                    op: allocator_core::Op::Allocate {
                        pool: pool.clone(),
                        addr: None,
                        owner: allocator_core::Owner::new(h, "web"),
                        order: allocator_core::Order::Lowest,
                    },
                },
                Via::Direct,
            )
            .await
            .expect("an answer")
            .unwrap_or_else(|e| panic!("{h}: {e}"));
        match r.outcome {
            allocator_core::Outcome::Allocated { addr, .. } => got.push(addr.addr()),
            o => panic!("{h}: {o:?}"),
        }
    }
    assert_ne!(got[0], got[1], "h3 was handed h2's answer");
    let owners = lab
        .node
        .with_state(|s| s.allocations(&pool).map(|a| a.len()).unwrap_or(0));
    assert_eq!(owners, 2, "both writes were applied");
    lab.node.shutdown().await.expect("shutdown");
}

/// Removing the leader from a TLS cluster: the leader hands its leadership over first, so
/// that the revocation of its id (which comes before the membership change) does not cut off
/// the very node that must commit the change. Found by the chaos harness (a schedule that
/// removes the leader with TLS on): before the hand-over the removal never completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_of_a_tls_cluster_can_be_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let ca = dir.join("ca");
    create_ca(&ca, DAY).expect("ca");
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let listen = free_addr();
        let tls = cert(
            &ca,
            &dir,
            &format!("n{id}"),
            leaf(
                Role::Node,
                &format!("h{id}"),
                vec![listen.to_string()],
                Some(id),
            ),
        );
        let mut cfg = NodeConfig::new(id, listen, dir.join(format!("data{id}")));
        cfg.tls = Some(tls);
        nodes.push(Node::start(cfg).await.expect("start"));
    }
    nodes[0].init().await.expect("init");
    let admin = cert(&ca, &dir, "admin", leaf(Role::Admin, "ops", vec![], None));
    let endpoints: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
    let client = crate::client::Client::with_config(
        endpoints.clone(),
        crate::client::ClientConfig {
            tls: Some(admin),
            timeout: Duration::from_secs(60),
            ..Default::default()
        },
    )
    .expect("client");
    for (id, addr) in [(2u64, &endpoints[1]), (3, &endpoints[2])] {
        client
            .admin(crate::api::AdminCommand::AddNode {
                id,
                addr: addr.clone(),
            })
            .await
            .expect("add");
    }
    let leader = nodes[0].status().leader.expect("a leader");
    assert_eq!(leader, 1);
    let started = Instant::now();
    let after = tokio::time::timeout(
        Duration::from_secs(60),
        client.admin(crate::api::AdminCommand::RemoveNode { id: leader }),
    )
    .await
    .expect("the removal of the leader completes")
    .expect("removed");
    eprintln!("the leader was removed in {:?}", started.elapsed());
    assert!(
        after.members.iter().all(|m| m.id != leader),
        "{:?}",
        after.members
    );
    let new_leader = after.leader.expect("a new leader");
    assert_ne!(new_leader, leader);
    // The rest of the cluster goes on, and the removed node's id is revoked.
    let rest = crate::client::Client::with_config(
        endpoints[1..].to_vec(),
        crate::client::ClientConfig {
            tls: Some(cert(
                &ca,
                &dir,
                "admin2",
                leaf(Role::Admin, "ops2", vec![], None),
            )),
            timeout: Duration::from_secs(30),
            ..Default::default()
        },
    )
    .expect("client");
    rest.create_pool(
        allocator_core::PoolSpec::new("g").subnet("10.77.0.0/24".parse().expect("net")),
        "h2",
    )
    .await
    .expect("writes go on");
    assert!(
        nodes[1].with_state(
            |s| s.is_revoked(&allocator_core::cluster::removed_node_revocation(leader), 0)
        )
    );
    for n in nodes {
        n.shutdown().await.expect("shutdown");
    }
}

/// The chaos harness's rogue node (`crate::rogue`, feature `rogue`) tells a served message
/// from a refused one: the member's own certificate gets its forwarded backup read served
/// (`Accepted`: what the harness reports as an anomaly), a certificate of no member gets
/// every message refused, and nothing answers on a closed port (`Unanswered`).
#[cfg(feature = "rogue")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rogue_module_tells_served_from_refused() {
    use crate::rogue::{self, Answer};
    let lab = lab().await;
    let admin = Identity {
        role: Role::Admin,
        name: "admin".into(),
    };
    let t = Duration::from_secs(10);
    let own = Tls::load(&lab.dir.join("n1")).expect("load");
    let served = rogue::forwarded_read(
        &lab.addr,
        &own,
        crate::api::Query::Snapshot,
        admin.clone(),
        t,
    )
    .await;
    assert!(matches!(served, Answer::Accepted(_)), "{served:?}");
    let rogue_cert = cert(
        &lab.ca,
        &lab.dir,
        "rogue9",
        leaf(Role::Node, "node-9", vec![], Some(9)),
    );
    let term = lab.node.status().term;
    for a in [
        rogue::vote(&lab.addr, &rogue_cert, 9, term + 1000, t).await,
        rogue::append(&lab.addr, &rogue_cert, 9, term + 1000, t).await,
        rogue::snapshot(&lab.addr, &rogue_cert, 9, term + 1000, t).await,
        rogue::forwarded_read(
            &lab.addr,
            &rogue_cert,
            crate::api::Query::Snapshot,
            admin.clone(),
            t,
        )
        .await,
        rogue::forwarded_write(
            &lab.addr,
            &rogue_cert,
            allocator_core::Op::ForgetHost { host: "h1".into() },
            admin.clone(),
            77,
            t,
        )
        .await,
        rogue::forwarded_admin(
            &lab.addr,
            &rogue_cert,
            crate::api::AdminCommand::RemoveNode { id: 1 },
            admin.clone(),
            t,
        )
        .await,
    ] {
        assert!(matches!(a, Answer::Refused(_)), "{a:?}");
    }
    assert_eq!(lab.node.status().term, term, "the term moved");
    assert_eq!(lab.node.status().state, "Leader");
    let closed = free_addr().to_string();
    let none = rogue::vote(&closed, &rogue_cert, 9, 1, Duration::from_secs(2)).await;
    assert!(matches!(none, Answer::Unanswered(_)), "{none:?}");
    lab.node.shutdown().await.expect("shutdown");
}
