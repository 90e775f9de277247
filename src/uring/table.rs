//! The registry's core: the rings and the table of which slot holds which
//! index, kept in step with the pool's slabs as their [`SlabEvents`]
//! subscriber.

use std::collections::BTreeMap;
use std::fmt;
use std::io;

use crate::sync::RwLock;

use super::ring::Ring;
use crate::mem::slabs::{SlabDesc, SlabEvents};

/// Counts of a [`Registry`](super::Registry)'s table, from
/// [`Registry::stats`](super::Registry::stats) (an example
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

/// The rings and the table: the slab-event subscriber.
pub(super) struct Table {
    /// Each with a sparse table of `size` entries.
    pub(super) rings: Box<[Ring]>,
    pub(super) size: u32,
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
    /// A table of `size` entries, all free, in each of `rings`.
    pub(super) fn new(rings: Box<[Ring]>, size: u32) -> Table {
        // Index 0 is handed out first, so a fresh slab gets one run.
        // `size <= MAX_TABLE_SIZE` fits `u16`.
        let free = (0..size as u16).rev().collect();
        Table {
            rings,
            size,
            state: RwLock::new(State {
                slabs: BTreeMap::new(),
                free,
                unregistered: 0,
                retired: 0,
            }),
        }
    }

    /// The table's counts now.
    pub(super) fn stats(&self) -> RegistryStats {
        let state = self.state.read();
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

    /// Whether this is a parent's table, in a child of `fork` (its rings
    /// are marked so): the child then neither updates the tables in the
    /// rings nor hands out indices.
    pub(super) fn is_inherited(&self) -> bool {
        self.rings.iter().any(Ring::is_inherited)
    }

    /// The index of the slot starting at `addr`, if registered.
    pub(super) fn index_of(&self, addr: usize) -> Option<u16> {
        if self.is_inherited() {
            return None;
        }
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
    /// Registered slots are pinned by the kernel.
    fn pins_pages(&self) -> bool {
        true
    }

    /// Holds the table state (taken under the slab lock by `mapped` and
    /// `unmapped`, alone by lookups), so a child can map and trim.
    fn fork_hold(&self) {
        crate::forklock::hold_write(&self.state);
    }

    unsafe fn fork_release(&self, child: bool) {
        if child {
            // Before the state is let go, while the child has one thread.
            for ring in self.rings.iter() {
                ring.forget_in_child();
            }
        }
        // SAFETY: `fork_hold` took the state on this thread (the caller's
        // contract, which is `release_write`'s).
        unsafe { crate::forklock::release_write(&self.state, child) };
    }

    fn mapped(&self, slab: &SlabDesc<'_>) {
        if slab.layout.packed {
            return;
        }
        let mut state = self.state.write();
        let n = slab.slots.len();
        let mut indices: Box<[Option<u16>]> = vec![None; n].into_boxed_slice();
        // In a child of `fork` no slot is registered: the tables are the parent's.
        let inherited = self.is_inherited();
        let take = if inherited {
            0
        } else {
            n.min(state.free.len())
        };
        let at = state.free.len() - take;
        let taken: Vec<(usize, u16)> = state.free.drain(at..).rev().enumerate().collect();
        if take < n && !inherited {
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
        if self.is_inherited() {
            // The parent's entries stay the parent's.
            return;
        }
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
