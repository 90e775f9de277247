//! Recycling (warm allocations are free-list hits) and `trim`.

mod common;

use std::collections::HashSet;

use common::{assert_stamped, stamp};
use pagepool::{page_size, BufferPool, PageBuffer};

/// Bytes a guarded slab of `n` slots of `pages` pages maps (design.rs).
fn guarded_slab_bytes(n: usize, pages: usize) -> usize {
    (n * (pages + 1) + 1) * page_size()
}

#[test]
fn warm_cycles_are_all_hits_in_known_slots() {
    let page = page_size();
    let pool = BufferPool::new();

    // Warm the one-page class: the first allocation maps a slab.
    let first = pool.allocate_page_size_buffer(page).unwrap();
    let s = pool.stats();
    assert_eq!((s.misses, s.hits, s.slabs), (1, 0, 1));
    let slots = s.buffers_cached + 1;
    assert_eq!(slots, (1 << 20) / page, "a 1 MiB slab of one-page slots");

    // Take every slot of that slab once, to learn the set of addresses.
    let mut all: Vec<PageBuffer> = vec![first];
    all.extend((1..slots).map(|_| pool.allocate_page_size_buffer(page).unwrap()));
    let addrs: HashSet<usize> = all.iter().map(|b| b.as_ptr() as usize).collect();
    assert_eq!(addrs.len(), slots, "every slot handed out once");
    assert_eq!(pool.stats().misses, 1, "all from the first slab");

    // With every slot out, a released slot is the one handed out next.
    let back = all.swap_remove(17);
    let addr = back.as_ptr();
    drop(back);
    let again = pool.allocate_page_size_buffer(1).unwrap();
    assert_eq!(again.as_ptr(), addr, "the released slot is reused");
    drop(again);
    drop(all);

    let before = pool.stats();
    assert_eq!(before.buffers_in_use, 0);
    let sizes = [1, 100, page / 2, page - 1, page];
    for i in 0..10_000 {
        let size = sizes[i % sizes.len()];
        let mut b = pool.allocate_page_size_buffer(size).unwrap();
        assert_eq!(b.max_len(), size);
        assert!(
            addrs.contains(&(b.as_ptr() as usize)),
            "cycle {i}: {:p} is not a slot of the warm slab",
            b.as_ptr()
        );
        b.as_max_slice_mut()[size - 1] = i as u8;
        drop(b);
    }
    let after = pool.stats();
    assert_eq!(after.hits, before.hits + 10_000);
    assert_eq!(after.misses, before.misses);
    assert_eq!(after.releases, before.releases + 10_000);
    assert_eq!(after.allocations, before.allocations + 10_000);
    assert_eq!(after.bytes_reserved, before.bytes_reserved);
    assert_eq!(after.slabs, before.slabs);
    assert_eq!((after.buffers_in_use, after.buffers_cached), (0, slots));
}

#[test]
fn classes_recycle_independently() {
    let page = page_size();
    let pool = BufferPool::new();
    let small = pool.allocate_page_size_buffer(page).unwrap();
    let large = pool.allocate_page_size_buffer(64 * page).unwrap();
    let (small_addr, large_addr) = (small.as_ptr(), large.as_ptr());
    assert_eq!(pool.stats().misses, 2, "one slab per class");
    drop(small);
    drop(large);
    // A large request never gets a small slot and vice versa.
    for _ in 0..100 {
        let l = pool.allocate_page_size_buffer(60 * page).unwrap();
        let s = pool.allocate_page_size_buffer(10).unwrap();
        assert_eq!(l.slot_len(), 64 * page);
        assert_eq!(s.slot_len(), page);
        assert_ne!(l.as_ptr(), small_addr);
        assert_ne!(s.as_ptr(), large_addr);
    }
    let s = pool.stats();
    assert_eq!((s.misses, s.hits), (2, 200));
    let classes = pool.class_stats();
    let by_size = |bytes: usize| classes.iter().find(|c| c.slot_bytes == bytes).unwrap();
    assert_eq!(by_size(page).hits, 100);
    assert_eq!(by_size(64 * page).hits, 100);
}

#[test]
fn trim_gives_back_every_idle_slab() {
    let page = page_size();
    let pool = BufferPool::new();
    // 600 one-page buffers: three slabs of 256 slots; five eight-page buffers:
    // one slab of 32 slots.
    let small: Vec<_> = (0..600)
        .map(|_| pool.allocate_page_size_buffer(page).unwrap())
        .collect();
    let large: Vec<_> = (0..5)
        .map(|_| pool.allocate_page_size_buffer(8 * page).unwrap())
        .collect();
    let expected = 3 * guarded_slab_bytes(256, 1) + guarded_slab_bytes(32, 8);
    let s = pool.stats();
    assert_eq!((s.slabs, s.bytes_reserved), (4, expected), "{s:?}");
    assert_eq!(pool.trim(), 0, "nothing is idle while buffers are out");
    drop(small);
    drop(large);

    let reserved = pool.stats().bytes_reserved;
    assert_eq!(reserved, expected, "dropping buffers unmaps nothing");
    let trimmed = pool.trim();
    assert!(trimmed > 0);
    let s = pool.stats();
    assert_eq!(trimmed, reserved - s.bytes_reserved);
    assert_eq!((s.bytes_reserved, s.slabs, s.buffers_cached), (0, 0, 0));
    assert_eq!(s.trimmed_bytes, trimmed as u64);
    assert_eq!(pool.trim(), 0, "nothing left to trim");

    // Allocation after a trim maps afresh.
    let misses = s.misses;
    let mut b = pool.allocate_page_size_buffer(page).unwrap();
    stamp(b.as_max_slice_mut(), 1);
    let s = pool.stats();
    assert_eq!(s.misses, misses + 1);
    assert_eq!((s.slabs, s.bytes_reserved), (1, guarded_slab_bytes(256, 1)));
    assert_stamped(b.as_max_slice(), 1);
}

#[test]
fn trim_keeps_a_busy_slab_and_its_contents() {
    let page = page_size();
    let slab = guarded_slab_bytes(256, 1);
    let pool = BufferPool::new();
    let mut bufs: Vec<_> = (0..300)
        .map(|_| pool.allocate_page_size_buffer(page).unwrap())
        .collect();
    assert_eq!(pool.stats().bytes_reserved, 2 * slab);
    let mut kept = bufs.swap_remove(0);
    stamp(kept.as_max_slice_mut(), 42);
    drop(bufs);

    let trimmed = pool.trim();
    let s = pool.stats();
    assert_eq!(trimmed, slab, "only the idle slab goes");
    assert!(s.bytes_reserved >= slab, "the busy slab stays: {s:?}");
    assert_eq!((s.bytes_reserved, s.slabs), (slab, 1));
    assert_eq!((s.buffers_in_use, s.buffers_cached), (1, 255));
    assert_stamped(kept.as_max_slice(), 42);
    stamp(kept.as_max_slice_mut(), 43);

    // The busy slab's free slots went back on the free list: all hits.
    let hits = s.hits;
    let more: Vec<_> = (0..255)
        .map(|_| pool.allocate_page_size_buffer(page).unwrap())
        .collect();
    let s = pool.stats();
    assert_eq!((s.hits, s.slabs), (hits + 255, 1));
    assert!(more.iter().all(|b| b.as_ptr() != kept.as_ptr()));
    assert_stamped(kept.as_max_slice(), 43);
    drop(more);
    assert_eq!(pool.trim(), 0, "the kept buffer pins the slab");
    drop(kept);
    assert_eq!(pool.trim(), slab);
    assert_eq!(pool.stats().bytes_reserved, 0);
}
