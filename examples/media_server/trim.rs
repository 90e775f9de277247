//! The idle trim (`--idle-trim SECS`): once the pools have been quiet (no
//! buffer allocated or released) for that long, their free slabs go back
//! to the OS, so a server idle after a burst does not keep the burst's
//! memory mapped. Once per quiet spell; a scrape of `/metrics` is no
//! activity (it takes no pooled buffer).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::State;

/// Allocations plus releases of every pool: changes whenever a buffer moves.
fn activity(state: &State) -> u64 {
    state
        .pools()
        .iter()
        .map(|p| {
            let s = p.stats();
            s.allocations + s.releases
        })
        .sum()
}

/// Trims the pools after each spell of `quiet` without activity; runs
/// until its task is aborted.
pub async fn run(state: Arc<State>, quiet: Duration) {
    metrics::describe_counter!(
        "media_server_idle_trim_bytes_total",
        metrics::Unit::Bytes,
        "Bytes the idle trim gave back to the OS (free slabs of quiet pools)."
    );
    let trimmed_bytes = metrics::counter!("media_server_idle_trim_bytes_total");
    let mut every = tokio::time::interval(
        (quiet / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)),
    );
    every.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut seen = activity(&state);
    let mut quiet_since = Instant::now();
    let mut done = false;
    loop {
        every.tick().await;
        let now = activity(&state);
        if now != seen {
            (seen, quiet_since, done) = (now, Instant::now(), false);
            continue;
        }
        if done || quiet_since.elapsed() < quiet {
            continue;
        }
        done = true;
        // On this worker, so its own cached slots go back first (`trim`
        // flushes the calling thread's cache); the unmapping may take a few
        // milliseconds, so the worker hands its other tasks on meanwhile.
        let freed: usize =
            tokio::task::block_in_place(|| state.pools().iter().map(|p| p.trim()).sum());
        seen = activity(&state);
        if freed > 0 {
            trimmed_bytes.increment(freed as u64);
            tracing::info!(
                "idle for {quiet:?}: gave {} KiB of free slabs back to the OS",
                freed >> 10
            );
        }
    }
}
