//! [`Registry::read_fixed`]: an `O_DIRECT` file read into a pooled buffer
//! through one of the registry's rings, `READ_FIXED` when the buffer is
//! registered.

use std::io;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types};

use super::ring::RingGuard;
use super::{Registry, READ_USER_DATA};
use crate::direct::DirectFile;
use crate::{Error, PageBuffer};

/// Times an `EAGAIN` or `EINTR` completion is resubmitted before the read
/// gives up with it.
const RESUBMITS: u32 = 64;

impl Registry {
    /// Reads `file` from `offset` into `buf` through io_uring, with the
    /// contract of [`DirectFile::read_at`]: as many bytes as `max_len()`
    /// rounded down to the file's [`alignment`](DirectFile::alignment), or
    /// fewer at the end of the file; sets `buf`'s length to the bytes read
    /// and returns it (0 at or past the end).
    ///
    /// A registered buffer ([`PageBuffer::fixed_index`]) is read with
    /// `IORING_OP_READ_FIXED` (no page pinning per read), any other with
    /// `IORING_OP_READ`. The call waits for the completion on the calling
    /// thread: the kernel is done with the buffer when it returns, whatever
    /// it returns (interrupted waits, `EINTR`, `EAGAIN` and `EBUSY`, are
    /// waited again; a ring that kept refusing the wait with the read in
    /// flight would keep this thread waiting, since returning then would
    /// hand back a buffer the kernel may still write). It uses a ring no
    /// other thread holds, or waits for the calling thread's usual one;
    /// completions of your own submissions that it reaps are kept for
    /// [`RingGuard::pop_completion`].
    ///
    /// # Errors
    /// As [`DirectFile::read_at`]: the alignment checks first (kind
    /// `InvalidInput`, carrying a [`DirectError`](crate::direct::DirectError),
    /// `buf` untouched), then the kernel's answer (`EINVAL` on an aligned
    /// `O_DIRECT` read is `ReadRefused`), with `buf`'s length set to what
    /// was read before the failure. Also the ring's own failures: a broken
    /// ring or one inherited across `fork` (see
    /// [`Ring::lock`](super::Ring::lock)), or an `io_uring_enter` refusal.
    ///
    /// ```
    /// use std::io::Write;
    /// use pagepool::{direct::DirectFile, uring::{self, Registry}, BufferPool};
    ///
    /// let pool = BufferPool::new();
    /// let registry = match Registry::new(&pool) {
    ///     Ok(r) => r,
    ///     Err(e) if uring::is_unavailable(&e) => return Ok(()), // no io_uring here
    ///     Err(e) => return Err(e.into()),
    /// };
    /// let path = std::env::temp_dir().join(format!("pagepool-doc-{}", std::process::id()));
    /// std::fs::File::create(&path)?.write_all(&vec![7u8; 3 * 4096 + 100])?;
    /// let file = DirectFile::open_or_buffered(&path)?;
    ///
    /// let mut buf = pool.allocate_page_size_buffer(64 * 1024)?;
    /// assert!(buf.fixed_index(&registry).is_some());
    /// let n = registry.read_fixed(&file, &mut buf, 0)?; // READ_FIXED
    /// assert_eq!((n, buf.len()), (3 * 4096 + 100, n));
    /// assert!(buf.iter().all(|&b| b == 7));
    /// std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_fixed(
        &self,
        file: &DirectFile,
        buf: &mut PageBuffer,
        offset: u64,
    ) -> io::Result<usize> {
        let want = file.plan_read(buf, offset)?;
        let index = buf.fixed_index(self);
        let mut ring = self.lock_a_ring()?;
        let alignment = file.alignment();
        let fd = types::Fd(file.as_raw_fd());
        buf.clear();
        let base = buf.as_mut_ptr();
        let mut done = 0;
        let mut resubmits = 0;
        let mut failure = None;
        while done < want {
            // `want <= max_len`, which fits `u32` (`SIZE_LIMIT`).
            let len = (want - done) as u32;
            let at = offset + done as u64;
            // SAFETY: address arithmetic only, inside the buffer: `done <
            // want <= max_len`.
            let dst = unsafe { base.add(done) };
            let entry = match index {
                Some(i) => opcode::ReadFixed::new(fd, dst, len, i).offset(at).build(),
                None => opcode::Read::new(fd, dst, len).offset(at).build(),
            }
            .user_data(READ_USER_DATA);
            // SAFETY: the entry lets the kernel write `len` bytes at `dst`,
            // all inside `buf`'s `max_len` bytes, which this call holds by
            // `&mut` until it returns and does not touch meanwhile; for
            // `ReadFixed` they also lie inside registered entry `i`, which
            // covers the whole slot while the buffer lives. `wait_for`
            // returns only once the kernel is done with the entry, or never
            // took it. The tag is `READ_USER_DATA`.
            let result = match unsafe { ring.wait_for(&entry) } {
                Ok(result) => result,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            match result {
                0 => break,
                n if n > 0 => {
                    // A positive `i32` fits `usize`.
                    done += (n as usize).min(want - done);
                    if !done.is_multiple_of(alignment) {
                        break; // the file's tail, off the alignment: its end
                    }
                }
                n if (n == -libc::EAGAIN || n == -libc::EINTR) && resubmits < RESUBMITS => {
                    resubmits += 1;
                }
                n => {
                    let e = io::Error::from_raw_os_error(-n);
                    failure = Some(file.read_error(at, want - done, e));
                    break;
                }
            }
        }
        drop(ring);
        buf.set_len(done)?;
        match failure {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// A ring no other thread holds, trying the calling thread's usual one
    /// first; when all are busy, waits for that one (or the next that is
    /// not broken).
    fn lock_a_ring(&self) -> Result<RingGuard<'_>, Error> {
        let rings = self.all_rings();
        let home = crate::threads::id() as usize % rings.len();
        let order = || (0..rings.len()).map(|k| &rings[(home + k) % rings.len()]);
        for ring in order() {
            if let Some(Ok(guard)) = ring.try_lock() {
                return Ok(guard);
            }
        }
        let mut last = None;
        for ring in order() {
            match ring.lock() {
                Ok(guard) => return Ok(guard),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("a registry has at least one ring"))
    }
}
