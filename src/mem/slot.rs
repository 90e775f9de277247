//! One slot's metadata ([`Slot`]), the pointer free lists hold
//! ([`SlotRef`]), and the typed state and flag sets stored in it.

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign};
use std::ptr::NonNull;
use std::sync::atomic::{
    AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed,
};

use crate::class::ClassIdx;
use crate::limits::SIZE_LIMIT;
use crate::site::SiteRef;

/// Where a slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum SlotState {
    /// On a free list, in a thread cache, or about to be pushed to one.
    Free = 0,
    /// Owned by a live buffer.
    InUse = 1,
    /// Sealed (inaccessible) and kept out of reuse for a while.
    Quarantined = 2,
}

/// A [`SlotState`] read and written with relaxed atomics (readers such as
/// leak reports and the fault handler race with the owner).
#[derive(Debug)]
pub(crate) struct AtomicSlotState(AtomicU8);

impl AtomicSlotState {
    const fn new(state: SlotState) -> Self {
        AtomicSlotState(AtomicU8::new(state as u8))
    }

    /// The state now.
    #[inline(always)]
    pub(crate) fn load(&self) -> SlotState {
        match self.0.load(Relaxed) {
            0 => SlotState::Free,
            1 => SlotState::InUse,
            _ => SlotState::Quarantined,
        }
    }

    /// Sets the state.
    #[inline(always)]
    pub(crate) fn store(&self, state: SlotState) {
        self.0.store(state as u8, Relaxed);
    }
}

/// Defines a bit set over `u8` with named members.
macro_rules! bit_set {
    ($(#[$doc:meta])* $name:ident { $($(#[$mdoc:meta])* $member:ident = $bit:expr;)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Default)]
        pub(crate) struct $name(u8);

        // Not every set asks every question of itself.
        #[allow(dead_code)]
        impl $name {
            /// No member.
            pub(crate) const EMPTY: $name = $name(0);
            $($(#[$mdoc])* pub(crate) const $member: $name = $name($bit);)*

            /// The bits, for a test of several sets at once.
            #[inline(always)]
            pub(crate) const fn bits(self) -> u8 {
                self.0
            }

            /// Whether no member is in the set.
            #[inline(always)]
            pub(crate) const fn is_empty(self) -> bool {
                self.0 == 0
            }

            /// Whether any member of `other` is in the set.
            #[inline(always)]
            pub(crate) const fn intersects(self, other: $name) -> bool {
                self.0 & other.0 != 0
            }

            /// The set without the members of `other`.
            #[inline(always)]
            pub(crate) const fn without(self, other: $name) -> $name {
                $name(self.0 & !other.0)
            }

            /// Whether every member of `other` is in the set.
            #[inline(always)]
            pub(crate) const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }
        }

        impl BitOr for $name {
            type Output = $name;
            #[inline(always)]
            fn bitor(self, other: $name) -> $name {
                $name(self.0 | other.0)
            }
        }

        impl BitOrAssign for $name {
            #[inline(always)]
            fn bitor_assign(&mut self, other: $name) {
                self.0 |= other.0;
            }
        }

        impl BitAnd for $name {
            type Output = $name;
            #[inline(always)]
            fn bitand(self, other: $name) -> $name {
                $name(self.0 & other.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut set = f.debug_set();
                $(if self.contains($name::$member) {
                    set.entry(&stringify!($member));
                })*
                set.finish()
            }
        }
    };
}

bit_set! {
    /// What a slot's next release and next allocation must do beyond the
    /// plain path: the current buffer's *duties* (work sampled or configured
    /// for it: `HAS_BACKTRACE`, `SAMPLED`, `POISON_DUE`, `ZERO_DUE`, set at
    /// allocation, done and cleared at release; `BACKTRACE_DUE` only within
    /// an allocation) and the slot's lasting records (`CANARY`, `POISONED`).
    SlotFlags {
        /// A backtrace of the allocation is stored in the pool.
        HAS_BACKTRACE = 1;
        /// Sampled for the metrics histograms; `allocated_at` is the precise
        /// `clock::now_nanos()` of the allocation.
        SAMPLED = 2;
        /// The last release poisoned the first `min(max_len, poison_bytes)`
        /// bytes (`max_len` still the releasing buffer's until the next
        /// allocation checks them).
        POISONED = 4;
        /// The canary span of `canary_max` holds the pattern (the current
        /// buffer's canary, checked at release, while in use).
        CANARY = 8;
        /// The release poisons the buffer (a sampled duty).
        POISON_DUE = 16;
        /// The release zeroes the buffer (`Zeroing::OnRelease`).
        ZERO_DUE = 32;
        /// Capture a backtrace (a sampled duty), between the cache's
        /// acquire and the end of the allocation only.
        BACKTRACE_DUE = 64;
        /// The buffer is charged to a quota (whose account the slot holds
        /// in `release_site` meanwhile), which its release credits.
        QUOTA = 128;
    }
}

bit_set! {
    /// Which sides of a slot have canary instead of a guard page. Fixed when
    /// the slab is mapped.
    Edges {
        /// The page before the slot is not a guard (canary instead).
        CANARY_BEFORE = 1;
        /// The page after the slot is not a guard (canary instead).
        CANARY_AFTER = 2;
        /// A small slot, packed between red zones (always with both canary
        /// bits: the red zones are its edge canaries).
        PACKED = 4;
    }
}

impl Edges {
    /// The edges of every packed slot: red zones of canary on both sides.
    pub(crate) const PACKED_SLOT: Edges = Edges(1 | 2 | 4);
}

/// [`SlotFlags`] in a slot, written by the slot's owner only (or the pool,
/// for a free slot), read by anyone.
#[derive(Debug)]
pub(crate) struct AtomicSlotFlags(AtomicU8);

impl AtomicSlotFlags {
    /// The flags now.
    #[inline(always)]
    pub(crate) fn load(&self) -> SlotFlags {
        SlotFlags(self.0.load(Relaxed))
    }

    /// Sets the flags.
    #[inline(always)]
    pub(crate) fn store(&self, flags: SlotFlags) {
        self.0.store(flags.0, Relaxed);
    }
}

/// Bits of `Slot::class_edges` that hold the class (the other 3 hold the
/// edges).
const CLASS_BITS: u32 = 13;
// Every class index fits: pools have far fewer classes (about 4 classes a
// doubling up to SIZE_LIMIT, plus the small ones).
const _: () = assert!(SIZE_LIMIT.ilog2() * 4 + 16 < 1 << CLASS_BITS);

/// The bit of a [`Slot::release_site`] word that marks a quota's account
/// (`pool::quotas`) rather than a site. A `SiteRef` word never has it: both
/// of its pointees are at least 4-aligned (its tag is bit 0).
pub(crate) const ACCOUNT_TAG: usize = 2;
const _: () = assert!(
    std::mem::align_of::<std::panic::Location<'static>>() >= 4
        && std::mem::align_of::<crate::site::Site>() >= 4
);

/// Metadata of one slot: one cache line, in its slab's `slots` array, at a
/// stable address for as long as the slab is mapped.
///
/// Ownership: while the slot is `Free`, only the pool touches it; while
/// `InUse`, only its buffer writes the tracking fields (at allocation and
/// release). Anyone may read every field at any time (leak reports, the
/// fault handler), so all mutable fields are atomics accessed `Relaxed`: a
/// reader racing with a hand-over may see a mix of two owners' values, which
/// reports tolerate, and never undefined behaviour.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Slot {
    /// First byte of the slot: its class's slot bytes long, inside the
    /// slab's mapping; never moves.
    data: NonNull<u8>,
    /// The anchor (`free::anchor`) the current buffer was issued through;
    /// written at allocation, read at release.
    pub(crate) anchor: AtomicPtr<()>,
    /// Allocation site of the current (or last) buffer, a `SiteRef` word;
    /// 0 when untracked.
    pub(crate) site: AtomicUsize,
    /// Release site of the last buffer (a `SiteRef` word) if it was
    /// released with `PageBuffer::release` or from C and poisoned or
    /// quarantined; 0 otherwise. While a buffer charged to a quota lives
    /// (`SlotFlags::QUOTA`), its account instead, tagged [`ACCOUNT_TAG`]
    /// (`pool::quotas`).
    pub(crate) release_site: AtomicUsize,
    /// Clock (`clock::coarse_nanos`) at allocation; 0 when untracked.
    pub(crate) allocated_at: AtomicU64,
    /// `max_len` of the current (or last) buffer; 0 (untouched, see
    /// `slab::untouched`) until the first, and after a trim discards the
    /// free slot's pages.
    pub(crate) max_len: AtomicU32,
    /// `len` of the current buffer (kept here so a `PageBuffer` is two
    /// words); invariant `len <= max_len`.
    pub(crate) len: AtomicU32,
    /// `threads::id()` of the allocating thread while in use, of the
    /// releasing one once poisoned or quarantined; 0 when untracked.
    pub(crate) thread: AtomicU32,
    /// The pool's leak-check epoch at allocation.
    pub(crate) epoch: AtomicU32,
    /// The canary record: the `max_len` whose canary span holds the
    /// pattern, valid while `flags` has `CANARY`.
    pub(crate) canary_max: AtomicU32,
    /// The class (low `CLASS_BITS`) and the [`Edges`] (high 3 bits);
    /// immutable.
    class_edges: u16,
    /// Where the slot is in its life.
    pub(crate) state: AtomicSlotState,
    /// What the slot's next release and allocation must do (see
    /// [`SlotFlags`]); empty for most buffers, so each end of a buffer's
    /// life tests one byte for every rare duty.
    pub(crate) flags: AtomicSlotFlags,
}

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
    /// A free slot at `data` of class `class`.
    pub(crate) fn new(data: NonNull<u8>, class: ClassIdx, edges: Edges) -> Slot {
        // A class that does not fit its bits would be decoded as another.
        assert!(class.get() < 1 << CLASS_BITS, "too many size classes");
        Slot {
            data,
            anchor: AtomicPtr::new(std::ptr::null_mut()),
            site: AtomicUsize::new(0),
            release_site: AtomicUsize::new(0),
            allocated_at: AtomicU64::new(0),
            max_len: AtomicU32::new(0),
            len: AtomicU32::new(0),
            thread: AtomicU32::new(0),
            epoch: AtomicU32::new(0),
            canary_max: AtomicU32::new(0),
            class_edges: class.get() as u16 | (u16::from(edges.bits()) << CLASS_BITS),
            state: AtomicSlotState::new(SlotState::Free),
            flags: AtomicSlotFlags(AtomicU8::new(0)),
        }
    }

    /// The slot's first byte.
    #[inline(always)]
    pub(crate) fn data(&self) -> NonNull<u8> {
        self.data
    }

    /// The slot's size class.
    #[inline(always)]
    pub(crate) fn class(&self) -> ClassIdx {
        // SAFETY: `class_edges` holds, below `CLASS_BITS`, the `ClassIdx`
        // given to `new` (checked to fit) by the slab of this pool's table
        // that made the slot, and never changes.
        unsafe { ClassIdx::from_stored(usize::from(self.class_edges & ((1 << CLASS_BITS) - 1))) }
    }

    /// Which sides have canary instead of a guard page.
    #[inline(always)]
    pub(crate) fn edges(&self) -> Edges {
        Edges((self.class_edges >> CLASS_BITS) as u8)
    }

    /// Whether the slot's release has anything to do beyond the plain path:
    /// flags, or edges to check.
    #[inline(always)]
    pub(crate) fn release_has_work(&self) -> bool {
        self.flags.load().bits() | self.edges().bits() != 0
    }

    /// `flags` and `edges` in one number, for a test of both at once: the
    /// flags in the low byte, the edges where `class_edges` holds them (so
    /// a slot's key is its flags or'ed with `class_edges` less the class).
    #[inline(always)]
    pub(crate) const fn release_key(flags: SlotFlags, edges: Edges) -> u32 {
        flags.bits() as u32 | (edges.bits() as u32) << CLASS_BITS
    }

    /// This slot's [`Slot::release_key`] for `flags`.
    #[inline(always)]
    pub(crate) fn key_with(&self, flags: SlotFlags) -> u32 {
        flags.bits() as u32 | u32::from(self.class_edges & !((1 << CLASS_BITS) - 1))
    }

    /// Marks the slot as handed out. A plain store, not a swap: the free
    /// list already made us its only owner, and the state is for readers.
    #[inline(always)]
    pub(crate) fn mark_in_use(&self) {
        debug_assert_eq!(
            self.state.load(),
            SlotState::Free,
            "a slot was handed out twice"
        );
        self.state.store(SlotState::InUse);
    }

    /// Marks the slot as free again.
    #[inline(always)]
    pub(crate) fn mark_free(&self) {
        debug_assert_eq!(
            self.state.load(),
            SlotState::InUse,
            "a slot was released twice"
        );
        self.state.store(SlotState::Free);
    }

    /// Whether a buffer owns the slot or it is quarantined (what the fault
    /// handler calls live).
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        self.state.load() != SlotState::Free
    }

    /// Whether the current buffer was allocated at or after leak-check
    /// `epoch` (epochs wrap: compared as a signed distance).
    pub(crate) fn allocated_since(&self, epoch: u32) -> bool {
        (self.epoch.load(Relaxed).wrapping_sub(epoch) as i32) >= 0
    }

    /// The allocation site (`SiteRef::NONE` when untracked).
    pub(crate) fn site(&self) -> SiteRef {
        // SAFETY: only 0 and `SiteRef::raw` words are ever stored here.
        unsafe { SiteRef::from_raw(self.site.load(Relaxed)) }
    }

    /// The release site (`SiteRef::NONE` when not recorded, and while the
    /// word holds a quota's account).
    pub(crate) fn release_site(&self) -> SiteRef {
        let raw = self.release_site.load(Relaxed);
        if raw & ACCOUNT_TAG != 0 {
            return SiteRef::NONE;
        }
        // SAFETY: the word is not an account (checked above), so it is 0 or
        // a `SiteRef::raw` word, the only other values ever stored here.
        unsafe { SiteRef::from_raw(raw) }
    }
}

/// A pointer to a slot's metadata, as free lists and buffers hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotRef(NonNull<Slot>);

// SAFETY: a `SlotRef` is an address of a `Slot`, which is `Sync`; whoever
// dereferences it promises the slab is mapped (see `SlotRef::get`).
unsafe impl Send for SlotRef {}

impl SlotRef {
    /// A reference to `slot`, which lives in a mapped slab's `slots`.
    #[inline(always)]
    pub(crate) fn new(slot: &Slot) -> SlotRef {
        SlotRef(NonNull::from(slot))
    }

    /// The slot's metadata.
    ///
    /// # Safety
    /// The slab holding the slot is still mapped (true for every `SlotRef`
    /// on a free list of a live pool, and for the slot of every live buffer).
    #[inline(always)]
    pub(crate) unsafe fn get<'a>(self) -> &'a Slot {
        // SAFETY: the caller guarantees the slab, and so its `slots` array,
        // is alive.
        unsafe { self.0.as_ref() }
    }

    /// The slot's first byte.
    ///
    /// # Safety
    /// As for [`SlotRef::get`].
    #[inline]
    pub(crate) unsafe fn addr(self) -> usize {
        // SAFETY: forwarded to the caller.
        unsafe { self.get() }.data().as_ptr() as usize
    }
}

#[cfg(test)]
impl Slot {
    /// Metadata of the first class of a 4 KiB-page table, pointing nowhere:
    /// for tests that never touch a slot's bytes.
    pub(crate) fn detached() -> Slot {
        let class = crate::class::SizeClasses::new(4096, 1 << 16)
            .all()
            .next()
            .expect("a class");
        Slot::new(NonNull::dangling(), class, Edges::EMPTY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_flags_are_distinct_types_with_distinct_bits() {
        let all = [
            SlotFlags::HAS_BACKTRACE,
            SlotFlags::SAMPLED,
            SlotFlags::POISONED,
            SlotFlags::CANARY,
            SlotFlags::POISON_DUE,
            SlotFlags::ZERO_DUE,
            SlotFlags::BACKTRACE_DUE,
            SlotFlags::QUOTA,
        ];
        let mut seen = SlotFlags::EMPTY;
        for f in all {
            assert_eq!(f.bits().count_ones(), 1);
            assert!(!seen.intersects(f), "{f:?} shares a bit");
            seen |= f;
        }
        let s = AtomicSlotState::new(SlotState::Free);
        for st in [SlotState::InUse, SlotState::Quarantined, SlotState::Free] {
            s.store(st);
            assert_eq!(s.load(), st);
        }
        assert_eq!(
            format!("{:?}", SlotFlags::CANARY | SlotFlags::SAMPLED),
            "{\"SAMPLED\", \"CANARY\"}"
        );
        assert!(Edges::PACKED_SLOT.contains(Edges::CANARY_BEFORE | Edges::CANARY_AFTER));
        assert_eq!(
            seen.bits(),
            u8::MAX,
            "every bit is taken: a new flag needs a wider set"
        );
        let both = SlotFlags::QUOTA | SlotFlags::CANARY;
        assert_eq!(both.without(SlotFlags::QUOTA), SlotFlags::CANARY);
    }

    #[test]
    fn a_release_site_word_holding_an_account_reads_as_no_site() {
        let s = Slot::detached();
        let site = SiteRef::rust(std::panic::Location::caller());
        assert_eq!(
            site.raw() & ACCOUNT_TAG,
            0,
            "a site word has no account tag"
        );
        s.release_site.store(site.raw(), Relaxed);
        assert_eq!(s.release_site(), site);
        // What `pool::quotas::charge` stores: an account's address, tagged.
        let account = std::sync::Arc::new(0u64);
        s.release_site.store(
            std::sync::Arc::as_ptr(&account).addr() | ACCOUNT_TAG,
            Relaxed,
        );
        assert_eq!(s.release_site(), SiteRef::NONE);
    }
}
