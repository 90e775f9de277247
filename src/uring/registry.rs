//! The [`Registry`]: a sparse registered-buffer table in one or more rings,
//! kept in step with a pool's slabs by their `mapped` / `unmapped` events.
//!
//! Every slot of a page class gets its own table entry (an iovec of exactly
//! the slot, never its guard pages: the kernel refuses an iovec that spans
//! them with `EFAULT`). Indices come from a free list shared by the rings,
//! so a slot has the same index in every ring of the registry.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::Arc;

use parking_lot::RwLock;

use super::builder::RegistryBuilder;
use super::ring::Ring;
use crate::mem::slabs::{SlabDesc, SlabEvents};
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

/// Counts of a [`Registry`]'s table, from [`Registry::stats`] (an example
/// is there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RegistryStats {
    /// Slots with a table entry now.
    pub registered: usize,
    /// Page-class slots of mapped slabs left without one (the table was
    /// full, or the kernel refused the update).
    pub unregistered: usize,
    /// Table entries retired for good because the kernel refused to clear
    /// them (their pages stay pinned until the registry drops).
    pub retired: usize,
    /// Free table entries.
    pub free: usize,
}

impl Registry {
    /// A registry over `rings`, each with a sparse table of `size`
    /// entries, subscribed to `pool`'s slabs (the slots already mapped are
    /// registered now).
    pub(super) fn start(pool: &BufferPool, rings: Vec<Ring>, size: u32) -> Registry {
        // Index 0 is handed out first, so a fresh slab gets one run.
        // `size <= MAX_TABLE_SIZE` fits `u16`.
        let free = (0..size as u16).rev().collect();
        let core = Arc::new(Table {
            rings: rings.into_boxed_slice(),
            size,
            state: RwLock::new(State {
                slabs: BTreeMap::new(),
                free,
                unregistered: 0,
                retired: 0,
            }),
        });
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
        let state = self.core.state.read();
        let registered = state
            .slabs
            .values()
            .map(|s| s.indices.iter().flatten().count())
            .sum();
        RegistryStats {
            registered,
            unregistered: state.unregistered,
            retired: state.retired,
            free: state.free.len(),
        }
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

/// The rings and the table: the slab-event subscriber.
struct Table {
    /// Each with a sparse table of `size` entries.
    rings: Box<[Ring]>,
    size: u32,
    state: RwLock<State>,
}

/// Which slot holds which entry.
struct State {
    /// Registered page-class slabs by base address.
    slabs: BTreeMap<usize, SlabEntry>,
    /// Free table indices; the last is handed out next.
    free: Vec<u16>,
    /// Page-class slots of mapped slabs without an entry.
    unregistered: usize,
    /// Entries the kernel refused to clear, never handed out again.
    retired: usize,
}

/// One slab's slots and their entries.
struct SlabEntry {
    /// Bytes mapped from the base.
    len: usize,
    /// Offset of slot 0 from the base.
    lead: usize,
    /// Distance between slots.
    stride: usize,
    /// Slot `i`'s table index, if it has one.
    indices: Box<[Option<u16>]>,
}

/// An empty table entry: `IORING_REGISTER_BUFFERS_UPDATE` with a null iovec
/// clears the index.
const EMPTY: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

impl Table {
    /// The index of the slot starting at `addr`, if registered.
    fn index_of(&self, addr: usize) -> Option<u16> {
        let state = self.state.read();
        let (&base, slab) = state.slabs.range(..=addr).next_back()?;
        let off = (addr - base).checked_sub(slab.lead)?;
        if addr - base >= slab.len || off % slab.stride != 0 {
            return None;
        }
        slab.indices.get(off / slab.stride).copied().flatten()
    }

    /// Points entries `first ..` at `iovecs` in every ring, or in none:
    /// when a ring refuses, the rings before it are cleared again.
    ///
    /// # Safety
    /// Each non-empty iovec is memory that stays mapped, readable and
    /// writable, until a later `set` clears its entry in every ring.
    unsafe fn set(&self, first: u16, iovecs: &[libc::iovec]) -> io::Result<()> {
        for (r, ring) in self.rings.iter().enumerate() {
            let submitter = ring.uring().submitter();
            // SAFETY: the caller's contract; an empty iovec clears.
            let done = unsafe { submitter.register_buffers_update(first.into(), iovecs, None) };
            if let Err(e) = done {
                let empty = vec![EMPTY; iovecs.len()];
                for ring in &self.rings[..r] {
                    let submitter = ring.uring().submitter();
                    // SAFETY: empty iovecs name no memory.
                    let undone =
                        unsafe { submitter.register_buffers_update(first.into(), &empty, None) };
                    if undone.is_err() {
                        // A ring keeps these entries, pointing at slots that
                        // will be unmapped some day without them being
                        // cleared. The kernel holds its own pin on the pages,
                        // so nothing the process maps later is reachable
                        // through them; and the caller retires the indices
                        // (`Retire`), so no buffer and no `read_fixed` ever
                        // names them.
                        return Err(io::Error::new(e.kind(), Retire(e)));
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// An update failed and could not be undone in every ring: its indices are
/// retired.
#[derive(Debug)]
struct Retire(io::Error);

impl fmt::Display for Retire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (and the undo failed)", self.0)
    }
}

impl std::error::Error for Retire {}

/// Whether a `set` error asks for its indices to be retired.
fn must_retire(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Retire>())
}

/// Runs of consecutive indices in `slots` (slot number, index), sorted by
/// index: `(first index, slot numbers)` each.
fn runs(mut slots: Vec<(usize, u16)>) -> Vec<(u16, Vec<usize>)> {
    slots.sort_unstable_by_key(|&(_, index)| index);
    let mut out: Vec<(u16, Vec<usize>)> = Vec::new();
    for (slot, index) in slots {
        match out.last_mut() {
            Some((first, members)) if usize::from(*first) + members.len() == usize::from(index) => {
                members.push(slot);
            }
            _ => out.push((index, vec![slot])),
        }
    }
    out
}

impl SlabEvents for Table {
    fn mapped(&self, slab: &SlabDesc<'_>) {
        if slab.layout.packed {
            return;
        }
        let mut state = self.state.write();
        let n = slab.slots.len();
        let mut indices: Box<[Option<u16>]> = vec![None; n].into_boxed_slice();
        let take = n.min(state.free.len());
        let at = state.free.len() - take;
        let taken: Vec<(usize, u16)> = state.free.drain(at..).rev().enumerate().collect();
        if take < n {
            tracing::warn!(
                pool = %slab.pool,
                slots = n,
                unregistered = n - take,
                table_size = self.size,
                "pagepool: the io_uring buffer table is full; these slots are read without \
                 READ_FIXED"
            );
        }
        for (first, members) in runs(taken) {
            let iovecs: Vec<libc::iovec> = members
                .iter()
                .map(|&i| libc::iovec {
                    iov_base: slab.slots[i].data().as_ptr().cast(),
                    iov_len: slab.layout.slot_bytes,
                })
                .collect();
            // SAFETY: each iovec is exactly one slot of this slab, inside its
            // mapping and never a guard page, readable and writable from now
            // until `unmapped` for this slab, which clears the entries before
            // the memory goes (`SlabDesc::slots`, the `SlabEvents` contract),
            // or, should the kernel refuse to clear them, retires their
            // indices (see there: the kernel's pin keeps the pages).
            match unsafe { self.set(first, &iovecs) } {
                Ok(()) => {
                    for (k, &i) in members.iter().enumerate() {
                        indices[i] = Some(first + k as u16);
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        pool = %slab.pool,
                        slots = members.len(),
                        error = %e,
                        "pagepool: the kernel refused to register slots as io_uring buffers; \
                         they are read without READ_FIXED"
                    );
                    let run = (0..members.len() as u16).map(|k| first + k);
                    if must_retire(&e) {
                        state.retired += members.len();
                    } else {
                        state.free.extend(run.rev());
                    }
                }
            }
        }
        state.unregistered += indices.iter().filter(|i| i.is_none()).count();
        state.slabs.insert(
            slab.base,
            SlabEntry {
                len: slab.len,
                lead: slab.layout.lead(),
                stride: slab.layout.stride(),
                indices,
            },
        );
    }

    fn unmapped(&self, slab: &SlabDesc<'_>) {
        let mut state = self.state.write();
        let Some(entry) = state.slabs.remove(&slab.base) else {
            return;
        };
        let held: Vec<(usize, u16)> = entry
            .indices
            .iter()
            .enumerate()
            .filter_map(|(i, index)| index.map(|x| (i, x)))
            .collect();
        state.unregistered -= entry.indices.len() - held.len();
        for (first, members) in runs(held) {
            let empty = vec![EMPTY; members.len()];
            // SAFETY: empty iovecs name no memory.
            match unsafe { self.set(first, &empty) } {
                Ok(()) => {
                    let run = (0..members.len() as u16).map(|k| first + k);
                    state.free.extend(run.rev());
                }
                Err(e) => {
                    // Some ring may still point these entries at the slab's
                    // pages, which go now: the kernel's pin keeps them (as
                    // orphans, not in the process's mapping) until the ring
                    // closes, so the process's memory is safe, and the
                    // indices are never handed out again, so nothing of ours
                    // names them.
                    tracing::warn!(
                        pool = %slab.pool,
                        entries = members.len(),
                        error = %e,
                        "pagepool: the kernel refused to clear io_uring buffer entries; \
                         they are retired"
                    );
                    state.retired += members.len();
                }
            }
        }
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("rings", &self.rings.len())
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_group_consecutive_indices() {
        let got = runs(vec![(0, 5), (1, 6), (2, 9), (3, 7), (4, 1)]);
        assert_eq!(got, vec![(1, vec![4]), (5, vec![0, 1, 3]), (9, vec![2])]);
    }
}
