//! How failures become replies, and why the socket could not be served.
//!
//! dockerd reads a plugin's error only from a non-200 reply whose body is `{"Err": "..."}`
//! (`pkg/plugins/client.go`); a 200 with an error field would count as success, and a plain
//! text body would reach the user as raw bytes. So every failure of a call is an [`ApiError`]
//! — a status and a message — and has exactly one way out: [`ApiError::into_response`].
//! The status tells the kind of failure (400 the request is wrong, 409 the allocator's state
//! refuses it, 503 the cluster could not answer); dockerd shows only the message.

use std::io;
use std::path::PathBuf;

use allocator_core::AllocError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use thiserror::Error;

use crate::backend::BackendError;
use crate::wire::{ErrorResponse, CONTENT_TYPE};

/// A failed plugin call: the HTTP status and the message dockerd will show.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// A non-200 status.
    pub status: StatusCode,
    /// What went wrong; never empty.
    pub message: String,
}

impl ApiError {
    /// An error with `status` and `message` (an empty message is replaced by the status text,
    /// so that the reply always says something).
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.trim().is_empty() {
            message = format!("request failed ({status})");
        }
        ApiError { status, message }
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 409: the allocator's state does not allow it (held, reserved, full, overlapping).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 503: the backend could not answer.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 500: a fault in the shim or the backend.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The same error with `context: ` in front of its message.
    pub fn context(mut self, context: impl std::fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl From<AllocError> for ApiError {
    fn from(e: AllocError) -> Self {
        let mut message = e.to_string();
        if let AllocError::PoolFull { pool, leaks, .. } = &e {
            if leaks.total() > 0 {
                message.push_str(
                    ". Each host's raftipam plugin releases its leaks by itself once its grace \
                     period has passed; `raftipam check --repair` on ",
                );
                let hosts: Vec<&str> = leaks.by_host.iter().map(|(h, _)| h.as_str()).collect();
                message.push_str(&hosts.join(", "));
                message.push_str(" releases them now");
            } else {
                message.push_str(&format!(
                    ". The pool is really in use: remove containers or give the network a larger \
                     subnet; `raftipam pool show {pool}` shows who holds what, `raftipam check` \
                     looks for leaks again"
                ));
            }
        }
        match e {
            AllocError::NoSuchPool(_)
            | AllocError::OutsidePool { .. }
            | AllocError::InvalidPool(_)
            | AllocError::Invalid(_) => ApiError::bad_request(message),
            AllocError::Overlap { .. }
            | AllocError::NoDefaultSubnet { .. }
            | AllocError::PoolFull { .. }
            | AllocError::HeldBy { .. }
            | AllocError::Reserved { .. }
            | AllocError::Cooling { .. }
            | AllocError::OwnerHoldsOther { .. }
            | AllocError::NotOwner { .. }
            | AllocError::PoolInUse { .. }
            | AllocError::NotEmpty(_) => ApiError::conflict(message),
            // A refusal this shim does not know yet (a newer allocator): a conflict, whose
            // message the allocator wrote.
            _ => ApiError::conflict(message),
        }
    }
}

#[cfg(test)]
mod pool_full_tests {
    use super::*;

    fn full(leaks: allocator_core::LeakHint) -> ApiError {
        let pool: allocator_core::PoolId = "global/10.0.0.0/30".parse().expect("pool id");
        ApiError::from(AllocError::PoolFull {
            pool,
            usage: allocator_core::Usage {
                size: 4,
                reserved: 2,
                allocated: 2,
                cooling: 0,
                free: 0,
            },
            leaks,
        })
    }

    #[test]
    fn a_full_pool_says_its_usage_and_that_nobody_reported_leaks() {
        let api = full(Default::default());
        assert_eq!(api.status, StatusCode::CONFLICT);
        assert!(api.message.contains("is full"), "{}", api.message);
        assert!(api.message.contains("2 allocated"), "{}", api.message);
        assert!(
            api.message.contains("no host reported leaks"),
            "{}",
            api.message
        );
        assert!(
            api.message
                .contains("raftipam pool show global/10.0.0.0/30"),
            "{}",
            api.message
        );
    }

    #[test]
    fn a_full_pool_with_reported_leaks_names_the_hosts_and_the_repair() {
        let leaks = allocator_core::LeakHint {
            by_host: vec![("host-a".into(), 1), ("host-b".into(), 2)],
        };
        let api = full(leaks);
        assert!(
            api.message.contains("3 of its addresses are leaked"),
            "{}",
            api.message
        );
        assert!(
            api.message.contains("host-a (1), host-b (2)"),
            "{}",
            api.message
        );
        assert!(
            api.message
                .contains("`raftipam check --repair` on host-a, host-b"),
            "{}",
            api.message
        );
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Alloc(a) => a.into(),
            u @ BackendError::Unavailable(_) => ApiError::unavailable(u.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorResponse { err: self.message })
            .unwrap_or_else(|_| br#"{"Err":"the error could not be encoded"}"#.to_vec());
        let mut resp = (self.status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        resp
    }
}

/// Why the plugin socket could not be served.
#[derive(Debug, Error)]
pub enum ShimError {
    /// The configuration cannot work (e.g. an empty host name).
    #[error("invalid plugin configuration: {0}")]
    Config(String),
    /// Another process is serving the socket already.
    #[error("{} is in use: another plugin process is listening on it; stop it first", path.display())]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket is in the way.
    #[error("{} exists and is not a socket; remove it or choose another path", path.display())]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// A file-system or socket operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_backend_is_503_and_says_so() {
        let e: ApiError = BackendError::Unavailable("no quorum".into()).into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            e.message.contains("unavailable: no quorum"),
            "{}",
            e.message
        );
    }

    #[test]
    fn an_empty_message_is_never_sent() {
        let e = ApiError::bad_request("  ");
        assert!(!e.message.trim().is_empty());
    }
}
