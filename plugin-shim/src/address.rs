//! `IpamDriver.RequestAddress` and `IpamDriver.ReleaseAddress`: gateways, aux addresses and
//! container addresses.
//!
//! Docker uses one method for three different things, told apart by the options
//! (moby `daemon/libnetwork/network.go`, `ipamAllocateVersion`, and `endpoint.go`):
//!
//! | request | options dockerd sends | raftipam does |
//! | --- | --- | --- |
//! | a network's gateway | `{"RequestAddressType": "com.docker.network.gateway"}` | shared reservation ([`Op::Reserve`]) |
//! | an `--aux-address` | `null` (a nil map), with an address | shared reservation ([`Op::Reserve`]) |
//! | a container's endpoint | `{"com.docker.network.endpoint.name": NAME}` | exclusive allocation ([`Op::Allocate`]) |
//!
//! Gateways and aux addresses are *shared*: every host that creates the network reserves the
//! same gateway, and the address stays reserved until the last of them releases it. Endpoint
//! addresses are *exclusive*, owned by `{host, endpoint name}`; a repeat of the same request
//! returns the same address.
//!
//! A gateway request without an address gets the subnet's first host address (`.1` of an IPv4
//! /24, `::1` of an IPv6 /64), not "the first free one": every host must reserve the *same*
//! gateway, whatever has been allocated by the time it creates the network, and that is the
//! address Docker's default IPAM gives a fresh network. If that address is taken, the error
//! says so and suggests `--gateway`.
//!
//! Release does not need the kind: the allocator releases this host's allocation or its
//! reservation of the address, and refuses to release what another host holds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use allocator_core::{Mac, Op, Order, Outcome, Owner, PoolId};
use ipnet::IpNet;
use tracing::{debug, info};

use crate::backend::Backend;
use crate::error::ApiError;
use crate::options::address_order;
use crate::pool::parse_pool_id;
use crate::probe::check::list_found;
use crate::probe::Checked;
use crate::wire::{
    Empty, ReleaseAddressRequest, RequestAddressRequest, RequestAddressResponse, ENDPOINT_MAC,
    ENDPOINT_NAME, GATEWAY_TYPE, REQUEST_ADDRESS_TYPE,
};
use crate::ShimConfig;

/// What a `RequestAddress` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressRequest {
    /// The network's gateway: a given address, or the subnet's default gateway.
    Gateway {
        /// `--gateway`, if given.
        addr: Option<IpAddr>,
    },
    /// An `--aux-address`.
    Aux {
        /// The address.
        addr: IpAddr,
    },
    /// A container's address.
    Endpoint {
        /// `--ip`, if given.
        addr: Option<IpAddr>,
        /// The endpoint (container) name; empty if dockerd sent none.
        name: String,
        /// The order for an address without preference.
        order: Order,
    },
}

fn family(a: &IpAddr) -> &'static str {
    if a.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn net_family(n: &IpNet) -> &'static str {
    match n {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

/// Parses an address field and checks that it lies in the pool's subnet. Accepts
/// `a.b.c.d` and, leniently, `a.b.c.d/len`; IPv4-mapped IPv6 addresses are read as IPv4, as
/// dockerd's own IPAM does.
pub fn parse_addr(field: &str, value: &str, pool: &PoolId) -> Result<IpAddr, ApiError> {
    let v = value.trim();
    let addr = v
        .parse::<IpAddr>()
        .or_else(|_| v.parse::<IpNet>().map(|n| n.addr()))
        .map_err(|_| ApiError::bad_request(format!("{field} {value:?} is not an IP address")))?
        .to_canonical();
    let subnet = pool.subnet;
    if family(&addr) != net_family(&subnet) {
        return Err(ApiError::bad_request(format!(
            "{field} {addr} is an {} address but pool {pool} is {}",
            family(&addr),
            net_family(&subnet)
        )));
    }
    if !subnet.contains(&addr) {
        return Err(ApiError::bad_request(format!(
            "{field} {addr} is outside pool {pool} (subnet {subnet})"
        )));
    }
    Ok(addr)
}

/// The gateway a network gets when none is given: the subnet's first host address, or its
/// only address for subnets too small to have network and broadcast addresses (/31, /32,
/// /127, /128).
pub fn default_gateway(subnet: &IpNet) -> IpAddr {
    let host_bits = subnet.max_prefix_len() - subnet.prefix_len();
    let step = u8::from(host_bits >= 2);
    match subnet {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(
            u32::from(n.network()).wrapping_add(u32::from(step)),
        )),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(
            u128::from(n.network()).wrapping_add(u128::from(step)),
        )),
    }
}

/// Tells what a `RequestAddress` asks for.
pub fn classify(req: &RequestAddressRequest, pool: &PoolId) -> Result<AddressRequest, ApiError> {
    let addr = if req.address.trim().is_empty() {
        None
    } else {
        Some(parse_addr("Address", &req.address, pool)?)
    };
    let Some(options) = &req.options else {
        // dockerd sends aux addresses with nil options; with no address either, all that is
        // left is "any address", i.e. an endpoint without a name.
        return Ok(match addr {
            Some(addr) => AddressRequest::Aux { addr },
            None => AddressRequest::Endpoint {
                addr: None,
                name: String::new(),
                order: Order::PoolDefault,
            },
        });
    };
    if options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_TYPE) {
        return Ok(AddressRequest::Gateway { addr });
    }
    let name = options.get(ENDPOINT_NAME).cloned().unwrap_or_default();
    Ok(AddressRequest::Endpoint {
        addr,
        name,
        order: address_order(options)?,
    })
}

fn address_reply(addr: IpNet) -> RequestAddressResponse {
    RequestAddressResponse {
        address: addr.to_string(),
        data: Default::default(),
    }
}

async fn reserve<B: Backend>(
    backend: &Arc<B>,
    config: &ShimConfig,
    pool: &PoolId,
    addr: IpAddr,
) -> Result<IpNet, ApiError> {
    let op = Op::Reserve {
        pool: pool.clone(),
        addr,
        holder: config.host.clone(),
    };
    match backend.apply(op).await? {
        Outcome::Reserved { addr } => Ok(addr),
        other => Err(ApiError::internal(format!(
            "the backend answered {other:?} to Reserve"
        ))),
    }
}

/// `RequestAddress`: reserves a gateway or aux address, or allocates an endpoint's address.
pub async fn request_address<B: Backend>(
    backend: &Arc<B>,
    config: &ShimConfig,
    req: RequestAddressRequest,
) -> Result<RequestAddressResponse, ApiError> {
    let pool = parse_pool_id(&req.pool_id)?;
    match classify(&req, &pool)? {
        AddressRequest::Gateway { addr: Some(addr) } => {
            let got = reserve(backend, config, &pool, addr)
                .await
                .map_err(|e| e.context(format!("gateway {addr}")))?;
            info!(pool = %pool, host = %config.host, gateway = %got, "gateway reserved");
            Ok(address_reply(got))
        }
        AddressRequest::Gateway { addr: None } => {
            let addr = default_gateway(&pool.subnet);
            let got = reserve(backend, config, &pool, addr).await.map_err(|e| {
                if e.status.is_client_error() {
                    // The allocator refused: the address is taken. Say how to get around it.
                    e.context(format!("cannot reserve {addr}, the default gateway of pool {pool} (give the network another one with --gateway)"))
                } else {
                    e
                }
            })?;
            info!(pool = %pool, host = %config.host, gateway = %got, "default gateway reserved");
            Ok(address_reply(got))
        }
        AddressRequest::Aux { addr } => {
            let got = reserve(backend, config, &pool, addr)
                .await
                .map_err(|e| e.context(format!("aux address {addr}")))?;
            info!(pool = %pool, host = %config.host, aux = %got, "aux address reserved");
            Ok(address_reply(got))
        }
        AddressRequest::Endpoint { addr, name, order } => {
            let mac = endpoint_mac(&req);
            let got = endpoint(backend, config, &pool, addr, name, order).await?;
            if let (Some(mac), false) = (mac, got.existing) {
                record_mac(backend, &config.host, &pool, got.addr.addr(), got.seq, mac);
            }
            Ok(granted(&pool, &got.owner, got.addr, got.seq, got.existing))
        }
    }
}

/// An endpoint's allocation, as granted.
struct Endpoint {
    owner: Owner,
    addr: IpNet,
    seq: u64,
    existing: bool,
}

/// The MAC dockerd gives the endpoint (`com.docker.network.endpoint.macaddress`), when it
/// is one a device can have.
pub fn endpoint_mac(req: &RequestAddressRequest) -> Option<Mac> {
    let raw = req.options.as_ref()?.get(ENDPOINT_MAC)?;
    raw.parse::<Mac>().ok().filter(Mac::is_unicast)
}

/// Records the container's MAC with its allocation, in the background (the container's
/// start does not wait for it): watchers on every host can then tell the container from
/// another device answering for its address. A cluster that cannot take it yet (version 1)
/// or a failure costs only that knowledge: logged, never an error.
fn record_mac<B: Backend>(
    backend: &Arc<B>,
    host: &str,
    pool: &PoolId,
    addr: IpAddr,
    seq: u64,
    mac: Mac,
) {
    let (backend, op) = (
        backend.clone(),
        Op::RecordMac {
            pool: pool.clone(),
            addr,
            host: host.to_string(),
            seq,
            mac,
        },
    );
    tokio::spawn(async move {
        match backend.apply(op).await {
            Ok(_) => debug!(%addr, %mac, "container MAC recorded"),
            Err(e) => debug!(%addr, %mac, "container MAC not recorded: {e}"),
        }
    });
}

async fn endpoint<B: Backend>(
    backend: &Arc<B>,
    config: &ShimConfig,
    pool: &PoolId,
    addr: Option<IpAddr>,
    name: String,
    order: Order,
) -> Result<Endpoint, ApiError> {
    let owner = Owner::new(config.host.clone(), name);
    let Some(checks) = &config.lan_checks else {
        let op = Op::Allocate {
            pool: pool.clone(),
            addr,
            owner: owner.clone(),
            order,
        };
        return match backend.apply(op).await? {
            Outcome::Allocated {
                addr,
                seq,
                existing,
            } => Ok(Endpoint {
                owner,
                addr,
                seq,
                existing,
            }),
            other => Err(ApiError::internal(format!(
                "the backend answered {other:?} to Allocate"
            ))),
        };
    };
    match checks
        .allocate(backend.as_ref(), &config.host, pool, addr, &owner, order)
        .await?
    {
        Checked::Granted {
            addr,
            seq,
            existing,
        } => Ok(Endpoint {
            owner,
            addr,
            seq,
            existing,
        }),
        Checked::InUse { addr, mac } => Err(ApiError::conflict(format!(
            "{addr} is in use on the LAN: the device {mac} answers for it (now quarantined, see `raftipam addr conflicts`); give the container another --ip, or if that device is gone for good, `raftipam addr clear {pool} {addr}`"
        ))),
        Checked::AllAnswered { found } => Err(ApiError::conflict(format!(
            "every address tried in pool {pool} is in use on the LAN by a device raftipam does not know: {} (now quarantined, see `raftipam addr conflicts`); declare those devices (`raftipam pool reserve`), or try again",
            list_found(&found)
        ))),
    }
}

fn granted(
    pool: &PoolId,
    owner: &Owner,
    addr: IpNet,
    seq: u64,
    existing: bool,
) -> RequestAddressResponse {
    if existing {
        debug!(pool = %pool, owner = %owner, addr = %addr, seq, "repeated request: same address");
    } else {
        info!(pool = %pool, owner = %owner, addr = %addr, seq, "address allocated");
    }
    address_reply(addr)
}

/// `ReleaseAddress`: releases this host's allocation or reservation of the address.
pub async fn release_address<B: Backend>(
    backend: &Arc<B>,
    config: &ShimConfig,
    req: ReleaseAddressRequest,
) -> Result<Empty, ApiError> {
    let pool = parse_pool_id(&req.pool_id)?;
    if req.address.trim().is_empty() {
        return Err(ApiError::bad_request(
            "Address is empty: which address should be released?",
        ));
    }
    let addr = parse_addr("Address", &req.address, &pool)?;
    let op = Op::Release {
        pool: pool.clone(),
        addr,
        host: config.host.clone(),
        force: false,
    };
    match backend.apply(op).await? {
        Outcome::Released { what } => {
            info!(pool = %pool, host = %config.host, addr = %addr, ?what, "address released");
            Ok(Empty {})
        }
        other => Err(ApiError::internal(format!(
            "the backend answered {other:?} to Release"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pool(s: &str) -> PoolId {
        s.parse().expect("valid pool id")
    }

    fn req(addr: &str, options: Option<&[(&str, &str)]>) -> RequestAddressRequest {
        RequestAddressRequest {
            pool_id: "local/10.0.0.0/24".into(),
            address: addr.into(),
            options: options.map(|o| {
                o.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>()
            }),
        }
    }

    #[test]
    fn classifies_like_dockerd_means_it() {
        let p = pool("local/10.0.0.0/24");
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(
            classify(&req("", Some(&[(REQUEST_ADDRESS_TYPE, GATEWAY_TYPE)])), &p).ok(),
            Some(AddressRequest::Gateway { addr: None })
        );
        assert_eq!(
            classify(
                &req("10.0.0.254", Some(&[(REQUEST_ADDRESS_TYPE, GATEWAY_TYPE)])),
                &p
            )
            .ok(),
            Some(AddressRequest::Gateway {
                addr: ip("10.0.0.254")
            })
        );
        assert_eq!(
            classify(&req("10.0.0.9", None), &p).ok(),
            Some(AddressRequest::Aux {
                addr: "10.0.0.9".parse().expect("ip")
            })
        );
        assert_eq!(
            classify(&req("", Some(&[(ENDPOINT_NAME, "web")])), &p).ok(),
            Some(AddressRequest::Endpoint {
                addr: None,
                name: "web".into(),
                order: Order::PoolDefault
            })
        );
        assert_eq!(
            classify(
                &req(
                    "10.0.0.7",
                    Some(&[
                        (ENDPOINT_NAME, "web"),
                        ("com.docker.network.ipam.serial", "true")
                    ])
                ),
                &p
            )
            .ok(),
            Some(AddressRequest::Endpoint {
                addr: ip("10.0.0.7"),
                name: "web".into(),
                order: Order::Serial
            })
        );
        // Docker 20.10: `docker run --ip` sends no endpoint name, only the MAC (asked for
        // with RequiresMACAddress): still an exclusive allocation, never an aux reservation.
        assert_eq!(
            classify(
                &req(
                    "10.0.0.7",
                    Some(&[(
                        "com.docker.network.endpoint.macaddress",
                        "02:42:0a:00:00:07"
                    )])
                ),
                &p
            )
            .ok(),
            Some(AddressRequest::Endpoint {
                addr: ip("10.0.0.7"),
                name: String::new(),
                order: Order::PoolDefault
            })
        );
    }

    #[test]
    fn addresses_are_checked_against_the_pool() {
        let p = pool("local/10.0.0.0/24");
        assert_eq!(
            parse_addr("Address", "10.0.0.5/24", &p).ok(),
            "10.0.0.5".parse().ok()
        );
        assert_eq!(
            parse_addr("Address", "::ffff:10.0.0.5", &p).ok(),
            "10.0.0.5".parse().ok()
        );
        let e = parse_addr("Address", "10.0.1.5", &p).expect_err("outside");
        assert!(
            e.message.contains("outside pool local/10.0.0.0/24"),
            "{}",
            e.message
        );
        let e = parse_addr("Address", "fd00::5", &p).expect_err("family");
        assert!(
            e.message
                .contains("IPv6 address but pool local/10.0.0.0/24 is IPv4"),
            "{}",
            e.message
        );
        let e = parse_addr("Address", "10.0.0.x", &p).expect_err("garbage");
        assert!(e.message.contains("not an IP address"), "{}", e.message);
    }

    #[test]
    fn default_gateway_is_the_first_host_address() {
        let gw = |s: &str| default_gateway(&s.parse().expect("cidr")).to_string();
        assert_eq!(gw("10.1.0.0/16"), "10.1.0.1");
        assert_eq!(gw("192.168.7.8/29"), "192.168.7.9");
        assert_eq!(gw("10.0.0.4/31"), "10.0.0.4");
        assert_eq!(gw("10.0.0.4/32"), "10.0.0.4");
        assert_eq!(gw("fd00:1::/64"), "fd00:1::1");
        assert_eq!(gw("fd00:1::/128"), "fd00:1::");
    }
}
