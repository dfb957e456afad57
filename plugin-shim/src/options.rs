//! The driver options raftipam understands.
//!
//! Docker passes `docker network create --ipam-opt KEY=VALUE` through to `RequestPool` as a
//! string map; this module turns that map into the settings of a new pool, and the options of
//! `RequestAddress` into an allocation order. Values that cannot be read are refused with a
//! message naming the option (a silently ignored typo would give a pool the user did not ask
//! for); options raftipam does not know are logged and ignored, as other drivers' options may
//! be passed along.
//!
//! | option | meaning |
//! | --- | --- |
//! | `serial=true` or `com.docker.network.ipam.serial=true` | hand out addresses in serial order |
//! | `cooldown=30s` | hold released addresses back from reuse this long (`humantime` units) |
//! | `reserve=IP\|IP-IP[,...]` | never hand these addresses to containers |

use std::collections::BTreeMap;
use std::time::Duration;

use allocator_core::{AddrRange, Order};

use crate::error::ApiError;

/// `serial=true`: serial allocation order.
pub const SERIAL: &str = "serial";
/// Docker's own key for serial order (`ipamapi.AllocSerialPrefix`).
pub const DOCKER_SERIAL: &str = "com.docker.network.ipam.serial";
/// `cooldown=DURATION`: how long a released address is held back.
pub const COOLDOWN: &str = "cooldown";
/// `reserve=IP|IP-IP[,...]`: addresses never handed out.
pub const RESERVE: &str = "reserve";

/// The settings of a new pool read from `RequestPool`'s options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolOptions {
    /// Serial allocation order.
    pub serial: bool,
    /// Cooldown of released addresses, in ms.
    pub cooldown_ms: u64,
    /// Addresses never handed out.
    pub reserve: Vec<AddrRange>,
    /// Option keys that raftipam does not know (ignored).
    pub ignored: Vec<String>,
}

impl PoolOptions {
    /// Whether any setting differs from a plain pool's.
    pub fn is_default(&self) -> bool {
        !self.serial && self.cooldown_ms == 0 && self.reserve.is_empty()
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ApiError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "option {key}={value:?}: expected true or false"
        ))),
    }
}

fn parse_cooldown(value: &str) -> Result<u64, ApiError> {
    let bad = |why: String| ApiError::bad_request(format!("option {COOLDOWN}={value:?}: {why}"));
    let v = value.trim();
    let d = if v == "0" || v.is_empty() {
        Duration::ZERO
    } else {
        humantime::parse_duration(v)
            .map_err(|e| bad(format!("{e}; expected a duration such as 30s, 5m or 1h")))?
    };
    u64::try_from(d.as_millis()).map_err(|_| bad("the duration is too long".into()))
}

fn parse_reserve(value: &str) -> Result<Vec<AddrRange>, ApiError> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<AddrRange>()
                .map_err(|e| ApiError::bad_request(format!("option {RESERVE}: {e}")))
        })
        .collect()
}

/// Reads `RequestPool`'s options.
pub fn pool_options(options: &BTreeMap<String, String>) -> Result<PoolOptions, ApiError> {
    let mut out = PoolOptions::default();
    for (key, value) in options {
        match key.as_str() {
            SERIAL | DOCKER_SERIAL => out.serial |= parse_bool(key, value)?,
            COOLDOWN => out.cooldown_ms = parse_cooldown(value)?,
            RESERVE => out.reserve.extend(parse_reserve(value)?),
            _ => out.ignored.push(key.clone()),
        }
    }
    Ok(out)
}

/// The order `RequestAddress`'s options ask for: serial when they say so, otherwise the
/// pool's own setting.
pub fn address_order(options: &BTreeMap<String, String>) -> Result<Order, ApiError> {
    let mut serial = false;
    for key in [SERIAL, DOCKER_SERIAL] {
        if let Some(v) = options.get(key) {
            serial |= parse_bool(key, v)?;
        }
    }
    Ok(if serial {
        Order::Serial
    } else {
        Order::PoolDefault
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_every_known_option() {
        let o = pool_options(&map(&[
            (DOCKER_SERIAL, "true"),
            (COOLDOWN, "1m 30s"),
            (RESERVE, "10.0.0.2-10.0.0.9, 10.0.0.99"),
            ("com.example.other", "x"),
        ]))
        .expect("valid options");
        assert!(o.serial);
        assert_eq!(o.cooldown_ms, 90_000);
        assert_eq!(o.reserve.len(), 2);
        assert_eq!(o.reserve[1].to_string(), "10.0.0.99");
        assert_eq!(o.ignored, vec!["com.example.other".to_string()]);
    }

    #[test]
    fn refuses_unreadable_values_naming_the_option() {
        for (k, v) in [
            (SERIAL, "maybe"),
            (COOLDOWN, "soon"),
            (RESERVE, "10.0.0.9-10.0.0.2"),
            (RESERVE, "x"),
        ] {
            let e = pool_options(&map(&[(k, v)])).expect_err("invalid");
            assert!(e.message.contains(k), "{}", e.message);
        }
        let e =
            pool_options(&map(&[(COOLDOWN, "600000000000000000000000s")])).expect_err("too long");
        assert!(e.message.contains(COOLDOWN), "{}", e.message);
    }

    #[test]
    fn address_order_follows_the_pool_unless_asked() {
        assert_eq!(address_order(&map(&[])).ok(), Some(Order::PoolDefault));
        assert_eq!(
            address_order(&map(&[(DOCKER_SERIAL, "true")])).ok(),
            Some(Order::Serial)
        );
        assert_eq!(
            address_order(&map(&[(SERIAL, "false")])).ok(),
            Some(Order::PoolDefault)
        );
    }
}
