//! The subnet map: what each address of a pool is, read a page at a time.
//!
//! Two shapes, both costing time in proportion to the page, not to the subnet:
//! - a **dense page** ([`State::map_page`]): one cell per address, `page_size` consecutive
//!   addresses of the subnet (IPv4, and IPv6 subnets of up to 2^32 addresses);
//! - a **sparse list** ([`State::map_sparse`]): the addresses that are not free, in order,
//!   with the free ranges between them folded into one entry each — how a /64 with a million
//!   allocations is shown. It walks the bitmap's set bits, so it never visits free space.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::AllocError;
use crate::id::PoolId;
use crate::limits::MAX_MAP_PAGE;
use crate::state::{Pool, State};
use crate::subnet::Subnet;
use crate::view::human_count;

/// What one address is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CellState {
    /// Free to hand out.
    Free,
    /// Allocated to an endpoint.
    Allocated {
        /// The host holding it.
        host: String,
        /// Its endpoint (container) name.
        endpoint: String,
        /// Its sequence number.
        seq: u64,
        /// When it was allocated (seconds since the Unix epoch).
        at_s: u32,
    },
    /// Allocated, and its host's last report says dockerd has no endpoint for it.
    Leaked {
        /// The host holding it.
        host: String,
        /// Its endpoint (container) name.
        endpoint: String,
        /// Its sequence number.
        seq: u64,
        /// When it was allocated (seconds since the Unix epoch).
        at_s: u32,
        /// When the host reported it (ms since the Unix epoch).
        reported_ms: u64,
    },
    /// Never handed out: network, broadcast, a gateway, an aux address, a reserve range.
    Reserved {
        /// Why, in words.
        why: String,
    },
    /// Released, held back until the pool's cooldown ends.
    Cooling {
        /// When it becomes free (ms since the Unix epoch).
        until_ms: u64,
    },
    /// In the subnet but outside this pool's range (another pool of the subnet may use it).
    Outside,
    /// Free, but a device raftipam does not know answers for it on the LAN: quarantined until
    /// `until_ms` (handed out by no host until then; after it, checked again before use).
    Foreign {
        /// The device's MAC (`02:42:ac:11:00:02`).
        mac: String,
        /// The host that last saw it.
        seen_by: String,
        /// How it was found (`probe`, `watch`, `sweep`, `import`).
        how: String,
        /// When the quarantine ends (ms since the Unix epoch).
        until_ms: u64,
    },
    /// Allocated, and another device answers for it on the LAN too: a duplicate.
    Duplicate {
        /// The host holding it.
        host: String,
        /// Its endpoint (container) name.
        endpoint: String,
        /// Its sequence number.
        seq: u64,
        /// The other device's MAC.
        mac: String,
        /// The host that saw the other device.
        seen_by: String,
    },
}

/// One address and what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapCell {
    /// The address.
    pub addr: IpAddr,
    /// What it is.
    #[serde(flatten)]
    pub state: CellState,
}

/// `page_size` consecutive addresses of a pool's subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapPage {
    /// The pool.
    pub pool: PoolId,
    /// Which page this is (0-based).
    pub page: u64,
    /// Addresses per page.
    pub page_size: u32,
    /// Pages in the subnet.
    pub pages: u64,
    /// One cell per address, in order.
    pub cells: Vec<MapCell>,
}

/// One entry of a sparse list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SparseEntry {
    /// An address that is not free.
    Cell(MapCell),
    /// A run of free addresses.
    Free {
        /// Its first address.
        first: IpAddr,
        /// Its last address.
        last: IpAddr,
        /// How many, for people (`2^64 - 5`).
        count: String,
    },
}

/// The non-free addresses of a pool from some address on, with the free runs between them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparsePage {
    /// The pool.
    pub pool: PoolId,
    /// Where the list starts.
    pub from: IpAddr,
    /// The entries, in address order.
    pub entries: Vec<SparseEntry>,
    /// Where the next page starts, if the pool goes on.
    pub next: Option<IpAddr>,
}

/// Standing leaks of one subnet within `lo..=hi`: offset → (host, report time).
type Leaks<'a> = HashMap<u128, (&'a str, u64)>;

impl State {
    /// A pool and its subnet, or `NoSuchPool`.
    pub(crate) fn map_target(&self, id: &PoolId) -> Result<(&Pool, &Subnet), AllocError> {
        let p = self
            .pools
            .get(id)
            .ok_or_else(|| AllocError::NoSuchPool(id.clone()))?;
        let sn = self
            .subnets
            .get(&p.key)
            .ok_or_else(|| AllocError::NoSuchPool(id.clone()))?;
        Ok((p, sn))
    }

    /// The leaks hosts reported in this subnet that still stand, between two offsets.
    fn standing_leaks(&self, id: &PoolId, sn: &Subnet, lo: u128, hi: u128) -> Leaks<'_> {
        self.standing_leaks_in(id, sn, lo, hi)
            .map(|(off, host, at_ms)| (off, (host, at_ms)))
            .collect()
    }

    fn cell_state(&self, p: &Pool, sn: &Subnet, off: u128, leaks: &Leaks<'_>) -> CellState {
        let conflict = if self.lan.is_empty() {
            None
        } else {
            self.lan.get(&p.key.0, sn.addr(off))
        };
        if let Some(r) = sn.records.get(off) {
            let host = self.hosts[r.host as usize].clone();
            let endpoint = String::from_utf8_lossy(r.name).into_owned();
            if let Some(c) = conflict {
                return CellState::Duplicate {
                    host,
                    endpoint,
                    seq: r.seq,
                    mac: c.mac.to_string(),
                    seen_by: c.host.clone(),
                };
            }
            return match leaks.get(&off) {
                Some(&(_, reported_ms)) => CellState::Leaked {
                    host,
                    endpoint,
                    seq: r.seq,
                    at_s: r.at_s,
                    reported_ms,
                },
                None => CellState::Allocated {
                    host,
                    endpoint,
                    seq: r.seq,
                    at_s: r.at_s,
                },
            };
        }
        if let Some(why) = sn.fixed_reason(off) {
            return CellState::Reserved {
                why: why.to_string(),
            };
        }
        if let Some(h) = sn.reservations.get(&off) {
            let who: Vec<String> = h
                .keys()
                .map(|k| match k.strip_prefix('@') {
                    Some(pool) => format!("the reserve range of pool {pool}"),
                    None => format!("host {k}"),
                })
                .collect();
            return CellState::Reserved {
                why: format!("reserved by {} (gateway or aux address)", who.join(", ")),
            };
        }
        if let Some(&until_ms) = sn.cooling.get(&off) {
            return CellState::Cooling { until_ms };
        }
        if let Some(c) = conflict {
            return CellState::Foreign {
                mac: c.mac.to_string(),
                seen_by: c.host.clone(),
                how: c.how.to_string(),
                until_ms: self.lan.until(c),
            };
        }
        if off < p.lo || off > p.hi {
            return CellState::Outside;
        }
        CellState::Free
    }

    /// Page `page` of the pool's subnet, `page_size` addresses (1 ..= [`MAX_MAP_PAGE`]) a page.
    /// Subnets of more than 2^32 addresses have too many pages: use [`State::map_sparse`].
    pub fn map_page(&self, id: &PoolId, page: u64, page_size: u32) -> Result<MapPage, AllocError> {
        let (p, sn) = self.map_target(id)?;
        if page_size == 0 || page_size > MAX_MAP_PAGE {
            return Err(AllocError::Invalid(format!(
                "a map page holds 1 to {MAX_MAP_PAGE} addresses, not {page_size}"
            )));
        }
        if sn.bits > 32 {
            return Err(AllocError::Invalid(format!(
                "{} has {} addresses, too many to page through: list it sparsely",
                id.subnet,
                human_count(sn.size())
            )));
        }
        let size = sn.size() as u64;
        let pages = size.div_ceil(u64::from(page_size));
        if page >= pages {
            return Err(AllocError::Invalid(format!(
                "page {page} is past the end: {} has {pages} pages of {page_size}",
                id.subnet
            )));
        }
        let lo = u128::from(page) * u128::from(page_size);
        let hi = (lo + u128::from(page_size) - 1).min(sn.size() - 1);
        let leaks = self.standing_leaks(id, sn, lo, hi);
        let cells = (lo..=hi)
            .map(|off| MapCell {
                addr: sn.addr(off),
                state: self.cell_state(p, sn, off, &leaks),
            })
            .collect();
        Ok(MapPage {
            pool: id.clone(),
            page,
            page_size,
            pages,
            cells,
        })
    }

    /// The page of [`State::map_page`] that shows `addr`.
    pub fn map_page_of(
        &self,
        id: &PoolId,
        addr: IpAddr,
        page_size: u32,
    ) -> Result<u64, AllocError> {
        let (_, sn) = self.map_target(id)?;
        let off = sn
            .offset(addr)
            .ok_or_else(|| AllocError::Invalid(format!("{addr} is not in {}", id.subnet)))?;
        Ok((off / u128::from(page_size.max(1))) as u64)
    }

    /// Up to `limit` (1 ..= [`MAX_MAP_PAGE`]) non-free addresses of the pool's range from
    /// `from` (default: its first address) on, with the free runs between them.
    pub fn map_sparse(
        &self,
        id: &PoolId,
        from: Option<IpAddr>,
        limit: u32,
    ) -> Result<SparsePage, AllocError> {
        let (p, sn) = self.map_target(id)?;
        if limit == 0 || limit > MAX_MAP_PAGE {
            return Err(AllocError::Invalid(format!(
                "a sparse page holds 1 to {MAX_MAP_PAGE} addresses, not {limit}"
            )));
        }
        let start = match from {
            None => p.lo,
            Some(a) => {
                let off = sn
                    .offset(a)
                    .ok_or_else(|| AllocError::Invalid(format!("{a} is not in {}", id.subnet)))?;
                off.max(p.lo)
            }
        };
        let mut entries = Vec::new();
        let mut cells = Vec::new();
        let mut cursor = Some(start).filter(|&c| c <= p.hi);
        // Each turn emits one cell (bounded by `limit`) or ends.
        while let Some(c) = cursor {
            if cells.len() as u32 == limit {
                break;
            }
            let next = sn.bitmap.first_set_from(c).filter(|&s| s <= p.hi);
            let run_end = next.map_or(p.hi, |s| s.wrapping_sub(1));
            if next != Some(c) {
                entries.push(self.free_run(sn, c, run_end));
            }
            let Some(s) = next else {
                cursor = None;
                break;
            };
            cells.push(s);
            entries.push(SparseEntry::Cell(MapCell {
                addr: sn.addr(s),
                state: CellState::Free,
            }));
            cursor = Some(s + 1).filter(|&n| n <= p.hi);
        }
        if let (Some(&lo), Some(&hi)) = (cells.first(), cells.last()) {
            let leaks = self.standing_leaks(id, sn, lo, hi);
            let mut it = cells.iter();
            for e in &mut entries {
                if let SparseEntry::Cell(c) = e {
                    if let Some(&off) = it.next() {
                        c.state = self.cell_state(p, sn, off, &leaks);
                    }
                }
            }
        }
        Ok(SparsePage {
            pool: id.clone(),
            from: sn.addr(start),
            entries,
            next: cursor.map(|c| sn.addr(c)),
        })
    }

    fn free_run(&self, sn: &Subnet, first: u128, last: u128) -> SparseEntry {
        SparseEntry::Free {
            first: sn.addr(first),
            last: sn.addr(last),
            count: human_count(last - first + 1),
        }
    }
}

/// Offset of `addr` from `base`, for tests.
#[cfg(test)]
fn off(base: IpAddr, addr: IpAddr) -> u128 {
    crate::subnet::addr_to_u128(addr) - crate::subnet::addr_to_u128(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{HostReport, ReportedLeak};
    use crate::{Command, Op, Order, Outcome, Owner, PoolSpec};

    fn pool(st: &mut State, net: &str, range: Option<&str>) -> PoolId {
        pool_cooling(st, net, range, 0)
    }

    fn pool_cooling(st: &mut State, net: &str, range: Option<&str>, cooldown_ms: u64) -> PoolId {
        let spec = PoolSpec {
            space: "global".into(),
            subnet: Some(net.parse().unwrap()),
            range: range.map(|r| r.parse().unwrap()),
            cooldown_ms,
            ..Default::default()
        };
        match st
            .apply(&Command {
                at_ms: 0,
                op: Op::RequestPool {
                    spec,
                    holder: "h1".into(),
                },
            })
            .unwrap()
        {
            Outcome::Pool { pool, .. } => pool,
            o => panic!("{o:?}"),
        }
    }

    fn alloc(st: &mut State, p: &PoolId, host: &str, name: &str, addr: Option<&str>) -> IpAddr {
        let op = Op::Allocate {
            pool: p.clone(),
            addr: addr.map(|a| a.parse().unwrap()),
            owner: Owner::new(host, name),
            order: Order::Lowest,
        };
        match st.apply(&Command { at_ms: 1_000, op }).unwrap() {
            Outcome::Allocated { addr, .. } => addr.addr(),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn a_dense_page_says_what_every_address_is() {
        let mut st = State::default();
        let p = pool(&mut st, "10.9.0.0/23", Some("10.9.0.0/24"));
        st.apply(&Command {
            at_ms: 0,
            op: Op::Reserve {
                pool: p.clone(),
                addr: "10.9.0.1".parse().unwrap(),
                holder: "h1".into(),
            },
        })
        .unwrap();
        let a = alloc(&mut st, &p, "h1", "web-1", None);
        let b = alloc(&mut st, &p, "h2", "db-1", None);
        let page = st.map_page(&p, 0, 256).unwrap();
        assert_eq!((page.pages, page.cells.len()), (2, 256));
        let at = |i: usize| &page.cells[i].state;
        assert!(matches!(at(0), CellState::Reserved { why } if why.contains("network")));
        assert!(matches!(at(1), CellState::Reserved { why } if why.contains("host h1")));
        assert_eq!(page.cells[2].addr, a);
        assert!(
            matches!(at(2), CellState::Allocated { host, endpoint, .. } if host == "h1" && endpoint == "web-1")
        );
        assert!(matches!(at(3), CellState::Allocated { host, .. } if host == "h2"));
        assert_eq!((off(page.cells[0].addr, b)), 3);
        assert_eq!(at(4), &CellState::Free);
        // The second page is outside the pool's range, ending with the broadcast address.
        let page = st.map_page(&p, 1, 256).unwrap();
        assert_eq!(page.cells[0].state, CellState::Outside);
        assert!(
            matches!(&page.cells[255].state, CellState::Reserved { why } if why.contains("broadcast"))
        );
        assert!(st.map_page(&p, 2, 256).is_err());
        assert!(st.map_page(&p, 0, 0).is_err());
        assert_eq!(
            st.map_page_of(&p, "10.9.1.7".parse().unwrap(), 256)
                .unwrap(),
            1
        );
        assert!(st
            .map_page_of(&p, "10.8.0.1".parse().unwrap(), 256)
            .is_err());
    }

    #[test]
    fn released_cells_cool_and_reported_leaks_show() {
        let mut st = State::default();
        let p = pool_cooling(&mut st, "10.7.0.0/24", None, 60_000);
        let a = alloc(&mut st, &p, "h1", "gone", None);
        let b = alloc(&mut st, &p, "h1", "lost", None);
        st.apply(&Command {
            at_ms: 2_000,
            op: Op::Release {
                pool: p.clone(),
                addr: a,
                host: "h1".into(),
                force: false,
            },
        })
        .unwrap();
        let seq = st.allocations(&p).unwrap()[0].seq;
        let report = HostReport {
            leaked: vec![ReportedLeak {
                pool: p.clone(),
                addr: b,
                seq,
                endpoint: "lost".into(),
            }],
            leaked_total: 1,
            ..Default::default()
        };
        st.apply(&Command {
            at_ms: 3_000,
            op: Op::Report {
                host: "h1".into(),
                report,
            },
        })
        .unwrap();
        let page = st.map_page(&p, 0, 16).unwrap();
        assert_eq!(page.cells[1].state, CellState::Cooling { until_ms: 62_000 });
        assert!(
            matches!(&page.cells[2].state, CellState::Leaked { endpoint, reported_ms: 3_000, .. } if endpoint == "lost")
        );
    }

    #[test]
    fn a_sparse_list_of_a_slash_64_folds_the_free_runs() {
        let mut st = State::default();
        let p = pool(&mut st, "fd00:1::/64", None);
        for i in 0..10 {
            alloc(&mut st, &p, "h1", &format!("c{i}"), None);
        }
        alloc(&mut st, &p, "h2", "far", Some("fd00:1::ffff:0:1"));
        let page = st.map_sparse(&p, None, 4).unwrap();
        // ::0 is the subnet-router anycast address, then ::1, ::2, ::3.
        assert_eq!(page.entries.len(), 4);
        assert!(
            matches!(&page.entries[0], SparseEntry::Cell(c) if matches!(c.state, CellState::Reserved { .. }))
        );
        assert_eq!(page.next, Some("fd00:1::4".parse().unwrap()));
        let rest = st.map_sparse(&p, page.next, 100).unwrap();
        // ::4 ..= ::a allocated, a free run, the far one, the free run to the end.
        let kinds: Vec<&str> = rest
            .entries
            .iter()
            .map(|e| match e {
                SparseEntry::Cell(_) => "cell",
                SparseEntry::Free { .. } => "free",
            })
            .collect();
        assert_eq!(
            kinds,
            ["cell"; 7]
                .iter()
                .chain(&["free", "cell", "free"])
                .copied()
                .collect::<Vec<_>>()
        );
        match &rest.entries[7] {
            SparseEntry::Free { first, last, .. } => {
                assert_eq!(first.to_string(), "fd00:1::b");
                assert_eq!(last.to_string(), "fd00:1::ffff:0:0");
            }
            e => panic!("{e:?}"),
        }
        match &rest.entries[9] {
            SparseEntry::Free { count, .. } => assert_eq!(count, "~1.8e19"),
            e => panic!("{e:?}"),
        }
        assert!(
            matches!(&rest.entries[8], SparseEntry::Cell(c) if matches!(&c.state, CellState::Allocated { host, .. } if host == "h2"))
        );
        assert_eq!(rest.next, None);
        assert!(
            st.map_page(&p, 0, 256).is_err(),
            "a /64 is not paged densely"
        );
    }

    #[test]
    fn a_foreign_device_and_a_duplicate_have_their_own_cells() {
        let mut st = State::default();
        st.apply(&Command {
            at_ms: 0,
            op: Op::SetClusterVersion { version: 2 },
        })
        .expect("cluster version 2");
        let p = pool(&mut st, "10.9.0.0/24", None);
        let at = |st: &mut State, op: Op| {
            st.apply(&Command { at_ms: 1_000, op }).expect("applies");
        };
        at(
            &mut st,
            Op::Allocate {
                pool: p.clone(),
                addr: Some("10.9.0.1".parse().unwrap()),
                owner: Owner::new("h1", "web"),
                order: Order::PoolDefault,
            },
        );
        let mac: crate::Mac = "02:00:00:00:00:09".parse().unwrap();
        for a in ["10.9.0.1", "10.9.0.5"] {
            at(
                &mut st,
                Op::ReportConflict {
                    pool: p.clone(),
                    addr: a.parse().unwrap(),
                    mac,
                    host: "h2".into(),
                    how: crate::Detection::Probe,
                },
            );
        }
        let page = st.map_page(&p, 0, 256).expect("page");
        assert_eq!(
            page.cells[1].state,
            CellState::Duplicate {
                host: "h1".into(),
                endpoint: "web".into(),
                seq: match &page.cells[1].state {
                    CellState::Duplicate { seq, .. } => *seq,
                    other => panic!("{other:?}"),
                },
                mac: "02:00:00:00:00:09".into(),
                seen_by: "h2".into(),
            }
        );
        assert_eq!(
            page.cells[5].state,
            CellState::Foreign {
                mac: "02:00:00:00:00:09".into(),
                seen_by: "h2".into(),
                how: "probe".into(),
                until_ms: 1_000 + crate::conflict::DEFAULT_PROBATION_MS,
            }
        );
        assert_eq!(page.cells[6].state, CellState::Free);
        let json = serde_json::to_value(&page.cells[5]).expect("json");
        assert_eq!(json["state"], "foreign", "{json}");
        assert_eq!(json["mac"], "02:00:00:00:00:09", "{json}");
    }
}
