//! [`BufferPool`]: the public handle to a pool, and its calls.

use std::fmt;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use crate::buffer::PageBuffer;
use crate::config::Config;
use crate::future::{self, Allocate};
use crate::pool::PoolInner;
use crate::stats::{ClassStats, PoolStats};
use crate::Error;

/// A thread-safe pool of page-aligned, guarded buffers.
///
/// `BufferPool` is a cheap handle: clones share one pool. Buffers keep the
/// pool's memory alive, so dropping every handle while buffers are out is
/// sound; the slabs are unmapped when the last buffer comes back.
///
/// `Send` and `Sync`: every call takes `&self` and the shared state is
/// atomics, lock-free queues and locks, so one handle may serve every thread.
///
/// # Fork
///
/// A pool survives `fork()`: handlers registered with `pthread_atfork` hold
/// every pool lock across the fork, so a child never inherits one held by a
/// thread it lacks. In the child, inherited buffers may be read, written
/// (copy-on-write) and dropped (the slot returns to the child's copy of the
/// pool), and new buffers allocated. Free slots cached by the parent's other
/// threads are lost to the child. The process's publisher thread is not
/// there either: the child's first [`stats`](Self::stats),
/// [`publish_metrics`](Self::publish_metrics), slab mapped or pool built
/// starts a new one, which publishes every pool the child has. The clock of
/// buffer ages does not run there, so ages (and the leak-suspect count)
/// stop advancing.
/// With [`PoolBuilder::inherit_on_fork(false)`](crate::PoolBuilder::inherit_on_fork)
/// the child has no slab pages: it must neither touch nor drop inherited
/// buffers, and its copy of the pool is closed. See the "Fork" section of
/// [`design`](crate::design).
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
    /// The pool; every handle and every buffer's anchor holds one.
    pub(crate) inner: Arc<PoolInner>,
}

impl BufferPool {
    pub(crate) fn from_config(config: Config) -> Result<BufferPool, Error> {
        let inner = PoolInner::new(config);
        inner.prefill()?;
        Ok(BufferPool { inner })
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
    /// [`Exhausted`](Error::Exhausted) it blocks the calling thread up to
    /// `timeout` for room (like GStreamer's blocking `acquire_buffer`),
    /// instead of failing at once.
    ///
    /// **Never call it on an async worker thread** (tokio, async-std, ...):
    /// it parks the thread, and every task on it, while it waits. Await
    /// [`allocate_page_size_buffer_async`](Self::allocate_page_size_buffer_async)
    /// there instead.
    ///
    /// Waiters, blocking and async alike, are served first come, first
    /// served (see [`allocate_page_size_buffer_async`](Self::allocate_page_size_buffer_async)).
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
    /// - [`Error::Closed`] when the pool is closed, before or during the wait;
    /// - the other errors of
    ///   [`allocate_page_size_buffer`](Self::allocate_page_size_buffer), at
    ///   once: they do not go away by waiting.
    #[track_caller]
    pub fn allocate_page_size_buffer_timeout(
        &self,
        max_size: usize,
        timeout: Duration,
    ) -> Result<PageBuffer, Error> {
        let wait = Allocate::new(&self.inner, max_size, Location::caller(), false);
        future::block_on_timeout(wait, max_size, timeout)
    }

    /// `allocate_page_size_buffer` for async code: a future that resolves
    /// to the buffer as soon as one fits under the cap, without blocking a
    /// thread. It needs no particular runtime (tokio, async-std, smol, or a
    /// bare `block_on` all work); the wake-up comes from the release, trim,
    /// [`set_max_bytes`](Self::set_max_bytes) or [`close`](Self::close) that
    /// makes room or ends the wait.
    ///
    /// **First come, first served.** Waiters queue in arrival order, whatever
    /// their size, and only the first tries for room: a 1 MiB request at the
    /// head holds back the 4 KiB ones behind it until it is served, so a
    /// stream of small requests can never starve it. While anyone waits, an
    /// allocation that would take from the pool's shared free lists (any
    /// call that misses its thread's cache, immediate ones included) fails
    /// with [`Exhausted`](Error::Exhausted) or queues behind, rather than
    /// take the room the head waits for. Releases of any class help the
    /// head: a slot of its class serves it directly, and slabs of other
    /// classes left idle are unmapped to make room under the cap.
    ///
    /// **Cancel-safe.** Dropping the future at any point leaves nothing
    /// behind: not a place in the queue, nor a slot, nor a wake-up (one that
    /// reached a future dropped at the head is passed to the next waiter).
    ///
    /// If room is free now it resolves on the first poll, through the same
    /// thread cache as the immediate call.
    ///
    /// ```
    /// # futures_executor::block_on(async {
    /// let pool = pagepool::BufferPool::builder().max_bytes(64 << 10).build()?;
    /// let mut held = Vec::new();
    /// while let Ok(b) = pool.allocate_page_size_buffer(4096) {
    ///     held.push(b);
    /// }
    /// let one = held.pop().unwrap();
    /// std::thread::spawn(move || drop(one)); // a release on another thread
    /// let buf = pool.allocate_page_size_buffer_async(4096).await?; // woken by it
    /// assert_eq!(buf.max_len(), 4096);
    /// # Ok::<(), pagepool::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// As for [`allocate_page_size_buffer`](Self::allocate_page_size_buffer),
    /// except that `Exhausted` waits instead; [`Error::Closed`] when the pool
    /// is closed, before or during the wait.
    #[track_caller]
    #[inline]
    pub fn allocate_page_size_buffer_async(&self, max_size: usize) -> Allocate<'_> {
        Allocate::new(&self.inner, max_size, Location::caller(), false)
    }

    /// `allocate_buffer` for async code: as
    /// [`allocate_page_size_buffer_async`](Self::allocate_page_size_buffer_async),
    /// with small classes serving requests up to [`SMALL_MAX`](crate::SMALL_MAX).
    ///
    /// ```
    /// # futures_executor::block_on(async {
    /// let pool = pagepool::BufferPool::new();
    /// let rtp = pool.allocate_buffer_async(1500).await?;
    /// assert_eq!(rtp.slot_len(), 1536);
    /// # Ok::<(), pagepool::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// As for [`allocate_page_size_buffer_async`](Self::allocate_page_size_buffer_async).
    #[track_caller]
    #[inline]
    pub fn allocate_buffer_async(&self, max_size: usize) -> Allocate<'_> {
        Allocate::new(&self.inner, max_size, Location::caller(), true)
    }

    /// `allocate_page_size_buffer` with the allocation site given.
    /// `small`: a request of `allocate_buffer`, which small classes may
    /// serve (a constant at every call site, so the choice folds away).
    #[inline(always)]
    pub(crate) fn allocate_at(
        &self,
        max_size: usize,
        site: &'static Location<'static>,
        small: bool,
    ) -> Result<PageBuffer, Error> {
        PageBuffer::allocate(&self.inner, max_size, site, small)
    }

    /// `allocate_at` for a C caller's site, made by `site` only when the
    /// pool tracks sites.
    #[cfg(feature = "capi")]
    pub(crate) fn allocate_from(
        &self,
        max_size: usize,
        site: impl FnOnce() -> crate::site::SiteRef,
        small: bool,
    ) -> Result<PageBuffer, Error> {
        let site = if self.inner.tracks_sites() {
            site()
        } else {
            crate::site::SiteRef::NONE
        };
        PageBuffer::allocate_from(&self.inner, max_size, site, small)
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

    /// Restarts the high-water marks [`PoolStats::peak_bytes_in_use`] and
    /// [`PoolStats::peak_bytes_reserved`] (and their gauges) from the
    /// values now, e.g. after a capacity review.
    ///
    /// ```
    /// let pool = pagepool::BufferPool::new();
    /// drop(pool.allocate_page_size_buffer(4096)?);
    /// assert!(pool.stats().peak_bytes_in_use >= 4096);
    /// pool.reset_peaks();
    /// assert_eq!(pool.stats().peak_bytes_in_use, 0);
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    pub fn reset_peaks(&self) {
        self.inner.reset_peaks();
    }

    /// A snapshot of every size class, smallest first.
    pub fn class_stats(&self) -> Vec<ClassStats> {
        self.inner.class_stats()
    }

    /// Empties the quarantine, then unmaps every slab whose slots are all on
    /// the pool's shared free lists, and returns the bytes unmapped (guard
    /// pages included). In the slabs left mapped, the pages of the free
    /// slots of page classes go back to the OS too (`madvise(MADV_DONTNEED)`,
    /// beyond the [`min_buffers`](crate::PoolBuilder::min_buffers)): they
    /// read zeros when next handed out, stay in `bytes_reserved`, and are
    /// counted in [`PoolStats::discarded_bytes`], not in the value returned.
    /// Small classes' slabs and slots pinned by an io_uring registration keep
    /// their pages. The calling thread's cached slots go back first; other
    /// threads return theirs at their next call or when they exit, so a slab
    /// holding one of those stays mapped until a later trim. Allocations of
    /// a class being trimmed wait for the trim rather than map a new slab.
    pub fn trim(&self) -> usize {
        self.inner.trim_all()
    }

    /// Takes decay's look now instead of at the background tick's next one
    /// (see [`PoolBuilder::decay`](crate::PoolBuilder::decay)), and returns
    /// the bytes given back to the OS: 0 with decay off, or when the last
    /// look was less than a quarter period ago. Unlike [`trim`](Self::trim)
    /// it gives back only slabs no class needed for a whole period.
    ///
    /// ```
    /// let pool = pagepool::BufferPool::new();
    /// drop(pool.allocate_page_size_buffer(4096)?);
    /// // The slab was needed just now: nothing has decayed.
    /// assert_eq!(pool.decay_idle(), 0);
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    pub fn decay_idle(&self) -> usize {
        self.inner.decay_idle(std::time::Instant::now())
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
        self.inner.max_bytes()
    }

    /// Changes the cap on reserved bytes at run time (`None`: unlimited).
    /// Raising it wakes the waiters; lowering it unmaps idle slabs at once
    /// and maps no more until `bytes_reserved` is under the new cap (buffers
    /// out keep their memory, so `bytes_reserved` may stay above it until
    /// they come back and a trim or an allocation's trim gives it back).
    ///
    /// ```
    /// # futures_executor::block_on(async {
    /// let pool = pagepool::BufferPool::builder().max_bytes(64 << 10).build()?;
    /// let mut held = Vec::new();
    /// while let Ok(b) = pool.allocate_page_size_buffer(4096) {
    ///     held.push(b);
    /// }
    /// let more = pool.allocate_page_size_buffer_async(4096);
    /// let pool2 = pool.clone();
    /// std::thread::spawn(move || pool2.set_max_bytes(Some(1 << 20)));
    /// let buf = more.await?; // woken by the raised cap
    /// assert_eq!(pool.max_bytes(), Some(1 << 20));
    /// # drop((buf, held));
    /// # Ok::<(), pagepool::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a cap that cannot hold one page-sized
    /// slot and its guard pages (as [`PoolBuilder::max_bytes`](crate::PoolBuilder::max_bytes)).
    pub fn set_max_bytes(&self, max_bytes: Option<usize>) -> Result<(), Error> {
        self.inner.set_max_bytes(max_bytes)
    }

    /// Closes the pool to new buffers: every allocation from now on fails
    /// with [`Error::Closed`], and every task or thread waiting for room
    /// wakes with it (a server's shutdown). Buffers already out keep working
    /// and come back as usual; the memory goes back to the OS with
    /// [`trim`](Self::trim), or when the last handle and the last buffer
    /// are gone. Closing twice does nothing more.
    ///
    /// ```
    /// use pagepool::{BufferPool, Error};
    ///
    /// let pool = BufferPool::new();
    /// let buf = pool.allocate_page_size_buffer(4096)?;
    /// pool.close();
    /// assert!(matches!(pool.allocate_page_size_buffer(4096), Err(Error::Closed)));
    /// drop(buf); // still goes back
    /// assert_eq!(pool.stats().buffers_in_use, 0);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn close(&self) {
        self.inner.close_to_new_buffers();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
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
        c.all().map(|i| c.slot_bytes(i)).collect()
    }

    /// The slot size that serves `allocate_page_size_buffer(max_size)` (a
    /// page class), or `None` when the pool would refuse it.
    /// `allocate_buffer` serves the same sizes above
    /// [`SMALL_MAX`](crate::SMALL_MAX), and the smallest of
    /// [`SMALL_SIZES`](crate::SMALL_SIZES) that fits below.
    pub fn slot_size_for(&self, max_size: usize) -> Option<usize> {
        let c = &self.inner.classes;
        c.class_for(max_size, false).map(|i| c.slot_bytes(i))
    }
}

impl Clone for BufferPool {
    fn clone(&self) -> Self {
        self.inner.handle_cloned();
        BufferPool {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl Drop for BufferPool {
    /// The last handle closes the pool: no allocation can follow, the slabs
    /// are unmapped once the last buffer is back, and buffers still out are
    /// logged as probable leaks.
    fn drop(&mut self) {
        self.inner.handle_dropped();
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
