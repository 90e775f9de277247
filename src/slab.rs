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
//! [`REDZONE`] bytes of canary) inside whole pages, with guard pages only at
//! the two ends:
//!
//! ```text
//!  [ G ][ r | slot 0 | r | slot 1 | r | ... | slot n-1 | r | pad ][ G ]
//!          ^ 64-byte aligned, stride = slot + REDZONE bytes
//! ```
//!
//! Guard pages (`G`) are placed and red zones filled once, when the slab is
//! mapped; allocation and release never touch the mapping again.

use std::io;
use std::panic::Location;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

use std::sync::Arc;

use crate::anchor::Anchor;
use crate::debug::canary;
use crate::debug::fault::{Registration, SlabInfo};
use crate::guard::{self, GuardMechanism, Placed};

/// Slot state: on a free list (or about to be pushed to one).
pub(crate) const FREE: u8 = 0;
/// Slot state: owned by a live buffer.
pub(crate) const IN_USE: u8 = 1;

/// `Slot::edges` bit: the page before the slot is not a guard (canary instead).
pub(crate) const CANARY_BEFORE: u8 = 1;
/// `Slot::edges` bit: the page after the slot is not a guard (canary instead).
pub(crate) const CANARY_AFTER: u8 = 2;
/// `Slot::edges` bit: a small slot, packed between red zones (with
/// `CANARY_BEFORE | CANARY_AFTER`: the red zones are its edge canaries).
pub(crate) const PACKED: u8 = 4;
/// The edges of every packed slot: red zones of canary on both sides.
pub(crate) const PACKED_EDGES: u8 = CANARY_BEFORE | CANARY_AFTER | PACKED;
/// Bytes of canary checked on each unguarded edge.
pub(crate) const EDGE_CANARY: usize = 64;
/// Bytes of canary between two packed slots (and before the first and after
/// the last): a multiple of 64, so packed slots stay 64-byte aligned.
pub(crate) const REDZONE: usize = 64;
const _: () = assert!(REDZONE.is_multiple_of(64) && REDZONE >= EDGE_CANARY);

/// An `mmap`ed range owned by pagepool; unmapped on drop.
pub(crate) struct Mapping(region::Allocation);

// SAFETY: `region::Allocation` is only a base pointer and a length plus the
// `munmap` in its `Drop`; it is `!Send`/`!Sync` merely because it holds a raw
// pointer. `munmap` may be called from any thread, and pagepool never reads or
// writes through the `Allocation` itself: every access to the mapped bytes goes
// through a slot that exactly one `PageBuffer` owns (or, for canaries, under the
// pool's slab lock), so sharing the handle between threads creates no data race.
unsafe impl Send for Mapping {}
// SAFETY: see `Send` above; `&Mapping` only exposes the base address and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes (a multiple of the page size) readable and writable.
    fn new(len: usize) -> io::Result<Mapping> {
        region::alloc(len, region::Protection::READ_WRITE)
            .map(Mapping)
            .map_err(|e| match e {
                region::Error::SystemCall(code) => io::Error::from_raw_os_error(code),
                other => io::Error::other(other.to_string()),
            })
    }

    fn base(&self) -> *mut u8 {
        self.0.as_ptr::<u8>().cast_mut()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Metadata of one slot: one cache line, in the slab's `slots` array, at a
/// stable address for as long as the slab is mapped.
///
/// Ownership: while the slot is `FREE` on a free list, only the pool touches
/// it; while `IN_USE`, only its buffer writes the tracking fields (at
/// allocation and release). Anyone may read every field at any time (leak
/// reports, the fault handler), so all mutable fields are atomics accessed
/// `Relaxed`: a reader racing with a hand-over may see a mix of two owners'
/// values, which reports tolerate, and never undefined behaviour.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Slot {
    /// First byte of the slot: `slot_bytes` long, inside the slab's mapping,
    /// never moves.
    data: NonNull<u8>,
    /// The anchor the current buffer was issued through (see `anchor.rs`);
    /// written at allocation, read at release.
    pub(crate) anchor: AtomicPtr<Anchor>,
    /// Allocation site of the current (or last) buffer; null when untracked.
    pub(crate) site: AtomicPtr<Location<'static>>,
    /// Release site of the last buffer, when it was released with
    /// `PageBuffer::release`, null after a plain drop; recorded only when
    /// the release poisons or quarantines the slot (the reports of a later
    /// use after release are its only readers).
    pub(crate) release_site: AtomicPtr<Location<'static>>,
    /// Coarse clock (`clock::coarse_nanos`) at allocation; 0 when untracked.
    pub(crate) allocated_at: AtomicU64,
    /// `max_len` of the current (or last) buffer.
    pub(crate) max_len: AtomicU32,
    /// `len` of the current buffer: the buffer keeps its lengths here so
    /// that a `PageBuffer` is two words. Invariant: `len <= max_len`.
    pub(crate) len: AtomicU32,
    /// `leak::thread_id()` of the allocating thread while in use, of the
    /// releasing thread once poisoned or quarantined (as `release_site`); 0
    /// when untracked.
    pub(crate) thread: AtomicU32,
    /// The pool's leak-check epoch at allocation.
    pub(crate) epoch: AtomicU32,
    /// The canary record: the `max_len` whose canary span
    /// (`PoolInner::canary_span`) holds the pattern, valid while `flags`
    /// has `CANARY`.
    pub(crate) canary_max: AtomicU32,
    /// Index of the slot's size class in the pool's table (low 13 bits) and
    /// the edges (high 3 bits): `CANARY_BEFORE` / `CANARY_AFTER` where a
    /// guard page could not be placed, `PACKED` for a small slot. Immutable.
    class_edges: u16,
    /// `FREE`, `IN_USE` or `QUARANTINED`.
    pub(crate) state: AtomicU8,
    /// What the slot's next release and next allocation must do beyond
    /// the plain path, as bits: the current buffer's duties
    /// (`HAS_BACKTRACE`, `SAMPLED`, `POISON_DUE`, `ZERO_DUE`, set at
    /// allocation, done and cleared at release; `BACKTRACE_DUE` only
    /// within an allocation) and the slot's lasting records (`CANARY`,
    /// `POISONED`). Written by the slot's owner (or the pool, for a free
    /// slot) only; 0 for most buffers, so each end of a buffer's life tests
    /// one byte for every rare duty.
    pub(crate) flags: AtomicU8,
}

/// Bits of `Slot::class_edges` that hold the class (the other 3 hold the
/// edges).
const CLASS_BITS: u32 = 13;
// Every class index fits: pools have far fewer classes (SIZE_LIMIT is 2 GiB,
// about 4 classes a doubling).
const _: () = assert!(crate::builder::SIZE_LIMIT.ilog2() * 4 + 8 < 1 << CLASS_BITS);

/// `Slot::flags`: a backtrace of the allocation is stored in the pool.
pub(crate) const HAS_BACKTRACE: u8 = 1;
/// `Slot::flags`: the buffer was sampled for the metrics histograms; its
/// `allocated_at` is the precise `clock::now_nanos()` of the allocation.
pub(crate) const SAMPLED: u8 = 2;
/// `Slot::flags`: the last release poisoned the first
/// `min(max_len, poison_bytes)` bytes (`max_len` still the releasing
/// buffer's until the next allocation checks them).
pub(crate) const POISONED: u8 = 4;
/// `Slot::flags`: the canary span of `canary_max` holds the pattern (the
/// current buffer's canary, checked at release, while in use).
pub(crate) const CANARY: u8 = 8;
/// `Slot::flags`: the release poisons the buffer (a sampled duty).
pub(crate) const POISON_DUE: u8 = 16;
/// `Slot::flags`: the release zeroes the buffer (`Zeroing::OnRelease`).
pub(crate) const ZERO_DUE: u8 = 32;
/// `Slot::flags`, between `acquire` and the end of the allocation only:
/// capture a backtrace (a sampled duty).
pub(crate) const BACKTRACE_DUE: u8 = 64;
/// Slot state: made inaccessible and kept out of reuse for a while.
pub(crate) const QUARANTINED: u8 = 2;

// One slot's metadata is one cache line: neighbours owned by different
// threads never share one.
const _: () = assert!(std::mem::size_of::<Slot>() == 64);

// SAFETY: `data` is only an address; the bytes behind it are accessed by the
// slot's single owner (see `state`), and the other fields are immutable or
// atomic.
unsafe impl Send for Slot {}
// SAFETY: as for `Send`: shared access reads immutable fields or atomics only.
unsafe impl Sync for Slot {}

impl Slot {
    fn new(data: NonNull<u8>, class: u16, edges: u8) -> Slot {
        debug_assert!(u32::from(class) < 1 << CLASS_BITS && edges < 8);
        Slot {
            data,
            anchor: AtomicPtr::new(std::ptr::null_mut()),
            site: AtomicPtr::new(std::ptr::null_mut()),
            release_site: AtomicPtr::new(std::ptr::null_mut()),
            allocated_at: AtomicU64::new(0),
            max_len: AtomicU32::new(0),
            len: AtomicU32::new(0),
            thread: AtomicU32::new(0),
            epoch: AtomicU32::new(0),
            canary_max: AtomicU32::new(0),
            class_edges: class | (u16::from(edges) << CLASS_BITS),
            state: AtomicU8::new(FREE),
            flags: AtomicU8::new(0),
        }
    }

    #[inline]
    pub(crate) fn data(&self) -> NonNull<u8> {
        self.data
    }

    #[inline]
    pub(crate) fn class(&self) -> usize {
        usize::from(self.class_edges & ((1 << CLASS_BITS) - 1))
    }

    #[inline]
    pub(crate) fn edges(&self) -> u8 {
        (self.class_edges >> CLASS_BITS) as u8
    }

    /// Marks the slot as handed out. A plain store, not a swap: the free
    /// list already made us its only owner, and the state is for readers.
    #[inline]
    pub(crate) fn take(&self) {
        debug_assert_eq!(
            self.state.load(Ordering::Relaxed),
            FREE,
            "a slot was handed out twice"
        );
        self.state.store(IN_USE, Ordering::Relaxed);
    }

    /// Marks the slot as free again.
    #[inline]
    pub(crate) fn give_back(&self) {
        debug_assert_eq!(
            self.state.load(Ordering::Relaxed),
            IN_USE,
            "a slot was released twice"
        );
        self.state.store(FREE, Ordering::Relaxed);
    }

    /// The allocation site, if tracked.
    pub(crate) fn site(&self) -> Option<&'static Location<'static>> {
        let p = self.site.load(Ordering::Relaxed);
        // SAFETY: only `&'static Location` values are ever stored here.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// The release site, if recorded.
    pub(crate) fn release_site(&self) -> Option<&'static Location<'static>> {
        let p = self.release_site.load(Ordering::Relaxed);
        // SAFETY: only `&'static Location` values are ever stored here.
        (!p.is_null()).then(|| unsafe { &*p })
    }
}

/// One mapping of `slots.len()` slots of one class.
pub(crate) struct Slab {
    /// The slab's entry in the fault handler's table (removed first on drop).
    registration: Option<Registration>,
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
    fn guard(&self) -> usize {
        if self.guards.is_some() {
            self.page
        } else {
            0
        }
    }

    /// Distance between the starts of two neighbouring slots.
    fn stride(&self) -> usize {
        if self.packed {
            self.slot_bytes + REDZONE
        } else {
            self.slot_bytes + self.guard()
        }
    }

    /// Offset of the first slot from the slab's base.
    fn lead(&self) -> usize {
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
    /// Maps a slab of `n >= 1` slots of class `class`, and places its guards.
    pub(crate) fn map(class: usize, n: usize, layout: Layout) -> io::Result<Slab> {
        if layout.packed {
            return Self::map_packed(class, n, layout);
        }
        debug_assert!(n >= 1 && layout.slot_bytes.is_multiple_of(layout.page));
        let mapping = Mapping::new(layout.slab_bytes(n))?;
        let base = mapping.base();
        let stride = layout.stride();
        let lead = if layout.guards.is_some() {
            layout.page
        } else {
            0
        };
        let class = u16::try_from(class).expect("fewer than 2^16 classes");

        let mut edges = vec![0u8; n];
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
                            edges[g] |= CANARY_BEFORE;
                        }
                        if g > 0 {
                            edges[g - 1] |= CANARY_AFTER;
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
        let unguarded = edges.iter().filter(|&&e| e != 0).count();
        Ok(Slab {
            registration: None,
            layout,
            mapping,
            slots,
            protect_areas,
            unguarded,
        })
    }

    /// `map` for a small class: `n` slots packed between red zones, a guard
    /// page at each end.
    fn map_packed(class: usize, n: usize, layout: Layout) -> io::Result<Slab> {
        debug_assert!(n >= 1 && layout.slot_bytes.is_multiple_of(64));
        debug_assert!(layout.slot_bytes < layout.page);
        let len = layout.slab_bytes(n);
        let mapping = Mapping::new(len)?;
        let base = mapping.base();
        let (guard, stride, lead) = (layout.guard(), layout.stride(), layout.lead());
        let class = u16::try_from(class).expect("fewer than 2^16 classes");
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
                Slot::new(data, class, PACKED_EDGES)
            })
            .collect();
        Ok(Slab {
            registration: None,
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

    /// Enters the slab in the fault handler's table, so faults in its guard
    /// pages and quarantined slots name the buffer and `pool`.
    pub(crate) fn register(&mut self, pool: Arc<str>) {
        self.registration = Registration::new(SlabInfo {
            base: self.base(),
            len: self.reserved(),
            lead: self.layout.lead(),
            guard: self.layout.guard(),
            packed: self.layout.packed,
            stride: self.layout.stride(),
            slot_bytes: self.layout.slot_bytes,
            slots: self.slots.as_ptr(),
            nslots: self.slots.len(),
            pool,
        });
    }

    /// Slots served without one of their guard pages.
    pub(crate) fn unguarded(&self) -> usize {
        self.unguarded
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        // Leave the fault handler's table before the memory goes away; the
        // mapping's own drop then unmaps it, guards and all.
        self.registration = None;
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

/// Checks (and repairs) the canary on the unguarded edges of `slot`, whose
/// slots are `slot_bytes` long: the `window` bytes on each side nearest the
/// slot (`window <= EDGE_CANARY`; an overflow or underflow damages those
/// first). Returns the offset from the slot's start of the first damaged byte
/// (negative: before the slot) and how many are damaged.
///
/// # Safety
/// The slot belongs to a live slab and the caller owns it (it is being
/// released), so its unguarded edge pages are readable and writable and, apart
/// from the neighbouring slot's owner writing out of bounds (which is exactly
/// what this looks for), not accessed by anyone else.
pub(crate) unsafe fn check_edges(
    slot: &Slot,
    slot_bytes: usize,
    window: usize,
) -> Option<(isize, usize)> {
    debug_assert!(window <= EDGE_CANARY);
    let data = slot.data.as_ptr();
    let mut found: Option<(isize, usize)> = None;
    let mut note = |start: *mut u8, rel: isize| {
        // SAFETY: the edge pages (or red zones) of an unguarded side are
        // mapped, readable and writable (caller's contract);
        // `start..start + window` lies inside one of them.
        if let Some((first, n)) = unsafe { canary::check(start, window) } {
            // SAFETY: as above.
            unsafe { canary::fill(start, window) };
            let (f, total) = found.unwrap_or((rel + first as isize, 0));
            found = Some((f, total + n));
        }
    };
    if slot.edges() & CANARY_BEFORE != 0 {
        // SAFETY: the page (or red zone) before the slot is inside the slab.
        note(unsafe { data.sub(window) }, -(window as isize));
    }
    if slot.edges() & CANARY_AFTER != 0 {
        // SAFETY: the page (or red zone) after the slot is inside the slab.
        note(unsafe { data.add(slot_bytes) }, slot_bytes as isize);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(guards: Option<GuardMechanism>) -> Layout {
        Layout {
            page: crate::page_size(),
            slot_bytes: 2 * crate::page_size(),
            guards,
            packed: false,
        }
    }

    #[test]
    fn layout_arithmetic() {
        let p = crate::page_size();
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
        let p = crate::page_size();
        for guards in [None, Some(GuardMechanism::Auto)] {
            let slab = Slab::map(3, 5, layout(guards)).unwrap();
            let mut last_end = 0;
            for s in slab.slots() {
                let a = s.data().as_ptr() as usize;
                assert_eq!(a % p, 0);
                assert!(a >= last_end + if guards.is_some() { p } else { 0 });
                assert!(slab.contains(a) && slab.contains(a + 2 * p - 1));
                assert_eq!(s.class(), 3);
                last_end = a + 2 * p;
            }
            assert!(slab.contains(last_end - 1));
            assert_eq!(slab.unguarded(), 0);
        }
    }
}
