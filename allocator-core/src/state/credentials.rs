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
use crate::limits::{
    check_name, MAX_ISSUED_CERTS, MAX_JOIN_TOKENS, MAX_JOIN_TOKEN_TTL_MS, MAX_REVOKED_SERIALS,
};
use crate::quota::is_operator_name;

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
    /// The one host name a join token gives a certificate for, if it is bound to one.
    pub(crate) token_names: BTreeMap<String, String>,
    /// Certificates given to joins, by serial ([`crate::Op::IssueJoinCert`]).
    pub(crate) issued: BTreeMap<String, IssuedCert>,
}

/// A certificate a node gave to a join ([`crate::Op::IssueJoinCert`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct IssuedCert {
    /// Its serial ([`canonical_serial`] form).
    pub serial: String,
    /// The name it carries.
    pub name: String,
    /// Its role (`host`).
    pub role: String,
    /// When it was issued (ms since the Unix epoch).
    pub issued_ms: u64,
    /// The first 12 hex digits of the SHA-256 of the join token it was given for.
    pub token: String,
}

/// Refuses a join token valid longer than [`MAX_JOIN_TOKEN_TTL_MS`] (7 days) from `now`.
pub(crate) fn check_token_ttl(now: u64, expires_ms: u64) -> Result<(), AllocError> {
    if expires_ms > now.saturating_add(MAX_JOIN_TOKEN_TTL_MS) {
        return Err(AllocError::Invalid(format!(
            "a join token is valid for at most 7 days (asked: until {} s after now); make a shorter one (`raftipam cert token --ttl 7d` or less)",
            expires_ms.saturating_sub(now) / 1000
        )));
    }
    Ok(())
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
        self.token_names
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
        self.token_names.remove(hash);
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
            self.token_names.remove(hash);
            self.join_tokens.remove(hash);
        }
        Ok(Some(left))
    }

    /// [`Op::AddJoinTokenFor`](crate::Op::AddJoinTokenFor): a token good for `uses`
    /// certificates, at most [`MAX_JOIN_TOKEN_TTL_MS`] from `now`, bound to `name` if given.
    pub(crate) fn add_join_token_for(
        &mut self,
        now: u64,
        hash: &str,
        expires_ms: u64,
        uses: u32,
        name: Option<&str>,
    ) -> Result<u64, AllocError> {
        check_token_ttl(now, expires_ms)?;
        if let Some(name) = name {
            check_name("host", name, false)?;
            if name.contains('/') || is_operator_name(name) {
                return Err(AllocError::Invalid(format!(
                    "{name:?} cannot be a host's certificate name"
                )));
            }
        }
        let n = self.add_join_token_uses(now, hash, expires_ms, uses)?;
        match name {
            Some(name) => self.token_names.insert(hash.to_string(), name.to_string()),
            None => self.token_names.remove(hash),
        };
        Ok(n)
    }

    /// Records a certificate given to a join (the oldest record goes when
    /// [`MAX_ISSUED_CERTS`] are kept).
    pub(crate) fn record_issued(&mut self, cert: IssuedCert) {
        if self.issued.len() >= MAX_ISSUED_CERTS && !self.issued.contains_key(&cert.serial) {
            let oldest = self
                .issued
                .values()
                .min_by_key(|c| (c.issued_ms, c.serial.clone()))
                .map(|c| c.serial.clone());
            if let Some(s) = oldest {
                self.issued.remove(&s);
            }
        }
        self.issued.insert(cert.serial.clone(), cert);
    }

    /// During a restore into this (restored) bookkeeping, keeps what the empty state had:
    /// revocations stand (the later of two times), join tokens stay (the later expiry),
    /// serials stay revoked (the earlier time).
    pub(crate) fn keep_while_restoring(&mut self, empty: Credentials) {
        for (hash, uses) in empty.token_uses {
            self.token_uses.insert(hash, uses);
        }
        for (hash, name) in empty.token_names {
            self.token_names.insert(hash, name);
        }
        for (serial, cert) in empty.issued {
            self.record_issued(IssuedCert { serial, ..cert });
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
    /// [`Op::IssueJoinCert`](crate::Op::IssueJoinCert): uses the token once for a certificate
    /// of `name` with `serial` and records it; the uses left (`None`: no limit).
    pub(super) fn issue_join_cert(
        &mut self,
        now: u64,
        hash: &str,
        name: &str,
        serial: &str,
    ) -> Result<Option<u32>, AllocError> {
        check_name("host", name, false)?;
        if canonical_serial(serial).as_deref() != Some(serial) {
            return Err(AllocError::Invalid(format!(
                "{serial:?} is not a serial number in its one spelling"
            )));
        }
        let c = &self.credentials;
        if c.join_tokens.get(hash).is_none_or(|until| now >= *until) {
            return Err(AllocError::Invalid(
                "the join token is unknown, expired, revoked or used up: ask an operator for a new one (`raftipam cert token`)".into(),
            ));
        }
        if let Some(bound) = c.token_names.get(hash).filter(|b| *b != name) {
            return Err(AllocError::Invalid(format!(
                "this join token is for host {bound:?} only, not {name:?}: join with `--host {bound}`, or ask an operator for a token for {name:?} (`raftipam cert token --name {name}`)"
            )));
        }
        if is_operator_name(name) {
            return Err(AllocError::Invalid(format!(
                "{name:?} is an operator's name and cannot be a host's: choose another host name"
            )));
        }
        if c.revoked.contains_key(name) || c.revoked.contains_key(&role_key("host", name)) {
            return Err(AllocError::Invalid(format!(
                "the name {name:?} is revoked: a join token does not give it a certificate again (an operator can `raftipam cert create-host {name}` if the host is really back)"
            )));
        }
        if self.knows_host(name) || c.issued.values().any(|i| i.name == name) {
            return Err(AllocError::Invalid(format!(
                "the cluster already has a host named {name:?}: a join token gives certificates to new hosts only (an operator can `raftipam cert create-host {name}`, or `host forget` the old one)"
            )));
        }
        let left = self.credentials.use_join_token(now, hash)?;
        self.credentials.record_issued(IssuedCert {
            serial: serial.to_string(),
            name: name.to_string(),
            role: "host".into(),
            issued_ms: now,
            token: hash.chars().take(12).collect(),
        });
        Ok(left)
    }

    /// Every certificate given to a join, by serial. raftipam's own bookkeeping
    /// ([`crate::cluster`]).
    pub fn issued_certs(&self) -> Vec<IssuedCert> {
        self.credentials.issued.values().cloned().collect()
    }

    /// The host name a join token is bound to, if any. raftipam's own bookkeeping.
    pub fn join_token_name(&self, hash: &str) -> Option<&str> {
        self.credentials.token_names.get(hash).map(String::as_str)
    }

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

#[cfg(test)]
mod tests {
    use crate::{AllocError, Command, Op, Outcome, State};

    const T: u64 = 1_700_000_000_000;
    const DAY: u64 = 24 * 3600 * 1000;

    fn run(st: &mut State, at_ms: u64, op: Op) -> Result<Outcome, AllocError> {
        st.apply(&Command { at_ms, op })
    }

    fn v2() -> State {
        let mut st = State::default();
        run(&mut st, T, Op::SetClusterVersion { version: 2 }).expect("v2");
        st
    }

    fn add(
        st: &mut State,
        hash: &str,
        ttl: u64,
        uses: u32,
        name: Option<&str>,
    ) -> Result<Outcome, AllocError> {
        run(
            st,
            T,
            Op::AddJoinTokenFor {
                hash: hash.into(),
                expires_ms: T + ttl,
                uses,
                name: name.map(str::to_string),
            },
        )
    }

    fn issue(st: &mut State, hash: &str, name: &str, serial: &str) -> Result<Outcome, AllocError> {
        run(
            st,
            T + 1000,
            Op::IssueJoinCert {
                hash: hash.into(),
                name: name.into(),
                serial: serial.into(),
            },
        )
    }

    fn refusal(r: Result<Outcome, AllocError>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(o) => panic!("expected a refusal, got {o:?}"),
        }
    }

    /// A leaked token lives at most 7 days. Fails on commit 4b9aa6a (release 0.1.0), whose
    /// tokens live as long as asked.
    #[test]
    fn a_join_token_lives_at_most_seven_days() {
        let mut st = v2();
        let a = "a".repeat(64);
        let msg = refusal(add(&mut st, &a, 7 * DAY + 1, 1, None));
        assert!(msg.contains("at most 7 days"), "{msg}");
        add(&mut st, &a, 7 * DAY, 1, None).expect("7 days");
        // The operations of before are held to it too, from cluster version 2 on.
        let old = Op::AddJoinToken {
            hash: "c".repeat(64),
            expires_ms: T + 30 * DAY,
        };
        assert!(refusal(run(&mut st, T, old.clone())).contains("at most 7 days"));
        State::default()
            .apply(&Command { at_ms: T, op: old })
            .expect("a cluster at version 1 applies what 0.1 applied");
    }

    /// A used-up token, a token for another name, a revoked name, a taken name: refused.
    /// Fails on commit 4b9aa6a (release 0.1.0), which has no IssueJoinCert.
    #[test]
    fn a_join_certificate_is_given_once_to_the_token_s_name_and_recorded() {
        let mut st = v2();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        add(&mut st, &a, DAY, 1, None).expect("one use");
        add(&mut st, &b, DAY, 2, Some("host7")).expect("bound to host7");
        // Bound to a name: another name is refused, and the refusal uses nothing.
        let msg = refusal(issue(&mut st, &b, "host8", "b1"));
        assert!(msg.contains("host7") && msg.contains("host8"), "{msg}");
        // A revoked name and an operator's name are refused.
        run(&mut st, T, Op::Revoke { name: "old".into() }).expect("revoke");
        let msg = refusal(issue(&mut st, &a, "old", "a0"));
        assert!(msg.contains("revoked"), "{msg}");
        assert!(refusal(issue(&mut st, &a, "cli", "a0")).contains("operator"));
        // A host the cluster knows is refused.
        run(
            &mut st,
            T,
            Op::Heartbeat {
                host: "known".into(),
                version: "0.2.0".into(),
            },
        )
        .expect("hb");
        assert!(refusal(issue(&mut st, &a, "known", "a0")).contains("already has a host"));
        // One use: the second join is refused.
        assert_eq!(
            issue(&mut st, &a, "host5", "a1").expect("issued"),
            Outcome::JoinTokenUsed { left: Some(0) }
        );
        let msg = refusal(issue(&mut st, &a, "host6", "a2"));
        assert!(msg.contains("used up"), "{msg}");
        assert!(!st.join_token_valid(&a, T + 2000));
        // The bound token gives host7 one certificate; a second for host7 is a taken name.
        issue(&mut st, &b, "host7", "b2").expect("host7");
        assert!(refusal(issue(&mut st, &b, "host7", "b3")).contains("already has a host"));
        let issued = st.issued_certs();
        let got: Vec<(&str, &str, &str, u64)> = issued
            .iter()
            .map(|c| {
                (
                    c.serial.as_str(),
                    c.name.as_str(),
                    c.token.as_str(),
                    c.issued_ms,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a1", "host5", "aaaaaaaaaaaa", T + 1000),
                ("b2", "host7", "bbbbbbbbbbbb", T + 1000)
            ]
        );
        // All of it survives a snapshot.
        let back = State::from_snapshot(&st.to_snapshot()).expect("decode");
        assert_eq!(back.issued_certs(), issued);
        assert_eq!(back.join_token_name(&b), Some("host7"));
    }

    #[test]
    fn the_new_token_operations_need_cluster_version_2() {
        let mut st = State::default();
        let e = add(&mut st, &"a".repeat(64), DAY, 1, None);
        assert!(
            matches!(e, Err(AllocError::NeedsClusterVersion { .. })),
            "{e:?}"
        );
    }
}
