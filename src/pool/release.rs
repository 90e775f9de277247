//! Release: a buffer's slot goes back to this thread's bin (the common
//! case, inline), or through its checks and the pool's detours.
//!
//! The `release*` chain takes `(slot, anchor, site)` in that order: the
//! slot of the buffer being released, the anchor it was counted on, and
//! the release site when `PageBuffer::release` or C gave one. Each returns what
//! happened to the buffer's reference on its anchor ([`Released`]).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::PoolInner;
use crate::free::anchor::{AnchorRef, Released};
use crate::free::cache;
use crate::mem::slot::{Slot, SlotFlags, SlotRef};
use crate::observe::quarantine;
use crate::site::SiteRef;
use crate::{clock, threads};

/// A release site (`SiteRef::NONE` unless the caller named one).
type Site = SiteRef;

impl PoolInner {
    /// Returns a buffer's slot to a free list or the quarantine.
    ///
    /// Inline: only the common case, a plain buffer (no flags, no edges;
    /// or only an intact standard canary, and red zones if packed, which
    /// the out-of-line `flagged_checks_pass` compares) of a pool with no
    /// detours, into this thread's bin with room; it returns `Settled` when
    /// this thread allocated it (the caller's remote step then folds away),
    /// `Remote` when another did (the media-server pattern: the caller's
    /// one atomic decrement). Everything else (damage included) is
    /// `release_slow`, which checks again and reports.
    ///
    /// # Safety
    /// `slot` is the slot of a buffer of this pool, counted on `anchor`,
    /// that is being dropped: no one accesses its bytes from now on.
    #[inline(always)]
    pub(crate) unsafe fn release(
        self: &Arc<Self>,
        slot: SlotRef,
        anchor: AnchorRef,
        site: Site,
    ) -> Released {
        // SAFETY: the buffer being released keeps the pool and its slabs alive.
        let s = unsafe { slot.get() };
        let slot = if s.release_has_work() {
            // SAFETY: the caller owns the slot.
            match unsafe { self.flagged_checks_pass(slot) } {
                Ok(slot) => slot,
                // Out of line, with nothing left to do here after it.
                // SAFETY: forwarded from the caller; nothing was changed yet.
                Err(slot) => return unsafe { self.release_slow(slot, anchor, site) },
            }
        } else {
            slot
        };
        // SAFETY: forwarded from the caller; the slot has nothing (left) to
        // do: the checks passed, and only read.
        unsafe { self.release_plain(slot, anchor, site) }
    }

    /// Whether the release of `slot`, which has flags or edges, may take
    /// the plain path (`Ok`): its only duty is its standard canary (and red
    /// zones, if packed), intact. `Err` sends it to `release_slow` (a
    /// quota's buffer among them: `QUOTA` is not a flag the checks pass),
    /// which checks again and reports. A leaf out of line, so the release
    /// goes on inline in its caller; it hands `slot` back in its return
    /// registers, so the caller keeps no register of its own for it across
    /// the call. Other duties return before the compares' registers are
    /// saved: those are `packed_checks_pass` and `page_checks_pass`, tail
    /// calls.
    ///
    /// # Safety
    /// The caller owns the slot (its buffer is being released).
    #[inline(never)]
    unsafe fn flagged_checks_pass(&self, slot: SlotRef) -> Result<SlotRef, SlotRef> {
        // SAFETY: the buffer being released keeps the pool and its slabs alive.
        let s = unsafe { slot.get() };
        let flags = s.flags.load();
        if self.checks.release_may_pass_packed(s, flags) {
            // SAFETY: forwarded from the caller; the slot's release may pass.
            return unsafe { self.packed_checks_pass(slot) };
        }
        if self.checks.release_may_pass_page(s, flags) {
            // SAFETY: as above.
            return unsafe { self.page_checks_pass(slot) };
        }
        Err(slot)
    }

    /// `flagged_checks_pass` past its first test, for a packed slot: `Ok`
    /// when its canary and red zones are intact.
    ///
    /// # Safety
    /// The caller owns the slot, whose release
    /// `Checks::release_may_pass_packed`.
    #[inline(never)]
    unsafe fn packed_checks_pass(&self, slot: SlotRef) -> Result<SlotRef, SlotRef> {
        // SAFETY: the buffer being released keeps the pool and its slabs alive.
        let s = unsafe { slot.get() };
        // SAFETY: forwarded from the caller; the table is the slot's pool's.
        if unsafe { self.checks.release_packed_checks_pass(s, &self.classes) } {
            Ok(slot)
        } else {
            Err(slot)
        }
    }

    /// `flagged_checks_pass` past its first test, for a page slot: `Ok`
    /// when its canary is intact.
    ///
    /// # Safety
    /// The caller owns the slot, whose release
    /// `Checks::release_may_pass_page`.
    #[inline(never)]
    unsafe fn page_checks_pass(&self, slot: SlotRef) -> Result<SlotRef, SlotRef> {
        // SAFETY: the buffer being released keeps the pool and its slabs alive.
        let s = unsafe { slot.get() };
        // SAFETY: forwarded from the caller.
        if unsafe { self.checks.release_page_checks_pass(s) } {
            Ok(slot)
        } else {
            Err(slot)
        }
    }

    /// The end of a release whose slot has nothing left to do: into this
    /// thread's bin if it has room and no detour is on, else
    /// `release_slow`.
    ///
    /// The slot's metadata is reached through `slot` here, not passed in as
    /// a reference: `release_slow` may shut the pool down and unmap the slab,
    /// which no reference argument of a caller may outlive.
    ///
    /// # Safety
    /// As for `release`; nothing was changed yet.
    #[inline(always)]
    unsafe fn release_plain(
        self: &Arc<Self>,
        slot: SlotRef,
        anchor: AnchorRef,
        site: Site,
    ) -> Released {
        if self.detours.load(Relaxed) == 0 {
            // SAFETY: the buffer being released keeps the slab alive.
            let s = unsafe { slot.get() };
            // SAFETY: a slot of this pool, released by its buffer.
            if let Some(released) = unsafe { cache::give_back_cached(&self.depot, s, slot, anchor) }
            {
                return released;
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.release_slow(slot, anchor, site) }
    }

    /// `release` in full: a quota's credit, the checks and duties the
    /// slot's flags and edges ask for, the detours, and the thread cache
    /// (whichever thread's buffer it is).
    ///
    /// # Safety
    /// As for `release`.
    #[inline(never)]
    unsafe fn release_slow(
        self: &Arc<Self>,
        slot: SlotRef,
        anchor: AnchorRef,
        site: Site,
    ) -> Released {
        // SAFETY: the buffer being released keeps the pool and its slabs alive.
        let s = unsafe { slot.get() };
        if s.flags.load().contains(SlotFlags::QUOTA) {
            self.credit(s);
        }
        if s.release_has_work() {
            // SAFETY: the caller owns the slot.
            unsafe { self.release_checks(s, site) };
        }
        if self.detours.load(Relaxed) != 0 {
            // SAFETY: as above.
            return unsafe { self.release_detour(slot, anchor, site) };
        }
        s.mark_free();
        // SAFETY: a slot of this pool's class `s.class()`, marked free.
        unsafe { cache::give_back(self, s.class(), slot, anchor) }
    }

    /// The checks and duties of a release whose slot has flags or edges:
    /// the byte checks (`Checks::on_release`), then recording the release
    /// site of a poisoned slot and the sampled duties.
    ///
    /// # Safety
    /// The caller owns the slot (its buffer is being released).
    unsafe fn release_checks(&self, s: &Slot, site: Site) {
        let flags = s.flags.load();
        // SAFETY: forwarded from the caller; the flags and edges are the
        // slot's, the table its pool's.
        unsafe { self.checks.on_release(s, flags, s.edges(), &self.classes) };
        if flags.contains(SlotFlags::POISON_DUE) {
            self.record_release(s, site);
        }
        if flags.intersects(SlotFlags::SAMPLED | SlotFlags::HAS_BACKTRACE) {
            self.finish_sampled(s, flags);
        }
    }

    /// The rest of a release when the slot may not go to the thread cache
    /// as usual: the quarantine is on, tasks or threads wait for room, or
    /// the pool is closed (this may be its last buffer).
    ///
    /// # Safety
    /// As for `release`.
    #[cold]
    #[inline(never)]
    unsafe fn release_detour(
        self: &Arc<Self>,
        slot: SlotRef,
        anchor: AnchorRef,
        site: Site,
    ) -> Released {
        let every = self.config.debug.quarantine_every;
        // SAFETY: forwarded from the caller.
        let s = unsafe { slot.get() };
        let released = if quarantine::sampled(every)
            // SAFETY: forwarded from the caller.
            && unsafe { self.quarantine(slot, site) }
        {
            // SAFETY: the buffer counted on `anchor` is being released, once.
            unsafe { cache::settle(self, anchor) }
        } else if self.depot.room.any_relaxed() {
            s.mark_free();
            // SAFETY: forwarded from the caller; the slot is marked free.
            unsafe { self.release_to_waiters(slot, anchor) }
        } else if self.is_closed() || self.depot.near_cap() {
            // Not into this thread's bin: a closed pool never serves it,
            // and near the cap a slot there could strand.
            s.mark_free();
            self.depot.push_released(s.class(), slot);
            // SAFETY: the buffer counted on `anchor` is being released, once.
            unsafe { cache::settle(self, anchor) }
        } else {
            s.mark_free();
            // SAFETY: a slot of this pool's class `s.class()`, marked free.
            unsafe { cache::give_back(self, s.class(), slot, anchor) }
        };
        if self.depot.is_abandoned() {
            self.shutdown_if_idle();
        }
        released
    }

    /// Records who released slot `s`, and where if known, for the reports
    /// of a later use after release (poison, quarantine): the only readers,
    /// so a plain release skips it.
    pub(super) fn record_release(&self, s: &Slot, site: Site) {
        if self.tracking {
            s.release_site.store(site.raw(), Relaxed);
            s.thread.store(threads::id(), Relaxed);
        }
    }

    /// The sampled duties of a release: record the hold time, drop a
    /// stored backtrace.
    #[cold]
    fn finish_sampled(&self, s: &Slot, flags: SlotFlags) {
        if flags.contains(SlotFlags::SAMPLED) {
            if let Some(m) = &self.metrics {
                let since = s.allocated_at.load(Relaxed);
                m.record_hold(clock::since(since).as_secs_f64());
            }
        }
        if flags.contains(SlotFlags::HAS_BACKTRACE) {
            self.backtraces.lock().remove(&(s.data().as_ptr() as usize));
        }
    }
}
