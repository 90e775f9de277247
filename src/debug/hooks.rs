//! The pool's debugging hooks on allocate and release: canary, poison,
//! zeroing, quarantine, and the corruption reports they raise.

use std::panic::Location;
use std::sync::atomic::Ordering::Relaxed;

use super::{canary, poison, Corruption, CorruptionKind, Zeroing};
use crate::cache::SlotRef;
use crate::guard::{self, Sealed};
use crate::leak::thread_name;
use crate::pool::PoolInner;
use crate::slab::{
    self, Slot, CANARY, FREE, HAS_BACKTRACE, POISONED, POISON_DUE, QUARANTINED, SAMPLED, ZERO_DUE,
};

/// The head window of a standard (not full) canary check ends this many
/// bytes past the start of the aligned word that holds `max_len`'s offset:
/// 9 to 16 bytes after `max_len` (the tail window is the span's last 8).
const CANARY_WINDOW: usize = 16;

/// Bytes of red zone on each side of a packed slot that a release compares
/// (all of them with the full canary): `canary::intact16`'s two words.
const REDZONE_WINDOW: usize = 16;

impl PoolInner {
    /// The canary's span for a buffer of `max_len` bytes in slot `s`: to
    /// the end of `max_len`'s page, or of the slot with the full canary or
    /// for a packed (small) slot. A page slot is whole pages, at least
    /// `max_len`: the page end never passes it, so the common case needs no
    /// class lookup.
    #[inline(always)]
    fn canary_span(&self, s: &Slot, max_len: usize) -> (usize, usize) {
        let end = if self.config.debug.full_canary || s.edges() & slab::PACKED != 0 {
            // The whole slot: its end is the red zone (packed slots are
            // smaller than a page).
            self.classes.slot_bytes(s.class())
        } else {
            // Pages are powers of two: round up with a mask, not a division.
            (max_len + self.page - 1) & !(self.page - 1)
        };
        debug_assert!(end <= self.classes.slot_bytes(s.class()));
        (max_len, end)
    }

    /// Checks and prepares a slot being handed out for `max_len` bytes:
    /// checks the poison of the last release, zeroes, writes the canary (or
    /// finds it still there). Returns the flags the release then needs:
    /// `CANARY` (check it), `ZERO_DUE`.
    ///
    /// # Safety
    /// The caller owns the slot (just taken off a free list), whose
    /// `max_len` and tracking fields are still the last buffer's; `flags`
    /// is the slot's.
    #[inline(always)]
    pub(crate) unsafe fn debug_allocate(&self, s: &Slot, max_len: usize, flags: u8) -> u8 {
        let d = &self.config.debug;
        if flags & POISONED != 0 {
            // SAFETY: the slot is ours (caller's contract).
            unsafe { self.check_poison(s) };
        }
        if d.zero == Zeroing::OnAllocate {
            // SAFETY: `max_len <= slot_len`, and the slot is ours.
            unsafe { std::ptr::write_bytes(s.data().as_ptr(), 0, max_len) };
        }
        let mut next = if d.zero == Zeroing::OnRelease {
            ZERO_DUE
        } else {
            0
        };
        // A page slot with no slack after `max_len` in its page has nothing
        // to guard at the standard level: the record is dropped (the buffer
        // may write its whole page).
        if max_len & self.canary_mask != 0 {
            let known = if flags & CANARY != 0 {
                s.canary_max.load(Relaxed) as usize
            } else {
                0
            };
            // In steady state the slot is reused for the same size: its
            // span already holds the pattern, nothing to write.
            // SAFETY: the slot is ours.
            if known == max_len || unsafe { self.prepare_canary(s, max_len, known) } {
                next |= CANARY;
            }
        }
        next
    }

    /// Writes the canary of a buffer of `max_len` bytes in slot `s`, whose
    /// span of `known` (0: none) holds the pattern, and records `max_len`.
    /// Returns whether the buffer has a canary (a span after `max_len`).
    ///
    /// # Safety
    /// The caller owns the slot.
    #[cold]
    #[inline(never)]
    unsafe fn prepare_canary(&self, s: &Slot, max_len: usize, known: usize) -> bool {
        let (from, to) = self.canary_span(s, max_len);
        if from >= to {
            return false;
        }
        let (kf, kt) = if known == 0 {
            (0, 0)
        } else {
            self.canary_span(s, known)
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

    /// Everything a release does beyond the plain path, when the slot's
    /// `flags` or edges are not 0: checks the red zones or edge canaries
    /// and the canary, zeroes, poisons (recording who released it, released
    /// at `site`), and finishes the sampled duties; leaves only the lasting
    /// bits in `flags`.
    ///
    /// # Safety
    /// The caller owns the slot (its buffer is being dropped); `flags` is
    /// the slot's.
    #[inline(never)]
    pub(crate) unsafe fn release_checks(
        &self,
        s: &Slot,
        flags: u8,
        site: Option<&'static Location<'static>>,
    ) {
        let edges = s.edges();
        // The whole edge canaries of an unguarded page slot; the red zones
        // of a packed one, all of them with the full canary.
        let packed_intact = || {
            // SAFETY: a packed slot the caller owns, between its red zones.
            unsafe { self.red_zones_intact(s) }
        };
        if edges != 0
            && (edges & slab::PACKED == 0 || self.config.debug.full_canary || !packed_intact())
        {
            // SAFETY: the caller owns the slot and its slab is mapped.
            unsafe { self.check_edges(s) };
        }
        if flags == 0 {
            return;
        }
        let max_len = s.max_len.load(Relaxed) as usize;
        let data = s.data().as_ptr();
        // SAFETY: the caller owns the slot.
        if flags & CANARY != 0 && !unsafe { self.slack_intact(s, max_len) } {
            let (from, to) = self.canary_span(s, max_len);
            // SAFETY: `from..to` lies inside our slot.
            unsafe { self.canary_damaged(s, from, to) };
        }
        if flags & ZERO_DUE != 0 {
            // SAFETY: `max_len <= slot_len`, and the slot is ours.
            unsafe { std::ptr::write_bytes(data, 0, max_len) };
        }
        let mut lasting = flags & CANARY;
        if flags & POISON_DUE != 0 {
            // SAFETY: as above; the next allocation checks the same span.
            unsafe { poison::fill(data, max_len.min(self.config.debug.poison_bytes)) };
            lasting |= POISONED;
            self.record_release(s, site);
        }
        if flags & (SAMPLED | HAS_BACKTRACE) != 0 {
            self.finish_sampled(s, flags);
        }
        s.flags.store(lasting, Relaxed);
    }

    /// The release's quick test of a slot whose only duty is its standard
    /// canary (and, if packed, its red zones): whether all of that is
    /// intact, so the plain path may go on. `false` for anything else: the
    /// caller then takes `release_checks`, which checks again and reports.
    ///
    /// # Safety
    /// The caller owns the slot; `flags` and `edges` are its.
    #[inline(always)]
    pub(crate) unsafe fn checks_pass(&self, s: &Slot, flags: u8, edges: u8) -> bool {
        if flags != CANARY
            || (edges != 0 && edges != slab::PACKED_EDGES)
            || self.config.debug.full_canary
        {
            return false;
        }
        // SAFETY: the caller owns the slot, flagged `CANARY` for its
        // `max_len`; a packed slot lies between its red zones.
        unsafe {
            self.slack_intact(s, s.max_len.load(Relaxed) as usize)
                && (edges == 0 || self.red_zones_intact(s))
        }
    }

    /// Whether the 16 bytes of red zone each side of packed slot `s` (the
    /// ones nearest it) hold the canary: four word compares.
    ///
    /// # Safety
    /// `s` is a packed slot the caller owns: it is 64-byte aligned between
    /// 64-byte red zones of its mapped slab.
    #[inline(always)]
    pub(crate) unsafe fn red_zones_intact(&self, s: &Slot) -> bool {
        let data = s.data().as_ptr();
        let len = self.classes.slot_bytes(s.class());
        // SAFETY: both 16-byte windows lie in the red zones around the slot.
        unsafe { canary::intact16(data.sub(16)) && canary::intact16(data.add(len)) }
    }

    /// Whether the canary of the current buffer (`max_len` bytes, flagged
    /// `CANARY`) in slot `s` is intact, over the windows a release compares.
    ///
    /// # Safety
    /// The caller owns the slot, whose flags have `CANARY` for `max_len`.
    #[inline(always)]
    pub(crate) unsafe fn slack_intact(&self, s: &Slot, max_len: usize) -> bool {
        let (from, to) = self.canary_span(s, max_len);
        debug_assert!(from < to && s.canary_max.load(Relaxed) as usize == max_len);
        let data = s.data().as_ptr();
        // SAFETY: the windows lie inside `from..to`, inside our slot (64-byte
        // aligned, so their aligned words are in it too).
        unsafe {
            match self.canary_windows(from, to) {
                [(a, _), (b, 8)] => canary::intact_head_tail(data.add(a), data.add(b)),
                [(a, len), _] => canary::intact(data.add(a), len),
            }
        }
    }

    /// The parts of the canary span `from..to` a release compares, as
    /// `(offset, len)` pairs (a `len` of 0: none): all of it with the full
    /// canary or when short, else the head (from `from` to the end of the
    /// two aligned words that start at or before it: 9 to 16 bytes, where a
    /// small overflow lands) and the last 8 (`to` is 8-aligned), which
    /// `canary::intact_head_tail` compares. Offsets are from the slot's
    /// start, which is 64-byte aligned, so each window is whole aligned
    /// words but for the head's first.
    #[inline(always)]
    fn canary_windows(&self, from: usize, to: usize) -> [(usize, usize); 2] {
        let head_end = (from & !7) + CANARY_WINDOW;
        if self.config.debug.full_canary || to <= head_end + 8 {
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
    unsafe fn canary_damaged(&self, s: &Slot, from: usize, to: usize) {
        let slot_len = self.classes.slot_bytes(s.class());
        let data = s.data().as_ptr();
        // The first damaged window (offsets from the slot's start).
        let found = self
            .canary_windows(from, to)
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
    unsafe fn check_poison(&self, s: &Slot) {
        let slot_len = self.classes.slot_bytes(s.class());
        // The poisoned span (see `poison_slot`): `max_len` is still the
        // releasing buffer's, the new one is stored after this check.
        let n = (s.max_len.load(Relaxed) as usize).min(self.config.debug.poison_bytes);
        // SAFETY: `n <= slot_len`; the slot is ours.
        if let Some((first, damaged)) = unsafe { poison::check(s.data().as_ptr(), n) } {
            self.raise(CorruptionKind::Poison, s, slot_len, first as isize, damaged);
        }
    }

    /// Checks the canaries that stand in for missing guard pages.
    ///
    /// # Safety
    /// As for [`slab::check_edges`].
    #[cold]
    pub(crate) unsafe fn check_edges(&self, s: &Slot) {
        let slot_len = self.classes.slot_bytes(s.class());
        // Red zones: the bytes nearest the slot, all of them with the full
        // canary; unguarded page edges: their whole canary.
        let window = if s.edges() & slab::PACKED == 0 || self.config.debug.full_canary {
            slab::EDGE_CANARY
        } else {
            REDZONE_WINDOW
        };
        // SAFETY: forwarded from the caller.
        if let Some((first, damaged)) = unsafe { slab::check_edges(s, slot_len, window) } {
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
        self.counters.corruptions[kind.index()].fetch_add(1, Relaxed);
        let thread = thread_name(s.thread.load(Relaxed));
        let poison = kind == CorruptionKind::Poison;
        Corruption {
            kind,
            pool: &self.name,
            buffer: s.data().as_ptr() as usize,
            max_len: s.max_len.load(Relaxed) as usize,
            slot_len,
            offset,
            damaged,
            allocated_at: s.site(),
            // For poison, the tracking fields still describe the last owner,
            // whose `thread` is the releasing one.
            thread: if poison { None } else { thread.clone() },
            released_at: if poison { s.release_site() } else { None },
            released_by: if poison { thread } else { None },
        }
        .raise(self.config.debug.on_corruption);
    }

    /// Seals a slot released at `site` into the quarantine; returns `false`
    /// (the caller then frees it as usual) when it cannot be sealed.
    ///
    /// # Safety
    /// The caller owns the slot (its buffer is being dropped).
    #[cold]
    pub(crate) unsafe fn quarantine(
        &self,
        slot: SlotRef,
        site: Option<&'static Location<'static>>,
    ) -> bool {
        let Some(mechanism) = self.config.guards else {
            return false;
        };
        // SAFETY: the caller owns the slot; its slab is mapped.
        let s = unsafe { slot.get() };
        if s.edges() & slab::PACKED != 0 {
            // A packed slot shares its pages: it cannot be sealed alone.
            return false;
        }
        let len = self.classes.slot_bytes(s.class());
        // Before the seal: once sealed, a fault report may read it.
        self.record_release(s, site);
        // SAFETY: the slot is page-aligned, whole pages, ours, and nobody
        // may touch it until it is unsealed.
        let Some(sealed) = (unsafe { guard::seal(s.data().as_ptr(), len, mechanism) }) else {
            return false;
        };
        s.state.store(QUARANTINED, Relaxed);
        let class = &self.class_state[s.class()];
        class.counters.quarantined.fetch_add(1, Relaxed);
        let leaving = self
            .quarantine
            .admit(slot, sealed, self.config.debug.quarantine_slots);
        for (old, sealed) in leaving {
            // SAFETY: a quarantined slot of this pool; its slab is mapped.
            unsafe { self.leave_quarantine(old, sealed) };
        }
        // Counted last: once this release shows, the pool may shut down.
        class.counters.releases.fetch_add(1, Relaxed);
        true
    }

    /// Unseals a slot leaving quarantine and frees it to its class.
    ///
    /// # Safety
    /// `slot` is a quarantined slot of this pool, sealed as `sealed`.
    pub(crate) unsafe fn leave_quarantine(&self, slot: SlotRef, sealed: Sealed) {
        // SAFETY: forwarded from the caller.
        unsafe { self.unseal(slot, sealed) };
        // SAFETY: as above.
        let s = unsafe { slot.get() };
        let class = &self.class_state[s.class()];
        class.counters.quarantined.fetch_sub(1, Relaxed);
        s.state.store(FREE, Relaxed);
        class.free.push(slot);
    }

    /// Makes a quarantined slot accessible again; its contents are gone, so
    /// the canary and poison records are reset.
    ///
    /// # Safety
    /// `slot` is a quarantined slot of this pool, sealed as `sealed`.
    pub(crate) unsafe fn unseal(&self, slot: SlotRef, sealed: Sealed) {
        // SAFETY: forwarded from the caller.
        let s = unsafe { slot.get() };
        let len = self.classes.slot_bytes(s.class());
        // SAFETY: the slot was sealed with `sealed` and its slab is mapped.
        unsafe { guard::unseal(s.data().as_ptr(), len, sealed) };
        // Between two buffers `flags` holds only lasting bits.
        s.flags.store(0, Relaxed);
    }
}
