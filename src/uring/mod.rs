//! io_uring registered buffers (feature `io-uring`, Linux): pooled slots in
//! a ring's fixed-buffer table, for `READ_FIXED` and `WRITE_FIXED`.
//!
//! A read into a registered ("fixed") buffer skips the kernel's per-read
//! work of finding and pinning the buffer's pages. The table must name
//! memory that stays mapped, and a pool maps and unmaps slabs as it grows
//! and trims, so a [`Registry`] follows the pool's slab events: each slot
//! of a page class gets an entry when its slab is mapped (the slabs already
//! mapped when the registry is built, too) and loses it before its slab is
//! unmapped. Entries are slots, never whole slabs: an iovec that spans a
//! guard page is refused by the kernel (`EFAULT`), and guard pages stay in
//! place, faulting as before.
//!
//! | file | concept |
//! |---|---|
//! | `mod` | this overview, [`is_unavailable`], the limits |
//! | `builder` | [`RegistryBuilder`]: the settings, checked, and the rings set up |
//! | `registry` | [`Registry`]: the sparse table kept in step with slab events, [`PageBuffer::fixed_index`](crate::PageBuffer::fixed_index) |
//! | `ring` | [`Ring`] and [`RingGuard`]: one ring and the lock over its queues |
//! | `read` | [`Registry::read_fixed`]: `O_DIRECT` + `READ_FIXED` into a pooled buffer |
//!
//! ```
//! use std::io::Write;
//! use pagepool::{direct::DirectFile, uring::{self, Registry}, BufferPool};
//!
//! let pool = BufferPool::builder().name("vod").build()?;
//! let registry = match Registry::builder().rings(2).build(&pool) {
//!     Ok(r) => r,
//!     Err(e) if uring::is_unavailable(&e) => {
//!         eprintln!("no io_uring here: {e}");
//!         return Ok(());
//!     }
//!     Err(e) => return Err(e.into()),
//! };
//! # let path = std::env::temp_dir().join(format!("pagepool-mod-doc-{}", std::process::id()));
//! # std::fs::File::create(&path)?.write_all(&[1u8; 8192])?;
//! let file = DirectFile::open_or_buffered(&path)?;
//! let mut buf = pool.allocate_page_size_buffer(1 << 20)?;
//! let n = registry.read_fixed(&file, &mut buf, 0)?;
//! assert_eq!(&buf[..], &[1u8; 8192][..n]);
//! # std::fs::remove_file(&path)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! For your own submissions, lock a ring ([`Ring::lock`]) and name the
//! buffer by its [`fixed_index`](crate::PageBuffer::fixed_index); pushing
//! an entry is `unsafe` as in the `io-uring` crate (the buffer must outlive
//! the operation).

mod builder;
mod read;
mod registry;
mod ring;
mod table;

pub use builder::RegistryBuilder;
pub use registry::Registry;
pub use ring::{Ring, RingGuard};
pub use table::RegistryStats;

use crate::Error;

/// The kernel's limit on registered buffers per ring (`IORING_MAX_REG_BUFFERS`):
/// the largest, and default, [`table_size`](RegistryBuilder::table_size).
///
/// ```
/// assert_eq!(pagepool::uring::MAX_TABLE_SIZE, 16_384);
/// ```
pub const MAX_TABLE_SIZE: u32 = 1 << 14;

/// The `user_data` of the entries [`Registry::read_fixed`] submits. Your
/// own entries on a registry's ring must carry other values: that is part
/// of the contract of pushing them ([`RingGuard::submission`]).
///
/// ```
/// use io_uring::opcode;
/// let mine = opcode::Nop::new().build().user_data(1);
/// assert_ne!(mine.get_user_data(), pagepool::uring::READ_USER_DATA);
/// ```
pub const READ_USER_DATA: u64 = u64::MAX - 0x7061_6765;

/// Whether `e`, from building a [`Registry`], says io_uring cannot be used
/// in this process: `io_uring_setup` refused with `ENOSYS` (a kernel
/// without io_uring) or `EPERM` (`kernel.io_uring_disabled` is 2, or 1 and
/// the process is not in `kernel.io_uring_group`; or a seccomp filter, as
/// in many containers).
///
/// ```
/// use pagepool::{uring, Error};
/// let refused = Error::Os(std::io::Error::from_raw_os_error(libc::EPERM));
/// assert!(uring::is_unavailable(&refused));
/// assert!(!uring::is_unavailable(&Error::ZeroSize));
/// ```
pub fn is_unavailable(e: &Error) -> bool {
    matches!(e, Error::Os(os) if matches!(os.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)))
}
