//! raftipam's own bookkeeping kept in the replicated state ([`crate::cluster`]): revoked
//! certificate names (by issue time), revoked certificate serials, join tokens.
//!
//! Owns [`Credentials`] and the questions the nodes ask of it (`State::is_revoked`, ...).
//! Never touches a pool, an address or a host's holdings, and the allocator never reads it:
//! an embedder that does not use these operations never sees it.

use std::collections::BTreeMap;

use super::State;
use crate::cluster::{canonical_serial, is_token_hash};
use crate::error::AllocError;
use crate::limits::{check_name, MAX_JOIN_TOKENS, MAX_REVOKED_SERIALS};

/// Revocations and join tokens: a part of [`State`] apart from the allocator's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Credentials {
    /// Revoked certificate names: certificates of the name issued before the time (ms).
    pub(crate) revoked: BTreeMap<String, u64>,
    /// Join tokens: SHA-256 of the secret (hex) and expiry (ms).
    pub(crate) join_tokens: BTreeMap<String, u64>,
    /// Revoked certificate serials ([`canonical_serial`]) and when they were revoked.
    pub(crate) revoked_serials: BTreeMap<String, u64>,
    /// Uses left of the join tokens that have a limit (cluster version 2 on); a token
    /// missing here may be used until it expires.
    pub(crate) token_uses: BTreeMap<String, u32>,
}

/// The key of a revocation of `name` in `role` only, in the same map as the revocations of
/// a name in every role: a separator no certificate name may hold (a control character).
pub(crate) fn role_key(role: &str, name: &str) -> String {
    format!("{role}\u{1f}{name}")
}

impl Credentials {
    /// Revokes the certificates of `name` issued before `at_ms` (never moving an earlier
    /// revocation back); returns the time in force.
    pub(crate) fn revoke(&mut self, name: &str, at_ms: u64) -> u64 {
        let t = self.revoked.entry(name.to_string()).or_insert(at_ms);
        *t = (*t).max(at_ms);
        *t
    }

    /// [`crate::Op::Revoke`]: [`Credentials::revoke`] of a valid name.
    pub(crate) fn revoke_name(&mut self, now: u64, name: &str) -> Result<u64, AllocError> {
        check_name("certificate", name, false)?;
        Ok(self.revoke(name, now))
    }

    /// [`crate::Op::RevokeSerial`]: whether the serial is newly revoked.
    pub(crate) fn revoke_serial(&mut self, now: u64, serial: &str) -> Result<bool, AllocError> {
        if canonical_serial(serial).as_deref() != Some(serial) {
            return Err(AllocError::Invalid(format!(
                "{serial:?} is not a serial number in its one spelling (lowercase hex, no separators or leading zeros)"
            )));
        }
        if self.revoked_serials.contains_key(serial) {
            return Ok(false);
        }
        if self.revoked_serials.len() >= MAX_REVOKED_SERIALS {
            return Err(AllocError::Invalid(format!(
                "{MAX_REVOKED_SERIALS} certificate serials are revoked already: revoke by name (`raftipam cert revoke NAME`) or start a new CA"
            )));
        }
        self.revoked_serials.insert(serial.to_string(), now);
        Ok(true)
    }

    /// [`crate::Op::AddJoinToken`]: the number of tokens kept now.
    pub(crate) fn add_join_token(
        &mut self,
        now: u64,
        hash: &str,
        expires_ms: u64,
    ) -> Result<u64, AllocError> {
        if !is_token_hash(hash) {
            return Err(AllocError::Invalid(
                "a join token's hash is 64 lowercase hex digits (SHA-256)".into(),
            ));
        }
        self.join_tokens.retain(|_, until| *until > now);
        self.token_uses
            .retain(|h, _| self.join_tokens.contains_key(h));
        if self.join_tokens.len() >= MAX_JOIN_TOKENS && !self.join_tokens.contains_key(hash) {
            return Err(AllocError::Invalid(format!(
                "{MAX_JOIN_TOKENS} join tokens are valid already: revoke some first"
            )));
        }
        self.join_tokens.insert(hash.to_string(), expires_ms);
        Ok(self.join_tokens.len() as u64)
    }

    /// [`crate::Op::RevokeJoinToken`]: whether the token was accepted until now.
    pub(crate) fn revoke_join_token(&mut self, hash: &str) -> bool {
        self.token_uses.remove(hash);
        self.join_tokens.remove(hash).is_some()
    }

    /// [`Op::AddJoinTokenUses`](crate::Op::AddJoinTokenUses): a token good for `uses`
    /// certificates.
    pub(crate) fn add_join_token_uses(
        &mut self,
        now: u64,
        hash: &str,
        expires_ms: u64,
        uses: u32,
    ) -> Result<u64, AllocError> {
        if uses == 0 {
            return Err(AllocError::Invalid(
                "a join token is good for at least one use".into(),
            ));
        }
        let n = self.add_join_token(now, hash, expires_ms)?;
        self.token_uses.insert(hash.to_string(), uses);
        Ok(n)
    }

    /// [`Op::UseJoinToken`](crate::Op::UseJoinToken): one use of a valid token; a limited
    /// token is gone after its last. The uses left (`None`: no limit).
    pub(crate) fn use_join_token(
        &mut self,
        now: u64,
        hash: &str,
    ) -> Result<Option<u32>, AllocError> {
        if self.join_tokens.get(hash).is_none_or(|until| now >= *until) {
            return Err(AllocError::Invalid(
                "the join token is unknown, expired, revoked or used up: ask an operator for a new one (`raftipam cert token`)".into(),
            ));
        }
        let Some(left) = self.token_uses.get_mut(hash) else {
            return Ok(None);
        };
        *left = left.saturating_sub(1);
        let left = *left;
        if left == 0 {
            self.token_uses.remove(hash);
            self.join_tokens.remove(hash);
        }
        Ok(Some(left))
    }

    /// During a restore into this (restored) bookkeeping, keeps what the empty state had:
    /// revocations stand (the later of two times), join tokens stay (the later expiry),
    /// serials stay revoked (the earlier time).
    pub(crate) fn keep_while_restoring(&mut self, empty: Credentials) {
        for (hash, uses) in empty.token_uses {
            self.token_uses.insert(hash, uses);
        }
        for (hash, until) in empty.join_tokens {
            let t = self.join_tokens.entry(hash).or_insert(until);
            *t = (*t).max(until);
        }
        for (name, before) in empty.revoked {
            self.revoke(&name, before);
        }
        for (serial, at) in empty.revoked_serials {
            self.revoked_serials.entry(serial).or_insert(at);
        }
    }
}

impl State {
    /// Whether a certificate of `name` issued at `issued_ms` is revoked. raftipam's own
    /// bookkeeping ([`crate::cluster`]).
    pub fn is_revoked(&self, name: &str, issued_ms: u64) -> bool {
        self.credentials
            .revoked
            .get(name)
            .is_some_and(|before| issued_ms < *before)
    }

    /// Whether a certificate of `role` (`host`, `node`, `admin`) naming `name`, issued at
    /// `issued_ms`, is revoked: by a revocation of the name (every role), or of the name in
    /// that role only (what [`crate::Op::ForgetHost`] records from cluster version 2 on, so
    /// that forgetting host `h1` does not revoke a node certificate that is also named
    /// `h1`). raftipam's own bookkeeping ([`crate::cluster`]).
    pub fn is_revoked_as(&self, role: &str, name: &str, issued_ms: u64) -> bool {
        self.is_revoked(name, issued_ms)
            || self
                .credentials
                .revoked
                .get(&role_key(role, name))
                .is_some_and(|before| issued_ms < *before)
    }

    /// Whether the certificate with this serial ([`canonical_serial`] form) was revoked.
    /// raftipam's own bookkeeping ([`crate::cluster`]).
    pub fn is_serial_revoked(&self, serial: &str) -> bool {
        self.credentials.revoked_serials.contains_key(serial)
    }

    /// Every revoked serial, with when it was revoked. raftipam's own bookkeeping
    /// ([`crate::cluster`]).
    pub fn revoked_serials(&self) -> Vec<(String, u64)> {
        self.credentials
            .revoked_serials
            .iter()
            .map(|(s, t)| (s.clone(), *t))
            .collect()
    }

    /// Every revoked name, with the time before which its certificates are revoked.
    /// raftipam's own bookkeeping ([`crate::cluster`]).
    pub fn revocations(&self) -> Vec<(String, u64)> {
        self.credentials
            .revoked
            .iter()
            .map(|(n, t)| (n.clone(), *t))
            .collect()
    }

    /// Whether a join token whose secret hashes to `hash` is accepted at `now_ms`.
    /// raftipam's own bookkeeping ([`crate::cluster`]).
    pub fn join_token_valid(&self, hash: &str, now_ms: u64) -> bool {
        self.credentials
            .join_tokens
            .get(hash)
            .is_some_and(|until| now_ms < *until)
    }

    /// Every join token kept (hash, expiry in ms), expired ones included until the next add.
    /// raftipam's own bookkeeping ([`crate::cluster`]).
    pub fn join_tokens(&self) -> Vec<(String, u64)> {
        self.credentials
            .join_tokens
            .iter()
            .map(|(h, t)| (h.clone(), *t))
            .collect()
    }
}

#[cfg(test)]
mod role_tests {
    use crate::{Command, Op, State};

    fn apply(st: &mut State, at_ms: u64, op: Op) {
        st.apply(&Command { at_ms, op }).expect("applied");
    }

    /// `host forget h1` on a cluster whose voter 1 has a node certificate named `h1` (as the
    /// documented setup names it): the host's certificates go, the node's stays. On 4b9aa6a
    /// the name was revoked in every role and the voter was cut off.
    #[test]
    fn forgetting_a_host_revokes_its_host_certificates_only() {
        let mut st = State::default();
        apply(&mut st, 1_000, Op::SetClusterVersion { version: 2 });
        apply(&mut st, 5_000, Op::ForgetHost { host: "h1".into() });
        assert!(st.is_revoked_as("host", "h1", 4_000));
        assert!(!st.is_revoked_as("host", "h1", 6_000), "issued later");
        assert!(!st.is_revoked_as("node", "h1", 4_000));
        assert!(!st.is_revoked_as("admin", "h1", 4_000));
        // `cert revoke h1` still revokes the name in every role.
        apply(&mut st, 7_000, Op::Revoke { name: "h1".into() });
        assert!(st.is_revoked_as("node", "h1", 6_000));
    }

    /// At cluster version 1 (a 0.1 member may apply the same entry) forgetting revokes the
    /// name in every role, as 0.1 did: every member must reach the same state.
    #[test]
    fn at_cluster_version_1_forgetting_revokes_the_name_as_0_1_did() {
        let mut st = State::default();
        apply(&mut st, 5_000, Op::ForgetHost { host: "h1".into() });
        assert!(st.is_revoked_as("node", "h1", 4_000));
        assert!(st.is_revoked("h1", 4_000));
    }
}
