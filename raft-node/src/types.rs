//! The openraft type configuration: what a log entry carries and what applying it returns.
//!
//! An entry is one allocator [`Command`] plus the [`RequestId`] of the client call that
//! proposed it, so that a retried call is recognised by the state machine and answered with
//! the outcome of the first attempt instead of being applied twice.

use std::fmt;

use allocator_core::Command;
use serde::{Deserialize, Serialize};

use crate::api::RequestId;

/// The application data of a Raft entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Who proposed it.
    pub id: RequestId,
    /// Every serial of this client below this one has been answered: the state machine may
    /// forget their outcomes.
    pub acked_below: u64,
    /// The command, stamped with the proposing node's clock.
    pub cmd: Command,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.id, self.cmd.op)
    }
}

/// What applying an entry returned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A blank or membership entry.
    #[default]
    None,
    /// The allocator's answer (the first one, for a retried request).
    Done(crate::transport::wire::WireResult),
    /// The request's serial is below what its client already acknowledged: a very late
    /// duplicate whose outcome was forgotten. The command was not applied again.
    Stale,
}

openraft::declare_raft_types!(
    /// raftipam's openraft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        Node = openraft::BasicNode,
);

/// The Raft instance of a raftipam node.
pub type Raft = openraft::Raft<TypeConfig, crate::replication::store::StateMachineStore>;
