//! Bounds on what a command may carry, checked before anything changes, so that a replicated
//! log cannot grow the state without limit.

use crate::error::AllocError;

/// Longest endpoint or host name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// Most addresses the reserve ranges of one pool may cover.
pub const MAX_RESERVED_PER_POOL: u128 = 65_536;

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

/// Most certificate serial numbers the revocation list keeps ([`crate::Op::RevokeSerial`]).
pub const MAX_REVOKED_SERIALS: usize = 65_536;
/// Largest piece of a backup one [`crate::Op::RestoreChunk`] carries (4 MiB).
pub const MAX_RESTORE_CHUNK: usize = 4 << 20;
/// Largest backup that can be restored in pieces (1 GiB).
pub const MAX_RESTORE_BYTES: u64 = 1 << 30;
