//! What the fuzz targets of `raft-node/fuzz/` run (cargo-fuzz on nightly, `scripts/fuzz.sh`),
//! kept in the library so that a stable test replays their committed corpora in every test
//! run (`tests/node/fuzz_corpus.rs`). Not part of the API.
//!
//! Each function takes bytes a node reads from someone else — a connection, a snapshot sent
//! by the leader — and panics only when a promise breaks (that is how a fuzzer sees it):
//! bad bytes must give an error, never a panic, and whatever decodes must encode again.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tarpc::tokio_serde::Deserializer;
use tarpc::tokio_util::bytes::BytesMut;
use tarpc::tokio_util::codec::Decoder;
use tarpc::ClientMessage;

use allocator_core::{Command, Op, Owner, PoolId};

use crate::api::{Consistency, Query, RequestId, WriteRequest};
use crate::transport::codec::{Frames, Requests};
use crate::transport::rpc::{ApiRpcRequest, RaftRpcRequest, Via};
use crate::types::{Request, TypeConfig};

/// Bytes as a node reads them from a connection, after the channel byte.
///
/// The first byte picks the channel (bit 0: Raft or client API) and how the rest arrives
/// (bits 1–7: the size of each read, 1–128 bytes, so frames split anywhere); the rest goes
/// through the length-delimited framing with a small read limit (4 KiB on the API, 64 KiB on
/// Raft, so the limit is hit too) and each frame is decoded as that channel's request. A
/// frame over the limit must be refused, never returned; a request that decodes must encode
/// and decode again. The same bytes are also decoded as a log entry's payload (a stamped
/// request, an allocator command), which followers and restarts read back.
///
/// Returns how many of the inputs decoded (frames as requests, the bytes as a log entry).
pub fn wire(data: &[u8]) -> usize {
    let Some((&head, rest)) = data.split_first() else {
        return 0;
    };
    let mut decoded = 0;
    let raft = head & 1 == 1;
    let read_max = if raft { 64 << 10 } else { 4 << 10 };
    let step = 1 + (head >> 1) as usize;
    let mut frames = Frames::new(read_max, read_max);
    let mut buf = BytesMut::new();
    'stream: for piece in rest.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match frames.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(
                        frame.len() <= read_max,
                        "a frame of {} bytes passed a limit of {read_max}",
                        frame.len()
                    );
                    decoded += usize::from(if raft {
                        serves::<RaftRpcRequest>(frame)
                    } else {
                        serves::<ApiRpcRequest>(frame)
                    });
                }
                Ok(None) => break,
                // The node closes the connection.
                Err(_) => break 'stream,
            }
        }
    }
    decoded += usize::from(reencodes::<Request>(rest));
    decoded += usize::from(reencodes::<Command>(rest));
    decoded
}

/// A snapshot as a follower receives it from the leader (or a node reads it back from its
/// own RocksDB at start): the versioned blob of allocator state and client sessions. One that
/// restores must hold every allocator invariant, and what it encodes to must restore to the
/// same bytes again. Returns whether it restored.
pub fn snapshot(data: &[u8]) -> bool {
    crate::replication::store::fuzz_snapshot(data)
}

/// Decodes a request frame as a node does (its [`Requests`] codec); a request that decodes
/// must encode and decode again. Returns whether it decoded.
fn serves<T: Serialize + DeserializeOwned>(frame: BytesMut) -> bool {
    roundtrips::<ClientMessage<T>, _>(&frame, |b| {
        std::pin::Pin::new(&mut Requests).deserialize(&BytesMut::from(b))
    })
}

/// Decodes `bytes` as `T` with postcard; see [`roundtrips`].
fn reencodes<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> bool {
    roundtrips::<T, _>(bytes, |b| postcard::from_bytes::<T>(b))
}

/// Decodes `bytes` with `decode`; a value that decodes must encode (postcard), and its
/// encoding decode again. Returns whether it decoded.
fn roundtrips<T: Serialize, E: std::fmt::Display>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
) -> bool {
    let Ok(v) = decode(bytes) else {
        return false;
    };
    let again = postcard::to_allocvec(&v).expect("a decoded message encodes");
    if let Err(e) = decode(&again) {
        panic!("a message's own encoding does not decode: {e}");
    }
    true
}

/// Starting inputs for the corpora (`raftipam`'s own messages, written by
/// `tests/node/fuzz_corpus.rs` when `RAFTIPAM_FUZZ_SEEDS` is set): (target, name, bytes).
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let pool: PoolId = "global/10.0.0.0/24".parse().expect("a constant pool id");
    let id = RequestId {
        client: 7,
        serial: 9,
    };
    let api = |m: ApiRpcRequest| {
        ClientMessage::Request(tarpc::Request {
            context: tarpc::context::current(),
            id: 1,
            message: m,
        })
    };
    let write = api(ApiRpcRequest::Write {
        req: WriteRequest {
            id,
            acked_below: 3,
            op: Op::Allocate {
                pool: pool.clone(),
                addr: None,
                owner: Owner::new("h1", "web"),
                order: Default::default(),
            },
        },
        via: Via::Direct,
    });
    let read = api(ApiRpcRequest::Read {
        query: Query::WhoHas("10.0.0.5".parse().expect("a constant address")),
        consistency: Consistency::default(),
        via: Via::Direct,
    });
    let vote = ClientMessage::Request(tarpc::Request {
        context: tarpc::context::current(),
        id: 2,
        message: RaftRpcRequest::Vote {
            req: openraft::raft::VoteRequest::<TypeConfig>::new(openraft::Vote::new(3, 1), None),
        },
    });
    // Frames as a node reads them: channel/step byte, then length-delimited frames.
    let framed = |head: u8, msgs: &[Vec<u8>]| {
        let mut out = vec![head];
        for m in msgs {
            out.extend_from_slice(&(m.len() as u32).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    };
    let w = postcard::to_allocvec(&write).expect("a seed message encodes");
    let r = postcard::to_allocvec(&read).expect("a seed message encodes");
    let v = postcard::to_allocvec(&vote).expect("a seed message encodes");
    let mut entry = vec![0u8];
    entry.extend(
        postcard::to_allocvec(&Request {
            id,
            acked_below: 3,
            cmd: Command {
                at_ms: 1_000,
                op: Op::Allocate {
                    pool,
                    addr: Some("10.0.0.5".parse().expect("a constant address")),
                    owner: Owner::new("h2", "db"),
                    order: Default::default(),
                },
            },
        })
        .expect("encode"),
    );
    vec![
        (
            "wire",
            "api-write-read",
            framed(0xfe, &[w.clone(), r.clone()]),
        ),
        ("wire", "api-write-split", framed(0x06, &[w])),
        ("wire", "api-read", framed(0x00, &[r])),
        ("wire", "raft-vote", framed(0x41, &[v])),
        ("wire", "log-entry", entry),
        (
            "snapshot",
            "small-cluster",
            crate::replication::store::fuzz_seed(),
        ),
    ]
}
