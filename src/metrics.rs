//! Prometheus-style metrics through the `metrics` facade.
//!
//! The library records through the facade only; the application chooses the
//! exporter (see the `prometheus` module, feature `prometheus`, for a ready one).
//!
//! # How values get to the recorder
//!
//! The hot path never touches the recorder for counters or gauges. The pool
//! keeps its own cheap atomic counters (the ones behind
//! [`BufferPool::stats`](crate::BufferPool::stats)), and one background
//! publisher thread per process (`pagepool-ticker`, whatever the number of
//! pools) copies each pool's into metric handles registered once, when the
//! pool was built, every publish interval of that pool
//! ([`DEFAULT_PUBLISH_INTERVAL`], 250 ms, at most [`MAX_PUBLISH_INTERVAL`], 1 s;
//! [`PoolBuilder::metrics_publish_interval`](crate::PoolBuilder::metrics_publish_interval)).
//! So **once a pool has been idle for one publish interval, every scraped
//! counter and gauge equals [`PoolStats`](crate::PoolStats) exactly**.
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
//! the recorder first. The one exception is the site series: a site's are
//! registered when it enters the pool's top sites, with the recorder
//! current on the thread that publishes, the publisher thread's global one
//! (or the scope around a `publish_metrics` call).
//!
//! The wait histogram is recorded by the waiting thread when its wait
//! ends, for every wait (waits are the slow path). Peaks: the reserved one
//! is exact; the in-use one is sampled at each publish, each `stats()` and
//! each slab mapping, so a burst shorter than the publish interval that
//! maps no slab can be missed.
//!
//! # Bounded cardinality
//!
//! `pagepool_site_bytes` and `pagepool_site_buffers` have a series for
//! each of the pool's top [`site_metrics`](crate::PoolBuilder::site_metrics)
//! sites by outstanding bytes at the last publish (default
//! [`DEFAULT_SITE_METRICS`]), and `site="other"` for the rest (and for
//! untracked buffers). A site that leaves the top is set to 0 once and
//! never updated again: an exporter that expires idle gauges drops it (the
//! `prometheus` module's builder does, after five minutes), so at most
//! `site_metrics + 1` series are non-zero and the scraped label set does
//! not grow with the number of distinct sites over the run. A pool that
//! shut down updates nothing any more: with such an exporter its gauges go
//! the same way, and its counters keep their final values. The `site`
//! label is `file:line:column` for Rust callers, `file:line (function)`
//! or a return address for C ones.
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
//! | `pagepool_bytes_limit` | gauge | pool | `max_bytes` (absent when built unlimited; `+Inf` once a cap is lifted by `set_max_bytes(None)`) |
//! | `pagepool_slabs` | gauge | pool | mapped slabs |
//! | `pagepool_trimmed_bytes_total` | counter | pool | bytes given back by trim |
//! | `pagepool_decayed_bytes_total` | counter | pool | bytes given back by decay (slabs idle for the decay period) |
//! | `pagepool_discarded_bytes_total` | counter | pool | bytes of free slots whose pages trim or decay gave back (`madvise(MADV_DONTNEED)`) while their slabs stayed mapped; they stay in `pagepool_bytes_reserved` |
//! | `pagepool_rejected_total` | counter | pool | requests refused as bad input (zero size, too large) |
//! | `pagepool_unguarded_slots` | gauge | pool | slots served without a guard page (budget spent) |
//! | `pagepool_corruptions_total` | counter | pool, kind | memory corruptions found, by kind: `slack_canary`, `edge_canary`, `poison` |
//! | `pagepool_leak_suspects` | gauge | pool | outstanding buffers older than the leak age threshold (refreshed by each publish) |
//! | `pagepool_waiting` | gauge | pool | tasks and threads waiting for room now (async and `_timeout` waits) |
//! | `pagepool_quotas` | gauge | pool | live quotas |
//! | `pagepool_quota_bytes` | gauge | pool | slot bytes held through quotas, all quotas |
//! | `pagepool_quota_refusals_total` | counter | pool | allocations refused by a quota's own cap (`QuotaExceeded`) |
//! | `pagepool_allocation_duration_seconds` | histogram | pool | sampled allocate latency |
//! | `pagepool_request_size_bytes` | histogram | pool | sampled requested `max_size` |
//! | `pagepool_buffer_hold_seconds` | histogram | pool | sampled time from allocate to release |
//! | `pagepool_waits_total` | counter | pool, outcome | finished waits for room by outcome: `granted`, `timed_out` (a `_timeout` form gave up), `cancelled` (an async wait dropped), `failed` (closed, or the OS refused) |
//! | `pagepool_wait_duration_seconds` | histogram | pool | how long each finished wait waited, whatever its outcome |
//! | `pagepool_bytes_in_use_peak` | gauge | pool | high-water mark of `pagepool_bytes_in_use` since start or `reset_peaks` (sampled, see above) |
//! | `pagepool_bytes_reserved_peak` | gauge | pool | high-water mark of `pagepool_bytes_reserved` since start or `reset_peaks` (exact) |
//! | `pagepool_site_bytes` | gauge | pool, site | slot bytes of outstanding buffers by allocation site, top sites and `other` (see below) |
//! | `pagepool_site_buffers` | gauge | pool, site | outstanding buffers by allocation site, top sites and `other` |
//!
//! **Two pools with the same name share every series** (their publishes
//! overwrite each other's gauges and counters): give each pool its own name.
//! pagepool logs a `tracing` warning when a pool is built while another live
//! pool already has its name.

pub use crate::config::{
    DEFAULT_PUBLISH_INTERVAL, DEFAULT_SAMPLE_EVERY, DEFAULT_SITE_METRICS, MAX_PUBLISH_INTERVAL,
    MAX_SITE_METRICS,
};
pub use crate::observe::metrics::{
    duration_buckets, histogram_buckets, hold_buckets, size_buckets, wait_buckets, ALL,
    ALLOCATIONS_TOTAL, ALLOCATION_DURATION_SECONDS, BUFFERS_IN_USE, BUFFER_HOLD_SECONDS,
    BYTES_CACHED, BYTES_IN_USE, BYTES_IN_USE_PEAK, BYTES_LIMIT, BYTES_RESERVED,
    BYTES_RESERVED_PEAK, CORRUPTIONS_TOTAL, DECAYED_BYTES_TOTAL, LEAK_SUSPECTS, QUOTAS,
    QUOTA_BYTES, QUOTA_REFUSALS_TOTAL, REJECTED_TOTAL, RELEASES_TOTAL, REQUEST_SIZE_BYTES,
    SITE_BUFFERS, SITE_BYTES, SLABS, TRIMMED_BYTES_TOTAL, UNGUARDED_SLOTS, WAITING, WAITS_TOTAL,
    WAIT_DURATION_SECONDS,
};
