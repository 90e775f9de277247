//! [`Quota`]: a share of a pool with a cap of its own, so one client (a
//! connection, a tenant) cannot hold the whole pool.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use crate::buffer::PageBuffer;
use crate::buffer_pool::BufferPool;
use crate::future::{self, Allocate};
use crate::pool::QuotaAccount;
use crate::waitlist::Ticket;
use crate::Error;

impl BufferPool {
    /// A [`Quota`] of this pool capped at `max_bytes` of slot bytes: a
    /// cheap handle that allocates from this pool but never holds more than
    /// its own cap. A media server gives one to each connection, so a client
    /// that stops reading holds at most its quota, not the pool.
    ///
    /// A buffer counts against the quota with its slot's bytes (its size
    /// class, e.g. 8 KiB for a 5000-byte request), from allocation until
    /// its release, whatever it became meanwhile (`Bytes`, `SharedBuffer`);
    /// it may outlive the handle. Quotas may add up to more than the pool's
    /// cap (overbooking): each bounds one client, the pool bounds the sum.
    ///
    /// ```
    /// use pagepool::{BufferPool, Error};
    ///
    /// let pool = BufferPool::new();
    /// let client = pool.quota(16 << 10);
    /// let a = client.allocate_page_size_buffer(8192)?;
    /// let b = client.allocate_page_size_buffer(8192)?;
    /// let e = client.allocate_page_size_buffer(4096).unwrap_err();
    /// assert!(matches!(e, Error::QuotaExceeded { held: 16384, .. }));
    /// drop(a);
    /// let c = client.allocate_page_size_buffer(4096)?; // room again
    /// assert_eq!(client.stats().held_bytes, 8192 + 4096);
    /// # drop((b, c));
    /// # Ok::<(), Error>(())
    /// ```
    #[must_use = "a quota caps only the buffers allocated through it"]
    pub fn quota(&self, max_bytes: usize) -> Quota {
        Quota {
            shared: Arc::new(Shared {
                account: self.inner.open_account(max_bytes),
                pool: self.clone(),
            }),
        }
    }
}

/// A share of a [`BufferPool`] with its own cap; see
/// [`BufferPool::quota`]. Clones share one quota. `Send` and `Sync`, like
/// the pool: its account is atomics and a locked list of waiters.
///
/// Its calls mirror the pool's, with one more refusal:
/// [`Error::QuotaExceeded`] when the quota's cap (not the pool's) is hit.
/// The async forms wait for the quota's room, then the pool's, first come,
/// first served at each.
///
/// ```
/// # futures_executor::block_on(async {
/// let pool = pagepool::BufferPool::new();
/// let client = pool.quota(64 << 10);
/// let buf = client.allocate_page_size_buffer_async(65536).await?;
/// let next = client.allocate_page_size_buffer_async(4096); // waits for `buf`
/// drop(buf);
/// let next = next.await?;
/// # drop(next);
/// # Ok::<(), pagepool::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Quota {
    shared: Arc<Shared>,
}

/// What the clones of one quota share.
struct Shared {
    /// The account; buffers charged to it hold it too.
    account: Arc<QuotaAccount>,
    /// The pool (a handle: the pool stays open while a quota lives).
    pool: BufferPool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.pool.inner.close_account(&self.account);
    }
}

/// A snapshot of one quota, from [`Quota::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaStats {
    /// The cap on `held_bytes`.
    pub limit: usize,
    /// Slot bytes of the quota's live buffers (and of allocations in
    /// progress).
    pub held_bytes: usize,
    /// The quota's live buffers.
    pub buffers: usize,
    /// Allocations refused with [`Error::QuotaExceeded`].
    pub refusals: u64,
    /// Tasks and threads waiting for the quota's room now.
    pub waiting: usize,
}

impl Quota {
    /// The pool this quota draws from.
    pub fn pool(&self) -> &BufferPool {
        &self.shared.pool
    }

    /// `BufferPool::allocate_page_size_buffer`, counted against the quota.
    ///
    /// # Errors
    /// [`Error::QuotaExceeded`] when the buffer's slot would take the quota
    /// past its cap (or others wait for its room); otherwise as the pool's.
    #[track_caller]
    pub fn allocate_page_size_buffer(&self, max_size: usize) -> Result<PageBuffer, Error> {
        self.allocate_now(max_size, Location::caller(), false)
    }

    /// `BufferPool::allocate_buffer`, counted against the quota.
    ///
    /// ```
    /// let pool = pagepool::BufferPool::new();
    /// let client = pool.quota(3 * 1536);
    /// let packets: Vec<_> = (0..3).map(|_| client.allocate_buffer(1500)).collect::<Result<_, _>>()?;
    /// assert!(client.allocate_buffer(1500).is_err());
    /// # drop(packets);
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    ///
    /// # Errors
    /// As for [`allocate_page_size_buffer`](Self::allocate_page_size_buffer).
    #[track_caller]
    pub fn allocate_buffer(&self, max_size: usize) -> Result<PageBuffer, Error> {
        self.allocate_now(max_size, Location::caller(), true)
    }

    /// `BufferPool::allocate_page_size_buffer_async`, counted against the
    /// quota: waits for the quota's room (first come, first served among
    /// its waiters), then for the pool's. Cancel-safe like the pool's: a
    /// dropped future gives back what it reserved and passes its wake-ups
    /// on.
    ///
    /// # Errors
    /// As for the pool's, plus [`Error::QuotaExceeded`] at once for a
    /// request larger than the quota's whole cap.
    #[track_caller]
    pub fn allocate_page_size_buffer_async(&self, max_size: usize) -> QuotaAllocate<'_> {
        QuotaAllocate::new(self, max_size, Location::caller(), false)
    }

    /// `BufferPool::allocate_buffer_async`, counted against the quota.
    ///
    /// # Errors
    /// As for [`allocate_page_size_buffer_async`](Self::allocate_page_size_buffer_async).
    #[track_caller]
    pub fn allocate_buffer_async(&self, max_size: usize) -> QuotaAllocate<'_> {
        QuotaAllocate::new(self, max_size, Location::caller(), true)
    }

    /// The blocking form of
    /// [`allocate_page_size_buffer_async`](Self::allocate_page_size_buffer_async),
    /// up to `timeout` (then [`Error::TimedOut`]). Never on an async worker
    /// thread.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = pagepool::BufferPool::new();
    /// let client = pool.quota(4096);
    /// let held = client.allocate_page_size_buffer(4096)?;
    /// let e = client.allocate_page_size_buffer_timeout(4096, Duration::from_millis(5));
    /// assert!(matches!(e, Err(pagepool::Error::TimedOut { .. })));
    /// # drop(held);
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    ///
    /// # Errors
    /// As for the async form, plus [`Error::TimedOut`].
    #[track_caller]
    pub fn allocate_page_size_buffer_timeout(
        &self,
        max_size: usize,
        timeout: Duration,
    ) -> Result<PageBuffer, Error> {
        let wait = QuotaAllocate::new(self, max_size, Location::caller(), false);
        future::block_on_timeout(wait, max_size, timeout)
    }

    /// The quota's cap.
    pub fn max_bytes(&self) -> usize {
        self.shared.account.limit.load(Relaxed)
    }

    /// Changes the quota's cap. A raised cap wakes its waiters; a lowered
    /// one refuses new buffers until the quota's buffers are under it (the
    /// buffers out stay valid).
    ///
    /// ```
    /// let pool = pagepool::BufferPool::new();
    /// let client = pool.quota(4096);
    /// client.set_max_bytes(1 << 20);
    /// let big = client.allocate_page_size_buffer(1 << 20)?;
    /// # drop(big);
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    pub fn set_max_bytes(&self, max_bytes: usize) {
        let account = &self.shared.account;
        account.limit.store(max_bytes, Relaxed);
        account.room.wake_head();
    }

    /// A snapshot of the quota's counters.
    ///
    /// ```
    /// let pool = pagepool::BufferPool::new();
    /// let client = pool.quota(1 << 20);
    /// let buf = client.allocate_page_size_buffer(5000)?;
    /// let s = client.stats();
    /// assert_eq!((s.held_bytes, s.buffers, s.limit), (8192, 1, 1 << 20));
    /// assert_eq!(pool.stats().bytes_in_quotas, 8192);
    /// # drop(buf);
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    pub fn stats(&self) -> QuotaStats {
        let a = &self.shared.account;
        QuotaStats {
            limit: a.limit.load(Relaxed),
            held_bytes: a.held.load(Relaxed),
            buffers: a.buffers.load(Relaxed),
            refusals: a.refusals.load(Relaxed),
            waiting: a.room.len(),
        }
    }

    /// The immediate forms: no waiting at the quota (and none ahead of this
    /// request), nor at the pool.
    fn allocate_now(
        &self,
        max_size: usize,
        site: &'static Location<'static>,
        small: bool,
    ) -> Result<PageBuffer, Error> {
        let charge = self.reserve(max_size, small, false)?;
        let got = self.shared.pool.allocate_at(max_size, site, small);
        if let Some(charge) = charge {
            self.settle(charge, got.as_ref().ok());
        }
        got
    }

    /// Reserves the charge of a request, `None` for a request no class
    /// serves (the pool then refuses it). `in_turn`: the caller is the
    /// quota's head waiter, else it may not pass others waiting.
    fn reserve(&self, max_size: usize, small: bool, in_turn: bool) -> Result<Option<usize>, Error> {
        let Some(charge) = self.shared.pool.inner.charge_for(max_size, small) else {
            return Ok(None);
        };
        let account = &self.shared.account;
        let reserved = if account.room.any_relaxed() && !in_turn {
            Err(account.held.load(Relaxed))
        } else {
            account.reserve(charge)
        };
        match reserved {
            Ok(()) => Ok(Some(charge)),
            Err(held) => {
                // A waiter's retries are one refusal, counted by its first try.
                if !in_turn {
                    account.refusals.fetch_add(1, Relaxed);
                    let counters = &self.shared.pool.inner.counters;
                    counters.quota_refusals.fetch_add(1, Relaxed);
                }
                Err(Error::QuotaExceeded {
                    requested: max_size,
                    charge,
                    held,
                    limit: account.limit.load(Relaxed),
                })
            }
        }
    }

    /// The end of a reserved allocation: charges the new buffer, or gives
    /// the reservation back.
    fn settle(&self, charge: usize, buf: Option<&PageBuffer>) {
        let account = &self.shared.account;
        match buf {
            Some(buf) => self.shared.pool.inner.charge(buf.meta(), account, charge),
            None => account.unreserve(charge),
        }
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("pool", &self.pool().name())
            .field("stats", &self.stats())
            .finish()
    }
}

/// The future of [`Quota::allocate_page_size_buffer_async`] and
/// [`Quota::allocate_buffer_async`]: the quota's room first, then the
/// pool's. Dropping it at any point gives back what it reserved.
///
/// ```
/// # futures_executor::block_on(async {
/// let pool = pagepool::BufferPool::new();
/// let client = pool.quota(1 << 20);
/// let wait: pagepool::QuotaAllocate<'_> = client.allocate_buffer_async(188);
/// assert_eq!(wait.await?.max_len(), 188);
/// # Ok::<(), pagepool::Error>(())
/// # }).unwrap();
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct QuotaAllocate<'a> {
    /// The quota asked.
    quota: &'a Quota,
    /// The request.
    max_size: usize,
    /// Whether small classes may serve it.
    small: bool,
    /// The place in the quota's queue, while waiting there.
    ticket: Option<Ticket>,
    /// Where the allocation is.
    stage: Stage,
    /// The wait at the pool, once the quota's room is reserved.
    pool_wait: Allocate<'a>,
}

/// Where a [`QuotaAllocate`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the quota's room (in its queue once `ticket` is set).
    AtQuota,
    /// The quota's room is reserved, `charge` bytes of it (`None`: a request
    /// no class serves, which the pool refuses); waiting at the pool.
    AtPool { charge: Option<usize> },
    /// Resolved; nothing is reserved any more.
    Done,
}

impl<'a> QuotaAllocate<'a> {
    fn new(
        quota: &'a Quota,
        max_size: usize,
        site: &'static Location<'static>,
        small: bool,
    ) -> Self {
        QuotaAllocate {
            quota,
            max_size,
            small,
            ticket: None,
            stage: Stage::AtQuota,
            pool_wait: Allocate::new(&quota.shared.pool.inner, max_size, site, small),
        }
    }
}

impl Future for QuotaAllocate<'_> {
    type Output = Result<PageBuffer, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin`.
        let this = self.get_mut();
        let quota = this.quota;
        let account = &quota.shared.account;
        if this.stage == Stage::AtQuota {
            if quota.pool().is_closed() {
                account.room.leave_with(&mut this.ticket);
                return Poll::Ready(Err(Error::Closed));
            }
            let (max_size, small) = (this.max_size, this.small);
            let cap = account.limit.load(Relaxed);
            // A request over the whole cap would wait for ever.
            let refused =
                |e: &Error| matches!(e, Error::QuotaExceeded { charge, .. } if *charge <= cap);
            let first = (this.ticket.is_none() && !account.room.any_relaxed())
                .then(|| quota.reserve(max_size, small, false));
            let polled = match first {
                Some(got) if !got.as_ref().is_err_and(refused) => Poll::Ready(got),
                _ => account.room.poll_turn(
                    &mut this.ticket,
                    cx,
                    &mut || quota.reserve(max_size, small, true),
                    refused,
                    || {},
                ),
            };
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    account.room.leave_with(&mut this.ticket);
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(charge)) => {
                    // Our turn is over: the next waiter may reserve too.
                    account.room.leave_with(&mut this.ticket);
                    this.stage = Stage::AtPool { charge };
                }
            }
        }
        let charge = match this.stage {
            Stage::AtPool { charge } => charge,
            // Polled again after it resolved: nothing more to give.
            _ => None,
        };
        let got = ready!(Pin::new(&mut this.pool_wait).poll(cx));
        this.stage = Stage::Done;
        if let Some(charge) = charge {
            quota.settle(charge, got.as_ref().ok());
        }
        Poll::Ready(got)
    }
}

impl future::TimedWait for QuotaAllocate<'_> {
    fn time_out(self: Pin<&mut Self>) {
        // Its own queue is left by its drop; a pool wait counts as timed out.
        Pin::new(&mut self.get_mut().pool_wait).time_out();
    }
}

impl Drop for QuotaAllocate<'_> {
    fn drop(&mut self) {
        let account = &self.quota.shared.account;
        account.room.leave_with(&mut self.ticket);
        // Reserved and not settled: give it back (the pool's wait leaves
        // its queue in its own drop).
        if let Stage::AtPool {
            charge: Some(charge),
        } = self.stage
        {
            account.unreserve(charge);
        }
    }
}

impl fmt::Debug for QuotaAllocate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaAllocate")
            .field("max_size", &self.max_size)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}
