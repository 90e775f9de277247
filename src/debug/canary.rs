//! The canary: an address-dependent byte pattern that should never change.
//!
//! The byte at address `a` is `(a as u8) ^ h(a >> 8)`: consecutive bytes
//! differ, the pattern shifts with the address (a copy of canary bytes to
//! another place does not pass for canary), and an aligned 8-byte word of it
//! is computed with two operations, so fills and checks run a word at a time.

/// The canary byte at address `a`.
#[inline]
pub(crate) fn byte(a: usize) -> u8 {
    (a as u8) ^ mix(a >> 8)
}

#[inline]
fn mix(hi: usize) -> u8 {
    ((hi ^ (hi >> 8)) as u8).wrapping_mul(0x9d) ^ 0x5a
}

/// The canary word at an 8-aligned address `a`, little-endian (byte `i` of
/// the range in bits `8i..8i + 8`).
#[inline]
fn word(a: usize) -> u64 {
    debug_assert!(a.is_multiple_of(8));
    let low = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
    (((a as u8) as u64 * 0x0101_0101_0101_0101) | low)
        ^ (mix(a >> 8) as u64 * 0x0101_0101_0101_0101)
}

/// Writes the canary over `p..p + len`.
///
/// # Safety
/// The range is writable memory that no one else accesses meanwhile.
pub(crate) unsafe fn fill(p: *mut u8, len: usize) {
    let start = p as usize;
    let end = start + len;
    let mut a = start;
    while a < end && !a.is_multiple_of(8) {
        // SAFETY: `start <= a < end`: inside the caller's range.
        unsafe { (a as *mut u8).write(byte(a)) };
        a += 1;
    }
    while a + 8 <= end {
        // SAFETY: `a` is 8-aligned and `a + 8 <= end`.
        unsafe { (a as *mut u64).write(word(a).to_le()) };
        a += 8;
    }
    while a < end {
        // SAFETY: as above.
        unsafe { (a as *mut u8).write(byte(a)) };
        a += 1;
    }
}

/// Whether `p..p + len` holds the canary: the fast test of a release,
/// a whole aligned word at a time (the words that hold the range's first and
/// last bytes are read in full and the bytes outside the range masked off).
/// [`check`] then says where the damage is.
///
/// # Safety
/// The 8-byte-aligned words that contain the range are readable memory.
/// Concurrent writers (the bugs this looks for) make the answer approximate,
/// not undefined in practice: every access is volatile.
#[inline(always)]
pub(crate) unsafe fn intact(p: *const u8, len: usize) -> bool {
    // The release windows (8 or 16 bytes) inside one 256-byte block: one
    // pattern constant, unaligned loads, no masks.
    if (len == 8 || len == 16) && (p as usize & 0xff) + len <= 0x100 {
        // SAFETY: forwarded from the caller (the range is readable).
        return unsafe { intact_window(p, len) };
    }
    let start = p as usize;
    let end = start + len;
    let mut diff = 0u64;
    let mut a = start & !7;
    while a < end {
        // SAFETY: `a` is 8-aligned and its word holds part of the range; the
        // caller guarantees such words are readable.
        let got = u64::from_le(unsafe { (a as *const u64).read_volatile() });
        let mut x = got ^ word(a);
        if a < start {
            x &= !0u64 << (8 * (start - a)); // bytes before the range
        }
        if a + 8 > end {
            x &= !0u64 >> (8 * (a + 8 - end)); // bytes after the range
        }
        diff |= x;
        a += 8;
    }
    diff == 0
}

/// `intact` for 8 or 16 bytes that stay within one 256-byte block: every
/// byte has the same `mix`, and byte `i` is `(p as u8 + i) ^ mix` with no
/// carry between lanes, so the expected words are an add and a xor away,
/// compared with one unaligned load each.
///
/// The loads are plain, not volatile: the window lies in the releasing
/// buffer's own slot (its slack), which nobody else may write; a racing
/// writer would be the bug this looks for in the first place.
///
/// # Safety
/// `p..p + len` is readable; `len` is 8 or 16 and the range does not cross
/// a 256-byte boundary.
#[inline(always)]
unsafe fn intact_window(p: *const u8, len: usize) -> bool {
    const REP: u64 = 0x0101_0101_0101_0101;
    let low = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
    let a = p as usize;
    let m = mix(a >> 8) as u64 * REP;
    let expect = |lo: u8| (lo as u64 * REP).wrapping_add(low) ^ m;
    // SAFETY: unaligned reads inside the caller's range.
    let read = |q: *const u8| u64::from_le(unsafe { q.cast::<u64>().read_unaligned() });
    let mut diff = read(p) ^ expect(a as u8);
    if len == 16 {
        // SAFETY: `p + 8 .. p + 16` is inside the range.
        diff |= read(unsafe { p.add(8) }) ^ expect((a as u8).wrapping_add(8));
    }
    diff == 0
}

/// Whether the 16 bytes at the 16-aligned address `p` hold the canary: two
/// word compares, for the red zones of packed slots. Sixteen aligned bytes
/// lie in one 256-byte block, so both words share one `mix` and their low
/// bytes need no carry: one pattern computation for both.
///
/// # Safety
/// `p..p + 16` is readable memory; `p` is 16-byte aligned.
#[inline(always)]
pub(crate) unsafe fn intact16(p: *const u8) -> bool {
    const REP: u64 = 0x0101_0101_0101_0101;
    let a = p as usize;
    debug_assert!(a.is_multiple_of(16));
    // SAFETY: two aligned words inside the caller's readable range; the
    // red zones border other buffers, so the reads are volatile (a racing
    // overflow from a neighbour is the bug this looks for).
    let (x, y) = unsafe {
        (
            (a as *const u64).read_volatile(),
            ((a + 8) as *const u64).read_volatile(),
        )
    };
    let m = mix(a >> 8) as u64 * REP;
    // `a as u8 <= 0xf0`: the lanes `a as u8 + i` (i < 16) never carry.
    let lanes = (a as u8) as u64 * REP + u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
    (u64::from_le(x) ^ lanes ^ m) | (u64::from_le(y) ^ (lanes + 8 * REP) ^ m) == 0
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
    let start = p as usize;
    let end = start + len;
    let mut first = None;
    let mut damaged = 0;
    for b in start..end {
        // SAFETY: inside the range.
        if unsafe { (b as *const u8).read_volatile() } != byte(b) {
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
    fn word_matches_bytes() {
        for a in (0..4096usize).step_by(8).map(|a| a + 0x7f00_0000_0000) {
            let w = word(a).to_le_bytes();
            for (i, b) in w.iter().enumerate() {
                assert_eq!(*b, byte(a + i), "at {a:#x}+{i}");
            }
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
    fn intact16_sees_every_byte() {
        let mut buf = vec![0u64; 8]; // 64 bytes, 8-aligned
        let base = buf.as_mut_ptr().cast::<u8>();
        // SAFETY: all offsets below stay inside `buf`.
        unsafe {
            let p = base.add(16 - (base as usize % 16));
            fill(p, 16);
            assert!(intact16(p));
            for i in 0..16 {
                *p.add(i) ^= 0x01;
                assert!(!intact16(p), "byte {i}");
                *p.add(i) ^= 0x01;
            }
            assert!(intact16(p));
        }
    }

    #[test]
    fn intact16_agrees_with_the_pattern_at_every_alignment() {
        // 4 KiB + 16 of canary: every 16-aligned window, across 256-byte
        // blocks and with every low byte, holds it; a shifted copy does not.
        let mut buf = vec![0u8; 4096 + 32];
        let base = buf.as_mut_ptr();
        // SAFETY: all ranges below stay inside `buf`.
        unsafe {
            let p = base.add(16 - (base as usize % 16));
            fill(p, 4096 + 16);
            for off in (0..4096).step_by(16) {
                assert!(intact16(p.add(off)), "offset {off}");
            }
            std::ptr::copy(p.add(16), p, 16);
            assert!(!intact16(p), "a copy of the next window passed");
        }
    }
}
