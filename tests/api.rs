//! The public API: buffer shape and lengths, bad input, builder checks, trait
//! implementations, and buffers outliving every pool handle.

mod common;

use std::fmt::Debug;

use common::{assert_stamped, in_child, is_mapped, run_child, stamp, stamp_byte};
use pagepool::{
    page_size, BufferPool, Error, PageBuffer, PoolBuilder, PoolStats, DEFAULT_MAX_BUFFER_SIZE,
    SIZE_LIMIT, SMALL_SIZES,
};

const MIB: usize = 1 << 20;

/// Everything the API promises about a fresh buffer of `size` bytes.
fn check_buffer(pool: &BufferPool, size: usize, id: u64) {
    let page = page_size();
    let mut buf = pool
        .allocate_page_size_buffer(size)
        .unwrap_or_else(|e| panic!("allocating {size} bytes: {e}"));

    // Shape.
    assert_eq!(buf.as_ptr() as usize % page, 0, "{size}: page-aligned");
    assert_eq!(buf.max_len(), size, "{size}: max_len is the request");
    assert_eq!(buf.len(), 0, "{size}: fresh buffers are empty");
    assert!(buf.is_empty());
    assert_eq!(buf.remaining(), size);
    assert!(buf.as_slice().is_empty() && buf[..].is_empty());
    let slot = buf.slot_len();
    assert!(slot >= size, "{size}: slot {slot} holds the buffer");
    assert_eq!(slot % page, 0, "{size}: slot {slot} is whole pages");
    assert_eq!(pool.slot_size_for(size), Some(slot));
    assert!(pool.size_classes().contains(&slot));
    // Waste bound from class.rs: exact up to four pages, under a fifth above.
    let (need, got) = (size.div_ceil(page), slot / page);
    if need <= 4 {
        assert_eq!(got, need, "{size}: classes of 1-4 pages are exact");
    } else {
        assert!(
            (got - need) * 5 < got,
            "{size}: slot {got} pages for {need}"
        );
    }

    // set_len within and beyond the maximum.
    buf.set_len(size).expect("set_len(max_len) is allowed");
    assert_eq!(
        (buf.len(), buf.is_empty(), buf.remaining()),
        (size, false, 0)
    );
    let half = size / 2;
    buf.set_len(half).expect("shrinking is allowed");
    match buf.set_len(size + 1) {
        Err(Error::LengthExceedsMax { requested, max }) => {
            assert_eq!((requested, max), (size + 1, size));
        }
        other => panic!("{size}: set_len(max + 1) gave {other:?}"),
    }
    assert_eq!(buf.len(), half, "a failed set_len leaves the length alone");
    assert!(matches!(
        buf.set_len(usize::MAX),
        Err(Error::LengthExceedsMax { requested: usize::MAX, max }) if max == size
    ));
    assert_eq!(buf.len(), half);

    // The whole maximum is writable and reads back.
    stamp(buf.as_max_slice_mut(), id);
    assert_stamped(buf.as_max_slice(), id);
    assert_eq!(buf.as_max_slice().len(), size);

    // Deref shows exactly `len` bytes, the first ones of the max slice.
    assert_eq!(buf.len(), half);
    assert_eq!(buf[..].len(), half);
    assert_eq!(buf.as_ref().len(), half);
    assert_eq!((*buf).as_ptr(), buf.as_ptr());
    assert_eq!(&buf[..], &buf.as_max_slice()[..half]);
    let (ptr, len) = buf.buffer_and_length();
    assert_eq!((ptr.cast_const(), len), (buf.as_ptr(), half));
    // DerefMut writes land in the same bytes.
    if half > 0 {
        buf[0] ^= 0xff;
        assert_eq!(buf.as_max_slice()[0], !stamp_byte(id, 0));
        buf.as_mut()[0] ^= 0xff;
    }
    assert_stamped(buf.as_max_slice(), id);

    // extend_from_slice: past the maximum nothing is written; up to it, all.
    let keep = size.saturating_sub(2);
    buf.set_len(keep).unwrap();
    let too_much = [0xffu8; 3];
    match buf.extend_from_slice(&too_much) {
        Err(Error::LengthExceedsMax { requested, max }) => {
            assert_eq!((requested, max), (keep + 3, size));
        }
        other => panic!("{size}: extending past max gave {other:?}"),
    }
    assert_eq!(buf.len(), keep, "a failed extend leaves the length alone");
    assert_stamped(buf.as_max_slice(), id); // nothing written
    let fits = vec![0xffu8; size - keep];
    buf.extend_from_slice(&fits)
        .expect("extending up to max_len");
    assert_eq!(buf.len(), size);
    assert_eq!(&buf[keep..], &fits[..]);
    assert_stamped(&buf[..keep], id);
    buf.extend_from_slice(&[])
        .expect("an empty extend at max_len is fine");
    assert!(matches!(
        buf.extend_from_slice(&[1]),
        Err(Error::LengthExceedsMax { requested, max }) if requested == size + 1 && max == size
    ));
    buf.clear();
    assert!(buf.is_empty());
}

#[test]
fn shape_and_lengths_default_pool() {
    let page = page_size();
    let pool = BufferPool::new();
    assert_eq!(pool.max_buffer_size(), DEFAULT_MAX_BUFFER_SIZE);
    assert_eq!(DEFAULT_MAX_BUFFER_SIZE, 16 * MIB);
    let sizes = [
        1,
        page - 1,
        page,
        page + 1,
        MIB + 3,
        DEFAULT_MAX_BUFFER_SIZE - 1,
        DEFAULT_MAX_BUFFER_SIZE,
    ];
    for (id, &size) in sizes.iter().enumerate() {
        check_buffer(&pool, size, id as u64);
    }
    // Twice, so the second round runs on recycled slots.
    for (id, &size) in sizes.iter().enumerate() {
        check_buffer(&pool, size, 100 + id as u64);
    }
    let s = pool.stats();
    assert_eq!(s.buffers_in_use, 0);
    assert_eq!(s.allocations, 2 * sizes.len() as u64);
    assert_eq!(s.releases, s.allocations);
    assert_eq!(s.hits + s.misses, s.allocations);
    assert!(s.hits >= sizes.len() as u64, "second round reuses: {s:?}");
}

#[test]
fn shape_and_lengths_custom_max_buffer_size() {
    let page = page_size();
    // 37 pages and a bit: 38 pages, between the grid classes 32 and 40, so the
    // largest class is off the grid.
    let small_max = 37 * page + 11;
    // A larger, also off-grid maximum: 5121 pages.
    let large_max = 20 * MIB + 1;
    for max in [small_max, large_max] {
        let pool = BufferPool::builder()
            .name("custom-max")
            .max_buffer_size(max)
            .build()
            .unwrap();
        assert_eq!(pool.max_buffer_size(), max);
        // The small classes (for `allocate_buffer`) come first.
        let all = pool.size_classes();
        assert_eq!(all[..SMALL_SIZES.len()], SMALL_SIZES);
        let classes = all[SMALL_SIZES.len()..].to_vec();
        assert_eq!(classes.first(), Some(&page));
        assert_eq!(classes.last(), Some(&(max.div_ceil(page) * page)));
        assert!(classes.windows(2).all(|w| w[0] < w[1]), "{classes:?}");
        assert!(classes.iter().all(|c| c % page == 0));
        for (id, size) in [1, page - 1, page, page + 1, 3 * page, max - 1, max]
            .into_iter()
            .enumerate()
        {
            check_buffer(&pool, size, id as u64);
        }
        assert_eq!(
            pool.allocate_page_size_buffer(max).unwrap().slot_len(),
            max.div_ceil(page) * page,
            "the largest buffer's slot is the maximum rounded up to pages"
        );
        match pool.allocate_page_size_buffer(max + 1) {
            Err(Error::TooLarge { requested, max: m }) => {
                assert_eq!((requested, m), (max + 1, max))
            }
            other => panic!("max + 1 gave {other:?}"),
        }
        if max < MIB + 3 {
            assert!(matches!(
                pool.allocate_page_size_buffer(MIB + 3),
                Err(Error::TooLarge { requested, max: m }) if requested == MIB + 3 && m == max
            ));
        } else {
            check_buffer(&pool, MIB + 3, 99);
        }
    }
}

#[test]
fn bad_sizes_are_rejected_and_counted() {
    let pool = BufferPool::new();
    let max = pool.max_buffer_size();
    assert!(matches!(
        pool.allocate_page_size_buffer(0),
        Err(Error::ZeroSize)
    ));
    match pool.allocate_page_size_buffer(usize::MAX) {
        Err(Error::TooLarge { requested, max: m }) => assert_eq!((requested, m), (usize::MAX, max)),
        other => panic!("usize::MAX gave {other:?}"),
    }
    match pool.allocate_page_size_buffer(max + 1) {
        Err(Error::TooLarge { requested, max: m }) => assert_eq!((requested, m), (max + 1, max)),
        other => panic!("max + 1 gave {other:?}"),
    }
    let s = pool.stats();
    assert_eq!(s.rejected, 3);
    assert_eq!((s.allocations, s.exhausted, s.os_errors), (0, 0, 0));
    assert_eq!(s.bytes_reserved, 0, "rejections map nothing");
    assert_eq!(pool.slot_size_for(0), None);
    assert_eq!(pool.slot_size_for(max + 1), None);
    assert_eq!(pool.slot_size_for(usize::MAX), None);
    assert_eq!(pool.slot_size_for(max), Some(max));

    // The pool is still usable, at both ends of the range.
    let small = pool.allocate_page_size_buffer(1).unwrap();
    let large = pool.allocate_page_size_buffer(max).unwrap();
    assert_eq!((small.max_len(), large.max_len()), (1, max));
    let s = pool.stats();
    assert_eq!((s.rejected, s.allocations, s.buffers_in_use), (3, 2, 2));

    // The errors read well and convert to io::Error.
    let e = pool.allocate_page_size_buffer(0).unwrap_err();
    assert!(!e.to_string().is_empty());
    assert_eq!(
        std::io::Error::from(e).kind(),
        std::io::ErrorKind::InvalidInput
    );
    assert_eq!(pool.stats().rejected, 4);
}

#[test]
fn builder_rejects_invalid_settings() {
    let page = page_size();
    let invalid = |b: PoolBuilder, what: &str| match b.build() {
        Err(Error::InvalidConfig(why)) => assert!(!why.is_empty(), "{what}"),
        other => panic!("{what}: expected InvalidConfig, got {other:?}"),
    };
    invalid(
        BufferPool::builder().max_buffer_size(0),
        "max_buffer_size(0)",
    );
    invalid(
        BufferPool::builder().max_buffer_size(usize::MAX),
        "max_buffer_size(usize::MAX)",
    );
    invalid(
        BufferPool::builder().max_buffer_size(SIZE_LIMIT + 1),
        "max_buffer_size(SIZE_LIMIT + 1)",
    );
    invalid(BufferPool::builder().slab_size(0), "slab_size(0)");
    invalid(
        BufferPool::builder().slab_size(usize::MAX),
        "slab_size(usize::MAX)",
    );
    invalid(BufferPool::builder().max_bytes(1), "max_bytes(1)");
    invalid(BufferPool::builder().max_bytes(0), "max_bytes(0)");
    // With guards the smallest slab is a page and its two guards.
    invalid(
        BufferPool::builder().max_bytes(3 * page - 1),
        "max_bytes below one guarded page",
    );
    invalid(
        BufferPool::builder().guard_pages(false).max_bytes(page - 1),
        "max_bytes below one page",
    );

    // The boundaries themselves are fine.
    let ok = |b: PoolBuilder| b.build().expect("valid configuration");
    ok(BufferPool::builder().max_buffer_size(1));
    ok(BufferPool::builder().max_buffer_size(SIZE_LIMIT));
    ok(BufferPool::builder().slab_size(1));
    ok(BufferPool::builder().slab_size(SIZE_LIMIT));
    ok(BufferPool::builder().max_bytes(3 * page));
    ok(BufferPool::builder().guard_pages(false).max_bytes(page));
}

#[test]
fn builder_settings_are_reported() {
    let pool = BufferPool::new();
    assert_eq!(pool.name(), "default");
    assert_eq!(pool.max_bytes(), None);
    assert!(pool.guard_pages());
    assert_eq!(
        pool.stats(),
        PoolStats::default(),
        "nothing happens at build"
    );

    let pool = BufferPool::builder()
        .name("media")
        .max_bytes(256 * MIB)
        .max_buffer_size(4 * MIB)
        .guard_pages(false)
        .build()
        .unwrap();
    assert_eq!(pool.name(), "media");
    assert_eq!(pool.max_bytes(), Some(256 * MIB));
    assert_eq!(pool.max_buffer_size(), 4 * MIB);
    assert!(!pool.guard_pages());
    assert_eq!(pool.stats().bytes_limit, Some(256 * MIB));
    assert_eq!(pool.stats().bytes_reserved, 0);

    let guarded = BufferPool::builder()
        .guard_pages(false)
        .guard_mechanism(pagepool::GuardMechanism::Mprotect)
        .build()
        .unwrap();
    assert!(
        guarded.guard_pages(),
        "choosing a mechanism turns guards on"
    );
    let toggled = BufferPool::builder()
        .guard_pages(false)
        .guard_pages(true)
        .build()
        .unwrap();
    assert!(toggled.guard_pages());
}

#[test]
fn unguarded_pools_map_no_guard_pages() {
    let page = page_size();
    let pool = BufferPool::builder()
        .guard_pages(false)
        .slab_size(4 * page)
        .build()
        .unwrap();
    let bufs: Vec<_> = (0..4)
        .map(|_| pool.allocate_page_size_buffer(page).unwrap())
        .collect();
    let s = pool.stats();
    assert_eq!((s.slabs, s.bytes_reserved), (1, 4 * page), "{s:?}");
    let mut addrs: Vec<usize> = bufs.iter().map(|b| b.as_ptr() as usize).collect();
    addrs.sort_unstable();
    assert!(
        addrs.windows(2).all(|w| w[1] - w[0] == page),
        "unguarded slots are packed: {addrs:x?}"
    );
}

#[test]
fn guarded_slots_leave_a_page_between_buffers() {
    let page = page_size();
    let pool = BufferPool::builder().slab_size(4 * page).build().unwrap();
    let bufs: Vec<_> = (0..4)
        .map(|_| pool.allocate_page_size_buffer(page).unwrap())
        .collect();
    let s = pool.stats();
    // (n * (P + 1) + 1) pages for n = 4 slots of P = 1 page.
    assert_eq!((s.slabs, s.bytes_reserved), (1, 9 * page), "{s:?}");
    let mut addrs: Vec<usize> = bufs.iter().map(|b| b.as_ptr() as usize).collect();
    addrs.sort_unstable();
    assert!(
        addrs.windows(2).all(|w| w[1] - w[0] == 2 * page),
        "a guard page between neighbours: {addrs:x?}"
    );
}

#[test]
fn os_refusal_is_an_error_not_a_panic() {
    // The largest buffer a pool accepts (SIZE_LIMIT, 2 GiB): where the kernel
    // refuses the mapping it is `Error::Os`; where it does not, the buffer
    // must still be right. (tests/fault_injection.rs forces the refusal.)
    let page = page_size();
    let pool = BufferPool::builder()
        .name("huge")
        .max_buffer_size(SIZE_LIMIT)
        .build()
        .unwrap();
    match pool.allocate_page_size_buffer(SIZE_LIMIT) {
        Err(Error::Os(e)) => {
            assert!(e.raw_os_error().is_some(), "{e}");
            let s = pool.stats();
            assert_eq!((s.os_errors, s.allocations, s.bytes_reserved), (1, 0, 0));
        }
        Ok(buf) => {
            assert_eq!(buf.max_len(), SIZE_LIMIT);
            assert_eq!(buf.as_ptr() as usize % page, 0);
        }
        Err(other) => panic!("SIZE_LIMIT gave {other}"),
    }
    let buf = pool.allocate_page_size_buffer(page).unwrap();
    assert_eq!(buf.max_len(), page);
}

fn assert_pool_traits<T: Send + Sync + Clone + Debug + Default + 'static>() {}
fn assert_buffer_traits<T: Send + Sync + Debug + AsRef<[u8]> + AsMut<[u8]> + 'static>() {}
fn assert_error_traits<T: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn traits_and_debug_output() {
    assert_pool_traits::<BufferPool>();
    assert_buffer_traits::<PageBuffer>();
    assert_error_traits::<Error>();
    fn copy_eq<T: Copy + Eq + Debug + Default>() {}
    copy_eq::<PoolStats>();
    copy_eq::<pagepool::ClassStats>();

    let pool = BufferPool::builder()
        .name("debug-pool-name")
        .build()
        .unwrap();
    let buf = pool.allocate_page_size_buffer(10).unwrap();
    let p = format!("{pool:?}");
    let b = format!("{buf:?}");
    assert!(p.contains("debug-pool-name"), "{p}");
    assert!(b.contains("debug-pool-name"), "{b}");
    assert!(b.contains("max_len: 10"), "{b}");
    assert_eq!(buf.pool_name(), "debug-pool-name");
    assert!(format!("{:?}", BufferPool::builder().name("b-name")).contains("b-name"));

    // Clones share one pool; Default is the default pool.
    let clone = pool.clone();
    assert_eq!(clone.stats().buffers_in_use, 1);
    drop(buf);
    assert_eq!(clone.stats().buffers_in_use, 0);
    assert_eq!(BufferPool::default().name(), "default");
}

#[test]
fn buffers_outlive_every_pool_handle() {
    let page = page_size();
    let pool = BufferPool::builder().name("short-lived").build().unwrap();
    let clone = pool.clone();
    let mut bufs: Vec<PageBuffer> = [1, page, 3 * page + 5, MIB]
        .into_iter()
        .map(|size| pool.allocate_page_size_buffer(size).unwrap())
        .collect();
    for (id, b) in bufs.iter_mut().enumerate() {
        stamp(b.as_max_slice_mut(), id as u64);
    }
    drop(pool);
    drop(clone);

    // Still readable and writable, and still know their pool's name.
    for (id, b) in bufs.iter_mut().enumerate() {
        assert_stamped(b.as_max_slice(), id as u64);
        assert_eq!(b.pool_name(), "short-lived");
        stamp(b.as_max_slice_mut(), 10 + id as u64);
        let n = b.max_len();
        b.set_len(n).unwrap();
        assert_stamped(&b[..], 10 + id as u64);
    }
    // One dropped on another thread, the rest here, one by one.
    let moved = bufs.pop().unwrap();
    std::thread::spawn(move || {
        assert_stamped(moved.as_max_slice(), 13);
        drop(moved);
    })
    .join()
    .unwrap();
    while let Some(b) = bufs.pop() {
        assert_stamped(b.as_max_slice(), 10 + bufs.len() as u64);
        drop(b);
    }
}

/// The slabs of a pool whose handles are gone are unmapped when its last
/// buffer comes back, and `trim` unmaps idle slabs. Checked against
/// `/proc/self/maps` in a child, where no other test maps memory meanwhile.
#[test]
fn memory_is_unmapped_after_the_last_buffer() {
    const TEST: &str = "memory_is_unmapped_after_the_last_buffer";
    if !in_child(TEST) {
        run_child(TEST, TEST).assert_success(&["UNMAPPED OK"]);
        return;
    }
    let page = page_size();
    let pool = BufferPool::new();
    let mut a = pool.allocate_page_size_buffer(page).unwrap();
    let b = pool.allocate_page_size_buffer(2 * MIB).unwrap();
    let (addr_a, addr_b) = (a.as_ptr() as usize, b.as_ptr() as usize);
    assert!(is_mapped(addr_a) && is_mapped(addr_b));
    drop(pool);
    assert!(is_mapped(addr_a) && is_mapped(addr_b), "buffers keep slabs");
    a.as_max_slice_mut().fill(7);
    drop(b);
    assert!(is_mapped(addr_b), "the pool lives while `a` is out");
    drop(a);
    assert!(!is_mapped(addr_a), "slab of `a` still mapped");
    assert!(!is_mapped(addr_b), "slab of `b` still mapped");

    let pool = BufferPool::new();
    let c = pool.allocate_page_size_buffer(page).unwrap();
    let addr_c = c.as_ptr() as usize;
    drop(c);
    assert!(is_mapped(addr_c), "idle slabs stay until trimmed");
    assert!(pool.trim() > 0);
    assert!(!is_mapped(addr_c), "trim unmaps");
    common::child_marker("UNMAPPED OK");
}

/// What the docs say of threads, checked by the compiler: each of these may
/// move to and be shared with other threads (a task holding a wait may move
/// between a runtime's workers).
#[test]
fn the_public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<BufferPool>();
    send_sync::<pagepool::PageBuffer>();
    send_sync::<pagepool::SharedBuffer>();
    send_sync::<pagepool::Quota>();
    send_sync::<pagepool::Allocate<'static>>();
    send_sync::<pagepool::QuotaAllocate<'static>>();
    send_sync::<pagepool::LeakReport>();
    send_sync::<pagepool::Error>();
}
