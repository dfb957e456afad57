//! Frozen bytes of every encoding raft-node persists or sends (see `raftipam_compat`): log
//! entries and their answers, the snapshot blob, the data directory's record, the client API
//! and Raft messages, the join exchange and the version handshake, against
//! `tests/compat/<release>/raft-node.golden`. A test module: nothing here ships.

use allocator_core::{
    AllocError, Allocation, Command, Holding, HostInfo, Op, Outcome, Owner, PoolId, PoolInfo,
    StoredReport,
};
use openraft::entry::RaftEntry;
use openraft::testing::log_id;
use openraft::type_config::alias::EntryOf;
use raftipam_compat::Catalog;
use tarpc::ClientMessage;

use crate::api::{
    AdminCommand, ApiError, Consistency, Identity, Member, NodeInfo, NodeStatus, Query, QueryReply,
    RequestId, Role, WriteReply, WriteRequest,
};
use crate::tls::join::{JoinReply, JoinRequest};
use crate::transport::hello::{Hello, HelloReply};
use crate::transport::rpc::{ApiRpcRequest, ApiRpcResponse, RaftRpcRequest, Via};
use crate::transport::wire::WireAllocError;
use crate::types::{Request, Response, TypeConfig};

type C = TypeConfig;

fn pool() -> PoolId {
    "global/10.0.0.0/24".parse().expect("a constant pool id")
}

fn id() -> RequestId {
    RequestId {
        client: 7,
        serial: 9,
    }
}

fn entry_request() -> Request {
    Request {
        id: id(),
        acked_below: 3,
        cmd: Command {
            at_ms: 1_000,
            op: Op::Allocate {
                pool: pool(),
                addr: Some("10.0.0.5".parse().expect("a constant address")),
                owner: Owner::new("h2", "db"),
                order: Default::default(),
            },
        },
    }
}

fn status() -> NodeStatus {
    NodeStatus {
        id: 1,
        addr: "127.0.0.1:7379".into(),
        state: "Leader".into(),
        term: 2,
        leader: Some(1),
        last_log_index: Some(10),
        committed: Some(10),
        applied: Some(9),
        snapshot: Some(5),
        purged: Some(4),
        members: vec![Member {
            id: 1,
            addr: "127.0.0.1:7379".into(),
            voter: true,
        }],
    }
}

fn catalog() -> Catalog {
    let mut c = Catalog::new();
    let admin = Identity {
        role: Role::Admin,
        name: "ops".into(),
    };
    // The log entry and what applying it answers (kept in the dedupe table of snapshots).
    c.add("request", entry_request());
    c.add("response", Response::None);
    c.add(
        "response",
        Response::Done(Ok(Outcome::Allocated {
            addr: "10.0.0.5/24".parse().expect("net"),
            seq: 4,
            existing: false,
        })),
    );
    c.add(
        "response",
        Response::Done(Err(WireAllocError(AllocError::NoSuchPool(pool())))),
    );
    c.add("response", Response::Stale);
    // The snapshot blob a leader sends and a node stores.
    let blob = crate::replication::store::fuzz_seed();
    c.add_bytes("snapshot-blob/v1", blob.clone(), move |b| {
        let again = crate::replication::store::blob_roundtrip(b)?;
        (again == blob)
            .then_some(())
            .ok_or_else(|| "decode into another state".to_string())
    });
    // The data directory's record (JSON), as 0.1.0 wrote it.
    let meta = br#"{"format":"raftipam-data","version":1,"node_id":3}"#.to_vec();
    c.add_bytes("data-dir-record/v1", meta, |b| {
        crate::replication::store::check_meta_bytes(b, 3).map_err(|e| format!("are refused: {e}"))
    });
    // The client API's vocabulary.
    for q in [
        Query::Pools,
        Query::Pool(pool()),
        Query::Allocations(pool()),
        Query::AllAllocations,
        Query::WhoHas("10.0.0.5".parse().expect("address")),
        Query::Hosts,
        Query::Snapshot,
        Query::HostAllocations("h1".into()),
        Query::Reports,
        Query::Quotas,
        Query::IssuedCerts,
        Query::Conflicts,
        Query::NextFree {
            pool: pool(),
            count: 4,
        },
        Query::OnLan("10.0.0.5".parse().expect("address")),
        Query::LanChecks,
        Query::FreeAfter {
            pool: pool(),
            after: Some("10.0.0.5".parse().expect("address")),
            count: 8,
        },
        Query::AllocationsPage {
            pool: Some(pool()),
            after: Some((pool(), "10.0.0.5".parse().expect("address"))),
            limit: 1024,
        },
    ] {
        c.add("query", q);
    }
    let allocation = Allocation {
        addr: "10.0.0.5".parse().expect("address"),
        owner: Owner::new("h1", "web"),
        seq: 3,
        at_s: 1_700_000_000,
    };
    for r in [
        QueryReply::Pools(Vec::<PoolInfo>::new()),
        QueryReply::Allocations(vec![allocation.clone()]),
        QueryReply::AllAllocations(vec![(pool(), allocation.clone())]),
        QueryReply::WhoHas(vec![Holding::Reserved {
            pool: pool(),
            why: "gateway".into(),
        }]),
        QueryReply::Hosts(Vec::<HostInfo>::new()),
        QueryReply::Snapshot(vec![1, 2, 3]),
        QueryReply::HostAllocations(vec![(pool(), allocation.clone())]),
        QueryReply::Reports(Vec::<StoredReport>::new()),
        QueryReply::Quotas(allocator_core::State::default().quota_report()),
        QueryReply::IssuedCerts(Vec::new()),
        QueryReply::Conflicts(allocator_core::Conflicts::default()),
        QueryReply::NextFree(vec!["10.0.0.6".parse().expect("address")]),
        QueryReply::OnLan(vec![allocator_core::AddressOnLan {
            pool: pool(),
            holder: Some((Owner::new("h1", "web"), 3)),
            mac: Some(allocator_core::Mac([2, 0x42, 10, 0, 0, 5])),
            reserved: false,
            conflict: None,
        }]),
        QueryReply::LanChecks(vec![allocator_core::HostLan {
            host: "h1".into(),
            at_ms: 1_700_000_000_000,
            checks: vec![allocator_core::LanCheck {
                subnet: "10.0.0.0/24".parse().expect("subnet"),
                interface: "br0".into(),
                off: Some("checks need CAP_NET_RAW".into()),
            }],
        }]),
        QueryReply::FreeAfter(vec!["10.0.0.7".parse().expect("address")]),
        QueryReply::AllocationsPage(allocator_core::AllocationsPage {
            items: vec![(pool(), allocation.clone())],
            next: Some((pool(), "10.0.0.5".parse().expect("address"))),
        }),
    ] {
        c.add("query-reply", r);
    }
    c.add("consistency", Consistency::Linearizable);
    c.add("consistency", Consistency::Local);
    for a in [
        AdminCommand::Init,
        AdminCommand::AddNode {
            id: 2,
            addr: "10.0.0.2:7379".into(),
        },
        AdminCommand::RemoveNode { id: 2 },
        AdminCommand::UpgradeCluster,
    ] {
        c.add("admin", a);
    }
    for e in [
        ApiError::Alloc(AllocError::NoSuchPool(pool())),
        ApiError::Unavailable("u".into()),
        ApiError::NotLeader {
            node: 2,
            leader: Some(1),
        },
        ApiError::Stale(id()),
        ApiError::Cluster("c".into()),
        ApiError::Internal("i".into()),
        ApiError::Forbidden("f".into()),
        ApiError::NotInitialised("n".into()),
    ] {
        c.add("api-error", e);
    }
    for r in [Role::Node, Role::Host, Role::Admin] {
        c.add("role", r);
    }
    c.add("node-status", status());
    c.add(
        "write-reply",
        WriteReply {
            outcome: Outcome::Reported,
            index: 12,
        },
    );
    c.add("via", Via::Direct);
    c.add("via", Via::Forwarded(None));
    c.add("via", Via::Forwarded(Some(admin.clone())));
    // The API channel's requests and answers, as tarpc frames them.
    let write = WriteRequest {
        id: id(),
        acked_below: 3,
        op: Op::Revoke { name: "n".into() },
    };
    let requests = [
        ApiRpcRequest::Write {
            req: write,
            via: Via::Direct,
        },
        ApiRpcRequest::Read {
            query: Query::Pools,
            consistency: Consistency::Linearizable,
            via: Via::Forwarded(Some(admin)),
        },
        ApiRpcRequest::Status {},
        ApiRpcRequest::Admin {
            cmd: AdminCommand::Init,
            via: Via::Direct,
        },
        ApiRpcRequest::ReadIndex {},
        ApiRpcRequest::Info {},
    ];
    for m in requests {
        c.add_roundtrip("api-request", m);
    }
    let responses = [
        ApiRpcResponse::Write(Ok(WriteReply {
            outcome: Outcome::Reported,
            index: 1,
        })),
        ApiRpcResponse::Read(Err(ApiError::Unavailable("u".into()))),
        ApiRpcResponse::Status(status()),
        ApiRpcResponse::Admin(Ok(status())),
        ApiRpcResponse::ReadIndex(Ok(5)),
        ApiRpcResponse::Info(NodeInfo {
            status: status(),
            binary: "0.2.0".into(),
            protocol_min: 1,
            protocol_max: 2,
            members: vec![(1, "0.2.0".into())],
            cluster_version: 2,
        }),
    ];
    for m in responses {
        c.add_roundtrip("api-response", m);
    }
    // tarpc's envelope around a request (the deadline travels as a duration from now, so
    // the sample's bytes would change with the clock: its shape is pinned by the variant).
    let cancel: ClientMessage<ApiRpcRequest> = ClientMessage::Cancel {
        trace_context: Default::default(),
        request_id: 4,
    };
    c.add_roundtrip("tarpc-message", cancel);
    // Raft between nodes: an append carrying a log entry, a vote, a snapshot's metadata.
    let vote = openraft::Vote::new(3, 1);
    let append = openraft::raft::AppendEntriesRequest::<C> {
        vote,
        prev_log_id: Some(log_id::<C>(3, 1, 10)),
        entries: vec![
            EntryOf::<C>::new_blank(log_id::<C>(3, 1, 11)),
            EntryOf::<C>::new_normal(log_id::<C>(3, 1, 12), entry_request()),
        ],
        leader_commit: Some(log_id::<C>(3, 1, 10)),
    };
    c.add_roundtrip("raft-request", RaftRpcRequest::Append { req: append });
    c.add_roundtrip(
        "raft-request",
        RaftRpcRequest::Vote {
            req: openraft::raft::VoteRequest::<C>::new(vote, Some(log_id::<C>(2, 1, 9))),
        },
    );
    // The join exchange.
    c.add_roundtrip(
        "join-request",
        JoinRequest {
            secret: [7; 16],
            csr: vec![1, 2, 3],
        },
    );
    c.add_roundtrip(
        "join-reply",
        JoinReply::Issued {
            cert: "c".into(),
            ca: "a".into(),
        },
    );
    c.add_roundtrip("join-reply", JoinReply::Refused("no".into()));
    // The version handshake (0.2.0 on).
    c.add(
        "hello",
        Hello {
            binary: "0.2.0".into(),
            min: 1,
            max: 2,
        },
    );
    c.add(
        "hello-reply",
        HelloReply::Accepted {
            binary: "0.2.0".into(),
            protocol: 2,
        },
    );
    c.add(
        "hello-reply",
        HelloReply::Refused {
            binary: "0.2.0".into(),
            min: 1,
            max: 2,
            why: "w".into(),
        },
    );
    c
}

#[test]
fn every_release_s_encodings_still_decode_to_the_same_values() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat");
    catalog().check(&dir, "raft-node.golden", env!("CARGO_PKG_VERSION"));
}
