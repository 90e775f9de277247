//! Prometheus-style metrics through the `metrics` facade.
//!
//! The library records through the facade only; the application chooses the
//! exporter (see the `prometheus` module, feature `prometheus`, for a ready one).
//!
//! # How values get to the recorder
//!
//! The hot path never touches the recorder for counters or gauges. The pool
//! keeps its own cheap atomic counters (the ones behind
//! [`BufferPool::stats`](crate::BufferPool::stats)), and a background
//! publisher thread per pool copies them into metric handles registered once,
//! when the pool was built, every publish interval
//! ([`DEFAULT_PUBLISH_INTERVAL`], 250 ms, at most [`MAX_PUBLISH_INTERVAL`], 1 s;
//! [`PoolBuilder::metrics_publish_interval`](crate::PoolBuilder::metrics_publish_interval)).
//! So **once a pool has been idle for one publish interval, every scraped
//! counter and gauge equals [`PoolStats`] exactly**.
//! [`BufferPool::publish_metrics`](crate::BufferPool::publish_metrics)
//! publishes at once.
//!
//! Histograms are recorded by the allocating and releasing threads, but only
//! for one allocation in
//! [`PoolBuilder::metrics_sample_every`](crate::PoolBuilder::metrics_sample_every)
//! (default [`DEFAULT_SAMPLE_EVERY`]), chosen by a per-thread countdown and
//! recorded out of line, since exporters such as metrics-exporter-prometheus
//! buffer every sample until the next scrape.
//!
//! Handles are registered with the recorder that is current when the pool is
//! built (the global one, or a `metrics::with_local_recorder` scope): install
//! the recorder first.
//!
//! # The metrics
//!
//! Labels: `pool` is the builder's [`name`](crate::PoolBuilder::name);
//! `class` is the slot size in bytes. Names are as scraped from
//! metrics-exporter-prometheus with recommended naming.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `pagepool_allocations_total` | counter | pool, class, outcome | allocate calls by outcome: `hit` (a free slot), `miss` (a new slab), `exhausted` (the cap), `error` (the OS refused) |
//! | `pagepool_releases_total` | counter | pool, class | buffers returned |
//! | `pagepool_buffers_in_use` | gauge | pool, class | outstanding buffers |
//! | `pagepool_bytes_in_use` | gauge | pool | slot bytes pinned by outstanding buffers |
//! | `pagepool_bytes_cached` | gauge | pool | free slot bytes ready for reuse |
//! | `pagepool_bytes_reserved` | gauge | pool | mapped bytes, guard pages included |
//! | `pagepool_bytes_limit` | gauge | pool | `max_bytes` (absent when unlimited) |
//! | `pagepool_slabs` | gauge | pool | mapped slabs |
//! | `pagepool_trimmed_bytes_total` | counter | pool | bytes given back by trim |
//! | `pagepool_rejected_total` | counter | pool | requests refused as bad input (zero size, too large) |
//! | `pagepool_unguarded_slots` | gauge | pool | slots served without a guard page (budget spent) |
//! | `pagepool_corruptions_total` | counter | pool, kind | memory corruptions found, by kind: `slack_canary`, `edge_canary`, `poison` |
//! | `pagepool_leak_suspects` | gauge | pool | outstanding buffers older than the leak age threshold (refreshed by each publish) |
//! | `pagepool_allocation_duration_seconds` | histogram | pool | sampled allocate latency |
//! | `pagepool_request_size_bytes` | histogram | pool | sampled requested `max_size` |
//! | `pagepool_buffer_hold_seconds` | histogram | pool | sampled time from allocate to release |
//!
//! **Two pools with the same name share every series** (their publishers
//! overwrite each other's gauges and counters): give each pool its own name.
//! pagepool logs a `tracing` warning when a pool is built while another live
//! pool already has its name.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::thread;
use std::time::Duration;

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};
use parking_lot::{Condvar, Mutex};

use crate::debug::CorruptionKind;
use crate::pool::PoolInner;
use crate::stats::{ClassStats, PoolStats};

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
/// `pagepool_rejected_total{pool}`.
pub const REJECTED_TOTAL: &str = "pagepool_rejected_total";
/// `pagepool_unguarded_slots{pool}`.
pub const UNGUARDED_SLOTS: &str = "pagepool_unguarded_slots";
/// `pagepool_corruptions_total{pool, kind}`.
pub const CORRUPTIONS_TOTAL: &str = "pagepool_corruptions_total";
/// `pagepool_leak_suspects{pool}`.
pub const LEAK_SUSPECTS: &str = "pagepool_leak_suspects";
/// `pagepool_allocation_duration_seconds{pool}` (histogram).
pub const ALLOCATION_DURATION_SECONDS: &str = "pagepool_allocation_duration_seconds";
/// `pagepool_request_size_bytes{pool}` (histogram).
pub const REQUEST_SIZE_BYTES: &str = "pagepool_request_size_bytes";
/// `pagepool_buffer_hold_seconds{pool}` (histogram).
pub const BUFFER_HOLD_SECONDS: &str = "pagepool_buffer_hold_seconds";

/// Every metric name pagepool registers, as scraped.
pub const ALL: [&str; 16] = [
    ALLOCATIONS_TOTAL,
    RELEASES_TOTAL,
    BUFFERS_IN_USE,
    BYTES_IN_USE,
    BYTES_CACHED,
    BYTES_RESERVED,
    BYTES_LIMIT,
    SLABS,
    TRIMMED_BYTES_TOTAL,
    REJECTED_TOTAL,
    UNGUARDED_SLOTS,
    CORRUPTIONS_TOTAL,
    LEAK_SUSPECTS,
    ALLOCATION_DURATION_SECONDS,
    REQUEST_SIZE_BYTES,
    BUFFER_HOLD_SECONDS,
];

/// The default publish interval.
pub const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_millis(250);
/// The longest publish interval a pool accepts.
pub const MAX_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// By default one allocation in this many records the histograms. A sample
/// costs three clock reads and three histogram records, about 200 ns on a
/// VM: one in 256 keeps that near 1 ns per allocation while a pool busy
/// enough for the cost to matter (100,000 calls a second) still records
/// about 400 samples a second.
pub const DEFAULT_SAMPLE_EVERY: u32 = 256;

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
    rejected: Counter,
    unguarded: Gauge,
    corruptions: [Counter; 3],
    leak_suspects: Gauge,
    pub(crate) allocation_duration: Histogram,
    pub(crate) request_size: Histogram,
    pub(crate) hold: Histogram,
}

impl PoolMetrics {
    /// Describes the metrics and registers one pool's handles with the
    /// current recorder.
    pub(crate) fn register(
        pool: &str,
        slot_sizes: impl Iterator<Item = usize>,
        limit: Option<usize>,
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
            rejected: counter!(REJECTED_TOTAL, "pool" => p.clone()),
            unguarded: gauge!(UNGUARDED_SLOTS, "pool" => p.clone()),
            corruptions: CorruptionKind::ALL
                .map(|k| counter!(CORRUPTIONS_TOTAL, "pool" => p.clone(), "kind" => k.as_str())),
            leak_suspects: gauge!(LEAK_SUSPECTS, "pool" => p.clone()),
            allocation_duration: histogram!(ALLOCATION_DURATION_SECONDS, "pool" => p.clone()),
            request_size: histogram!(REQUEST_SIZE_BYTES, "pool" => p.clone()),
            hold: histogram!(BUFFER_HOLD_SECONDS, "pool" => p),
        };
        if let (Some(g), Some(limit)) = (&metrics.bytes_limit, limit) {
            g.set(limit as f64);
        }
        metrics
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
        if let (Some(g), Some(limit)) = (&self.bytes_limit, pool.bytes_limit) {
            g.set(limit as f64);
        }
        self.slabs.set(pool.slabs as f64);
        self.trimmed.absolute(pool.trimmed_bytes);
        self.rejected.absolute(pool.rejected);
        self.unguarded.set(pool.unguarded_slots as f64);
        for (c, n) in self.corruptions.iter().zip(corruptions) {
            c.absolute(n);
        }
        self.leak_suspects.set(pool.leak_suspects as f64);
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

/// Shared between a pool and its publisher thread.
#[derive(Debug, Default)]
struct Signal {
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The background thread that publishes one pool's counters.
#[derive(Debug)]
pub(crate) struct Publisher {
    signal: Arc<Signal>,
}

impl Publisher {
    /// Starts publishing `pool` every `interval`, until the pool is gone or
    /// [`Publisher::stop`] is called.
    pub(crate) fn start(pool: Weak<PoolInner>, name: &str, interval: Duration) -> Publisher {
        let signal = Arc::new(Signal::default());
        let theirs = Arc::clone(&signal);
        let spawned = thread::Builder::new()
            .name(format!("pagepool-metrics-{name}"))
            .spawn(move || loop {
                {
                    let mut stop = theirs.stop.lock();
                    if !*stop {
                        theirs.wake.wait_for(&mut stop, interval);
                    }
                    if *stop {
                        return;
                    }
                }
                match pool.upgrade() {
                    // A closed pool whose last buffer's release missed the
                    // close (a benign race) shuts down here.
                    Some(pool) if pool.is_closed() => pool.shutdown_if_idle(),
                    Some(pool) => pool.publish_metrics(),
                    None => return,
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(
                target: "pagepool",
                error = %e,
                "could not start the metrics publisher thread; call BufferPool::publish_metrics yourself"
            );
        }
        Publisher { signal }
    }

    /// Asks the thread to stop at once.
    pub(crate) fn stop(&self) {
        *self.signal.stop.lock() = true;
        self.signal.wake.notify_all();
    }
}
