//! Walking the slabs for leak reports and leak suspects.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::PoolInner;
use crate::clock;
use crate::config::LeakTracking;
use crate::mem::slot::{Slot, SlotFlags, SlotState};
use crate::observe::leak::{self, LeakReport, OutstandingBuffer};

impl PoolInner {
    /// Describes the in-use slots that `keep` accepts, in address order.
    pub(crate) fn outstanding(&self, keep: impl Fn(&Slot) -> bool) -> Vec<OutstandingBuffer> {
        let now = clock::coarse_nanos();
        let slabs = self.slabs.lock();
        let mut out = Vec::new();
        for (class, slab) in slabs.iter() {
            let slot_len = self.classes.slot_bytes(class);
            for s in slab.slots() {
                if s.state.load() != SlotState::InUse || !keep(s) {
                    continue;
                }
                let backtrace = s
                    .flags
                    .load()
                    .contains(SlotFlags::HAS_BACKTRACE)
                    .then(|| {
                        let addr = s.data().as_ptr() as usize;
                        self.backtraces.lock().get(&addr).map(|bt| bt.to_string())
                    })
                    .flatten();
                out.push(leak::describe(s, slot_len, now, backtrace));
            }
        }
        out.sort_by_key(|b| b.address);
        out
    }

    /// The outstanding buffers that `keep` accepts, at least `min_age` old,
    /// grouped by allocation site.
    pub(crate) fn leak_report(
        &self,
        min_age: Duration,
        keep: impl Fn(&Slot) -> bool,
    ) -> LeakReport {
        LeakReport::new(self.name(), min_age, self.outstanding(keep))
    }

    /// Recounts the leak suspects (a walk of the slot metadata) and stores
    /// the count in the counters.
    pub(crate) fn refresh_leak_suspects(&self) -> usize {
        let n = if self.config.tracking == LeakTracking::Off {
            0
        } else {
            let threshold = self.config.leak_age.as_nanos().min(u64::MAX as u128) as u64;
            let now = clock::coarse_nanos();
            let slabs = self.slabs.lock();
            slabs
                .iter()
                .flat_map(|(_, slab)| slab.slots())
                .filter(|s| leak::is_suspect(s, now, threshold))
                .count()
        };
        self.counters.leak_suspects.store(n, Relaxed);
        n
    }
}
