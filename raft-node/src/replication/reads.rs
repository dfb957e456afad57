//! Linearizable reads in batches: one ReadIndex round for every read that arrived before the
//! round began.
//!
//! A ReadIndex round (openraft's `ensure_linearizable(ReadPolicy::ReadIndex)`) confirms with a
//! quorum that this node is still the leader and waits until the state machine has applied
//! the commit index it saw at the start. Every read that *arrived before that start* may be
//! answered from the local state afterwards: no write acknowledged before the read arrived can
//! be missing from it. A read that arrives while a round is in flight must not join it (the
//! round's index may predate a write acknowledged just before the read): it waits for the next
//! round, which starts the moment the current one ends. So under load one round — one
//! heartbeat to each follower — serves hundreds of reads, instead of one round per read.

use std::sync::{Arc, Mutex};

use openraft::ReadPolicy;
use tokio::sync::oneshot;

use super::types::Raft;

/// The outcome of a round, shared by its reads.
pub(crate) type RoundResult = Result<(), RoundError>;

/// Why a round failed: the leadership could not be confirmed (the caller finds the leader),
/// or Raft stopped.
#[derive(Clone, Debug)]
pub(crate) enum RoundError {
    NotLeader,
    Fatal(String),
}

#[derive(Default)]
struct Queue {
    /// A driver task is running rounds.
    running: bool,
    /// Reads waiting for the next round.
    waiting: Vec<oneshot::Sender<RoundResult>>,
}

/// Batches linearizable reads into ReadIndex rounds (see the module documentation).
#[derive(Default)]
pub(crate) struct ReadBatcher {
    queue: Arc<Mutex<Queue>>,
}

impl ReadBatcher {
    /// Waits until a ReadIndex round that began after this call confirms the leadership and
    /// the state machine has caught up with it; then local reads are linearizable.
    pub(crate) async fn linearize(&self, raft: &Raft) -> RoundResult {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.waiting.push(tx);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            tokio::spawn(drive(self.queue.clone(), raft.clone()));
        }
        // The driver answers every read it takes; a dropped sender means it was cancelled
        // with its runtime.
        rx.await
            .unwrap_or_else(|_| Err(RoundError::Fatal("the read batcher stopped".into())))
    }
}

/// Runs rounds while reads wait: each round takes the reads queued before it starts.
async fn drive(queue: Arc<Mutex<Queue>>, raft: Raft) {
    loop {
        let batch = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.waiting.is_empty() {
                q.running = false;
                return;
            }
            std::mem::take(&mut q.waiting)
        };
        let r = match raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
            Err(openraft::errors::RaftError::Fatal(f)) => Err(RoundError::Fatal(f.to_string())),
            Err(openraft::errors::RaftError::APIError(_)) => Err(RoundError::NotLeader),
        };
        for tx in batch {
            let _ = tx.send(r.clone());
        }
    }
}
