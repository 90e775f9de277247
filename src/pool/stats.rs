//! The pool's counters as snapshots, and publishing them as metrics.

use std::sync::Arc;

use super::PoolInner;
use crate::free::cache;
use crate::stats::{self, ClassStats, PoolStats};

impl PoolInner {
    /// A snapshot of the pool's counters.
    pub(crate) fn stats(&self) -> PoolStats {
        stats::total(
            self.class_stats().into_iter(),
            &self.counters,
            self.checks.corruption_counts(),
            self.config.max_bytes,
        )
    }

    /// Every class's snapshot: the shared counters plus every thread's.
    pub(crate) fn class_stats(&self) -> Vec<ClassStats> {
        self.depot.class_stats(&self.classes)
    }

    /// Publishes the counters to the metric handles, if any.
    pub(crate) fn publish_metrics(&self) {
        if let Some(m) = &self.metrics {
            self.refresh_leak_suspects();
            m.publish(
                &self.stats(),
                &self.class_stats(),
                self.checks.corruption_counts(),
            );
        }
    }

    /// Asks every thread to return its cached slots at its next call, and
    /// returns the calling thread's now.
    pub(crate) fn ask_caches_to_flush(self: &Arc<Self>) {
        if self.depot.has_caches() {
            self.depot.request_flush();
            cache::flush_current(self);
        }
    }
}
