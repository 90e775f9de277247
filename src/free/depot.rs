//! The depot: what a pool's thread caches share. Each class's free list
//! (lock-free singles, and spilled batches under a leaf lock) and counters,
//! the flush epoch, the cache limits, the abandoned flag, the waiters for
//! room, and the registry of every thread's counters.
//!
//! Handing a slot over through a free list: a `push` by the releasing thread
//! *happens before* the `pop` that hands the slot out again (the queue's
//! release/acquire pair, or the batch lock's), so everything the last owner
//! wrote to the slot is visible to the next one, and the two never overlap: a slot is on the list
//! or owned by one buffer, never both.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::sync::Arc;

use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;

use crate::class::{ClassIdx, SizeClasses};
use crate::limits::{THREAD_CACHE_BYTES, THREAD_CACHE_SLOTS};
use crate::mem::slot::SlotRef;
use crate::stats::{ClassCounters, ClassStats, ThreadCounters};
use crate::sync::{AtomicBool, AtomicU32, Mutex};
use crate::waitlist::WaitList;

/// One class's free slots: those given back one at a time, and whole
/// batches a thread cache spilled, which a refill takes whole, so a bin's
/// worth moves between threads in one step rather than one queue operation
/// per slot (the producer → consumers pattern: consumers spill what a
/// producer refills).
#[derive(Debug, Default)]
pub(crate) struct FreeList {
    singles: SegQueue<SlotRef>,
    /// A leaf lock: nothing else is taken while it is held.
    batches: Mutex<Batches>,
}

/// The spilled batches of a class, and the empty stacks refills left.
///
/// Invariant: every stack in `full` or `spares` has the capacity of the
/// class's bins (`limit + 1`: they all were bins' stacks), so each can
/// become a bin's stack again; those in `full` are non-empty, those in
/// `spares` empty.
#[derive(Debug, Default)]
struct Batches {
    full: Vec<Vec<SlotRef>>,
    spares: Vec<Vec<SlotRef>>,
}

/// Empty stacks a class keeps for spills (beyond them, a refill's old
/// stack is freed; trim and decay free them all): as many as a producer's
/// refills run ahead of its consumers' spills (a 16-deep channel of 64
/// buffers of 64 KiB is 128 batches), at most 256 × 520 bytes a class.
pub(super) const MAX_SPARES: usize = 256;

impl FreeList {
    /// Takes a free slot, if any: a single, else one from a batch.
    #[inline]
    pub(crate) fn pop(&self) -> Option<SlotRef> {
        if let Some(slot) = self.singles.pop() {
            return Some(slot);
        }
        self.pop_from_batch()
    }

    /// `pop` when there is no single: the last slot of the last batch.
    #[cold]
    fn pop_from_batch(&self) -> Option<SlotRef> {
        let mut batches = self.batches.lock();
        let slot = batches.full.last_mut()?.pop();
        if let Some(empty) = batches.full.pop_if(|b| b.is_empty()) {
            batches.keep_spare(empty);
        }
        slot
    }

    /// Gives a slot back.
    #[inline]
    pub(crate) fn push(&self, slot: SlotRef) {
        self.singles.push(slot)
    }

    /// Moves `bin[..n]` (`0 < n`) to the list as one batch, in `bin`'s own
    /// stack; `bin` keeps the rest, in a spare stack of the same capacity
    /// (or a new one).
    pub(crate) fn spill_batch(&self, bin: &mut Vec<SlotRef>, n: usize) {
        debug_assert!(0 < n && n <= bin.len());
        let spare = self.batches.lock().spares.pop();
        let mut stay = spare.unwrap_or_else(|| Vec::with_capacity(bin.capacity()));
        stay.extend_from_slice(&bin[n..]);
        bin.truncate(n);
        let batch = std::mem::replace(bin, stay);
        self.batches.lock().full.push(batch);
    }

    /// Makes a spilled batch the empty `bin`'s stack, keeping `bin`'s old
    /// stack as a spare; `false` (and nothing changed) when there is none.
    pub(crate) fn refill_batch(&self, bin: &mut Vec<SlotRef>) -> bool {
        debug_assert!(bin.is_empty());
        let mut batches = self.batches.lock();
        let Some(batch) = batches.full.pop() else {
            return false;
        };
        let empty = std::mem::replace(bin, batch);
        batches.keep_spare(empty);
        true
    }

    /// Takes every slot currently on the list (and frees the spares).
    pub(crate) fn drain(&self) -> Vec<SlotRef> {
        let mut out = Vec::with_capacity(self.singles.len());
        while let Some(s) = self.singles.pop() {
            out.push(s);
        }
        let batches = std::mem::take(&mut *self.batches.lock());
        out.extend(batches.full.into_iter().flatten());
        out
    }

    /// The empty stacks kept for spills.
    #[cfg(test)]
    pub(super) fn spares(&self) -> usize {
        self.batches.lock().spares.len()
    }

    /// Takes the batch lock for a `fork` (see [`crate::forklock`]).
    pub(crate) fn fork_hold(&self) {
        crate::forklock::hold(&self.batches);
    }

    /// Lets go what [`fork_hold`](Self::fork_hold) took.
    ///
    /// # Safety
    ///
    /// As [`crate::forklock::release`]'s: this thread took it with
    /// `fork_hold`, and in the child no other thread runs yet.
    pub(crate) unsafe fn fork_release(&self, child: bool) {
        // SAFETY: the caller's contract is `release`'s.
        unsafe { crate::forklock::release(&self.batches, child) }
    }
}

impl Batches {
    /// Keeps an emptied stack for a later spill, up to [`MAX_SPARES`].
    fn keep_spare(&mut self, empty: Vec<SlotRef>) {
        debug_assert!(empty.is_empty());
        if self.spares.len() < MAX_SPARES {
            self.spares.push(empty);
        }
    }
}

/// The shared state of one size class, padded so classes do not share
/// cache lines.
#[derive(Debug, Default)]
pub(crate) struct ClassDepot {
    /// Free slots no thread cache holds.
    pub(crate) free: FreeList,
    /// The class's shared counters (thread caches count in their own).
    pub(crate) counters: ClassCounters,
}

/// How many slots of `slot_bytes` a thread cache keeps.
fn thread_cache_slots(slot_bytes: usize) -> usize {
    (THREAD_CACHE_BYTES / slot_bytes).clamp(1, THREAD_CACHE_SLOTS)
}

/// What a pool's thread caches share; see the module docs.
#[derive(Debug)]
pub(crate) struct Depot {
    /// Unique in the process, never reused: thread caches are keyed by it.
    id: u64,
    /// One per class of the pool's table.
    classes: Box<[CachePadded<ClassDepot>]>,
    /// Per class, the slots a thread cache keeps; empty: no thread caches.
    cache_slots: Box<[usize]>,
    /// Bumped to ask every thread to flush its cache at its next call.
    flush_epoch: AtomicU32,
    /// Set when the pool's last handle drops (the pool is *abandoned*): no
    /// allocation can follow.
    abandoned: AtomicBool,
    /// Tasks and threads waiting for room. Whoever returns slots to the
    /// free lists wakes the head ([`Depot::notify_room`]).
    pub(crate) room: WaitList,
    /// Bumped by every [`notify_room`](Depot::notify_room).
    returns: AtomicU64,
    /// Set while the pool is near its cap (less than one standard slab of
    /// room): thread caches then hold no free slot (refills take one,
    /// releases go to the free lists), so none can strand in an idle thread.
    near_cap: std::sync::atomic::AtomicBool,
    /// The counters of every thread with a cache entry for this pool.
    thread_counters: Mutex<Vec<Arc<ThreadCounters>>>,
    /// One allocation in this many records the histograms, is poisoned at
    /// release, captures a backtrace (0: never); see `free/sample.rs`.
    sample_rates: [u32; 3],
}

impl Depot {
    /// Takes the thread-counter registry, then the waiters' queue, for a
    /// `fork` (see [`crate::forklock`]).
    pub(crate) fn fork_hold(&self) {
        crate::forklock::hold(&self.thread_counters);
        self.room.fork_hold();
        for class in self.classes.iter() {
            class.free.fork_hold();
        }
    }

    /// Lets go what [`fork_hold`](Self::fork_hold) took.
    ///
    /// # Safety
    ///
    /// As [`crate::forklock::release`]'s: this thread took them with
    /// `fork_hold`, and in the child no other thread runs yet.
    pub(crate) unsafe fn fork_release(&self, child: bool) {
        // SAFETY: the caller's contract is `release`'s, for each lock.
        unsafe {
            for class in self.classes.iter() {
                class.free.fork_release(child);
            }
            self.room.fork_release(child);
            crate::forklock::release(&self.thread_counters, child);
        }
    }

    /// A depot for `classes`, with thread caches if `thread_cache`.
    pub(crate) fn new(classes: &SizeClasses, thread_cache: bool, sample_rates: [u32; 3]) -> Depot {
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let cache_slots = if thread_cache {
            classes
                .all()
                .map(|c| thread_cache_slots(classes.slot_bytes(c)))
                .collect()
        } else {
            Box::default()
        };
        Depot {
            id: IDS.fetch_add(1, Relaxed),
            classes: classes.all().map(|_| CachePadded::default()).collect(),
            cache_slots,
            flush_epoch: AtomicU32::new(0),
            abandoned: AtomicBool::new(false),
            room: WaitList::default(),
            returns: AtomicU64::new(0),
            near_cap: std::sync::atomic::AtomicBool::new(false),
            thread_counters: Mutex::new(Vec::new()),
            sample_rates,
        }
    }

    /// The process-unique id.
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Number of classes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.classes.len()
    }

    /// The shared state of class `idx`.
    #[inline]
    pub(crate) fn class(&self, idx: ClassIdx) -> &ClassDepot {
        &self.classes[idx.get()]
    }

    /// The shared state of every class, in the table's order.
    pub(crate) fn classes(&self) -> impl Iterator<Item = &ClassDepot> {
        self.classes.iter().map(|c| &**c)
    }

    /// The slots a thread cache keeps of class number `i` (0 without caches).
    pub(crate) fn cache_limit(&self, i: usize) -> usize {
        self.cache_slots.get(i).copied().unwrap_or(0)
    }

    /// Whether the pool keeps thread caches at all.
    pub(crate) fn has_caches(&self) -> bool {
        !self.cache_slots.is_empty()
    }

    /// The sampling rates every new thread cache starts with.
    pub(crate) fn sample_rates(&self) -> [u32; 3] {
        self.sample_rates
    }

    /// The flush epoch caches compare theirs with.
    #[inline(always)]
    pub(crate) fn flush_epoch(&self) -> u32 {
        self.flush_epoch.load(Relaxed)
    }

    /// Asks every thread to flush its cache at its next call.
    pub(crate) fn request_flush(&self) {
        self.flush_epoch.fetch_add(1, Relaxed);
    }

    /// Whether the last handle is gone. `Acquire`: the abandoning thread's
    /// store follows every handle's drop, so a thread that sees it
    /// abandoned also sees every allocation's count (allocations need a
    /// handle).
    #[inline]
    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Acquire)
    }

    /// Marks the pool abandoned (its last handle dropped).
    pub(crate) fn abandon(&self) {
        self.abandoned.store(true, SeqCst);
    }

    /// Slots were just returned to the free lists (or other room made):
    /// wakes the waiter at the head, if anyone waits (see `waitlist`).
    #[inline]
    pub(crate) fn notify_room(&self) {
        self.returns.fetch_add(1, Relaxed);
        // `wake_head` fences and reads the count first.
        self.room.wake_head();
    }

    /// Whether the pool is near its cap (see the field).
    #[inline]
    pub(crate) fn near_cap(&self) -> bool {
        self.near_cap.load(Relaxed)
    }

    /// Sets whether the pool is near its cap; returns whether that changed.
    pub(crate) fn set_near_cap(&self, near: bool) -> bool {
        self.near_cap.swap(near, Relaxed) != near
    }

    /// How many times slots came back to the free lists (each
    /// [`notify_room`](Self::notify_room)): a slab can only have become idle
    /// when this moved.
    #[inline]
    pub(crate) fn returns(&self) -> u64 {
        self.returns.load(Relaxed)
    }

    /// Pops a free slot of class `idx`, counted as a hit.
    #[inline]
    pub(crate) fn pop(&self, idx: ClassIdx) -> Option<SlotRef> {
        let class = self.class(idx);
        let slot = class.free.pop()?;
        class.counters.hits.fetch_add(1, Relaxed);
        Some(slot)
    }

    /// Returns a released slot to class `idx`'s free list, counted there,
    /// and wakes a waiter.
    pub(crate) fn push_released(&self, idx: ClassIdx, slot: SlotRef) {
        let class = self.class(idx);
        class.counters.releases.fetch_add(1, Relaxed);
        class.free.push(slot);
        self.notify_room();
    }

    /// Adds a thread's counters to those [`Depot::class_stats`] sums.
    pub(crate) fn register_thread(&self, counters: Arc<ThreadCounters>) {
        self.thread_counters.lock().push(counters);
    }

    /// Folds an exiting thread's counters into the shared ones, atomically
    /// with respect to `class_stats` (both hold the registry lock).
    pub(crate) fn retire_thread(&self, counters: &Arc<ThreadCounters>) {
        let mut all = self.thread_counters.lock();
        for (class, c) in self.classes.iter().zip(counters.classes.iter()) {
            class.counters.hits.fetch_add(c.hits.load(Relaxed), Relaxed);
            let releases = c.releases.load(Relaxed);
            class.counters.releases.fetch_add(releases, Relaxed);
        }
        all.retain(|t| !Arc::ptr_eq(t, counters));
    }

    /// Every class's snapshot: the shared counters plus every thread's.
    pub(crate) fn class_stats(&self, sizes: &SizeClasses) -> Vec<ClassStats> {
        let threads = self.thread_counters.lock();
        sizes
            .all()
            .map(|c| {
                let i = c.get();
                let (hits, releases) = threads.iter().fold((0, 0), |(h, r), t| {
                    let t = &t.classes[i];
                    (h + t.hits.load(Relaxed), r + t.releases.load(Relaxed))
                });
                let counters = &self.classes[i].counters;
                counters.snapshot(sizes.slot_bytes(c), hits, releases)
            })
            .collect()
    }
}
