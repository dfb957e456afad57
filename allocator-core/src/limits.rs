//! Every bound of the crate, in one place: what a command may carry and what the state may
//! hold, checked before anything changes, so that a replicated log cannot grow the state
//! without limit (and a snapshot that breaks one is refused).
//!
//! Owns the numbers and [`check_name`]. Never holds state, and depends on nothing in the crate
//! but the error type. The public bounds are re-exported at the crate root (and the
//! raftipam-only ones by [`crate::cluster`]); the structural ones stay inside the crate.

use crate::error::AllocError;

// ---- what a command may carry ----

/// Most addresses [`crate::State::next_free`] lists at once.
pub const MAX_NEXT_FREE: usize = 64;
/// Longest endpoint or host name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// Most addresses the reserve ranges of one pool may cover.
pub const MAX_RESERVED_PER_POOL: u128 = 65_536;
/// Most leaks and most missing endpoints one host report lists (its totals count them all).
pub const MAX_REPORTED: usize = 1024;
/// Largest piece of a backup one [`crate::Op::RestoreChunk`] carries (4 MiB).
pub const MAX_RESTORE_CHUNK: usize = 4 << 20;
/// Largest backup that can be restored in pieces (1 GiB).
pub const MAX_RESTORE_BYTES: u64 = 1 << 30;

/// A pool's probation when none was set: how long a free address some device answered for
/// stays out of allocations after it was last seen (24 h, as DHCP servers hold a declined
/// lease).
pub const DEFAULT_PROBATION_MS: u64 = 24 * 3600 * 1000;
/// Longest probation a pool may have: 30 days (ms).
pub const MAX_PROBATION_MS: u64 = 30 * 24 * 3600 * 1000;
/// Most conflict records the state keeps ([`crate::Op::ReportConflict`]); a report past it
/// is refused until an operator clears some.
pub const MAX_CONFLICTS: usize = 16_384;
/// Most conflict records one host may be the (latest) reporter of: a quarter of
/// [`MAX_CONFLICTS`], so that one host (or its stolen certificate) cannot fill the table and
/// silence the others.
pub const MAX_CONFLICTS_PER_HOST: usize = MAX_CONFLICTS / 4;

// ---- what a query may return ----

/// Most cells one dense page or sparse list of the subnet map may hold.
pub const MAX_MAP_PAGE: u32 = 4096;

/// Most allocations one page of a listing carries ([`crate::State::allocations_page`]).
pub const MAX_ALLOCATIONS_PAGE: usize = 4096;

// ---- raftipam's own bookkeeping ([`crate::cluster`]) ----

/// Most certificate serial numbers the revocation list keeps ([`crate::Op::RevokeSerial`]).
pub const MAX_REVOKED_SERIALS: usize = 65_536;
/// Most join tokens valid at once ([`crate::Op::AddJoinToken`]).
pub const MAX_JOIN_TOKENS: usize = 1024;
/// Longest a join token of [`crate::Op::AddJoinTokenFor`] is valid: 7 days (ms).
pub const MAX_JOIN_TOKEN_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// Most join certificates recorded ([`crate::Op::IssueJoinCert`]); the oldest record goes
/// first.
pub const MAX_ISSUED_CERTS: usize = 65_536;

// ---- what the state's structures can hold ----

/// Most address bits one subnet (and its bitmap) may have: an IPv6 /8.
pub(crate) const MAX_BITS: u32 = 120;
/// Shortest IPv4 prefix a pool may have: a /8.
pub(crate) const MIN_V4_PREFIX: u8 = 8;
/// Most distinct host names the state holds (a record names its host in 16 bits).
pub(crate) const MAX_HOSTS: usize = 1 << 16;
/// Largest allocation sequence number (a record keeps 48 bits: 281 trillion allocations).
pub(crate) const MAX_SEQ: u64 = (1 << 48) - 1;
/// Most 64-address word slots one subnet's records may use (2^20 words: 67 million
/// allocations per subnet).
pub(crate) const MAX_WORD_SLOTS: usize = 1 << 20;

/// Refuses a `what` name (host, endpoint, holder...) that is empty (unless `may_be_empty`) or
/// longer than [`MAX_NAME_LEN`].
pub(crate) fn check_name(what: &str, name: &str, may_be_empty: bool) -> Result<(), AllocError> {
    if name.is_empty() && !may_be_empty {
        return Err(AllocError::Invalid(format!("the {what} name is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(AllocError::Invalid(format!(
            "the {what} name is {} bytes long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        )));
    }
    Ok(())
}

/// Longest name [`check_host_name`] accepts, in bytes: a DNS name's limit.
pub const MAX_HOST_NAME_LEN: usize = 253;

/// The one rule for a name an operator or a joining host gives a Docker host, a node or an
/// operator (a certificate's name, a shim's `--host`): 1 to [`MAX_HOST_NAME_LEN`] bytes of
/// ASCII letters, digits, `.`, `-` and `_`, starting with a letter or a digit. Every
/// hostname and Docker node name fits; nothing else does, so a name cannot carry a
/// control character, an escape sequence, a bidirectional override or a zero-width
/// character that would make it look like another one, nor a `/` or `,` that would read as a
/// separator. (Applied where names are chosen, not by [`crate::State`]: a replicated log
/// replays whatever it held.)
pub fn check_host_name(name: &str) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err("the name is empty".into());
    };
    if name.len() > MAX_HOST_NAME_LEN {
        return Err(format!(
            "the name is {} bytes long; at most {MAX_HOST_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "the name {name:?} must start with an ASCII letter or digit"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "the name {name:?} contains {c:?}: use only ASCII letters, digits, '.', '-' and '_'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_host_name;

    #[test]
    fn host_names_are_letters_digits_dots_dashes_and_underscores() {
        for good in [
            "h1",
            "host-1.example.com",
            "a",
            "node_3",
            "1host",
            &"a".repeat(253),
        ] {
            assert_eq!(check_host_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-h",
            ".h",
            "_h",
            "h 1",
            "h/1",
            "h,1",
            "h\u{1b}[2J",
            "h\n",
            "adm\u{202e}nimda",
            "h\u{200b}1",
            "h\u{feff}",
            "h\u{2066}",
            "h\u{00e9}",
            "h@corp",
            &"a".repeat(254),
        ] {
            let e = check_host_name(bad).expect_err(bad);
            assert!(e.contains("name"), "{bad:?}: {e}");
            assert!(!e.contains('\u{1b}') && !e.contains('\u{202e}'), "{e}");
        }
    }
}
