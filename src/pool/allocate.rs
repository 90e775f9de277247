//! Allocation: a slot for a request, from the thread cache or the slow
//! path, stamped with what reports read, and the sampled duties.

use std::backtrace::Backtrace;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{wait, PoolInner};
use crate::class::ClassIdx;
use crate::clock;
use crate::free::anchor::{Anchor, AnchorRef};
use crate::free::cache::{self, Taken};
use crate::free::sample::SampledDuties;
use crate::mem::slot::{Slot, SlotFlags, SlotRef};
use crate::site::SiteRef;
use crate::threads;
use crate::Error;

impl PoolInner {
    /// Takes a slot for a request of `max_size` bytes made at `site`
    /// (`small`: by `allocate_buffer`, which small classes may serve), and
    /// the anchor the buffer was counted on.
    #[inline(always)]
    pub(crate) fn allocate(
        self: &Arc<Self>,
        max_size: usize,
        site: SiteRef,
        small: bool,
    ) -> Result<(SlotRef, AnchorRef), Error> {
        let Some(idx) = self.classes.class_for(max_size, small) else {
            return Err(self.reject(max_size));
        };
        // SAFETY: `idx` is a class of this pool's table, the depot's too.
        match unsafe { cache::acquire(&self.depot, idx) } {
            Some((slot, anchor, thread)) => {
                // SAFETY: just taken off this thread's bin for this buffer.
                unsafe { self.prepare(slot, max_size, site, thread) };
                Ok((slot, anchor))
            }
            // A tail call: nothing of the request has to live across it here.
            // SAFETY: `idx` is from this pool's `class_for`.
            None => unsafe { self.allocate_slow(idx, max_size, site) },
        }
    }

    /// `allocate` past the thread's bin: [`take_slow`](Self::take_slow),
    /// then the same preparation.
    ///
    /// # Safety
    /// `idx` is a class of this pool's table (from its `class_for`).
    #[cold]
    #[inline(never)]
    unsafe fn allocate_slow(
        self: &Arc<Self>,
        idx: ClassIdx,
        max_size: usize,
        site: SiteRef,
    ) -> Result<(SlotRef, AnchorRef), Error> {
        // SAFETY: forwarded from the caller.
        let (slot, anchor) = unsafe { self.take_slow(idx, max_size) }?;
        let thread = if self.tracking { threads::id() } else { 0 };
        // SAFETY: just taken for this buffer.
        unsafe { self.prepare(slot, max_size, site, thread) };
        Ok((slot, anchor))
    }

    /// Marks a slot just taken for a buffer of `max_size` bytes in use, and
    /// stamps it (with its checks and duties, if it has any); `thread` is
    /// the calling thread's `threads::id()` (anything when untracked).
    ///
    /// # Safety
    /// `slot` was just taken off a free list or bin of this pool, for this
    /// buffer alone.
    #[inline(always)]
    unsafe fn prepare(&self, slot: SlotRef, max_size: usize, site: SiteRef, thread: u32) {
        // SAFETY: a slot taken off a free list belongs to a mapped slab of this
        // pool (caller's contract); slabs are unmapped only after their slots
        // are drained from it.
        let s = unsafe { slot.get() };
        s.mark_in_use();
        let flags = s.flags.load();
        if self.checks.allocation_needs_work(s, max_size, flags) {
            // SAFETY: the slot is ours alone now; `flags` is its.
            unsafe { self.allocate_checked(s, max_size, site, flags, thread) };
        } else {
            self.stamp(s, max_size, site, thread);
        }
    }

    /// A slot when the thread's bin had nothing at hand, or the allocation
    /// is sampled: the cache's slow path, then the shared free list or a new
    /// slab, and the sampled duties marked on the slot.
    ///
    /// # Safety
    /// `idx` is a class of this pool's table (from its `class_for`).
    #[inline(always)]
    unsafe fn take_slow(
        self: &Arc<Self>,
        idx: ClassIdx,
        max_size: usize,
    ) -> Result<(SlotRef, AnchorRef), Error> {
        if self.is_closed() || (self.depot.room.any_relaxed() && !wait::head_try()) {
            return Err(self.refuse(idx, max_size));
        }
        // SAFETY: `idx` is a class of this pool (caller's contract).
        let (slot, anchor, duties, started) = match unsafe { cache::acquire_slow(self, idx) } {
            Taken::Slot {
                slot,
                anchor,
                duties,
                started,
            } => (slot, anchor, duties, started),
            Taken::Empty { duties, started } => {
                let slot = self.take_shared(idx, max_size)?;
                // SAFETY: exactly one buffer, this one, is counted on it.
                let anchor = unsafe { cache::issue(self) }
                    .unwrap_or_else(|| Anchor::detached(Arc::clone(self)));
                (slot, anchor, duties, started)
            }
            // No cache and no sampling: an anchor of the buffer's own.
            Taken::NoCache => {
                let slot = self.take_shared(idx, max_size)?;
                return Ok((slot, Anchor::detached(Arc::clone(self))));
            }
        };
        if !duties.is_empty() {
            // SAFETY: the slot was just taken for this allocation alone.
            unsafe { self.mark_duties(slot, duties, started) };
        }
        Ok((slot, anchor))
    }

    /// A request that may not take from the shared lists: the pool is
    /// closed, or others wait for room and this is not the head's try
    /// (first come, first served: it would take what they wait for). This
    /// thread's cached slots go to the depot, where the waiters find them.
    #[cold]
    #[inline(never)]
    fn refuse(self: &Arc<Self>, idx: ClassIdx, max_size: usize) -> Error {
        cache::flush_current(self);
        if self.is_closed() {
            return Error::Closed;
        }
        self.depot
            .class(idx)
            .counters
            .exhausted
            .fetch_add(1, Relaxed);
        Error::Exhausted {
            requested: max_size,
            limit: self.max_bytes().unwrap_or(usize::MAX),
        }
    }

    /// Counts and builds the error for a request no class can serve.
    #[cold]
    fn reject(&self, max_size: usize) -> Error {
        self.counters.rejected.fetch_add(1, Relaxed);
        if max_size == 0 {
            Error::ZeroSize
        } else {
            Error::TooLarge {
                requested: max_size,
                max: self.config.max_buffer_size,
            }
        }
    }

    /// Writes the new buffer's `max_len` and what leak reports read (epoch,
    /// and with tracking its site, time and `thread`) into its slot's
    /// metadata.
    #[inline(always)]
    fn stamp(&self, s: &Slot, max_size: usize, site: SiteRef, thread: u32) {
        // `max_size <= max_buffer_size <= SIZE_LIMIT`, which fits `u32`.
        s.max_len.store(max_size as u32, Relaxed);
        s.epoch.store(self.leak_epoch.load(Relaxed), Relaxed);
        if self.tracking {
            s.site.store(site.raw(), Relaxed);
            s.allocated_at.store(clock::coarse_nanos(), Relaxed);
            s.thread.store(thread, Relaxed);
        }
    }

    /// An allocation whose slot has `flags` or whose size needs a debug
    /// step: checks and prepares the slot (`Checks::on_allocate`), stamps
    /// it, does the sampled duties `mark_duties` left, and leaves in the
    /// slot's flags what the release must do.
    ///
    /// # Safety
    /// The caller owns the slot (just taken off a free list); `flags` is
    /// the slot's.
    #[inline(never)]
    unsafe fn allocate_checked(
        &self,
        s: &Slot,
        max_size: usize,
        site: SiteRef,
        flags: SlotFlags,
        thread: u32,
    ) {
        // Before `stamp` overwrites them: a poison check needs the last
        // buffer's `max_len`, and its report names that buffer's owner.
        // SAFETY: forwarded from the caller; the table is the slot's pool's.
        let mut next = unsafe { self.checks.on_allocate(s, max_size, flags, &self.classes) };
        // `mark_duties` left the start of a sampled allocation here.
        let started = s.allocated_at.load(Relaxed);
        self.stamp(s, max_size, site, thread);
        next |= flags & (SlotFlags::SAMPLED | SlotFlags::POISON_DUE);
        if flags.intersects(SlotFlags::SAMPLED | SlotFlags::BACKTRACE_DUE) {
            next |= self.sampled_duties(s, flags, started, max_size);
        }
        s.flags.store(next);
    }

    /// Marks a slot just taken for a sampled allocation with its `duties`,
    /// for `allocate_checked` to do; `started` is when the allocation began
    /// (`clock::now_nanos()`), for the histograms.
    ///
    /// # Safety
    /// The caller owns the slot (just taken off a free list).
    #[cold]
    unsafe fn mark_duties(&self, slot: SlotRef, duties: SampledDuties, started: u64) {
        // SAFETY: forwarded from the caller.
        let s = unsafe { slot.get() };
        let mut due = SlotFlags::EMPTY;
        if duties.contains(SampledDuties::HISTOGRAMS) {
            s.allocated_at.store(started, Relaxed);
            due |= SlotFlags::SAMPLED;
        }
        if duties.contains(SampledDuties::POISON) {
            due |= SlotFlags::POISON_DUE;
        }
        if duties.contains(SampledDuties::BACKTRACE) {
            due |= SlotFlags::BACKTRACE_DUE;
        }
        s.flags.store(s.flags.load() | due);
    }

    /// The histogram and backtrace duties of an allocation: records the
    /// histograms (`SAMPLED`, which began at `started`), captures a
    /// backtrace (`BACKTRACE_DUE`). Returns the flags the release then
    /// needs (`HAS_BACKTRACE`).
    #[cold]
    #[inline(never)]
    fn sampled_duties(
        &self,
        s: &Slot,
        flags: SlotFlags,
        started: u64,
        max_size: usize,
    ) -> SlotFlags {
        if flags.contains(SlotFlags::SAMPLED) {
            let now = clock::now_nanos();
            // Always there: the histograms are sampled only with metric
            // handles.
            if let Some(m) = &self.metrics {
                m.record_allocation(now.saturating_sub(started) as f64 * 1e-9, max_size);
            }
            // The precise stamp the hold time is measured from (also a more
            // precise leak age).
            s.allocated_at.store(now, Relaxed);
        }
        if !flags.contains(SlotFlags::BACKTRACE_DUE) {
            return SlotFlags::EMPTY;
        }
        let bt = Arc::new(Backtrace::force_capture());
        self.backtraces
            .lock()
            .insert(s.data().as_ptr() as usize, bt);
        SlotFlags::HAS_BACKTRACE
    }
}
