//! A cheap monotonic clock: nanoseconds since the first call in this process.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process's pagepool epoch, plus one, so that 0 can
/// mean "never" in a field.
#[inline]
pub(crate) fn now_nanos() -> u64 {
    epoch().elapsed().as_nanos() as u64 + 1
}

/// Time since a value of [`now_nanos`].
#[inline]
pub(crate) fn since(stamp: u64) -> Duration {
    Duration::from_nanos(now_nanos().saturating_sub(stamp))
}
