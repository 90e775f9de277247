//! Free lists: where released slots wait for their next owner.
//!
//! Each size class has one lock-free free list (a `crossbeam` `SegQueue`).
//! A `push` by the releasing thread *happens before* the `pop` that hands the
//! slot out again (the queue's release/acquire pair), so everything the last
//! owner wrote to the slot is visible to the next one, and the two never
//! overlap: a slot is on the list or owned by one buffer, never both.

use std::ptr::NonNull;

use crossbeam_queue::SegQueue;

use crate::slab::Slot;

/// A pointer to a free slot's metadata, as stored on a free list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotRef(pub(crate) NonNull<Slot>);

// SAFETY: a `SlotRef` is an address of a `Slot`, which is `Sync`; the slab that
// holds it outlives every `SlotRef` (slabs are unmapped only after their slots
// have been drained from the free list under the pool's slab lock).
unsafe impl Send for SlotRef {}

impl SlotRef {
    /// The slot's metadata.
    ///
    /// # Safety
    /// The slab holding the slot is still mapped (true for every `SlotRef` on
    /// a free list, and for the slot of every live buffer).
    #[inline]
    pub(crate) unsafe fn get<'a>(self) -> &'a Slot {
        // SAFETY: the caller guarantees the slab, and so its `slots` array, is alive.
        unsafe { self.0.as_ref() }
    }

    /// The slot's first byte.
    ///
    /// # Safety
    /// As for [`SlotRef::get`].
    #[inline]
    pub(crate) unsafe fn addr(self) -> usize {
        // SAFETY: forwarded to the caller.
        unsafe { self.get() }.data().as_ptr() as usize
    }
}

/// One class's free slots.
#[derive(Debug, Default)]
pub(crate) struct FreeList {
    queue: SegQueue<SlotRef>,
}

impl FreeList {
    /// Takes a free slot, if any.
    #[inline]
    pub(crate) fn pop(&self) -> Option<SlotRef> {
        self.queue.pop()
    }

    /// Gives a slot back.
    #[inline]
    pub(crate) fn push(&self, slot: SlotRef) {
        self.queue.push(slot)
    }

    /// Takes every slot currently on the list.
    pub(crate) fn drain(&self) -> Vec<SlotRef> {
        let mut out = Vec::with_capacity(self.queue.len());
        while let Some(s) = self.queue.pop() {
            out.push(s);
        }
        out
    }
}
