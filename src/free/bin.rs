//! A bin: one thread's LIFO stack of free slots of one class, with the
//! batch moves to and from the depot's free list.

use std::ptr::NonNull;

use super::depot::FreeList;
use crate::mem::slot::SlotRef;
use crate::stats::{bump_own, ThreadClassCounters};

/// The fewest slots a spill moves as one batch: below it, a queue push
/// each costs less than the batch's two lock round trips.
const MIN_BATCH: usize = 4;

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

    /// Moves up to half a bin of free slots from `free` into this empty
    /// bin and returns one more for the caller: a batch another bin spilled,
    /// taken whole as this bin's stack (the stacks all have the capacity
    /// `slots` needs), else singles one at a time.
    pub(super) fn refill(&mut self, free: &FreeList) -> Option<SlotRef> {
        debug_assert!(self.slots.is_empty());
        if free.refill_batch(&mut self.slots) {
            debug_assert!(self.slots.capacity() > self.limit);
            return self.slots.pop();
        }
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
    /// bin (none with no caches): as one batch when there are at least
    /// [`MIN_BATCH`] of them, else one at a time.
    pub(super) fn spill(&mut self, free: &FreeList) {
        let keep = self.limit / 2;
        let n = self.slots.len() - keep;
        if n < MIN_BATCH {
            for slot in self.slots.drain(..n) {
                free.push(slot);
            }
        } else {
            free.spill_batch(&mut self.slots, n);
            debug_assert!(self.slots.capacity() > self.limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::slot::Slot;
    use crate::stats::ThreadClassCounters;

    /// `n` slots (metadata only: the tests never touch their bytes).
    fn slots(n: usize) -> Vec<Slot> {
        (0..n).map(|_| Slot::detached()).collect()
    }

    #[test]
    fn a_spill_moves_the_older_half_as_one_batch_that_a_refill_takes_whole() {
        let counters = ThreadClassCounters::default();
        let free = FreeList::default();
        let meta = slots(65);
        let all: Vec<SlotRef> = meta.iter().map(SlotRef::new).collect();
        let mut bin = Bin::new(64, NonNull::from(&counters));
        bin.slots.extend_from_slice(&all);
        bin.spill(&free);
        // The newer half stays, in a stack of the bin's capacity.
        assert_eq!(bin.slots, all[33..]);
        assert!(bin.slots.capacity() > bin.limit);
        let mut other = Bin::new(64, NonNull::from(&counters));
        assert_eq!(other.refill(&free), Some(all[32]));
        assert_eq!(other.slots, all[..32]);
        assert!(other.slots.capacity() > other.limit);
        assert!(free.pop().is_none(), "the batch went whole, nothing alone");
        // A spill hands over the bin's own stack: the batch is not copied.
        let old = other.slots.as_ptr();
        other.slots.extend_from_slice(&all[32..]);
        other.spill(&free);
        let mut third = Bin::new(64, NonNull::from(&counters));
        assert_eq!(third.refill(&free), Some(all[32]));
        assert_eq!(third.slots.as_ptr(), old);
    }

    /// A producer's refills can run far ahead of its consumers' spills:
    /// the stacks they leave wait for those spills, which then allocate
    /// none, up to `MAX_SPARES`.
    #[test]
    fn spills_take_the_stacks_a_run_of_refills_left() {
        use super::super::depot::MAX_SPARES;
        let free = FreeList::default();
        let meta = slots(MIN_BATCH);
        let batch: Vec<SlotRef> = meta.iter().map(SlotRef::new).collect();
        for run in [200, MAX_SPARES + 10] {
            let mut stack = Vec::with_capacity(65);
            for _ in 0..run {
                stack.extend_from_slice(&batch);
                free.spill_batch(&mut stack, MIN_BATCH);
            }
            for _ in 0..run {
                let mut empty = Vec::with_capacity(65);
                assert!(free.refill_batch(&mut empty));
            }
            // A hand-off's 128 batches in flight, and more, are all kept.
            let kept = if run == 200 { 200 } else { MAX_SPARES };
            assert_eq!(free.spares(), kept);
            let mut stack = Vec::with_capacity(65);
            for _ in 0..kept {
                stack.extend_from_slice(&batch);
                free.spill_batch(&mut stack, MIN_BATCH);
            }
            assert_eq!(free.spares(), 0, "every spill took a spare");
            drop(free.drain());
        }
    }

    #[test]
    fn a_small_spill_goes_one_at_a_time_and_pop_and_drain_reach_batches() {
        let counters = ThreadClassCounters::default();
        let free = FreeList::default();
        let meta = slots(8);
        let all: Vec<SlotRef> = meta.iter().map(SlotRef::new).collect();
        // A bin of 4: a spill of 3 is below `MIN_BATCH`.
        let mut bin = Bin::new(4, NonNull::from(&counters));
        bin.slots.extend_from_slice(&all[..5]);
        bin.spill(&free);
        assert_eq!(bin.slots, all[3..5]);
        let mut big = all[5..].to_vec();
        big.reserve(8);
        free.spill_batch(&mut big, 3);
        // Singles first, then the batch's slots one by one.
        let popped: Vec<SlotRef> = std::iter::from_fn(|| free.pop()).take(4).collect();
        assert_eq!(popped, [all[0], all[1], all[2], all[7]]);
        let mut rest = free.drain();
        rest.sort_by_key(|s| all.iter().position(|a| a == s));
        assert_eq!(rest, all[5..7]);
        assert!(free.pop().is_none());
    }
}
