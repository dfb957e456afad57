//! The allocator's answer in the form that travels in Raft responses, the dedupe table of
//! snapshots and client replies: allocator-core's own serde types, postcard-encoded.

use allocator_core::AllocError;
use serde::{Deserialize, Serialize};

/// An [`AllocError`] as it is stored and sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WireAllocError(pub AllocError);

/// The allocator's answer, in a form that travels.
pub type WireResult = Result<allocator_core::Outcome, WireAllocError>;

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_core::{Owner, PoolId};

    #[test]
    fn alloc_errors_survive_a_round_trip_through_postcard() {
        let pool: PoolId = "g/10.0.0.0/24".parse().expect("pool id");
        for e in [
            AllocError::NoDefaultSubnet {
                family: "IPv6".into(),
                prefix_len: 64,
            },
            AllocError::HeldBy {
                addr: "10.0.0.5".parse().expect("ip"),
                pool: pool.clone(),
                owner: Owner::new("h1", "web"),
                seq: 9,
            },
            AllocError::NoSuchPool(pool),
        ] {
            let bytes = postcard::to_allocvec(&WireAllocError(e.clone())).expect("encode");
            let back: WireAllocError = postcard::from_bytes(&bytes).expect("decode");
            assert_eq!(back.0, e);
        }
    }
}
