//! The byte cap (`PoolBuilder::max_bytes`): allocation fails with
//! `Error::Exhausted` instead of passing it, recovers when buffers come back,
//! and reclaims idle slabs of other classes.
//!
//! Slab sizes follow the documented layout (design.rs, slab.rs): with guard
//! pages a slab of `n` slots of `P` pages maps `n * (P + 1) + 1` pages, and
//! holds `slab_size / slot size` slots (1 ..= 4096) unless the cap allows fewer.

mod common;

use common::{assert_stamped, stamp};
use pagepool::{page_size, BufferPool, Error, PageBuffer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Bytes a guarded slab of `n` slots of `pages` pages maps.
fn guarded_slab_bytes(n: usize, pages: usize) -> usize {
    (n * (pages + 1) + 1) * page_size()
}

#[track_caller]
fn assert_exhausted(r: Result<PageBuffer, Error>, requested: usize, limit: usize) {
    match r {
        Err(Error::Exhausted {
            requested: r,
            limit: l,
        }) => assert_eq!((r, l), (requested, limit)),
        other => panic!("expected Exhausted {{ {requested}, {limit} }}, got {other:?}"),
    }
}

#[test]
fn cap_of_one_four_slot_slab() {
    let page = page_size();
    let cap = guarded_slab_bytes(4, 1);
    assert_eq!(cap, 9 * page);
    let pool = BufferPool::builder()
        .name("cap-4")
        .max_bytes(cap)
        .build()
        .unwrap();
    assert_eq!(pool.max_bytes(), Some(cap));

    let mut bufs = Vec::new();
    let err = loop {
        match pool.allocate_page_size_buffer(page) {
            Ok(mut b) => {
                stamp(b.as_max_slice_mut(), bufs.len() as u64);
                bufs.push(b);
                assert!(pool.stats().bytes_reserved <= cap);
                assert!(bufs.len() <= 4, "more slots than the cap allows");
            }
            Err(e) => break e,
        }
    };
    assert_eq!(
        bufs.len(),
        4,
        "the cap holds exactly one slab of four slots"
    );
    assert_exhausted(Err(err), page, cap);
    let s = pool.stats();
    assert_eq!(
        (s.bytes_reserved, s.slabs, s.misses, s.hits, s.exhausted),
        (cap, 1, 1, 3, 1)
    );
    assert_eq!(s.bytes_limit, Some(cap));

    // Smaller requests of the same class, and other classes, fail the same way
    // (no idle slab anywhere to trim), and each failure is counted.
    assert_exhausted(pool.allocate_page_size_buffer(100), 100, cap);
    assert_exhausted(pool.allocate_page_size_buffer(2 * page), 2 * page, cap);
    let s = pool.stats();
    assert_eq!(
        (s.exhausted, s.trimmed_bytes, s.bytes_reserved),
        (3, 0, cap)
    );
    assert_eq!(s.buffers_in_use, 4);
    assert_eq!(s.rejected, 0, "Exhausted is not a rejection");

    // One comes back: the next allocation is a hit in its slot.
    let back = bufs.remove(2);
    let addr = back.as_ptr();
    drop(back);
    let again = pool.allocate_page_size_buffer(page).unwrap();
    assert_eq!(again.as_ptr(), addr, "the only free slot is reused");
    let s = pool.stats();
    assert_eq!((s.hits, s.misses, s.bytes_reserved), (4, 1, cap));
    for (i, b) in bufs.iter().enumerate() {
        let id = if i < 2 { i } else { i + 1 } as u64;
        assert_stamped(b.as_max_slice(), id);
    }
}

#[test]
fn cap_fills_with_smaller_slabs_when_a_full_one_does_not_fit() {
    let page = page_size();
    // Slabs of two one-page slots (5 pages); a cap of 9 pages then holds one
    // such slab, plus one single-slot slab (3 pages), and then nothing.
    let cap = 9 * page;
    let pool = BufferPool::builder()
        .max_bytes(cap)
        .slab_size(2 * page)
        .build()
        .unwrap();
    let mut bufs = Vec::new();
    while let Ok(b) = pool.allocate_page_size_buffer(page) {
        bufs.push(b);
        assert!(pool.stats().bytes_reserved <= cap);
    }
    assert_eq!(bufs.len(), 3);
    let s = pool.stats();
    assert_eq!(
        (s.bytes_reserved, s.slabs, s.misses, s.exhausted),
        (guarded_slab_bytes(2, 1) + guarded_slab_bytes(1, 1), 2, 2, 1)
    );
}

#[test]
fn smallest_cap_holds_one_page_slot_and_nothing_larger() {
    let page = page_size();
    let cap = 3 * page;
    let pool = BufferPool::builder().max_bytes(cap).build().unwrap();
    let one = pool.allocate_page_size_buffer(page).unwrap();
    assert_eq!(pool.stats().bytes_reserved, cap);
    assert_exhausted(pool.allocate_page_size_buffer(1), 1, cap);
    drop(one);
    // A two-page slot needs four pages: even after giving the idle one-page
    // slab back it does not fit.
    assert_exhausted(pool.allocate_page_size_buffer(2 * page), 2 * page, cap);
    let s = pool.stats();
    assert!(s.bytes_reserved <= cap, "{s:?}");
    assert_eq!(s.exhausted, 2);
    // And the pool still serves what fits.
    let again = pool.allocate_page_size_buffer(page).unwrap();
    assert_eq!(again.max_len(), page);
    assert!(pool.stats().bytes_reserved <= cap);
}

#[test]
fn cap_reclaims_idle_slabs_of_another_class() {
    let page = page_size();
    let cap = guarded_slab_bytes(4, 1);
    let pool = BufferPool::builder().max_bytes(cap).build().unwrap();

    // Class A (one page) takes the whole cap.
    let a: Vec<_> = (0..4)
        .map(|_| pool.allocate_page_size_buffer(page).unwrap())
        .collect();
    assert_eq!(pool.stats().bytes_reserved, cap);

    // Control: while A's slab is busy, class B (two pages) cannot get room.
    assert_exhausted(pool.allocate_page_size_buffer(2 * page), 2 * page, cap);
    assert_eq!(pool.stats().trimmed_bytes, 0);

    // Once A's buffers are all back its slab is idle, and B takes its place.
    drop(a);
    let s = pool.stats();
    assert_eq!((s.buffers_cached, s.bytes_reserved), (4, cap));
    let mut b = pool
        .allocate_page_size_buffer(2 * page)
        .expect("idle slabs of class A make room for class B");
    stamp(b.as_max_slice_mut(), 7);
    let s = pool.stats();
    assert!(s.trimmed_bytes > 0, "{s:?}");
    assert_eq!(s.trimmed_bytes, cap as u64, "A's whole slab went back");
    // B's slab: as many two-page slots as fit in 9 pages: 2 (7 pages).
    assert_eq!(s.bytes_reserved, guarded_slab_bytes(2, 2));
    assert!(s.bytes_reserved <= cap);
    assert_eq!(s.slabs, 1);
    let classes = pool.class_stats();
    let of = |bytes: usize| classes.iter().find(|c| c.slot_bytes == bytes).unwrap();
    assert_eq!((of(page).slabs, of(page).buffers_cached), (0, 0));
    assert_eq!(of(2 * page).slabs, 1);
    assert_stamped(b.as_max_slice(), 7);
}

#[test]
fn cap_holds_under_random_churn() {
    let page = page_size();
    for (seed, cap) in [(1u64, 64 * page), (2, 300 * page), (3, 1 << 20)] {
        let pool = BufferPool::builder()
            .max_bytes(cap)
            .slab_size(16 * page)
            .build()
            .unwrap();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut held: Vec<PageBuffer> = Vec::new();
        let mut exhausted = 0u64;
        for op in 0..3_000u64 {
            if held.is_empty() || rng.random_ratio(3, 5) {
                let size = rng.random_range(1..=16 * page);
                match pool.allocate_page_size_buffer(size) {
                    Ok(mut b) => {
                        stamp(b.as_max_slice_mut(), op);
                        held.push(b);
                    }
                    Err(Error::Exhausted { requested, limit }) => {
                        assert_eq!((requested, limit), (size, cap));
                        exhausted += 1;
                    }
                    Err(e) => panic!("unexpected error {e}"),
                }
            } else {
                let i = rng.random_range(0..held.len());
                drop(held.swap_remove(i));
            }
            let s = pool.stats();
            assert!(s.bytes_reserved <= cap, "op {op}: {s:?}");
            assert!(s.bytes_in_use <= s.bytes_reserved, "op {op}: {s:?}");
        }
        let s = pool.stats();
        assert!(exhausted > 0, "cap {cap} was never reached; test too weak");
        assert_eq!(s.exhausted, exhausted);
        assert_eq!(s.buffers_in_use, held.len());
        drop(held);
        assert_eq!(pool.stats().buffers_in_use, 0);
    }
}
