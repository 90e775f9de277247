//! Size classes: which slot size serves a request.
//!
//! A class is a whole number of pages. Classes 1, 2, 3 and 4 pages are exact;
//! above four pages every doubling `(2^k, 2^(k+1)]` is cut into four equal
//! steps, so every power-of-two number of pages is a class and the classes
//! run 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, … pages, up
//! to the pool's largest buffer (which is a class of its own if it is not on
//! this grid).
//!
//! **Worst-case internal waste** (slot bytes a request cannot use): below one
//! page for classes of one to four pages (the unavoidable rounding up to a
//! page), and below one fifth of the slot above four pages: a request of `n`
//! pages with `2^k < n <= 2^(k+1)` lands in a class at most `q - 1` pages
//! larger, where `q = 2^(k-2)` and the class holds at least `5q` pages.
//!
//! The lookup is O(1): a leading-zeros count and two shifts, no search.

/// The class table of one pool.
#[derive(Debug)]
pub(crate) struct SizeClasses {
    /// log2 of the page size (pages are powers of two): requests are
    /// rounded with a shift, not a division.
    page_shift: u32,
    /// Pages in each class, ascending; the last is the largest buffer's pages.
    pages: Box<[usize]>,
}

/// Grid index of the smallest class holding `n >= 1` pages.
#[inline]
fn grid_index(n: usize) -> usize {
    debug_assert!(n >= 1);
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
        debug_assert!(page.is_power_of_two() && max_buffer_size > 0);
        let max_pages = max_buffer_size.div_ceil(page);
        let last = grid_index(max_pages);
        let pages = (0..=last)
            .map(|i| grid_pages(i).min(max_pages))
            .collect::<Box<[usize]>>();
        SizeClasses {
            page_shift: page.trailing_zeros(),
            pages,
        }
    }

    /// Index of the class serving a request of `bytes` (1 ..= largest).
    #[inline]
    pub(crate) fn index_for(&self, bytes: usize) -> usize {
        grid_index((bytes + (1 << self.page_shift) - 1) >> self.page_shift)
    }

    /// Number of classes.
    pub(crate) fn len(&self) -> usize {
        self.pages.len()
    }

    /// Pages in class `idx`.
    #[cfg(test)]
    pub(crate) fn pages(&self, idx: usize) -> usize {
        self.pages[idx]
    }

    /// Slot bytes of class `idx`.
    #[inline]
    pub(crate) fn slot_bytes(&self, idx: usize) -> usize {
        debug_assert!(idx < self.pages.len());
        // SAFETY: every class index in a pool comes from `index_for` of a
        // checked size or from a slot's metadata (set from such an index),
        // so it is below `len()`; this is on the release path of every call.
        unsafe { *self.pages.get_unchecked(idx) << self.page_shift }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(c.len(), 44);
        assert_eq!(c.slot_bytes(c.len() - 1), 16 << 20);
        assert_eq!(c.index_for(1), 0);
        assert_eq!(c.index_for(4096), 0);
        assert_eq!(c.index_for(4097), 1);
        assert_eq!(
            c.slot_bytes(c.index_for((1 << 20) + 3)),
            (1 << 20) + 4096 * 64
        );

        // Off-grid maximum: 9 pages is its own last class.
        let c = SizeClasses::new(4096, 9 * 4096 - 5);
        assert_eq!(c.pages(c.len() - 1), 9);
        assert_eq!(c.pages(c.index_for(9 * 4096 - 5)), 9);
        assert_eq!(c.pages(c.index_for(8 * 4096 + 1)), 9);
        assert_eq!(c.pages(c.index_for(8 * 4096)), 8);
    }
}
