//! Abandoning: the last handle's drop, and the shutdown that unmaps every
//! slab once no buffer is out.

use std::sync::atomic::Ordering::{AcqRel, Relaxed};
use std::time::Duration;

use super::PoolInner;
use crate::observe::metrics;
use crate::observe::sink::{self, Report, ReportKind};

impl PoolInner {
    /// A handle was cloned.
    pub(crate) fn handle_cloned(&self) {
        self.handles.fetch_add(1, Relaxed);
    }

    /// A handle was dropped; the last one abandons the pool.
    pub(crate) fn handle_dropped(&self) {
        if self.handles.fetch_sub(1, AcqRel) == 1 {
            self.abandon();
        }
    }

    /// The last handle is gone: no allocation can follow (the pool is
    /// closed, if `close` did not close it already), and every release
    /// takes the detour that checks for the last buffer. Buffers still out
    /// are probably leaked: they are logged, and the last release unmaps
    /// the slabs.
    #[cold]
    fn abandon(&self) {
        // Before the detour is counted: a release that takes it sees this.
        self.depot.abandon();
        self.close_to_new_buffers();
        if self.stats().buffers_in_use == 0 {
            self.shutdown_if_idle();
            return;
        }
        let report = self.leak_report(Duration::ZERO, |_| true);
        if !report.is_empty() {
            tracing::warn!(
                target: "pagepool",
                pool = %self.name(),
                buffers = report.buffers(),
                bytes = report.bytes(),
                "the last handle of the pool was dropped with buffers still out:\n{report}"
            );
            if sink::installed() {
                let text = format!(
                    "pagepool: the last handle of pool {:?} was dropped with buffers still out:\n{report}",
                    self.name()
                );
                sink::emit(&Report {
                    kind: ReportKind::Leak,
                    text: &text,
                    address: 0,
                });
            }
        }
    }

    /// After the last handle (the pool is abandoned): once no buffer is out, unmap everything and
    /// retire the metrics. (Threads that used the pool keep its small header
    /// alive through their anchors until they exit or use another pool; the
    /// memory goes back now.)
    #[cold]
    pub(crate) fn shutdown_if_idle(&self) {
        if self.shut.load(Relaxed) {
            return;
        }
        // Exactly as many releases as allocations; a count that looks like
        // more releases than allocations is a stale read: not idle.
        let (allocated, released) = self
            .class_stats()
            .iter()
            .fold((0, 0), |(a, r), c| (a + c.allocations, r + c.releases));
        if allocated == released {
            self.shutdown();
        }
    }

    /// Unmaps every slab and publishes the final, empty state (once).
    #[cold]
    pub(super) fn shutdown(&self) {
        if self.shut.swap(true, AcqRel) {
            return;
        }
        if let Some(publisher) = self.publisher.get() {
            publisher.cancel();
        }
        // Give quarantined slots their access back (and `mprotect` guards
        // their memory-area budget) before the slabs are unmapped.
        for (slot, sealed) in self.quarantine.drain() {
            // SAFETY: quarantined slots belong to our still-mapped slabs.
            unsafe { self.unseal(slot, sealed) };
        }
        if let Some(m) = &self.metrics {
            // Every buffer is back (shutdown runs only then), and the slabs
            // are about to be unmapped: publish that final state.
            let mut last = self.stats();
            last.bytes_reserved = 0;
            last.bytes_cached = 0;
            last.buffers_cached = 0;
            last.buffers_quarantined = 0;
            last.slabs = 0;
            last.leak_suspects = 0;
            m.publish(&last, &self.class_stats(), self.checks.corruption_counts());
            m.sites.clear();
            metrics::forget_name(&self.config.name);
        }
        // No buffer is out and none can be made: every slot is free (on a
        // free list, in a thread cache, or sealed). Forget the shared lists'
        // pointers and unmap; thread caches only ever push their stale
        // pointers back to these lists, never dereference them.
        for class in self.depot.classes() {
            drop(class.free.drain());
        }
        let mut slabs = self.slabs.lock();
        // Scans still reading slot metadata finish first.
        let _unmapping = self.mapped.write();
        // SAFETY: no buffer is out and none can be made (see above).
        unsafe { slabs.clear() };
        // Under the slab lock, as every change of `reserved`.
        self.counters.reserved.store(0, Relaxed);
        self.counters.unguarded.store(0, Relaxed);
    }
}
