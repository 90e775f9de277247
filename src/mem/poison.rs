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
    // SAFETY: forwarded from the caller.
    if unsafe { intact(p, len) } {
        return None;
    }
    // SAFETY: forwarded from the caller.
    unsafe { damaged(p, len) }
}

/// Whether `p..p + len` holds the poison: the blocks of a 16-aligned
/// range a vector at a time (two `u64` words off x86-64), each compared
/// and folded into one accumulator with no branch on the way, one test at
/// the end; the bytes after them (all of an unaligned range) one by one.
///
/// # Safety
/// As for [`check`].
#[inline(always)]
unsafe fn intact(p: *const u8, len: usize) -> bool {
    let blocks = if (p as usize).is_multiple_of(16) {
        len / 16
    } else {
        0
    };
    let mut tail = 0u8;
    for i in blocks * 16..len {
        // SAFETY: `i < len`: inside the caller's range.
        tail |= unsafe { p.add(i).read_volatile() } ^ BYTE;
    }
    // SAFETY: `blocks` 16-byte blocks from the 16-aligned `p` lie inside the
    // caller's range.
    tail == 0 && unsafe { blocks_intact(p, blocks) }
}

/// Whether the `blocks` 16-byte blocks from the 16-aligned `p` hold the
/// poison: SSE2 compares, and'ed.
///
/// # Safety
/// `p..p + 16 * blocks` is readable memory; `p` is 16-byte aligned.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
unsafe fn blocks_intact(p: *const u8, blocks: usize) -> bool {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is enabled (the `cfg` above: part of x86-64's baseline),
    // so these intrinsics may run; each load is block `k < blocks`, which is
    // 16-aligned and inside the caller's range.
    unsafe {
        let poison = _mm_set1_epi8(BYTE as i8);
        let mut all = _mm_set1_epi8(-1);
        for k in 0..blocks {
            let v = p.cast::<__m128i>().add(k).read_volatile();
            all = _mm_and_si128(all, _mm_cmpeq_epi8(v, poison));
        }
        _mm_movemask_epi8(all) == 0xffff
    }
}

/// `blocks_intact` without SSE2: two words a block.
///
/// # Safety
/// As for the x86-64 `blocks_intact`.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
unsafe fn blocks_intact(p: *const u8, blocks: usize) -> bool {
    const WORD: u64 = u64::from_ne_bytes([BYTE; 8]);
    let mut acc = 0;
    for k in 0..2 * blocks {
        // SAFETY: word `k < 2 * blocks` is 8-aligned and inside the range.
        acc |= unsafe { p.cast::<u64>().add(k).read_volatile() } ^ WORD;
    }
    acc == 0
}

/// Where `p..p + len` differs from the poison, byte by byte (`intact`
/// found that it does): the offset of the first changed byte and how many
/// changed.
///
/// # Safety
/// As for [`check`].
#[cold]
#[inline(never)]
unsafe fn damaged(p: *const u8, len: usize) -> Option<(usize, usize)> {
    let mut first = None;
    let mut damaged = 0;
    for i in 0..len {
        // SAFETY: `i < len`.
        if unsafe { p.add(i).read_volatile() } != BYTE {
            first.get_or_insert(i);
            damaged += 1;
        }
    }
    first.map(|f| (f, damaged))
}

#[cfg(test)]
mod tests {
    #[test]
    fn poison_round_trip() {
        // 16-aligned, as slots are: blocks, then the tail.
        #[repr(C, align(16))]
        struct Aligned([u8; 512]);
        let mut buf = Box::new(Aligned([0; 512]));
        let p = buf.0.as_mut_ptr();
        // SAFETY: 512 bytes inside `buf`.
        unsafe {
            super::fill(p, 512);
            assert_eq!(super::check(p, 512), None);
            *p.add(300) = 0;
            *p.add(301) = 0;
            assert_eq!(super::check(p, 512), Some((300, 2)));
            // Damage in each byte of a block, across blocks, and in the
            // tail.
            for at in [0, 1, 7, 8, 15, 16, 31, 32, 63, 64, 505, 511] {
                super::fill(p, 512);
                *p.add(at) ^= 1;
                assert_eq!(super::check(p, 512), Some((at, 1)), "{at}");
                // Unaligned: byte by byte, and byte 0 is outside.
                let want = (at > 0).then(|| (at - 1, 1));
                assert_eq!(super::check(p.add(1), 511), want, "{at}");
                // Blocks and a tail of 4 bytes (500 = 31 * 16 + 4).
                let want = (at < 500).then_some((at, 1));
                assert_eq!(super::check(p, 500), want, "{at}");
            }
        }
    }
}
