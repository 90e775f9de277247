//! The pool's counters as snapshots, and publishing them as metrics.

use super::PoolInner;
use crate::stats::{self, ClassStats, PoolStats};

impl PoolInner {
    /// A snapshot of the pool's counters.
    pub(crate) fn stats(&self) -> PoolStats {
        let mut s = stats::total(
            self.class_stats().into_iter(),
            &self.counters,
            self.checks.corruption_counts(),
            self.max_bytes(),
        );
        s.waiting = self.depot.room.len();
        s
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
}
