//! raftipam's own bookkeeping, replicated with the allocator: **embedders can ignore it.**
//!
//! raftipam keeps a few records that are not about addresses in the same replicated state,
//! so that every node agrees on them without a second log:
//!
//! - **revoked certificate names** ([`Op::Revoke`](crate::Op::Revoke), also done by
//!   [`Op::ForgetHost`](crate::Op::ForgetHost)): every certificate of the name issued before
//!   the command's time is refused; ask with [`State::is_revoked`](crate::State::is_revoked),
//!   list with [`State::revocations`](crate::State::revocations);
//! - **revoked certificate serials** ([`Op::RevokeSerial`](crate::Op::RevokeSerial), one
//!   certificate each, spelled as [`canonical_serial`] spells them, at most
//!   [`MAX_REVOKED_SERIALS`]): [`State::is_serial_revoked`](crate::State::is_serial_revoked),
//!   [`State::revoked_serials`](crate::State::revoked_serials);
//! - **join tokens** ([`Op::AddJoinToken`](crate::Op::AddJoinToken),
//!   [`Op::RevokeJoinToken`](crate::Op::RevokeJoinToken), at most [`MAX_JOIN_TOKENS`] valid
//!   at once): [`State::join_token_valid`](crate::State::join_token_valid),
//!   [`State::join_tokens`](crate::State::join_tokens).
//!
//! - **the cluster version** ([`Op::SetClusterVersion`](crate::Op::SetClusterVersion),
//!   [`State::cluster_version`](crate::State::cluster_version), [`CLUSTER_VERSION`]): what
//!   every member can apply; [`Op::needs_cluster_version`](crate::Op::needs_cluster_version)
//!   says what each operation needs, and `apply` refuses the rest.
//!
//! They travel in the same [`Command`](crate::Command)s and snapshots as the allocator's
//! state (their variants cannot move: the encoding is persisted), but the allocator never
//! reads them: no pool, address or allocation depends on them. The typed write methods of
//! [`State`](crate::State) never write them either, but for
//! [`State::forget_host`](crate::State::forget_host), which revokes the host's certificate
//! name as [`Op::ForgetHost`](crate::Op::ForgetHost) always has (harmless to an embedder that
//! never asks).
//!
//! This module owns the vocabulary of those records (the serial spelling, their bounds); the
//! records themselves live in the state (`state/credentials.rs`). It never holds state and
//! never touches the allocator.

pub use crate::limits::{
    MAX_ISSUED_CERTS, MAX_JOIN_TOKENS, MAX_JOIN_TOKEN_TTL_MS, MAX_REVOKED_SERIALS,
};

/// The newest cluster version this build can apply and write. A cluster's version is the
/// one every member can follow: operations and formats newer than it are refused until
/// `raftipam cluster upgrade` raises it ([`crate::Op::SetClusterVersion`]).
///
/// - 1: raftipam 0.1 (the version of a state that never recorded one).
/// - 2: raftipam 0.2 — join tokens with a number of uses or bound to a name, recorded
///   join certificates, per-host quotas, snapshot format 5.
pub const CLUSTER_VERSION: u32 = 2;

/// The revocation ([`crate::Op::Revoke`] of this name) that retires Raft id `id` when its
/// node is removed: no certificate may act as that member again, whatever its name (ids
/// are never reused). Checked with [`State::is_revoked`](crate::State::is_revoked).
pub fn removed_node_revocation(id: u64) -> String {
    format!("raft\u{1f}{id}")
}

/// The release that brought cluster version `version`, for messages (`0.2`).
pub fn release_of(version: u32) -> String {
    format!("0.{version}")
}

/// The one spelling of a certificate serial number that revocation compares: lowercase
/// hexadecimal, without separators (`:`, spaces), a `0x` prefix or leading zeros, at most
/// 40 digits (RFC 5280 serials are at most 20 bytes). `None` if `serial` is not hexadecimal.
///
/// ```
/// use allocator_core::cluster::canonical_serial;
///
/// assert_eq!(canonical_serial("0A:1b:FF").as_deref(), Some("a1bff"));
/// assert_eq!(canonical_serial("xyz"), None);
/// ```
pub fn canonical_serial(serial: &str) -> Option<String> {
    let s = serial.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let digits: String = s
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    let out = if trimmed.is_empty() { "0" } else { trimmed };
    (out.len() <= 40).then(|| out.to_string())
}

/// Whether `hash` is a join token's hash as [`crate::Op::AddJoinToken`] takes it: SHA-256 in
/// 64 lowercase hexadecimal digits.
pub(crate) fn is_token_hash(hash: &str) -> bool {
    hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod serial_tests {
    use super::canonical_serial;

    #[test]
    fn serials_have_one_spelling() {
        for s in ["0A:1b:FF", "a1bff", "0x0a1bff", " 00 0a 1b ff "] {
            assert_eq!(canonical_serial(s).as_deref(), Some("a1bff"), "{s:?}");
        }
        assert_eq!(canonical_serial("00").as_deref(), Some("0"));
        for s in ["", "xyz", "0x", "12:3g", &"f".repeat(41)] {
            assert_eq!(canonical_serial(s), None, "{s:?}");
        }
    }
}
