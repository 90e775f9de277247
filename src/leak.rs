//! Leak tracking: who holds which buffer, since when, allocated where.
//!
//! With [`LeakTracking::CallSite`] (the default) every allocation records, in
//! its slot's own metadata line, the `#[track_caller]` location of the
//! `allocate_page_size_buffer` call, the allocating thread and the time (from
//! a coarse clock that advances every 5 ms): four relaxed stores and no shared
//! write. [`LeakTracking::Backtrace`] also captures a full
//! [`std::backtrace::Backtrace`] for one allocation in N, which costs
//! microseconds each.
//!
//! Reading is off the hot path: [`BufferPool::outstanding`],
//! [`BufferPool::leak_report`] and the background metrics publisher (for
//! `pagepool_leak_suspects`) walk the slot metadata under the slab lock.
//!
//! [`BufferPool::outstanding`]: crate::BufferPool::outstanding
//! [`BufferPool::leak_report`]: crate::BufferPool::leak_report

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::buffer_pool::BufferPool;

pub use crate::config::LeakTracking;
pub use crate::observe::leak::{LeakReport, LeakSite, OutstandingBuffer};

/// A guard for tests: fails if buffers allocated since its creation are
/// still out. Made by [`BufferPool::leak_check`](crate::BufferPool::leak_check).
///
/// ```
/// let pool = pagepool::BufferPool::new();
/// let check = pool.leak_check();
/// let buf = pool.allocate_page_size_buffer(100)?;
/// drop(buf);
/// check.finish().expect("nothing leaked");
/// # Ok::<(), pagepool::Error>(())
/// ```
///
/// Dropped without [`finish`](Self::finish) (and not during a panic), it
/// panics with the report if anything allocated since its creation is out.
///
/// A check from [`BufferPool::thread_leak_check`](crate::BufferPool::thread_leak_check)
/// sees only the buffers its own thread allocated, so tests running in
/// parallel on one shared pool do not fail each other's checks.
#[derive(Debug)]
#[must_use = "a LeakCheck checks when it is finished or dropped"]
pub struct LeakCheck {
    pool: BufferPool,
    epoch: u32,
    /// The only allocating thread counted (`threads::id()`); `None`: all.
    thread: Option<u32>,
    done: bool,
}

impl LeakCheck {
    fn new(pool: BufferPool, epoch: u32, thread: Option<u32>) -> Self {
        LeakCheck {
            pool,
            epoch,
            thread,
            done: false,
        }
    }

    /// `Ok` when every buffer allocated since the check began is back;
    /// otherwise the report of those still out.
    pub fn finish(mut self) -> Result<(), LeakReport> {
        self.done = true;
        self.check()
    }

    fn check(&self) -> Result<(), LeakReport> {
        let report = self.pool.leak_report_since(self.epoch, self.thread);
        if report.is_empty() {
            Ok(())
        } else {
            Err(report)
        }
    }
}

impl Drop for LeakCheck {
    fn drop(&mut self) {
        if !self.done && !std::thread::panicking() {
            if let Err(report) = self.check() {
                panic!("LeakCheck: buffers allocated during the check are still out\n{report}");
            }
        }
    }
}

impl BufferPool {
    /// Every buffer of this pool that is out now, in address order. Walks
    /// the slot metadata under the slab lock: for reports, not hot paths.
    pub fn outstanding(&self) -> Vec<OutstandingBuffer> {
        self.inner.outstanding(|_| true)
    }

    /// The outstanding buffers at least `min_age` old, grouped by allocation
    /// site (see [`LeakReport`]).
    pub fn leak_report(&self, min_age: Duration) -> LeakReport {
        self.inner.leak_report(min_age, |_| true)
    }

    /// A guard that fails if buffers allocated from now on are still out when
    /// it is finished or dropped (see [`LeakCheck`]). Works with every
    /// [`LeakTracking`] mode; sites are named unless tracking is off.
    pub fn leak_check(&self) -> LeakCheck {
        LeakCheck::new(self.clone(), self.next_leak_epoch(), None)
    }

    /// A [`LeakCheck`] that counts only the buffers the calling thread
    /// allocates from now on: two tests sharing one pool, each on its own
    /// thread with its own check, see only their own leaks (a task that
    /// moves between threads needs [`leak_check`](Self::leak_check)). The
    /// allocating thread is recorded only with leak tracking on: with
    /// [`LeakTracking::Off`] this check counts every thread's buffers, like
    /// `leak_check`, so it never passes over a leak.
    ///
    /// ```
    /// let pool = pagepool::BufferPool::new();
    /// let check = pool.thread_leak_check();
    /// let other = pool.clone();
    /// let theirs = std::thread::spawn(move || other.allocate_page_size_buffer(100))
    ///     .join()
    ///     .unwrap()?;
    /// let mine = pool.allocate_page_size_buffer(100)?;
    /// drop(mine);
    /// check.finish().expect("this thread's buffers are back");
    /// drop(theirs);
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    pub fn thread_leak_check(&self) -> LeakCheck {
        let thread = (self.inner.config.tracking != LeakTracking::Off).then(crate::threads::id);
        LeakCheck::new(self.clone(), self.next_leak_epoch(), thread)
    }

    /// Starts a leak-check epoch: allocations from now on record it.
    fn next_leak_epoch(&self) -> u32 {
        self.inner.leak_epoch.fetch_add(1, Relaxed).wrapping_add(1)
    }

    /// Buffers allocated at or after leak-check `epoch` (by `thread`, if
    /// given) still out.
    fn leak_report_since(&self, epoch: u32, thread: Option<u32>) -> LeakReport {
        self.inner.leak_report(Duration::ZERO, |s| {
            s.allocated_since(epoch) && thread.is_none_or(|t| s.thread.load(Relaxed) == t)
        })
    }

    /// Counts the outstanding buffers older than the pool's
    /// [`leak_age_threshold`](crate::PoolBuilder::leak_age_threshold) now (0
    /// without leak tracking), and stores the count in
    /// [`PoolStats::leak_suspects`](crate::PoolStats::leak_suspects).
    pub fn leak_suspects(&self) -> usize {
        self.inner.refresh_leak_suspects()
    }
}
