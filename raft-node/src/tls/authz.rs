//! Who may do what: the policy every node applies to every call, before it runs it or
//! forwards it.
//!
//! - `admin`: everything.
//! - `host NAME`: reads (but not a backup of the whole state), and the writes a Docker host
//!   makes for itself — pools and reservations held by NAME, addresses owned by NAME,
//!   releases of NAME's own addresses (never forced), NAME's heartbeats and reports. Kubernetes'
//!   NodeRestriction, for addresses: a host can only touch its own.
//! - `node NAME`: what `host NAME` may (a voter is usually a Docker host running its own
//!   plugin), plus Raft traffic and forwarding (checked where the connection is accepted).
//!
//! The refusal names the identity, what it asked for and what it may do instead.

use allocator_core::Op;

use crate::api::{AdminCommand, ApiError, Identity, Query, Role};

const HOST_MAY: &str = "a host certificate may request and release pools, reserve, allocate, \
                        release (not forced), heartbeat, report and report address conflicts \
                        only as its own host, and read";

fn forbidden(id: &Identity, what: String) -> ApiError {
    ApiError::Forbidden(format!(
        "{id} may not {what}; {HOST_MAY}; use an admin certificate for the rest"
    ))
}

/// The host name a write acts for, and what it does, or `None` for an operator-only write.
fn acts_as(op: &Op) -> Option<(&str, &'static str)> {
    match op {
        Op::RequestPool { holder, .. } => Some((holder, "request a pool")),
        Op::ReleasePool { holder, .. } => Some((holder, "release a pool")),
        Op::Reserve { holder, .. } => Some((holder, "reserve an address")),
        Op::Allocate { owner, .. } => Some((&owner.host, "allocate an address")),
        Op::Release {
            host, force: false, ..
        } => Some((host, "release an address")),
        Op::ReleaseIfUnchanged { host, .. } => Some((host, "release an address")),
        Op::Heartbeat { host, .. } => Some((host, "send a heartbeat")),
        Op::Report { host, .. } => Some((host, "report")),
        Op::ReportConflict { host, .. } => Some((host, "report an address conflict")),
        Op::RecordMac { host, .. } => Some((host, "record a container's MAC")),
        Op::ReportLanChecks { host, .. } => Some((host, "report its LAN checks")),
        Op::Release { force: true, .. }
        | Op::DeletePool { .. }
        | Op::Restore { .. }
        | Op::RestoreChunk { .. }
        | Op::ForgetHost { .. }
        | Op::RevokeSerial { .. }
        | Op::Revoke { .. }
        | Op::AddJoinToken { .. }
        | Op::RevokeJoinToken { .. } => None,
        // An operation this table does not name: operators only, until it is named here.
        _ => None,
    }
}

fn operator_only(op: &Op) -> &'static str {
    match op {
        Op::Release { .. } => "force the release of an address",
        Op::DeletePool { .. } => "delete a pool",
        Op::Restore { .. } | Op::RestoreChunk { .. } => "restore a backup",
        Op::ForgetHost { .. } => "forget a host",
        Op::Revoke { .. } | Op::RevokeSerial { .. } => "revoke a certificate",
        Op::AddJoinToken { .. } => "make a join token",
        Op::RevokeJoinToken { .. } => "revoke a join token",
        Op::AddJoinTokenUses { .. } | Op::AddJoinTokenFor { .. } => "make a join token",
        Op::SetQuotas { .. } => "set quotas",
        Op::UseJoinToken { .. } | Op::IssueJoinCert { .. } => "use a join token",
        Op::ClearConflict { .. } => "clear an address conflict",
        Op::SetProbation { .. } => "set a pool's probation",
        _ => "do that",
    }
}

/// May `id` apply `op`?
pub fn may_write(id: &Identity, op: &Op) -> Result<(), ApiError> {
    if id.role == Role::Admin {
        return Ok(());
    }
    match acts_as(op) {
        Some((host, _)) if host == id.name => Ok(()),
        Some((host, what)) => Err(forbidden(id, format!("{what} as host {host:?}"))),
        None => Err(forbidden(id, operator_only(op).to_string())),
    }
}

/// May `id` read `q`? Everyone may, but only an admin may take the whole state (a backup).
pub fn may_read(id: &Identity, q: &Query) -> Result<(), ApiError> {
    match (id.role, q) {
        (Role::Admin, _) => Ok(()),
        (_, Query::Snapshot) => Err(forbidden(id, "take a backup".into())),
        _ => Ok(()),
    }
}

/// May `id` change the membership? Only an admin.
pub fn may_admin(id: &Identity, cmd: &AdminCommand) -> Result<(), ApiError> {
    if id.role == Role::Admin {
        return Ok(());
    }
    let what = match cmd {
        AdminCommand::Init => "initialise the cluster",
        AdminCommand::AddNode { .. } => "add a node",
        AdminCommand::RemoveNode { .. } => "remove a node",
        AdminCommand::UpgradeCluster => "upgrade the cluster",
    };
    Err(forbidden(id, what.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_core::{Order, Owner, PoolId};

    fn id(role: Role, name: &str) -> Identity {
        Identity {
            role,
            name: name.into(),
        }
    }

    fn pool() -> PoolId {
        "global/10.0.0.0/24".parse().expect("pool id")
    }

    #[test]
    fn a_host_touches_only_its_own_addresses() {
        let h1 = id(Role::Host, "h1");
        let mine = Op::Allocate {
            pool: pool(),
            addr: None,
            owner: Owner::new("h1", "web"),
            order: Order::Lowest,
        };
        assert_eq!(may_write(&h1, &mine), Ok(()));
        let theirs = Op::Release {
            pool: pool(),
            addr: "10.0.0.5".parse().expect("ip"),
            host: "h2".into(),
            force: false,
        };
        let e = may_write(&h1, &theirs).expect_err("h2's address");
        assert!(
            e.to_string()
                .contains("host h1 may not release an address as host \"h2\""),
            "{e}"
        );
        let forced = Op::Release {
            pool: pool(),
            addr: "10.0.0.5".parse().expect("ip"),
            host: "h1".into(),
            force: true,
        };
        assert!(may_write(&h1, &forced).is_err(), "forcing is for operators");
        for op in [
            Op::ForgetHost { host: "h1".into() },
            Op::DeletePool {
                pool: pool(),
                force: false,
            },
            Op::Restore { snapshot: vec![] },
        ] {
            let e = may_write(&h1, &op).expect_err("operator only");
            assert!(e.to_string().contains("admin certificate"), "{e}");
        }
        let hb = Op::Heartbeat {
            host: "h1".into(),
            version: "x".into(),
        };
        assert_eq!(may_write(&h1, &hb), Ok(()));
        let other_hb = Op::Heartbeat {
            host: "h1 ".into(),
            version: "x".into(),
        };
        assert!(may_write(&h1, &other_hb).is_err(), "names compare exactly");
    }

    #[test]
    fn a_host_reports_address_conflicts_only_as_itself_and_only_an_admin_clears_them() {
        let h1 = id(Role::Host, "h1");
        let report = |host: &str| Op::ReportConflict {
            pool: pool(),
            addr: "10.0.0.5".parse().expect("ip"),
            mac: allocator_core::Mac([2, 0, 0, 0, 0, 1]),
            host: host.into(),
            how: allocator_core::Detection::Probe,
        };
        assert_eq!(may_write(&h1, &report("h1")), Ok(()));
        let e = may_write(&h1, &report("h2")).expect_err("as another host");
        assert!(
            e.to_string()
                .contains("may not report an address conflict as host \"h2\""),
            "{e}"
        );
        for (op, what) in [
            (
                Op::ClearConflict {
                    pool: pool(),
                    addr: "10.0.0.5".parse().expect("ip"),
                },
                "clear an address conflict",
            ),
            (
                Op::SetProbation {
                    pool: pool(),
                    probation_ms: 1,
                },
                "set a pool's probation",
            ),
        ] {
            let e = may_write(&h1, &op).expect_err("operator only");
            assert!(e.to_string().contains(what), "{e}");
            assert_eq!(may_write(&id(Role::Admin, "ops"), &op), Ok(()));
        }
        assert_eq!(may_read(&h1, &Query::Conflicts), Ok(()));
    }

    #[test]
    fn a_node_is_the_host_of_its_name_and_an_admin_does_anything() {
        let n = id(Role::Node, "h3");
        let admin = id(Role::Admin, "ops");
        let forget = Op::ForgetHost { host: "h3".into() };
        assert!(may_write(&n, &forget).is_err());
        assert_eq!(may_write(&admin, &forget), Ok(()));
        let hb = Op::Heartbeat {
            host: "h3".into(),
            version: "x".into(),
        };
        assert_eq!(may_write(&n, &hb), Ok(()));
        let add = AdminCommand::AddNode {
            id: 4,
            addr: "127.0.0.1:1".into(),
        };
        assert!(may_admin(&n, &add).is_err());
        assert!(may_admin(&id(Role::Host, "h1"), &add).is_err());
        assert_eq!(may_admin(&admin, &add), Ok(()));
        assert!(may_read(&id(Role::Host, "h1"), &Query::Snapshot).is_err());
        assert_eq!(may_read(&id(Role::Host, "h1"), &Query::Pools), Ok(()));
        assert_eq!(may_read(&admin, &Query::Snapshot), Ok(()));
    }
}
