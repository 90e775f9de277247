//! A cheap monotonic clock: nanoseconds since the first call in this process.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Once, OnceLock};
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

/// How often the coarse clock advances.
pub(crate) const COARSE_TICK: Duration = Duration::from_millis(5);

/// The coarse clock: `now_nanos()` as of the last tick.
static COARSE: AtomicU64 = AtomicU64::new(1);

/// Starts the coarse clock's ticker thread (once per process). Pools with
/// leak tracking call this at build.
pub(crate) fn start_coarse_clock() {
    static TICKER: Once = Once::new();
    TICKER.call_once(|| {
        COARSE.store(now_nanos(), Relaxed);
        let spawned = std::thread::Builder::new()
            .name("pagepool-clock".to_owned())
            .spawn(|| loop {
                std::thread::sleep(COARSE_TICK);
                COARSE.store(now_nanos(), Relaxed);
            });
        if let Err(e) = spawned {
            tracing::warn!(
                target: "pagepool",
                error = %e,
                "cannot start the coarse clock thread; leak ages will read as zero"
            );
        }
    });
}

/// The allocation clock: one relaxed load, accurate to [`COARSE_TICK`] (a
/// system call or even a vDSO clock read costs more than a whole pooled
/// allocation).
#[inline]
pub(crate) fn coarse_nanos() -> u64 {
    COARSE.load(Relaxed)
}
