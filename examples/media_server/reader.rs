//! One media response's bytes: read chunk by chunk into pooled buffers
//! counted against the response's quota (through io_uring, or with the
//! crate's [`DirectFile`] on the blocking pool: `read_path.rs`), and sent
//! down the body's channel.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use pagepool::direct::{DirectError, DirectErrorKind, DirectFile};
use pagepool::{PageBuffer, Quota};
use tokio::sync::mpsc;

use crate::media::log_fallback;
use crate::read_path::{ReadPath, Slot, UringReads};
use crate::read_queue::Turn;
use crate::State;

/// Counts a live reader task.
pub struct ReaderGuard(Arc<AtomicUsize>);

impl ReaderGuard {
    pub fn new(n: &Arc<AtomicUsize>) -> ReaderGuard {
        n.fetch_add(1, Relaxed);
        ReaderGuard(Arc::clone(n))
    }
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Reads one response's bytes, chunk by chunk.
pub struct Reader {
    /// The io_uring path and this response's completion slot, when it runs.
    uring: Option<(Arc<UringReads>, Arc<Slot>)>,
    /// The path the last read took.
    path: ReadPath,
    /// This response's place in the read path's queue.
    turn: Arc<Turn>,
    file: Arc<DirectFile>,
    /// This response's share of the media pool.
    quota: Quota,
    chunk: usize,
    page: u64,
    /// The next offset to read: page-aligned.
    pos: u64,
    /// Bytes at the start of the next chunk that precede the range.
    skip: usize,
    /// Bytes of the range not yet produced.
    remaining: u64,
    pool_wait: Duration,
    state: Arc<State>,
}

impl Reader {
    /// A reader of bytes `first..first + len` of `file`, with buffers from
    /// `quota`.
    pub fn new(
        file: Arc<DirectFile>,
        quota: Quota,
        first: u64,
        len: u64,
        state: Arc<State>,
    ) -> Reader {
        let page = pagepool::page_size() as u64;
        // Read from the page boundary at or below the first byte; the chunk
        // is sliced past the bytes before it.
        let pos = first - first % page;
        let uring = state.media.uring.clone().map(|u| (u, Arc::default()));
        Reader {
            path: if uring.is_some() {
                ReadPath::IoUring
            } else {
                ReadPath::Blocking
            },
            uring,
            turn: Arc::default(),
            file,
            quota,
            chunk: state.media.chunk,
            page,
            pos,
            skip: (first - pos) as usize,
            remaining: len,
            pool_wait: state.media.pool_wait,
            state,
        }
    }

    /// Whether reads bypass the page cache now (a read can refuse `O_DIRECT`
    /// where the open did not; the reader then reopens the file buffered).
    pub fn is_direct(&self) -> bool {
        self.file.is_direct()
    }

    /// The path the last read took (io_uring for `O_DIRECT` files when it
    /// runs, else blocking).
    pub fn read_path(&self) -> ReadPath {
        self.path
    }

    /// This response's place in the read queues (its body tells it when
    /// hyper waits).
    pub fn turn(&self) -> Arc<Turn> {
        Arc::clone(&self.turn)
    }

    /// Bytes of the range not yet read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Streams the rest into `tx` until done, failed, or the client left.
    /// A chunk is read only once the channel is empty (hyper took the one
    /// before), so a response reads one chunk ahead of its client.
    pub async fn run(mut self, tx: mpsc::Sender<io::Result<Bytes>>) {
        while self.remaining > 0 {
            let Ok(permit) = tx.reserve().await else {
                return; // the client went away
            };
            let item = tokio::select! {
                item = self.next() => item,
                () = tx.closed() => return,
            };
            let failed = item.is_err();
            if let Err(e) = &item {
                tracing::warn!(file = %self.file.path().display(), error = %e, "media read failed mid-stream; aborting the response");
            }
            permit.send(item);
            if failed {
                return;
            }
        }
    }

    /// A pooled buffer, counted against this response's quota: waits
    /// (without holding a worker thread) while the response holds its whole
    /// quota (its client is slow) or the pool is at its cap, up to
    /// `pool_wait`.
    async fn buffer(&self, size: usize) -> io::Result<PageBuffer> {
        // One first poll: it is the immediate try (room now), and tells
        // whether this read has to wait.
        let mut wait = std::pin::pin!(self.quota.allocate_page_size_buffer_async(size));
        let first = std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await;
        if let Poll::Ready(got) = first {
            return got.map_err(io::Error::from);
        }
        self.state.media.counters.pool_waits.increment(1);
        match tokio::time::timeout(self.pool_wait, wait).await {
            Ok(got) => got.map_err(io::Error::from),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no pool room for {size} bytes within {:?}", self.pool_wait),
            )),
        }
    }

    /// One read of `buf.max_len()` bytes (fewer at the end of the file) at
    /// `pos`: on the worker when the file is buffered and the page cache
    /// holds every byte (as `nginx` reads; no queue, no thread hop, no
    /// completion to reap), else once its path's queue lets it
    /// (`read_queue.rs`), through io_uring when it runs or
    /// `DirectFile::read_at` on the blocking pool. The outer `Err`: the
    /// blocking task failed, and the buffer is gone.
    async fn read(&mut self, mut buf: PageBuffer) -> io::Result<(PageBuffer, io::Result<usize>)> {
        let pos = self.pos;
        if !self.file.is_direct() {
            match self.file.try_read_cached_at(&mut buf, pos) {
                Ok(Some(n)) => {
                    self.path = ReadPath::PageCache;
                    return Ok((buf, Ok(n)));
                }
                Ok(None) => {} // a byte is on the disk only
                Err(e) => return Ok((buf, Err(e))),
            }
        }
        let queues = &self.state.media.read_queues;
        match &self.uring {
            Some((reads, slot)) => {
                self.path = ReadPath::IoUring;
                let _pass = queues.uring.enter(&self.turn).await;
                Ok(reads.read(slot, &self.file, buf, pos).await)
            }
            _ => {
                self.path = ReadPath::Blocking;
                let pass = queues.blocking.enter(&self.turn).await;
                let file = Arc::clone(&self.file);
                tokio::task::spawn_blocking(move || {
                    let res = file.read_at(&mut buf, pos);
                    drop(pass);
                    (buf, res)
                })
                .await
                .map_err(io::Error::other)
            }
        }
    }

    /// The next chunk of the range.
    pub async fn next(&mut self) -> io::Result<Bytes> {
        let want_total = self.skip as u64 + self.remaining;
        let want = want_total.div_ceil(self.page) * self.page;
        let want = want.min(self.chunk as u64) as usize;
        let mut buf = self.buffer(want).await?;
        let (mut buf, n) = loop {
            let (b, res) = self.read(buf).await?;
            buf = b;
            match res {
                Ok(n) => break (buf, n),
                Err(e) if read_refused(&e) || e.raw_os_error() == Some(libc::EINVAL) => {
                    // This file system took the O_DIRECT open but refuses the
                    // read: reopen buffered and read the same chunk again.
                    let path = self.file.path().to_owned();
                    log_fallback(&path.display().to_string(), "read");
                    self.state.media.counters.fallbacks.increment(1);
                    let f = tokio::task::spawn_blocking(move || DirectFile::open_buffered(path))
                        .await
                        .map_err(io::Error::other)??;
                    self.file = Arc::new(f);
                }
                Err(e) => return Err(e),
            }
        };
        self.turn.add_read(n as u64);
        let counters = &self.state.media.counters;
        match (self.is_direct(), self.path) {
            (true, ReadPath::IoUring) => counters.read_direct_uring.increment(n as u64),
            (true, ReadPath::Blocking) => counters.read_direct_blocking.increment(n as u64),
            (false, ReadPath::IoUring) => counters.read_buffered_uring.increment(n as u64),
            (false, ReadPath::Blocking) => counters.read_buffered_blocking.increment(n as u64),
            (_, ReadPath::PageCache) => counters.read_buffered_cached.increment(n as u64),
        }
        if n <= self.skip {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than when the response started",
            ));
        }
        let take = ((n - self.skip) as u64).min(self.remaining) as usize;
        buf.set_len(self.skip + take).map_err(io::Error::from)?;
        let shared = buf.freeze();
        let shared = if self.skip > 0 {
            shared.slice(self.skip..)
        } else {
            shared
        };
        self.pos += want as u64;
        self.skip = 0;
        self.remaining -= take as u64;
        // The crate's `From<SharedBuffer> for Bytes` is behind its `bytes`
        // feature, which `cargo run --example media_server` (default
        // features) does not enable; it is this same call.
        Ok(Bytes::from_owner(shared))
    }
}

/// Whether `e` is a file system refusing an aligned `O_DIRECT` read.
pub fn read_refused(e: &io::Error) -> bool {
    DirectError::of(e).is_some_and(|d| matches!(d.kind(), DirectErrorKind::ReadRefused { .. }))
}
