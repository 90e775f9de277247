//! Sealing a released slot into the quarantine, and letting it go again.

use std::sync::atomic::Ordering::Relaxed;

use super::PoolInner;
use crate::mem::guard::{self, Sealed};
use crate::mem::slot::{Edges, SlotFlags, SlotRef, SlotState};
use crate::site::SiteRef;

impl PoolInner {
    /// Seals a slot released at `site` into the quarantine; returns `false`
    /// (the caller then frees it as usual) when it cannot be sealed.
    ///
    /// # Safety
    /// The caller owns the slot (its buffer is being dropped).
    #[cold]
    pub(super) unsafe fn quarantine(&self, slot: SlotRef, site: SiteRef) -> bool {
        let Some(mechanism) = self.config.guards else {
            return false;
        };
        // SAFETY: the caller owns the slot; its slab is mapped.
        let s = unsafe { slot.get() };
        if s.edges().contains(Edges::PACKED) {
            // A packed slot shares its pages: it cannot be sealed alone.
            return false;
        }
        let len = self.classes.slot_bytes(s.class());
        // Before the seal: once sealed, a fault report may read it.
        self.record_release(s, site);
        // SAFETY: the slot is page-aligned, whole pages, ours, and nobody
        // may touch it until it is unsealed.
        let Some(sealed) = (unsafe { guard::seal(s.data().as_ptr(), len, mechanism) }) else {
            return false;
        };
        s.state.store(SlotState::Quarantined);
        let class = self.depot.class(s.class());
        class.counters.quarantined.fetch_add(1, Relaxed);
        let leaving = self
            .quarantine
            .admit(slot, sealed, self.config.debug.quarantine_slots);
        for (old, sealed) in leaving {
            // SAFETY: a quarantined slot of this pool; its slab is mapped.
            unsafe { self.leave_quarantine(old, sealed) };
        }
        // Counted last: once this release shows, the pool may shut down.
        class.counters.releases.fetch_add(1, Relaxed);
        true
    }

    /// Lets every quarantined slot go back to the free lists.
    pub(super) fn release_quarantine(&self) {
        let mut any = false;
        for (slot, sealed) in self.quarantine.drain() {
            // SAFETY: quarantined slots belong to this pool's mapped slabs.
            unsafe { self.leave_quarantine(slot, sealed) };
            any = true;
        }
        if any {
            self.depot.notify_room();
        }
    }

    /// Unseals a slot leaving quarantine and frees it to its class.
    ///
    /// # Safety
    /// `slot` is a quarantined slot of this pool, sealed as `sealed`.
    unsafe fn leave_quarantine(&self, slot: SlotRef, sealed: Sealed) {
        // SAFETY: forwarded from the caller.
        unsafe { self.unseal(slot, sealed) };
        // SAFETY: as above.
        let s = unsafe { slot.get() };
        let class = self.depot.class(s.class());
        class.counters.quarantined.fetch_sub(1, Relaxed);
        s.state.store(SlotState::Free);
        class.free.push(slot);
    }

    /// Makes a quarantined slot accessible again; its contents are gone, so
    /// the canary and poison records are reset.
    ///
    /// # Safety
    /// `slot` is a quarantined slot of this pool, sealed as `sealed`.
    pub(super) unsafe fn unseal(&self, slot: SlotRef, sealed: Sealed) {
        // SAFETY: forwarded from the caller.
        let s = unsafe { slot.get() };
        let len = self.classes.slot_bytes(s.class());
        // SAFETY: the slot was sealed with `sealed` and its slab is mapped.
        unsafe { guard::unseal(s.data().as_ptr(), len, sealed) };
        // Between two buffers the flags hold only lasting records.
        s.flags.store(SlotFlags::EMPTY);
    }
}
