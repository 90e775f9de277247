//! Poison: a released buffer's bytes are overwritten with a pattern that is
//! checked when the slot is handed out again, to catch writes after release.

/// The poison byte: not zero (fresh memory), not a canary, easy to spot in a
/// hex dump.
pub(crate) const BYTE: u8 = 0xdb;

/// Poisons `p..p + len`.
///
/// # Safety
/// The range is writable memory that no one else accesses meanwhile.
pub(crate) unsafe fn fill(p: *mut u8, len: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { std::ptr::write_bytes(p, BYTE, len) }
}

/// Checks `p..p + len`; returns the offset of the first changed byte and how
/// many changed, or `None`.
///
/// # Safety
/// The range is readable memory (volatile reads: a racing writer is the bug
/// being looked for).
pub(crate) unsafe fn check(p: *const u8, len: usize) -> Option<(usize, usize)> {
    const WORD: u64 = u64::from_ne_bytes([BYTE; 8]);
    let mut first = None;
    let mut damaged = 0;
    let mut i = 0;
    let aligned = (p as usize).is_multiple_of(8);
    // Four words at a time, one branch each 32 bytes, up to the first group
    // with damage; then word by word and byte by byte from there.
    while aligned && i + 32 <= len {
        // SAFETY: `p + i + k` is 8-aligned and its word inside the range
        // (`i + 32 <= len`).
        let diff = |k: usize| unsafe { p.add(i + k).cast::<u64>().read_volatile() } ^ WORD;
        if diff(0) | diff(8) | diff(16) | diff(24) != 0 {
            break;
        }
        i += 32;
    }
    while aligned && i + 8 <= len {
        // SAFETY: `p + i` is 8-aligned and inside the range.
        if unsafe { p.add(i).cast::<u64>().read_volatile() } != WORD {
            break;
        }
        i += 8;
    }
    while i < len {
        // SAFETY: `i < len`.
        if unsafe { p.add(i).read_volatile() } != BYTE {
            first.get_or_insert(i);
            damaged += 1;
        }
        i += 1;
    }
    first.map(|f| (f, damaged))
}

#[cfg(test)]
mod tests {
    #[test]
    fn poison_round_trip() {
        let mut buf = vec![0u64; 64];
        let p = buf.as_mut_ptr().cast::<u8>();
        // SAFETY: 512 bytes inside `buf`.
        unsafe {
            super::fill(p, 512);
            assert_eq!(super::check(p, 512), None);
            *p.add(300) = 0;
            *p.add(301) = 0;
            assert_eq!(super::check(p, 512), Some((300, 2)));
            // Damage in each word of a group of four, and in the tail.
            for at in [0, 8, 16, 31, 32, 505, 511] {
                super::fill(p, 512);
                *p.add(at) ^= 1;
                assert_eq!(super::check(p, 512), Some((at, 1)), "{at}");
                // Unaligned: byte by byte, and byte 0 is outside.
                let want = (at > 0).then(|| (at - 1, 1));
                assert_eq!(super::check(p.add(1), 511), want, "{at}");
            }
        }
    }
}
