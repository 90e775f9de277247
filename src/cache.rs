//! Free lists: where released slots wait for their next owner.
//!
//! Two levels. Each thread keeps, per pool and class, a small LIFO stack of
//! free slots (at most 1 MiB or 64 slots a class) that only it touches: the
//! hot path pops and pushes there with no atomic read-modify-write at all,
//! and reuses the slot whose cache lines and TLB entry are still warm. Behind
//! the stacks each class has one lock-free free list (a `crossbeam`
//! `SegQueue`) that stacks refill from and spill to in batches of half a
//! stack, so buffers released on another thread than the one that allocated
//! them (the media-server pattern) flow back. A thread's stack is returned
//! when the thread exits, and whenever the pool bumps its flush epoch (`trim`,
//! and an allocation about to fail with `Exhausted`): active threads then
//! return their cached slots at their next call.
//!
//! Handing a slot over through the `SegQueue`:
//! A `push` by the releasing thread *happens before* the `pop` that hands the
//! slot out again (the queue's release/acquire pair), so everything the last
//! owner wrote to the slot is visible to the next one, and the two never
//! overlap: a slot is on the list or owned by one buffer, never both.

use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_queue::SegQueue;

use crate::anchor::Anchor;
use crate::pool::PoolInner;
use crate::slab::Slot;
use crate::Error;

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

/// Bytes of one class a thread may keep in its cache (at least one slot, at
/// most [`THREAD_CACHE_SLOTS`]).
pub(crate) const THREAD_CACHE_BYTES: usize = 1 << 20;
/// The most slots of one class a thread keeps.
pub(crate) const THREAD_CACHE_SLOTS: usize = 64;

/// How many slots of `slot_bytes` a thread cache keeps.
pub(crate) fn thread_cache_slots(slot_bytes: usize) -> usize {
    (THREAD_CACHE_BYTES / slot_bytes).clamp(1, THREAD_CACHE_SLOTS)
}

/// One thread's counters for one pool, by class. Only the owning thread
/// writes them (a load and a store, no locked instruction); `stats()` reads
/// them through the pool's registry.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) classes: Box<[ClassTally]>,
}

/// A thread's hits and releases in one class.
#[derive(Debug, Default)]
pub(crate) struct ClassTally {
    pub(crate) hits: AtomicU64,
    pub(crate) releases: AtomicU64,
}

impl Tally {
    fn new(classes: usize) -> Self {
        Tally {
            classes: (0..classes).map(|_| ClassTally::default()).collect(),
        }
    }
}

/// Adds one to a counter only this thread writes.
#[inline]
fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed) + 1, Relaxed);
}

/// One thread's cache for one pool.
struct Entry {
    /// The pool's unique id (`PoolInner::id`); never reused, so an entry of a
    /// dropped pool never matches a new one.
    id: u64,
    /// This thread's anchor for the pool: its `pool` is the pool, kept alive
    /// by the anchor until the entry retires it.
    anchor: NonNull<Anchor>,
    tally: Arc<Tally>,
    /// Free slots by class, most recently released last (LIFO: the next
    /// allocation gets the slot whose lines and pages are still hot).
    stacks: Box<[Vec<SlotRef>]>,
    /// The pool's `flush_epoch` this cache has caught up with.
    epoch: u32,
}

impl Entry {
    fn pool(&self) -> &PoolInner {
        // SAFETY: the entry holds the owner's reference to its anchor until
        // `retire` below, so the anchor (and its pool) is live.
        unsafe { &self.anchor.as_ref().pool }
    }

    /// Returns every cached slot to the pool's free lists.
    fn flush(&mut self) {
        // SAFETY: as in `pool`; the stacks are borrowed separately.
        let pool = unsafe { &*std::ptr::addr_of!(self.anchor.as_ref().pool) };
        for (idx, stack) in self.stacks.iter_mut().enumerate() {
            for slot in stack.drain(..) {
                pool.class_state[idx].free.push(slot);
            }
        }
    }

    /// Flushes if the pool asked every thread to.
    #[inline]
    fn catch_up(&mut self) {
        let epoch = self.pool().flush_epoch.load(Relaxed);
        if epoch != self.epoch {
            self.flush();
            self.epoch = epoch;
        }
    }

    /// Gives everything back: slots, counters, and the anchor reference.
    fn retire(mut self) {
        self.flush();
        self.pool().retire_tally(&self.tally);
        // SAFETY: we are the owning thread, retiring once; `self` (and with it
        // the pointer) is dropped right after.
        unsafe { Anchor::retire(self.anchor) };
    }
}

/// The calling thread's caches, one entry per pool it has used.
struct ThreadCaches(RefCell<Vec<Entry>>);

impl Drop for ThreadCaches {
    /// At thread exit: give the slots back, fold the counters into the
    /// pool's (so nothing is stranded and `stats()` stays exact), and drop
    /// this thread's references to the pools.
    fn drop(&mut self) {
        for entry in self.0.get_mut().drain(..) {
            entry.retire();
        }
    }
}

thread_local! {
    static CACHES: ThreadCaches = const { ThreadCaches(RefCell::new(Vec::new())) };
}

/// Runs `f` on this thread's cache for `pool` (made on first use). `None`
/// when the thread is exiting and its caches are gone.
#[inline]
fn with_entry<R>(pool: &Arc<PoolInner>, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
    CACHES
        .try_with(|caches| {
            let mut entries = caches.0.try_borrow_mut().ok()?;
            let at = match entries.iter().position(|e| e.id == pool.id) {
                Some(at) => at,
                // A closed pool only takes buffers back: no new entry.
                None if pool.is_closed() => return None,
                None => new_entry(&mut entries, pool),
            };
            Some(f(&mut entries[at]))
        })
        .ok()
        .flatten()
}

#[cold]
fn new_entry(entries: &mut Vec<Entry>, pool: &Arc<PoolInner>) -> usize {
    // Entries of closed pools: give their memory back now.
    let mut i = 0;
    while i < entries.len() {
        if entries[i].pool().is_closed() {
            entries.swap_remove(i).retire();
        } else {
            i += 1;
        }
    }
    let classes = pool.classes.len();
    let tally = Arc::new(Tally::new(classes));
    pool.register_tally(Arc::clone(&tally));
    entries.push(Entry {
        id: pool.id,
        anchor: Anchor::new(Arc::clone(pool)),
        tally,
        stacks: (0..classes)
            .map(|i| Vec::with_capacity(pool.cache_slots.get(i).map_or(0, |n| n + 1)))
            .collect(),
        epoch: pool.flush_epoch.load(Relaxed),
    });
    entries.len() - 1
}

/// Takes a slot of class `idx` for a new buffer: from this thread's cache,
/// refilled from the pool's free list in a batch when empty, else from the
/// pool's slow path. Returns the slot and the anchor the buffer must hold.
#[inline]
pub(crate) fn acquire(
    pool: &Arc<PoolInner>,
    idx: usize,
    max_size: usize,
) -> Result<(SlotRef, NonNull<Anchor>), Error> {
    let got = with_entry(pool, |e| {
        let slot = if pool.cache_slots.is_empty() {
            None
        } else {
            e.catch_up();
            match e.stacks[idx].pop() {
                Some(slot) => Some(slot),
                None => refill(e, pool, idx),
            }
        };
        if slot.is_some() {
            bump(&e.tally.classes[idx].hits);
        }
        (slot, e.anchor)
    });
    let (slot, anchor) = match got {
        Some((Some(slot), anchor)) => (slot, anchor),
        Some((None, anchor)) => (pool.allocate_shared(idx, max_size)?, anchor),
        // This thread is exiting: no cache, and an anchor of its own.
        None => {
            let slot = pool.allocate_shared(idx, max_size)?;
            return Ok((slot, Anchor::detached(Arc::clone(pool))));
        }
    };
    // SAFETY: `anchor` is this thread's live entry's anchor, not retired.
    unsafe { anchor.as_ref().issue() };
    Ok((slot, anchor))
}

/// Moves up to half a cache of free slots from the pool's list into ours.
#[cold]
fn refill(e: &mut Entry, pool: &PoolInner, idx: usize) -> Option<SlotRef> {
    let free = &pool.class_state[idx].free;
    let first = free.pop()?;
    let batch = pool.cache_slots[idx] / 2;
    let stack = &mut e.stacks[idx];
    while stack.len() < batch {
        match free.pop() {
            Some(slot) => stack.push(slot),
            None => break,
        }
    }
    Some(first)
}

/// Takes back the slot of class `idx` of a buffer issued through `anchor`:
/// into this thread's cache (spilling half to the pool's free list when full)
/// or the pool's free list, counted. Returns whether the buffer's reference
/// on `anchor` was settled here (this thread owns it); if not, the caller
/// must end with [`Anchor::release_remote`].
#[inline]
pub(crate) fn give_back(
    pool: &Arc<PoolInner>,
    idx: usize,
    slot: SlotRef,
    anchor: NonNull<Anchor>,
) -> bool {
    let owned = with_entry(pool, |e| {
        if pool.cache_slots.is_empty() {
            pool.free_shared(idx, slot);
        } else {
            e.catch_up();
            let stack = &mut e.stacks[idx];
            stack.push(slot);
            if stack.len() > pool.cache_slots[idx] {
                spill(stack, pool, idx);
            }
            bump(&e.tally.classes[idx].releases);
        }
        let owned = e.anchor == anchor;
        if owned {
            // SAFETY: this thread owns the anchor (it is its live entry's).
            unsafe { anchor.as_ref().release_local() };
        }
        owned
    });
    match owned {
        Some(owned) => owned,
        None => {
            pool.free_shared(idx, slot);
            false
        }
    }
}

/// Moves the older half of a full cache to the pool's free list.
#[cold]
fn spill(stack: &mut Vec<SlotRef>, pool: &PoolInner, idx: usize) {
    let keep = pool.cache_slots[idx] / 2;
    for slot in stack.drain(..stack.len() - keep) {
        pool.class_state[idx].free.push(slot);
    }
}

/// Returns this thread's cached slots of `pool` to its free lists.
pub(crate) fn flush_current(pool: &Arc<PoolInner>) {
    let _ = with_entry(pool, |e| e.flush());
}

/// Settles a released buffer's reference on `anchor` when this thread owns
/// it (the buffer's slot went elsewhere, e.g. to quarantine). Returns
/// whether it did; if not, the caller ends with [`Anchor::release_remote`].
pub(crate) fn settle(pool: &Arc<PoolInner>, anchor: NonNull<Anchor>) -> bool {
    with_entry(pool, |e| {
        let owned = e.anchor == anchor;
        if owned {
            // SAFETY: this thread owns the anchor (it is its live entry's).
            unsafe { anchor.as_ref().release_local() };
        }
        owned
    })
    .unwrap_or(false)
}
