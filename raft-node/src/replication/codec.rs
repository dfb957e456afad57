//! Bytes on the wire: postcard frames, length-delimited, over TCP.
//!
//! One TCP port serves two tarpc services. A connection opens with one byte that says which
//! ([`CHANNEL_RAFT`] or [`CHANNEL_API`]); the rest of the stream is length-delimited postcard
//! frames. The frame limit is large so that a whole snapshot fits in one message.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tarpc::tokio_serde::{Deserializer, Serializer};
use tarpc::tokio_util::bytes::{Bytes, BytesMut};
use tarpc::tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Largest frame accepted (1 GiB): snapshots travel as one frame.
pub const MAX_FRAME: usize = 1 << 30;
/// First byte of a connection carrying Raft traffic.
pub const CHANNEL_RAFT: u8 = b'R';
/// First byte of a connection carrying the client API.
pub const CHANNEL_API: u8 = b'A';

/// The postcard tokio-serde codec.
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

impl<T: Serialize> Serializer<T> for Postcard {
    type Error = io::Error;
    fn serialize(self: Pin<&mut Self>, item: &T) -> Result<Bytes, io::Error> {
        postcard::to_allocvec(item)
            .map(Bytes::from)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

impl<T: DeserializeOwned> Deserializer<T> for Postcard {
    type Error = io::Error;
    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> Result<T, io::Error> {
        postcard::from_bytes(src).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// A tarpc transport over one TCP stream.
pub type Transport<In, Out> = tarpc::serde_transport::Transport<TcpStream, In, Out, Postcard>;

/// Frames a stream (both ends use the same limit).
pub fn transport<In, Out>(stream: TcpStream) -> Transport<In, Out>
where
    In: DeserializeOwned,
    Out: Serialize,
{
    let framed: Framed<TcpStream, LengthDelimitedCodec> = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_framed(stream);
    tarpc::serde_transport::new(framed, Postcard)
}

/// Connects to `addr`, announces `channel`, and frames the stream; gives up after `timeout`.
pub async fn connect<In, Out>(
    addr: &str,
    channel: u8,
    timeout: Duration,
) -> io::Result<Transport<In, Out>>
where
    In: DeserializeOwned,
    Out: Serialize,
{
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        s.write_all(&[channel]).await?;
        Ok::<_, io::Error>(s)
    };
    let s = tokio::time::timeout(timeout, fut).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {addr} timed out after {timeout:?}"),
        )
    })??;
    Ok(transport(s))
}

#[cfg(test)]
mod tests {
    use futures::{SinkExt, StreamExt};

    use super::*;

    /// A frame far above tokio-util's default 8 MiB limit (a snapshot) goes through whole.
    #[tokio::test]
    async fn a_frame_larger_than_the_default_limit_travels_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut b = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut s, &mut b)
                .await
                .expect("channel byte");
            assert_eq!(b[0], CHANNEL_RAFT);
            let mut t: Transport<Vec<u8>, usize> = transport(s);
            let got = t.next().await.expect("a frame").expect("decoded");
            t.send(got.len()).await.expect("reply");
            got.iter().map(|x| *x as u64).sum::<u64>()
        });
        let payload: Vec<u8> = (0..20 << 20).map(|i| (i % 251) as u8).collect();
        let sum: u64 = payload.iter().map(|x| *x as u64).sum();
        let mut t: Transport<usize, Vec<u8>> =
            connect(&addr, CHANNEL_RAFT, Duration::from_secs(10))
                .await
                .expect("connect");
        t.send(payload).await.expect("send");
        let n = t.next().await.expect("a reply").expect("decoded");
        assert_eq!(n, 20 << 20);
        assert_eq!(server.await.expect("server"), sum);
    }
}
