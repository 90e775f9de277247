//! Why a [`DirectFile`] refused an open or a read:
//! [`DirectError`], carried inside the `io::Error` the call returns.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

#[cfg(doc)] // for the docs' links
use super::DirectFile;

/// Why a [`DirectFile`] refused an open or a read. It travels inside the
/// [`io::Error`] the call returns (kind `InvalidInput`); get it back with
/// [`DirectError::of`].
#[derive(Debug)]
pub struct DirectError {
    kind: DirectErrorKind,
    path: PathBuf,
    os: Option<io::Error>,
}

/// What a [`DirectError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirectErrorKind {
    /// The filesystem refuses `O_DIRECT`: the open failed with `EINVAL`.
    Unsupported,
    /// The filesystem took the `O_DIRECT` open but answered `EINVAL` to an
    /// aligned read.
    ReadRefused {
        /// Where the refused read started.
        offset: u64,
        /// Its length.
        len: usize,
        /// The alignment the read respected.
        alignment: usize,
    },
    /// The file offset is not a multiple of the alignment.
    MisalignedOffset {
        /// The offset asked for.
        offset: u64,
        /// The file's [`alignment`](DirectFile::alignment).
        alignment: usize,
    },
    /// The buffer's `max_len()` is smaller than the alignment, so no aligned
    /// length fits in it.
    BufferTooSmall {
        /// The buffer's `max_len()`.
        max_len: usize,
        /// The file's [`alignment`](DirectFile::alignment).
        alignment: usize,
    },
    /// The buffer's address is not a multiple of the alignment (which is then
    /// larger than a page).
    MisalignedBuffer {
        /// The buffer's first byte.
        address: usize,
        /// The file's [`alignment`](DirectFile::alignment).
        alignment: usize,
    },
    /// The read would end past the largest file offset, `i64::MAX`.
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// The length of the read.
        len: usize,
    },
}

impl DirectError {
    pub(super) fn new(kind: DirectErrorKind, path: &Path, os: Option<io::Error>) -> DirectError {
        DirectError {
            kind,
            path: path.to_owned(),
            os,
        }
    }

    /// The `DirectError` inside an error returned by [`DirectFile`], if it
    /// carries one.
    pub fn of(e: &io::Error) -> Option<&DirectError> {
        e.get_ref()?.downcast_ref::<DirectError>()
    }

    /// What was refused.
    pub fn kind(&self) -> DirectErrorKind {
        self.kind
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The operating system's error (`EINVAL`) for
    /// [`Unsupported`](DirectErrorKind::Unsupported) and
    /// [`ReadRefused`](DirectErrorKind::ReadRefused); `None` for the checks
    /// made before calling the OS.
    pub fn os_error(&self) -> Option<&io::Error> {
        self.os.as_ref()
    }
}

impl fmt::Display for DirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match self.kind {
            DirectErrorKind::Unsupported => write!(
                f,
                "{path}: the filesystem refuses O_DIRECT (EINVAL on open); \
                 open it without O_DIRECT (DirectFile::open_or_buffered)"
            ),
            DirectErrorKind::ReadRefused {
                offset,
                len,
                alignment,
            } => write!(
                f,
                "{path}: the filesystem refuses O_DIRECT reads (EINVAL reading {len} bytes \
                 at offset {offset} with {alignment}-byte alignment); reopen it without \
                 O_DIRECT (DirectFile::open_buffered)"
            ),
            DirectErrorKind::MisalignedOffset { offset, alignment } => write!(
                f,
                "{path}: O_DIRECT read at offset {offset}, which is not a multiple of \
                 the required alignment of {alignment} bytes"
            ),
            DirectErrorKind::BufferTooSmall { max_len, alignment } => write!(
                f,
                "{path}: O_DIRECT read into a buffer of max_len {max_len}, smaller than \
                 the required alignment of {alignment} bytes"
            ),
            DirectErrorKind::MisalignedBuffer { address, alignment } => write!(
                f,
                "{path}: O_DIRECT read into a buffer at {address:#x}, which is not a \
                 multiple of the required alignment of {alignment} bytes"
            ),
            DirectErrorKind::OffsetOutOfRange { offset, len } => write!(
                f,
                "{path}: a read of {len} bytes at offset {offset} would pass the \
                 largest file offset"
            ),
        }
    }
}

impl std::error::Error for DirectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.os
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<DirectError> for io::Error {
    /// An error of kind `InvalidInput` carrying the `DirectError`.
    fn from(e: DirectError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}
