//! The slow path of allocation: a slot from the shared free list, or a new
//! slab mapped within the byte cap; trimming idle slabs (which decay reuses);
//! and asking thread caches to flush, which both rely on.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{wait, PoolInner};
use crate::class::ClassIdx;
use crate::free::cache;
use crate::limits::{MAX_SLOTS_PER_SLAB, SMALL_SLAB_BYTES};
use crate::mem::slab::{Layout, Slab};
use crate::mem::slabs::SlabSet;
use crate::mem::slot::SlotRef;
use crate::Error;

impl PoolInner {
    /// Takes a slot of class `idx` from the depot's free list, or maps a
    /// slab (for a request of `max_size` bytes, named in the error).
    #[inline]
    pub(super) fn take_shared(
        self: &Arc<Self>,
        idx: ClassIdx,
        max_size: usize,
    ) -> Result<SlotRef, Error> {
        match self.depot.pop(idx) {
            Some(slot) => Ok(slot),
            None => {
                let got = self.map_slab(idx, max_size);
                self.after_map_slab();
                got
            }
        }
    }

    /// No free slot was found: map a slab within the cap, under the slab
    /// lock; when none fits, let the quarantine go, flush caches and trim
    /// idle slabs of other classes first.
    #[cold]
    #[inline(never)]
    fn map_slab(self: &Arc<Self>, idx: ClassIdx, max_size: usize) -> Result<SlotRef, Error> {
        let class = self.depot.class(idx);
        let mut slabs = self.slabs.lock();
        // Another thread may have mapped a slab, or a trim may have put slots
        // back, while we waited for the lock.
        if let Some(slot) = self.depot.pop(idx) {
            return Ok(slot);
        }
        let layout = self.layout(idx);
        let wanted = self.slab_slots(layout);
        let mut n = self.slots_within_cap(layout, wanted);
        if n == 0 {
            // Let the quarantine go and ask threads to return cached slots
            // (ours at once), take one of this class if that freed any, else
            // give idle slabs of other classes back and try again.
            self.release_quarantine();
            self.ask_caches_to_flush();
            if let Some(slot) = self.depot.pop(idx) {
                return Ok(slot);
            }
            // A trim drains every free list: skip it when nothing came back
            // since the last one that freed nothing (no slab can have become
            // idle), so failing at the cap costs O(1), not a scan.
            let returns = self.depot.returns();
            if self.fruitless_trim.load(Relaxed) != returns.wrapping_add(1)
                && self.trim_locked(&mut slabs, Some(idx)) == 0
            {
                self.fruitless_trim.store(returns.wrapping_add(1), Relaxed);
            }
            n = self.slots_within_cap(layout, wanted);
        }
        if n == 0 {
            // A waiter's retries are one refusal, counted by its first try.
            if !wait::head_try() {
                class.counters.exhausted.fetch_add(1, Relaxed);
            }
            return Err(Error::Exhausted {
                requested: max_size,
                limit: self.max_bytes().unwrap_or(usize::MAX),
            });
        }
        let slab = self.map_counted(&mut slabs, idx, n, layout)?;
        class.counters.misses.fetch_add(1, Relaxed);
        let (first, rest) = slab.slots().split_first().expect("n >= 1");
        for s in rest {
            class.free.push(SlotRef::new(s));
        }
        Ok(SlotRef::new(first))
    }

    /// Maps a slab of `n >= 1` slots of class `idx` (within the cap: the
    /// caller checked, under the slab lock it holds), counts it, and adds it
    /// to `slabs` (whose subscribers hear of it before any slot is handed
    /// out).
    fn map_counted<'s>(
        &self,
        slabs: &'s mut SlabSet,
        idx: ClassIdx,
        n: usize,
        layout: Layout,
    ) -> Result<&'s Slab, Error> {
        let class = self.depot.class(idx);
        let slab = match Slab::map(&self.backing, idx, n, layout) {
            Ok(slab) => slab,
            Err(e) => {
                class.counters.os_errors.fetch_add(1, Relaxed);
                return Err(Error::Os(e));
            }
        };
        let reserved = self.counters.reserved.fetch_add(slab.reserved(), Relaxed) + slab.reserved();
        self.counters.peak_reserved.fetch_max(reserved, Relaxed);
        self.update_near_cap();
        self.counters.unguarded.fetch_add(slab.unguarded(), Relaxed);
        class.counters.slots.fetch_add(n, Relaxed);
        class.counters.slabs.fetch_add(1, Relaxed);
        Ok(slabs.insert(idx, slab))
    }

    /// Maps one slab of class `idx` (as an allocation would, within the
    /// cap) and puts all its slots on the free list: `min_buffers` at
    /// build. Returns the slots mapped.
    pub(super) fn map_free_slab(&self, slabs: &mut SlabSet, idx: ClassIdx) -> Result<usize, Error> {
        let layout = self.layout(idx);
        let n = self.slots_within_cap(layout, self.slab_slots(layout));
        if n == 0 {
            return Err(Error::Exhausted {
                requested: layout.slot_bytes,
                limit: self.max_bytes().unwrap_or(usize::MAX),
            });
        }
        let class = self.depot.class(idx);
        for s in self.map_counted(slabs, idx, n, layout)?.slots() {
            class.free.push(SlotRef::new(s));
        }
        Ok(n)
    }

    /// The slots a new slab of `layout` gets, before the cap.
    fn slab_slots(&self, layout: Layout) -> usize {
        // Small slabs are filled with red zones when mapped (every page is
        // touched): keep them to `SMALL_SLAB_BYTES`.
        let target = if layout.packed {
            self.config.slab_size.min(SMALL_SLAB_BYTES)
        } else {
            self.config.slab_size
        };
        (target / layout.slot_bytes).clamp(1, MAX_SLOTS_PER_SLAB)
    }

    /// After a try at mapping a slab, with no lock held (a rare path): a
    /// `fork` child's first one restarts the publisher, and the in-use
    /// high-water mark takes a sample (a slab is mapped when a class runs
    /// out, near the peak).
    #[cold]
    fn after_map_slab(&self) {
        crate::observe::publisher::ensure_running();
        self.sample_peak_in_use();
    }

    /// Whether a request of `max_size` bytes (`small`: as
    /// `allocate_buffer`) fits under the cap in a pool holding nothing else.
    pub(super) fn could_fit(&self, max_size: usize, small: bool) -> bool {
        let Some(limit) = self.max_bytes() else {
            return true;
        };
        self.classes
            .class_for(max_size, small)
            .is_some_and(|idx| self.layout(idx).slots_within(limit) >= 1)
    }

    /// How the slabs of class `idx` are laid out.
    fn layout(&self, idx: ClassIdx) -> Layout {
        Layout {
            page: self.page,
            slot_bytes: self.classes.slot_bytes(idx),
            guards: self.config.guards,
            packed: self.classes.is_small(idx),
        }
    }

    /// Up to `wanted` slots: as many as fit under the cap (call with the slab
    /// lock held, which serialises every change of `reserved`).
    fn slots_within_cap(&self, layout: Layout, wanted: usize) -> usize {
        match self.max_bytes() {
            None => wanted,
            Some(limit) => {
                let room = limit.saturating_sub(self.counters.reserved.load(Relaxed));
                layout.slots_within(room).min(wanted)
            }
        }
    }

    /// `BufferPool::trim`: empties the quarantine, flushes this thread's
    /// cache (and asks the others to), unmaps every idle slab; returns the
    /// bytes given back, and wakes the head waiter (the room is under the
    /// cap now).
    pub(crate) fn trim_all(self: &Arc<Self>) -> usize {
        self.release_quarantine();
        self.ask_caches_to_flush();
        let mut slabs = self.slabs.lock();
        let freed = self.trim_locked(&mut slabs, None);
        drop(slabs);
        self.depot.notify_room();
        freed
    }

    /// Unmaps the idle slabs of every class but `except`, down to each
    /// class's `min_buffers`; returns the bytes.
    pub(super) fn trim_locked(&self, slabs: &mut SlabSet, except: Option<ClassIdx>) -> usize {
        let mut freed = 0;
        for c in self.classes.all() {
            if Some(c) != except && !slabs.class(c).is_empty() {
                freed += self.unmap_idle_locked(slabs, c, self.decay.floor(c));
            }
        }
        self.counters.trimmed.fetch_add(freed as u64, Relaxed);
        freed
    }

    /// Unmaps slabs of class `idx` whose slots are all on its free list,
    /// while the class keeps at least `keep` slots mapped; returns the bytes.
    pub(super) fn unmap_idle_locked(
        &self,
        slabs: &mut SlabSet,
        idx: ClassIdx,
        keep: usize,
    ) -> usize {
        let class = self.depot.class(idx);
        // Take every free slot. Allocations of this class that find the list
        // empty meanwhile wait on the slab lock we hold, then find the slots
        // we push back.
        let free = class.free.drain();
        let list = slabs.class(idx);
        let mut free_in = vec![0usize; list.len()];
        let owners: Vec<usize> = free
            .iter()
            .map(|s| {
                // SAFETY: slots on the free list belong to mapped slabs of
                // this class.
                let addr = unsafe { s.addr() };
                let owner = slabs
                    .owner(idx, addr)
                    .expect("a free slot's slab is mapped");
                free_in[owner] += 1;
                owner
            })
            .collect();
        let mut mapped = class.counters.slots.load(Relaxed);
        let idle: Vec<bool> = list
            .iter()
            .zip(&free_in)
            .map(|(slab, &n)| {
                let len = slab.slots().len();
                let go = n == len && mapped >= keep.saturating_add(len);
                mapped -= if go { len } else { 0 };
                go
            })
            .collect();
        for (slot, &owner) in free.iter().zip(&owners) {
            if !idle[owner] {
                class.free.push(*slot);
            }
        }
        let mut freed = 0;
        // Scans reading slot metadata outside the slab lock finish first.
        let _unmapping = idle.contains(&true).then(|| self.mapped.write());
        // SAFETY: every slot of an idle slab was on the free list, drained
        // above by this thread under the slab lock and not pushed back: none
        // is in use, listed or cached.
        let gone = unsafe { slabs.retain_class(idx, |i| !idle[i]) };
        for (reserved, unguarded, nslots) in gone {
            freed += reserved;
            self.counters.reserved.fetch_sub(reserved, Relaxed);
            self.counters.unguarded.fetch_sub(unguarded, Relaxed);
            class.counters.slots.fetch_sub(nslots, Relaxed);
            class.counters.slabs.fetch_sub(1, Relaxed);
        }
        if freed != 0 {
            self.update_near_cap();
        }
        freed
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
