//! `O_DIRECT` file reads into [`PageBuffer`]s (Linux): the reason buffers are
//! page-aligned.
//!
//! `O_DIRECT` moves data between the disk and the buffer without the page
//! cache, but only when the file offset, the length and the buffer's address
//! are all multiples of the file's direct I/O alignment; otherwise the kernel
//! fails the read with `EINVAL` (a bare "Invalid argument"). Some filesystems
//! refuse `O_DIRECT` altogether, also with `EINVAL`. [`DirectFile`] checks
//! the alignment before calling the OS and turns every refusal into an
//! [`io::Error`] that says what was refused and why, carrying a
//! [`DirectError`] for code that wants to match on it.
//!
//! ```no_run
//! use pagepool::{direct::DirectFile, BufferPool};
//!
//! let pool = BufferPool::builder().name("vod").build()?;
//! let file = DirectFile::open("/srv/media/movie.ts")?;
//! let mut buf = pool.allocate_page_size_buffer(1 << 20)?;
//! let mut offset = 0;
//! loop {
//!     let n = file.read_at(&mut buf, offset)?; // fills `buf`, sets its length
//!     if n == 0 {
//!         break;
//!     }
//!     // ... send &buf[..n] ...
//!     offset += n as u64;
//!     if n < buf.max_len() {
//!         break; // the end of the file (a short read stops off the alignment)
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Where a filesystem may refuse `O_DIRECT` (tmpfs before Linux 6.6, FUSE,
//! some network filesystems), [`DirectFile::open_or_buffered`] falls back to
//! a plain open and reads through the same API.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::buffer::PageBuffer;

mod error;
pub use error::{DirectError, DirectErrorKind};

/// A file opened for reading with `O_DIRECT` (or, from
/// [`open_or_buffered`](Self::open_or_buffered) and
/// [`open_buffered`](Self::open_buffered), through the page cache), read at
/// explicit offsets into [`PageBuffer`]s.
///
/// Reads take `&self` (they use `pread`, not a shared file position), so one
/// `DirectFile` can serve many concurrent readers, e.g. behind an `Arc`.
#[derive(Debug)]
pub struct DirectFile {
    file: File,
    path: PathBuf,
    /// Offset, length and address alignment of reads; 1 when buffered.
    alignment: usize,
    /// Whether the file was opened with `O_DIRECT`.
    direct: bool,
}

impl DirectFile {
    /// Opens `path` read-only with `O_DIRECT` (`O_RDONLY | O_DIRECT |
    /// O_CLOEXEC`) and finds its direct I/O [`alignment`](Self::alignment).
    ///
    /// # Errors
    /// - When the filesystem refuses `O_DIRECT` (`EINVAL`): an error of kind
    ///   `InvalidInput` whose message names the path and says "the filesystem
    ///   refuses O_DIRECT"; it carries a [`DirectError`] of kind
    ///   [`DirectErrorKind::Unsupported`], whose
    ///   [`source`](std::error::Error::source) is the OS error.
    /// - Any other error of `open(2)` (`NotFound`, `PermissionDenied`, ...)
    ///   as it is.
    ///
    /// ```
    /// use pagepool::direct::{DirectError, DirectErrorKind, DirectFile};
    /// // procfs serves no O_DIRECT.
    /// let e = DirectFile::open("/proc/self/status").unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    /// assert!(e.to_string().contains("the filesystem refuses O_DIRECT"));
    /// let why = DirectError::of(&e).unwrap();
    /// assert_eq!(why.kind(), DirectErrorKind::Unsupported);
    /// assert_eq!(why.os_error().and_then(|e| e.raw_os_error()), Some(libc::EINVAL));
    /// ```
    pub fn open(path: impl AsRef<Path>) -> io::Result<DirectFile> {
        let path = path.as_ref();
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
            .open(path);
        match opened {
            Ok(file) => Ok(DirectFile {
                alignment: dio_alignment(&file),
                file,
                path: path.to_owned(),
                direct: true,
            }),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                Err(DirectError::new(DirectErrorKind::Unsupported, path, Some(e)).into())
            }
            Err(e) => Err(e),
        }
    }

    /// Opens `path` with `O_DIRECT` like [`open`](Self::open), or, when the
    /// filesystem refuses `O_DIRECT`, without it (through the page cache);
    /// [`is_direct`](Self::is_direct) tells which.
    ///
    /// A filesystem can take the `O_DIRECT` open and refuse the reads (the
    /// read then fails with [`DirectErrorKind::ReadRefused`]); reopen with
    /// [`open_buffered`](Self::open_buffered) in that case.
    ///
    /// # Errors
    /// Those of `open(2)` other than the `O_DIRECT` refusal.
    ///
    /// ```
    /// use pagepool::direct::DirectFile;
    /// let file = DirectFile::open_or_buffered("/proc/self/status")?;
    /// assert!(!file.is_direct()); // procfs: buffered
    /// assert_eq!(file.alignment(), 1);
    /// let pool = pagepool::BufferPool::new();
    /// let mut buf = pool.allocate_page_size_buffer(64 * 1024)?;
    /// let n = file.read_at(&mut buf, 0)?;
    /// assert!(buf[..n].starts_with(b"Name:"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_or_buffered(path: impl AsRef<Path>) -> io::Result<DirectFile> {
        let path = path.as_ref();
        match DirectFile::open(path) {
            Err(e) if DirectError::of(&e).is_some() => DirectFile::open_buffered(path),
            other => other,
        }
    }

    /// Opens `path` read-only without `O_DIRECT`: reads go through the page
    /// cache and need no alignment ([`alignment`](Self::alignment) is 1).
    ///
    /// # Errors
    /// Those of `open(2)`.
    pub fn open_buffered(path: impl AsRef<Path>) -> io::Result<DirectFile> {
        let path = path.as_ref();
        Ok(DirectFile {
            file: File::open(path)?,
            path: path.to_owned(),
            alignment: 1,
            direct: false,
        })
    }

    /// Whether reads bypass the page cache (`O_DIRECT`).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The alignment, in bytes, of a read's file offset, its length and the
    /// buffer's address (a power of two; 1 for a buffered file).
    ///
    /// For an `O_DIRECT` file it is what the kernel reports through
    /// `statx(STATX_DIOALIGN)` (Linux 6.1+: the larger of the memory and
    /// offset alignments, typically the device's logical block size, 512 or
    /// 4096), and the page size when the kernel or filesystem does not say
    /// (older kernels, tmpfs, non-glibc targets). The page size is a
    /// multiple of the logical block size on every common setup, and every
    /// [`PageBuffer`] starts on a page, so the fallback is safe.
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// The file's current size in bytes (`fstat`); it can change between
    /// calls while another process writes the file.
    ///
    /// # Errors
    /// Those of `fstat(2)`.
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Whether the file is currently empty.
    ///
    /// # Errors
    /// Those of `fstat(2)`.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file (for `fadvise`, `fstat`, io_uring registration...).
    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// The underlying file; it keeps its `O_DIRECT` flag.
    pub fn into_file(self) -> File {
        self.file
    }

    /// Reads the file from `offset` into `buf`, replacing its contents: as
    /// many bytes as the buffer's `max_len()` rounded **down** to
    /// [`alignment`](Self::alignment) (all of `max_len()` for a buffered
    /// file), or fewer at the end of the file. Sets `buf`'s length to the
    /// bytes read and returns it; 0 means `offset` is at or past the end.
    ///
    /// The read goes straight from the disk into the buffer's page-aligned
    /// memory. Interrupted reads are retried, and a short read that stops on
    /// an aligned boundary is continued, so a result shorter than asked means
    /// the end of the file: the next offset, `offset + n`, is then aligned
    /// only if the file's size is.
    ///
    /// # Errors
    /// Checked before any system call, leaving `buf` untouched; each is of
    /// kind `InvalidInput` and carries a [`DirectError`]:
    /// - [`MisalignedOffset`](DirectErrorKind::MisalignedOffset): `offset` is
    ///   not a multiple of `alignment()` (the message names both);
    /// - [`BufferTooSmall`](DirectErrorKind::BufferTooSmall): `max_len()` is
    ///   below `alignment()`;
    /// - [`MisalignedBuffer`](DirectErrorKind::MisalignedBuffer): the
    ///   buffer's address is not a multiple of `alignment()` (only possible
    ///   for an alignment above the page size);
    /// - [`OffsetOutOfRange`](DirectErrorKind::OffsetOutOfRange): the read
    ///   would pass the largest file offset (`i64::MAX`).
    ///
    /// From the kernel, with `buf`'s length set to the bytes read before the
    /// failure (usually 0):
    /// - [`ReadRefused`](DirectErrorKind::ReadRefused) (`InvalidInput`): the
    ///   kernel answered `EINVAL` to an aligned `O_DIRECT` read, i.e. the
    ///   filesystem took the `O_DIRECT` open but refuses the read (or needs
    ///   more alignment than it reported);
    /// - any other error of `pread(2)` (`EIO`, ...) as it is.
    ///
    /// ```no_run
    /// use pagepool::direct::{DirectError, DirectErrorKind, DirectFile};
    /// let file = DirectFile::open("/srv/media/movie.ts")?;
    /// let pool = pagepool::BufferPool::new();
    /// let mut buf = pool.allocate_page_size_buffer(1 << 20)?;
    /// let n = file.read_at(&mut buf, 0)?;
    /// assert_eq!(buf.len(), n);
    /// let e = file.read_at(&mut buf, 1).unwrap_err(); // not aligned
    /// assert!(matches!(
    ///     DirectError::of(&e).map(|d| d.kind()),
    ///     Some(DirectErrorKind::MisalignedOffset { offset: 1, .. })
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_at(&self, buf: &mut PageBuffer, offset: u64) -> io::Result<usize> {
        let want = self.plan_read(buf, offset)?;
        let alignment = self.alignment;
        buf.clear();
        let dst = &mut buf.as_max_slice_mut()[..want];
        let mut done = 0;
        let mut failure = None;
        while done < want {
            match self.file.read_at(&mut dst[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => {
                    done += n.min(want - done);
                    if !done.is_multiple_of(alignment) {
                        break; // the file's tail, off the alignment: its end
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    failure = Some(self.read_error(offset + done as u64, want - done, e));
                    break;
                }
            }
        }
        buf.set_len(done)?;
        match failure {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// [`read_at`](Self::read_at) for a buffered file, only if the page
    /// cache holds every byte asked for: `preadv2(RWF_NOWAIT)`, which copies
    /// from the cache and never waits for the disk, so an async server may
    /// call it on its worker and fall back to a read that may block
    /// (io_uring, a blocking pool) only on a miss.
    ///
    /// `Ok(Some(n))` is `read_at`'s result, with the same contract.
    /// `Ok(None)` means some byte would need the disk (or the kernel offers
    /// no `RWF_NOWAIT` for the file, or the file is `O_DIRECT`, which has no
    /// cache to read): `buf`'s length is then 0, its contents unspecified.
    /// The kernel starts reading the missing pages ahead, so the read that
    /// follows waits less (on a fast disk this one may already find them).
    ///
    /// # Errors
    /// Those of `read_at` that its checks find before any system call, and
    /// any other error of `preadv2(2)` as it is.
    ///
    /// ```
    /// use pagepool::direct::DirectFile;
    /// let path = std::env::temp_dir().join(format!("cached-{}", std::process::id()));
    /// std::fs::write(&path, b"just written: in the page cache")?;
    /// let file = DirectFile::open_buffered(&path)?;
    /// let pool = pagepool::BufferPool::new();
    /// let mut buf = pool.allocate_page_size_buffer(4096)?;
    /// assert_eq!(file.try_read_cached_at(&mut buf, 0)?, Some(31));
    /// assert_eq!(&buf[..], b"just written: in the page cache");
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_read_cached_at(
        &self,
        buf: &mut PageBuffer,
        offset: u64,
    ) -> io::Result<Option<usize>> {
        let want = self.plan_read(buf, offset)?;
        buf.clear();
        if self.direct {
            return Ok(None);
        }
        let dst = &mut buf.as_max_slice_mut()[..want];
        let mut done = 0;
        while done < want {
            let rest = &mut dst[done..];
            let iov = libc::iovec {
                iov_base: rest.as_mut_ptr().cast(),
                iov_len: rest.len(),
            };
            // `plan_read` checked that `offset + want` fits an `off_t`.
            let at = (offset + done as u64) as libc::off_t;
            // SAFETY: `iov` describes `rest`, memory of `buf` we borrow
            // mutably for the call, and `preadv2` writes at most
            // `iov_len` bytes into it; the descriptor is open (we own it).
            let n = unsafe { libc::preadv2(self.file.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
            match n {
                0 => break, // the end of the file
                // Positive and at most `rest.len()`: fits usize.
                n if n > 0 => done += n as usize,
                _ => {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        // Not cached; no RWF_NOWAIT for this file; no
                        // `preadv2` (Linux before 4.6).
                        Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::ENOSYS) => return Ok(None),
                        _ => return Err(e),
                    }
                }
            }
        }
        buf.set_len(done)?;
        Ok(Some(done))
    }

    /// The checks `read_at` makes before any system call (and io_uring
    /// reads with it): the bytes a read at `offset` into `buf` asks for,
    /// `max_len()` rounded down to the alignment, or the error.
    pub(crate) fn plan_read(&self, buf: &PageBuffer, offset: u64) -> io::Result<usize> {
        let alignment = self.alignment;
        // Lossless: usize is at most 64 bits on every Linux target.
        let align64 = alignment as u64;
        if !offset.is_multiple_of(align64) {
            let kind = DirectErrorKind::MisalignedOffset { offset, alignment };
            return Err(self.error(kind, None));
        }
        let address = buf.as_ptr() as usize;
        if !address.is_multiple_of(alignment) {
            let kind = DirectErrorKind::MisalignedBuffer { address, alignment };
            return Err(self.error(kind, None));
        }
        let want = buf.max_len() / alignment * alignment;
        if want == 0 {
            let max_len = buf.max_len();
            let kind = DirectErrorKind::BufferTooSmall { max_len, alignment };
            return Err(self.error(kind, None));
        }
        // `pread` takes an `off_t`: the read's end must fit in an i64.
        let fits = offset
            .checked_add(want as u64)
            .is_some_and(|end| end <= i64::MAX as u64);
        if !fits {
            let kind = DirectErrorKind::OffsetOutOfRange { offset, len: want };
            return Err(self.error(kind, None));
        }
        Ok(want)
    }

    /// The error a read of `len` bytes at `offset` that failed with `e`
    /// returns: `EINVAL` on an aligned `O_DIRECT` read is
    /// [`ReadRefused`](DirectErrorKind::ReadRefused), anything else is `e`.
    pub(crate) fn read_error(&self, offset: u64, len: usize, e: io::Error) -> io::Error {
        if self.direct && e.raw_os_error() == Some(libc::EINVAL) {
            let alignment = self.alignment;
            let kind = DirectErrorKind::ReadRefused {
                offset,
                len,
                alignment,
            };
            self.error(kind, Some(e))
        } else {
            e
        }
    }

    fn error(&self, kind: DirectErrorKind, os: Option<io::Error>) -> io::Error {
        DirectError::new(kind, &self.path, os).into()
    }
}

impl AsFd for DirectFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for DirectFile {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// The direct I/O alignment of an `O_DIRECT` file: `statx(STATX_DIOALIGN)`
/// where the kernel reports it, else the page size.
fn dio_alignment(file: &File) -> usize {
    statx_dio_alignment(file).unwrap_or_else(crate::limits::page_size)
}

/// The larger of `stx_dio_mem_align` and `stx_dio_offset_align`, when the
/// kernel reports them (Linux 6.1+) as powers of two.
#[cfg(target_env = "gnu")]
fn statx_dio_alignment(file: &File) -> Option<usize> {
    // SAFETY: `libc::statx` is plain integers, for which all zeroes is valid.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the whole call; with AT_EMPTY_PATH
    // the empty, NUL-terminated path names that descriptor itself; `statx`
    // writes only into `stx`, which we own and which lives across the call.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    let mem = usize::try_from(stx.stx_dio_mem_align).ok()?;
    let offset = usize::try_from(stx.stx_dio_offset_align).ok()?;
    // Zero means "no direct I/O for this file" although the open succeeded
    // (filesystems that fall back to buffered I/O): keep the page size.
    let alignment = mem.max(offset);
    (mem != 0 && offset != 0 && alignment.is_power_of_two()).then_some(alignment)
}

/// Without glibc's `statx` wrapper: the page size.
#[cfg(not(target_env = "gnu"))]
fn statx_dio_alignment(_file: &File) -> Option<usize> {
    None
}
