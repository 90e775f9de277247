//! [`RegistryBuilder`]: a [`Registry`]'s settings, checked, and setting up
//! its rings.

use std::io;

use super::ring::Ring;
use super::{Registry, MAX_TABLE_SIZE};
use crate::{BufferPool, Error};

/// Settings of a [`Registry`]: number of rings, their queue depth, and the
/// table size.
///
/// ```
/// use pagepool::uring::{self, Registry};
///
/// let pool = pagepool::BufferPool::new();
/// let registry = Registry::builder().rings(2).entries(32).table_size(1024).build(&pool);
/// match registry {
///     Ok(r) => assert_eq!((r.rings(), r.table_size()), (2, 1024)),
///     Err(e) if uring::is_unavailable(&e) => {}
///     Err(e) => return Err(e.into()),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RegistryBuilder {
    rings: usize,
    entries: u32,
    table_size: u32,
}

impl Default for RegistryBuilder {
    fn default() -> Self {
        RegistryBuilder {
            rings: 1,
            entries: 64,
            table_size: MAX_TABLE_SIZE,
        }
    }
}

impl RegistryBuilder {
    /// How many rings (default 1, at most 64). Each has the same table;
    /// [`Registry::read_fixed`] uses a free one, so up to this many threads
    /// read at once.
    ///
    /// ```
    /// use pagepool::{uring::Registry, BufferPool, Error};
    /// let e = Registry::builder().rings(0).build(&BufferPool::new()).unwrap_err();
    /// assert!(matches!(e, Error::InvalidConfig(_)));
    /// ```
    pub fn rings(mut self, rings: usize) -> Self {
        self.rings = rings;
        self
    }

    /// Submission queue entries of each ring (default 64, 1 to 32,768; the
    /// kernel rounds up to a power of two).
    ///
    /// ```
    /// use pagepool::{uring::Registry, BufferPool, Error};
    /// let e = Registry::builder().entries(40_000).build(&BufferPool::new()).unwrap_err();
    /// assert!(matches!(e, Error::InvalidConfig(_)));
    /// ```
    pub fn entries(mut self, entries: u32) -> Self {
        self.entries = entries;
        self
    }

    /// Entries of the registered-buffer table (default and maximum
    /// [`MAX_TABLE_SIZE`], 16,384, the kernel's limit). Each entry is one
    /// slot; slots beyond it stay unregistered.
    ///
    /// ```
    /// use pagepool::{uring::{Registry, MAX_TABLE_SIZE}, BufferPool, Error};
    /// let too_big = Registry::builder().table_size(MAX_TABLE_SIZE + 1);
    /// assert!(matches!(too_big.build(&BufferPool::new()), Err(Error::InvalidConfig(_))));
    /// ```
    pub fn table_size(mut self, table_size: u32) -> Self {
        self.table_size = table_size;
        self
    }

    /// Sets up the rings, registers a sparse table in each, and subscribes
    /// to `pool`'s slabs (registering the slots already mapped).
    ///
    /// # Errors
    /// - [`Error::InvalidConfig`] for a setting out of range;
    /// - [`Error::Os`] when the kernel refuses: `io_uring_setup` with
    ///   `ENOSYS` (no io_uring) or `EPERM` (disabled by
    ///   `kernel.io_uring_disabled` or a seccomp filter), which
    ///   [`is_unavailable`](super::is_unavailable) recognises; `EINVAL` from
    ///   the sparse registration on kernels before 5.19.
    ///
    /// ```
    /// use pagepool::{uring::{self, Registry}, BufferPool};
    ///
    /// let pool = BufferPool::new();
    /// let held = pool.allocate_page_size_buffer(4096)?; // mapped before the registry
    /// match Registry::builder().table_size(256).build(&pool) {
    ///     Ok(registry) => assert!(held.fixed_index(&registry).is_some()), // replayed
    ///     Err(e) if uring::is_unavailable(&e) => eprintln!("no io_uring: {e}"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self, pool: &BufferPool) -> Result<Registry, Error> {
        if !(1..=64).contains(&self.rings) {
            return Err(Error::InvalidConfig("uring: rings must be 1 to 64"));
        }
        if !(1..=32_768).contains(&self.entries) {
            return Err(Error::InvalidConfig("uring: entries must be 1 to 32768"));
        }
        if !(1..=MAX_TABLE_SIZE).contains(&self.table_size) {
            return Err(Error::InvalidConfig("uring: table_size must be 1 to 16384"));
        }
        let rings = (0..self.rings)
            .map(|_| {
                let ring = Ring::new(self.entries)?;
                ring.uring()
                    .submitter()
                    .register_buffers_sparse(self.table_size)?;
                Ok(ring)
            })
            .collect::<io::Result<Vec<Ring>>>()
            .map_err(Error::Os)?;
        Ok(Registry::start(pool, rings, self.table_size))
    }
}
