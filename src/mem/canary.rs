//! The canary: an address-dependent byte pattern that should never change.
//!
//! The 8 bytes of the aligned word at `a` are the word's index (`a / 8`)
//! times an odd constant (a Weyl sequence), little-endian. The pattern
//! differs from place to place (a copy of canary bytes to another address
//! does not pass for canary), no byte value is favoured at any byte
//! position, and the next word is this one plus the constant: fills and
//! checks run a word at a time, one add (or one multiply, for a word on its
//! own) per word.

/// The multiplier of the pattern (the 64-bit golden ratio, odd): also the
/// step from one word to the next.
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// The canary word at an 8-aligned address `a`, little-endian (byte `i` of
/// the range in bits `8i..8i + 8`).
#[inline(always)]
fn word(a: usize) -> u64 {
    debug_assert!(a.is_multiple_of(8));
    // An odd multiplier: consecutive words' indices give every low byte in
    // turn, the golden ratio spreads the higher ones evenly.
    ((a >> 3) as u64).wrapping_mul(MUL)
}

/// The canary word after `w` (at the next aligned address).
#[inline(always)]
fn next(w: u64) -> u64 {
    w.wrapping_add(MUL)
}

/// The canary byte at address `a`.
#[inline]
pub(crate) fn byte(a: usize) -> u8 {
    (word(a & !7) >> (8 * (a & 7))) as u8
}

/// Writes the canary over `p..p + len`.
///
/// # Safety
/// The range is writable memory that no one else accesses meanwhile.
pub(crate) unsafe fn fill(p: *mut u8, len: usize) {
    let start = p.addr();
    let end = start + len;
    let mut a = start;
    while a < end && !a.is_multiple_of(8) {
        // SAFETY: `start <= a < end`: inside the caller's range.
        unsafe { p.with_addr(a).write(byte(a)) };
        a += 1;
    }
    let mut w = word(a & !7);
    while a + 8 <= end {
        // SAFETY: `a` is 8-aligned and `a + 8 <= end`.
        unsafe { p.with_addr(a).cast::<u64>().write(w.to_le()) };
        a += 8;
        w = next(w);
    }
    while a < end {
        // SAFETY: as above.
        unsafe { p.with_addr(a).write(byte(a)) };
        a += 1;
    }
}

/// Whether `p..p + len` holds the canary: [`diff`] is 0.
///
/// # Safety
/// As for [`diff`].
#[inline(always)]
pub(crate) unsafe fn intact(p: *const u8, len: usize) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe { diff(p, len) == 0 }
}

/// How `p..p + len` differs from the canary, or'ed into one word: 0 when it
/// holds the canary. The fast test of a release, a whole aligned word at a
/// time (the words that hold the range's first and last bytes are read in
/// full and the bytes outside the range masked off). [`check`] then says
/// where the damage is.
///
/// # Safety
/// The 8-byte-aligned words that contain the range are readable memory.
/// Concurrent writers (the bugs this looks for) make the answer approximate,
/// not undefined in practice: every access is volatile.
#[inline(always)]
pub(crate) unsafe fn diff(p: *const u8, len: usize) -> u64 {
    if len == 0 {
        return 0;
    }
    let start = p.addr();
    let end = start + len;
    let first = start & !7;
    let last = (end - 1) & !7;
    // SAFETY: `a` is one of the aligned words that hold part of the range;
    // the caller guarantees they are readable (`p`'s allocation holds them).
    let read = |a: usize| u64::from_le(unsafe { p.with_addr(a).cast::<u64>().read_volatile() });
    // The first word without the bytes before the range, the last without
    // those after it (the same word when the range is inside one).
    let head = !0u64 << (8 * (start - first));
    let tail = !0u64 >> (8 * (last + 8 - end));
    let w = word(first);
    if first == last {
        return (read(first) ^ w) & head & tail;
    }
    let mut acc = (read(first) ^ w) & head | (read(last) ^ word(last)) & tail;
    let mut a = first + 8;
    let mut w = next(w);
    while a < last {
        acc |= read(a) ^ w;
        a += 8;
        w = next(w);
    }
    acc
}

/// How the standard windows of a slack span differ from the canary (0:
/// they hold it): from `p` to the end of the aligned word after the one
/// that holds `p` (9 to 16 bytes, where a small overflow lands), and the
/// aligned word at `tail` (the span's last 8 bytes). Three word compares,
/// one mask.
///
/// # Safety
/// The aligned words at `p & !7`, the next one, and `tail` are readable;
/// `tail` is 8-aligned. Reads are volatile, as in [`diff`].
#[inline(always)]
pub(crate) unsafe fn head_tail_diff(p: *const u8, tail: *const u8) -> u64 {
    // SAFETY: forwarded from the caller: the head's two words, and the
    // aligned word at `tail`.
    unsafe { head_diff(p) | diff_words::<1>(tail) }
}

/// How the head window of a slack span differs from the canary (0: it
/// holds it): from `p` to the end of the aligned word after the one that
/// holds `p` (9 to 16 bytes). Two word compares, one mask.
///
/// # Safety
/// The aligned words at `p & !7` and the next one are readable. Reads are
/// volatile, as in [`diff`].
#[inline(always)]
pub(crate) unsafe fn head_diff(p: *const u8) -> u64 {
    let start = p.addr();
    let first = start & !7;
    let head = !0u64 << (8 * (start - first));
    // SAFETY: the caller guarantees the two aligned words are readable.
    let (x, y) = unsafe {
        let at = p.with_addr(first).cast::<u64>();
        (at.read_volatile(), at.add(1).read_volatile())
    };
    let w = word(first);
    ((u64::from_le(x) ^ w) & head) | (u64::from_le(y) ^ next(w))
}

/// How the `N` aligned words from the 8-aligned `p` differ from the canary
/// (0: they hold it): `N` word compares, one multiply.
///
/// # Safety
/// `p..p + 8 * N` is readable memory; `p` is 8-byte aligned. Reads are
/// volatile, as in [`diff`].
#[inline(always)]
pub(crate) unsafe fn diff_words<const N: usize>(p: *const u8) -> u64 {
    debug_assert!(p.addr().is_multiple_of(8));
    let mut w = word(p.addr());
    let mut acc = 0;
    for i in 0..N {
        // SAFETY: word `i < N` of the caller's readable, aligned range.
        let x = unsafe { p.cast::<u64>().add(i).read_volatile() };
        acc |= u64::from_le(x) ^ w;
        w = next(w);
    }
    acc
}

/// How the 16 bytes at the 16-aligned address `p` differ from the canary
/// (0: they hold it): two word compares, for the red zones of packed slots.
///
/// # Safety
/// `p..p + 16` is readable memory; `p` is 16-byte aligned. The red zones
/// border other buffers, so the reads are volatile (a racing overflow from
/// a neighbour is the bug this looks for).
#[inline(always)]
pub(crate) unsafe fn diff16(p: *const u8) -> u64 {
    debug_assert!(p.addr().is_multiple_of(16));
    // SAFETY: forwarded from the caller: two aligned words.
    unsafe { diff_words::<2>(p) }
}

/// Compares `p..p + len` with the canary; returns the offset (from `p`) of
/// the first damaged byte and how many are damaged, or `None`.
///
/// # Safety
/// As for [`intact`].
pub(crate) unsafe fn check(p: *const u8, len: usize) -> Option<(usize, usize)> {
    // SAFETY: forwarded from the caller.
    if len == 0 || unsafe { intact(p, len) } {
        return None;
    }
    let start = p.addr();
    let end = start + len;
    let mut first = None;
    let mut damaged = 0;
    for b in start..end {
        // SAFETY: inside the range.
        if unsafe { p.with_addr(b).read_volatile() } != byte(b) {
            first.get_or_insert(b - start);
            damaged += 1;
        }
    }
    first.map(|f| (f, damaged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_favours_no_byte_and_moves_with_the_address() {
        // 64 KiB of pattern at a typical mapping address.
        let base = 0x7f3a_1234_0000usize;
        // Counts by byte position, then value.
        let mut seen = [[0u32; 256]; 8];
        for a in (base..base + 65536).step_by(8) {
            for (i, b) in word(a).to_le_bytes().into_iter().enumerate() {
                seen[i][b as usize] += 1;
            }
            // Neither the next word, nor the same word one page or one
            // cache line away, matches: a copy of canary to another place
            // is damage.
            for d in [8, 64, 4096] {
                assert_ne!(word(a), word(a + d), "{a:#x} and +{d}");
            }
            assert_eq!(byte(a + 3), word(a).to_le_bytes()[3]);
        }
        // 32 of each value at each position on average (8192 words); every
        // value within a factor of 2 there.
        for (i, at) in seen.iter().enumerate() {
            let (min, max) = (at.iter().min(), at.iter().max());
            assert!(
                at.iter().all(|&n| (16..=64).contains(&n)),
                "byte {i}: {min:?}..{max:?}"
            );
        }
    }

    #[test]
    fn fill_then_check_finds_each_damage() {
        let mut buf = vec![0u8; 300];
        for (off, len) in [(0, 300), (3, 250), (7, 9), (5, 1)] {
            // SAFETY: the ranges are inside `buf`.
            unsafe {
                let p = buf.as_mut_ptr().add(off);
                fill(p, len);
                assert_eq!(check(p, len), None);
                let hit = len / 2;
                *p.add(hit) ^= 0x10;
                assert_eq!(check(p, len), Some((hit, 1)));
                if hit != len - 1 {
                    *p.add(len - 1) ^= 1;
                    assert_eq!(check(p, len), Some((hit, 2)));
                }
            }
        }
    }

    #[test]
    fn head_tail_diff_sees_its_windows_and_only_them() {
        let mut buf = vec![0u64; 16]; // 128 bytes, 8-aligned
        let base = buf.as_mut_ptr().cast::<u8>();
        // SAFETY: all offsets below stay inside `buf`.
        unsafe {
            for from in 0..8 {
                let p = base.add(from);
                let tail = base.add(120);
                fill(p, 128 - from);
                assert_eq!(head_tail_diff(p, tail), 0, "from {from}");
                // The head: `from` up to 16 bytes past its word's start.
                let head = (from..16).chain(120..128);
                for i in head {
                    *base.add(i) ^= 0x01;
                    assert_ne!(head_tail_diff(p, tail), 0, "from {from}, byte {i}");
                    *base.add(i) ^= 0x01;
                }
                // Between the windows, and before `p`: not compared.
                for i in (0..from).chain(16..120) {
                    *base.add(i) ^= 0x01;
                    assert_eq!(head_tail_diff(p, tail), 0, "from {from}, byte {i}");
                    *base.add(i) ^= 0x01;
                }
            }
        }
    }

    #[test]
    fn diff16_sees_every_byte() {
        let mut buf = vec![0u64; 8]; // 64 bytes, 8-aligned
        let base = buf.as_mut_ptr().cast::<u8>();
        // SAFETY: all offsets below stay inside `buf`.
        unsafe {
            let p = base.add(16 - (base as usize % 16));
            fill(p, 16);
            assert_eq!(diff16(p), 0);
            for i in 0..16 {
                *p.add(i) ^= 0x01;
                assert_ne!(diff16(p), 0, "byte {i}");
                *p.add(i) ^= 0x01;
            }
            assert_eq!(diff16(p), 0);
        }
    }

    #[test]
    fn diff16_agrees_with_the_pattern_at_every_alignment() {
        // 4 KiB + 16 of canary: every 16-aligned window, across 256-byte
        // blocks and with every low byte, holds it; a shifted copy does not.
        let mut buf = vec![0u8; 4096 + 32];
        let base = buf.as_mut_ptr();
        // SAFETY: all ranges below stay inside `buf`.
        unsafe {
            let p = base.add(16 - (base as usize % 16));
            fill(p, 4096 + 16);
            for off in (0..4096).step_by(16) {
                assert_eq!(diff16(p.add(off)), 0, "offset {off}");
            }
            std::ptr::copy(p.add(16), p, 16);
            assert_ne!(diff16(p), 0, "a copy of the next window passed");
        }
    }
}
