//! The pool's counters as snapshots, publishing them as metrics, and the
//! publisher's periodic tick.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::PoolInner;
use crate::observe::publisher::{self, Periodic};
use crate::stats::{self, ClassStats, PoolStats};

impl PoolInner {
    /// A snapshot of the pool's counters.
    pub(crate) fn stats(&self) -> PoolStats {
        self.stats_of(&self.class_stats())
    }

    /// The pool's snapshot over `classes`, its classes' snapshots just taken.
    fn stats_of(&self, classes: &[ClassStats]) -> PoolStats {
        publisher::ensure_running();
        let mut s = stats::total(
            classes.iter().copied(),
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

    /// Raises the in-use high-water mark to the bytes in use now.
    pub(crate) fn sample_peak_in_use(&self) {
        let in_use: usize = self
            .class_stats()
            .iter()
            .map(|c| c.buffers_in_use * c.slot_bytes)
            .sum();
        self.counters.peak_in_use.fetch_max(in_use, Relaxed);
    }

    /// Restarts both high-water marks from the values now.
    pub(crate) fn reset_peaks(&self) {
        {
            // Under the slab lock, where `reserved` changes.
            let _slabs = self.slabs.lock();
            let reserved = self.counters.reserved.load(Relaxed);
            self.counters.peak_reserved.store(reserved, Relaxed);
        }
        self.counters.peak_in_use.store(0, Relaxed);
        self.sample_peak_in_use();
    }

    /// Publishes the counters to the metric handles, if any.
    pub(crate) fn publish_metrics(&self) {
        if let Some(m) = &self.metrics {
            let sites = self.scan_for_publish();
            let classes = self.class_stats();
            let stats = self.stats_of(&classes);
            m.publish(&stats, &classes, self.checks.corruption_counts());
            let (top, rest) = match sites {
                Some(totals) => totals.top(m.sites.top()),
                None => (Vec::new(), (stats.bytes_in_use, stats.buffers_in_use)),
            };
            m.sites.publish(top, rest);
        }
    }
}

impl PoolInner {
    /// The pool's periodic work, once per publish interval on the process's
    /// publisher thread: the one place where every periodic duty is called.
    pub(crate) fn tick(&self, now: Instant) {
        // An abandoned pool whose last buffer's release missed the last
        // handle's drop (a benign race) shuts down here.
        if self.depot.is_abandoned() {
            self.shutdown_if_idle();
            return;
        }
        self.publish_metrics();
        self.decay_idle(now);
    }
}

impl Periodic for PoolInner {
    fn tick(&self, now: Instant) -> bool {
        PoolInner::tick(self, now);
        true
    }
}
