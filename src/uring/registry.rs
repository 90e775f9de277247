//! The [`Registry`]: a sparse registered-buffer table in one or more rings,
//! kept in step with a pool's slabs by their `mapped` / `unmapped` events.
//!
//! Every slot of a page class gets its own table entry (an iovec of exactly
//! the slot, never its guard pages: the kernel refuses an iovec that spans
//! them with `EFAULT`). Indices come from a free list shared by the rings,
//! so a slot has the same index in every ring of the registry.

use std::fmt;
use std::sync::Arc;

use super::builder::RegistryBuilder;
use super::ring::Ring;
use super::table::{RegistryStats, Table};
use crate::mem::slabs::SlabEvents;
use crate::pool::PoolInner;
use crate::{BufferPool, Error, PageBuffer};

/// Slots of a [`BufferPool`]'s page classes registered as io_uring fixed
/// buffers in one or more [`Ring`]s, for `READ_FIXED` / `WRITE_FIXED`.
///
/// Built on a live pool ([`Registry::new`], [`Registry::builder`]), it
/// registers every slot already mapped and, from then on, every slab the
/// pool maps, from whichever thread maps it; a slab's entries leave the
/// table before it is unmapped ([`BufferPool::trim`], the pool's shutdown),
/// so the kernel never holds pages the pool gave back. Dropping the
/// registry clears and unregisters the table and closes the rings.
///
/// What is registered, and why:
/// - slots of **page classes** only. Packed small slots (`allocate_buffer`
///   up to [`SMALL_MAX`](crate::SMALL_MAX)) share pages with red zones,
///   would spend one entry per packet out of at most 16,384, and are rarely
///   aligned for `O_DIRECT`; their reads use plain `IORING_OP_READ`;
/// - one entry per slot, covering the whole slot (`slot_len()` bytes);
/// - as many slots as the table holds ([`table_size`](RegistryBuilder::table_size),
///   at most [`MAX_TABLE_SIZE`](super::MAX_TABLE_SIZE)): the rest stay unregistered
///   ([`PageBuffer::fixed_index`] is `None`) and still work with plain
///   reads. A warning is logged (`tracing`) for each slab that does not
///   fit, and for each table update the kernel refuses (e.g. `ENOMEM` past
///   `RLIMIT_MEMLOCK` for an unprivileged process: registered pages are
///   pinned and counted as locked memory).
///
/// Table updates are `io_uring_register` calls made with the pool's slab
/// lock held, on the mapping or trimming thread; they never wait for a
/// ring's queue lock.
///
/// What registration costs:
/// - the kernel faults in and pins every page of a registered slot when
///   its slab is mapped: with a registry, a pool's slots are resident from
///   the start (up to the table's size), not when first written, and the
///   allocation that maps a slab pays for that. [`BufferPool::trim`] gives
///   them back (entries are cleared, then the slab unmapped);
/// - pinned pages count as locked memory (`RLIMIT_MEMLOCK`) for a process
///   without `CAP_IPC_LOCK`: past the limit the kernel refuses the update
///   (`ENOMEM`), and those slots stay unregistered, with a warning;
/// - after `fork`, the kernel copies pinned pages for the child at once
///   rather than on write.
///
/// In a child of `fork` the registry is the parent's: no index, no ring
/// ([`Error::Os`]), no table update; build a new one there (the "Fork"
/// section of [`design`](crate::design)).
///
/// Guard pages are never registered, so they fault as before; the
/// quarantine's sealing (`mprotect`) does not stop the kernel from writing
/// a registered slot through its pin, which only an `unsafe` submission of
/// your own naming a released buffer's index could do.
///
/// ```
/// use pagepool::{uring::{self, Registry}, BufferPool};
///
/// let pool = BufferPool::new();
/// let registry = match Registry::new(&pool) {
///     Ok(r) => r,
///     Err(e) if uring::is_unavailable(&e) => return Ok(()), // no io_uring here
///     Err(e) => return Err(e.into()),
/// };
/// let buf = pool.allocate_page_size_buffer(64 * 1024)?;
/// let index = buf.fixed_index(&registry).expect("a fresh table has room");
/// assert!(u32::from(index) < registry.table_size());
/// // Every slot of the buffer's slab got an entry when the slab was mapped.
/// assert!(registry.stats().registered >= 1);
/// assert_eq!(registry.stats().unregistered, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Registry {
    /// The subscriber: the rings and the table.
    core: Arc<Table>,
    /// The same, as the pool's slab-lock subscriber list holds it.
    subscriber: Arc<dyn SlabEvents>,
    /// The pool whose slabs are registered.
    pub(super) pool: Arc<PoolInner>,
}

impl Registry {
    /// A registry over `rings`, each with a sparse table of `size`
    /// entries, subscribed to `pool`'s slabs (the slots already mapped are
    /// registered now).
    pub(super) fn start(pool: &BufferPool, rings: Vec<Ring>, size: u32) -> Registry {
        let core = Arc::new(Table::new(rings.into_boxed_slice(), size));
        let subscriber: Arc<dyn SlabEvents> = core.clone();
        pool.inner.subscribe(Arc::clone(&subscriber));
        Registry {
            core,
            subscriber,
            pool: Arc::clone(&pool.inner),
        }
    }

    /// A registry of one ring of 64 entries and a table of
    /// [`MAX_TABLE_SIZE`](super::MAX_TABLE_SIZE) entries on `pool`; see
    /// [`RegistryBuilder::build`].
    ///
    /// ```
    /// use pagepool::{uring::{self, Registry}, BufferPool};
    /// match Registry::new(&BufferPool::new()) {
    ///     Ok(registry) => assert_eq!(registry.rings(), 1),
    ///     Err(e) if uring::is_unavailable(&e) => eprintln!("no io_uring: {e}"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`RegistryBuilder::build`].
    pub fn new(pool: &BufferPool) -> Result<Registry, Error> {
        Registry::builder().build(pool)
    }

    /// Settings for a registry, to [`build`](RegistryBuilder::build) on a
    /// pool (examples there).
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// Ring `i` (`0 .. rings()`), for your own submissions; `None` past the
    /// last.
    ///
    /// ```
    /// # let pool = pagepool::BufferPool::new();
    /// # let registry = match pagepool::uring::Registry::new(&pool) {
    /// #     Ok(r) => r,
    /// #     Err(e) if pagepool::uring::is_unavailable(&e) => return Ok(()),
    /// #     Err(e) => return Err(e.into()),
    /// # };
    /// assert!(registry.ring(0).is_some());
    /// assert!(registry.ring(registry.rings()).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ring(&self, i: usize) -> Option<&Ring> {
        self.core.rings.get(i)
    }

    /// How many rings the registry has.
    ///
    /// ```
    /// # let pool = pagepool::BufferPool::new();
    /// # let registry = match pagepool::uring::Registry::new(&pool) {
    /// #     Ok(r) => r,
    /// #     Err(e) if pagepool::uring::is_unavailable(&e) => return Ok(()),
    /// #     Err(e) => return Err(e.into()),
    /// # };
    /// assert_eq!(registry.rings(), 1); // `Registry::new`'s
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rings(&self) -> usize {
        self.core.rings.len()
    }

    /// Entries of the table in every ring.
    ///
    /// ```
    /// # let pool = pagepool::BufferPool::new();
    /// # let registry = match pagepool::uring::Registry::new(&pool) {
    /// #     Ok(r) => r,
    /// #     Err(e) if pagepool::uring::is_unavailable(&e) => return Ok(()),
    /// #     Err(e) => return Err(e.into()),
    /// # };
    /// assert_eq!(registry.table_size(), pagepool::uring::MAX_TABLE_SIZE);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn table_size(&self) -> u32 {
        self.core.size
    }

    /// The table's counts now.
    ///
    /// ```
    /// # let pool = pagepool::BufferPool::new();
    /// # let registry = match pagepool::uring::Registry::new(&pool) {
    /// #     Ok(r) => r,
    /// #     Err(e) if pagepool::uring::is_unavailable(&e) => return Ok(()),
    /// #     Err(e) => return Err(e.into()),
    /// # };
    /// let idle = registry.stats();
    /// assert_eq!((idle.registered, idle.free), (0, 16_384)); // nothing mapped yet
    /// let buf = pool.allocate_page_size_buffer(4096)?;
    /// let busy = registry.stats();
    /// assert_eq!(busy.registered + busy.free, 16_384);
    /// drop(buf);
    /// pool.trim(); // the slab goes, and its entries with it
    /// assert_eq!(registry.stats(), idle);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> RegistryStats {
        self.core.stats()
    }

    /// The rings, for `read_fixed`'s choice.
    pub(super) fn all_rings(&self) -> &[Ring] {
        &self.core.rings
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Every entry leaves the table (the replayed `unmapped` events),
        // then the table itself; the rings close when the last `Arc` of the
        // core goes, which the pool's subscriber list no longer holds.
        self.pool.unsubscribe(&self.subscriber);
        if self.core.is_inherited() {
            // A child's copy: the tables are the parent's.
            return;
        }
        for ring in self.core.rings.iter() {
            if let Err(e) = ring.uring().submitter().unregister_buffers() {
                tracing::warn!(error = %e, "pagepool: io_uring buffer table not unregistered");
            }
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("pool", &self.pool.name())
            .field("rings", &self.rings())
            .field("table_size", &self.table_size())
            .field("stats", &self.stats())
            .finish()
    }
}

impl PageBuffer {
    /// The buffer's index in `registry`'s table, for `READ_FIXED` /
    /// `WRITE_FIXED` (`buf_index`) on any of its rings; `None` when the slot
    /// is not registered there (a small class, a full table, a buffer of
    /// another pool).
    ///
    /// The index stays valid while the buffer lives (its slab cannot be
    /// unmapped before). A fixed operation may name any sub-range of the
    /// slot, `as_ptr() .. as_ptr() + slot_len()`.
    ///
    /// ```
    /// use pagepool::{uring::{self, Registry}, BufferPool};
    ///
    /// let pool = BufferPool::new();
    /// let registry = match Registry::new(&pool) {
    ///     Ok(r) => r,
    ///     Err(e) if uring::is_unavailable(&e) => return Ok(()),
    ///     Err(e) => return Err(e.into()),
    /// };
    /// let page = pool.allocate_page_size_buffer(4096)?;
    /// let packet = pool.allocate_buffer(1500)?; // a packed small slot
    /// assert!(page.fixed_index(&registry).is_some());
    /// assert_eq!(packet.fixed_index(&registry), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fixed_index(&self, registry: &Registry) -> Option<u16> {
        if !Arc::ptr_eq(self.pool(), &registry.pool) {
            return None;
        }
        registry.core.index_of(self.as_ptr() as usize)
    }
}
