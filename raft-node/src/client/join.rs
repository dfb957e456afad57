//! The joiner's half of a join (see [`crate::tls::join`]): dial a node, prove nothing, check
//! that the node belongs to the token's CA, send the secret and a certificate request on the
//! join channel, and get a host certificate back.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::tls::join::{joiner_side, JoinReply, JoinRequest, Token};
use crate::tls::TlsError;
use crate::transport::codec::{closed_at_once, framing, Framing, CHANNEL_JOIN, MAX_JOIN_FRAME};
use crate::transport::hello::{self, Hello, HelloReply, VERSIONED};

/// A key and a request for `name`, sent to the node at `addr` with `token`'s secret once the
/// node proved it belongs to the token's CA. Returns the PEM certificate, key and CA.
pub async fn request(
    addr: &str,
    token: &Token,
    name: &str,
    timeout: Duration,
) -> Result<(String, String, String), TlsError> {
    let side = joiner_side(token, name)?;
    let io_err = |what: &str, e: io::Error| TlsError::Config(format!("{what} {addr}: {e}"));
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| io_err("cannot connect to", e))?;
        let name_of = crate::tls::server_name(addr).map_err(|e| io_err("bad address", e))?;
        let mut s = tokio_rustls::TlsConnector::from(Arc::clone(&side.config))
            .connect(name_of, tcp)
            .await
            .map_err(|e| io_err("TLS handshake with", e))?;
        // The version handshake (see `transport::hello`); joining needs a node of protocol 2
        // or newer (0.1.x nodes answer joins too, but this client speaks to them no more).
        s.write_all(&[CHANNEL_JOIN | VERSIONED])
            .await
            .map_err(|e| io_err("cannot write to", e))?;
        hello::send(&mut s, &Hello::ours())
            .await
            .map_err(|e| io_err("cannot write to", e))?;
        match hello::recv::<_, HelloReply>(&mut s).await {
            Ok(HelloReply::Accepted { .. }) => {}
            Ok(HelloReply::Refused { why, .. }) => {
                return Err(TlsError::Identity(format!(
                    "the node at {addr} refused to talk to this client: {why}"
                )))
            }
            Err(e) if closed_at_once(&e) => {
                return Err(TlsError::Identity(format!(
                    "the node at {addr} runs raftipam 0.1.x, which this `raftipam join` cannot use: join through a node of {} or newer",
                    hello::binary_version()
                )))
            }
            Err(e) => return Err(io_err("no answer from", e)),
        }
        let mut t: Framing<_, JoinReply, JoinRequest> = framing(s, MAX_JOIN_FRAME, MAX_JOIN_FRAME);
        t.send(JoinRequest {
            secret: token.secret,
            csr: side.csr_der.clone(),
        })
        .await
        .map_err(|e| io_err("cannot send the request to", e))?;
        match t.next().await {
            Some(Ok(JoinReply::Issued { cert, ca })) => Ok((cert, ca)),
            Some(Ok(JoinReply::Refused(why))) => Err(TlsError::Identity(format!(
                "the node at {addr} refused to issue a certificate: {why}"
            ))),
            Some(Err(e)) => Err(io_err("no answer from", e)),
            None => Err(TlsError::Identity(format!(
                "the node at {addr} closed the connection without an answer"
            ))),
        }
    };
    let (cert, ca) = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| TlsError::Config(format!("{addr} did not answer within {timeout:?}")))??;
    Ok((cert, side.key_pem, ca))
}
