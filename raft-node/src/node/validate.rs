//! What a node checks of a client's write before it proposes it: every write proposed is
//! stored in every voter's log (and kept until a snapshot covers it) even if the allocator
//! refuses it when applied, so a write too large, or carrying what no state may keep, is
//! refused here, on the node that receives it, before it costs the cluster anything.
//!
//! The allocator still checks everything again when it applies (this is a first gate, not
//! the rules): a write refused here would have been refused there, or is one no caller needs.

use allocator_core::conflict::MAX_PROBATION_MS;
use allocator_core::{AllocError, Op, MAX_NAME_LEN, MAX_RESTORE_CHUNK};

use crate::api::{ApiError, Role, WriteRequest};
use crate::transport::codec::MAX_FRAME;

/// Largest write (encoded) a host may send: a report of the most leaks it may list, with
/// room to spare.
pub(crate) const MAX_HOST_WRITE: usize = 1 << 20;

/// Largest write (encoded) anyone may send: a piece of a backup being restored.
pub(crate) const MAX_WRITE: usize = MAX_RESTORE_CHUNK + (64 << 10);

/// Most entries in one Raft append: a batch of the largest writes stays within half a frame.
pub(crate) const MAX_PAYLOAD_ENTRIES: u64 = (MAX_FRAME / 2 / MAX_WRITE) as u64;

// A batch of the largest writes fits a frame, and batches are not uselessly small.
const _: () = assert!(MAX_PAYLOAD_ENTRIES >= 16);
const _: () = assert!(MAX_PAYLOAD_ENTRIES as usize * MAX_WRITE <= MAX_FRAME / 2);

/// Longest release string a host may report in its heartbeat.
pub(crate) const MAX_VERSION_LEN: usize = 128;

/// Largest conflict report (encoded): a pool id, an address, a MAC and a host name of at
/// most [`MAX_NAME_LEN`] bytes fit with room to spare. A host's agent sends these as it
/// probes and watches; they stay small.
pub(crate) const MAX_CONFLICT_WRITE: usize = 8 << 10;

fn invalid(why: String) -> ApiError {
    ApiError::Alloc(AllocError::Invalid(why))
}

/// Refuses `req` from a caller of `role` (`None`: unnamed, without TLS) before it is
/// proposed: too large for the role, or carrying a field no state may keep.
pub(crate) fn check_write(req: &WriteRequest, role: Option<Role>) -> Result<(), ApiError> {
    let (cap, whose) = match role {
        Some(Role::Host) => (MAX_HOST_WRITE, "a host's write"),
        _ => (MAX_WRITE, "a write"),
    };
    let size = postcard::experimental::serialized_size(req)
        .map_err(|e| invalid(format!("the write cannot be encoded: {e}")))?;
    if size > cap {
        return Err(invalid(format!(
            "{} is {size} bytes; {whose} may be at most {cap} bytes",
            req.op.name()
        )));
    }
    // Everything the operation alone shows to be refused: names, addresses outside their
    // pool, a range outside its subnet, a MAC no device has, reports out of bounds.
    req.op.check_shape().map_err(ApiError::Alloc)?;
    match &req.op {
        Op::ReportConflict { mac, host, .. } => {
            if size > MAX_CONFLICT_WRITE {
                return Err(invalid(format!(
                    "a conflict report is {size} bytes; it may be at most {MAX_CONFLICT_WRITE} bytes"
                )));
            }
            if !mac.is_unicast() {
                return Err(invalid(format!(
                    "MAC {mac} cannot be the address of the device that answered (all zeros, multicast or broadcast)"
                )));
            }
            if host.is_empty() || host.len() > MAX_NAME_LEN {
                return Err(invalid(format!(
                    "a conflict report's host name must be 1 to {MAX_NAME_LEN} bytes (got {})",
                    host.len()
                )));
            }
        }
        Op::RecordMac { mac, .. } if !mac.is_unicast() => {
            return Err(invalid(format!(
                "MAC {mac} cannot be a container's own (all zeros, multicast or broadcast)"
            )));
        }
        Op::ReportLanChecks { checks, .. } => {
            if size > MAX_CONFLICT_WRITE * 8 {
                return Err(invalid(format!(
                    "a LAN-check report is {size} bytes; it may be at most {} bytes",
                    MAX_CONFLICT_WRITE * 8
                )));
            }
            if checks.len() > allocator_core::conflict::MAX_LAN_CHECKS {
                return Err(invalid(format!(
                    "a LAN-check report lists {} subnets; at most {} are kept",
                    checks.len(),
                    allocator_core::conflict::MAX_LAN_CHECKS
                )));
            }
            for c in checks {
                c.validate()
                    .map_err(|e| invalid(format!("LAN checks: {e}")))?;
            }
        }
        Op::SetProbation { probation_ms, .. } if *probation_ms > MAX_PROBATION_MS => {
            return Err(invalid(format!(
                "a probation of {probation_ms} ms is longer than the {MAX_PROBATION_MS} ms (30 days) allowed"
            )));
        }
        _ => {}
    }
    if let Op::Heartbeat { version, .. } = &req.op {
        if version.len() > MAX_VERSION_LEN || version.chars().any(char::is_control) {
            return Err(invalid(format!(
                "a heartbeat's version must be at most {MAX_VERSION_LEN} bytes without control characters (got {} bytes)",
                version.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RequestId;

    fn req(op: Op) -> WriteRequest {
        WriteRequest {
            id: RequestId {
                client: 1,
                serial: 1,
            },
            acked_below: 0,
            op,
        }
    }

    fn heartbeat(version: String) -> WriteRequest {
        req(Op::Heartbeat {
            host: "h".into(),
            version,
        })
    }

    #[test]
    fn a_host_may_not_send_a_write_of_a_mebibyte_that_an_operator_may() {
        let big = heartbeat("x".repeat(100)); // fine
        assert!(check_write(&big, Some(Role::Host)).is_ok());
        let chunk = req(Op::RestoreChunk {
            restore: 1,
            offset: 0,
            total: 2 << 20,
            bytes: vec![0; 2 << 20],
        });
        let e = check_write(&chunk, Some(Role::Host)).expect_err("too large for a host");
        assert!(
            e.to_string().contains("a host's write may be at most"),
            "{e}"
        );
        assert!(check_write(&chunk, Some(Role::Admin)).is_ok());
        assert!(check_write(&chunk, None).is_ok());
        let huge = req(Op::RestoreChunk {
            restore: 1,
            offset: 0,
            total: 8 << 20,
            bytes: vec![0; MAX_WRITE],
        });
        assert!(check_write(&huge, Some(Role::Admin)).is_err());
    }

    #[test]
    fn a_conflict_report_is_small_names_a_device_s_mac_and_a_host() {
        let report = |mac: [u8; 6], host: String, space: &str| {
            req(Op::ReportConflict {
                pool: allocator_core::PoolId::new(space, "10.0.0.0/24".parse().expect("net"), None),
                addr: "10.0.0.5".parse().expect("ip"),
                mac: allocator_core::Mac(mac),
                host,
                how: allocator_core::Detection::Watch,
            })
        };
        let dev = [2, 0, 0, 0, 0, 1];
        assert!(check_write(&report(dev, "h1".into(), "global"), Some(Role::Host)).is_ok());
        let longest = report(dev, "h".repeat(MAX_NAME_LEN), &"s".repeat(MAX_NAME_LEN));
        assert!(
            check_write(&longest, Some(Role::Host)).is_ok(),
            "the longest names fit"
        );
        for (bad, why) in [
            (report([0; 6], "h1".into(), "global"), "MAC"),
            (report([0xff; 6], "h1".into(), "global"), "MAC"),
            (report(dev, String::new(), "global"), "host name"),
            (
                report(dev, "h".repeat(MAX_NAME_LEN + 1), "global"),
                "host name",
            ),
            (
                report(dev, "h1".into(), &"s".repeat(9000)),
                "at most 8192 bytes",
            ),
        ] {
            let e = check_write(&bad, Some(Role::Host)).expect_err(why);
            assert!(e.to_string().contains(why), "{e}");
        }
        let probation = |probation_ms| {
            req(Op::SetProbation {
                pool: "global/10.0.0.0/24".parse().expect("pool"),
                probation_ms,
            })
        };
        assert!(check_write(&probation(MAX_PROBATION_MS), Some(Role::Admin)).is_ok());
        assert!(check_write(&probation(MAX_PROBATION_MS + 1), Some(Role::Admin)).is_err());
    }

    #[test]
    fn what_the_operation_alone_shows_refused_is_refused_before_it_is_proposed() {
        let pool: allocator_core::PoolId = "global/10.0.0.0/24".parse().expect("pool");
        let alloc = |addr: Option<&str>, endpoint: String| {
            req(Op::Allocate {
                pool: pool.clone(),
                addr: addr.map(|a| a.parse().expect("ip")),
                owner: allocator_core::Owner::new("h1", endpoint),
                order: allocator_core::Order::Lowest,
            })
        };
        assert!(check_write(&alloc(Some("10.0.0.9"), "web".into()), Some(Role::Host)).is_ok());
        assert!(check_write(&alloc(None, "e".repeat(MAX_NAME_LEN)), Some(Role::Host)).is_ok());
        for (bad, why) in [
            (alloc(Some("10.0.1.9"), "web".into()), "outside"),
            (alloc(Some("fd00::9"), "web".into()), "outside"),
            (alloc(None, "e".repeat(MAX_NAME_LEN + 1)), "endpoint name"),
            (
                req(Op::RequestPool {
                    spec: allocator_core::PoolSpec::new("local")
                        .subnet("10.9.0.0/24".parse().expect("net"))
                        .range("10.9.1.0/28".parse().expect("range")),
                    holder: "h1".into(),
                }),
                "not inside subnet",
            ),
            (
                req(Op::RecordMac {
                    pool: pool.clone(),
                    addr: "10.0.0.9".parse().expect("ip"),
                    host: "h1".into(),
                    seq: 1,
                    mac: allocator_core::Mac([1, 0, 0x5e, 0, 0, 1]),
                }),
                "MAC",
            ),
            (
                req(Op::ReportLanChecks {
                    host: "h1".into(),
                    checks: vec![allocator_core::LanCheck {
                        subnet: "10.0.0.0/24".parse().expect("net"),
                        interface: "eth0\n".into(),
                        off: None,
                    }],
                }),
                "control characters",
            ),
        ] {
            let e = check_write(&bad, Some(Role::Host)).expect_err(why);
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn a_heartbeat_carries_a_short_printable_version() {
        assert!(check_write(&heartbeat("0.2.0".into()), Some(Role::Host)).is_ok());
        assert!(check_write(&heartbeat("v".repeat(129)), Some(Role::Host)).is_err());
        assert!(check_write(&heartbeat("0.2\u{1b}[2J".into()), None).is_err());
    }
}
