//! The debug checks of a slot's bytes at allocation and release: canary,
//! poison, zeroing, edge canaries and red zones. They see one slot's
//! metadata and bytes (and the class table, for its size), count what they
//! find and raise a [`Corruption`] report; they never see the pool.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::report::Corruption;
use crate::class::SizeClasses;
use crate::config::{CorruptionAction, DebugConfig, Zeroing};
use crate::limits::EDGE_CANARY;
use crate::mem::slot::{Edges, Slot, SlotFlags};
use crate::mem::{canary, poison};
use crate::site::SiteRef;
use crate::stats::{CorruptionCounters, CorruptionKind};
use crate::threads;

/// The head window of a standard (not full) canary check ends this many
/// bytes past the start of the aligned word that holds `max_len`'s offset:
/// 9 to 16 bytes after `max_len` (the tail window is the span's last 8).
const CANARY_WINDOW: usize = 16;

/// Bytes of red zone on each side of a packed slot that a release compares
/// (all of them with the full canary): `canary::diff16`'s two words.
const REDZONE_WINDOW: usize = 16;

/// One pool's checks: its resolved debug settings, and what they found.
#[derive(Debug)]
pub(crate) struct Checks {
    /// Bytes in a page (a power of two) less one.
    page_mask: usize,
    /// The `Slot::release_key` of a slot the release's quick test may pass
    /// with its page canary: `CANARY`, no edges (`u32::MAX`, no key, with
    /// the full canary).
    quick_page_key: u32,
    /// The same for a packed slot: `CANARY`, `Edges::PACKED_SLOT`.
    quick_packed_key: u32,
    /// The flags (as a `u16`) of a slot an allocation of its canary's size
    /// finds ready, with nothing to do: `CANARY` (`u16::MAX`, no flags,
    /// when buffers are zeroed).
    ready_flags: u16,
    /// A buffer of `max_len` bytes has a canary when `max_len & canary_mask
    /// != 0` (0: no canary; `page - 1`: the standard canary, for buffers
    /// that end inside a page; `usize::MAX`: the full canary, for all).
    canary_mask: usize,
    /// Allocations with `max_len & alloc_mask != 0` run `on_allocate`
    /// whatever the slot's flags (`canary_mask`, or all when zeroing).
    alloc_mask: usize,
    /// The canary covers the whole slot past `max_len`.
    full_canary: bool,
    /// When buffers are zeroed.
    zero: Zeroing,
    /// Poison covers at most this many bytes from a buffer's start.
    poison_bytes: usize,
    /// What a corruption does.
    on_corruption: CorruptionAction,
    /// The pool's name, for reports.
    pool: Arc<str>,
    /// What the checks found, by kind.
    corruptions: CorruptionCounters,
}

impl Checks {
    /// The checks `debug` asks for, in pool `pool` with pages of `page`
    /// bytes.
    pub(crate) fn new(debug: &DebugConfig, page: usize, pool: Arc<str>) -> Checks {
        let canary_mask = match (debug.canary(), debug.full_canary) {
            (false, _) => 0,
            (true, false) => page - 1,
            (true, true) => usize::MAX,
        };
        let (quick_page_key, quick_packed_key) = if debug.full_canary {
            (u32::MAX, u32::MAX)
        } else {
            (
                Slot::release_key(SlotFlags::CANARY, Edges::EMPTY),
                Slot::release_key(SlotFlags::CANARY, Edges::PACKED_SLOT),
            )
        };
        Checks {
            page_mask: page - 1,
            quick_page_key,
            quick_packed_key,
            ready_flags: if debug.zero == Zeroing::Off {
                u16::from(SlotFlags::CANARY.bits())
            } else {
                u16::MAX
            },
            canary_mask,
            alloc_mask: if debug.zero == Zeroing::Off {
                canary_mask
            } else {
                usize::MAX
            },
            full_canary: debug.full_canary,
            zero: debug.zero,
            poison_bytes: debug.poison_bytes,
            on_corruption: debug.on_corruption,
            pool,
            corruptions: CorruptionCounters::default(),
        }
    }

    /// Whether an allocation of `max_len` bytes into a slot with `flags`
    /// needs [`Checks::on_allocate`]: a size that needs a canary or zeroing
    /// (unless the slot serves the same size again with its standard canary
    /// in place and nothing else to do), or any flag.
    #[inline(always)]
    pub(crate) fn allocation_needs_work(&self, s: &Slot, max_len: usize, flags: SlotFlags) -> bool {
        (max_len & self.alloc_mask != 0 || !flags.is_empty())
            && !(u16::from(flags.bits()) == self.ready_flags
                && s.canary_max.load(Relaxed) as usize == max_len)
    }

    /// Corruptions found so far, by [`CorruptionKind::index`].
    pub(crate) fn corruption_counts(&self) -> [u64; 3] {
        self.corruptions.snapshot()
    }

    /// The canary's span for a buffer of `max_len` bytes in slot `s`: to
    /// the end of `max_len`'s page, or of the slot with the full canary or
    /// for a packed (small) slot. A page slot is whole pages, at least
    /// `max_len`: the page end never passes it, so the common case needs no
    /// class lookup.
    #[inline(always)]
    fn canary_span(&self, s: &Slot, max_len: usize, classes: &SizeClasses) -> (usize, usize) {
        let end = if self.full_canary || s.edges().contains(Edges::PACKED) {
            // The whole slot: its end is the red zone (packed slots are
            // smaller than a page).
            classes.slot_bytes(s.class())
        } else {
            // Pages are powers of two: round up with a mask, not a division.
            (max_len + self.page_mask) & !self.page_mask
        };
        debug_assert!(end <= classes.slot_bytes(s.class()));
        (max_len, end)
    }

    /// Checks and prepares a slot being handed out for `max_len` bytes:
    /// checks the poison of the last release, zeroes, writes the canary (or
    /// finds it still there). Returns the flags the release then needs:
    /// `CANARY` (check it), `ZERO_DUE`.
    ///
    /// # Safety
    /// The caller owns the slot (just taken off a free list), whose
    /// `max_len` and tracking fields are still the last buffer's, and whose
    /// flags are `flags`; `classes` is the table of the slot's pool.
    #[inline(always)]
    pub(crate) unsafe fn on_allocate(
        &self,
        s: &Slot,
        max_len: usize,
        flags: SlotFlags,
        classes: &SizeClasses,
    ) -> SlotFlags {
        if flags.contains(SlotFlags::POISONED) {
            // SAFETY: the slot is ours (caller's contract).
            unsafe { self.check_poison(s, classes) };
        }
        if self.zero == Zeroing::OnAllocate {
            // SAFETY: `max_len <= slot_len`, and the slot is ours.
            unsafe { std::ptr::write_bytes(s.data().as_ptr(), 0, max_len) };
        }
        let mut next = if self.zero == Zeroing::OnRelease {
            SlotFlags::ZERO_DUE
        } else {
            SlotFlags::EMPTY
        };
        // A page slot with no slack after `max_len` in its page has nothing
        // to guard at the standard level: the record is dropped (the buffer
        // may write its whole page).
        if max_len & self.canary_mask != 0 {
            let known = if flags.contains(SlotFlags::CANARY) {
                s.canary_max.load(Relaxed) as usize
            } else {
                0
            };
            // In steady state the slot is reused for the same size: its
            // span already holds the pattern, nothing to write.
            // SAFETY: the slot is ours.
            if known == max_len || unsafe { self.prepare_canary(s, max_len, known, classes) } {
                next |= SlotFlags::CANARY;
            }
        }
        next
    }

    /// Writes the canary of a buffer of `max_len` bytes in slot `s`, whose
    /// span of `known` (0: none) holds the pattern, and records `max_len`.
    /// Returns whether the buffer has a canary (a span after `max_len`).
    ///
    /// # Safety
    /// The caller owns the slot; `classes` is its pool's table.
    #[cold]
    #[inline(never)]
    unsafe fn prepare_canary(
        &self,
        s: &Slot,
        max_len: usize,
        known: usize,
        classes: &SizeClasses,
    ) -> bool {
        let (from, to) = self.canary_span(s, max_len, classes);
        if from >= to {
            return false;
        }
        let (kf, kt) = if known == 0 {
            (0, 0)
        } else {
            self.canary_span(s, known, classes)
        };
        if !(kf <= from && to <= kt) {
            // The known span covers the tail: write only the head.
            let end = if from < kf && kf <= to && to <= kt {
                kf
            } else {
                to
            };
            // SAFETY: `from < end <= to <= slot_len`: inside our slot.
            unsafe { canary::fill(s.data().as_ptr().add(from), end - from) };
        }
        // `max_len` fits u32: slots are at most SIZE_LIMIT bytes.
        s.canary_max.store(max_len as u32, Relaxed);
        true
    }

    /// The checks and byte duties of a release whose slot has `flags` and
    /// `edges`: edge canaries or red zones, the slack canary, zeroing,
    /// poisoning; leaves the slot's lasting flags (`CANARY`, `POISONED`).
    /// The caller does the rest of what `flags` ask (recording the release
    /// site when poisoned, the sampled duties).
    ///
    /// # Safety
    /// The caller owns the slot (its buffer is being released) and its slab
    /// is mapped; `flags` and `edges` are the slot's; `classes` is its
    /// pool's table.
    #[inline(never)]
    pub(crate) unsafe fn on_release(
        &self,
        s: &Slot,
        flags: SlotFlags,
        edges: Edges,
        classes: &SizeClasses,
    ) {
        // The whole edge canaries of an unguarded page slot; the red zones
        // of a packed one, all of them with the full canary.
        let packed_intact = || {
            // SAFETY: a packed slot the caller owns, between its red zones.
            unsafe { self.red_zones_intact(s, classes) }
        };
        if !edges.is_empty()
            && (!edges.contains(Edges::PACKED) || self.full_canary || !packed_intact())
        {
            // SAFETY: the caller owns the slot and its slab is mapped.
            unsafe { self.check_edges(s, classes) };
        }
        if flags.is_empty() {
            return;
        }
        let max_len = s.max_len.load(Relaxed) as usize;
        let data = s.data().as_ptr();
        // SAFETY: the caller owns the slot.
        if flags.contains(SlotFlags::CANARY) && !unsafe { self.slack_intact(s, max_len, classes) } {
            let (from, to) = self.canary_span(s, max_len, classes);
            // SAFETY: `from..to` lies inside our slot.
            unsafe { self.canary_damaged(s, from, to, classes) };
        }
        if flags.contains(SlotFlags::ZERO_DUE) {
            // SAFETY: `max_len <= slot_len`, and the slot is ours.
            unsafe { std::ptr::write_bytes(data, 0, max_len) };
        }
        let mut lasting = flags & SlotFlags::CANARY;
        if flags.contains(SlotFlags::POISON_DUE) {
            // SAFETY: as above; the next allocation checks the same span.
            unsafe { poison::fill(data, max_len.min(self.poison_bytes)) };
            lasting |= SlotFlags::POISONED;
        }
        s.flags.store(lasting);
    }

    /// Whether a release of page slot `s` (no edges), whose flags are
    /// `flags`, may take the quick test
    /// ([`Checks::release_page_checks_pass`]): its only duty is its
    /// standard canary. `false` for anything else (and for a packed slot,
    /// whose test is [`Checks::release_may_pass_packed`]): the caller then
    /// takes the full release path, whose `on_release` checks and reports.
    #[inline(always)]
    pub(crate) fn release_may_pass_page(&self, s: &Slot, flags: SlotFlags) -> bool {
        s.key_with(flags) == self.quick_page_key
    }

    /// The same for a packed slot: its only duty is its standard canary and
    /// red zones; its quick test is [`Checks::release_packed_checks_pass`].
    #[inline(always)]
    pub(crate) fn release_may_pass_packed(&self, s: &Slot, flags: SlotFlags) -> bool {
        s.key_with(flags) == self.quick_packed_key
    }

    /// The release's quick test of a page slot whose only duty is its
    /// standard canary: whether that is intact, so the plain path may go
    /// on. `false`: the caller takes the full release path, whose
    /// `on_release` checks again and reports.
    ///
    /// # Safety
    /// The caller owns the slot, whose release `release_may_pass_page`.
    #[inline(always)]
    pub(crate) unsafe fn release_page_checks_pass(&self, s: &Slot) -> bool {
        debug_assert!(self.release_may_pass_page(s, s.flags.load()));
        let max_len = s.max_len.load(Relaxed) as usize;
        let data = s.data().as_ptr();
        debug_assert!(s.canary_max.load(Relaxed) as usize == max_len);
        debug_assert!(s.edges().is_empty());
        // A page slot: the span ends with `max_len`'s last page (see
        // `canary_span`), no table to read; `max_len` is not a whole number
        // of pages (it has a canary).
        debug_assert!(max_len & self.page_mask != 0);
        let to = (max_len | self.page_mask) + 1;
        // SAFETY: the caller owns the slot, flagged `CANARY` for its
        // `max_len`; `max_len..to` lies inside it.
        unsafe { Self::span_diff(false, data, max_len, to) == 0 }
    }

    /// The release's quick test of a packed slot whose only duty is its
    /// standard canary and red zones: whether all of that is intact, so
    /// the plain path may go on. `false`: as for
    /// [`Checks::release_page_checks_pass`].
    ///
    /// # Safety
    /// The caller owns the slot, whose release `release_may_pass_packed`;
    /// `classes` is its pool's table.
    #[inline(always)]
    pub(crate) unsafe fn release_packed_checks_pass(
        &self,
        s: &Slot,
        classes: &SizeClasses,
    ) -> bool {
        debug_assert!(self.release_may_pass_packed(s, s.flags.load()));
        let max_len = s.max_len.load(Relaxed) as usize;
        let data = s.data().as_ptr();
        debug_assert!(s.canary_max.load(Relaxed) as usize == max_len);
        debug_assert!(s.edges().contains(Edges::PACKED));
        // The span ends with the slot, whose size is read once for it and
        // for the red zone after it.
        // SAFETY: the slot's class is one of its pool's table (caller's
        // contract: `classes` is that table).
        let len = unsafe { classes.slot_bytes_unchecked(s.class()) };
        debug_assert!(max_len < len);
        // The windows of `canary_windows` and the 16 bytes of red zone each
        // side, as three runs of words: the red zone before; the span's
        // last word and the red zone after it; the head. When the span is
        // short (`canary_windows` compares all of it), the head and the
        // second run still cover it: the head ends at most 16 bytes into
        // the red zone after the slot, and the run starts at most 16 bytes
        // past the head's end. So the same bytes are compared either way,
        // with no branch.
        // SAFETY: the caller owns the slot, flagged `CANARY` for its
        // `max_len < len`; the slot is 64-byte aligned between 64-byte red
        // zones of its mapped slab, so the head's two words (from
        // `max_len`'s aligned word, at most `len - 8`, up to at most
        // `len + 8`), `len - 8..len + 16`, and `-16..0` are all readable:
        // in the slot or its red zones.
        let diff = unsafe {
            canary::diff16(data.sub(16))
                | canary::diff_words::<3>(data.add(len - 8))
                | canary::head_diff(data.add(max_len))
        };
        diff == 0
    }

    /// Whether the 16 bytes of red zone each side of packed slot `s` (the
    /// ones nearest it) hold the canary: four word compares.
    ///
    /// # Safety
    /// `s` is a packed slot the caller owns: it is 64-byte aligned between
    /// 64-byte red zones of its mapped slab.
    #[inline(always)]
    unsafe fn red_zones_intact(&self, s: &Slot, classes: &SizeClasses) -> bool {
        let data = s.data().as_ptr();
        let len = classes.slot_bytes(s.class());
        // SAFETY: forwarded from the caller: both 16-byte windows lie in the
        // red zones around the packed slot at `data`, of its class's size.
        unsafe { canary::diff16(data.sub(16)) | canary::diff16(data.add(len)) == 0 }
    }

    /// Whether the canary of the current buffer (`max_len` bytes, flagged
    /// `CANARY`) in slot `s` is intact, over the windows a release compares.
    ///
    /// # Safety
    /// The caller owns the slot, whose flags have `CANARY` for `max_len`.
    #[inline(always)]
    unsafe fn slack_intact(&self, s: &Slot, max_len: usize, classes: &SizeClasses) -> bool {
        let (from, to) = self.canary_span(s, max_len, classes);
        debug_assert!(s.canary_max.load(Relaxed) as usize == max_len);
        // SAFETY: `from..to` is inside our slot (`canary_span`).
        unsafe { Self::span_diff(self.full_canary, s.data().as_ptr(), from, to) == 0 }
    }

    /// How the windows a release compares of the canary span `from..to` of
    /// the slot at `data` (all of it with the full canary: `full`) differ
    /// from the canary (0: they hold it).
    ///
    /// # Safety
    /// `from < to`, and `data + from..data + to` lies inside a slot the
    /// caller owns, which starts 64-byte aligned at `data` (so the aligned
    /// words of the windows are in it too).
    #[inline(always)]
    unsafe fn span_diff(full: bool, data: *const u8, from: usize, to: usize) -> u64 {
        debug_assert!(from < to);
        // SAFETY: the windows lie inside `from..to` (`canary_windows`).
        unsafe {
            match Self::canary_windows(full, from, to) {
                [(a, _), (b, 8)] => canary::head_tail_diff(data.add(a), data.add(b)),
                [(a, len), _] => canary::diff(data.add(a), len),
            }
        }
    }

    /// The parts of the canary span `from..to` a release compares, as
    /// `(offset, len)` pairs (a `len` of 0: none): all of it with the full
    /// canary (`full`) or when short, else the head (from `from` to the end
    /// of the two aligned words that start at or before it: 9 to 16 bytes,
    /// where a small overflow lands) and the last 8 (`to` is 8-aligned), which
    /// `canary::head_tail_diff` compares. Offsets are from the slot's
    /// start, which is 64-byte aligned, so each window is whole aligned
    /// words but for the head's first.
    #[inline(always)]
    fn canary_windows(full: bool, from: usize, to: usize) -> [(usize, usize); 2] {
        let head_end = (from & !7) + CANARY_WINDOW;
        if full || to <= head_end + 8 {
            [(from, to - from), (to, 0)]
        } else {
            [(from, head_end - from), (to - 8, 8)]
        }
    }

    /// Reports and repairs the canary of slot `s` over `from..to`.
    ///
    /// # Safety
    /// The caller owns the slot; `from..to` lies inside it.
    #[cold]
    #[inline(never)]
    unsafe fn canary_damaged(&self, s: &Slot, from: usize, to: usize, classes: &SizeClasses) {
        let data = s.data().as_ptr();
        // The first damaged window (offsets from the slot's start).
        let found = Self::canary_windows(self.full_canary, from, to)
            .into_iter()
            .find_map(|(at, len)| {
                // SAFETY: the windows lie inside `from..to`, inside our slot
                // (caller's contract).
                let hit = unsafe { canary::check(data.add(at), len) };
                hit.map(|(first, damaged)| (at + first, damaged))
            });
        // SAFETY: as above; repair so the slot stays usable.
        unsafe { canary::fill(data.add(from), to - from) };
        if let Some((offset, damaged)) = found {
            let slot_len = classes.slot_bytes(s.class());
            self.raise(
                CorruptionKind::SlackCanary,
                s,
                slot_len,
                offset as isize,
                damaged,
            );
        }
    }

    /// Reports writes into the poisoned bytes of a slot being handed out.
    ///
    /// # Safety
    /// The caller owns the slot.
    #[cold]
    #[inline(never)]
    unsafe fn check_poison(&self, s: &Slot, classes: &SizeClasses) {
        // The poisoned span: `max_len` is still the releasing buffer's, the
        // new one is stored after this check.
        let n = (s.max_len.load(Relaxed) as usize).min(self.poison_bytes);
        // SAFETY: `n <= slot_len`; the slot is ours.
        if let Some((first, damaged)) = unsafe { poison::check(s.data().as_ptr(), n) } {
            let slot_len = classes.slot_bytes(s.class());
            self.raise(CorruptionKind::Poison, s, slot_len, first as isize, damaged);
        }
    }

    /// Checks (and repairs) the canaries that stand in for missing guard
    /// pages, or the red zones of a packed slot: the bytes nearest the slot
    /// on each unguarded side (an overflow or underflow damages those
    /// first), all of them with the full canary or for a page edge.
    ///
    /// # Safety
    /// The slot belongs to a mapped slab and the caller owns it (it is being
    /// released), so its unguarded edges are readable and writable and,
    /// apart from a neighbour's owner writing out of bounds (what this looks
    /// for), not accessed by anyone else.
    #[cold]
    unsafe fn check_edges(&self, s: &Slot, classes: &SizeClasses) {
        let slot_len = classes.slot_bytes(s.class());
        let edges = s.edges();
        let window = if !edges.contains(Edges::PACKED) || self.full_canary {
            EDGE_CANARY
        } else {
            REDZONE_WINDOW
        };
        debug_assert!(window <= EDGE_CANARY);
        let data = s.data().as_ptr();
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
        if edges.contains(Edges::CANARY_BEFORE) {
            // SAFETY: the page (or red zone) before the slot is in the slab.
            note(unsafe { data.sub(window) }, -(window as isize));
        }
        if edges.contains(Edges::CANARY_AFTER) {
            // SAFETY: the page (or red zone) after the slot is in the slab.
            note(unsafe { data.add(slot_len) }, slot_len as isize);
        }
        if let Some((first, damaged)) = found {
            self.raise(CorruptionKind::EdgeCanary, s, slot_len, first, damaged);
        }
    }

    /// Counts and reports a corruption found in slot `s`.
    #[cold]
    #[inline(never)]
    fn raise(
        &self,
        kind: CorruptionKind,
        s: &Slot,
        slot_len: usize,
        offset: isize,
        damaged: usize,
    ) {
        self.corruptions.count(kind);
        let thread = threads::name(s.thread.load(Relaxed));
        let poison = kind == CorruptionKind::Poison;
        Corruption {
            kind,
            pool: &self.pool,
            buffer: s.data().as_ptr() as usize,
            max_len: s.max_len.load(Relaxed) as usize,
            slot_len,
            offset,
            damaged,
            allocated_at: s.site(),
            // For poison, the tracking fields still describe the last owner,
            // whose `thread` is the releasing one.
            thread: if poison { None } else { thread.clone() },
            released_at: if poison {
                s.release_site()
            } else {
                SiteRef::NONE
            },
            released_by: if poison { thread } else { None },
        }
        .raise(self.on_corruption);
    }
}
