//! [`Allocate`]: the future of the pool's async allocations, and driving
//! such a future on a parked thread for the blocking `_timeout` forms.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::pin;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::buffer::PageBuffer;
use crate::pool::{PoolInner, RoomWait};
use crate::stats::WaitOutcome;
use crate::Error;

/// The future of [`BufferPool::allocate_page_size_buffer_async`](crate::BufferPool::allocate_page_size_buffer_async) and
/// [`BufferPool::allocate_buffer_async`](crate::BufferPool::allocate_buffer_async): resolves to the buffer once one
/// fits under the cap. Dropping it at any point is safe and leaves nothing
/// behind (see the methods). `Send` (and `Sync`): it borrows the pool, which
/// is `Sync`, so a task holding it may move between a runtime's workers.
///
/// ```
/// # futures_executor::block_on(async {
/// let pool = pagepool::BufferPool::new();
/// let wait: pagepool::Allocate<'_> = pool.allocate_page_size_buffer_async(4096);
/// let buf = wait.await?;
/// assert_eq!(buf.max_len(), 4096);
/// # Ok::<(), pagepool::Error>(())
/// # }).unwrap();
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Allocate<'a> {
    /// The pool asked.
    pool: &'a Arc<PoolInner>,
    /// The request.
    max_size: usize,
    /// Where the future was made: the buffer's allocation site.
    site: &'static Location<'static>,
    /// Whether small classes may serve it (`allocate_buffer_async`).
    small: bool,
    /// The place in the pool's queue, once it had to wait.
    wait: RoomWait,
}

impl<'a> Allocate<'a> {
    #[inline]
    pub(crate) fn new(
        pool: &'a Arc<PoolInner>,
        max_size: usize,
        site: &'static Location<'static>,
        small: bool,
    ) -> Self {
        Allocate {
            pool,
            max_size,
            site,
            small,
            wait: RoomWait::default(),
        }
    }
}

impl Future for Allocate<'_> {
    type Output = Result<PageBuffer, Error>;

    // Always: the first try is the immediate call's inlined fast path; the
    // rest is out of line in `wait_for_room`.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin`.
        let this = self.get_mut();
        let (pool, max_size, site, small) = (this.pool, this.max_size, this.site, this.small);
        // The common case, as cheap as the immediate call: room now. (With
        // others waiting, the try is refused by the pool's gate, and the
        // request queues behind them.)
        if !this.wait.is_waiting() {
            match PageBuffer::allocate(pool, max_size, site, small) {
                Ok(buf) => return Poll::Ready(Ok(buf)),
                Err(Error::Exhausted { .. }) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        this.wait_for_room(cx)
    }
}

impl Allocate<'_> {
    /// `poll` past the first try: the pool's queue.
    #[cold]
    #[inline(never)]
    fn wait_for_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<PageBuffer, Error>> {
        let (pool, max_size, site, small) = (self.pool, self.max_size, self.site, self.small);
        let mut attempt = || PageBuffer::allocate(pool, max_size, site, small);
        pool.poll_room(&mut self.wait, cx, (max_size, small), &mut attempt)
    }
}

impl Drop for Allocate<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.wait.is_waiting() {
            self.pool.end_wait(&mut self.wait, WaitOutcome::Cancelled);
        }
    }
}

/// A wait that [`block_on_timeout`] can end as timed out (rather than
/// cancelled, as dropping it would count it).
pub(crate) trait TimedWait: Future {
    /// Leaves any queue, counting the wait as timed out.
    fn time_out(self: Pin<&mut Self>);
}

impl TimedWait for Allocate<'_> {
    fn time_out(self: Pin<&mut Self>) {
        // Every field is `Unpin`.
        let this = self.get_mut();
        if this.wait.is_waiting() {
            this.pool.end_wait(&mut this.wait, WaitOutcome::TimedOut);
        }
    }
}

impl fmt::Debug for Allocate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allocate")
            .field("pool", &self.pool.name())
            .field("max_size", &self.max_size)
            .field("waiting", &self.wait.is_waiting())
            .finish()
    }
}

/// Wakes a thread parked in [`block_on_timeout`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `wait` (a wait for a request of `max_size` bytes) on this
/// thread, parked between polls, until it resolves or `timeout` passes
/// (`TimedOut`; the future is dropped, which leaves its queue). Never on an
/// async worker thread.
pub(crate) fn block_on_timeout<T>(
    wait: impl TimedWait<Output = Result<T, Error>>,
    max_size: usize,
    timeout: Duration,
) -> Result<T, Error> {
    let start = Instant::now();
    // `None`: a timeout too long to add to now, i.e. wait for ever.
    let deadline = start.checked_add(timeout);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut wait = pin!(wait);
    loop {
        if let Poll::Ready(r) = wait.as_mut().poll(&mut cx) {
            return r;
        }
        let now = Instant::now();
        match deadline {
            Some(d) if now >= d => {
                wait.as_mut().time_out();
                return Err(Error::TimedOut {
                    requested: max_size,
                    waited: now - start,
                });
            }
            Some(d) => thread::park_timeout(d - now),
            None => thread::park(),
        }
    }
}
