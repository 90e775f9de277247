//! The metric handles of one pool, into which the publisher's ticks copy
//! its counters (see the public `metrics` module for the list).

use std::collections::HashMap;
use std::sync::OnceLock;

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};

use super::sites::SiteGauges;
use crate::limits::page_size;
use crate::stats::{ClassStats, CorruptionKind, PoolStats, WaitOutcome};
use crate::sync::Mutex;

/// `pagepool_allocations_total{pool, class, outcome}`.
pub const ALLOCATIONS_TOTAL: &str = "pagepool_allocations_total";
/// `pagepool_releases_total{pool, class}`.
pub const RELEASES_TOTAL: &str = "pagepool_releases_total";
/// `pagepool_buffers_in_use{pool, class}`.
pub const BUFFERS_IN_USE: &str = "pagepool_buffers_in_use";
/// `pagepool_bytes_in_use{pool}`.
pub const BYTES_IN_USE: &str = "pagepool_bytes_in_use";
/// `pagepool_bytes_cached{pool}`.
pub const BYTES_CACHED: &str = "pagepool_bytes_cached";
/// `pagepool_bytes_reserved{pool}`.
pub const BYTES_RESERVED: &str = "pagepool_bytes_reserved";
/// `pagepool_bytes_limit{pool}`; only for pools with `max_bytes`.
pub const BYTES_LIMIT: &str = "pagepool_bytes_limit";
/// `pagepool_slabs{pool}`.
pub const SLABS: &str = "pagepool_slabs";
/// `pagepool_trimmed_bytes_total{pool}`.
pub const TRIMMED_BYTES_TOTAL: &str = "pagepool_trimmed_bytes_total";
/// `pagepool_decayed_bytes_total{pool}`.
pub const DECAYED_BYTES_TOTAL: &str = "pagepool_decayed_bytes_total";
/// `pagepool_discarded_bytes_total{pool}`.
pub const DISCARDED_BYTES_TOTAL: &str = "pagepool_discarded_bytes_total";
/// `pagepool_rejected_total{pool}`.
pub const REJECTED_TOTAL: &str = "pagepool_rejected_total";
/// `pagepool_unguarded_slots{pool}`.
pub const UNGUARDED_SLOTS: &str = "pagepool_unguarded_slots";
/// `pagepool_corruptions_total{pool, kind}`.
pub const CORRUPTIONS_TOTAL: &str = "pagepool_corruptions_total";
/// `pagepool_leak_suspects{pool}`.
pub const LEAK_SUSPECTS: &str = "pagepool_leak_suspects";
/// `pagepool_waiting{pool}`.
pub const WAITING: &str = "pagepool_waiting";
/// `pagepool_quotas{pool}`.
pub const QUOTAS: &str = "pagepool_quotas";
/// `pagepool_quota_bytes{pool}`.
pub const QUOTA_BYTES: &str = "pagepool_quota_bytes";
/// `pagepool_quota_refusals_total{pool}`.
pub const QUOTA_REFUSALS_TOTAL: &str = "pagepool_quota_refusals_total";
/// `pagepool_allocation_duration_seconds{pool}` (histogram).
pub const ALLOCATION_DURATION_SECONDS: &str = "pagepool_allocation_duration_seconds";
/// `pagepool_request_size_bytes{pool}` (histogram).
pub const REQUEST_SIZE_BYTES: &str = "pagepool_request_size_bytes";
/// `pagepool_buffer_hold_seconds{pool}` (histogram).
pub const BUFFER_HOLD_SECONDS: &str = "pagepool_buffer_hold_seconds";

/// `pagepool_waits_total{pool, outcome}`.
pub const WAITS_TOTAL: &str = "pagepool_waits_total";
/// `pagepool_wait_duration_seconds{pool}` (histogram).
pub const WAIT_DURATION_SECONDS: &str = "pagepool_wait_duration_seconds";
/// `pagepool_bytes_in_use_peak{pool}`.
pub const BYTES_IN_USE_PEAK: &str = "pagepool_bytes_in_use_peak";
/// `pagepool_bytes_reserved_peak{pool}`.
pub const BYTES_RESERVED_PEAK: &str = "pagepool_bytes_reserved_peak";
pub use super::sites::{SITE_BUFFERS, SITE_BYTES};

/// Every metric name pagepool registers, as scraped.
pub const ALL: [&str; 28] = [
    ALLOCATIONS_TOTAL,
    RELEASES_TOTAL,
    BUFFERS_IN_USE,
    BYTES_IN_USE,
    BYTES_CACHED,
    BYTES_RESERVED,
    BYTES_LIMIT,
    SLABS,
    TRIMMED_BYTES_TOTAL,
    DECAYED_BYTES_TOTAL,
    DISCARDED_BYTES_TOTAL,
    REJECTED_TOTAL,
    UNGUARDED_SLOTS,
    CORRUPTIONS_TOTAL,
    LEAK_SUSPECTS,
    WAITING,
    QUOTAS,
    QUOTA_BYTES,
    QUOTA_REFUSALS_TOTAL,
    ALLOCATION_DURATION_SECONDS,
    REQUEST_SIZE_BYTES,
    BUFFER_HOLD_SECONDS,
    WAITS_TOTAL,
    WAIT_DURATION_SECONDS,
    BYTES_IN_USE_PEAK,
    BYTES_RESERVED_PEAK,
    SITE_BYTES,
    SITE_BUFFERS,
];

/// Describes every metric to the current recorder. The exporter appends a
/// unit suffix to names that lack it, so gauges whose fixed names do not end
/// in their unit (`pagepool_bytes_in_use`, ...) carry the unit in their help
/// text instead of as metadata.
fn describe() {
    describe_counter!(
        ALLOCATIONS_TOTAL,
        Unit::Count,
        "Allocate calls by size class and outcome (hit: a free slot; miss: mapped a new slab; exhausted: the byte cap; error: the OS refused)."
    );
    describe_counter!(
        RELEASES_TOTAL,
        Unit::Count,
        "Buffers returned to the pool, by size class."
    );
    describe_gauge!(
        BUFFERS_IN_USE,
        Unit::Count,
        "Outstanding buffers, by size class."
    );
    describe_gauge!(
        BYTES_IN_USE,
        "Slot bytes pinned by outstanding buffers (unit: bytes)."
    );
    describe_gauge!(
        BYTES_CACHED,
        "Free slot bytes ready for reuse without a system call (unit: bytes)."
    );
    describe_gauge!(
        BYTES_RESERVED,
        "Bytes mapped by the pool, guard pages included (unit: bytes)."
    );
    describe_gauge!(
        BYTES_LIMIT,
        "The pool's cap on reserved bytes, max_bytes (unit: bytes)."
    );
    describe_gauge!(SLABS, Unit::Count, "Mapped slabs.");
    describe_counter!(
        TRIMMED_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes given back to the OS by trimming idle slabs."
    );
    describe_counter!(
        DECAYED_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes given back to the OS by decay (slabs idle for the decay period)."
    );
    describe_counter!(
        DISCARDED_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes of free slots whose pages trim or decay gave back to the OS while their slabs stayed mapped."
    );
    describe_counter!(
        REJECTED_TOTAL,
        Unit::Count,
        "Requests refused as bad input (zero size or larger than the largest class)."
    );
    describe_gauge!(
        UNGUARDED_SLOTS,
        Unit::Count,
        "Slots served without a guard page because the guard budget was spent."
    );
    describe_counter!(
        CORRUPTIONS_TOTAL,
        Unit::Count,
        "Memory corruptions detected, by kind (slack_canary: write past max_len; edge_canary: write outside an unguarded slot; poison: write after release)."
    );
    describe_gauge!(
        LEAK_SUSPECTS,
        Unit::Count,
        "Outstanding buffers older than the pool's leak age threshold."
    );
    describe_gauge!(
        WAITING,
        Unit::Count,
        "Tasks and threads waiting for room under the pool's cap now."
    );
    describe_gauge!(QUOTAS, Unit::Count, "Live quotas of the pool.");
    describe_gauge!(
        QUOTA_BYTES,
        "Slot bytes held by buffers allocated through quotas, all quotas (unit: bytes)."
    );
    describe_counter!(
        QUOTA_REFUSALS_TOTAL,
        Unit::Count,
        "Allocations refused because a quota's own cap was reached, all quotas."
    );
    describe_histogram!(
        ALLOCATION_DURATION_SECONDS,
        Unit::Seconds,
        "Latency of sampled allocate calls."
    );
    describe_histogram!(
        REQUEST_SIZE_BYTES,
        Unit::Bytes,
        "Requested max_size of sampled allocate calls."
    );
    describe_histogram!(
        BUFFER_HOLD_SECONDS,
        Unit::Seconds,
        "Time from allocate to release of sampled buffers."
    );
    describe_counter!(
        WAITS_TOTAL,
        Unit::Count,
        "Finished waits for room under the cap, by outcome (granted, timed_out, cancelled, failed)."
    );
    describe_histogram!(
        WAIT_DURATION_SECONDS,
        Unit::Seconds,
        "Time each finished wait for room spent waiting, whatever its outcome."
    );
    describe_gauge!(
        BYTES_IN_USE_PEAK,
        "The most bytes_in_use seen since start or reset_peaks, as sampled by each publish and slab mapping (unit: bytes)."
    );
    describe_gauge!(
        BYTES_RESERVED_PEAK,
        "The most bytes_reserved since start or reset_peaks (unit: bytes)."
    );
    describe_gauge!(
        SITE_BYTES,
        "Slot bytes held by outstanding buffers allocated at this site, for the top sites; site=\"other\" is the rest (unit: bytes)."
    );
    describe_gauge!(
        SITE_BUFFERS,
        Unit::Count,
        "Outstanding buffers allocated at this site, for the top sites; site=\"other\" is the rest."
    );
}

/// The handles of one size class.
#[derive(Debug)]
struct ClassHandles {
    hit: Counter,
    miss: Counter,
    exhausted: Counter,
    error: Counter,
    releases: Counter,
    in_use: Gauge,
}

/// Bucket bounds for `pagepool_allocation_duration_seconds`: 1, 2.5 and 5 per
/// decade from 100 ns to 1 s.
pub fn duration_buckets() -> Vec<f64> {
    decades(1e-7, 1.0)
}

/// Bucket bounds for `pagepool_buffer_hold_seconds`: 1, 2.5 and 5 per decade
/// from 10 µs to 100 s (buffers are held far longer than they take to get).
pub fn hold_buckets() -> Vec<f64> {
    decades(1e-5, 100.0)
}

/// Bucket bounds for `pagepool_request_size_bytes`: every power of two from
/// one page to `max_buffer_size` (rounded up to a power of two).
pub fn size_buckets(max_buffer_size: usize) -> Vec<f64> {
    let top = max_buffer_size.max(page_size()).next_power_of_two();
    std::iter::successors(Some(page_size()), |&b| (b < top).then_some(b * 2))
        .map(|b| b as f64)
        .collect()
}

/// `start`, 2.5 `start`, 5 `start`, 10 `start`, ... up to `end` inclusive.
fn decades(start: f64, end: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut base = start;
    while base <= end * (1.0 + 1e-9) {
        for m in [1.0, 2.5, 5.0] {
            let b = base * m;
            if b <= end * (1.0 + 1e-9) {
                out.push(b);
            }
        }
        base *= 10.0;
    }
    out
}

/// Bucket bounds for `pagepool_wait_duration_seconds`: 1, 2.5 and 5 per
/// decade from 10 µs to 100 s.
///
/// ```
/// let b = pagepool::metrics::wait_buckets();
/// assert!(b.contains(&1.0));
/// ```
pub fn wait_buckets() -> Vec<f64> {
    decades(1e-5, 100.0)
}

/// Every histogram pagepool records, with the bucket bounds that fit it
/// ([`duration_buckets`], [`hold_buckets`], [`wait_buckets`], and [`size_buckets`] up to
/// `max_buffer_size`): what an exporter needs to be configured with, by
/// full metric name. The `prometheus` module's builder is this list applied.
///
/// ```
/// let buckets = pagepool::metrics::histogram_buckets(pagepool::DEFAULT_MAX_BUFFER_SIZE);
/// assert_eq!(buckets.len(), 4);
/// assert!(buckets.iter().any(|(name, _)| *name == pagepool::metrics::BUFFER_HOLD_SECONDS));
/// ```
pub fn histogram_buckets(max_buffer_size: usize) -> [(&'static str, Vec<f64>); 4] {
    [
        (ALLOCATION_DURATION_SECONDS, duration_buckets()),
        (BUFFER_HOLD_SECONDS, hold_buckets()),
        (WAIT_DURATION_SECONDS, wait_buckets()),
        (REQUEST_SIZE_BYTES, size_buckets(max_buffer_size)),
    ]
}

/// Every handle of one pool, registered once at build.
#[derive(Debug)]
pub(crate) struct PoolMetrics {
    classes: Box<[ClassHandles]>,
    bytes_in_use: Gauge,
    bytes_cached: Gauge,
    bytes_reserved: Gauge,
    bytes_limit: Option<Gauge>,
    slabs: Gauge,
    trimmed: Counter,
    decayed: Counter,
    discarded: Counter,
    rejected: Counter,
    unguarded: Gauge,
    corruptions: [Counter; 3],
    leak_suspects: Gauge,
    waiting: Gauge,
    quotas: Gauge,
    quota_bytes: Gauge,
    quota_refusals: Counter,
    allocation_duration: Histogram,
    request_size: Histogram,
    hold: Histogram,
    waits: [Counter; 4],
    wait_duration: Histogram,
    bytes_in_use_peak: Gauge,
    bytes_reserved_peak: Gauge,
    /// The top sites' gauges.
    pub(crate) sites: SiteGauges,
}

impl PoolMetrics {
    /// Describes the metrics and registers one pool's handles with the
    /// current recorder.
    pub(crate) fn register(
        pool: &str,
        slot_sizes: impl Iterator<Item = usize>,
        limit: Option<usize>,
        top_sites: usize,
    ) -> PoolMetrics {
        describe();
        warn_on_shared_name(pool);
        let p = pool.to_owned();
        let classes = slot_sizes
            .map(|size| {
                let class = size.to_string();
                let outcome = |o: &'static str| {
                    counter!(ALLOCATIONS_TOTAL, "pool" => p.clone(), "class" => class.clone(), "outcome" => o)
                };
                ClassHandles {
                    hit: outcome("hit"),
                    miss: outcome("miss"),
                    exhausted: outcome("exhausted"),
                    error: outcome("error"),
                    releases: counter!(RELEASES_TOTAL, "pool" => p.clone(), "class" => class.clone()),
                    in_use: gauge!(BUFFERS_IN_USE, "pool" => p.clone(), "class" => class),
                }
            })
            .collect();
        let metrics = PoolMetrics {
            classes,
            bytes_in_use: gauge!(BYTES_IN_USE, "pool" => p.clone()),
            bytes_cached: gauge!(BYTES_CACHED, "pool" => p.clone()),
            bytes_reserved: gauge!(BYTES_RESERVED, "pool" => p.clone()),
            bytes_limit: limit.map(|_| gauge!(BYTES_LIMIT, "pool" => p.clone())),
            slabs: gauge!(SLABS, "pool" => p.clone()),
            trimmed: counter!(TRIMMED_BYTES_TOTAL, "pool" => p.clone()),
            decayed: counter!(DECAYED_BYTES_TOTAL, "pool" => p.clone()),
            discarded: counter!(DISCARDED_BYTES_TOTAL, "pool" => p.clone()),
            rejected: counter!(REJECTED_TOTAL, "pool" => p.clone()),
            unguarded: gauge!(UNGUARDED_SLOTS, "pool" => p.clone()),
            corruptions: CorruptionKind::ALL
                .map(|k| counter!(CORRUPTIONS_TOTAL, "pool" => p.clone(), "kind" => k.as_str())),
            leak_suspects: gauge!(LEAK_SUSPECTS, "pool" => p.clone()),
            waiting: gauge!(WAITING, "pool" => p.clone()),
            quotas: gauge!(QUOTAS, "pool" => p.clone()),
            quota_bytes: gauge!(QUOTA_BYTES, "pool" => p.clone()),
            quota_refusals: counter!(QUOTA_REFUSALS_TOTAL, "pool" => p.clone()),
            allocation_duration: histogram!(ALLOCATION_DURATION_SECONDS, "pool" => p.clone()),
            request_size: histogram!(REQUEST_SIZE_BYTES, "pool" => p.clone()),
            hold: histogram!(BUFFER_HOLD_SECONDS, "pool" => p.clone()),
            waits: WaitOutcome::ALL
                .map(|o| counter!(WAITS_TOTAL, "pool" => p.clone(), "outcome" => o.as_str())),
            wait_duration: histogram!(WAIT_DURATION_SECONDS, "pool" => p.clone()),
            bytes_in_use_peak: gauge!(BYTES_IN_USE_PEAK, "pool" => p.clone()),
            bytes_reserved_peak: gauge!(BYTES_RESERVED_PEAK, "pool" => p),
            sites: SiteGauges::register(pool, top_sites),
        };
        if let (Some(g), Some(limit)) = (&metrics.bytes_limit, limit) {
            g.set(limit as f64);
        }
        metrics
    }

    /// Records a sampled allocation: how long it took, and its size. Never
    /// unwinds: a recorder that panics loses the sample, not the buffer
    /// (this runs while a slot is half handed out).
    pub(crate) fn record_allocation(&self, seconds: f64, max_size: usize) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.allocation_duration.record(seconds);
            self.request_size.record(max_size as f64);
        }));
    }

    /// Records a sampled buffer's hold time. Never unwinds: it runs inside
    /// a buffer's drop, before its slot is back.
    pub(crate) fn record_hold(&self, seconds: f64) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.hold.record(seconds);
        }));
    }

    /// Records a finished wait's duration. Never unwinds (a recorder that
    /// panics loses the sample, not the wait's outcome).
    pub(crate) fn record_wait(&self, seconds: f64) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.wait_duration.record(seconds);
        }));
    }

    /// Copies a snapshot into the handles.
    pub(crate) fn publish(&self, pool: &PoolStats, classes: &[ClassStats], corruptions: [u64; 3]) {
        for (h, c) in self.classes.iter().zip(classes) {
            h.hit.absolute(c.hits);
            h.miss.absolute(c.misses);
            h.exhausted.absolute(c.exhausted);
            h.error.absolute(c.os_errors);
            h.releases.absolute(c.releases);
            h.in_use.set(c.buffers_in_use as f64);
        }
        self.bytes_in_use.set(pool.bytes_in_use as f64);
        self.bytes_cached.set(pool.bytes_cached as f64);
        self.bytes_reserved.set(pool.bytes_reserved as f64);
        if let Some(g) = &self.bytes_limit {
            // A cap lifted at run time: unlimited.
            g.set(pool.bytes_limit.map_or(f64::INFINITY, |l| l as f64));
        }
        self.slabs.set(pool.slabs as f64);
        self.trimmed.absolute(pool.trimmed_bytes);
        self.decayed.absolute(pool.decayed_bytes);
        self.discarded.absolute(pool.discarded_bytes);
        self.rejected.absolute(pool.rejected);
        self.unguarded.set(pool.unguarded_slots as f64);
        for (c, n) in self.corruptions.iter().zip(corruptions) {
            c.absolute(n);
        }
        self.leak_suspects.set(pool.leak_suspects as f64);
        self.waiting.set(pool.waiting as f64);
        self.quotas.set(pool.quotas as f64);
        self.quota_bytes.set(pool.bytes_in_quotas as f64);
        self.quota_refusals.absolute(pool.quota_refusals);
        let w = &pool.waits;
        for (c, n) in self
            .waits
            .iter()
            .zip([w.granted, w.timed_out, w.cancelled, w.failed])
        {
            c.absolute(n);
        }
        self.bytes_in_use_peak.set(pool.peak_bytes_in_use as f64);
        self.bytes_reserved_peak
            .set(pool.peak_bytes_reserved as f64);
    }
}

/// Live pools by name, to warn when two share one.
fn live_names() -> &'static Mutex<HashMap<String, usize>> {
    static NAMES: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

fn warn_on_shared_name(pool: &str) {
    let mut names = live_names().lock();
    let n = names.entry(pool.to_owned()).or_insert(0);
    *n += 1;
    if *n == 2 {
        tracing::warn!(
            target: "pagepool",
            pool,
            "two live pools share this name: their metrics merge into one series; give each pool its own name"
        );
    }
}

/// Takes the live-name registry for a `fork` (see [`crate::forklock`]).
pub(crate) fn fork_hold_names() {
    crate::forklock::hold(live_names());
}

/// Lets go what [`fork_hold_names`] took.
///
/// # Safety
///
/// As [`crate::forklock::release`]'s: this thread took it with
/// `fork_hold_names`, and in the child no other thread runs yet.
pub(crate) unsafe fn fork_release_names(child: bool) {
    // SAFETY: the caller's contract is `release`'s.
    unsafe { crate::forklock::release(live_names(), child) }
}

/// Forgets one live pool of this name.
pub(crate) fn forget_name(pool: &str) {
    let mut names = live_names().lock();
    if let Some(n) = names.get_mut(pool) {
        *n -= 1;
        if *n == 0 {
            names.remove(pool);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_span_what_the_docs_say() {
        let d = duration_buckets();
        assert!((d[0] - 1e-7).abs() < 1e-15);
        assert!((d[d.len() - 1] - 1.0).abs() < 1e-9);
        assert!(d.windows(2).all(|w| w[0] < w[1]));
        let s = size_buckets(16 << 20);
        assert_eq!(s[0], page_size() as f64);
        assert_eq!(s[s.len() - 1], (16 << 20) as f64);
        let h = hold_buckets();
        assert!(h.len() > 15 && (h[h.len() - 1] - 100.0).abs() < 1e-6);
    }
}
