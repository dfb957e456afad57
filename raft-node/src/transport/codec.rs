//! Bytes on the wire: postcard frames, length-delimited, over TCP.
//!
//! One TCP port serves two tarpc services. A connection opens with one byte that says which
//! ([`CHANNEL_RAFT`] or [`CHANNEL_API`]); the rest of the stream is length-delimited postcard
//! frames. Over TLS the byte travels inside the encrypted stream, after the handshake.
//!
//! Frame limits are per direction ([`Frames`]): a node answers with frames up to
//! [`MAX_FRAME`] (a whole snapshot or backup), but reads requests up to what the channel
//! needs — [`MAX_FRAME`] on the Raft channel (snapshot install), far less on the client API
//! ([`MAX_API_REQUEST`]) — so no client, authenticated or not, can make a node buffer a gigabyte.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tarpc::tokio_serde::{Deserializer, Serializer};
use tarpc::tokio_util::bytes::{Bytes, BytesMut};
use tarpc::tokio_util::codec::{Decoder, Encoder, Framed, LengthDelimitedCodec};
use tarpc::tokio_util::either::Either;
use tarpc::{ClientMessage, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

use super::hello::{self, Hello, HelloReply, PeerVersion, VERSIONED};
use crate::tls::{Tls, HANDSHAKE_TIMEOUT};

/// Largest frame accepted where large frames are needed (1 GiB): a snapshot sent to a node,
/// a backup restored by an admin, any answer a node sends.
pub const MAX_FRAME: usize = 1 << 30;
/// Largest request frame a node accepts on the client API, from anyone (16 MiB: a host's
/// report lists at most 1,024 leaks and 1,024 missing endpoints; a backup is restored in
/// pieces of 4 MiB). Only Raft traffic between node certificates carries [`MAX_FRAME`].
pub const MAX_API_REQUEST: usize = 16 << 20;
/// First byte of a connection carrying Raft traffic.
pub const CHANNEL_RAFT: u8 = b'R';
/// First byte of a connection carrying the client API.
pub const CHANNEL_API: u8 = b'A';

/// First byte of a connection asking for a host certificate with a join token (TLS only,
/// no client certificate needed).
pub const CHANNEL_JOIN: u8 = b'J';

/// Largest frame either way of a join exchange (a certificate request, a certificate).
pub const MAX_JOIN_FRAME: usize = 64 << 10;

/// A connection: plain TCP, or TLS over TCP (either side of the handshake).
pub type Conn = Either<TcpStream, TlsStream<TcpStream>>;

/// Length-delimited frames with separate limits for what is read and what is written: a
/// node reads small requests from hosts but may answer with a large reply.
#[derive(Debug)]
pub struct Frames {
    read: LengthDelimitedCodec,
    write: LengthDelimitedCodec,
}

impl Frames {
    /// Frames of at most `read_max` bytes in, `write_max` out.
    pub fn new(read_max: usize, write_max: usize) -> Self {
        let codec = |max| {
            LengthDelimitedCodec::builder()
                .max_frame_length(max)
                .new_codec()
        };
        Frames {
            read: codec(read_max),
            write: codec(write_max),
        }
    }
}

impl Decoder for Frames {
    type Item = BytesMut;
    type Error = io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, io::Error> {
        self.read.decode(src)
    }
}

impl Encoder<Bytes> for Frames {
    type Error = io::Error;
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), io::Error> {
        self.write.encode(item, dst)
    }
}

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

/// Farthest a request's deadline may be: a year. tarpc turns the deadline it reads (a
/// duration) into an `Instant` by adding it to the present unchecked, so a client that sent
/// 2^64 seconds panicked the task serving its connection — found by the `wire` fuzz target.
/// [`Requests`] refuses such a request before tarpc decodes it; a year is far more than any
/// call waits (a node bounds every call by its own write timeout anyway).
pub const MAX_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// A node's codec for the requests it serves: postcard, with the deadline checked first
/// (see [`MAX_DEADLINE`]); replies are plain postcard.
#[derive(Clone, Copy, Debug, Default)]
pub struct Requests;

/// The start of a tarpc client message in postcard: which message, and for a request the
/// deadline (the first field of its context). Postcard reads a prefix and ignores the rest.
#[derive(serde::Deserialize)]
enum MessageHead {
    Request { deadline: Duration },
    Cancel,
}

/// Refuses a request whose deadline is past [`MAX_DEADLINE`] (or no duration at all: then
/// the full decode fails on its own).
pub fn check_deadline(src: &[u8]) -> io::Result<()> {
    if let Ok(MessageHead::Request { deadline }) = postcard::from_bytes::<MessageHead>(src) {
        if deadline > MAX_DEADLINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a request's deadline is {} s away, more than the {} s allowed",
                    deadline.as_secs(),
                    MAX_DEADLINE.as_secs()
                ),
            ));
        }
    }
    Ok(())
}

impl<T: Serialize> Serializer<T> for Requests {
    type Error = io::Error;
    fn serialize(self: Pin<&mut Self>, item: &T) -> Result<Bytes, io::Error> {
        Pin::new(&mut Postcard).serialize(item)
    }
}

impl<T: DeserializeOwned> Deserializer<ClientMessage<T>> for Requests {
    type Error = io::Error;
    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> Result<ClientMessage<T>, io::Error> {
        check_deadline(src)?;
        postcard::from_bytes(src).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// The transport a node serves one connection's requests on: at most `read_max` bytes per
/// request frame, [`MAX_FRAME`] per reply.
pub type ServerTransport<Req, Resp> =
    tarpc::tokio_serde::Framed<Framed<Conn, Frames>, ClientMessage<Req>, Response<Resp>, Requests>;

/// Frames a connection a node accepted (after its channel byte).
pub fn server_transport<Req, Resp>(stream: Conn, read_max: usize) -> ServerTransport<Req, Resp>
where
    Req: DeserializeOwned,
    Resp: Serialize,
{
    tarpc::tokio_serde::Framed::new(
        Framed::new(stream, Frames::new(read_max, MAX_FRAME)),
        Requests,
    )
}

/// A transport that remembers the first frame it could not decode (what a node does with a
/// Raft message from a newer release: see `node::accept`).
pub struct Watched<T> {
    inner: Pin<Box<T>>,
    /// The first decoding failure, if any.
    pub undecodable: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl<T> Watched<T> {
    /// Watches `inner`.
    pub fn new(inner: T) -> Watched<T> {
        Watched {
            inner: Box::pin(inner),
            undecodable: Default::default(),
        }
    }
}

impl<T, I> futures::Stream for Watched<T>
where
    T: futures::Stream<Item = io::Result<I>>,
{
    type Item = io::Result<I>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let r = self.inner.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(Some(Err(e))) = &r {
            if e.kind() == io::ErrorKind::InvalidData {
                let mut seen = self.undecodable.lock().unwrap_or_else(|p| p.into_inner());
                seen.get_or_insert_with(|| e.to_string());
            }
        }
        r
    }
}

impl<T, Item> futures::Sink<Item> for Watched<T>
where
    T: futures::Sink<Item>,
{
    type Error = T::Error;

    fn poll_ready(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.as_mut().poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Item) -> Result<(), Self::Error> {
        self.inner.as_mut().start_send(item)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.as_mut().poll_flush(cx)
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.as_mut().poll_close(cx)
    }
}

/// Postcard frames over any stream, with their own read and write limits ([`Frames`]).
pub type Framing<S, In, Out> = tarpc::tokio_serde::Framed<Framed<S, Frames>, In, Out, Postcard>;

/// Frames `s`: at most `read_max` bytes per frame read, `write_max` written.
pub fn framing<S, In, Out>(s: S, read_max: usize, write_max: usize) -> Framing<S, In, Out>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    tarpc::tokio_serde::Framed::new(Framed::new(s, Frames::new(read_max, write_max)), Postcard)
}

/// A tarpc transport over one connection.
pub type Transport<In, Out> = Framing<Conn, In, Out>;

/// Frames a connection: at most `read_max` bytes per frame read, [`MAX_FRAME`] written.
pub fn transport<In, Out>(stream: Conn, read_max: usize) -> Transport<In, Out>
where
    In: DeserializeOwned,
    Out: Serialize,
{
    framing(stream, read_max, MAX_FRAME)
}

/// Connects to `addr` (over TLS with `tls`), announces `channel`, and frames the stream;
/// gives up after `timeout` (the TLS handshake has its own bound). See [`connect_versioned`].
pub async fn connect<In, Out>(
    addr: &str,
    channel: u8,
    timeout: Duration,
    tls: Option<&Tls>,
) -> io::Result<Transport<In, Out>>
where
    In: DeserializeOwned,
    Out: Serialize,
{
    connect_versioned(addr, channel, timeout, tls)
        .await
        .map(|(t, _)| t)
}

/// Like [`connect`], and says which release and protocol the node at `addr` speaks: the
/// version handshake first ([`super::hello`]); a node that closes the connection without
/// answering it is a protocol-1 node (raftipam 0.1.x), dialled again without it. A node that
/// shares no protocol with this one is an error naming both versions and what to do. Both
/// dials share one bound (`timeout`, plus one TLS handshake's): a second dial happens only
/// after a node closed the first at once, and an unreachable node must not hold a client
/// past its own call timeout (a client tries the next endpoint after it).
pub async fn connect_versioned<In, Out>(
    addr: &str,
    channel: u8,
    timeout: Duration,
    tls: Option<&Tls>,
) -> io::Result<(Transport<In, Out>, PeerVersion)>
where
    In: DeserializeOwned,
    Out: Serialize,
{
    let fut = async {
        if let Some(found) = dial(addr, channel, tls, true).await? {
            return Ok(found);
        }
        dial(addr, channel, tls, false).await?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("{addr} closed the connection at once"),
            )
        })
    };
    let (s, version) = tokio::time::timeout(
        timeout + tls.map_or(Duration::ZERO, |_| HANDSHAKE_TIMEOUT),
        fut,
    )
    .await
    .map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {addr} timed out after {timeout:?}"),
        )
    })??;
    Ok((transport(s, MAX_FRAME), version))
}

/// One connection attempt: TCP, TLS, the channel byte, and (`versioned`) the handshake.
/// `None`: the node closed the connection instead of answering the handshake.
async fn dial(
    addr: &str,
    channel: u8,
    tls: Option<&Tls>,
    versioned: bool,
) -> io::Result<Option<(Conn, PeerVersion)>> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut conn: Conn = match tls {
        Some(tls) => Either::Right(TlsStream::Client(tls.connect(s, addr).await?)),
        None => Either::Left(s),
    };
    if !versioned {
        conn.write_all(&[channel]).await?;
        conn.flush().await?;
        return Ok(Some((conn, PeerVersion::legacy())));
    }
    conn.write_all(&[channel | VERSIONED]).await?;
    let answer = match hello::send(&mut conn, &Hello::ours()).await {
        Ok(()) => hello::recv::<_, HelloReply>(&mut conn).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(HelloReply::Accepted { binary, protocol }) => {
            Ok(Some((conn, PeerVersion { binary, protocol })))
        }
        Ok(HelloReply::Refused { why, .. }) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("the node at {addr} refused this client: {why}"),
        )),
        Err(e) if closed_at_once(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether an error is a peer closing a connection it did not want (what a protocol-1 node
/// does with a channel byte it does not know).
pub(crate) fn closed_at_once(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use futures::{SinkExt, StreamExt};

    use super::*;

    /// A status request whose deadline is `secs` seconds away, as a client would send it.
    fn status_request(secs: u64) -> BytesMut {
        use crate::transport::rpc::ApiRpcRequest;
        let msg: ClientMessage<ApiRpcRequest> = ClientMessage::Request(tarpc::Request {
            context: tarpc::context::current(),
            id: 1,
            message: ApiRpcRequest::Status {},
        });
        let b = postcard::to_allocvec(&msg).expect("encode");
        // Postcard: the variant (0: a request), then the deadline's seconds as a varint (one
        // byte for tarpc's default of 10 s), then the rest.
        assert_eq!((b[0], b[1] < 0x80), (0, true), "{b:?}");
        let mut out = vec![0u8];
        out.extend(postcard::to_allocvec(&secs).expect("a u64 encodes (as a varint)"));
        out.extend_from_slice(&b[2..]);
        BytesMut::from(&out[..])
    }

    /// tarpc adds a request's deadline to the present unchecked: 2^64 s panicked the task
    /// serving the connection (the `wire` fuzz target found it). A node refuses it instead.
    #[test]
    fn a_deadline_out_of_range_is_refused_not_a_panic() {
        use crate::transport::rpc::ApiRpcRequest;
        let decode = |b: &BytesMut| -> io::Result<ClientMessage<ApiRpcRequest>> {
            Pin::new(&mut Requests).deserialize(b)
        };
        assert!(decode(&status_request(10)).is_ok());
        assert!(decode(&status_request(MAX_DEADLINE.as_secs() - 1)).is_ok());
        for secs in [MAX_DEADLINE.as_secs() + 1, u64::MAX / 2, u64::MAX] {
            let e = decode(&status_request(secs)).expect_err("refused");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("deadline"), "{e}");
        }
    }

    /// A frame far above tokio-util's default 8 MiB limit (a snapshot) goes through whole.
    #[tokio::test]
    async fn a_frame_larger_than_the_default_limit_travels_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        // A node of this release: the versioned channel byte, the handshake, then frames.
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut b = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut s, &mut b)
                .await
                .expect("channel byte");
            assert_eq!(b[0], CHANNEL_RAFT | VERSIONED);
            let h: Hello = hello::recv(&mut s).await.expect("hello");
            let reply = hello::answer(&h, hello::PROTOCOL_MIN, hello::PROTOCOL);
            hello::send(&mut s, &reply).await.expect("answer");
            let mut t: Transport<Vec<u8>, usize> = transport(Either::Left(s), MAX_FRAME);
            let got = t.next().await.expect("a frame").expect("decoded");
            t.send(got.len()).await.expect("reply");
            got.iter().map(|x| *x as u64).sum::<u64>()
        });
        let payload: Vec<u8> = (0..20 << 20).map(|i| (i % 251) as u8).collect();
        let sum: u64 = payload.iter().map(|x| *x as u64).sum();
        let (mut t, version): (Transport<usize, Vec<u8>>, _) =
            connect_versioned(&addr, CHANNEL_RAFT, Duration::from_secs(10), None)
                .await
                .expect("connect");
        assert_eq!(version.protocol, hello::PROTOCOL);
        t.send(payload).await.expect("send");
        let n = t.next().await.expect("a reply").expect("decoded");
        assert_eq!(n, 20 << 20);
        assert_eq!(server.await.expect("server"), sum);
    }

    /// A node of raftipam 0.1 closes a connection whose channel byte it does not know (the
    /// versioned one); the client dials again without the handshake and speaks protocol 1.
    #[tokio::test]
    async fn a_node_that_knows_no_handshake_is_dialled_again_without_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let mut refused = 0;
            loop {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut b = [0u8; 1];
                if tokio::io::AsyncReadExt::read_exact(&mut s, &mut b)
                    .await
                    .is_err()
                {
                    continue;
                }
                if b[0] != CHANNEL_API {
                    refused += 1;
                    continue; // dropped: what 0.1 does with an unknown channel byte
                }
                let mut t: Transport<u32, u32> = transport(Either::Left(s), MAX_FRAME);
                let got = t.next().await.expect("a frame").expect("decoded");
                t.send(got + 1).await.expect("reply");
                return refused;
            }
        });
        let (mut t, version): (Transport<u32, u32>, _) =
            connect_versioned(&addr, CHANNEL_API, Duration::from_secs(10), None)
                .await
                .expect("connect");
        assert_eq!(version, PeerVersion::legacy());
        t.send(41).await.expect("send");
        assert_eq!(t.next().await.expect("a reply").expect("decoded"), 42);
        assert_eq!(
            server.await.expect("server"),
            1,
            "one versioned attempt, refused"
        );
    }
}

/// What a node decodes from bytes it did not write — client requests, Raft requests, log
/// entries — given random and mutated bytes: an error, never a panic (the bounded-time
/// stable counterpart of fuzzing these decoders).
#[cfg(test)]
mod decode_fuzz {
    use allocator_core::{Command, Op, Owner};
    use proptest::prelude::*;
    use tarpc::ClientMessage;

    use crate::api::{RequestId, WriteRequest};
    use crate::transport::rpc::{ApiRpcRequest, RaftRpcRequest, Via};

    fn decode_all(bytes: &[u8]) {
        let _ = postcard::from_bytes::<ClientMessage<ApiRpcRequest>>(bytes);
        let _ = postcard::from_bytes::<ClientMessage<RaftRpcRequest>>(bytes);
        let _ = postcard::from_bytes::<WriteRequest>(bytes);
        let _ = postcard::from_bytes::<Command>(bytes);
    }

    fn valid_write() -> Vec<u8> {
        let w = WriteRequest {
            id: RequestId {
                client: 7,
                serial: 9,
            },
            acked_below: 3,
            op: Op::Allocate {
                pool: "global/10.0.0.0/24".parse().expect("pool"),
                addr: None,
                owner: Owner::new("h1", "web"),
                order: Default::default(),
            },
        };
        let msg = ClientMessage::Request(tarpc::Request {
            context: tarpc::context::current(),
            id: 1,
            message: ApiRpcRequest::Write {
                req: w,
                via: Via::Direct,
            },
        });
        postcard::to_allocvec(&msg).expect("encode")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            decode_all(&bytes);
        }

        #[test]
        fn mutated_requests_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
            let mut b = valid_write();
            for (i, x) in flips {
                let n = b.len();
                b[i % n] ^= x;
            }
            let keep = cut % (b.len() + 1);
            decode_all(&b[..keep]);
            decode_all(&b);
        }
    }

    #[test]
    fn the_valid_request_decodes() {
        let b = valid_write();
        assert!(postcard::from_bytes::<ClientMessage<ApiRpcRequest>>(&b).is_ok());
    }
}
