//! Linearizable reads in batches: one ReadIndex round for every read that arrived before the
//! round began — on the leader, and on a follower, which asks the leader for the round.
//!
//! A ReadIndex round (openraft's `ensure_linearizable(ReadPolicy::ReadIndex)`) confirms with a
//! quorum that this node is still the leader and waits until the state machine has applied
//! the commit index it saw at the start; that index is the round's *read index*. Every read
//! that *arrived before that start* may be answered from any state machine that has applied
//! the read index: no write acknowledged before the read arrived can be missing from it. A
//! read that arrives while a round is in flight must not join it (the round's index may
//! predate a write acknowledged just before the read): it waits for the next round, which
//! starts the moment the current one ends. So under load one round — one heartbeat to each
//! follower — serves hundreds of reads, instead of one round per read.
//!
//! A follower serves reads the same way ([`ReadBatcher`] with a round that is one `read_index`
//! call to the leader, which joins the leader's own batch): the reads queued on the follower
//! share one call, then each waits until the follower has applied the index and reads its
//! own state. The leader then spends one small call per batch of a follower's reads, instead
//! of answering each read itself.

use std::future::Future;
use std::sync::{Arc, Mutex};

use openraft::ReadPolicy;
use tokio::sync::oneshot;

use crate::types::Raft;

/// The outcome of a round, shared by its reads: the read index (a log index the answering
/// state machine must have applied), or why there is none.
pub(crate) type RoundResult = Result<u64, RoundError>;

/// Why a round failed: the leadership could not be confirmed (the caller finds the leader),
/// the leader could not be asked (a follower's round), or Raft stopped.
#[derive(Clone, Debug)]
pub(crate) enum RoundError {
    NotLeader,
    Unreachable(String),
    Fatal(String),
}

#[derive(Default)]
struct Queue {
    /// A driver task is running rounds.
    running: bool,
    /// Reads waiting for the next round.
    waiting: Vec<oneshot::Sender<RoundResult>>,
}

/// Batches linearizable reads into rounds (see the module documentation).
#[derive(Default)]
pub(crate) struct ReadBatcher {
    queue: Arc<Mutex<Queue>>,
}

impl ReadBatcher {
    /// Waits for a round that began after this call; its read index, once applied locally,
    /// makes local reads linearizable. `round` runs one round; when no driver is running, this
    /// call starts one with it (otherwise `round` is dropped unused). A driver stops after a
    /// failed round, so the next read starts a new one with its own `round` (a follower's
    /// names the leader it sees then).
    pub(crate) async fn linearize<F, Fut>(&self, round: F) -> RoundResult
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = RoundResult> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.waiting.push(tx);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            tokio::spawn(drive(self.queue.clone(), round));
        }
        // The driver answers every read it takes; a dropped sender means it was cancelled
        // with its runtime.
        rx.await
            .unwrap_or_else(|_| Err(RoundError::Fatal("the read batcher stopped".into())))
    }
}

/// A leader's round: confirm the leadership with a quorum, wait for the apply; the read index.
pub(crate) async fn leader_round(raft: Raft) -> RoundResult {
    match raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
        Ok(read) => Ok(read.index()),
        Err(openraft::errors::RaftError::Fatal(f)) => Err(RoundError::Fatal(f.to_string())),
        Err(openraft::errors::RaftError::APIError(_)) => Err(RoundError::NotLeader),
    }
}

/// Runs rounds while reads wait: each round takes the reads queued before it starts.
async fn drive<F, Fut>(queue: Arc<Mutex<Queue>>, round: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = RoundResult>,
{
    loop {
        let batch = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.waiting.is_empty() {
                q.running = false;
                return;
            }
            std::mem::take(&mut q.waiting)
        };
        let r = round().await;
        let failed = r.is_err();
        for tx in batch {
            let _ = tx.send(r.clone());
        }
        if failed {
            // The driver stops; the reads queued meanwhile are sent back to find the leader
            // again, and the next read starts a driver with its own round.
            let waiting = {
                let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                q.running = false;
                std::mem::take(&mut q.waiting)
            };
            for tx in waiting {
                let _ = tx.send(Err(RoundError::NotLeader));
            }
            return;
        }
    }
}
