//! The slow path of allocation: a slot from the shared free list, or a new
//! slab mapped within the byte cap; trimming idle slabs and discarding the
//! pages of free slots in busy ones (which decay reuses); and asking thread
//! caches to flush, which both rely on.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{wait, PoolInner};
use crate::class::ClassIdx;
use crate::free::cache;
use crate::limits::{MAX_SLOTS_PER_SLAB, SMALL_SLAB_BYTES};
use crate::mem::slab::{self, Layout, Slab};
use crate::mem::slabs::SlabSet;
use crate::mem::slot::{Slot, SlotRef};
use crate::Error;

/// What a trim does with the free slots of the slabs it leaves mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FreePages {
    /// Leaves their pages resident: a trim for room under the cap, which
    /// only unmapping makes.
    Keep,
    /// Gives their pages back to the OS ([`Slab::discard_free_slots`]),
    /// beyond the slots the class keeps ready: `BufferPool::trim`, decay.
    Discard,
}

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
            None => self.map_slab_and_sample(idx, max_size),
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

    /// [`map_slab`](Self::map_slab), then, with no lock held (a rare
    /// path): a `fork` child's first one restarts the publisher, and, if it
    /// got a slot, the in-use high-water mark takes a sample (a slab is
    /// mapped when a class runs out, near the peak; refusals at the cap
    /// stay cheap).
    #[cold]
    #[inline(never)]
    fn map_slab_and_sample(
        self: &Arc<Self>,
        idx: ClassIdx,
        max_size: usize,
    ) -> Result<SlotRef, Error> {
        let got = self.map_slab(idx, max_size);
        crate::observe::publisher::ensure_running();
        if got.is_ok() {
            self.sample_peak_in_use();
        }
        got
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
    /// cache (and asks the others to), unmaps every idle slab and discards
    /// the pages of the other free slots; returns the bytes unmapped, and
    /// wakes the head waiter (the room is under the cap now).
    pub(crate) fn trim_all(self: &Arc<Self>) -> usize {
        self.release_quarantine();
        self.ask_caches_to_flush();
        let mut slabs = self.slabs.lock();
        let freed = self.trim_classes(&mut slabs, None, FreePages::Discard);
        drop(slabs);
        self.depot.notify_room();
        freed
    }

    /// Unmaps the idle slabs of every class but `except`, down to each
    /// class's `min_buffers`, for room under the cap; returns the bytes.
    pub(super) fn trim_locked(&self, slabs: &mut SlabSet, except: Option<ClassIdx>) -> usize {
        self.trim_classes(slabs, except, FreePages::Keep)
    }

    /// [`trim_locked`](Self::trim_locked), doing `free_pages` with the free
    /// slots of the slabs left mapped.
    fn trim_classes(
        &self,
        slabs: &mut SlabSet,
        except: Option<ClassIdx>,
        free_pages: FreePages,
    ) -> usize {
        let mut freed = 0;
        for c in self.classes.all() {
            if Some(c) != except && !slabs.class(c).is_empty() {
                freed += self.unmap_idle_locked(slabs, c, self.decay.floor(c), free_pages);
            }
        }
        self.counters.trimmed.fetch_add(freed as u64, Relaxed);
        freed
    }

    /// Unmaps slabs of class `idx` whose slots are all on its free list,
    /// while the class keeps at least `keep` slots mapped; returns the bytes.
    /// With [`FreePages::Discard`], the pages of the free slots left beyond
    /// the `keep` slots also go back (counted in `discarded`).
    pub(super) fn unmap_idle_locked(
        &self,
        slabs: &mut SlabSet,
        idx: ClassIdx,
        keep: usize,
        free_pages: FreePages,
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
        let discard =
            free_pages == FreePages::Discard && !self.layout(idx).packed && !slabs.pages_pinned();
        // The free slots staying, resident ones ahead: the first `ready` of
        // them (in the list's order, the next handed out) keep their pages,
        // so the class has `keep` slots resident with those in use or cached.
        let staying = free.iter().zip(&owners).filter(|(_, &o)| !idle[o]);
        let mut ready = keep.saturating_sub(mapped - staying.clone().count());
        let mut emptied: Vec<(usize, SlotRef)> = Vec::new();
        for (slot, &owner) in staying {
            // SAFETY: drained from the free list above: free, and ours under
            // the slab lock until pushed back; its slab `list[owner]` is
            // mapped.
            let s = unsafe { slot.get() };
            if !discard || (ready > 0 && !slab::untouched(s)) {
                ready = ready.saturating_sub(1);
                class.free.push(*slot);
            } else {
                emptied.push((owner, *slot));
            }
        }
        // By slab, in list order within each (a stable sort).
        emptied.sort_by_key(|&(owner, _)| owner);
        let mut discarded = 0;
        for run in emptied.chunk_by(|a, b| a.0 == b.0) {
            // SAFETY: as above: slots of `list[run[0].0]`, ours.
            let slots: Vec<&Slot> = run.iter().map(|(_, s)| unsafe { s.get() }).collect();
            // SAFETY: as above.
            discarded += unsafe { list[run[0].0].discard_free_slots(&slots) };
        }
        for (_, slot) in emptied {
            class.free.push(slot);
        }
        self.counters.discarded.fetch_add(discarded as u64, Relaxed);
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
