//! A bin: one thread's LIFO stack of free slots of one class, with the
//! batch moves to and from the depot's free list.

use std::ptr::NonNull;

use super::depot::FreeList;
use crate::mem::slot::SlotRef;
use crate::stats::{bump_own, ThreadClassCounters};

/// One class's free slots in a thread's cache.
pub(super) struct Bin {
    /// Free slots, most recently released last (LIFO). Capacity
    /// `limit + 1`, so a push never reallocates.
    pub(super) slots: Vec<SlotRef>,
    /// The most slots kept; 0 when the pool has no thread caches (every
    /// release then spills at once).
    pub(super) limit: usize,
    /// This thread's counters for the class: an element of the entry's
    /// `counters`, which the entry keeps alive.
    pub(super) counters: NonNull<ThreadClassCounters>,
}

impl Bin {
    /// An empty bin keeping at most `limit` slots, counting into `counters`
    /// (an element of its entry's counters, which outlive the bin).
    pub(super) fn new(limit: usize, counters: NonNull<ThreadClassCounters>) -> Bin {
        Bin {
            slots: Vec::with_capacity(limit + 1),
            limit,
            counters,
        }
    }

    #[inline(always)]
    pub(super) fn counters(&self) -> &ThreadClassCounters {
        // SAFETY: points into the owning entry's `counters`, alive as long
        // as the entry (and so this bin).
        unsafe { self.counters.as_ref() }
    }

    /// Pushes a released slot and counts it, if the bin is below its
    /// limit; returns whether it did (if not, it changed nothing).
    #[inline(always)]
    pub(super) fn push_within_limit(&mut self, slot: SlotRef) -> bool {
        let len = self.slots.len();
        if len >= self.limit {
            return false;
        }
        debug_assert!(self.slots.capacity() > len);
        // SAFETY: the capacity is `limit + 1` (see `slots`), more than
        // `len`: the write is inside the allocation, and the new element is
        // initialised before the length counts it.
        unsafe {
            self.slots.as_mut_ptr().add(len).write(slot);
            self.slots.set_len(len + 1);
        }
        bump_own(&self.counters().releases);
        true
    }

    /// Moves up to half a bin of free slots from `free` into this bin and
    /// returns one more for the caller.
    pub(super) fn refill(&mut self, free: &FreeList) -> Option<SlotRef> {
        let first = free.pop()?;
        let batch = self.limit / 2;
        while self.slots.len() < batch {
            match free.pop() {
                Some(slot) => self.slots.push(slot),
                None => break,
            }
        }
        Some(first)
    }

    /// Moves the older slots of an over-full bin to `free`, keeping half a
    /// bin (none with no caches).
    pub(super) fn spill(&mut self, free: &FreeList) {
        let keep = self.limit / 2;
        for slot in self.slots.drain(..self.slots.len() - keep) {
            free.push(slot);
        }
    }
}
