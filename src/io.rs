//! `std::io` for buffers: [`PageBuffer`] is an [`io::Write`] sink bounded by
//! its `max_len()`, fills itself from any [`io::Read`]
//! ([`PageBuffer::fill_from`], [`PageBuffer::read_once`]), and a
//! [`SharedBuffer`] reads back through a cursor ([`SharedBuffer::reader`]).
//!
//! Every method appends after [`PageBuffer::len`] and moves the length with
//! the bytes; none of them writes past [`PageBuffer::max_len`] or panics on
//! a full buffer.

use std::io::{self, Cursor, IoSlice, Read, Write};

use crate::buffer::{PageBuffer, SharedBuffer};
use crate::Error;

/// The error of a write into a full buffer: `ErrorKind::WriteZero`, wrapping
/// [`Error::LengthExceedsMax`] (which names the numbers).
fn full(buf: &PageBuffer, wanted: usize) -> io::Error {
    io::Error::from(Error::LengthExceedsMax {
        requested: buf.len().saturating_add(wanted),
        max: buf.max_len(),
    })
}

impl PageBuffer {
    /// Copies as much of `data` as fits after `len()`, advances the length,
    /// and returns the bytes copied (0 when either side is empty).
    fn append_prefix(&mut self, data: &[u8]) -> usize {
        let start = self.len();
        let n = data.len().min(self.remaining());
        self.as_max_slice_mut()[start..start + n].copy_from_slice(&data[..n]);
        self.advance(n);
        n
    }

    /// Moves the length `n` bytes forward; `n <= remaining()`.
    fn advance(&mut self, n: usize) {
        let end = self.len() + n;
        // Cannot fail: every caller keeps `n <= remaining()`.
        let moved = self.set_len(end);
        debug_assert!(moved.is_ok(), "advance past max_len");
    }

    /// Appends what one [`Read::read`] call gives, into the free bytes after
    /// `len()`, and returns how many bytes it gave (the length moves by as
    /// much).
    ///
    /// `Ok(0)` means the reader is at its end, unless the buffer was already
    /// full: then `r` is not called at all (check
    /// [`remaining`](Self::remaining) to tell the two apart, as with tokio's
    /// `read_buf`). A read interrupted by a signal (`ErrorKind::Interrupted`)
    /// is retried.
    ///
    /// For a socket or pipe this is the call to make when data arrives; to
    /// read until the buffer is full, use [`fill_from`](Self::fill_from).
    ///
    /// # Errors
    /// The reader's error, with the buffer unchanged; `ErrorKind::InvalidData`
    /// if the reader claims more bytes than it was offered (a broken `Read`
    /// implementation), with the length unchanged.
    ///
    /// ```
    /// let pool = pagepool::BufferPool::new();
    /// let mut buf = pool.allocate_page_size_buffer(4)?;
    /// buf.extend_from_slice(b"ab")?;
    /// let mut src = &b"cdef"[..];
    /// assert_eq!(buf.read_once(&mut src)?, 2); // only 2 bytes were free
    /// assert_eq!(&buf[..], b"abcd");
    /// assert_eq!(buf.read_once(&mut src)?, 0); // full: `src` not called
    /// assert_eq!(buf.remaining(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_once<R: Read + ?Sized>(&mut self, r: &mut R) -> io::Result<usize> {
        if self.remaining() == 0 {
            return Ok(0);
        }
        let start = self.len();
        let spare = self.remaining();
        loop {
            match r.read(&mut self.as_max_slice_mut()[start..]) {
                Ok(n) if n > spare => return Err(overclaimed(n, spare)),
                Ok(n) => {
                    self.advance(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads from `r` into the free bytes after `len()` until the reader
    /// ends or the buffer is full (`len() == max_len()`), and returns the
    /// bytes read; the length moves with every read.
    ///
    /// Reads interrupted by a signal (`ErrorKind::Interrupted`) are retried.
    /// Filling the buffer does not tell whether the reader had more: the
    /// next call then returns `Ok(0)` without calling it (as does a call on
    /// a full buffer). Pass `&mut reader` to keep using the reader afterwards.
    ///
    /// For `O_DIRECT` files, whose reads must be aligned, see
    /// [`direct::DirectFile::read_at`](crate::direct::DirectFile::read_at)
    /// (Linux).
    ///
    /// # Errors
    /// The first error of the reader other than `Interrupted`;
    /// `ErrorKind::InvalidData` if the reader claims more bytes than it was
    /// offered. The bytes read before the error stay in the buffer, counted
    /// in `len()` (as with [`Read::read_to_end`]).
    ///
    /// ```
    /// let pool = pagepool::BufferPool::new();
    /// let mut buf = pool.allocate_page_size_buffer(8)?;
    /// // A reader that gives a few bytes per call, like a socket.
    /// let mut src = std::io::Read::chain(&b"hello "[..], &b"world"[..]);
    /// assert_eq!(buf.fill_from(&mut src)?, 8); // stops when full...
    /// assert_eq!(&buf[..], b"hello wo");
    /// buf.clear();
    /// assert_eq!(buf.fill_from(&mut src)?, 3); // ...or at the end
    /// assert_eq!(&buf[..], b"rld");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fill_from<R: Read>(&mut self, mut r: R) -> io::Result<usize> {
        let mut total = 0;
        while self.remaining() > 0 {
            let start = self.len();
            let spare = self.remaining();
            match r.read(&mut self.as_max_slice_mut()[start..]) {
                Ok(0) => break,
                Ok(n) if n > spare => return Err(overclaimed(n, spare)),
                Ok(n) => {
                    self.advance(n);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }
}

/// The error for a `Read` that returns more bytes than its buffer holds.
fn overclaimed(n: usize, spare: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the reader claimed {n} bytes read into a buffer of {spare}"),
    )
}

/// Appends after `len()`, up to `max_len()`: a `PageBuffer` is a bounded
/// sink for `write!`, serializers, and `io::copy`.
///
/// - [`write`](Write::write) copies what fits and returns that count (a short
///   write, as `io::Write` allows); on a full buffer it fails with
///   `ErrorKind::WriteZero` (wrapping [`Error::LengthExceedsMax`]).
///   Writing zero bytes returns `Ok(0)`, full or not.
/// - [`write_all`](Write::write_all) is all or nothing: when `data` does not
///   fit it fails with `WriteZero` and writes **nothing** (stricter than
///   `io::Write` requires), so a packet is never cut (`write!` calls it once
///   per piece of the format, and may stop between pieces).
///   `io::copy` writes each chunk it reads with `write_all`: from a source
///   larger than the room left it fails with `WriteZero`, the chunk that did
///   not fit unwritten. To take what fits from a reader, use
///   [`PageBuffer::fill_from`].
/// - [`flush`](Write::flush) does nothing: the bytes are in the buffer.
///
/// ```
/// use std::io::{ErrorKind, Write};
/// let pool = pagepool::BufferPool::new();
/// let mut buf = pool.allocate_page_size_buffer(10)?;
/// writeln!(buf, "#EXTM3U")?;
/// assert_eq!(buf.write(b"abcdef")?, 2); // short write: 2 bytes fitted
/// assert_eq!(&buf[..], b"#EXTM3U\nab");
/// assert_eq!(buf.write(b"x").unwrap_err().kind(), ErrorKind::WriteZero);
///
/// buf.clear();
/// buf.write_all(b"123456789")?;
/// assert_eq!(buf.write_all(b"xy").unwrap_err().kind(), ErrorKind::WriteZero);
/// assert_eq!(&buf[..], b"123456789"); // nothing of "xy" was written
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl Write for PageBuffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if !data.is_empty() && self.remaining() == 0 {
            return Err(full(self, data.len()));
        }
        Ok(self.append_prefix(data))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let wanted = bufs.iter().fold(0usize, |n, b| n.saturating_add(b.len()));
        if wanted != 0 && self.remaining() == 0 {
            return Err(full(self, wanted));
        }
        let mut total = 0;
        for b in bufs {
            let n = self.append_prefix(b);
            total += n;
            if n < b.len() {
                break;
            }
        }
        Ok(total)
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() > self.remaining() {
            return Err(full(self, data.len()));
        }
        self.append_prefix(data);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SharedBuffer {
    /// A reader over the visible bytes: an [`io::Cursor`] holding a clone of
    /// this handle (so the slot stays out until the cursor drops too). It
    /// implements [`Read`], [`BufRead`](std::io::BufRead) and
    /// [`Seek`](std::io::Seek).
    ///
    /// ```
    /// use std::io::Read;
    /// let pool = pagepool::BufferPool::new();
    /// let mut buf = pool.allocate_page_size_buffer(16)?;
    /// buf.extend_from_slice(b"GET / HTTP/1.1")?;
    /// let shared = buf.freeze();
    /// let mut method = [0; 3];
    /// shared.reader().read_exact(&mut method)?;
    /// assert_eq!(&method, b"GET");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a reader does nothing until read"]
    pub fn reader(&self) -> Cursor<SharedBuffer> {
        Cursor::new(self.clone())
    }
}
