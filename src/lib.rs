//! # pagepool
//!
//! Guarded, page-aligned, pooled buffers for media servers: the Rust face of
//! the Windows Media allocator
//! `IWMSBufferAllocator::AllocatePageSizeBuffer(dwMaxBufferSize, &INSSBuffer)`.
//!
//! [`BufferPool::allocate_page_size_buffer`] returns a [`PageBuffer`] whose
//! first byte is page-aligned (ready for `O_DIRECT` and io_uring reads), with
//! a current length ([`PageBuffer::len`], `GetLength`), a maximum
//! ([`PageBuffer::max_len`], `GetMaxLength`), a [`PageBuffer::set_len`]
//! (`SetLength`) that fails past the maximum, and the raw pointer
//! ([`PageBuffer::as_ptr`], `GetBuffer`). Around that call pagepool adds:
//!
//! - a **thread-safe slab pool** that recycles buffers by size class without
//!   a lock or a system call once warm, and releases from any thread;
//! - **guard pages** directly before and after every buffer, placed once per
//!   slab (`MADV_GUARD_INSTALL` where the kernel has it, `mprotect` within a
//!   budget elsewhere), so a write one byte too far faults at once;
//! - a **byte cap** ([`PoolBuilder::max_bytes`]) that holds under any load,
//!   and [`BufferPool::trim`] to give idle slabs back;
//! - **decay** ([`PoolBuilder::decay`]): slabs no class needed for a quiet
//!   period (10 s by default) go back to the OS by themselves, never below
//!   the [`PoolBuilder::min_buffers`] a server maps at build to start warm;
//! - **counters** ([`BufferPool::stats`]);
//! - **packets**: [`BufferPool::allocate_buffer`] (`AllocateBuffer`) packs
//!   requests up to [`SMALL_MAX`] bytes into 64-byte-aligned slots between
//!   canary red zones;
//! - **waits that do not block a worker**:
//!   [`BufferPool::allocate_page_size_buffer_async`] resolves once room is
//!   free, on any runtime, first come first served and cancel-safe
//!   ([`BufferPool::allocate_page_size_buffer_timeout`] is the blocking
//!   form, for threads); the cap can change at run time
//!   ([`BufferPool::set_max_bytes`]) and [`BufferPool::close`] ends every
//!   wait;
//! - **quotas**: [`BufferPool::quota`] gives each client a [`Quota`] with a
//!   cap of its own, so one that stops reading cannot hold the pool;
//! - **`bytes`** (feature `bytes`): zero-copy `From` for `bytes::Bytes`,
//!   `BufMut` for `PageBuffer` (tokio's `read_buf` fills a pooled buffer),
//!   and `SharedCursor`, a `Buf` over a `SharedBuffer`;
//! - **a C ABI** (feature `capi`, module `capi`): the same calls for C, with
//!   HRESULT codes and validated handles, declared in `include/pagepool.h`;
//! - **io_uring registered buffers** (feature `io-uring`, Linux, module
//!   `uring`): pooled slots kept in a ring's fixed-buffer table as slabs
//!   come and go, for `READ_FIXED` / `WRITE_FIXED`.
//!
//! ```
//! use pagepool::{BufferPool, Error};
//!
//! let pool = BufferPool::builder()
//!     .name("vod")
//!     .max_bytes(64 << 20)
//!     .build()?;
//!
//! let mut buf = pool.allocate_page_size_buffer(64 * 1024)?;
//! assert_eq!(buf.as_ptr() as usize % pagepool::page_size(), 0);
//! assert_eq!(buf.max_len(), 64 * 1024);
//!
//! // Fill it (here by hand; in a server, an O_DIRECT read), then set the length.
//! buf.as_max_slice_mut()[..4].copy_from_slice(b"\x47\x40\x00\x10");
//! buf.set_len(4)?;
//! assert_eq!(&buf[..], b"\x47\x40\x00\x10");
//! assert!(matches!(buf.set_len(64 * 1024 + 1), Err(Error::LengthExceedsMax { .. })));
//!
//! drop(buf); // the slot goes back to the pool...
//! let again = pool.allocate_page_size_buffer(60 * 1024)?; // ...and is reused
//! assert_eq!(pool.stats().hits, 1);
//! # drop(again);
//! # Ok::<(), Error>(())
//! ```
//!
//! The [`design`] module explains the memory layout and the concurrency
//! argument.

#![deny(missing_docs)]
// docs.rs builds with `--cfg docsrs` on nightly: feature badges on items.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(
    missing_debug_implementations,
    rust_2018_idioms,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

#[cfg(not(unix))]
compile_error!("pagepool needs a Unix memory API (mmap, mprotect, madvise)");

// Leaves: no `crate::` import but each other's leaves.
mod class;
mod clock;
mod config;
mod error;
mod forklock;
mod limits;
mod site;
mod stats;
mod sync;
mod threads;
mod waitlist;

// Memory, free lists, observers, the pool: each imports only the layers
// before it (see `design`).
mod free;
mod mem;
mod observe;
mod pool;

// The public surface.
mod buffer;
mod buffer_pool;
mod builder;
#[cfg(feature = "bytes")]
mod bytes;
#[cfg(feature = "capi")]
#[cfg_attr(docsrs, doc(cfg(feature = "capi")))]
pub mod capi;
pub mod debug;
pub mod design;
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub mod direct;
mod future;
pub mod guide;
mod io;
pub mod leak;
pub mod metrics;
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub mod prometheus;
mod quota;
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "io-uring", target_os = "linux"))))]
pub mod uring;

#[cfg(feature = "bytes")]
#[cfg_attr(docsrs, doc(cfg(feature = "bytes")))]
pub use crate::bytes::SharedCursor;
pub use buffer::{PageBuffer, SharedBuffer};
pub use buffer_pool::BufferPool;
pub use builder::PoolBuilder;
pub use class::{SMALL_MAX, SMALL_SIZES};
pub use config::{
    CorruptionAction, DebugLevel, GuardMechanism, LeakTracking, Zeroing, DEFAULT_DECAY,
    DEFAULT_LEAK_AGE_THRESHOLD, DEFAULT_MAX_BUFFER_SIZE, DEFAULT_SLAB_SIZE, MAX_DECAY, MIN_DECAY,
};
pub use debug::install_fault_handler;
pub use error::Error;
pub use future::Allocate;
pub use leak::{LeakCheck, LeakReport, LeakSite, OutstandingBuffer};
pub use limits::{page_size, SIZE_LIMIT};
pub use mem::guard::guard_markers_supported;
pub use quota::{Quota, QuotaAllocate, QuotaStats};
pub use site::Site;
pub use stats::{ClassStats, CorruptionKind, PoolStats, WaitStats};

/// The README's examples, run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
