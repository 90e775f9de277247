//! `O_DIRECT` reads through io_uring (feature `io-uring`), and no tokio
//! worker ever enters the kernel for them: a read goes, with its buffer,
//! over a channel to one thread of ours that owns the ring of a
//! [`Registry`] over the media pool. That thread pushes the entry
//! (`READ_FIXED` when the buffer is registered, which every slot of the
//! chunk class is), submits, waits for completions (a submit on a busy
//! block device can take milliseconds, which a worker must not spend) and
//! hands each back to its task, which awaits it without a thread. A poll on
//! an eventfd, which each new read writes, wakes the thread's wait.
//!
//! A read in flight is owned by the thread's table (its buffer and an `Arc`
//! of its file), so a response dropped meanwhile (its client gone) frees
//! neither before the kernel is done; the thread ends only once nothing is
//! in flight.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use io_uring::{opcode, types};
use pagepool::direct::DirectFile;
use pagepool::uring::{Registry, RingGuard, READ_USER_DATA};
use pagepool::{BufferPool, PageBuffer};
use tokio::sync::Notify;

/// Submission entries of the ring.
const ENTRIES: u32 = 256;

/// Times an `EAGAIN`/`EINTR` completion is resubmitted before the read
/// fails with it.
const RESUBMITS: u32 = 16;

/// The `user_data` of the eventfd poll; reads count up from 1.
const WAKE: u64 = 0;

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

/// One read for the ring thread: `len` bytes at `offset` of `file`, into
/// `buf` from byte `at`. Dropped before its completion (the thread gone),
/// it completes its slot with `ECANCELED`, so its task never waits forever.
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
    registry: Arc<Registry>,
    /// `None` once dropping.
    requests: Option<mpsc::Sender<Request>>,
    /// Written after each request, to wake the ring thread.
    wake: File,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for UringReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringReads")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl UringReads {
    /// A ring with the media pool's slots registered, and its thread.
    pub fn new(pool: &BufferPool) -> Result<Arc<UringReads>, String> {
        let registry = Registry::builder()
            .rings(1)
            .entries(ENTRIES)
            .build(pool)
            .map_err(|e| format!("no io_uring: {e}"))?;
        let registry = Arc::new(registry);
        // SAFETY: eventfd takes no pointer; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("no eventfd: {}", io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new descriptor (checked above), owned by nothing
        // else.
        let wake = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let theirs = wake
            .try_clone()
            .map_err(|e| format!("cannot share the eventfd: {e}"))?;
        // The first wake poll, armed here so a ring that refuses it leaves
        // the blocking path in charge.
        {
            let mut ring = registry
                .ring(0)
                .expect("a registry of one ring")
                .lock()
                .map_err(|e| format!("cannot lock the io_uring: {e}"))?;
            arm_wake(&mut ring, &theirs)
                .and_then(|()| ring.submitter().submit().map(drop))
                .map_err(|e| format!("cannot poll the eventfd through io_uring: {e}"))?;
        }
        let (tx, rx) = mpsc::channel();
        let ring_registry = Arc::clone(&registry);
        let thread = std::thread::Builder::new()
            .name("media-uring".to_owned())
            .spawn(move || ring_thread(&ring_registry, &rx, &theirs))
            .map_err(|e| format!("cannot start the io_uring thread: {e}"))?;
        Ok(Arc::new(UringReads {
            registry,
            requests: Some(tx),
            wake,
            thread: Some(thread),
        }))
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
        let index = buf.fixed_index(&self.registry);
        buf.clear();
        let mut done = 0;
        let mut resubmits = 0;
        while done < want {
            let request = Request {
                buf: Some(buf),
                at: done,
                len: (want - done) as u32, // a chunk: at most 16 MiB
                offset: offset + done as u64,
                index,
                file: Arc::clone(file),
                slot: Arc::clone(slot),
            };
            let sent = match &self.requests {
                Some(tx) => tx.send(request).map_err(|e| e.0),
                None => Err(request),
            };
            if let Err(back) = sent {
                drop(back); // completes the slot with ECANCELED
            }
            let _ = (&self.wake).write(&1u64.to_ne_bytes());
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
    /// Stops the thread once what is in flight completed.
    fn drop(&mut self) {
        drop(self.requests.take());
        let _ = (&self.wake).write(&1u64.to_ne_bytes());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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

/// Arms a one-shot poll of the eventfd.
fn arm_wake(ring: &mut RingGuard<'_>, wake: &File) -> io::Result<()> {
    let poll = opcode::PollAdd::new(types::Fd(wake.as_raw_fd()), libc::POLLIN as u32)
        .build()
        .user_data(WAKE);
    // SAFETY: a poll names no memory, only the eventfd, which the thread
    // holds until it returns (after its last wait); `WAKE` is not
    // `READ_USER_DATA`.
    unsafe { push(ring, &poll) }
}

/// The ring thread: takes requests, submits, waits, completes.
fn ring_thread(registry: &Registry, requests: &mpsc::Receiver<Request>, wake: &File) {
    let Some(Ok(mut ring)) = registry.ring(0).map(|r| r.lock()) else {
        tracing::error!("the io_uring ring cannot be locked; reads through it fail");
        return;
    };
    let mut table: HashMap<u64, Request> = HashMap::with_capacity(ENTRIES as usize);
    let mut next_id = 1u64;
    // `UringReads::new` armed the first wake poll.
    let mut open = true;
    loop {
        loop {
            match requests.try_recv() {
                Ok(mut r) => {
                    let id = next_id;
                    next_id += 1;
                    debug_assert!(id != WAKE && id != READ_USER_DATA);
                    let fd = types::Fd(r.file.as_raw_fd());
                    let Some(buf) = r.buf.as_mut() else { continue };
                    // SAFETY: address arithmetic inside the buffer: `at +
                    // len <= max_len` (the task's `want`).
                    let dst = unsafe { buf.as_mut_ptr().add(r.at) };
                    let entry = match r.index {
                        Some(i) => opcode::ReadFixed::new(fd, dst, r.len, i)
                            .offset(r.offset)
                            .build(),
                        None => opcode::Read::new(fd, dst, r.len).offset(r.offset).build(),
                    }
                    .user_data(id);
                    table.insert(id, r);
                    // SAFETY: the entry lets the kernel write `len` bytes at
                    // `dst`, inside the buffer now in `table`, which keeps it
                    // (and its file) until its completion is reaped below;
                    // for READ_FIXED they lie inside registered entry `i`,
                    // the buffer's slot. The id is not `READ_USER_DATA`.
                    if let Err(e) = unsafe { push(&mut ring, &entry) } {
                        if let Some(r) = table.remove(&id) {
                            r.complete(-e.raw_os_error().unwrap_or(libc::EIO));
                        }
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if !open && table.is_empty() {
            return;
        }
        match ring.submitter().submit_and_wait(1) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) => {}
            Err(e) => {
                // Entries may be in flight: never free their buffers.
                tracing::error!(error = %e, "io_uring wait failed; the io_uring read path stops");
                for (_, r) in table.drain() {
                    std::mem::forget(r);
                }
                return;
            }
        }
        while let Some(c) = ring.pop_completion() {
            if c.user_data() == WAKE {
                let mut count = [0u8; 8];
                let _ = (&*wake).read(&mut count);
                if open && arm_wake(&mut ring, wake).is_err() {
                    tracing::warn!("cannot re-arm the io_uring wake poll");
                }
            } else if let Some(r) = table.remove(&c.user_data()) {
                r.complete(c.result());
            }
        }
    }
}
