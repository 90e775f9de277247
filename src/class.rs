//! Size classes: which slot size serves a request.
//!
//! **Page classes** (`allocate_page_size_buffer`, and `allocate_buffer` above
//! [`SMALL_MAX`]) are whole numbers of pages. Classes 1, 2, 3 and 4 pages are
//! exact; above four pages every doubling `(2^k, 2^(k+1)]` is cut into four
//! equal steps, so every power-of-two number of pages is a class and the
//! classes run 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, …
//! pages, up to the pool's largest buffer (which is a class of its own if it
//! is not on this grid).
//!
//! **Worst-case internal waste** (slot bytes a request cannot use): below one
//! page for classes of one to four pages (the unavoidable rounding up to a
//! page), and below one fifth of the slot above four pages: a request of `n`
//! pages with `2^k < n <= 2^(k+1)` lands in a class at most `q - 1` pages
//! larger, where `q = 2^(k-2)` and the class holds at least `5q` pages.
//!
//! **Small classes** (`allocate_buffer` up to [`SMALL_MAX`] bytes: RTP and
//! TS packets, RTCP, headers) are [`SMALL_SIZES`]: multiples of 64 bytes, so
//! every small buffer is 64-byte aligned, with a waste under a third of the
//! slot above 128 bytes and under half below (1536 holds a 1500-byte RTP
//! packet and a 7 × 188 = 1316-byte TS payload). They come first in the table, so the pool's class
//! list, stats and metrics run smallest first.
//!
//! Both lookups are O(1): a 257-entry table up to 256 pages (then a
//! leading-zeros count and two shifts) for pages, a 33-entry table indexed
//! by 64-byte steps for small sizes; no search.

/// Slot sizes of the small classes, in bytes.
pub const SMALL_SIZES: [usize; 10] = [64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048];
/// The largest request `allocate_buffer` serves from a small class.
pub const SMALL_MAX: usize = SMALL_SIZES[SMALL_SIZES.len() - 1];

/// Small class index by `ceil(bytes / 64)`, for `1 <= bytes <= SMALL_MAX`.
const SMALL_INDEX: [u8; SMALL_MAX / 64 + 1] = {
    let mut table = [0u8; SMALL_MAX / 64 + 1];
    let mut steps = 1;
    while steps < table.len() {
        let mut class = 0;
        while SMALL_SIZES[class] < steps * 64 {
            class += 1;
        }
        table[steps] = class as u8;
        steps += 1;
    }
    table
};

// Small slots keep 64-byte alignment (sizes and red zones are multiples of
// 64) and stay below any page size.
const _: () = {
    let mut i = 0;
    while i < SMALL_SIZES.len() {
        assert!(SMALL_SIZES[i].is_multiple_of(64));
        assert!(i == 0 || SMALL_SIZES[i - 1] < SMALL_SIZES[i]);
        i += 1;
    }
    assert!(SMALL_MAX < 4096);
};

/// A size class of one pool's table. Invariant: below that table's number
/// of classes (made only by its lookups, or decoded from the metadata of a
/// slot of its slabs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ClassIdx(usize);

impl ClassIdx {
    /// The index, for tables with one entry per class.
    #[inline(always)]
    pub(crate) fn get(self) -> usize {
        self.0
    }

    /// A class index read back from where a `ClassIdx` was stored.
    ///
    /// # Safety
    /// `raw` is `c.get()` of a `ClassIdx` `c` of the table it will be used
    /// with.
    #[inline(always)]
    pub(crate) unsafe fn from_stored(raw: usize) -> ClassIdx {
        ClassIdx(raw)
    }
}

/// The class table of one pool: the small classes, then the page classes.
#[derive(Debug)]
pub(crate) struct SizeClasses {
    /// The largest request served (the pool's `max_buffer_size`, at least 1).
    max: usize,
    /// log2 of the page size (pages are powers of two): requests are
    /// rounded with a shift, not a division.
    page_shift: u32,
    /// Number of small classes (they come first).
    small: usize,
    /// Slot bytes of each class, ascending; the last is the largest
    /// buffer's pages.
    bytes: Box<[usize]>,
    /// `small + GRID_TABLE[m]` at index `m`: the class of a request of
    /// `m + 1` pages, read with one load (entries past the largest class are
    /// never read: `class_for` checks `max` first).
    page_index: [u16; GRID_TABLE_PAGES],
}

/// Grid index of the smallest class holding `n >= 1` pages: a table lookup
/// up to [`GRID_TABLE_PAGES`] (1 MiB of 4 KiB pages), computed above.
#[inline]
fn grid_index(n: usize) -> usize {
    debug_assert!(n >= 1);
    grid_index_above(n - 1)
}

/// `grid_index(m + 1)`: takes the page count less one, which a request's
/// byte count gives with one shift (`(bytes - 1) >> page_shift`).
#[inline(always)]
fn grid_index_above(m: usize) -> usize {
    match GRID_TABLE.get(m) {
        Some(&idx) => idx as usize,
        None => grid_index_computed(m + 1),
    }
}

/// Page counts `grid_index` looks up rather than computes.
const GRID_TABLE_PAGES: usize = 256;

/// `grid_index(m + 1)` at index `m`, for `m < GRID_TABLE_PAGES`.
const GRID_TABLE: [u8; GRID_TABLE_PAGES] = {
    let mut table = [0u8; GRID_TABLE_PAGES];
    let mut m = 0;
    while m < GRID_TABLE_PAGES {
        table[m] = grid_index_computed(m + 1) as u8;
        m += 1;
    }
    table
};

/// [`grid_index`] by arithmetic: a leading-zeros count and two shifts.
const fn grid_index_computed(n: usize) -> usize {
    if n <= 4 {
        return n - 1;
    }
    // 2^lg < n <= 2^(lg+1), lg >= 2; steps of q = 2^(lg-2) pages.
    let lg = (usize::BITS - 1 - (n - 1).leading_zeros()) as usize;
    let shift = lg - 2;
    let steps = (n + (1 << shift) - 1) >> shift; // ceil(n / q), in 5..=8
    4 + shift * 4 + (steps - 5)
}

/// Pages of the class at grid index `idx` (inverse of [`grid_index`]).
#[inline]
fn grid_pages(idx: usize) -> usize {
    if idx < 4 {
        return idx + 1;
    }
    let shift = (idx - 4) / 4;
    let step = (idx - 4) % 4;
    (5 + step) << shift
}

impl SizeClasses {
    /// The classes for a pool whose largest buffer is `max_buffer_size`
    /// bytes (at least one byte), with pages of `page` bytes.
    pub(crate) fn new(page: usize, max_buffer_size: usize) -> Self {
        debug_assert!(page.is_power_of_two() && page > SMALL_MAX && max_buffer_size > 0);
        // The small classes up to the first that holds the largest buffer.
        let small = SMALL_INDEX[max_buffer_size.min(SMALL_MAX).div_ceil(64)] as usize + 1;
        let max_pages = max_buffer_size.div_ceil(page);
        let last = grid_index(max_pages);
        let bytes = SMALL_SIZES[..small]
            .iter()
            .copied()
            .chain((0..=last).map(|i| grid_pages(i).min(max_pages) * page))
            .collect::<Box<[usize]>>();
        // Classes fit `u16`: `ClassIdx` has `CLASS_BITS` (13) bits.
        let page_index = std::array::from_fn(|m| (small + GRID_TABLE[m] as usize) as u16);
        SizeClasses {
            max: max_buffer_size,
            page_shift: page.trailing_zeros(),
            small,
            bytes,
            page_index,
        }
    }

    /// The class serving a request of `bytes`: a small class for
    /// `small` requests up to [`SMALL_MAX`], a page class otherwise; `None`
    /// for 0 bytes or more than the largest buffer. One comparison checks
    /// both bounds (0 wraps to `usize::MAX`).
    #[inline(always)]
    pub(crate) fn class_for(&self, bytes: usize, small: bool) -> Option<ClassIdx> {
        if bytes.wrapping_sub(1) >= self.max {
            return None;
        }
        Some(ClassIdx(if small && bytes <= SMALL_MAX {
            self.small_index_for(bytes)
        } else {
            self.index_for(bytes)
        }))
    }

    /// Index of the page class serving a request of `bytes` (1 ..= largest).
    #[inline(always)]
    fn index_for(&self, bytes: usize) -> usize {
        debug_assert!(bytes >= 1 && bytes <= self.max);
        // Whole pages needed, less one: `ceil(bytes / page) - 1`.
        let m = (bytes - 1) >> self.page_shift;
        match self.page_index.get(m) {
            Some(&idx) => usize::from(idx),
            None => self.small + grid_index_computed(m + 1),
        }
    }

    /// Index of the small class serving a request of `bytes`
    /// (`1 ..= min(SMALL_MAX, largest)`).
    #[inline(always)]
    fn small_index_for(&self, bytes: usize) -> usize {
        debug_assert!((1..=SMALL_MAX).contains(&bytes));
        SMALL_INDEX[bytes.div_ceil(64)] as usize
    }

    /// Number of classes.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Every class, smallest first.
    pub(crate) fn all(&self) -> impl Iterator<Item = ClassIdx> {
        (0..self.bytes.len()).map(ClassIdx)
    }

    /// Whether class `idx` is a small (sub-page, packed) class.
    #[inline]
    pub(crate) fn is_small(&self, idx: ClassIdx) -> bool {
        idx.0 < self.small
    }

    /// Pages in page class `idx`.
    #[cfg(test)]
    fn pages(&self, idx: usize) -> usize {
        self.bytes[idx] >> self.page_shift
    }

    /// Slot bytes of class `idx`.
    #[inline]
    pub(crate) fn slot_bytes(&self, idx: ClassIdx) -> usize {
        self.bytes[idx.0]
    }

    /// [`SizeClasses::slot_bytes`] without the bounds check, for the
    /// release's hot path.
    ///
    /// # Safety
    /// `idx` is a class of this table (the `ClassIdx` invariant, for the
    /// table it belongs to).
    #[inline(always)]
    pub(crate) unsafe fn slot_bytes_unchecked(&self, idx: ClassIdx) -> usize {
        debug_assert!(idx.0 < self.bytes.len());
        // SAFETY: below the number of classes (caller's contract).
        unsafe { *self.bytes.get_unchecked(idx.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_table_agrees_with_the_arithmetic() {
        for n in 1..=GRID_TABLE_PAGES {
            assert_eq!(grid_index(n), grid_index_computed(n), "{n} pages");
        }
        assert_eq!(
            grid_index(GRID_TABLE_PAGES + 1),
            grid_index_computed(GRID_TABLE_PAGES + 1)
        );
    }

    #[test]
    fn grid_round_trips_and_contains_powers_of_two() {
        for idx in 0..60 {
            assert_eq!(grid_index(grid_pages(idx)), idx, "idx {idx}");
        }
        for k in 0..20 {
            let n = 1usize << k;
            assert_eq!(grid_pages(grid_index(n)), n, "2^{k} pages is a class");
        }
        let first: Vec<usize> = (0..17).map(grid_pages).collect();
        assert_eq!(
            first,
            [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40]
        );
    }

    #[test]
    fn every_request_fits_and_waste_is_bounded() {
        for n in 1..=70_000usize {
            let class = grid_pages(grid_index(n));
            assert!(class >= n, "{n} pages fit");
            if n > 4 {
                assert!((class - n) * 5 < class, "waste under a fifth at {n}");
            } else {
                assert_eq!(class, n);
            }
            if n > 1 {
                let smaller = grid_pages(grid_index(n) - 1);
                assert!(smaller < n, "smallest class that fits {n}");
            }
        }
    }

    #[test]
    fn table_ends_at_the_largest_buffer() {
        let c = SizeClasses::new(4096, 16 << 20);
        let small = SMALL_SIZES.len();
        assert_eq!(c.len(), small + 44);
        assert_eq!(c.bytes[c.len() - 1], 16 << 20);
        assert_eq!(c.index_for(1), small);
        assert_eq!(c.index_for(4096), small);
        assert_eq!(c.index_for(4097), small + 1);
        assert_eq!(c.bytes[c.index_for((1 << 20) + 3)], (1 << 20) + 4096 * 64);

        // Off-grid maximum: 9 pages is its own last class.
        let c = SizeClasses::new(4096, 9 * 4096 - 5);
        assert_eq!(c.pages(c.len() - 1), 9);
        assert_eq!(c.pages(c.index_for(9 * 4096 - 5)), 9);
        assert_eq!(c.pages(c.index_for(8 * 4096 + 1)), 9);
        assert_eq!(c.pages(c.index_for(8 * 4096)), 8);
    }

    #[test]
    fn page_classes_from_the_pool_table_agree_with_the_arithmetic() {
        // A pool with every small class and one with a few (a small largest
        // buffer), across the table's end at 256 pages.
        for max in [(2 << 20) + 5, 300] {
            let c = SizeClasses::new(4096, max);
            let edges = [4096, 4097, 256 * 4096, 256 * 4096 + 1, max];
            let sizes = (1..=max).step_by(1021).chain(edges);
            for bytes in sizes.filter(|&b| b <= max) {
                let by_arithmetic = c.small + grid_index_computed(bytes.div_ceil(4096));
                assert_eq!(
                    c.index_for(bytes),
                    by_arithmetic,
                    "{bytes} bytes, max {max}"
                );
            }
        }
    }

    #[test]
    fn small_classes_fit_every_packet_size() {
        let c = SizeClasses::new(4096, 16 << 20);
        assert_eq!(c.small, SMALL_SIZES.len());
        for bytes in 1..=SMALL_MAX {
            let idx = c.small_index_for(bytes);
            assert!(c.is_small(ClassIdx(idx)));
            let slot = c.bytes[idx];
            assert!(slot >= bytes, "{bytes} fits");
            assert!(
                idx == 0 || c.bytes[idx - 1] < bytes,
                "smallest that fits {bytes}"
            );
            if bytes > 128 {
                assert!((slot - bytes) * 3 < slot, "waste under a third at {bytes}");
            } else if bytes > 64 {
                assert!((slot - bytes) * 2 < slot, "waste under half at {bytes}");
            }
        }
        assert_eq!(c.bytes[c.small_index_for(1500)], 1536);
        assert_eq!(c.bytes[c.small_index_for(1316)], 1536);
        assert!(!c.is_small(ClassIdx(c.index_for(1))));
        assert_eq!(c.class_for(0, true), None);
        assert_eq!(c.class_for((16 << 20) + 1, false), None);
        assert_eq!(
            c.class_for(1500, true),
            Some(ClassIdx(c.small_index_for(1500)))
        );
        assert_eq!(c.class_for(1500, false), Some(ClassIdx(c.index_for(1500))));
        // A pool of tiny buffers has only the small classes it can use.
        let tiny = SizeClasses::new(4096, 100);
        assert_eq!(tiny.small, 2);
        assert_eq!(tiny.len(), 3);
        assert_eq!(tiny.bytes[tiny.small_index_for(100)], 128);
    }
}
