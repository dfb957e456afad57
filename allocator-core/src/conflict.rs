//! Address conflicts on the LAN: the vocabulary of what a host found answering for an address
//! ([`Op::ReportConflict`](crate::Op::ReportConflict)) and what the state keeps of it.
//!
//! A device outside raftipam (a printer, a VM, a host configured by hand) may answer ARP or
//! Neighbor Discovery for an address of a pool. A host agent that sees it reports the address
//! and the MAC that answered. What the state does with the report depends on the address:
//!
//! - **free** (or cooling down): the address goes into **quarantine**: no allocation hands it
//!   out — the next-free search skips it, a request for it is refused with
//!   [`AllocError::Quarantined`](crate::AllocError::Quarantined) — until its pool's
//!   probation ([`DEFAULT_PROBATION_MS`], 24 h, like a DHCP server's declined lease) has passed
//!   since it was last seen. A new report restarts the probation. After it, the address may be
//!   handed out again (the host agent checks it on the LAN before use), which drops the record.
//! - **allocated** to a container: a **duplicate alarm** ([`DuplicateAlarm`]): two devices
//!   answer for one address, one of them ours. Nothing is taken from the container; the alarm
//!   names both. If the container's address is released, the record stays and the address is
//!   in quarantine from then on, as a free one would be.
//! - **reserved** (gateway, host or aux address, network or broadcast): refused with
//!   [`AllocError::Reserved`](crate::AllocError::Reserved): those answer on the LAN by design.
//!
//! An operator clears a record ([`Op::ClearConflict`](crate::Op::ClearConflict)) or reserves
//! the address ([`Op::Reserve`](crate::Op::Reserve)), which makes the foreign device's hold
//! permanent and drops the record.
//!
//! Owns [`Mac`], [`Detection`], [`ConflictRecord`] and the query views ([`Conflicts`]); the
//! records themselves live in the state (`state/conflicts.rs`). Never changes an encoding:
//! these types are persisted and sent.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::{Owner, PoolId};

pub use crate::limits::{
    DEFAULT_PROBATION_MS, MAX_CONFLICTS, MAX_CONFLICTS_PER_HOST, MAX_PROBATION_MS,
};

/// An Ethernet (EUI-48) address: what answered for an address on the LAN.
///
/// Encoded as its six bytes (the log, snapshots, the wire: postcard); in human-readable
/// formats (the CLI's `--json`, the web view) as `02:42:ac:11:00:02`, and read back from
/// either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 6]>::deserialize(d).map(Mac)
        }
    }
}

impl Mac {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// Whether the address can be a device's own (the sender of an answer): not all zeros and
    /// not a group (multicast or broadcast) address.
    pub fn is_unicast(&self) -> bool {
        self.0 != [0; 6] && self.0[0] & 1 == 0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = String;

    /// Six hexadecimal bytes separated by `:` or `-` (`02:42:ac:11:00:02`); a byte may have
    /// one digit (`2:42:ac:11:0:2`, as `arp` prints them).
    fn from_str(s: &str) -> Result<Mac, String> {
        let bad = || {
            format!("{s:?} is not a MAC address (expected six hex bytes like 02:42:ac:11:00:02)")
        };
        let parts: Vec<&str> = if s.contains(':') {
            s.split(':').collect()
        } else {
            s.split('-').collect()
        };
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(Mac(out))
    }
}

/// How a conflict was found. Only grows: new ways go at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Detection {
    /// An active check before the address was handed out (an ARP probe, a Neighbor
    /// Solicitation for duplicate address detection).
    Probe,
    /// Watching ARP and Neighbor Discovery traffic on the LAN.
    Watch,
    /// A sweep of a pool's free addresses.
    Sweep,
    /// Imported from another inventory (`/etc/ethers`, DHCP leases, `arp-scan`).
    Import,
}

impl fmt::Display for Detection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Detection::Probe => "probe",
            Detection::Watch => "watch",
            Detection::Sweep => "sweep",
            Detection::Import => "import",
        })
    }
}

/// What the state keeps of a conflict on one address (persisted in snapshots: its fields
/// never change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// The pool it was reported in (the quarantine holds in every pool of its subnet).
    pub pool: PoolId,
    /// The address.
    pub addr: IpAddr,
    /// The MAC that answered for it (the latest report's).
    pub mac: Mac,
    /// The host that saw it (the latest report's).
    pub host: String,
    /// When it was first reported (ms since the Unix epoch, the command's time).
    pub first_seen_ms: u64,
    /// When it was last reported.
    pub last_seen_ms: u64,
    /// How the latest report found it.
    pub how: Detection,
    /// Reports so far.
    pub count: u64,
}

/// A free address some device answers for: in quarantine until `until_ms`, free to hand out
/// again (after a check) from then on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// What was reported.
    pub record: ConflictRecord,
    /// End of its probation: its last sighting plus its pool's probation.
    pub until_ms: u64,
}

impl Conflict {
    /// Whether no allocation may hand the address out at `now_ms`.
    pub fn quarantined_at(&self, now_ms: u64) -> bool {
        now_ms < self.until_ms
    }
}

/// An address a container holds and another device answers for too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateAlarm {
    /// What was reported (the foreign MAC, who saw it).
    pub record: ConflictRecord,
    /// The container that holds the address.
    pub holder: Owner,
    /// The sequence number of its allocation.
    pub seq: u64,
}

/// Every conflict record, as [`crate::State::conflicts`] lists them: free addresses in (or
/// past) quarantine, and addresses containers hold that a foreign device answers for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflicts {
    /// Free addresses with a conflict, by address space and address.
    pub quarantined: Vec<Conflict>,
    /// Held addresses with a conflict, by address space and address.
    pub alarms: Vec<DuplicateAlarm>,
}

/// Counts of [`Conflicts`] at a time, for a status line or metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConflictCounts {
    /// Free addresses no allocation may hand out now.
    pub quarantined: u64,
    /// Free addresses whose probation is over (the record stays until cleared or handed out).
    pub past_probation: u64,
    /// Held addresses another device answers for.
    pub alarms: u64,
}

impl Conflicts {
    /// The counts at `now_ms`.
    pub fn counts(&self, now_ms: u64) -> ConflictCounts {
        let quarantined = self
            .quarantined
            .iter()
            .filter(|c| c.quarantined_at(now_ms))
            .count() as u64;
        ConflictCounts {
            quarantined,
            past_probation: self.quarantined.len() as u64 - quarantined,
            alarms: self.alarms.len() as u64,
        }
    }
}

/// Longest interface name a [`LanCheck`] may carry (Linux's is 15 bytes).
pub const MAX_INTERFACE_LEN: usize = 64;
/// Longest reason a [`LanCheck`] may give for checks being off.
pub const MAX_OFF_REASON_LEN: usize = 512;
/// Most subnets one host's [`Op::ReportLanChecks`](crate::Op::ReportLanChecks) may list.
pub const MAX_LAN_CHECKS: usize = 256;

/// How one host can check the addresses of one subnet on the LAN, as its agent last found
/// (persisted in snapshots and sent: its fields never change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanCheck {
    /// The subnet.
    pub subnet: ipnet::IpNet,
    /// The interface the subnet is on the link of (empty when none was found).
    pub interface: String,
    /// Why checks of this subnet are off on this host; `None`: they are on.
    pub off: Option<String>,
}

impl LanCheck {
    /// Checks the bounds [`Op::ReportLanChecks`](crate::Op::ReportLanChecks) and a snapshot
    /// accept: a canonical subnet, a short interface name, a short reason, no control
    /// characters (the CLI escapes the rest when it prints them).
    pub fn validate(&self) -> Result<(), String> {
        if self.subnet.trunc() != self.subnet {
            return Err(format!("subnet {} is not canonical", self.subnet));
        }
        let printable = |s: &str| !s.chars().any(char::is_control);
        if self.interface.len() > MAX_INTERFACE_LEN || !printable(&self.interface) {
            return Err(format!(
                "interface name {:?} is longer than {MAX_INTERFACE_LEN} bytes or holds control characters",
                self.interface
            ));
        }
        if let Some(why) = &self.off {
            if why.len() > MAX_OFF_REASON_LEN || !printable(why) {
                return Err(format!(
                    "the reason checks are off is longer than {MAX_OFF_REASON_LEN} bytes or holds control characters"
                ));
            }
        }
        Ok(())
    }
}

/// A host's last report of how it checks the LAN
/// ([`Op::ReportLanChecks`](crate::Op::ReportLanChecks)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLan {
    /// The host.
    pub host: String,
    /// When it reported (ms since the Unix epoch, the command's time).
    pub at_ms: u64,
    /// One entry per subnet of the cluster's pools it looked at.
    pub checks: Vec<LanCheck>,
}

/// What the cluster knows of one address, for a host that saw a device answer for it on the
/// LAN: one per pool whose subnet holds it ([`crate::State::on_lan`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressOnLan {
    /// The pool (the lowest of its subnet's pools).
    pub pool: PoolId,
    /// The allocation holding it: its owner and sequence number.
    pub holder: Option<(Owner, u64)>,
    /// The MAC recorded for that allocation's container
    /// ([`Op::RecordMac`](crate::Op::RecordMac)), if any.
    pub mac: Option<Mac>,
    /// A fixed or reserved address (network, broadcast, gateway, a host's or an aux
    /// address, a reservation): some device answers for it by design.
    pub reserved: bool,
    /// The conflict record on it, if any.
    pub conflict: Option<ConflictRecord>,
}

#[cfg(test)]
mod mac_encoding_tests {
    use super::Mac;

    #[test]
    fn six_bytes_in_postcard_a_string_in_json() {
        let m = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        let bytes = postcard::to_allocvec(&m).expect("postcard");
        assert_eq!(
            bytes,
            vec![0x02, 0x42, 0xac, 0x11, 0x00, 0x02],
            "the frozen encoding"
        );
        assert_eq!(postcard::from_bytes::<Mac>(&bytes).expect("back"), m);
        let json = serde_json::to_string(&m).expect("json");
        assert_eq!(json, "\"02:42:ac:11:00:02\"");
        assert_eq!(serde_json::from_str::<Mac>(&json).expect("back"), m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_print_and_parse_in_the_usual_spellings() {
        let m: Mac = "02:42:AC:11:00:02".parse().expect("colons");
        assert_eq!(m, Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]));
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert_eq!("02-42-ac-11-00-02".parse::<Mac>(), Ok(m));
        assert_eq!("2:42:ac:11:0:2".parse::<Mac>(), Ok(m));
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "0g:42:ac:11:00:02",
            "002:42:ac:11:00:02",
            "02:42:ac:11::02",
            "02:42-ac:11:00:02",
        ] {
            let e = bad.parse::<Mac>().expect_err(bad);
            assert!(e.contains("not a MAC address"), "{e}");
        }
    }

    #[test]
    fn only_a_device_s_own_address_is_unicast() {
        assert!(Mac([0x02, 0, 0, 0, 0, 1]).is_unicast());
        assert!(!Mac([0; 6]).is_unicast());
        assert!(!Mac::BROADCAST.is_unicast());
        assert!(
            !Mac([0x33, 0x33, 0, 0, 0, 1]).is_unicast(),
            "IPv6 multicast"
        );
        assert!(
            !Mac([0x01, 0, 0x5e, 0, 0, 1]).is_unicast(),
            "IPv4 multicast"
        );
    }
}
