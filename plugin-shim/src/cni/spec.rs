//! What a CNI runtime hands an IPAM plugin and what it reads back (CNI spec 0.3.0 to 1.1.0).
//!
//! Pure decoding and encoding, no I/O: the environment (`CNI_COMMAND`, `CNI_CONTAINERID`,
//! `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`), the network configuration on stdin (its `ipam`
//! section in raftipam's own spelling or host-local's `ranges`), the addresses a runtime may
//! ask for (`runtimeConfig.ips`, `args.cni.ips`, `IP=` in `CNI_ARGS`), the result in the
//! version the configuration asked for, and the error object with the spec's codes.
//!
//! Every decoder answers bad input with a [`CniError`] whose code is the spec's (4 bad
//! environment, 6 decode, 7 invalid configuration, 1 incompatible version) and whose message
//! says what to change; none panics (a property test feeds them random input).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use allocator_core::{AddrRange, PoolId};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The spec versions this plugin speaks, oldest first (`VERSION`'s `supportedVersions`).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest of them.
pub const NEWEST_VERSION: &str = "1.1.0";
/// Largest configuration read from stdin. Runtimes send a few kilobytes.
pub const MAX_STDIN: usize = 1 << 20;
/// Where the host agent listens unless the `ipam` section or `RAFTIPAM_CNI_SOCKET` says
/// otherwise.
pub const DEFAULT_SOCKET: &str = "/run/raftipam/cni.sock";
/// The address space CNI pools live in unless the `ipam` section names one: Docker's
/// `local`, the space of its bridge and macvlan networks, so that a Docker network and a CNI
/// network on the same subnet share one pool.
pub const DEFAULT_SPACE: &str = "local";
/// Prefix of the endpoint part of every owner this plugin creates: `cni:NETWORK:ID:IFNAME`.
/// No Docker endpoint name can start with it (Docker names never hold a `:`).
pub const OWNER_PREFIX: &str = "cni:";

/// The spec's error codes this plugin uses (`details` says more).
pub mod code {
    /// Incompatible CNI version.
    pub const VERSION: u32 = 1;
    /// Invalid necessary environment variables.
    pub const ENVIRONMENT: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const CONFIG: u32 = 7;
    /// Try again later (no quorum, the cluster unreachable).
    pub const TRY_AGAIN: u32 = 11;
    /// `STATUS`: the plugin cannot serve `ADD` now.
    pub const NOT_AVAILABLE: u32 = 50;
    /// raftipam: no host agent answers on the socket.
    pub const NO_AGENT: u32 = 100;
    /// raftipam: the pool has no free address.
    pub const POOL_FULL: u32 = 101;
    /// raftipam: the address asked for is held, reserved, outside the pool or cooling down.
    pub const ADDRESS_TAKEN: u32 = 102;
    /// raftipam: `CHECK` found an address of `prevResult` not held by this attachment.
    pub const NOT_HELD: u32 = 103;
    /// raftipam: this host's quota would be exceeded.
    pub const QUOTA: u32 = 104;
    /// raftipam: the allocator refused for another reason (the message says which).
    pub const REFUSED: u32 = 105;
}

/// The error object of the spec: printed on stdout, the process exits non-zero.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    /// One of [`code`].
    pub code: u32,
    /// What went wrong, and what to do.
    pub msg: String,
    /// More detail (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code` and `msg`.
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The same error with `details`.
    pub fn details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The JSON a runtime reads, for configuration version `version`.
    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({"cniVersion": version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

fn env_err(msg: impl Into<String>) -> CniError {
    CniError::new(code::ENVIRONMENT, msg)
}

fn config_err(msg: impl Into<String>) -> CniError {
    CniError::new(code::CONFIG, msg)
}

/// The commands of the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    /// Give the attachment its addresses.
    Add,
    /// Take them back (idempotent).
    Del,
    /// The attachment still holds what `ADD` gave it.
    Check,
    /// The versions spoken.
    Version,
    /// Release this network's attachments that are not in the runtime's list (1.1.0).
    Gc,
    /// Whether `ADD` could be served now (1.1.0).
    Status,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => {
                return Err(env_err(format!(
                    "CNI_COMMAND is {other:?}; expected ADD, DEL, CHECK, VERSION, GC or STATUS"
                )))
            }
        })
    }

    /// Whether the command concerns one attachment (and so needs `CNI_CONTAINERID` and
    /// `CNI_IFNAME`).
    pub fn has_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// One attachment: the spec's (`CNI_CONTAINERID`, `CNI_IFNAME`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// The container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name inside the container.
    #[serde(rename = "ifname")]
    pub ifname: String,
}

/// The spec's rule for names and container ids: 1 to 255 ASCII letters, digits, `_`, `.` or
/// `-`, starting with a letter or digit when `first_alnum`.
fn is_spec_name(s: &str, first_alnum: bool) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && (!first_alnum || s.starts_with(|c: char| c.is_ascii_alphanumeric()))
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Checks a network name as the spec defines it: an ASCII letter or digit, then letters,
/// digits, `_`, `.` or `-`.
pub fn check_network_name(name: &str) -> Result<(), CniError> {
    if is_spec_name(name, true) {
        return Ok(());
    }
    Err(config_err(format!(
        "the network name {name:?} is not a CNI network name: start with a letter or digit, then letters, digits, '_', '.' or '-' (at most 255)"
    )))
}

/// Checks a container id as the spec defines it (letters, digits, `_`, `.`, `-`; not empty).
pub fn check_container_id(id: &str) -> Result<(), CniError> {
    if is_spec_name(id, false) {
        return Ok(());
    }
    Err(env_err(format!(
        "CNI_CONTAINERID {id:?} is not a container id: letters, digits, '_', '.' or '-', 1 to 255 of them"
    )))
}

/// Checks an interface name as Linux takes it: 1 to 15 bytes, no `/`, `:` or white space,
/// not `.` or `..`.
pub fn check_ifname(name: &str) -> Result<(), CniError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if ok {
        Ok(())
    } else {
        Err(env_err(format!(
            "CNI_IFNAME {name:?} is not an interface name: 1 to 15 printable characters, no '/', ':' or spaces"
        )))
    }
}

impl Attachment {
    /// Checks both halves.
    pub fn check(&self) -> Result<(), CniError> {
        check_container_id(&self.container_id)?;
        check_ifname(&self.ifname)
    }

    /// The endpoint half of this attachment's owner in network `network`:
    /// `cni:NETWORK:CONTAINERID:IFNAME`. None of the three may hold a `:`, so the string
    /// reads back unambiguously ([`parse_owner_endpoint`]).
    pub fn owner_endpoint(&self, network: &str) -> String {
        format!(
            "{OWNER_PREFIX}{network}:{}:{}",
            self.container_id, self.ifname
        )
    }
}

/// Reads an owner's endpoint made by [`Attachment::owner_endpoint`]: the network and the
/// attachment, or `None` for any other endpoint (a Docker container's).
pub fn parse_owner_endpoint(endpoint: &str) -> Option<(&str, Attachment)> {
    let rest = endpoint.strip_prefix(OWNER_PREFIX)?;
    let mut parts = rest.split(':');
    let (net, id, ifname) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || net.is_empty() || id.is_empty() || ifname.is_empty() {
        return None;
    }
    Some((
        net,
        Attachment {
            container_id: id.to_string(),
            ifname: ifname.to_string(),
        },
    ))
}

/// The environment of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` and `CNI_IFNAME` (for `ADD`, `DEL` and `CHECK`).
    pub attachment: Option<Attachment>,
    /// `CNI_NETNS` (may be empty for `DEL`).
    pub netns: String,
    /// `CNI_ARGS`, as key/value pairs.
    pub args: Vec<(String, String)>,
}

impl Env {
    /// Reads the environment through `get` (`std::env::var` in the plugin, a map in tests).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let command = get("CNI_COMMAND").ok_or_else(|| {
            env_err("CNI_COMMAND is not set: this is a CNI plugin, run by a container runtime (run `raftipam --help` for the command line)")
        })?;
        let command = Command::parse(command.trim())?;
        let args = parse_cni_args(&get("CNI_ARGS").unwrap_or_default())?;
        let netns = get("CNI_NETNS").unwrap_or_default();
        let attachment = if command.has_attachment() {
            let container_id = get("CNI_CONTAINERID").unwrap_or_default();
            let ifname = get("CNI_IFNAME").unwrap_or_default();
            if container_id.is_empty() {
                return Err(env_err(format!(
                    "CNI_CONTAINERID is not set; {command:?} needs it"
                )));
            }
            if ifname.is_empty() {
                return Err(env_err(format!(
                    "CNI_IFNAME is not set; {command:?} needs it"
                )));
            }
            let a = Attachment {
                container_id,
                ifname,
            };
            a.check()?;
            if matches!(command, Command::Add | Command::Check) && netns.is_empty() {
                return Err(env_err(format!(
                    "CNI_NETNS is not set; {command:?} needs it"
                )));
            }
            Some(a)
        } else {
            None
        };
        Ok(Env {
            command,
            attachment,
            netns,
            args,
        })
    }

    /// The value of `CNI_ARGS` key `key`, if given.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `CNI_ARGS`: `K=V` pairs separated by `;` (empty pairs skipped).
pub fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    let mut out = Vec::new();
    for pair in s.split(';').filter(|p| !p.trim().is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(env_err(format!(
                "CNI_ARGS holds {pair:?}, which is not KEY=VALUE (pairs are separated by ';')"
            )));
        };
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// One route to hand back (`routes` of the `ipam` section), kept as given so 1.1.0's extra
/// fields (`mtu`, `advmss`, `priority`, `table`, `scope`) pass through.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Its destination.
    pub dst: IpNet,
    /// The object as configured.
    pub raw: Map<String, Value>,
}

/// One subnet the attachment gets an address from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangePlan {
    /// The pool: address space, subnet and optional CIDR range.
    pub pool: PoolId,
    /// Addresses never handed out: the `exclude` list, and whatever of the subnet lies
    /// outside `rangeStart`..`rangeEnd` when that is not a CIDR.
    pub exclude: Vec<AddrRange>,
    /// The gateway, reserved for the pool and returned with every address.
    pub gateway: Option<IpAddr>,
}

/// The `ipam` section, decided.
#[derive(Clone, Debug, PartialEq)]
pub struct IpamPlan {
    /// One address from each (dual stack: one IPv4 and one IPv6 range set).
    pub ranges: Vec<RangePlan>,
    /// Routes returned with the result.
    pub routes: Vec<Route>,
    /// `dns`, returned as given.
    pub dns: Option<Value>,
    /// The agent's socket.
    pub socket: String,
}

/// The whole network configuration, decided.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    /// `cniVersion`.
    pub version: String,
    /// `name`.
    pub name: String,
    /// The `ipam` section (not needed by `VERSION`, `GC` or `STATUS` without one).
    pub ipam: Option<IpamPlan>,
    /// Addresses the runtime asks for (`runtimeConfig.ips`, `args.cni.ips`).
    pub requested: Vec<IpAddr>,
    /// `prevResult`'s addresses (`CHECK`).
    pub prev_ips: Vec<IpAddr>,
    /// `GC`'s list of attachments still valid (`cni.dev/valid-attachments` and
    /// `cni.dev/attachments`); `None` if neither was given.
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// Compares two dotted versions (`0.3.1` < `0.4.0` < `1.0.0`).
pub fn version_at_least(v: &str, min: &str) -> bool {
    fn parts(v: &str) -> Vec<u32> {
        v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
    }
    parts(v) >= parts(min)
}

/// Checks that `version` is one this plugin speaks.
pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(CniError::new(
            code::VERSION,
            format!(
                "cniVersion {version:?} is not supported; raftipam speaks {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ))
    }
}

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, CniError> {
    v.as_object()
        .ok_or_else(|| config_err(format!("{what} must be a JSON object")))
}

fn opt_str<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<&'a str>, CniError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(config_err(format!("{what}.{key} must be a string"))),
    }
}

fn parse_net(s: &str, what: &str) -> Result<IpNet, CniError> {
    s.trim()
        .parse::<IpNet>()
        .map_err(|_| config_err(format!("{what} {s:?} is not a CIDR such as 10.1.0.0/24")))
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr, CniError> {
    s.trim()
        .parse::<IpAddr>()
        .map_err(|_| config_err(format!("{what} {s:?} is not an IP address")))
}

/// An address given as `A` or `A/LEN` (runtimes send both).
fn parse_ip_or_cidr(s: &str, what: &str) -> Result<IpAddr, CniError> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.addr());
    }
    parse_ip(s, what)
}

fn as_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_u128(v: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(v)),
    }
}

/// The CIDR exactly covering `first..=last`, if there is one.
fn cidr_of(first: IpAddr, last: IpAddr) -> Option<IpNet> {
    let (a, b) = (as_u128(first), as_u128(last));
    let bits: u8 = if first.is_ipv4() { 32 } else { 128 };
    let size = b.checked_sub(a)?.checked_add(1)?;
    if !size.is_power_of_two() || a % size != 0 {
        return None;
    }
    let len = bits - size.trailing_zeros() as u8;
    IpNet::new(first, len).ok()
}

/// An `exclude` entry: a CIDR (Whereabouts' form), `A-B`, or one address.
fn parse_exclude(s: &str) -> Result<AddrRange, CniError> {
    let t = s.trim();
    if let Ok(n) = t.parse::<IpNet>() {
        return Ok(AddrRange {
            first: n.network(),
            last: n.broadcast(),
        });
    }
    t.parse::<AddrRange>().map_err(|_| {
        config_err(format!(
            "ipam.exclude entry {s:?} is not a CIDR (10.1.0.0/28), a range (10.1.0.5-10.1.0.9) or an address"
        ))
    })
}

/// One range as configured, before it is decided.
struct RangeInput {
    subnet: IpNet,
    range: Option<IpNet>,
    start: Option<IpAddr>,
    end: Option<IpAddr>,
    gateway: Option<IpAddr>,
}

/// One range of host-local's `ranges` (or raftipam's own top-level fields) as a plan.
fn range_plan(
    space: &str,
    input: RangeInput,
    exclude: &[AddrRange],
    what: &str,
) -> Result<RangePlan, CniError> {
    let RangeInput {
        subnet,
        range,
        start,
        end,
        gateway,
    } = input;
    let subnet = subnet.trunc();
    let family = |a: IpAddr, field: &str| -> Result<(), CniError> {
        if subnet.contains(&a) {
            Ok(())
        } else {
            Err(config_err(format!(
                "{what}.{field} {a} is not inside the subnet {subnet}"
            )))
        }
    };
    if let Some(g) = gateway {
        family(g, "gateway")?;
    }
    let mut excluded: Vec<AddrRange> = exclude
        .iter()
        .filter(|r| subnet.contains(&r.first) || subnet.contains(&r.last))
        .map(|r| {
            // Clip to the subnet: an exclusion may span several ranges of a dual stack.
            let lo = as_u128(r.first).max(as_u128(subnet.network()));
            let hi = as_u128(r.last).min(as_u128(subnet.broadcast()));
            AddrRange {
                first: from_u128(lo, subnet.addr()),
                last: from_u128(hi, subnet.addr()),
            }
        })
        .collect();
    let mut range = match range {
        Some(r) => {
            let r = r.trunc();
            if !subnet.contains(&r) {
                return Err(config_err(format!(
                    "{what}.range {r} is not inside the subnet {subnet}"
                )));
            }
            Some(r)
        }
        None => None,
    };
    if start.is_some() || end.is_some() {
        if range.is_some() {
            return Err(config_err(format!(
                "{what} gives both range and rangeStart/rangeEnd: give one"
            )));
        }
        let first = start.unwrap_or(subnet.network());
        let last = end.unwrap_or(subnet.broadcast());
        family(first, "rangeStart")?;
        family(last, "rangeEnd")?;
        if as_u128(first) > as_u128(last) {
            return Err(config_err(format!(
                "{what}: rangeStart {first} comes after rangeEnd {last}"
            )));
        }
        match cidr_of(first, last) {
            Some(r) if r != subnet => range = Some(r),
            Some(_) => {}
            None => {
                // Not a CIDR: what lies outside start..=end is never handed out.
                let (lo, hi) = (as_u128(subnet.network()), as_u128(subnet.broadcast()));
                if as_u128(first) > lo {
                    excluded.push(AddrRange {
                        first: subnet.network(),
                        last: from_u128(as_u128(first) - 1, first),
                    });
                }
                if as_u128(last) < hi {
                    excluded.push(AddrRange {
                        first: from_u128(as_u128(last) + 1, last),
                        last: subnet.broadcast(),
                    });
                }
            }
        }
    }
    excluded.sort();
    excluded.dedup();
    Ok(RangePlan {
        pool: PoolId::new(space, subnet, range),
        exclude: excluded,
        gateway,
    })
}

/// Decodes the `ipam` section.
pub fn parse_ipam(ipam: &Value) -> Result<IpamPlan, CniError> {
    let m = obj(ipam, "ipam")?;
    let space = opt_str(m, "space", "ipam")?.unwrap_or(DEFAULT_SPACE);
    if space.is_empty() || space.contains('/') {
        return Err(config_err(format!(
            "ipam.space {space:?} is not an address space name (no '/', not empty)"
        )));
    }
    let socket = opt_str(m, "socket", "ipam")?
        .map(str::to_string)
        .or_else(|| {
            std::env::var("RAFTIPAM_CNI_SOCKET")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_SOCKET.to_string());
    let exclude: Vec<AddrRange> = match m.get("exclude") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|e| {
                e.as_str()
                    .ok_or_else(|| config_err("ipam.exclude must be a list of strings"))
                    .and_then(parse_exclude)
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(config_err("ipam.exclude must be a list of strings")),
    };
    let mut ranges = Vec::new();
    let own = m.contains_key("subnet") || m.contains_key("pool");
    match (own, m.get("ranges")) {
        (true, Some(_)) => {
            return Err(config_err(
                "ipam gives both subnet/pool and ranges: give one (ranges is host-local's spelling)",
            ))
        }
        (false, None | Some(Value::Null)) => {
            return Err(config_err(
                "ipam names no subnet: give \"subnet\": \"10.1.0.0/24\" (optionally \"range\", \"gateway\", \"exclude\"), \"pool\": \"local/10.1.0.0/24\", or host-local's \"ranges\"",
            ))
        }
        (true, None) => {
            let gateway = opt_str(m, "gateway", "ipam")?
                .map(|g| parse_ip(g, "ipam.gateway"))
                .transpose()?;
            if let Some(p) = opt_str(m, "pool", "ipam")? {
                let id: PoolId = p.parse().map_err(|e| {
                    config_err(format!(
                        "ipam.pool {p:?} is not a pool id (SPACE/SUBNET or SPACE/SUBNET/RANGE): {e}"
                    ))
                })?;
                let input = RangeInput {
                    subnet: id.subnet,
                    range: id.range,
                    start: None,
                    end: None,
                    gateway,
                };
                let r = range_plan(&id.space, input, &exclude, "ipam")?;
                ranges.push(r);
            } else {
                let subnet = parse_net(opt_str(m, "subnet", "ipam")?.unwrap_or(""), "ipam.subnet")?;
                let range = opt_str(m, "range", "ipam")?
                    .map(|r| parse_net(r, "ipam.range"))
                    .transpose()?;
                let start = opt_str(m, "rangeStart", "ipam")?
                    .map(|a| parse_ip(a, "ipam.rangeStart"))
                    .transpose()?;
                let end = opt_str(m, "rangeEnd", "ipam")?
                    .map(|a| parse_ip(a, "ipam.rangeEnd"))
                    .transpose()?;
                let input = RangeInput {
                    subnet,
                    range,
                    start,
                    end,
                    gateway,
                };
                ranges.push(range_plan(space, input, &exclude, "ipam")?);
            }
        }
        (false, Some(Value::Array(sets))) => {
            for (i, set) in sets.iter().enumerate() {
                let what = format!("ipam.ranges[{i}]");
                let list = set.as_array().ok_or_else(|| {
                    config_err(format!("{what} must be a list of ranges (host-local's form: [[{{\"subnet\": ...}}]])"))
                })?;
                let [one] = list.as_slice() else {
                    return Err(config_err(format!(
                        "{what} holds {} ranges; raftipam takes one range per set (one address per set: an IPv4 set and an IPv6 set for dual stack)",
                        list.len()
                    )));
                };
                let what = format!("{what}[0]");
                let r = obj(one, &what)?;
                let subnet = parse_net(
                    opt_str(r, "subnet", &what)?.unwrap_or(""),
                    &format!("{what}.subnet"),
                )?;
                let ip = |k: &str| -> Result<Option<IpAddr>, CniError> {
                    opt_str(r, k, &what)?
                        .map(|a| parse_ip(a, &format!("{what}.{k}")))
                        .transpose()
                };
                let input = RangeInput {
                    subnet,
                    range: None,
                    start: ip("rangeStart")?,
                    end: ip("rangeEnd")?,
                    gateway: ip("gateway")?,
                };
                ranges.push(range_plan(space, input, &exclude, &what)?);
            }
            if ranges.is_empty() {
                return Err(config_err("ipam.ranges is empty: give at least one range"));
            }
        }
        (false, Some(_)) => {
            return Err(config_err(
                "ipam.ranges must be a list of lists of ranges (host-local's form)",
            ))
        }
    }
    let mut seen = BTreeSet::new();
    for r in &ranges {
        if !seen.insert(r.pool.subnet) {
            return Err(config_err(format!(
                "ipam names the subnet {} twice: one address per subnet",
                r.pool.subnet
            )));
        }
    }
    let routes = match m.get("routes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let what = format!("ipam.routes[{i}]");
                let raw = obj(r, &what)?.clone();
                let dst = parse_net(
                    opt_str(&raw, "dst", &what)?.unwrap_or(""),
                    &format!("{what}.dst"),
                )?;
                if let Some(gw) = opt_str(&raw, "gw", &what)? {
                    parse_ip(gw, &format!("{what}.gw"))?;
                }
                Ok(Route { dst, raw })
            })
            .collect::<Result<_, CniError>>()?,
        Some(_) => return Err(config_err("ipam.routes must be a list of {\"dst\": CIDR}")),
    };
    let dns = m.get("dns").filter(|d| !d.is_null()).cloned();
    if let Some(d) = &dns {
        obj(d, "ipam.dns")?;
    }
    Ok(IpamPlan {
        ranges,
        routes,
        dns,
        socket,
    })
}

fn ip_list(v: Option<&Value>, what: &str) -> Result<Vec<IpAddr>, CniError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|e| {
                e.as_str()
                    .ok_or_else(|| config_err(format!("{what} must be a list of strings")))
                    .and_then(|s| parse_ip_or_cidr(s, what))
            })
            .collect(),
        Some(_) => Err(config_err(format!("{what} must be a list of strings"))),
    }
}

fn attachment_list(v: Option<&Value>, what: &str) -> Result<Option<Vec<Attachment>>, CniError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let list: Vec<Attachment> = serde_json::from_value(v.clone()).map_err(|e| {
                config_err(format!(
                    "{what} must be a list of {{\"containerID\": ..., \"ifname\": ...}}: {e}"
                ))
            })?;
            Ok(Some(list))
        }
    }
}

/// Decodes the network configuration a runtime wrote on stdin, for `env`'s command.
pub fn parse_config(stdin: &[u8], env: &Env) -> Result<NetConf, CniError> {
    if stdin.len() > MAX_STDIN {
        return Err(CniError::new(
            code::DECODE,
            format!(
                "the network configuration is {} bytes; at most {MAX_STDIN} are read",
                stdin.len()
            ),
        ));
    }
    let v: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE,
            format!("the network configuration on stdin is not JSON: {e}"),
        )
    })?;
    let m = v.as_object().ok_or_else(|| {
        CniError::new(
            code::DECODE,
            "the network configuration must be a JSON object",
        )
    })?;
    let version = opt_str(m, "cniVersion", "the configuration")?
        .unwrap_or("0.3.0")
        .to_string();
    check_version(&version)?;
    let name = opt_str(m, "name", "the configuration")?.unwrap_or("");
    check_network_name(name)?;
    let need_ipam = matches!(env.command, Command::Add | Command::Check);
    let ipam = match m.get("ipam") {
        Some(v) if !v.is_null() => Some(parse_ipam(v)?),
        _ if need_ipam => {
            return Err(config_err(
                "the configuration has no ipam section: raftipam is an IPAM plugin, named by a main plugin's \"ipam\": {\"type\": \"raftipam\", ...}",
            ))
        }
        _ => None,
    };
    let mut requested = ip_list(
        m.get("runtimeConfig").and_then(|r| r.get("ips")),
        "runtimeConfig.ips",
    )?;
    requested.extend(ip_list(
        m.get("args")
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("ips")),
        "args.cni.ips",
    )?);
    if let Some(ip) = env.arg("IP") {
        for part in ip.split(',').filter(|p| !p.trim().is_empty()) {
            requested.push(
                parse_ip_or_cidr(part, "CNI_ARGS IP")
                    .map_err(|e| CniError::new(code::ENVIRONMENT, e.msg))?,
            );
        }
    }
    requested.sort();
    requested.dedup();
    let prev_ips = match m.get("prevResult") {
        Some(p) if !p.is_null() => match p.get("ips") {
            Some(Value::Array(ips)) => ips
                .iter()
                .map(|ip| {
                    ip.get("address")
                        .and_then(Value::as_str)
                        .ok_or_else(|| config_err("prevResult.ips[].address must be a string"))
                        .and_then(|a| parse_ip_or_cidr(a, "prevResult.ips[].address"))
                })
                .collect::<Result<_, _>>()?,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err(config_err("prevResult.ips must be a list")),
        },
        _ => Vec::new(),
    };
    let valid = attachment_list(
        m.get("cni.dev/valid-attachments"),
        "cni.dev/valid-attachments",
    )?;
    let spec_name = attachment_list(m.get("cni.dev/attachments"), "cni.dev/attachments")?;
    let valid_attachments = match (valid, spec_name) {
        (None, None) => None,
        (a, b) => {
            let mut all: Vec<Attachment> = a.into_iter().chain(b).flatten().collect();
            all.sort();
            all.dedup();
            Some(all)
        }
    };
    Ok(NetConf {
        version,
        name: name.to_string(),
        ipam,
        requested,
        prev_ips,
        valid_attachments,
    })
}

/// One address handed to an attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    /// The address with its subnet's prefix length.
    pub address: IpNet,
    /// The pool's gateway, if the configuration names one.
    pub gateway: Option<IpAddr>,
}

/// The `ADD` result in configuration version `version`: `ips` (with `version` "4"/"6"
/// before 1.0.0), `routes`, `dns`.
pub fn add_result(version: &str, granted: &[Granted], plan: &IpamPlan) -> Value {
    let old = !version_at_least(version, "1.0.0");
    let ips: Vec<Value> = granted
        .iter()
        .map(|g| {
            let mut ip = Map::new();
            if old {
                let fam = if g.address.addr().is_ipv4() { "4" } else { "6" };
                ip.insert("version".into(), Value::String(fam.into()));
            }
            ip.insert("address".into(), Value::String(g.address.to_string()));
            if let Some(gw) = g.gateway {
                ip.insert("gateway".into(), Value::String(gw.to_string()));
            }
            Value::Object(ip)
        })
        .collect();
    let routes: Vec<Value> = plan
        .routes
        .iter()
        .map(|r| {
            if version_at_least(version, "1.1.0") {
                Value::Object(r.raw.clone())
            } else {
                // Before 1.1.0 a route has only dst and gw.
                let mut o = Map::new();
                o.insert("dst".into(), Value::String(r.dst.to_string()));
                if let Some(gw) = r.raw.get("gw") {
                    o.insert("gw".into(), gw.clone());
                }
                Value::Object(o)
            }
        })
        .collect();
    let mut out = json!({"cniVersion": version, "ips": ips});
    if !routes.is_empty() {
        out["routes"] = Value::Array(routes);
    }
    if let Some(dns) = &plan.dns {
        out["dns"] = dns.clone();
    }
    out
}

/// `VERSION`'s answer.
pub fn version_result() -> Value {
    json!({"cniVersion": NEWEST_VERSION, "supportedVersions": SUPPORTED_VERSIONS})
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::read(|k| m.get(k).cloned())
    }

    fn add_env() -> Env {
        env_of(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/var/run/netns/c1"),
        ])
        .expect("valid")
    }

    #[test]
    fn the_environment_is_checked_with_code_4() {
        let e = env_of(&[]).expect_err("no command");
        assert_eq!(e.code, code::ENVIRONMENT);
        assert!(e.msg.contains("CNI_COMMAND"), "{e}");
        let e = env_of(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).expect_err("no id");
        assert!(e.msg.contains("CNI_CONTAINERID"), "{e}");
        let e = env_of(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c/1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/x"),
        ])
        .expect_err("bad id");
        assert_eq!(e.code, code::ENVIRONMENT);
        let e = env_of(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth:0"),
            ("CNI_NETNS", "/x"),
        ])
        .expect_err("bad ifname");
        assert!(e.msg.contains("CNI_IFNAME"), "{e}");
        // DEL needs no netns: the runtime may have lost it.
        let d = env_of(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ])
        .expect("DEL without a netns");
        assert_eq!(d.command, Command::Del);
        let e = env_of(&[("CNI_COMMAND", "PUT")]).expect_err("unknown");
        assert_eq!(e.code, code::ENVIRONMENT);
        let g = env_of(&[("CNI_COMMAND", "GC")]).expect("GC has no attachment");
        assert!(g.attachment.is_none());
    }

    #[test]
    fn cni_args_are_pairs() {
        let a = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web;;IP=10.1.0.9").expect("ok");
        assert_eq!(a.len(), 3);
        assert_eq!(a[2], ("IP".into(), "10.1.0.9".into()));
        assert_eq!(
            parse_cni_args("IgnoreUnknown").expect_err("no =").code,
            code::ENVIRONMENT
        );
    }

    #[test]
    fn owners_read_back_and_never_match_a_docker_endpoint() {
        let a = Attachment {
            container_id: "abc123".into(),
            ifname: "net1".into(),
        };
        let ep = a.owner_endpoint("lan");
        assert_eq!(ep, "cni:lan:abc123:net1");
        assert_eq!(parse_owner_endpoint(&ep), Some(("lan", a)));
        assert_eq!(parse_owner_endpoint("web-1"), None);
        assert_eq!(parse_owner_endpoint("cni:lan:x"), None);
        assert_eq!(parse_owner_endpoint("cni:lan:x:y:z"), None);
    }

    #[test]
    fn raftipams_own_spelling() {
        let cfg =
            br#"{"cniVersion":"1.0.0","name":"lan","type":"macvlan","ipam":{"type":"raftipam",
            "subnet":"10.1.0.0/24","gateway":"10.1.0.1","exclude":["10.1.0.240/28","10.1.0.5"],
            "routes":[{"dst":"0.0.0.0/0"}]}}"#;
        let c = parse_config(cfg, &add_env()).expect("valid");
        let ipam = c.ipam.expect("ipam");
        assert_eq!(ipam.ranges.len(), 1);
        let r = &ipam.ranges[0];
        assert_eq!(r.pool.to_string(), "local/10.1.0.0/24");
        assert_eq!(r.gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(
            r.exclude,
            vec![
                "10.1.0.5".parse::<AddrRange>().unwrap(),
                "10.1.0.240-10.1.0.255".parse().unwrap()
            ]
        );
        assert_eq!(ipam.routes[0].dst, "0.0.0.0/0".parse::<IpNet>().unwrap());
    }

    #[test]
    fn host_locals_ranges_dual_stack_and_ranges_that_are_not_cidrs() {
        let cfg = br#"{"cniVersion":"0.4.0","name":"lan","ipam":{"type":"raftipam","ranges":[
            [{"subnet":"10.2.0.0/24","rangeStart":"10.2.0.128","rangeEnd":"10.2.0.255","gateway":"10.2.0.1"}],
            [{"subnet":"fd00:2::/64","rangeStart":"fd00:2::10","rangeEnd":"fd00:2::20"}]]}}"#;
        let c = parse_config(cfg, &add_env()).expect("valid");
        let ipam = c.ipam.expect("ipam");
        // .128-.255 is exactly a /25: a range, nothing excluded.
        assert_eq!(
            ipam.ranges[0].pool.to_string(),
            "local/10.2.0.0/24/10.2.0.128/25"
        );
        assert!(ipam.ranges[0].exclude.is_empty());
        // ::10-::20 is not a CIDR: the rest of the /64 is excluded.
        let v6 = &ipam.ranges[1];
        assert_eq!(v6.pool.to_string(), "local/fd00:2::/64");
        assert_eq!(v6.exclude.len(), 2);
        assert_eq!(v6.exclude[0].last, "fd00:2::f".parse::<IpAddr>().unwrap());
        assert_eq!(v6.exclude[1].first, "fd00:2::21".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn bad_configurations_say_what_to_change() {
        for (cfg, code_, needle) in [
            (&b"{"[..], code::DECODE, "not JSON"),
            (b"[]", code::DECODE, "object"),
            (br#"{"cniVersion":"0.2.0","name":"n","ipam":{}}"#, code::VERSION, "0.2.0"),
            (br#"{"cniVersion":"1.0.0","name":"n/1","ipam":{}}"#, code::CONFIG, "network name"),
            (br#"{"cniVersion":"1.0.0","name":"n"}"#, code::CONFIG, "no ipam"),
            (br#"{"cniVersion":"1.0.0","name":"n","ipam":{}}"#, code::CONFIG, "names no subnet"),
            (br#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0"}}"#, code::CONFIG, "not a CIDR"),
            (br#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24","gateway":"10.9.0.1"}}"#, code::CONFIG, "not inside"),
            (br#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24","ranges":[]}}"#, code::CONFIG, "both"),
            (br#"{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"10.1.0.0/24"}]]}}"#, code::CONFIG, "one range per set"),
            (br#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.9","rangeEnd":"10.0.0.2"}}"#, code::CONFIG, "after"),
            (br#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24","exclude":["x"]}}"#, code::CONFIG, "exclude"),
            (br#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24","routes":[{"gw":"10.0.0.1"}]}}"#, code::CONFIG, "dst"),
        ] {
            let e = parse_config(cfg, &add_env()).expect_err(&String::from_utf8_lossy(cfg));
            assert_eq!(e.code, code_, "{e}");
            assert!(e.msg.contains(needle), "{e} lacks {needle:?}");
        }
    }

    #[test]
    fn requested_addresses_come_from_all_three_conventions() {
        let env = env_of(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/x"),
            ("CNI_ARGS", "IgnoreUnknown=1;IP=10.1.0.7"),
        ])
        .unwrap();
        let cfg = br#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.1.0.0/24"},
            "runtimeConfig":{"ips":["10.1.0.8/24"]},"args":{"cni":{"ips":["fd00::9"]}}}"#;
        let c = parse_config(cfg, &env).expect("valid");
        let want: Vec<IpAddr> = ["10.1.0.7", "10.1.0.8", "fd00::9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(c.requested, want);
    }

    #[test]
    fn gc_reads_both_names_of_the_attachment_list() {
        let env = env_of(&[("CNI_COMMAND", "GC")]).unwrap();
        let cfg = br#"{"cniVersion":"1.1.0","name":"n",
            "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],
            "cni.dev/attachments":[{"containerID":"b","ifname":"eth0"},{"containerID":"a","ifname":"eth0"}]}"#;
        let c = parse_config(cfg, &env).expect("valid");
        let v = c.valid_attachments.expect("a list");
        assert_eq!(v.len(), 2);
        let none = parse_config(br#"{"cniVersion":"1.1.0","name":"n"}"#, &env).unwrap();
        assert_eq!(none.valid_attachments, None);
    }

    #[test]
    fn results_follow_the_configured_version() {
        let cfg = br#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.1.0.0/24","gateway":"10.1.0.1",
            "routes":[{"dst":"0.0.0.0/0","mtu":1400}],"dns":{"nameservers":["10.1.0.53"]}}}"#;
        let plan = parse_config(cfg, &add_env()).unwrap().ipam.unwrap();
        let g = [Granted {
            address: "10.1.0.9/24".parse().unwrap(),
            gateway: Some("10.1.0.1".parse().unwrap()),
        }];
        let new = add_result("1.1.0", &g, &plan);
        assert_eq!(new["ips"][0]["address"], "10.1.0.9/24");
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["routes"][0]["mtu"], 1400);
        assert_eq!(new["dns"]["nameservers"][0], "10.1.0.53");
        let old = add_result("0.3.1", &g, &plan);
        assert_eq!(old["ips"][0]["version"], "4");
        assert!(old["routes"][0].get("mtu").is_none());
        assert_eq!(old["cniVersion"], "0.3.1");
    }

    #[test]
    fn versions_compare_by_number() {
        assert!(version_at_least("1.1.0", "1.0.0"));
        assert!(version_at_least("0.4.0", "0.3.1"));
        assert!(!version_at_least("0.3.1", "0.4.0"));
        assert!(!version_at_least("0.10.0", "1.0.0"));
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
                                 text in ".{0,200}") {
            let _ = parse_config(&bytes, &add_env());
            let _ = parse_config(text.as_bytes(), &add_env());
            let _ = parse_cni_args(&text);
            let _ = parse_owner_endpoint(&text);
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                let _ = parse_ipam(&v);
            }
        }
    }
}
