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

use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_queue::SegQueue;

use crate::anchor::Anchor;
use crate::clock;
use crate::pool::PoolInner;
use crate::sample::{self, Sampler};
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
#[inline(always)]
fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed) + 1, Relaxed);
}

/// One class's free slots in a thread's cache.
struct Bin {
    /// Free slots, most recently released last (LIFO: the next allocation
    /// gets the slot whose lines and pages are still hot). Capacity
    /// `limit + 1`, so a push never reallocates.
    slots: Vec<SlotRef>,
    /// The most slots kept; 0 when the pool has no thread caches (every
    /// release then spills at once).
    limit: usize,
    /// This thread's counters for the class: an element of the entry's
    /// `tally`, which the entry keeps alive.
    tally: NonNull<ClassTally>,
}

impl Bin {
    #[inline(always)]
    fn tally(&self) -> &ClassTally {
        // SAFETY: points into the owning entry's `tally`, alive as long as
        // the entry (and so this bin).
        unsafe { self.tally.as_ref() }
    }

    /// Pushes a released slot and counts it, if the bin is below its
    /// limit; returns whether it did (if not, it changed nothing).
    #[inline(always)]
    fn push_within_limit(&mut self, slot: SlotRef) -> bool {
        let len = self.slots.len();
        if len >= self.limit {
            return false;
        }
        // SAFETY: the capacity is `limit + 1` (see `slots`), more than
        // `len`: the write is inside the allocation, and the new element is
        // initialised before the length counts it.
        unsafe {
            self.slots.as_mut_ptr().add(len).write(slot);
            self.slots.set_len(len + 1);
        }
        bump(&self.tally().releases);
        true
    }
}

/// One thread's cache for one pool.
struct Entry {
    /// The pool: the anchor's, kept alive by it until the entry retires.
    pool: NonNull<PoolInner>,
    /// This thread's anchor for the pool.
    anchor: NonNull<Anchor>,
    /// Buffers issued through `anchor` minus those this thread took back:
    /// the owner's side of the anchor's count (see `anchor.rs`).
    issued: isize,
    /// The pool's `flush_epoch` this cache has caught up with.
    epoch: u32,
    /// This thread's countdown to its next sampled allocation.
    sampler: Sampler,
    /// Free slots by class.
    bins: Box<[Bin]>,
    /// This thread's counters, registered with the pool for `stats()`.
    tally: Arc<Tally>,
    /// The pool's unique id (`PoolInner::id`); never reused, so an entry of a
    /// dropped pool never matches a new one.
    id: u64,
}

impl Entry {
    #[inline(always)]
    fn pool(&self) -> &PoolInner {
        // SAFETY: the entry holds the owner's reference to its anchor until
        // `retire`, and the anchor holds the pool.
        unsafe { self.pool.as_ref() }
    }

    /// Returns every cached slot to the pool's free lists.
    fn flush(&mut self) {
        // SAFETY: as in `pool`; borrowed apart from the bins.
        let pool = unsafe { self.pool.as_ref() };
        for (idx, bin) in self.bins.iter_mut().enumerate() {
            for slot in bin.slots.drain(..) {
                pool.class_state[idx].free.push(slot);
            }
        }
    }

    /// Flushes if the pool asked every thread to (the fast paths compare
    /// the epochs themselves and come here when they differ).
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
        // SAFETY: we are the owning thread, retiring once with our final
        // count; `self` (and with it the pointer) is dropped right after.
        unsafe { Anchor::retire(self.anchor, self.issued) };
    }
}

/// The calling thread's caches, one entry per pool it has used. Each entry
/// is boxed so that [`FAST`] can point at it while the list grows.
#[allow(clippy::vec_box)]
struct ThreadCaches(RefCell<Vec<Box<Entry>>>);

impl Drop for ThreadCaches {
    /// At thread exit: give the slots back, fold the counters into the
    /// pool's (so nothing is stranded and `stats()` stays exact), and drop
    /// this thread's references to the pools.
    fn drop(&mut self) {
        // First, so no later call (another thread-local's destructor that
        // drops a buffer) reaches an entry through the shortcut.
        FAST.with(Fast::clear);
        for entry in self.0.get_mut().drain(..) {
            (*entry).retire();
        }
    }
}

/// The calling thread's most recently used entry, tried before the list: a
/// plain thread-local with no destructor, so reaching it costs one load
/// relative to the thread pointer, no `RefCell` and no search.
///
/// Invariant: both are null, or `entry` points to a live entry in this
/// thread's [`CACHES`] list whose pool is `pool` (the entry's anchor keeps
/// that pool alive, so no other pool can have its address meanwhile).
/// Every removal from the list clears this first.
struct Fast {
    pool: Cell<*const PoolInner>,
    entry: Cell<*mut Entry>,
}

impl Fast {
    fn clear(&self) {
        self.pool.set(std::ptr::null());
        self.entry.set(std::ptr::null_mut());
    }
}

thread_local! {
    static CACHES: ThreadCaches = const { ThreadCaches(RefCell::new(Vec::new())) };
    static FAST: Fast = const {
        Fast {
            pool: Cell::new(std::ptr::null()),
            entry: Cell::new(std::ptr::null_mut()),
        }
    };
}

/// Runs `f` on this thread's cache for `pool` (made on first use). `None`
/// when the thread is exiting and its caches are gone.
///
/// `f` gets the entry exclusively, so it must not call back into this
/// module's entry points; no caller's closure does.
#[inline]
fn with_entry<R>(pool: &Arc<PoolInner>, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
    match fast_entry(pool) {
        // SAFETY: `FAST`'s invariant: a live entry of this thread for `pool`.
        // Only this thread reaches it, and no other reference to it is alive:
        // `with_entry` is not re-entered from `f`, and the slow path's
        // `RefCell` borrow has ended.
        Some(mut entry) => Some(f(unsafe { entry.as_mut() })),
        None => with_entry_slow(pool, f),
    }
}

/// `with_entry` when the shortcut points elsewhere: search the list, make
/// the entry if needed, and point the shortcut at it.
#[cold]
#[inline(never)]
fn with_entry_slow<R>(pool: &Arc<PoolInner>, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
    CACHES
        .try_with(|caches| {
            let mut entries = caches.0.try_borrow_mut().ok()?;
            let at = match entries.iter().position(|e| e.id == pool.id) {
                Some(at) => at,
                // A closed pool only takes buffers back: no new entry.
                None if pool.is_closed() => return None,
                None => new_entry(&mut entries, pool),
            };
            let entry = &mut entries[at];
            FAST.with(|fast| {
                fast.pool.set(Arc::as_ptr(pool));
                fast.entry.set(&mut **entry);
            });
            Some(f(entry))
        })
        .ok()
        .flatten()
}

#[cold]
#[allow(clippy::vec_box)] // see `ThreadCaches`
fn new_entry(entries: &mut Vec<Box<Entry>>, pool: &Arc<PoolInner>) -> usize {
    // Entries of closed pools: give their memory back now (the shortcut may
    // point at one of them).
    FAST.with(Fast::clear);
    let mut i = 0;
    while i < entries.len() {
        if entries[i].pool().is_closed() {
            (*entries.swap_remove(i)).retire();
        } else {
            i += 1;
        }
    }
    let classes = pool.classes.len();
    let tally = Arc::new(Tally::new(classes));
    pool.register_tally(Arc::clone(&tally));
    let bins = (0..classes)
        .map(|i| {
            let limit = pool.cache_slots.get(i).copied().unwrap_or(0);
            Bin {
                slots: Vec::with_capacity(limit + 1),
                limit,
                tally: NonNull::from(&tally.classes[i]),
            }
        })
        .collect();
    entries.push(Box::new(Entry {
        pool: NonNull::from(&**pool),
        anchor: Anchor::new(Arc::clone(pool)),
        issued: 0,
        epoch: pool.flush_epoch.load(Relaxed),
        sampler: Sampler::new(pool.sample_rates),
        bins,
        tally,
        id: pool.id,
    }));
    entries.len() - 1
}

/// This thread's entry for `pool` if the shortcut points at it.
#[inline(always)]
fn fast_entry(pool: &Arc<PoolInner>) -> Option<NonNull<Entry>> {
    FAST.with(|fast| {
        if fast.pool.get() == Arc::as_ptr(pool) {
            // SAFETY: `FAST`'s invariant: its pool is null or its entry is
            // not, and `pool` is not null.
            Some(unsafe { NonNull::new_unchecked(fast.entry.get()) })
        } else {
            None
        }
    })
}

/// The fast paths' entry: this thread's entry for `pool` through the
/// shortcut, if it has caught up with the pool's flush requests (else the
/// caller's slow path flushes it).
///
/// The reference is exclusive for as long as the caller uses it: only
/// this thread reaches the entry, and the fast paths neither re-enter this
/// module nor keep the reference past their return.
#[inline(always)]
fn ready_entry<'a>(pool: &Arc<PoolInner>) -> Option<&'a mut Entry> {
    let mut e = fast_entry(pool)?;
    // SAFETY: `FAST`'s invariant: a live entry of this thread for `pool`
    // (every removal from the list clears the shortcut first), reached by
    // no other reference while the caller uses it (see `with_entry`).
    let e = unsafe { e.as_mut() };
    if e.epoch != pool.flush_epoch.load(Relaxed) {
        return None;
    }
    Some(e)
}

/// Takes a slot of class `idx` for a new buffer: from this thread's cache,
/// refilled from the pool's free list in a batch when empty, else from the
/// pool's slow path. Returns the slot, marked with the allocation's sampled
/// duties if any (see `PoolInner::mark_duties`), and the anchor the buffer
/// must hold (it was counted there).
///
/// The common case (the shortcut's entry, caught up with the pool's flush
/// requests, no sampled duty, a cached slot) is inline and touches only the
/// entry and its bin; everything else is out of line.
#[inline(always)]
pub(crate) fn acquire(
    pool: &Arc<PoolInner>,
    idx: usize,
    max_size: usize,
) -> Result<(SlotRef, NonNull<Anchor>), Error> {
    if let Some(mut e) = fast_entry(pool) {
        // SAFETY: as in `ready_entry` (written out here: with it, the
        // compiler lays this path out with four more instructions).
        let e = unsafe { e.as_mut() };
        if e.epoch == pool.flush_epoch.load(Relaxed) && e.sampler.quiet() {
            // SAFETY: `idx` is a class of this pool (the caller got it from
            // `index_for` of a checked size), and there is one bin a class.
            let bin = unsafe { e.bins.get_unchecked_mut(idx) };
            if let Some(slot) = bin.slots.pop() {
                e.sampler.count_quiet();
                bump(&bin.tally().hits);
                e.issued += 1;
                return Ok((slot, e.anchor));
            }
        }
    }
    acquire_slow(pool, idx, max_size)
}

/// `acquire` when the cache has nothing at hand, or the allocation is
/// sampled.
#[cold]
#[inline(never)]
fn acquire_slow(
    pool: &Arc<PoolInner>,
    idx: usize,
    max_size: usize,
) -> Result<(SlotRef, NonNull<Anchor>), Error> {
    let got = with_entry(pool, |e| {
        e.catch_up();
        let duties = e.sampler.count();
        let started = if duties & sample::HISTOGRAMS != 0 {
            clock::now_nanos()
        } else {
            0
        };
        e.issued += 1;
        let bin = &mut e.bins[idx];
        let slot = match bin.slots.pop() {
            Some(slot) => Some(slot),
            None => refill(bin, &pool.class_state[idx].free),
        };
        if slot.is_some() {
            bump(&bin.tally().hits);
        }
        (slot, e.anchor, duties, started)
    });
    let (slot, anchor, duties, started) = match got {
        Some((Some(slot), anchor, duties, started)) => (slot, anchor, duties, started),
        Some((None, anchor, duties, started)) => match pool.allocate_shared(idx, max_size) {
            Ok(slot) => (slot, anchor, duties, started),
            Err(e) => {
                // Not issued after all.
                let _ = with_entry(pool, |e| e.issued -= 1);
                return Err(e);
            }
        },
        // This thread is exiting: no cache, and an anchor of its own; no
        // sampling either.
        None => {
            let slot = pool.allocate_shared(idx, max_size)?;
            return Ok((slot, Anchor::detached(Arc::clone(pool))));
        }
    };
    if duties != 0 {
        // SAFETY: the slot was just taken for this allocation alone.
        unsafe { pool.mark_duties(slot, duties, started) };
    }
    Ok((slot, anchor))
}

/// Moves up to half a cache of free slots from the pool's list into ours.
fn refill(bin: &mut Bin, free: &FreeList) -> Option<SlotRef> {
    let first = free.pop()?;
    let batch = bin.limit / 2;
    while bin.slots.len() < batch {
        match free.pop() {
            Some(slot) => bin.slots.push(slot),
            None => break,
        }
    }
    Some(first)
}

/// The release fast path: if this thread issued the buffer (its entry's
/// anchor is `anchor`), the cache is caught up and the bin has room, marks
/// slot `s` free, pushes it, counts it and settles the buffer's reference;
/// returns whether it did (if not, it changed nothing).
#[inline(always)]
pub(crate) fn give_back_own(
    pool: &Arc<PoolInner>,
    s: &Slot,
    slot: SlotRef,
    anchor: NonNull<Anchor>,
) -> bool {
    let Some(e) = ready_entry(pool) else {
        return false;
    };
    if e.anchor != anchor {
        return false;
    }
    // SAFETY: the class of a slot of this pool; one bin a class.
    let bin = unsafe { e.bins.get_unchecked_mut(s.class()) };
    if !bin.push_within_limit(slot) {
        return false;
    }
    s.give_back();
    e.issued -= 1;
    true
}

/// Takes back the slot of class `idx` of a buffer issued through `anchor`:
/// into this thread's cache (spilling half to the pool's free list when full,
/// everything when the pool keeps no caches) or the pool's free list,
/// counted. Returns whether the buffer's reference on `anchor` was settled
/// here (this thread owns it); if not, the caller must end with
/// [`Anchor::release_remote`].
///
/// The common case (the shortcut's entry, room in the bin) is inline.
#[inline(always)]
pub(crate) fn give_back(
    pool: &Arc<PoolInner>,
    idx: usize,
    slot: SlotRef,
    anchor: NonNull<Anchor>,
) -> bool {
    if let Some(e) = ready_entry(pool) {
        // SAFETY: `idx` is the class of a slot of this pool.
        let bin = unsafe { e.bins.get_unchecked_mut(idx) };
        if bin.push_within_limit(slot) {
            return settle_in(e, anchor);
        }
    }
    give_back_slow(pool, idx, slot, anchor)
}

/// `give_back` when the bin is full (or the pool keeps no caches).
#[cold]
#[inline(never)]
fn give_back_slow(
    pool: &Arc<PoolInner>,
    idx: usize,
    slot: SlotRef,
    anchor: NonNull<Anchor>,
) -> bool {
    let owned = with_entry(pool, |e| {
        e.catch_up();
        let bin = &mut e.bins[idx];
        bin.slots.push(slot);
        bump(&bin.tally().releases);
        if bin.slots.len() > bin.limit {
            spill(bin, &pool.class_state[idx].free);
        }
        settle_in(e, anchor)
    });
    match owned {
        Some(owned) => owned,
        None => {
            pool.free_shared(idx, slot);
            false
        }
    }
}

/// Settles a buffer's reference on `anchor` if it is this entry's.
#[inline(always)]
fn settle_in(e: &mut Entry, anchor: NonNull<Anchor>) -> bool {
    let owned = e.anchor == anchor;
    if owned {
        e.issued -= 1;
    }
    owned
}

/// Moves the older half of a full cache (all of it with no caches) to the
/// pool's free list.
fn spill(bin: &mut Bin, free: &FreeList) {
    let keep = bin.limit / 2;
    for slot in bin.slots.drain(..bin.slots.len() - keep) {
        free.push(slot);
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
    with_entry(pool, |e| settle_in(e, anchor)).unwrap_or(false)
}
