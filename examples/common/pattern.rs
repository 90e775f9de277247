//! A byte pattern any range of which can be checked without a copy: byte
//! `i` of the pattern of `seed` is byte `i % 8` of the little-endian word
//! `splitmix64(seed + (i / 8) * 0x9E3779B97F4A7C15)` (`splitmix64` is the
//! finaliser of SplitMix64). `media_server`'s `wire.rs` says what uses it.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// FNV-1a, 64 bits.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The SplitMix64 finaliser.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Word `k` of the pattern of `seed`: bytes `8k..8k + 8`, little-endian.
#[inline]
pub fn pattern_word(seed: u64, k: u64) -> u64 {
    splitmix64(seed.wrapping_add(k.wrapping_mul(GOLDEN)))
}

#[inline]
fn word(seed: u64, k: u64) -> [u8; 8] {
    pattern_word(seed, k).to_le_bytes()
}

/// Writes the pattern of `seed` for offsets `offset..offset + out.len()`.
pub fn fill_pattern(seed: u64, offset: u64, out: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < out.len() {
        let w = word(seed, pos / 8);
        let from = (pos % 8) as usize;
        let n = (8 - from).min(out.len() - i);
        out[i..i + n].copy_from_slice(&w[from..from + n]);
        i += n;
        pos += n as u64;
    }
}

/// Checks `data` against the pattern of `seed` at `offset`; returns the index
/// in `data` of the first wrong byte.
pub fn check_pattern(seed: u64, offset: u64, data: &[u8]) -> Option<usize> {
    let mut pos = offset;
    let mut i = 0;
    while i < data.len() {
        let from = (pos % 8) as usize;
        let n = (8 - from).min(data.len() - i);
        // Whole words compare as words (no slice compare per 8 bytes).
        if n == 8 {
            let got = u64::from_le_bytes(data[i..i + 8].try_into().expect("8 bytes"));
            if got.to_le_bytes() == word(seed, pos / 8) {
                i += 8;
                pos += 8;
                continue;
            }
        }
        let w = word(seed, pos / 8);
        if data[i..i + n] != w[from..from + n] {
            let bad = (0..n).find(|&j| data[i + j] != w[from + j]).unwrap_or(0);
            return Some(i + bad);
        }
        i += n;
        pos += n as u64;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_checks_any_window() {
        let seed = fnv1a64(b"sample-1m.bin");
        let mut whole = vec![0u8; 100];
        fill_pattern(seed, 0, &mut whole);
        let mut part = vec![0u8; 37];
        fill_pattern(seed, 13, &mut part);
        assert_eq!(&whole[13..50], &part[..]);
        assert_eq!(check_pattern(seed, 13, &part), None);
        part[20] ^= 1;
        assert_eq!(check_pattern(seed, 13, &part), Some(20));
    }
}
