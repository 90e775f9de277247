//! The pool's debugging hooks on allocate and release: canary, poison,
//! zeroing, quarantine, and the corruption reports they raise.

use std::sync::atomic::Ordering::Relaxed;

use super::{canary, poison, sampled, Corruption, CorruptionKind, Zeroing, POISON_COUNTDOWN};
use crate::cache::SlotRef;
use crate::guard::{self, Sealed};
use crate::leak::thread_name;
use crate::pool::PoolInner;
use crate::slab::{self, Slot, FREE, POISONED, QUARANTINED};

/// Bytes after `max_len` that a standard (not full) canary check compares,
/// besides the last 8 of the page.
const CANARY_WINDOW: usize = 16;

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

    /// Checks and prepares a slot being handed out for `max_len` bytes.
    ///
    /// # Safety
    /// The caller owns the slot (just taken off a free list).
    #[inline(always)]
    pub(crate) unsafe fn debug_allocate(&self, s: &Slot, max_len: usize) {
        let d = &self.config.debug;
        if s.flags.load(Relaxed) & POISONED != 0 {
            // SAFETY: the slot is ours (caller's contract).
            unsafe { self.check_poison(s) };
        }
        if d.zero == Zeroing::OnAllocate {
            // SAFETY: `max_len <= slot_len`, and the slot is ours.
            unsafe { std::ptr::write_bytes(s.data().as_ptr(), 0, max_len) };
        }
        // A page slot with no slack after `max_len` in its page has nothing to
        // guard at the standard level: only the record must say so.
        if max_len & self.canary_mask != 0 {
            let known = s.canary_max.load(Relaxed) as usize;
            // In steady state the slot is reused for the same size: its
            // span already holds the pattern, nothing to write.
            if known != max_len {
                // SAFETY: the slot is ours.
                unsafe { self.prepare_canary(s, max_len, known) };
            }
        } else if self.canary_mask != 0 && s.canary_max.load(Relaxed) != 0 {
            // The buffer may write its whole page: no pattern is known now.
            s.canary_max.store(0, Relaxed);
        }
    }

    /// Writes the canary of a buffer of `max_len` bytes in slot `s`, whose
    /// record says the span of `known` holds it, and records `max_len`.
    ///
    /// # Safety
    /// The caller owns the slot.
    #[cold]
    #[inline(never)]
    unsafe fn prepare_canary(&self, s: &Slot, max_len: usize, known: usize) {
        let (from, to) = self.canary_span(s, max_len);
        let (kf, kt) = if known == 0 {
            (0, 0)
        } else {
            self.canary_span(s, known)
        };
        if from < to && !(kf <= from && to <= kt) {
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
        let record = if from < to { max_len as u32 } else { 0 };
        s.canary_max.store(record, Relaxed);
    }

    /// Checks a slot being released (canary) and prepares it for its next
    /// owner (zero, poison).
    ///
    /// # Safety
    /// The caller owns the slot (its buffer is being dropped).
    #[inline(always)]
    pub(crate) unsafe fn debug_release(&self, s: &Slot, max_len: usize) {
        let d = &self.config.debug;
        if max_len & self.canary_mask != 0 {
            let (from, to) = self.canary_span(s, max_len);
            if from < to {
                let data = s.data().as_ptr();
                let [(a, a_len), (b, b_len)] = self.canary_windows(from, to);
                // SAFETY: both windows lie inside `from..to`, inside our slot.
                let intact = unsafe {
                    canary::intact(data.add(a), a_len)
                        && (b_len == 0 || canary::intact(data.add(b), b_len))
                };
                if !intact {
                    // SAFETY: as above.
                    unsafe { self.canary_damaged(s, from, to) };
                }
            }
        }
        if d.zero == Zeroing::OnRelease {
            // SAFETY: `max_len <= slot_len`, and the slot is ours.
            unsafe { std::ptr::write_bytes(s.data().as_ptr(), 0, max_len) };
        }
        if sampled(&POISON_COUNTDOWN, d.poison_every) {
            // SAFETY: the slot is ours.
            unsafe { poison_slot(s, max_len.min(d.poison_bytes)) };
        }
    }

    /// The parts of the canary span `from..to` a release compares, as
    /// `(offset, len)` pairs (a `len` of 0: none): all of it with the full
    /// canary or when short, else the first `CANARY_WINDOW` bytes (where a
    /// small overflow lands) and the last 8.
    #[inline(always)]
    fn canary_windows(&self, from: usize, to: usize) -> [(usize, usize); 2] {
        let len = to - from;
        if self.config.debug.full_canary || len <= CANARY_WINDOW + 8 {
            [(from, len), (to, 0)]
        } else {
            [(from, CANARY_WINDOW), (to - 8, 8)]
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
        s.flags.fetch_and(!POISONED, Relaxed);
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
            CANARY_WINDOW
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

    /// Seals a released slot into the quarantine; returns `false` (the
    /// caller then frees it as usual) when it cannot be sealed.
    ///
    /// # Safety
    /// The caller owns the slot (its buffer is being dropped).
    #[cold]
    pub(crate) unsafe fn quarantine(&self, slot: SlotRef) -> bool {
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
        s.canary_max.store(0, Relaxed);
        s.flags.fetch_and(!POISONED, Relaxed);
    }
}

/// Poisons the first `n = min(max_len, poison_bytes)` bytes of a slot being
/// released, sampled; the next allocation checks the same span.
///
/// # Safety
/// The caller owns the slot; `n <=` its length.
#[cold]
#[inline(never)]
unsafe fn poison_slot(s: &Slot, n: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { poison::fill(s.data().as_ptr(), n) };
    s.flags.fetch_or(POISONED, Relaxed);
}
