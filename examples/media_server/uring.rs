//! `O_DIRECT` reads through io_uring (feature `io-uring`) into registered
//! pooled buffers, driven from tokio: the task that reads pushes its entry
//! (`READ_FIXED` when the buffer is registered, which every slot of the
//! chunk class is) and submits without waiting (the kernel starts the read,
//! or hands it to its own workers where it would block; the read queue,
//! `read_queue.rs`, keeps the device's queue short), and a reaper task
//! reaps the completions when the eventfd registered with the ring says
//! some arrived, and hands each back to its task. No thread of ours waits
//! in the kernel, and a read costs no hop to another thread: an earlier
//! version had a thread own the ring, and its wake-ups (an eventfd write
//! per read, the thread's sleep and wake, a cross-thread wake per
//! completion) cost more CPU than the 64 KiB reads themselves.
//!
//! A read in flight is owned by the table of reads (its buffer and an
//! `Arc` of its file), so a response dropped meanwhile (its client gone)
//! frees neither before the kernel is done; dropping the read path waits
//! for what is in flight.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use io_uring::{opcode, types};
use pagepool::direct::DirectFile;
use pagepool::uring::{Registry, RingGuard, READ_USER_DATA};
use pagepool::{BufferPool, PageBuffer};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Submission entries of the ring.
const ENTRIES: u32 = 256;

/// Times an `EAGAIN`/`EINTR` completion is resubmitted before the read
/// fails with it.
const RESUBMITS: u32 = 16;

/// Where one read's completion lands: made once per response, reused by
/// each of its reads.
#[derive(Debug, Default)]
pub struct Slot {
    done: Mutex<Option<(PageBuffer, i32)>>,
    notify: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slot {
    fn complete(&self, buf: PageBuffer, result: i32) {
        *lock(&self.done) = Some((buf, result));
        // Keeps a permit when the task is not waiting yet.
        self.notify.notify_one();
    }

    async fn wait(&self) -> (PageBuffer, i32) {
        loop {
            if let Some(done) = lock(&self.done).take() {
                return done;
            }
            self.notify.notified().await;
        }
    }
}

/// One read: `len` bytes at `offset` of `file`, into `buf` from byte `at`.
/// Dropped before its completion (it never reached the ring), it completes
/// its slot with `ECANCELED`, so its task never waits forever.
struct Request {
    buf: Option<PageBuffer>,
    at: usize,
    len: u32,
    offset: u64,
    index: Option<u16>,
    file: Arc<DirectFile>,
    slot: Arc<Slot>,
}

impl Request {
    fn complete(mut self, result: i32) {
        if let Some(buf) = self.buf.take() {
            self.slot.complete(buf, result);
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.slot.complete(buf, -libc::ECANCELED);
        }
    }
}

/// The io_uring read path of the media pool.
pub struct UringReads {
    inner: Arc<Inner>,
    reaper: JoinHandle<()>,
}

/// What the reading tasks and the reaper share.
struct Inner {
    registry: Registry,
    /// Signalled by the kernel for each completion (`register_eventfd`).
    completions: AsyncFd<File>,
    reads: Mutex<Reads>,
}

/// The reads in flight, by `user_data`.
#[derive(Default)]
struct Reads {
    next_id: u64,
    in_flight: HashMap<u64, Request>,
}

impl std::fmt::Debug for UringReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringReads")
            .field("registry", &self.inner.registry)
            .finish_non_exhaustive()
    }
}

impl UringReads {
    /// A ring with the media pool's slots registered, an eventfd for its
    /// completions, and the reaper task (on the current tokio runtime).
    pub fn new(pool: &BufferPool) -> Result<Arc<UringReads>, String> {
        let registry = Registry::builder()
            .rings(1)
            .entries(ENTRIES)
            .build(pool)
            .map_err(|e| format!("no io_uring: {e}"))?;
        // SAFETY: eventfd takes no pointer; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("no eventfd: {}", io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new descriptor (checked above), owned by nothing
        // else.
        let eventfd = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        registry
            .ring(0)
            .expect("a registry of one ring")
            .lock()
            .map_err(|e| format!("cannot lock the io_uring: {e}"))?
            .submitter()
            .register_eventfd(eventfd.as_raw_fd())
            .map_err(|e| format!("cannot register an eventfd with the io_uring: {e}"))?;
        // SAFETY: the `File` owns the eventfd and is the `AsyncFd`'s for its
        // whole life: nothing closes or swaps it meanwhile.
        let completions = unsafe { AsyncFd::register_with_interest(eventfd, Interest::READABLE) }
            .map_err(|e| format!("cannot poll the io_uring's eventfd: {e}"))?;
        let inner = Arc::new(Inner {
            registry,
            completions,
            reads: Mutex::default(),
        });
        let reaper = tokio::spawn(reap(Arc::clone(&inner)));
        Ok(Arc::new(UringReads { inner, reaper }))
    }

    /// Reads `file` (opened `O_DIRECT`) from `offset` into `buf`, as
    /// [`DirectFile::read_at`] does: `buf.max_len()` rounded down to the
    /// file's alignment, fewer at its end; `buf`'s length is set to the
    /// bytes read. `offset` is aligned (the media reader's chunks are).
    pub async fn read(
        &self,
        slot: &Arc<Slot>,
        file: &Arc<DirectFile>,
        mut buf: PageBuffer,
        offset: u64,
    ) -> (PageBuffer, io::Result<usize>) {
        let align = file.alignment();
        let want = buf.max_len() / align * align;
        let index = buf.fixed_index(&self.inner.registry);
        buf.clear();
        let mut done = 0;
        let mut resubmits = 0;
        while done < want {
            self.inner.submit(Request {
                buf: Some(buf),
                at: done,
                len: (want - done) as u32, // a chunk: at most 16 MiB
                offset: offset + done as u64,
                index,
                file: Arc::clone(file),
                slot: Arc::clone(slot),
            });
            let (b, result) = slot.wait().await;
            buf = b;
            match result {
                0 => break,
                n if n > 0 => {
                    done += (n as usize).min(want - done);
                    if !done.is_multiple_of(align) {
                        break; // the file's unaligned tail: its end
                    }
                }
                n if (n == -libc::EAGAIN || n == -libc::EINTR) && resubmits < RESUBMITS => {
                    resubmits += 1;
                }
                n => {
                    let _ = buf.set_len(done);
                    return (buf, Err(io::Error::from_raw_os_error(-n)));
                }
            }
        }
        let set = buf.set_len(done).map(|()| done).map_err(io::Error::from);
        (buf, set)
    }
}

impl Drop for UringReads {
    /// Stops the reaper; the last `Arc` of [`Inner`] waits for the reads
    /// in flight.
    fn drop(&mut self) {
        self.reaper.abort();
    }
}

impl Inner {
    fn ring(&self) -> Option<RingGuard<'_>> {
        match self.registry.ring(0).map(|r| r.lock()) {
            Some(Ok(ring)) => Some(ring),
            Some(Err(e)) => {
                tracing::error!(error = %e, "the io_uring cannot be locked");
                None
            }
            None => None,
        }
    }

    /// Hands `r` to the kernel (its completion comes through [`reap`]), or
    /// completes it with the error that kept it out.
    fn submit(&self, mut r: Request) {
        let fd = types::Fd(r.file.as_raw_fd());
        let Some(buf) = r.buf.as_mut() else { return };
        // SAFETY: address arithmetic inside the buffer: `at + len <=
        // max_len` (the caller's `want`).
        let dst = unsafe { buf.as_mut_ptr().add(r.at) };
        let entry = match r.index {
            Some(i) => opcode::ReadFixed::new(fd, dst, r.len, i)
                .offset(r.offset)
                .build(),
            None => opcode::Read::new(fd, dst, r.len).offset(r.offset).build(),
        };
        let id = {
            let mut reads = lock(&self.reads);
            reads.next_id += 1;
            let id = reads.next_id;
            debug_assert!(id != READ_USER_DATA);
            reads.in_flight.insert(id, r);
            id
        };
        let entry = entry.user_data(id);
        let Some(mut ring) = self.ring() else {
            if let Some(r) = lock(&self.reads).in_flight.remove(&id) {
                r.complete(-libc::EIO);
            }
            return;
        };
        // SAFETY: the entry lets the kernel write `len` bytes at `dst`,
        // inside the buffer now in `in_flight`, which keeps it (and its
        // file) until its completion is reaped (`reap`, or `Inner::drop`);
        // for READ_FIXED they lie inside registered entry `i`, the buffer's
        // slot. The id is not `READ_USER_DATA`.
        if let Err(e) = unsafe { push(&mut ring, &entry) } {
            drop(ring);
            if let Some(r) = lock(&self.reads).in_flight.remove(&id) {
                r.complete(-e.raw_os_error().unwrap_or(libc::EIO));
            }
            return;
        }
        // Queued: a failed submit leaves it for the next one (a later read's
        // or the reaper's); it is never taken back.
        if let Err(e) = ring.submitter().submit() {
            if !matches!(
                e.raw_os_error(),
                Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
            ) {
                tracing::warn!(error = %e, "io_uring submit failed; retried at the next completion");
            }
        }
        // A page-cache hit completes within the submit: no need to wait for
        // the reaper.
        self.complete_popped(&mut ring);
    }

    /// Completes every read whose completion is in the ring.
    fn complete_ready(&self) {
        let Some(mut ring) = self.ring() else { return };
        // Entries an interrupted submit left queued.
        let _ = ring.submitter().submit();
        self.complete_popped(&mut ring);
    }

    fn complete_popped(&self, ring: &mut RingGuard<'_>) {
        let mut reads = lock(&self.reads);
        while let Some(c) = ring.pop_completion() {
            if let Some(r) = reads.in_flight.remove(&c.user_data()) {
                r.complete(c.result());
            }
        }
    }
}

impl Drop for Inner {
    /// Waits until the kernel is done with every read in flight: their
    /// buffers are not freed before.
    fn drop(&mut self) {
        let reads = &mut self
            .reads
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .in_flight;
        if reads.is_empty() {
            return;
        }
        let Some(Ok(mut ring)) = self.registry.ring(0).map(|r| r.lock()) else {
            // Never free what the kernel may still write.
            reads.drain().for_each(|(_, r)| std::mem::forget(r));
            return;
        };
        while !reads.is_empty() {
            match ring.submitter().submit_and_wait(1) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) => {}
                Err(e) => {
                    tracing::error!(error = %e, "io_uring wait failed at shutdown; leaking the buffers in flight");
                    reads.drain().for_each(|(_, r)| std::mem::forget(r));
                    return;
                }
            }
            while let Some(c) = ring.pop_completion() {
                if let Some(r) = reads.remove(&c.user_data()) {
                    r.complete(c.result());
                }
            }
        }
    }
}

/// Pushes `entry`, submitting first if the queue is full.
///
/// # Safety
/// As [`RingGuard::submission`]: what the entry names stays valid until
/// its completion is reaped; its `user_data` is not `READ_USER_DATA`.
unsafe fn push(ring: &mut RingGuard<'_>, entry: &io_uring::squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: the caller's contract.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submitter().submit()?;
    }
}

/// The reaper: each time the eventfd says completions arrived, hands them
/// to their tasks.
async fn reap(inner: Arc<Inner>) {
    loop {
        let Ok(mut ready) = inner.completions.readable().await else {
            tracing::error!("cannot poll the io_uring's eventfd; the io_uring read path stops");
            return;
        };
        let mut count = [0u8; 8];
        // Clears the readiness once the counter is drained (`WouldBlock`).
        let _ = ready.try_io(|fd| fd.get_ref().read(&mut count));
        inner.complete_ready();
    }
}
