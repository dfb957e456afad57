//! The wire between processes: one TCP port per node, a channel byte after the (optional)
//! TLS handshake, then length-delimited postcard frames carrying tarpc messages.
//!
//! - [`codec`]: channels, framing, frame limits, connecting (with TLS), and the decoders that
//!   refuse what a well-behaved peer never sends.
//! - [`hello`]: the version handshake after the channel byte.
//! - [`rpc`]: the two tarpc services — Raft between nodes, the client API.
//! - [`wire`]: the allocator's answer in the form that travels.
//!
//! It knows nothing of how a node routes a call or how a client retries: `node`, `client` and
//! the join exchange sit above it.

pub(crate) mod codec;
pub mod hello;
pub(crate) mod rpc;
pub(crate) mod wire;
