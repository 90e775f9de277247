//! Walking the slabs for leak reports and leak suspects.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::PoolInner;
use crate::class::ClassIdx;
use crate::clock;
use crate::config::LeakTracking;
use crate::mem::slot::{Slot, SlotFlags, SlotState};
use crate::observe::leak::{self, LeakReport, OutstandingBuffer};
use crate::observe::sites::SiteTotals;

impl PoolInner {
    /// Calls `f` with every slot of every slab mapped now, holding the slab
    /// lock only to list the slabs: allocations that map a slab go on
    /// meanwhile (a trim waits for the scan).
    fn scan_slots(&self, mut f: impl FnMut(ClassIdx, &Slot)) {
        let (spans, _mapped) = {
            let slabs = self.slabs.lock();
            // Taken under the slab lock, where only unmapping takes it
            // exclusively: never waits.
            let mapped = self.mapped.read();
            (slabs.spans(), mapped)
        };
        for (class, first, len) in spans {
            // SAFETY: `first..first + len` is the slot metadata of a slab
            // that was mapped when `spans` was listed, and `_mapped` keeps it
            // mapped (unmapping takes `mapped` exclusively); the fields are
            // atomics, read as any reader may.
            let slots = unsafe { std::slice::from_raw_parts(first.as_ptr(), len) };
            for s in slots {
                f(class, s);
            }
        }
    }

    /// Describes the in-use slots that `keep` accepts, in address order.
    pub(crate) fn outstanding(&self, keep: impl Fn(&Slot) -> bool) -> Vec<OutstandingBuffer> {
        let now = clock::coarse_nanos();
        let mut out = Vec::new();
        self.scan_slots(|class, s| {
            if s.state.load() != SlotState::InUse || !keep(s) {
                return;
            }
            let slot_len = self.classes.slot_bytes(class);
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
        });
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
        self.walk_in_use(|_, _| {})
    }

    /// The publisher's one walk of the slot metadata: recounts the leak
    /// suspects (as [`refresh_leak_suspects`](Self::refresh_leak_suspects))
    /// and adds up the outstanding buffers by allocation site. `None` with
    /// leak tracking off (no site is recorded).
    pub(crate) fn scan_for_publish(&self) -> Option<SiteTotals> {
        let mut totals = SiteTotals::default();
        self.walk_in_use(|class, s| totals.add(s.site(), self.classes.slot_bytes(class)));
        (self.config.tracking != LeakTracking::Off).then_some(totals)
    }

    /// With leak tracking on, one walk of the slot metadata that hands every
    /// buffer in use to `visit` and counts the leak suspects; stores the
    /// count (0 with tracking off, and no walk) and returns it.
    fn walk_in_use(&self, mut visit: impl FnMut(ClassIdx, &Slot)) -> usize {
        let n = if self.config.tracking == LeakTracking::Off {
            0
        } else {
            let threshold = self.config.leak_age.as_nanos().min(u64::MAX as u128) as u64;
            let now = clock::coarse_nanos();
            let mut n = 0;
            self.scan_slots(|class, s| {
                if s.state.load() == SlotState::InUse {
                    n += usize::from(leak::is_suspect(s, now, threshold));
                    visit(class, s);
                }
            });
            n
        };
        self.counters.leak_suspects.store(n, Relaxed);
        n
    }
}
