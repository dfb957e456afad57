//! The wall clock, read in one place.

use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock in ms since the Unix epoch: what a proposing node stamps into a command,
/// and what heartbeat and report ages are measured against.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
