//! One io_uring of a [`Registry`](super::Registry): the kernel ring, and the
//! lock that makes its submission and completion queues one thread's at a
//! time.
//!
//! The buffer table is updated through the ring's `io_uring_register`
//! calls, which the kernel serialises itself, so slab events (raised on
//! whichever thread maps or trims) never wait for this lock; only the
//! queues do. For the same reason the rings are set up without
//! `IORING_SETUP_SINGLE_ISSUER` (and so without `DEFER_TASKRUN`): on such a
//! ring the kernel refuses register calls from any other thread than the
//! submitter (`EEXIST`).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use crate::sync::{Mutex, MutexGuard};
use io_uring::{cqueue, squeue, IoUring, Parameters, Submitter};

use crate::Error;

/// One io_uring owned by a [`Registry`](super::Registry), with the
/// registry's buffer table registered in it.
///
/// Its queues are reached through [`lock`](Self::lock): one thread at a
/// time submits and reaps, which is what the `io-uring` crate's shared
/// queue accessors require. [`Registry::read_fixed`](super::Registry::read_fixed)
/// takes the same lock for the length of one read. An example of a
/// submission of your own is on [`RingGuard`].
///
/// ```
/// # let pool = pagepool::BufferPool::new();
/// # let registry = match pagepool::uring::Registry::new(&pool) {
/// #     Ok(r) => r,
/// #     Err(e) if pagepool::uring::is_unavailable(&e) => return Ok(()),
/// #     Err(e) => return Err(e.into()),
/// # };
/// let ring: &pagepool::uring::Ring = registry.ring(0).expect("one ring");
/// drop(ring.lock()?); // the queues are free: nothing is in flight
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Ring {
    /// The kernel ring. Its queues are touched only under `queues`.
    uring: IoUring,
    /// Guards the submission and completion queues.
    queues: Mutex<Queues>,
    /// Set in a child of `fork`: the kernel ring is the parent's, shared
    /// through the inherited file descriptor, so the child never enters it
    /// (nor takes `queues`, which a parent thread may have held).
    inherited: AtomicBool,
}

/// What the queue lock guards beside the queues themselves.
#[derive(Debug, Default)]
struct Queues {
    /// Completions reaped by a `read_fixed` that were not its own, kept in
    /// order for [`RingGuard::pop_completion`].
    stash: VecDeque<cqueue::Entry>,
    /// Set when an `io_uring_enter` failed for good with an entry still in
    /// the submission queue: the ring is never entered again (see
    /// [`RingGuard::wait_for`]).
    broken: bool,
}

/// The locked queues of a [`Ring`]: submit entries, submit and wait, reap
/// completions.
///
/// Dropping it unlocks the ring. Entries pushed and not submitted stay in
/// the queue for the next holder's submit.
///
/// A `WRITE_FIXED` of a pooled buffer, by its table index:
///
/// ```
/// use std::os::fd::AsRawFd;
/// use io_uring::{opcode, types::Fd};
/// use pagepool::{uring::{self, Registry}, BufferPool};
///
/// let pool = BufferPool::new();
/// let registry = match Registry::new(&pool) {
///     Ok(r) => r,
///     Err(e) if uring::is_unavailable(&e) => return Ok(()),
///     Err(e) => return Err(e.into()),
/// };
/// let mut buf = pool.allocate_page_size_buffer(4096)?;
/// buf.extend_from_slice(b"segment 1\n")?;
/// let index = buf.fixed_index(&registry).expect("registered");
/// let path = std::env::temp_dir().join(format!("pagepool-wf-{}", std::process::id()));
/// let file = std::fs::File::create(&path)?;
///
/// let mut ring = registry.ring(0).expect("one ring").lock()?;
/// let write = opcode::WriteFixed::new(Fd(file.as_raw_fd()), buf.as_ptr(), buf.len() as u32, index)
///     .build()
///     .user_data(1);
/// // SAFETY: `buf` and `file` outlive the write, whose completion is
/// // reaped below; the tag is not `uring::READ_USER_DATA`.
/// unsafe { ring.submission().push(&write) }.expect("the queue has room");
/// let done = loop {
///     ring.submitter().submit_and_wait(1)?;
///     if let Some(done) = ring.pop_completion() {
///         break done;
///     }
/// };
/// assert_eq!((done.user_data(), done.result()), (1, 10));
/// drop(ring);
/// assert_eq!(std::fs::read(&path)?, b"segment 1\n");
/// std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RingGuard<'a> {
    uring: &'a IoUring,
    queues: MutexGuard<'a, Queues>,
}

impl Ring {
    /// A ring of `entries` submission entries (the kernel rounds up to a
    /// power of two; the completion queue is twice as long).
    pub(super) fn new(entries: u32) -> io::Result<Ring> {
        Ok(Ring {
            uring: IoUring::builder().build(entries)?,
            queues: Mutex::new(Queues::default()),
            inherited: AtomicBool::new(false),
        })
    }

    /// The kernel ring, for the buffer table's register calls (which need
    /// no queue lock).
    pub(super) fn uring(&self) -> &IoUring {
        &self.uring
    }

    /// The parameters the kernel set the ring up with (queue sizes,
    /// features).
    ///
    /// ```
    /// # let pool = pagepool::BufferPool::new();
    /// # let registry = match pagepool::uring::Registry::new(&pool) {
    /// #     Ok(r) => r,
    /// #     Err(e) if pagepool::uring::is_unavailable(&e) => return Ok(()),
    /// #     Err(e) => return Err(e.into()),
    /// # };
    /// let ring = registry.ring(0).expect("one ring at least");
    /// assert!(ring.params().sq_entries() >= 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn params(&self) -> &Parameters {
        self.uring.params()
    }

    /// Locks the ring's queues, waiting for another holder (a
    /// `read_fixed` in progress, or your own submissions) to let go.
    ///
    /// # Errors
    /// [`Error::Os`] (kind `Other`) when the ring is broken: an earlier
    /// `io_uring_enter` failed with an entry still queued, so the ring is
    /// never entered again (entering it would start that read after its
    /// caller was told it failed). Use another ring or a new registry.
    /// The same in a child of `fork`: the ring is the parent's (the child
    /// shares the kernel ring through the inherited descriptor), and the
    /// child must build its own registry.
    ///
    /// ```
    /// # let pool = pagepool::BufferPool::new();
    /// # let registry = match pagepool::uring::Registry::new(&pool) {
    /// #     Ok(r) => r,
    /// #     Err(e) if pagepool::uring::is_unavailable(&e) => return Ok(()),
    /// #     Err(e) => return Err(e.into()),
    /// # };
    /// use io_uring::opcode;
    /// let mut ring = registry.ring(0).expect("one ring").lock()?;
    /// let nop = opcode::Nop::new().build().user_data(7);
    /// // SAFETY: a NOP touches no memory.
    /// unsafe { ring.submission().push(&nop) }.expect("the queue has room");
    /// ring.submitter().submit_and_wait(1)?;
    /// let done = ring.pop_completion().expect("the NOP completed");
    /// assert_eq!((done.user_data(), done.result()), (7, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> Result<RingGuard<'_>, Error> {
        self.not_inherited()?;
        Self::checked(&self.uring, self.queues.lock())
    }

    /// [`lock`](Self::lock) if the queues are free now, `None` if another
    /// thread holds them.
    pub(super) fn try_lock(&self) -> Option<Result<RingGuard<'_>, Error>> {
        if let Err(e) = self.not_inherited() {
            return Some(Err(e));
        }
        let queues = self.queues.try_lock()?;
        Some(Self::checked(&self.uring, queues))
    }

    /// Marks this ring as the parent's, in a child of `fork` (from the fork
    /// handler, before the child runs anything else).
    pub(super) fn forget_in_child(&self) {
        self.inherited.store(true, Relaxed);
    }

    /// Whether this is a parent's ring inherited across `fork`.
    pub(super) fn is_inherited(&self) -> bool {
        self.inherited.load(Relaxed)
    }

    /// `Ok` unless this ring was inherited across `fork`.
    fn not_inherited(&self) -> Result<(), Error> {
        if self.is_inherited() {
            return Err(Error::Os(io::Error::other(
                "pagepool: this io_uring was inherited across fork() and belongs to the \
                 parent; build a new Registry in the child",
            )));
        }
        Ok(())
    }

    fn checked<'a>(
        uring: &'a IoUring,
        queues: MutexGuard<'a, Queues>,
    ) -> Result<RingGuard<'a>, Error> {
        if queues.broken {
            return Err(Error::Os(io::Error::other(
                "pagepool: this io_uring is broken (an io_uring_enter failed with a read \
                 still queued) and is no longer entered",
            )));
        }
        Ok(RingGuard { uring, queues })
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &std::os::fd::AsRawFd::as_raw_fd(&self.uring))
            .field("sq_entries", &self.uring.params().sq_entries())
            .finish_non_exhaustive()
    }
}

impl RingGuard<'_> {
    /// The submission queue. The queue's tail is published when the
    /// returned value drops.
    ///
    /// Pushing an entry is `unsafe` (the `io-uring` crate's
    /// [`push`](io_uring::SubmissionQueue::push)), and on a registry's ring
    /// its contract has one more item:
    /// - the memory the entry names stays valid until its completion is
    ///   reaped (the crate's rule);
    /// - its `user_data` is not [`READ_USER_DATA`](super::READ_USER_DATA):
    ///   [`Registry::read_fixed`](super::Registry::read_fixed) knows its
    ///   own completion by that tag, and would take yours for it and return
    ///   while its read is still in flight.
    pub fn submission(&mut self) -> io_uring::SubmissionQueue<'_> {
        // SAFETY: the queue lock, held by `self` and borrowed mutably here,
        // makes this the only `SubmissionQueue` of the ring: every other
        // access (`read_fixed`, other guards) goes through the same lock.
        unsafe { self.uring.submission_shared() }
    }

    /// The ring's submitter: `submit`, `submit_and_wait`, and the register
    /// calls. Leave the buffer table to the registry: replacing or
    /// unregistering it (`unregister_buffers`) makes its fixed reads fail.
    pub fn submitter(&self) -> Submitter<'_> {
        self.uring.submitter()
    }

    /// The oldest completion not yet taken: first those a `read_fixed`
    /// reaped while waiting for its own, then the ring's completion queue.
    /// (Examples of this and of [`submission`](Self::submission) and
    /// [`submitter`](Self::submitter): [`RingGuard`], [`Ring::lock`].)
    pub fn pop_completion(&mut self) -> Option<cqueue::Entry> {
        if let Some(entry) = self.queues.stash.pop_front() {
            return Some(entry);
        }
        // SAFETY: the queue lock, held by `self` and borrowed mutably here,
        // makes this the only `CompletionQueue` of the ring.
        unsafe { self.uring.completion_shared() }.next()
    }

    /// Pushes `entry` (tagged [`READ_USER_DATA`](super::READ_USER_DATA)),
    /// submits it and waits for its completion; returns its result (a byte
    /// count, or a negated errno).
    ///
    /// It returns only when the kernel is done with the entry, or when the
    /// entry provably never reached the kernel: the caller's buffer is then
    /// the caller's again either way.
    ///
    /// # Safety
    /// - `entry` carries `user_data` [`READ_USER_DATA`](super::READ_USER_DATA);
    /// - every byte the entry lets the kernel write is memory the caller may
    ///   write for the whole call (this function does not return before the
    ///   kernel is done with it).
    ///
    /// # Errors
    /// The submission queue stays full after a submit, or an
    /// `io_uring_enter` fails (other than `EINTR`, `EAGAIN`, `EBUSY`, which
    /// are retried) while the entry is still queued: the ring is marked
    /// broken and never entered again, so the entry is never started.
    pub(super) unsafe fn wait_for(&mut self, entry: &squeue::Entry) -> io::Result<i32> {
        // Room first: earlier holders may have left entries unsubmitted.
        // Nothing of ours is queued yet, so any failure here may return.
        let mut tries = 0;
        while self.submission().is_full() && tries < 8 {
            tries += 1;
            match self.uring.submit() {
                Ok(_) => {}
                Err(e) if is_transient(&e) => {
                    self.stash_all();
                    std::thread::yield_now();
                }
                Err(e) => return Err(e),
            }
        }
        // SAFETY: the caller's contract: the memory the entry names stays
        // writable by the kernel until we see its completion below.
        let pushed = unsafe { self.submission().push(entry) };
        if pushed.is_err() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "pagepool: the io_uring submission queue stays full",
            ));
        }
        loop {
            match self.uring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    if !self.submission().is_empty() {
                        // Our entry (or one before it) is still queued and the
                        // kernel refuses to take it: never enter this ring
                        // again, so it is never started, and the caller's
                        // buffer is the caller's.
                        self.queues.broken = true;
                        tracing::warn!(
                            error = %e,
                            "pagepool: io_uring_enter failed with a read queued; the ring is \
                             retired"
                        );
                        return Err(e);
                    }
                    // The entry is in flight: the kernel may still write the
                    // buffer, so returning now would be unsound. Wait again.
                    std::thread::yield_now();
                }
            }
            if let Some(result) = self.reap_own() {
                return Ok(result);
            }
        }
    }

    /// Moves every completion in the queue to the stash.
    fn stash_all(&mut self) {
        // SAFETY: the queue lock, held by `self` (borrowed mutably), makes
        // this the only `CompletionQueue` of the ring.
        let cq = unsafe { self.uring.completion_shared() };
        self.queues.stash.extend(cq);
    }

    /// Moves the completions in the queue to the stash, all but ours;
    /// returns the result of ours if it was there.
    fn reap_own(&mut self) -> Option<i32> {
        // SAFETY: the queue lock, held by `self` (borrowed mutably), makes
        // this the only `CompletionQueue` of the ring.
        let cq = unsafe { self.uring.completion_shared() };
        let mut own = None;
        for entry in cq {
            if own.is_none() && entry.user_data() == super::READ_USER_DATA {
                own = Some(entry.result());
            } else {
                self.queues.stash.push_back(entry);
            }
        }
        own
    }
}

impl fmt::Debug for RingGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingGuard")
            .field("stashed", &self.queues.stash.len())
            .finish_non_exhaustive()
    }
}

/// Whether an `io_uring_enter` error only asks to try again: a signal
/// (`EINTR`), no memory for requests right now (`EAGAIN`), or a full
/// completion queue (`EBUSY`, drained by the caller's reap).
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}
