//! Stamps: word `i` of buffer `id` is unique for every (id, i), so a byte
//! from another buffer, or from another offset of this one, never passes.

/// Word `i` of the stamp of buffer `id` (`id < 2^40`, `i < 2^24`: buffers up
/// to 128 MiB): distinct before the multiplication by an odd constant, which
/// is a bijection, so distinct after it.
#[inline]
fn stamp_word(id: u64, i: usize) -> u64 {
    ((id << 24) ^ i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a_c3c3_a5a5_3c3c
}

/// Fills `bytes` (8-aligned: every buffer is page-aligned) with `id`'s stamp.
pub fn stamp(bytes: &mut [u8], id: u64) {
    // SAFETY: any bit pattern is a valid u64 and a valid u8.
    let (pre, words, post) = unsafe { bytes.align_to_mut::<u64>() };
    assert!(pre.is_empty(), "buffers are page-aligned");
    for (i, w) in words.iter_mut().enumerate() {
        *w = stamp_word(id, i);
    }
    let tail = stamp_word(id, words.len()).to_ne_bytes();
    post.copy_from_slice(&tail[..post.len()]);
}

/// The first offset of `bytes` not holding `id`'s stamp.
pub fn first_mismatch(bytes: &[u8], id: u64) -> Option<usize> {
    // SAFETY: as in `stamp`.
    let (pre, words, post) = unsafe { bytes.align_to::<u64>() };
    assert!(pre.is_empty(), "buffers are page-aligned");
    // A branch-free pass first (vectorises), then find the word.
    let bad = words
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, &w)| acc | (w ^ stamp_word(id, i)));
    if bad != 0 {
        let i = words
            .iter()
            .enumerate()
            .position(|(i, &w)| w != stamp_word(id, i))
            .expect("a differing word");
        let want = stamp_word(id, i).to_ne_bytes();
        let got = words[i].to_ne_bytes();
        return (0..8).find(|&k| got[k] != want[k]).map(|k| i * 8 + k);
    }
    let tail = stamp_word(id, words.len()).to_ne_bytes();
    (0..post.len())
        .find(|&k| post[k] != tail[k])
        .map(|k| words.len() * 8 + k)
}
