//! A slab: one mapping holding the slots of one size class and their guard
//! pages, and the per-slot metadata.
//!
//! A page class's slab:
//!
//! ```text
//!  base                                                    base + len
//!  |                                                                |
//!  [ G ][ slot 0 (P pages) ][ G ][ slot 1 ][ G ] ... [ slot n-1 ][ G ]
//!       ^ page-aligned           ^ stride = (P + 1) pages apart
//! ```
//!
//! A small class's slab packs its sub-page slots between red zones (`r`,
//! `REDZONE` bytes of canary) inside whole pages, with guard pages only at
//! the two ends:
//!
//! ```text
//!  [ G ][ r | slot 0 | r | slot 1 | r | ... | slot n-1 | r | pad ][ G ]
//!          ^ 64-byte aligned, stride = slot + REDZONE bytes
//! ```
//!
//! Guard pages (`G`) are placed and red zones filled once, when the slab is
//! mapped; allocation and release never touch the mapping again. A trim
//! may give a free page slot's pages back while its slab stays mapped
//! ([`Slab::discard_free_slots`]); a packed slab's pages all hold red zones,
//! so only unmapping the whole slab gives them back.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::backing::{Backing, Mapping};
use super::canary;
use super::guard::{self, Placed};
use super::slot::{Edges, Slot, SlotFlags};
use crate::class::ClassIdx;
use crate::config::GuardMechanism;
use crate::limits::{EDGE_CANARY, REDZONE};

/// One mapping of `slots.len()` slots of one class.
pub(crate) struct Slab {
    /// How the slots are laid out.
    layout: Layout,
    /// The mapping; every slot and guard page lies inside it.
    mapping: Mapping,
    /// Per-slot metadata, in address order. Never resized, so `Slot` addresses
    /// stay put while the pool's slab list grows.
    slots: Vec<Slot>,
    /// Kernel memory areas this slab's `mprotect` guards cost.
    protect_areas: usize,
    /// Slots with at least one missing guard page.
    unguarded: usize,
}

impl std::fmt::Debug for Slab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slab")
            .field("base", &self.mapping.base())
            .field("len", &self.mapping.len())
            .field("slots", &self.slots.len())
            .field("unguarded", &self.unguarded)
            .finish()
    }
}

/// How a slab is laid out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    /// Bytes in a page.
    pub page: usize,
    /// Bytes in a slot (whole pages, or a multiple of 64 below a page when
    /// `packed`).
    pub slot_bytes: usize,
    /// `Some` when every slot (every slab, when `packed`) gets a guard page
    /// before and after it.
    pub guards: Option<GuardMechanism>,
    /// A small class: slots packed between red zones, guards at the ends.
    pub packed: bool,
}

impl Layout {
    /// Bytes of one guard page, or 0 without guards.
    pub(crate) fn guard(&self) -> usize {
        if self.guards.is_some() {
            self.page
        } else {
            0
        }
    }

    /// Distance between the starts of two neighbouring slots.
    pub(crate) fn stride(&self) -> usize {
        if self.packed {
            self.slot_bytes + REDZONE
        } else {
            self.slot_bytes + self.guard()
        }
    }

    /// Offset of the first slot from the slab's base.
    pub(crate) fn lead(&self) -> usize {
        self.guard() + if self.packed { REDZONE } else { 0 }
    }

    /// Bytes a slab of `n` slots maps, guard pages included.
    pub(crate) fn slab_bytes(&self, n: usize) -> usize {
        if self.packed {
            let area = (REDZONE + n * self.stride()).next_multiple_of(self.page);
            area + 2 * self.guard()
        } else {
            n * self.stride() + self.guard()
        }
    }

    /// The most slots a slab may hold within `bytes` of mapping.
    pub(crate) fn slots_within(&self, bytes: usize) -> usize {
        if self.packed {
            let area = bytes.saturating_sub(2 * self.guard()) / self.page * self.page;
            area.saturating_sub(REDZONE) / self.stride()
        } else {
            bytes.saturating_sub(self.guard()) / self.stride()
        }
    }
}

impl Slab {
    /// Maps a slab of `n >= 1` slots of class `class` from `backing`, and
    /// places its guards.
    ///
    /// # Errors
    /// The backing's refusal to map.
    pub(crate) fn map(
        backing: &Arc<dyn Backing>,
        class: ClassIdx,
        n: usize,
        layout: Layout,
    ) -> io::Result<Slab> {
        if layout.packed {
            return Self::map_packed(backing, class, n, layout);
        }
        debug_assert!(n >= 1 && layout.slot_bytes.is_multiple_of(layout.page));
        let mapping = Mapping::new(backing, layout.slab_bytes(n))?;
        let base = mapping.base();
        let stride = layout.stride();
        let lead = if layout.guards.is_some() {
            layout.page
        } else {
            0
        };
        let mut edges = vec![Edges::EMPTY; n];
        let mut protect_areas = 0;
        if let Some(mechanism) = layout.guards {
            // Guard page `g` sits before slot `g` and after slot `g - 1`.
            // Place the slab's two edge guards first: they are the cheapest
            // under `mprotect` (one area each) and the last to go.
            let order = [0, n].into_iter().chain(1..n);
            for g in order {
                let areas = if g == 0 || g == n { 1 } else { 2 };
                // SAFETY: `g * stride < mapping.len()` for `g <= n` (slab_bytes
                // = n * stride + page), the address is page-aligned since
                // stride and base are, and the fresh mapping has no users yet.
                let placed =
                    unsafe { guard::place(base.add(g * stride), layout.page, mechanism, areas) };
                match placed {
                    Placed::Marker => {}
                    Placed::Protected { areas } => protect_areas += areas,
                    Placed::Missing => {
                        // SAFETY: the page is inside the mapping (as above) and
                        // still readable and writable, since no guard was placed.
                        unsafe { write_edge_canary(base.add(g * stride), layout.page) };
                        if g < n {
                            edges[g] |= Edges::CANARY_BEFORE;
                        }
                        if g > 0 {
                            edges[g - 1] |= Edges::CANARY_AFTER;
                        }
                    }
                }
            }
        }

        let slots: Vec<Slot> = (0..n)
            .map(|i| {
                // SAFETY: `lead + i * stride + slot_bytes <= mapping.len()` for
                // `i < n`, so the pointer is inside the mapping and non-null.
                let data = unsafe { NonNull::new_unchecked(base.add(lead + i * stride)) };
                Slot::new(data, class, edges[i])
            })
            .collect();
        let unguarded = edges.iter().filter(|e| !e.is_empty()).count();
        Ok(Slab {
            layout,
            mapping,
            slots,
            protect_areas,
            unguarded,
        })
    }

    /// `map` for a small class: `n` slots packed between red zones, a guard
    /// page at each end.
    fn map_packed(
        backing: &Arc<dyn Backing>,
        class: ClassIdx,
        n: usize,
        layout: Layout,
    ) -> io::Result<Slab> {
        debug_assert!(n >= 1 && layout.slot_bytes.is_multiple_of(64));
        debug_assert!(layout.slot_bytes < layout.page);
        let len = layout.slab_bytes(n);
        let mapping = Mapping::new(backing, len)?;
        let base = mapping.base();
        let (guard, stride, lead) = (layout.guard(), layout.stride(), layout.lead());
        let mut protect_areas = 0;
        if let Some(mechanism) = layout.guards {
            for at in [0, len - guard] {
                // SAFETY: both pages are page-aligned, inside the fresh mapping
                // (`len >= 2 * guard + page`), and have no users yet.
                match unsafe { guard::place(base.add(at), layout.page, mechanism, 1) } {
                    Placed::Protected { areas } => protect_areas += areas,
                    // The red zones at the ends still catch an overflow, at
                    // release rather than at once.
                    Placed::Marker | Placed::Missing => {}
                }
            }
        }
        // The red zone before slot 0, after every slot, and the padding up
        // to the trailing guard.
        // SAFETY: `guard .. guard + REDZONE` is inside the mapping's
        // readable, writable area between the guards; no one uses it yet.
        unsafe { canary::fill(base.add(guard), REDZONE) };
        let area_end = len - guard;
        for i in 0..n {
            let zone = lead + i * stride + layout.slot_bytes;
            let end = if i + 1 == n { area_end } else { zone + REDZONE };
            // SAFETY: `zone < end <= area_end`: between the guards, outside
            // every slot.
            unsafe { canary::fill(base.add(zone), end - zone) };
        }
        let slots: Vec<Slot> = (0..n)
            .map(|i| {
                // SAFETY: `lead + i * stride + slot_bytes <= area_end` for
                // `i < n`, so the pointer is inside the mapping and non-null.
                let data = unsafe { NonNull::new_unchecked(base.add(lead + i * stride)) };
                Slot::new(data, class, Edges::PACKED_SLOT)
            })
            .collect();
        Ok(Slab {
            layout,
            mapping,
            slots,
            protect_areas,
            // Red zones stand between packed slots by design: they are not
            // counted as missing guards.
            unguarded: 0,
        })
    }

    /// The slots, in address order.
    pub(crate) fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Bytes mapped, guard pages included.
    pub(crate) fn reserved(&self) -> usize {
        self.mapping.len()
    }

    /// First mapped address.
    pub(crate) fn base(&self) -> usize {
        self.mapping.base() as usize
    }

    /// Whether `addr` lies inside this slab's mapping.
    pub(crate) fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base()) < self.reserved()
    }

    /// How the slots are laid out.
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// Slots served without one of their guard pages.
    pub(crate) fn unguarded(&self) -> usize {
        self.unguarded
    }

    /// Gives the data pages of free slots `free` (this slab's, in any
    /// order) back to the OS while the slab stays mapped, but for those
    /// that hold nothing ([`untouched`]) and for a packed slab's; returns
    /// the slot bytes given back. One `madvise` per run of neighbours: a run
    /// spans the guard pages between its slots (guard markers survive a
    /// discard, and `mprotect`ed pages hold no memory), never a page of edge
    /// canary. A discarded slot reads zeros, and its metadata forgets what
    /// its bytes held: no `POISONED` (the next allocation checks no poison),
    /// no `CANARY` (it writes the canary afresh), and `max_len` 0, which
    /// marks it untouched until an allocation stamps it.
    ///
    /// # Safety
    /// Every slot of `free` is one of this slab's and the caller owns it:
    /// free, on no free list or thread cache, until this returns.
    pub(crate) unsafe fn discard_free_slots(&self, free: &[&Slot]) -> usize {
        if self.layout.packed {
            return 0;
        }
        let (lead, stride, len) = (
            self.layout.lead(),
            self.layout.stride(),
            self.layout.slot_bytes,
        );
        let mut at: Vec<usize> = free
            .iter()
            .filter(|s| !untouched(s))
            .map(|s| (s.data().as_ptr() as usize - self.base() - lead) / stride)
            .collect();
        at.sort_unstable();
        let joins =
            |a: usize, b: usize| b == a + 1 && !self.slots[a].edges().contains(Edges::CANARY_AFTER);
        let mut given = 0;
        for run in at.chunk_by(|&a, &b| joins(a, b)) {
            let (first, last) = (run[0], run[run.len() - 1]);
            // SAFETY: slots `first..=last` and the guard pages between them
            // are whole pages inside the mapping (`map`'s layout); the
            // caller owns every slot of the run, and no one accesses guard
            // pages.
            let done = unsafe {
                self.mapping
                    .discard(lead + first * stride, (last - first) * stride + len)
            };
            for &i in run {
                let s = &self.slots[i];
                // Even if the OS refused (some pages may be gone): the checks
                // then skip a round rather than report a pattern not there.
                s.flags.store(
                    s.flags
                        .load()
                        .without(SlotFlags::POISONED | SlotFlags::CANARY),
                );
                if done {
                    s.max_len.store(0, Relaxed);
                }
            }
            if done {
                given += run.len() * len;
            }
        }
        given
    }
}

/// Whether free slot `s`'s data holds nothing: not written since its slab
/// was mapped or its pages were discarded. Its `max_len` is then 0, which
/// every allocation overwrites with the buffer's (at least 1).
pub(crate) fn untouched(s: &Slot) -> bool {
    s.max_len.load(Relaxed) == 0
}

impl Drop for Slab {
    fn drop(&mut self) {
        // The mapping's own drop then unmaps the memory, guards and all.
        guard::return_areas(self.protect_areas);
    }
}

/// Writes the edge canary at both ends of an unguarded guard page.
///
/// # Safety
/// `page..page + len` is readable and writable memory of a live mapping that
/// no one else accesses, with `len >= 2 * EDGE_CANARY`.
unsafe fn write_edge_canary(page: *mut u8, len: usize) {
    // SAFETY: both ranges lie inside the page (caller's contract).
    unsafe {
        canary::fill(page, EDGE_CANARY);
        canary::fill(page.add(len - EDGE_CANARY), EDGE_CANARY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(guards: Option<GuardMechanism>) -> Layout {
        Layout {
            page: crate::limits::page_size(),
            slot_bytes: 2 * crate::limits::page_size(),
            guards,
            packed: false,
        }
    }

    #[test]
    fn layout_arithmetic() {
        let p = crate::limits::page_size();
        let g = layout(Some(GuardMechanism::Auto));
        assert_eq!(g.slab_bytes(3), 3 * 3 * p + p);
        assert_eq!(g.slots_within(g.slab_bytes(3)), 3);
        assert_eq!(g.slots_within(g.slab_bytes(3) - 1), 2);
        assert_eq!(g.slots_within(p), 0);
        let u = layout(None);
        assert_eq!(u.slab_bytes(3), 6 * p);
        assert_eq!(u.slots_within(6 * p - 1), 2);
    }

    #[test]
    fn slots_are_aligned_disjoint_and_inside() {
        let p = crate::limits::page_size();
        for guards in [None, Some(GuardMechanism::Auto)] {
            let backing: Arc<dyn Backing> = Arc::new(super::super::backing::Anonymous);
            // SAFETY: class 3 of a table of at least 4 classes; the test
            // only reads it back.
            let class = unsafe { ClassIdx::from_stored(3) };
            let slab = Slab::map(&backing, class, 5, layout(guards)).unwrap();
            let mut last_end = 0;
            for s in slab.slots() {
                let a = s.data().as_ptr() as usize;
                assert_eq!(a % p, 0);
                assert!(a >= last_end + if guards.is_some() { p } else { 0 });
                assert!(slab.contains(a) && slab.contains(a + 2 * p - 1));
                assert_eq!(s.class(), class);
                last_end = a + 2 * p;
            }
            assert!(slab.contains(last_end - 1));
            assert_eq!(slab.unguarded(), 0);
        }
    }
}
