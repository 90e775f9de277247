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
use std::sync::{Arc, Weak};

use crossbeam_queue::SegQueue;

use crate::pool::PoolInner;
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
    /// For flushing at thread exit, and for pruning entries of dead pools.
    pool: Weak<PoolInner>,
    tally: Arc<Tally>,
    /// Free slots by class, most recently released last (LIFO: the next
    /// allocation gets the slot whose lines and pages are still hot).
    stacks: Box<[Vec<SlotRef>]>,
    /// The pool's `flush_epoch` this cache has caught up with.
    epoch: u32,
}

impl Entry {
    /// Returns every cached slot to the pool's free lists.
    fn flush(&mut self, pool: &PoolInner) {
        for (idx, stack) in self.stacks.iter_mut().enumerate() {
            for slot in stack.drain(..) {
                pool.class_state[idx].free.push(slot);
            }
        }
    }

    /// Flushes if the pool asked every thread to.
    #[inline]
    fn catch_up(&mut self, pool: &PoolInner) {
        let epoch = pool.flush_epoch.load(Relaxed);
        if epoch != self.epoch {
            self.flush(pool);
            self.epoch = epoch;
        }
    }
}

/// The calling thread's caches, one entry per pool it has used.
struct ThreadCaches(RefCell<Vec<Entry>>);

impl Drop for ThreadCaches {
    /// At thread exit: give the slots back and fold the counters into the
    /// pool's, so nothing is stranded and `stats()` stays exact.
    fn drop(&mut self) {
        for mut entry in self.0.get_mut().drain(..) {
            if let Some(pool) = entry.pool.upgrade() {
                entry.flush(&pool);
                pool.retire_tally(&entry.tally);
            }
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
            let mut entries = caches.0.borrow_mut();
            let at = match entries.iter().position(|e| e.id == pool.id) {
                Some(at) => at,
                None => new_entry(&mut entries, pool),
            };
            f(&mut entries[at])
        })
        .ok()
}

#[cold]
fn new_entry(entries: &mut Vec<Entry>, pool: &Arc<PoolInner>) -> usize {
    // Entries of dropped pools hold no memory worth keeping.
    entries.retain(|e| e.pool.strong_count() > 0);
    let classes = pool.classes.len();
    let tally = Arc::new(Tally::new(classes));
    pool.register_tally(Arc::clone(&tally));
    entries.push(Entry {
        id: pool.id,
        pool: Arc::downgrade(pool),
        tally,
        stacks: (0..classes)
            .map(|i| Vec::with_capacity(pool.cache_slots[i] + 1))
            .collect(),
        epoch: pool.flush_epoch.load(Relaxed),
    });
    entries.len() - 1
}

/// Takes a free slot of class `idx` from this thread's cache, refilling it
/// from the pool's free list in a batch when empty. `None`: no free slot
/// anywhere (or no cache on this thread); the caller takes the slow path.
#[inline]
pub(crate) fn pop(pool: &Arc<PoolInner>, idx: usize) -> Option<SlotRef> {
    with_entry(pool, |e| {
        e.catch_up(pool);
        let slot = match e.stacks[idx].pop() {
            Some(slot) => slot,
            None => refill(e, pool, idx)?,
        };
        bump(&e.tally.classes[idx].hits);
        Some(slot)
    })
    .flatten()
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

/// Puts a released slot of class `idx` in this thread's cache, spilling half
/// of it to the pool's free list when full. `false`: no cache on this thread
/// (it is exiting); the caller frees the slot to the pool itself.
#[inline]
pub(crate) fn push(pool: &Arc<PoolInner>, idx: usize, slot: SlotRef) -> bool {
    with_entry(pool, |e| {
        e.catch_up(pool);
        let stack = &mut e.stacks[idx];
        stack.push(slot);
        if stack.len() > pool.cache_slots[idx] {
            spill(stack, pool, idx);
        }
        bump(&e.tally.classes[idx].releases);
    })
    .is_some()
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
    let _ = with_entry(pool, |e| e.flush(pool));
}
