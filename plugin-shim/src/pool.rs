//! `IpamDriver.RequestPool` and `IpamDriver.ReleasePool`: a network's subnet.
//!
//! dockerd calls `RequestPool` once per subnet when a network is created on this host (and
//! `ReleasePool` when it is deleted). Every host that creates "the same" network asks for the
//! same subnet, so they all get the same pool id and share one pool: the allocator counts one
//! reference per host (the holder is this shim's host name), and the pool goes away when the
//! last host releases it and nothing in it is allocated.
//!
//! The pool's settings (`serial`, `cooldown`, `reserve`) are fixed by the request that
//! creates it. A later request with other settings joins the pool as it is; the shim logs the
//! difference so an operator can see why a network does not behave as its options say.

use std::net::IpAddr;
use std::sync::Arc;

use allocator_core::{Op, Outcome, PoolId, PoolSpec};
use ipnet::IpNet;
use tracing::{debug, info, warn};

use crate::backend::Backend;
use crate::error::ApiError;
use crate::handshake::{GLOBAL_ADDRESS_SPACE, LOCAL_ADDRESS_SPACE};
use crate::options::{pool_options, PoolOptions};
use crate::wire::{Empty, ReleasePoolRequest, RequestPoolRequest, RequestPoolResponse};
use crate::ShimConfig;

fn is_v4(net: &IpNet) -> bool {
    matches!(net, IpNet::V4(_))
}

/// Parses a CIDR field of a request; a bare address is refused, since a subnet needs its
/// prefix length.
fn parse_cidr(field: &str, value: &str) -> Result<IpNet, ApiError> {
    let v = value.trim();
    v.parse::<IpNet>().map_err(|_| {
        let hint = if v.parse::<IpAddr>().is_ok() {
            " (it lacks a /prefix length)"
        } else {
            ""
        };
        ApiError::bad_request(format!(
            "{field} {value:?} is not a CIDR such as 10.1.0.0/24{hint}"
        ))
    })
}

/// Parses a pool id that dockerd hands back (one this plugin made: `space/subnet[/range]`).
pub fn parse_pool_id(value: &str) -> Result<PoolId, ApiError> {
    if value.is_empty() {
        return Err(ApiError::bad_request("PoolID is empty"));
    }
    value
        .parse::<PoolId>()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Builds the allocator's pool spec from Docker's request.
pub fn pool_spec(req: &RequestPoolRequest) -> Result<(PoolSpec, PoolOptions), ApiError> {
    if req.address_space.trim().is_empty() {
        return Err(ApiError::bad_request(
            "AddressSpace is empty; dockerd sends \"local\" or \"global\"",
        ));
    }
    // Only the spaces this plugin advertised (GetDefaultAddressSpaces): anything else would
    // become a pool in a space nobody asked for (`1.2.3.4/172.16.0.0/16`).
    if req.address_space != LOCAL_ADDRESS_SPACE && req.address_space != GLOBAL_ADDRESS_SPACE {
        return Err(ApiError::bad_request(format!(
            "AddressSpace {:?} is not one this plugin offers: it serves {LOCAL_ADDRESS_SPACE:?} and {GLOBAL_ADDRESS_SPACE:?} (what GetDefaultAddressSpaces answered)",
            req.address_space
        )));
    }
    let subnet = if req.pool.trim().is_empty() {
        None
    } else {
        Some(parse_cidr("Pool", &req.pool)?)
    };
    let range = if req.sub_pool.trim().is_empty() {
        None
    } else {
        Some(parse_cidr("SubPool", &req.sub_pool)?)
    };
    if let (None, Some(r)) = (subnet, range) {
        return Err(ApiError::bad_request(format!(
            "SubPool {r} was given without a Pool; --ip-range needs --subnet"
        )));
    }
    if let (Some(s), Some(r)) = (subnet, range) {
        if is_v4(&s) != is_v4(&r) || !s.contains(&r) {
            return Err(ApiError::bad_request(format!(
                "SubPool {r} is not inside Pool {s}"
            )));
        }
    }
    let opts = match &req.options {
        Some(map) => pool_options(map)?,
        None => PoolOptions::default(),
    };
    let spec = {
        let mut spec = PoolSpec::default();
        spec.space = req.address_space.clone();
        spec.subnet = subnet;
        spec.range = range;
        spec.v6 = subnet.map_or(req.v6, |s| !is_v4(&s));
        spec.prefix_len = None;
        spec.reserve = opts.reserve.clone();
        spec.serial = opts.serial;
        spec.cooldown_ms = opts.cooldown_ms;
        spec
    };
    Ok((spec, opts))
}

/// `RequestPool`: creates the pool or joins it, as `config.host`.
pub async fn request_pool<B: Backend>(
    backend: &Arc<B>,
    config: &ShimConfig,
    req: RequestPoolRequest,
) -> Result<RequestPoolResponse, ApiError> {
    let (spec, opts) = pool_spec(&req)?;
    if !opts.ignored.is_empty() {
        info!(options = ?opts.ignored, "RequestPool: ignoring options raftipam does not know");
    }
    let op = Op::RequestPool {
        spec,
        holder: config.host.clone(),
    };
    let (pool, created) = match backend.apply(op).await? {
        Outcome::Pool { pool, created } => (pool, created),
        other => {
            return Err(ApiError::internal(format!(
                "the backend answered {other:?} to RequestPool"
            )))
        }
    };
    if created {
        info!(pool = %pool, host = %config.host, "pool created");
    } else {
        debug!(pool = %pool, host = %config.host, "pool joined");
        if !opts.is_default() {
            compare_settings_later(backend, config, pool.clone(), opts);
        }
    }
    Ok(RequestPoolResponse {
        pool_id: pool.to_string(),
        pool: pool.subnet.to_string(),
        data: Default::default(),
    })
}

/// Logs a warning if an existing pool's settings differ from what this request asked for.
/// Runs apart from the call: a slow read must not fail a `RequestPool` that has succeeded
/// (dockerd would then never release it).
fn compare_settings_later<B: Backend>(
    backend: &Arc<B>,
    config: &ShimConfig,
    pool: PoolId,
    asked: PoolOptions,
) {
    let backend = Arc::clone(backend);
    let timeout = config.call_timeout;
    tokio::spawn(async move {
        match tokio::time::timeout(timeout, backend.pool(&pool)).await {
            Ok(Ok(info)) => {
                if info.serial != asked.serial
                    || info.cooldown_ms != asked.cooldown_ms
                    || info.reserve != asked.reserve
                {
                    warn!(
                        pool = %pool,
                        existing_serial = info.serial,
                        existing_cooldown_ms = info.cooldown_ms,
                        existing_reserve = ?info.reserve,
                        asked_serial = asked.serial,
                        asked_cooldown_ms = asked.cooldown_ms,
                        asked_reserve = ?asked.reserve,
                        "the pool existed with other settings; its settings apply, the options of this network are ignored"
                    );
                }
            }
            Ok(Err(e)) => {
                debug!(pool = %pool, error = %e, "could not read the joined pool's settings")
            }
            Err(_) => debug!(pool = %pool, "reading the joined pool's settings timed out"),
        }
    });
}

/// `ReleasePool`: drops this host's reference to the pool.
pub async fn release_pool<B: Backend>(
    backend: &Arc<B>,
    config: &ShimConfig,
    req: ReleasePoolRequest,
) -> Result<Empty, ApiError> {
    let pool = parse_pool_id(&req.pool_id)?;
    let op = Op::ReleasePool {
        pool: pool.clone(),
        holder: config.host.clone(),
    };
    match backend.apply(op).await? {
        Outcome::PoolReleased { removed } => {
            info!(pool = %pool, host = %config.host, removed, "pool released");
            Ok(Empty {})
        }
        other => Err(ApiError::internal(format!(
            "the backend answered {other:?} to ReleasePool"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pool: &str, sub: &str) -> RequestPoolRequest {
        RequestPoolRequest {
            address_space: "local".into(),
            pool: pool.into(),
            sub_pool: sub.into(),
            options: None,
            v6: false,
        }
    }

    #[test]
    fn spec_follows_the_request() {
        let (spec, _) = pool_spec(&req("10.1.0.0/16", "10.1.2.0/24")).expect("valid");
        assert_eq!(spec.subnet, "10.1.0.0/16".parse().ok());
        assert_eq!(spec.range, "10.1.2.0/24".parse().ok());
        let (spec, _) = pool_spec(&req("fd00:1::/64", "")).expect("valid");
        assert!(spec.v6);
    }

    #[test]
    fn bad_pools_are_refused_with_reasons() {
        for (p, s, why) in [
            ("10.1.0.0", "", "prefix length"),
            ("x", "", "not a CIDR"),
            ("", "10.1.2.0/24", "without a Pool"),
            ("10.1.0.0/16", "10.2.0.0/24", "not inside"),
            ("10.1.0.0/16", "fd00::/64", "not inside"),
        ] {
            let e = pool_spec(&req(p, s)).expect_err("invalid");
            assert!(e.message.contains(why), "{p} {s}: {}", e.message);
        }
        let e = pool_spec(&RequestPoolRequest::default()).expect_err("no space");
        assert!(e.message.contains("AddressSpace"), "{}", e.message);
        for space in ["1.2.3.4", "::1", "Local", " global", "other"] {
            let mut r = req("10.1.0.0/16", "");
            r.address_space = space.into();
            let e = pool_spec(&r).expect_err(space);
            assert!(
                e.message.contains("not one this plugin offers"),
                "{space}: {}",
                e.message
            );
        }
        let mut r = req("10.1.0.0/16", "");
        r.address_space = "global".into();
        assert_eq!(pool_spec(&r).expect("global").0.space, "global");
    }
}
