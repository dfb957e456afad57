//! Serde glue for allocator-core's [`AllocError`].
//!
//! `AllocError::NoDefaultSubnet` holds a `&'static str`, so its derived `Deserialize` only
//! accepts `'static` input and cannot decode a network frame or a snapshot. This mirror has
//! the same variants with an owned string, and maps that field back to its static value.

use std::net::IpAddr;

use allocator_core::{AllocError, Owner, PoolId, Usage};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Mirror of [`AllocError`] with an owned `family`.
#[derive(Serialize, Deserialize)]
enum Mirror {
    NoSuchPool(PoolId),
    Overlap {
        space: String,
        requested: IpNet,
        existing: PoolId,
    },
    InvalidPool(String),
    NoDefaultSubnet {
        family: String,
        prefix_len: u8,
    },
    PoolFull {
        pool: PoolId,
        usage: Usage,
    },
    OutsidePool {
        addr: IpAddr,
        pool: PoolId,
    },
    HeldBy {
        addr: IpAddr,
        pool: PoolId,
        owner: Owner,
        seq: u64,
    },
    Reserved {
        addr: IpAddr,
        pool: PoolId,
        why: String,
    },
    Cooling {
        addr: IpAddr,
        pool: PoolId,
        until_ms: u64,
    },
    OwnerHoldsOther {
        owner: Owner,
        pool: PoolId,
        held: IpAddr,
        asked: IpAddr,
    },
    NotOwner {
        addr: IpAddr,
        pool: PoolId,
        owner: Owner,
        host: String,
    },
    Invalid(String),
    PoolInUse {
        pool: PoolId,
        allocated: u64,
    },
    /// A variant this mirror does not know yet, as its message.
    Other(String),
}

impl From<&AllocError> for Mirror {
    fn from(e: &AllocError) -> Mirror {
        use AllocError as A;
        match e.clone() {
            A::NoSuchPool(p) => Mirror::NoSuchPool(p),
            A::Overlap {
                space,
                requested,
                existing,
            } => Mirror::Overlap {
                space,
                requested,
                existing,
            },
            A::InvalidPool(s) => Mirror::InvalidPool(s),
            A::NoDefaultSubnet { family, prefix_len } => Mirror::NoDefaultSubnet {
                family: family.to_string(),
                prefix_len,
            },
            A::PoolFull { pool, usage } => Mirror::PoolFull { pool, usage },
            A::OutsidePool { addr, pool } => Mirror::OutsidePool { addr, pool },
            A::HeldBy {
                addr,
                pool,
                owner,
                seq,
            } => Mirror::HeldBy {
                addr,
                pool,
                owner,
                seq,
            },
            A::Reserved { addr, pool, why } => Mirror::Reserved { addr, pool, why },
            A::Cooling {
                addr,
                pool,
                until_ms,
            } => Mirror::Cooling {
                addr,
                pool,
                until_ms,
            },
            A::OwnerHoldsOther {
                owner,
                pool,
                held,
                asked,
            } => Mirror::OwnerHoldsOther {
                owner,
                pool,
                held,
                asked,
            },
            A::NotOwner {
                addr,
                pool,
                owner,
                host,
            } => Mirror::NotOwner {
                addr,
                pool,
                owner,
                host,
            },
            A::Invalid(s) => Mirror::Invalid(s),
            A::PoolInUse { pool, allocated } => Mirror::PoolInUse { pool, allocated },
            // A variant added to allocator-core after this mirror travels as its message.
            #[allow(unreachable_patterns)]
            other => Mirror::Other(other.to_string()),
        }
    }
}

impl From<Mirror> for AllocError {
    fn from(m: Mirror) -> AllocError {
        use AllocError as A;
        match m {
            Mirror::NoSuchPool(p) => A::NoSuchPool(p),
            Mirror::Overlap {
                space,
                requested,
                existing,
            } => A::Overlap {
                space,
                requested,
                existing,
            },
            Mirror::InvalidPool(s) => A::InvalidPool(s),
            Mirror::NoDefaultSubnet { family, prefix_len } => A::NoDefaultSubnet {
                family: match family.as_str() {
                    "IPv4" => "IPv4",
                    "IPv6" => "IPv6",
                    _ => "IP",
                },
                prefix_len,
            },
            Mirror::PoolFull { pool, usage } => A::PoolFull { pool, usage },
            Mirror::OutsidePool { addr, pool } => A::OutsidePool { addr, pool },
            Mirror::HeldBy {
                addr,
                pool,
                owner,
                seq,
            } => A::HeldBy {
                addr,
                pool,
                owner,
                seq,
            },
            Mirror::Reserved { addr, pool, why } => A::Reserved { addr, pool, why },
            Mirror::Cooling {
                addr,
                pool,
                until_ms,
            } => A::Cooling {
                addr,
                pool,
                until_ms,
            },
            Mirror::OwnerHoldsOther {
                owner,
                pool,
                held,
                asked,
            } => A::OwnerHoldsOther {
                owner,
                pool,
                held,
                asked,
            },
            Mirror::NotOwner {
                addr,
                pool,
                owner,
                host,
            } => A::NotOwner {
                addr,
                pool,
                owner,
                host,
            },
            Mirror::Invalid(s) => A::Invalid(s),
            Mirror::PoolInUse { pool, allocated } => A::PoolInUse { pool, allocated },
            Mirror::Other(msg) => A::Invalid(msg),
        }
    }
}

/// `#[serde(with = "crate::wire::alloc_error")]` for fields of type [`AllocError`].
pub mod alloc_error {
    use super::*;

    /// Serializes through the mirror.
    pub fn serialize<S: Serializer>(e: &AllocError, s: S) -> Result<S::Ok, S::Error> {
        Mirror::from(e).serialize(s)
    }

    /// Deserializes through the mirror.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AllocError, D::Error> {
        Mirror::deserialize(d).map(AllocError::from)
    }
}

/// An [`AllocError`] that serializes and deserializes from any input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAllocError(#[serde(with = "alloc_error")] pub AllocError);

/// The allocator's answer, in a form that travels.
pub type WireResult = Result<allocator_core::Outcome, WireAllocError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_errors_survive_a_round_trip_through_postcard() {
        let pool: PoolId = "g/10.0.0.0/24".parse().expect("pool id");
        for e in [
            AllocError::NoDefaultSubnet {
                family: "IPv6",
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
