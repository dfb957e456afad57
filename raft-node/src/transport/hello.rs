//! The version handshake every connection opens with, right after its channel byte: each side
//! says which release it is and which protocol versions it speaks, and they agree on one or
//! part with an answer that names both and says what to do.
//!
//! A connection that wants the handshake sets [`VERSIONED`] in its channel byte and sends a
//! [`Hello`]; the node answers with a [`HelloReply`] and, if accepted, the channel goes on as
//! before. A channel byte without [`VERSIONED`] is a peer of protocol 1 (raftipam 0.1.x, which
//! knew no handshake): a node accepts it as long as protocol 1 is in its range. A node of
//! protocol 1 closes a connection whose channel byte it does not know; a client that gets no
//! answer to its [`Hello`] therefore dials again without the handshake and takes the peer for
//! protocol 1 (see `codec::connect`).
//!
//! Protocols: 1 — raftipam 0.1.x (no handshake); 2 — 0.2.x (this handshake, the `info` call).
//! A frame of the handshake is a big-endian u16 length and a postcard body, at most
//! [`MAX_HELLO`] bytes: it is read before anything else is trusted.

use std::io;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol this release speaks best.
pub const PROTOCOL: u32 = 2;
/// The oldest protocol this release still speaks (raftipam 0.1.x's).
pub const PROTOCOL_MIN: u32 = 1;
/// Set in a channel byte: a [`Hello`] follows.
pub const VERSIONED: u8 = 0x80;
/// Largest handshake frame either way.
pub const MAX_HELLO: usize = 1024;

/// This binary's release (`0.2.0`).
pub fn binary_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// What a connecting side says first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Its release, e.g. `0.2.0`.
    pub binary: String,
    /// The oldest protocol it speaks.
    pub min: u32,
    /// The newest protocol it speaks.
    pub max: u32,
}

impl Hello {
    /// This binary's hello.
    pub fn ours() -> Hello {
        Hello {
            binary: binary_version().to_string(),
            min: PROTOCOL_MIN,
            max: PROTOCOL,
        }
    }
}

/// A node's answer to a [`Hello`]. Append-only: new answers go at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Go on, speaking `protocol`.
    Accepted {
        /// The node's release.
        binary: String,
        /// The protocol both speak (the newest they share).
        protocol: u32,
    },
    /// No protocol in common; `why` says what to do.
    Refused {
        /// The node's release.
        binary: String,
        /// The oldest protocol the node speaks.
        min: u32,
        /// The newest protocol the node speaks.
        max: u32,
        /// Both versions and what to do, in words.
        why: String,
    },
}

/// Who is at the other end of a connection, as the handshake told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerVersion {
    /// Its release (`0.1.x` for a peer that knew no handshake).
    pub binary: String,
    /// The protocol the connection speaks.
    pub protocol: u32,
}

impl PeerVersion {
    /// A peer that opened without the handshake: raftipam 0.1.x.
    pub fn legacy() -> PeerVersion {
        PeerVersion {
            binary: "0.1.x".to_string(),
            protocol: 1,
        }
    }
}

/// The node's side: the answer to `hello`, given that the node speaks `min..=max`.
pub fn answer(hello: &Hello, min: u32, max: u32) -> HelloReply {
    let ours = binary_version();
    let shared = hello.max.min(max);
    if shared >= hello.min.max(min) {
        return HelloReply::Accepted {
            binary: ours.to_string(),
            protocol: shared,
        };
    }
    let why = if hello.max < min {
        format!(
            "raftipam {} (protocol {}..={}) is too old for this node, which runs raftipam {ours} (protocol {min}..={max}): upgrade it to {ours} or newer",
            hello.binary, hello.min, hello.max
        )
    } else {
        format!(
            "raftipam {} (protocol {}..={}) is newer than this node, which runs raftipam {ours} (protocol {min}..={max}) and cannot follow it: upgrade this node to {} or newer",
            hello.binary, hello.min, hello.max, hello.binary
        )
    };
    HelloReply::Refused {
        binary: ours.to_string(),
        min,
        max,
        why,
    }
}

/// Writes one handshake frame.
pub async fn send<W, T>(w: &mut W, msg: &T) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body =
        postcard::to_allocvec(msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if body.len() > MAX_HELLO {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a handshake frame over 1 KiB",
        ));
    }
    let mut frame = Vec::with_capacity(2 + body.len());
    frame.extend_from_slice(&(body.len() as u16).to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame).await?;
    w.flush().await
}

/// Reads one handshake frame (at most [`MAX_HELLO`] bytes).
pub async fn recv<R, T>(r: &mut R) -> io::Result<T>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 2];
    r.read_exact(&mut len).await?;
    let len = u16::from_be_bytes(len) as usize;
    if len > MAX_HELLO {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a handshake frame of {len} bytes (at most {MAX_HELLO})"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    postcard::from_bytes(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(min: u32, max: u32) -> Hello {
        Hello {
            binary: "9.9.9".into(),
            min,
            max,
        }
    }

    #[test]
    fn the_newest_shared_protocol_is_chosen() {
        assert_eq!(
            answer(&hello(1, 5), 1, 2),
            HelloReply::Accepted {
                binary: binary_version().into(),
                protocol: 2
            }
        );
        assert!(matches!(
            answer(&hello(1, 1), 1, 2),
            HelloReply::Accepted { protocol: 1, .. }
        ));
    }

    #[test]
    fn a_peer_outside_the_range_is_told_both_versions_and_what_to_do() {
        let HelloReply::Refused { why, .. } = answer(&hello(3, 4), 1, 2) else {
            panic!("refused");
        };
        assert!(
            why.contains("9.9.9") && why.contains(binary_version()),
            "{why}"
        );
        assert!(why.contains("upgrade this node"), "{why}");
        let HelloReply::Refused { why, .. } = answer(&hello(1, 1), 2, 3) else {
            panic!("refused");
        };
        assert!(
            why.contains("too old") && why.contains("upgrade it"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        send(&mut a, &Hello::ours()).await.expect("send");
        let got: Hello = recv(&mut b).await.expect("recv");
        assert_eq!(got, Hello::ours());
        a.write_all(&[0xff, 0xff]).await.expect("write");
        let e = recv::<_, Hello>(&mut b).await.expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
