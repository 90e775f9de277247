//! [`BufferPool`]: routing requests to size classes, the slow path that maps
//! slabs under the cap, and trimming.

use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::panic::Location;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex};

use crate::anchor::Anchor;
use crate::builder::{Config, PoolBuilder, MAX_SLOTS_PER_SLAB};
use crate::cache::{self, FreeList, SlotRef, Tally};
use crate::class::{SizeClasses, SMALL_MAX};
use crate::clock;
use crate::debug::quarantine::Quarantine;
use crate::debug::Zeroing;
use crate::leak::{self, LeakTracking};
use crate::metrics::{self, PoolMetrics, Publisher};
use crate::sample;
use crate::slab::{Layout, Slab, Slot, BACKTRACE_DUE, CANARY, HAS_BACKTRACE, POISON_DUE, SAMPLED};
use crate::stats::{self, ClassCounters, ClassStats, PoolCounters, PoolStats};
use crate::{page_size, Error, PageBuffer};

/// A thread-safe pool of page-aligned, guarded buffers.
///
/// `BufferPool` is a cheap handle: clones share one pool. Buffers keep the
/// pool's memory alive, so dropping every handle while buffers are out is
/// sound; the slabs are unmapped when the last buffer comes back.
///
/// ```
/// use pagepool::BufferPool;
///
/// let pool = BufferPool::new();
/// let mut buf = pool.allocate_page_size_buffer(1500)?;
/// assert_eq!(buf.as_ptr() as usize % pagepool::page_size(), 0);
/// assert_eq!((buf.len(), buf.max_len()), (0, 1500));
/// buf.extend_from_slice(b"RTP")?;
/// assert_eq!(&buf[..], b"RTP");
/// drop(buf); // back to the pool
/// assert_eq!(pool.stats().buffers_in_use, 0);
/// # Ok::<(), pagepool::Error>(())
/// ```
pub struct BufferPool {
    pub(crate) inner: Arc<PoolInner>,
}

/// The shared state behind every handle and buffer of one pool.
pub(crate) struct PoolInner {
    /// Unique in the process (never reused): thread caches are keyed by it.
    pub(crate) id: u64,
    pub(crate) config: Config,
    /// The pool's name, shared with the fault handler's slab table.
    pub(crate) name: Arc<str>,
    /// Bytes in a page.
    pub(crate) page: usize,
    pub(crate) classes: SizeClasses,
    /// One entry per size class, padded so classes do not share cache lines.
    pub(crate) class_state: Box<[CachePadded<ClassState>]>,
    pub(crate) counters: PoolCounters,
    /// Every mapped slab, by class, each list sorted by base address. Held for
    /// mapping, trimming and leak reports; never on the hot path.
    pub(crate) slabs: Mutex<Vec<Vec<Slab>>>,
    /// Bumped by every `leak_check`; each allocation records the value.
    pub(crate) leak_epoch: AtomicU32,
    /// Backtraces of sampled allocations, by slot address (slots with
    /// `HAS_BACKTRACE`).
    pub(crate) backtraces: Mutex<HashMap<usize, Arc<Backtrace>>>,
    /// Released slots kept inaccessible for a while.
    pub(crate) quarantine: Quarantine,
    /// Live `BufferPool` handles (buffers keep the pool alive through their
    /// anchors, not handles).
    handles: AtomicUsize,
    /// Set when the last handle drops: no allocation can happen any more.
    closed: AtomicBool,
    /// Set once the slabs were unmapped and the metrics retired.
    shut: AtomicBool,
    /// Per class, the slots a thread cache keeps (empty: no thread caches).
    pub(crate) cache_slots: Box<[usize]>,
    /// Bumped to ask every thread to flush its cache at its next call.
    pub(crate) flush_epoch: AtomicU32,
    /// Threads blocked in `allocate_page_size_buffer_timeout`. While it is
    /// not 0, releases go to the shared free lists (not thread caches) and
    /// wake the waiters.
    waiters: AtomicU32,
    /// Reasons a release must take `release_detour` rather than the thread
    /// cache: 1 for the quarantine (if on), 1 once the pool is closed, plus
    /// the waiters. One load on every release instead of one per reason.
    detours: AtomicU32,
    /// Bumped (under its lock) by every release that wakes waiters, so a
    /// waiter that saw a release since its last try does not sleep.
    wake_generation: Mutex<u64>,
    /// Where waiters sleep.
    wake: Condvar,
    /// The counters of every thread with a cache for this pool.
    tallies: Mutex<Vec<Arc<Tally>>>,
    /// Whether buffers record where, when and by whom they were allocated
    /// (`config.tracking` is not `Off`), read on every call.
    tracking: bool,
    /// Which buffers have a canary to write and check, as one mask: a
    /// buffer of `max_len` bytes has one when `max_len & canary_mask != 0`
    /// (0: no canary; `page - 1`: the standard canary, for buffers that end
    /// inside a page; `usize::MAX`: the full canary, for every buffer).
    pub(crate) canary_mask: usize,
    /// Which allocations run `debug_allocate` whatever the slot's flags:
    /// those with `max_len & alloc_mask != 0` (`canary_mask`, or every one
    /// when the pool zeroes buffers).
    alloc_mask: usize,
    /// One allocation in this many records the histograms, is poisoned at
    /// release, captures a backtrace (0: never); see `sample.rs`.
    pub(crate) sample_rates: [u32; 3],
    /// Metric handles, registered at build; `None` with metrics off.
    metrics: Option<PoolMetrics>,
    /// The background publisher, started right after the pool is shared.
    publisher: OnceLock<Publisher>,
}

/// The hot state of one size class.
#[derive(Debug, Default)]
pub(crate) struct ClassState {
    pub(crate) free: FreeList,
    pub(crate) counters: ClassCounters,
}

impl BufferPool {
    /// A pool with the default settings (see [`PoolBuilder::new`]). It maps
    /// nothing until the first allocation.
    pub fn new() -> BufferPool {
        PoolBuilder::new()
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder for a pool with other settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    pub(crate) fn from_config(config: Config) -> BufferPool {
        let page = page_size();
        let classes = SizeClasses::new(page, config.max_buffer_size);
        let class_state = (0..classes.len())
            .map(|_| CachePadded::new(ClassState::default()))
            .collect();
        let slabs = Mutex::new((0..classes.len()).map(|_| Vec::new()).collect());
        let metrics = config.metrics.then(|| {
            let sizes = (0..classes.len()).map(|i| classes.slot_bytes(i));
            PoolMetrics::register(&config.name, sizes, config.max_bytes)
        });
        let d = config.debug;
        let tracking = config.tracking != LeakTracking::Off;
        let quarantine_on = d.quarantine_every != 0;
        let histograms_every = if metrics.is_some() {
            config.sample_every
        } else {
            0
        };
        let backtrace_every = match config.tracking {
            LeakTracking::Backtrace { sample_every } => sample_every,
            _ => 0,
        };
        let canary_mask = match (d.canary(), d.full_canary) {
            (false, _) => 0,
            (true, false) => page - 1,
            (true, true) => usize::MAX,
        };
        if tracking {
            clock::start_coarse_clock();
        }
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let cache_slots = if config.thread_cache {
            (0..classes.len())
                .map(|i| cache::thread_cache_slots(classes.slot_bytes(i)))
                .collect()
        } else {
            Box::default()
        };
        let inner = Arc::new(PoolInner {
            id: IDS.fetch_add(1, Relaxed),
            cache_slots,
            flush_epoch: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            detours: AtomicU32::new(u32::from(quarantine_on)),
            wake_generation: Mutex::new(0),
            wake: Condvar::new(),
            tallies: Mutex::new(Vec::new()),
            name: config.name.as_str().into(),
            config,
            page,
            classes,
            class_state,
            counters: PoolCounters::default(),
            slabs,
            metrics,
            publisher: OnceLock::new(),
            leak_epoch: AtomicU32::new(0),
            backtraces: Mutex::new(HashMap::new()),
            quarantine: Quarantine::default(),
            handles: AtomicUsize::new(1),
            closed: AtomicBool::new(false),
            shut: AtomicBool::new(false),
            tracking,
            sample_rates: [histograms_every, d.poison_every, backtrace_every],
            canary_mask,
            alloc_mask: if d.zero == Zeroing::Off {
                canary_mask
            } else {
                usize::MAX
            },
        });
        if inner.metrics.is_some() {
            inner.publish_metrics();
            let publisher = Publisher::start(
                Arc::downgrade(&inner),
                &inner.config.name,
                inner.config.publish_interval,
            );
            let _ = inner.publisher.set(publisher);
        }
        BufferPool { inner }
    }

    /// `IWMSBufferAllocator::AllocatePageSizeBuffer`: a buffer of `max_len() ==
    /// max_size` bytes whose first byte is page-aligned, with `len() == 0`.
    ///
    /// The slot behind it is the smallest size class that holds `max_size`;
    /// with guard pages on, the page directly before the buffer and the page
    /// directly after the slot's last page are inaccessible. The contents are
    /// whatever the slot's previous owner left (zero for fresh memory).
    ///
    /// Once the pool is warm (a free slot of the class exists) this takes no
    /// lock and makes no system call.
    ///
    /// # Errors
    /// - [`Error::ZeroSize`] for `max_size == 0`;
    /// - [`Error::TooLarge`] above the pool's `max_buffer_size`;
    /// - [`Error::Exhausted`] when the byte cap is reached;
    /// - [`Error::Os`] when the OS refuses a new mapping.
    #[track_caller]
    #[inline(always)]
    pub fn allocate_page_size_buffer(&self, max_size: usize) -> Result<PageBuffer, Error> {
        self.allocate_at(max_size, Location::caller(), false)
    }

    /// `allocate_page_size_buffer`, but when the pool is
    /// [`Exhausted`](Error::Exhausted) it waits up to `timeout` for buffers to
    /// come back (like GStreamer's blocking `acquire_buffer`), instead of
    /// failing at once.
    ///
    /// While a thread waits, every release goes to the pool's shared free
    /// lists rather than the releasing thread's cache, and wakes the waiters;
    /// each waiter then tries again (which also trims idle slabs of other
    /// classes, so a release of any size can make room under the cap). A
    /// waiter also retries every millisecond on its own, so a wake-up lost to
    /// a race costs at most that. Several waiters compete; none is promised
    /// the next buffer.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pagepool::{BufferPool, Error};
    ///
    /// let pool = BufferPool::builder().max_bytes(64 << 10).build()?;
    /// let mut held = Vec::new();
    /// while let Ok(b) = pool.allocate_page_size_buffer(4096) {
    ///     held.push(b);
    /// }
    /// // Full: a short wait times out cleanly...
    /// let e = pool.allocate_page_size_buffer_timeout(4096, Duration::from_millis(5));
    /// assert!(matches!(e, Err(Error::TimedOut { .. })));
    /// // ...and a release on another thread wakes a longer one.
    /// let one = held.pop().unwrap();
    /// let t = std::thread::spawn(move || {
    ///     std::thread::sleep(Duration::from_millis(20));
    ///     drop(one);
    /// });
    /// let b = pool.allocate_page_size_buffer_timeout(4096, Duration::from_secs(10))?;
    /// t.join().unwrap();
    /// # drop((b, held));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// - [`Error::TimedOut`] when no room appeared within `timeout`;
    /// - the other errors of
    ///   [`allocate_page_size_buffer`](Self::allocate_page_size_buffer), at
    ///   once: they do not go away by waiting.
    #[track_caller]
    pub fn allocate_page_size_buffer_timeout(
        &self,
        max_size: usize,
        timeout: Duration,
    ) -> Result<PageBuffer, Error> {
        let site = Location::caller();
        match self.allocate_at(max_size, site, false) {
            Err(Error::Exhausted { .. }) => self.wait_for_room(max_size, timeout, site),
            other => other,
        }
    }

    /// The waiting part of `allocate_page_size_buffer_timeout`.
    #[cold]
    fn wait_for_room(
        &self,
        max_size: usize,
        timeout: Duration,
        site: &'static Location<'static>,
    ) -> Result<PageBuffer, Error> {
        /// The longest sleep between two tries.
        const SLICE: Duration = Duration::from_millis(1);
        let inner = &self.inner;
        let start = Instant::now();
        // `None`: a timeout too long to add to now, i.e. wait for ever.
        let deadline = start.checked_add(timeout);
        inner.waiters.fetch_add(1, SeqCst);
        inner.detours.fetch_add(1, SeqCst);
        // Counted out again however this ends (even by a panic in a
        // tracing subscriber).
        struct Waiting<'a>(&'a PoolInner);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.detours.fetch_sub(1, SeqCst);
                self.0.waiters.fetch_sub(1, SeqCst);
            }
        }
        let _waiting = Waiting(inner);
        /// Marks this thread's tries as retries for as long as it waits.
        struct Retrying;
        impl Drop for Retrying {
            fn drop(&mut self) {
                RETRYING.with(|r| r.set(false));
            }
        }
        RETRYING.with(|r| r.set(true));
        let _retrying = Retrying;
        // Buffers other threads cached before we started waiting: ask for them.
        inner.ask_caches_to_flush();
        loop {
            let seen = *inner.wake_generation.lock();
            match self.allocate_at(max_size, site, false) {
                Err(Error::Exhausted { .. }) => {}
                other => return other,
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if now >= d => {
                    return Err(Error::TimedOut {
                        requested: max_size,
                        waited: now - start,
                    })
                }
                Some(d) => d - now,
                None => SLICE,
            };
            let mut generation = inner.wake_generation.lock();
            if *generation == seen {
                inner.wake.wait_for(&mut generation, left.min(SLICE));
            }
        }
    }

    /// `allocate_page_size_buffer` with the allocation site given.
    /// `small`: a request of `allocate_buffer`, which small classes may
    /// serve (a constant at every call site, so the choice folds away).
    #[inline(always)]
    fn allocate_at(
        &self,
        max_size: usize,
        site: &'static Location<'static>,
        small: bool,
    ) -> Result<PageBuffer, Error> {
        let (slot, anchor) = self.inner.allocate(max_size, site, small)?;
        // SAFETY: `allocate` just took `slot` off a free list for us alone and
        // counted the buffer on `anchor`, which keeps the pool alive.
        Ok(unsafe { PageBuffer::from_slot(slot, anchor) })
    }

    /// `IWMSBufferAllocator::AllocateBuffer`: a buffer of `max_len() ==
    /// max_size` bytes with no promise of page alignment, with `len() == 0`.
    ///
    /// Up to [`SMALL_MAX`](crate::SMALL_MAX) (2 KiB: RTP and TS packets,
    /// RTCP, headers) it comes from a small class
    /// ([`SMALL_SIZES`](crate::SMALL_SIZES), multiples of 64 bytes): slots
    /// packed into shared slab pages, each between two 64-byte red zones of
    /// canary that every release checks (so a write past the slot or before
    /// it is reported, naming the buffer and its allocation site), with a
    /// guard page at each end of the slab. Such a buffer is 64-byte aligned,
    /// not page-aligned; it is never quarantined (a slot smaller than a page
    /// cannot be sealed alone) but is poisoned, zeroed and tracked like the
    /// rest, and counted in its own class in `stats()`, `class_stats()`,
    /// leak reports and metrics. Larger sizes are served exactly like
    /// [`allocate_page_size_buffer`](Self::allocate_page_size_buffer).
    ///
    /// ```
    /// let pool = pagepool::BufferPool::new();
    /// let mut rtp = pool.allocate_buffer(1500)?;
    /// assert_eq!((rtp.max_len(), rtp.slot_len()), (1500, 1536));
    /// assert_eq!(rtp.as_ptr() as usize % 64, 0);
    /// rtp.extend_from_slice(&[0x80, 0x60])?;
    /// let big = pool.allocate_buffer(64 * 1024)?; // a page class
    /// assert_eq!(big.as_ptr() as usize % pagepool::page_size(), 0);
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    ///
    /// # Errors
    /// As for [`allocate_page_size_buffer`](Self::allocate_page_size_buffer).
    #[track_caller]
    #[inline(always)]
    pub fn allocate_buffer(&self, max_size: usize) -> Result<PageBuffer, Error> {
        self.allocate_at(max_size, Location::caller(), true)
    }

    /// Copies the pool's counters into its metric handles now, rather than
    /// at the publisher's next tick. Does nothing with metrics off.
    pub fn publish_metrics(&self) {
        self.inner.publish_metrics();
    }

    /// A snapshot of the pool's counters (see [`PoolStats`] for when they agree).
    pub fn stats(&self) -> PoolStats {
        self.inner.stats()
    }

    /// A snapshot of every size class, smallest first.
    pub fn class_stats(&self) -> Vec<ClassStats> {
        self.inner.class_stats()
    }

    /// Empties the quarantine, then unmaps every slab whose slots are all on
    /// the pool's shared free lists, and returns the bytes given back to the
    /// OS (guard pages included). The calling thread's cached slots go back
    /// first; other threads return theirs at their next call or when they
    /// exit, so a slab holding one of those stays mapped until a later trim.
    /// Allocations of a class being trimmed wait for the trim rather than
    /// map a new slab.
    pub fn trim(&self) -> usize {
        self.inner.release_quarantine();
        self.inner.ask_caches_to_flush();
        let mut slabs = self.inner.slabs.lock();
        self.inner.trim_locked(&mut slabs, None)
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The largest `max_size` this pool accepts.
    pub fn max_buffer_size(&self) -> usize {
        self.inner.config.max_buffer_size
    }

    /// The cap on reserved bytes, `None` when unlimited.
    pub fn max_bytes(&self) -> Option<usize> {
        self.inner.config.max_bytes
    }

    /// Whether slots get guard pages.
    pub fn guard_pages(&self) -> bool {
        self.inner.config.guards.is_some()
    }

    /// The slot size of every size class, in bytes, smallest first: the
    /// small classes ([`SMALL_SIZES`](crate::SMALL_SIZES) up to the one that
    /// holds `max_buffer_size`), then the page classes.
    pub fn size_classes(&self) -> Vec<usize> {
        let c = &self.inner.classes;
        (0..c.len()).map(|i| c.slot_bytes(i)).collect()
    }

    /// The slot size that serves `allocate_page_size_buffer(max_size)` (a
    /// page class), or `None` when the pool would refuse it.
    /// `allocate_buffer` serves the same sizes above
    /// [`SMALL_MAX`](crate::SMALL_MAX), and the smallest of
    /// [`SMALL_SIZES`](crate::SMALL_SIZES) that fits below.
    pub fn slot_size_for(&self, max_size: usize) -> Option<usize> {
        let c = &self.inner.classes;
        (max_size != 0 && max_size <= self.inner.config.max_buffer_size)
            .then(|| c.slot_bytes(c.index_for(max_size)))
    }
}

impl Clone for BufferPool {
    fn clone(&self) -> Self {
        self.inner.handles.fetch_add(1, Relaxed);
        BufferPool {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        if self.inner.handles.fetch_sub(1, AcqRel) != 1 {
            return;
        }
        // The last handle: no allocation can follow, and every release
        // takes the detour that checks for the last buffer.
        self.inner.closed.store(true, SeqCst);
        self.inner.detours.fetch_add(1, SeqCst);
        if self.stats().buffers_in_use == 0 {
            self.inner.shutdown_if_idle();
        } else {
            // Whatever is still out is probably leaked; the last release
            // unmaps the slabs.
            let report = self.leak_report(Duration::ZERO);
            if !report.is_empty() {
                tracing::warn!(
                    target: "pagepool",
                    pool = %self.name(),
                    buffers = report.buffers(),
                    bytes = report.bytes(),
                    "the last handle of the pool was dropped with buffers still out:\n{report}"
                );
            }
        }
    }
}

impl Default for BufferPool {
    fn default() -> Self {
        BufferPool::new()
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats();
        f.debug_struct("BufferPool")
            .field("name", &self.name())
            .field("buffers_in_use", &s.buffers_in_use)
            .field("bytes_reserved", &s.bytes_reserved)
            .field("bytes_limit", &s.bytes_limit)
            .field("guard_pages", &self.guard_pages())
            .finish()
    }
}

impl fmt::Debug for PoolInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolInner")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl PoolInner {
    /// Whether the last handle is gone. `Acquire`: the closing thread's
    /// store follows every handle's drop, so a thread that sees it closed
    /// also sees every allocation's count (allocations need a handle).
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Acquire)
    }

    /// After the last handle: once no buffer is out, unmap everything and
    /// retire the metrics. (Threads that used the pool keep its small header
    /// alive through their anchors until they exit or use another pool; the
    /// memory goes back now.)
    #[cold]
    pub(crate) fn shutdown_if_idle(&self) {
        if self.shut.load(Relaxed) {
            return;
        }
        // Exactly as many releases as allocations; a count that looks like
        // more releases than allocations is a stale read: not idle.
        let (allocated, released) = self
            .class_stats()
            .iter()
            .fold((0, 0), |(a, r), c| (a + c.allocations, r + c.releases));
        if allocated == released {
            self.shutdown();
        }
    }

    /// Lets every quarantined slot go back to the free lists.
    pub(crate) fn release_quarantine(&self) {
        for (slot, sealed) in self.quarantine.drain() {
            // SAFETY: quarantined slots belong to this pool's mapped slabs.
            unsafe { self.leave_quarantine(slot, sealed) };
        }
    }

    /// Unmaps every slab and publishes the final, empty state (once).
    #[cold]
    fn shutdown(&self) {
        if self.shut.swap(true, AcqRel) {
            return;
        }
        if let Some(publisher) = self.publisher.get() {
            publisher.stop();
        }
        // Give quarantined slots their access back (and `mprotect` guards
        // their memory-area budget) before the slabs are unmapped.
        for (slot, sealed) in self.quarantine.drain() {
            // SAFETY: quarantined slots belong to our still-mapped slabs.
            unsafe { self.unseal(slot, sealed) };
        }
        if let Some(m) = &self.metrics {
            // Every buffer is back (shutdown runs only then), and the slabs
            // are about to be unmapped: publish that final state.
            let mut last = self.stats();
            last.bytes_reserved = 0;
            last.bytes_cached = 0;
            last.buffers_cached = 0;
            last.buffers_quarantined = 0;
            last.slabs = 0;
            last.leak_suspects = 0;
            m.publish(&last, &self.class_stats(), self.corruption_counts());
            metrics::forget_name(&self.config.name);
        }
        // No buffer is out and none can be made: every slot is free (on a
        // free list, in a thread cache, or sealed). Forget the shared lists'
        // pointers and unmap; thread caches only ever push their stale
        // pointers back to these lists, never dereference them.
        for class in self.class_state.iter() {
            drop(class.free.drain());
        }
        let mut slabs = self.slabs.lock();
        for list in slabs.iter_mut() {
            list.clear();
        }
        self.counters.reserved.store(0, Relaxed);
        self.counters.unguarded.store(0, Relaxed);
    }
}

impl PoolInner {
    /// Publishes the counters to the metric handles, if any.
    pub(crate) fn publish_metrics(&self) {
        if let Some(m) = &self.metrics {
            self.refresh_leak_suspects();
            m.publish(&self.stats(), &self.class_stats(), self.corruption_counts());
        }
    }

    /// Records how long a sampled buffer was held.
    #[cold]
    pub(crate) fn record_hold(&self, since: u64) {
        if let Some(m) = &self.metrics {
            m.hold.record(clock::since(since).as_secs_f64());
        }
    }

    /// Corruptions found so far, by `CorruptionKind::index`.
    fn corruption_counts(&self) -> [u64; 3] {
        self.counters
            .corruptions
            .each_ref()
            .map(|c| c.load(Relaxed))
    }

    pub(crate) fn stats(&self) -> PoolStats {
        stats::total(
            self.class_stats().into_iter(),
            &self.counters,
            self.config.max_bytes,
        )
    }

    /// Every class's snapshot: the shared counters plus every thread's.
    fn class_stats(&self) -> Vec<ClassStats> {
        let tallies = self.tallies.lock();
        (0..self.classes.len())
            .map(|i| {
                let (hits, releases) = tallies.iter().fold((0, 0), |(h, r), t| {
                    let c = &t.classes[i];
                    (h + c.hits.load(Relaxed), r + c.releases.load(Relaxed))
                });
                self.class_state[i]
                    .counters
                    .snapshot(self.classes.slot_bytes(i), hits, releases)
            })
            .collect()
    }

    /// Adds a thread's counters to those `stats()` sums.
    pub(crate) fn register_tally(&self, tally: Arc<Tally>) {
        self.tallies.lock().push(tally);
    }

    /// Folds an exiting thread's counters into the shared ones, atomically
    /// with respect to `stats()` (both hold the registry lock).
    pub(crate) fn retire_tally(&self, tally: &Arc<Tally>) {
        let mut tallies = self.tallies.lock();
        for (i, c) in tally.classes.iter().enumerate() {
            let counters = &self.class_state[i].counters;
            counters.hits.fetch_add(c.hits.load(Relaxed), Relaxed);
            counters
                .releases
                .fetch_add(c.releases.load(Relaxed), Relaxed);
        }
        tallies.retain(|t| !Arc::ptr_eq(t, tally));
    }

    /// Asks every thread to return its cached slots at its next call, and
    /// returns the calling thread's now.
    pub(crate) fn ask_caches_to_flush(self: &Arc<Self>) {
        if !self.cache_slots.is_empty() {
            self.flush_epoch.fetch_add(1, Relaxed);
            cache::flush_current(self);
        }
    }

    /// The pool's name.
    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// Bytes in the slot of a live buffer.
    pub(crate) fn slot_bytes_of(&self, slot: SlotRef) -> usize {
        // SAFETY: only called with the slot of a live buffer of this pool.
        self.classes.slot_bytes(unsafe { slot.get() }.class())
    }

    /// Takes a slot for a request of `max_size` bytes made at `site`.
    #[inline(always)]
    fn allocate(
        self: &Arc<Self>,
        max_size: usize,
        site: &'static Location<'static>,
        small: bool,
    ) -> Result<(SlotRef, NonNull<Anchor>), Error> {
        // One comparison for both bounds: 0 wraps to `usize::MAX`.
        if max_size.wrapping_sub(1) >= self.config.max_buffer_size {
            return Err(self.reject(max_size));
        }
        let idx = if small && max_size <= SMALL_MAX {
            self.classes.small_index_for(max_size)
        } else {
            self.classes.index_for(max_size)
        };
        let (slot, anchor) = cache::acquire(self, idx, max_size)?;
        // SAFETY: a slot taken off a free list belongs to a mapped slab of this
        // pool; slabs are unmapped only after their slots are drained from it.
        let s = unsafe { slot.get() };
        s.take();
        let flags = s.flags.load(Relaxed);
        // A slot that serves the same size again with its canary in place
        // (and nothing else to do) is the plain path too.
        if (max_size & self.alloc_mask) | usize::from(flags) != 0
            && !(flags == CANARY
                && self.config.debug.zero == Zeroing::Off
                && s.canary_max.load(Relaxed) as usize == max_size)
        {
            // SAFETY: the slot is ours alone now; `flags` is its.
            unsafe { self.allocate_checked(s, max_size, site, flags) };
        } else {
            self.stamp(s, max_size, site);
        }
        Ok((slot, anchor))
    }

    /// Writes the new buffer's `max_len` and what leak reports read (epoch,
    /// and with tracking its site, time and thread) into its slot's
    /// metadata.
    #[inline(always)]
    fn stamp(&self, s: &Slot, max_size: usize, site: &'static Location<'static>) {
        // `max_size <= max_buffer_size <= SIZE_LIMIT`, which fits `u32`.
        s.max_len.store(max_size as u32, Relaxed);
        s.epoch.store(self.leak_epoch.load(Relaxed), Relaxed);
        if self.tracking {
            s.site.store(ptr_of(site), Relaxed);
            s.allocated_at.store(clock::coarse_nanos(), Relaxed);
            s.thread.store(leak::thread_id(), Relaxed);
        }
    }

    /// An allocation whose slot has `flags` or whose size needs a debug
    /// step: checks and prepares the slot (`debug_allocate`), stamps it,
    /// does the sampled duties `acquire` marked, and leaves in `flags` what
    /// the release must do.
    ///
    /// # Safety
    /// The caller owns the slot (just taken off a free list); `flags` is
    /// the slot's.
    #[inline(never)]
    unsafe fn allocate_checked(
        &self,
        s: &Slot,
        max_size: usize,
        site: &'static Location<'static>,
        flags: u8,
    ) {
        // Before `stamp` overwrites them: a poison check needs the last
        // buffer's `max_len`, and its report names that buffer's owner.
        // SAFETY: forwarded from the caller.
        let mut next = unsafe { self.debug_allocate(s, max_size, flags) };
        // `mark_duties` left the start of a sampled allocation here.
        let started = s.allocated_at.load(Relaxed);
        self.stamp(s, max_size, site);
        next |= flags & (SAMPLED | POISON_DUE);
        if flags & (SAMPLED | BACKTRACE_DUE) != 0 {
            next |= self.sampled_duties(s, flags, started, max_size);
        }
        s.flags.store(next, Relaxed);
    }

    /// Marks a slot just taken for a sampled allocation (see `sample.rs`)
    /// with its `duties`, for `allocate_checked` to do; `started` is when
    /// the allocation began (`clock::now_nanos()`), for the histograms.
    ///
    /// # Safety
    /// The caller owns the slot (just taken off a free list).
    #[cold]
    pub(crate) unsafe fn mark_duties(&self, slot: SlotRef, duties: u8, started: u64) {
        // SAFETY: forwarded from the caller.
        let s = unsafe { slot.get() };
        let mut due = 0;
        if duties & sample::HISTOGRAMS != 0 {
            s.allocated_at.store(started, Relaxed);
            due |= SAMPLED;
        }
        if duties & sample::POISON != 0 {
            due |= POISON_DUE;
        }
        if duties & sample::BACKTRACE != 0 {
            due |= BACKTRACE_DUE;
        }
        s.flags.store(s.flags.load(Relaxed) | due, Relaxed);
    }

    /// The histogram and backtrace duties of an allocation: records the
    /// histograms (`SAMPLED`, which began at `started`), captures a
    /// backtrace (`BACKTRACE_DUE`). Returns the flags the release then
    /// needs (`HAS_BACKTRACE`).
    #[cold]
    #[inline(never)]
    fn sampled_duties(&self, s: &Slot, flags: u8, started: u64, max_size: usize) -> u8 {
        if flags & SAMPLED != 0 {
            let now = clock::now_nanos();
            // Always there: the histograms are sampled only with metric
            // handles.
            if let Some(m) = &self.metrics {
                m.allocation_duration
                    .record(now.saturating_sub(started) as f64 * 1e-9);
                m.request_size.record(max_size as f64);
            }
            // The precise stamp the hold time is measured from (also a more
            // precise leak age).
            s.allocated_at.store(now, Relaxed);
        }
        if flags & BACKTRACE_DUE == 0 {
            return 0;
        }
        let bt = Arc::new(Backtrace::force_capture());
        self.backtraces
            .lock()
            .insert(s.data().as_ptr() as usize, bt);
        HAS_BACKTRACE
    }

    /// Takes a slot from the class's shared free list, or maps a slab.
    #[inline]
    pub(crate) fn allocate_shared(
        self: &Arc<Self>,
        idx: usize,
        max_size: usize,
    ) -> Result<SlotRef, Error> {
        let class = &self.class_state[idx];
        match class.free.pop() {
            Some(slot) => {
                class.counters.hits.fetch_add(1, Relaxed);
                Ok(slot)
            }
            None => self.refill(idx, max_size),
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

    /// Returns a buffer's slot (issued through `anchor`, released at `site`
    /// if known) to a free list or the quarantine. Returns whether the
    /// buffer's reference on `anchor` was settled; if not, the caller must
    /// end with `Anchor::release_remote`, after which it must not touch the
    /// pool.
    ///
    /// Inline: only the common case, a plain buffer (no flags, no edges;
    /// or only an intact standard canary, and red zones if packed) of a
    /// pool with no detours, released on the thread that allocated it, into
    /// a bin with room; it returns `true`, so the caller's remote step folds
    /// away. Everything else (damage included) is `release_slow`, which
    /// checks again and reports.
    ///
    /// # Safety
    /// `slot` is the slot of a buffer of this pool that is being dropped: no
    /// one accesses its bytes from now on.
    #[inline(always)]
    #[must_use]
    pub(crate) unsafe fn release(
        self: &Arc<Self>,
        slot: SlotRef,
        site: Option<&'static Location<'static>>,
        anchor: NonNull<Anchor>,
    ) -> bool {
        // SAFETY: the buffer being released keeps the pool and its slabs alive.
        let s = unsafe { slot.get() };
        if s.flags.load(Relaxed) | s.edges() != 0 {
            // Out of line, with nothing left to do here after it.
            // SAFETY: forwarded from the caller.
            return unsafe { self.release_flagged(slot, site, anchor) };
        }
        // SAFETY: forwarded from the caller; the slot has no duty.
        unsafe { self.release_plain(s, slot, site, anchor) }
    }

    /// The end of a release whose slot has no duty left: into this thread's
    /// cache if the buffer is this thread's and nothing detours it, else
    /// `release_slow`.
    ///
    /// # Safety
    /// As for `release`; `s` is `slot`'s metadata, and nothing was changed
    /// yet.
    #[inline(always)]
    unsafe fn release_plain(
        self: &Arc<Self>,
        s: &Slot,
        slot: SlotRef,
        site: Option<&'static Location<'static>>,
        anchor: NonNull<Anchor>,
    ) -> bool {
        if self.detours.load(Relaxed) == 0 && cache::give_back_own(self, s, slot, anchor) {
            return true;
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.release_slow(slot, site, anchor) }
    }

    /// `release` of a slot with flags or edges: when its only duty is an
    /// intact standard canary (and red zones, if packed), the plain path;
    /// otherwise `release_slow`.
    ///
    /// # Safety
    /// As for `release`.
    #[inline(never)]
    unsafe fn release_flagged(
        self: &Arc<Self>,
        slot: SlotRef,
        site: Option<&'static Location<'static>>,
        anchor: NonNull<Anchor>,
    ) -> bool {
        // SAFETY: the buffer being released keeps the pool and its slabs alive.
        let s = unsafe { slot.get() };
        // SAFETY: the caller owns the slot; the flags and edges are its.
        if unsafe { self.checks_pass(s, s.flags.load(Relaxed), s.edges()) } {
            // SAFETY: forwarded from the caller; the checks passed (and
            // only read), so the slot has no duty left.
            unsafe { self.release_plain(s, slot, site, anchor) }
        } else {
            // SAFETY: forwarded from the caller; nothing was changed yet.
            unsafe { self.release_slow(slot, site, anchor) }
        }
    }

    /// `release` in full: the checks and duties the slot's flags and edges
    /// ask for, the detours, and the thread cache (whichever thread's
    /// buffer it is).
    ///
    /// # Safety
    /// As for `release`.
    #[inline(never)]
    unsafe fn release_slow(
        self: &Arc<Self>,
        slot: SlotRef,
        site: Option<&'static Location<'static>>,
        anchor: NonNull<Anchor>,
    ) -> bool {
        // SAFETY: the buffer being released keeps the pool and its slabs alive.
        let s = unsafe { slot.get() };
        let flags = s.flags.load(Relaxed);
        if flags | s.edges() != 0 {
            // SAFETY: the caller owns the slot; `flags` is its.
            unsafe { self.release_checks(s, flags, site) };
        }
        if self.detours.load(Relaxed) != 0 {
            // SAFETY: as above.
            return unsafe { self.release_detour(slot, anchor, site) };
        }
        s.give_back();
        cache::give_back(self, s.class(), slot, anchor)
    }

    /// The rest of a release when the slot may not go to the thread cache
    /// as usual: the quarantine is on, threads wait for room, or the pool
    /// is closed (this may be its last buffer). Returns whether the
    /// buffer's reference on `anchor` was settled (as `release`).
    ///
    /// # Safety
    /// As for `release`.
    #[cold]
    #[inline(never)]
    unsafe fn release_detour(
        self: &Arc<Self>,
        slot: SlotRef,
        anchor: NonNull<Anchor>,
        site: Option<&'static Location<'static>>,
    ) -> bool {
        let d = &self.config.debug;
        // SAFETY: forwarded from the caller.
        let s = unsafe { slot.get() };
        let settled = if d.quarantine_every != 0
            && crate::debug::sampled(&crate::debug::QUARANTINE_COUNTDOWN, d.quarantine_every)
            // SAFETY: forwarded from the caller.
            && unsafe { self.quarantine(slot, site) }
        {
            cache::settle(self, anchor)
        } else if self.waiters.load(Relaxed) != 0 {
            s.give_back();
            self.release_to_waiters(s.class(), slot, anchor)
        } else {
            s.give_back();
            cache::give_back(self, s.class(), slot, anchor)
        };
        if self.is_closed() {
            self.shutdown_if_idle();
        }
        settled
    }

    /// A release while threads wait for room: the slot goes to the shared
    /// free list, where a waiter can take it, and the waiters wake. Returns
    /// whether the buffer's reference on `anchor` was settled (as `release`).
    #[cold]
    #[inline(never)]
    fn release_to_waiters(
        self: &Arc<Self>,
        idx: usize,
        slot: SlotRef,
        anchor: NonNull<Anchor>,
    ) -> bool {
        self.free_shared(idx, slot);
        // Our own cached slots (of any class) may make room too.
        cache::flush_current(self);
        let settled = cache::settle(self, anchor);
        *self.wake_generation.lock() += 1;
        self.wake.notify_all();
        settled
    }

    /// Returns a slot to its class's shared free list, counted there.
    pub(crate) fn free_shared(&self, idx: usize, slot: SlotRef) {
        let class = &self.class_state[idx];
        class.counters.releases.fetch_add(1, Relaxed);
        class.free.push(slot);
    }

    /// Records who released slot `s`, and where if known, for the reports
    /// of a later use after release (poison, quarantine): the only readers,
    /// so a plain release skips it.
    pub(crate) fn record_release(&self, s: &Slot, site: Option<&'static Location<'static>>) {
        if self.tracking {
            s.release_site
                .store(site.map_or(std::ptr::null_mut(), ptr_of), Relaxed);
            s.thread.store(leak::thread_id(), Relaxed);
        }
    }

    /// The sampled duties of a release: record the hold time, drop a
    /// stored backtrace.
    #[cold]
    pub(crate) fn finish_sampled(&self, s: &Slot, flags: u8) {
        if flags & SAMPLED != 0 {
            self.record_hold(s.allocated_at.load(Relaxed));
        }
        if flags & HAS_BACKTRACE != 0 {
            self.backtraces.lock().remove(&(s.data().as_ptr() as usize));
        }
    }

    /// The slow path of `allocate`: no free slot was found, so map a slab
    /// (within the cap), under the slab lock.
    #[cold]
    #[inline(never)]
    fn refill(self: &Arc<Self>, idx: usize, max_size: usize) -> Result<SlotRef, Error> {
        let class = &self.class_state[idx];
        let mut slabs = self.slabs.lock();
        // Another thread may have mapped a slab, or a trim may have put slots
        // back, while we waited for the lock.
        if let Some(slot) = class.free.pop() {
            class.counters.hits.fetch_add(1, Relaxed);
            return Ok(slot);
        }
        let layout = self.layout(idx);
        // Small slabs are filled with red zones when mapped (every page is
        // touched): keep them to `SMALL_SLAB_BYTES`.
        let target = if layout.packed {
            self.config.slab_size.min(SMALL_SLAB_BYTES)
        } else {
            self.config.slab_size
        };
        let wanted = (target / layout.slot_bytes).clamp(1, MAX_SLOTS_PER_SLAB);
        let mut n = self.slots_within_cap(layout, wanted);
        if n == 0 {
            // Let the quarantine go and ask threads to return cached slots
            // (ours at once), take one of this class if that freed any, else
            // give idle slabs of other classes back and try again.
            self.release_quarantine();
            self.ask_caches_to_flush();
            if let Some(slot) = class.free.pop() {
                class.counters.hits.fetch_add(1, Relaxed);
                return Ok(slot);
            }
            self.trim_locked(&mut slabs, Some(idx));
            n = self.slots_within_cap(layout, wanted);
        }
        if n == 0 {
            // A waiter's retries are one refusal, counted by its first try.
            if !RETRYING.with(Cell::get) {
                class.counters.exhausted.fetch_add(1, Relaxed);
            }
            return Err(Error::Exhausted {
                requested: max_size,
                limit: self.config.max_bytes.unwrap_or(usize::MAX),
            });
        }
        let mut slab = match Slab::map(idx, n, layout) {
            Ok(slab) => slab,
            Err(e) => {
                class.counters.os_errors.fetch_add(1, Relaxed);
                return Err(Error::Os(e));
            }
        };
        slab.register(Arc::clone(&self.name));
        self.counters.reserved.fetch_add(slab.reserved(), Relaxed);
        self.counters.unguarded.fetch_add(slab.unguarded(), Relaxed);
        class.counters.slots.fetch_add(n, Relaxed);
        class.counters.slabs.fetch_add(1, Relaxed);
        class.counters.misses.fetch_add(1, Relaxed);
        let (first, rest) = slab.slots().split_first().expect("n >= 1");
        for s in rest {
            class.free.push(SlotRef(NonNull::from(s)));
        }
        let first = SlotRef(NonNull::from(first));
        let list = &mut slabs[idx];
        let at = list.partition_point(|s| s.base() < slab.base());
        list.insert(at, slab);
        Ok(first)
    }

    /// How the slabs of class `idx` are laid out.
    fn layout(&self, idx: usize) -> Layout {
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
        match self.config.max_bytes {
            None => wanted,
            Some(limit) => {
                let room = limit.saturating_sub(self.counters.reserved.load(Relaxed));
                layout.slots_within(room).min(wanted)
            }
        }
    }

    /// Unmaps the idle slabs of every class but `except`; returns the bytes.
    fn trim_locked(&self, slabs: &mut [Vec<Slab>], except: Option<usize>) -> usize {
        let mut freed = 0;
        for (idx, list) in slabs.iter_mut().enumerate() {
            if Some(idx) != except && !list.is_empty() {
                freed += self.trim_class_locked(idx, list);
            }
        }
        freed
    }

    /// Unmaps the slabs of class `idx` whose slots are all on its free list.
    fn trim_class_locked(&self, idx: usize, list: &mut Vec<Slab>) -> usize {
        let class = &self.class_state[idx];
        // Take every free slot. Allocations of this class that find the list
        // empty meanwhile wait on the slab lock we hold, then find the slots
        // we push back.
        let free = class.free.drain();
        let mut free_in = vec![0usize; list.len()];
        let owners: Vec<usize> = free
            .iter()
            .map(|s| {
                // SAFETY: slots on the free list belong to mapped slabs in `list`.
                let addr = unsafe { s.addr() };
                let owner = list.partition_point(|slab| slab.base() <= addr) - 1;
                debug_assert!(list[owner].contains(addr));
                free_in[owner] += 1;
                owner
            })
            .collect();
        let idle: Vec<bool> = list
            .iter()
            .zip(&free_in)
            .map(|(slab, &n)| n == slab.slots().len())
            .collect();
        for (slot, &owner) in free.iter().zip(&owners) {
            if !idle[owner] {
                class.free.push(*slot);
            }
        }
        let mut freed = 0;
        let mut idle = idle.into_iter();
        list.retain(|slab| {
            let keep = !idle.next().expect("one flag per slab");
            if !keep {
                freed += slab.reserved();
                self.counters.reserved.fetch_sub(slab.reserved(), Relaxed);
                self.counters.unguarded.fetch_sub(slab.unguarded(), Relaxed);
                class.counters.slots.fetch_sub(slab.slots().len(), Relaxed);
                class.counters.slabs.fetch_sub(1, Relaxed);
            }
            keep
        });
        self.counters.trimmed.fetch_add(freed as u64, Relaxed);
        freed
    }
}

thread_local! {
    /// Set while this thread waits in `allocate_page_size_buffer_timeout`:
    /// its repeated tries do not count as more `exhausted` refusals.
    static RETRYING: Cell<bool> = const { Cell::new(false) };
}

/// The most bytes of slots in one small-class slab.
const SMALL_SLAB_BYTES: usize = 64 << 10;

/// A `&'static Location` as the raw pointer stored in slot metadata.
#[inline]
fn ptr_of(site: &'static Location<'static>) -> *mut Location<'static> {
    (site as *const Location<'static>).cast_mut()
}
