//! The fault handler's slab table: a fixed array of atomic pointers that a
//! signal handler can read without a lock, kept by the slab events.

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::mem::slabs::{SlabDesc, SlabEvents};
use crate::mem::slot::Slot;

/// Registered slabs at most; more are served, but their faults are reported
/// without naming the buffer.
const CAPACITY: usize = 1 << 16;

/// What the handler needs to know of one slab.
#[derive(Debug)]
pub(super) struct SlabInfo {
    pub(super) base: usize,
    pub(super) len: usize,
    /// Bytes before the first slot (a guard page, plus a red zone when
    /// `packed`).
    pub(super) lead: usize,
    /// Bytes of one guard page (0 without guards).
    pub(super) guard: usize,
    /// Small slots packed between red zones, guard pages only at the ends.
    pub(super) packed: bool,
    pub(super) stride: usize,
    pub(super) slot_bytes: usize,
    /// The slab's slot metadata; valid while the entry is in the table.
    slots: *const Slot,
    nslots: usize,
    pub(super) pool: Arc<str>,
}

impl SlabInfo {
    /// Slot `i`'s metadata, if the slab has one.
    pub(super) fn slot(&self, i: usize) -> Option<&Slot> {
        // SAFETY: `slots` points to `nslots` `Slot`s that stay at their
        // address until the slab's `unmapped` event removes this entry
        // (`SlabDesc::slots`).
        (i < self.nslots).then(|| unsafe { &*self.slots.add(i) })
    }

    /// Number of slots.
    pub(super) fn slots(&self) -> usize {
        self.nslots
    }
}

static REGISTRY: [AtomicPtr<SlabInfo>; CAPACITY] =
    [const { AtomicPtr::new(ptr::null_mut()) }; CAPACITY];
/// `BASES[i]` is the base address of the slab `REGISTRY[i]` describes, or 0:
/// set after the entry is claimed and cleared before it is freed, both by
/// the slab's pool, so `unmapped` finds its entry without reading another
/// pool's description, which that pool may be freeing.
static BASES: [AtomicUsize; CAPACITY] = [const { AtomicUsize::new(0) }; CAPACITY];
/// One past the highest registry index ever used.
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);

/// The entries ever used: the part of the table lookups scan.
fn used() -> &'static [AtomicPtr<SlabInfo>] {
    &REGISTRY[..HIGH_WATER.load(Ordering::Acquire).min(CAPACITY)]
}

/// The subscriber that keeps the table: every pool's slabs enter it when
/// mapped and leave it before they are unmapped.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FaultTable;

impl SlabEvents for FaultTable {
    fn mapped(&self, slab: &SlabDesc<'_>) {
        let info = Box::into_raw(Box::new(SlabInfo {
            base: slab.base,
            len: slab.len,
            lead: slab.layout.lead(),
            guard: slab.layout.guard(),
            packed: slab.layout.packed,
            stride: slab.layout.stride(),
            slot_bytes: slab.layout.slot_bytes,
            slots: slab.slots.as_ptr(),
            nslots: slab.slots.len(),
            pool: Arc::clone(slab.pool),
        }));
        for (index, entry) in REGISTRY.iter().enumerate() {
            if entry
                .compare_exchange(ptr::null_mut(), info, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                BASES[index].store(slab.base, Ordering::Release);
                HIGH_WATER.fetch_max(index + 1, Ordering::AcqRel);
                return;
            }
        }
        // The table is full: this slab's faults go unnamed.
        // SAFETY: `info` came from `Box::into_raw` above and was never shared.
        drop(unsafe { Box::from_raw(info) });
    }

    fn unmapped(&self, slab: &SlabDesc<'_>) {
        let Some(index) = BASES[..used().len()]
            .iter()
            .position(|base| base.load(Ordering::Acquire) == slab.base)
        else {
            return; // never registered: the table was full
        };
        // Only this slab's pool writes `BASES[index]` while the slab is
        // mapped (mapped slabs have distinct bases), so the entry is ours.
        BASES[index].store(0, Ordering::Relaxed);
        let p = REGISTRY[index].swap(ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: `p` came from `Box::into_raw` in `mapped` and is ours
            // alone now that the table no longer points to it (a signal
            // handler already reading it races with the slab being
            // unmapped: the limit `install_fault_handler` states).
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// The slab registered at `addr`, if any.
///
/// What it guarantees: the `SlabInfo` it returns was in the table when it
/// was read, so it described a mapped slab then. What it does not: that the
/// slab stays mapped, or the description alive, while the caller reads it;
/// a `trim` or pool shutdown on another thread may remove and free it at
/// any moment. Only the fault handler calls it, on a thread that is about
/// to die of its fault.
pub(super) fn find(addr: usize) -> Option<&'static SlabInfo> {
    used().iter().find_map(|entry| {
        let p = entry.load(Ordering::Acquire);
        // SAFETY: a non-null entry pointed to a live `SlabInfo` when loaded
        // (entries are cleared before their description is freed); see the
        // function's docs for the race this does not exclude.
        let info = unsafe { p.as_ref() }?;
        (addr.wrapping_sub(info.base) < info.len).then_some(info)
    })
}
