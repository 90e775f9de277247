//! 100,000 guarded one-page buffers at once, with guard markers and with the
//! `mprotect` fallback, whose process-wide budget of memory areas runs out.
//!
//! The tests that fault, or spend the process-wide `mprotect` budget, run in
//! child processes so they cannot disturb the other tests of this binary.

mod common;

use common::{
    assert_stamped, child_marker, in_child, kernel_has_guard_markers, max_map_count, no_fault,
    run_child, stamp,
};
use pagepool::{guard_markers_supported, page_size, BufferPool, GuardMechanism, PageBuffer};

const N: usize = 100_000;

fn allocate_pages(pool: &BufferPool, n: usize) -> Vec<PageBuffer> {
    let page = page_size();
    (0..n)
        .map(|i| {
            pool.allocate_page_size_buffer(page)
                .unwrap_or_else(|e| panic!("buffer {i} of {n}: {e}"))
        })
        .collect()
}

#[test]
fn hundred_thousand_guarded_pages_at_once() {
    let page = page_size();
    let pool = BufferPool::builder().name("scale").build().unwrap();
    let bufs = allocate_pages(&pool, N);

    let s = pool.stats();
    assert_eq!(s.buffers_in_use, N);
    assert_eq!(s.allocations, N as u64);
    assert_eq!(s.bytes_in_use, N * page);
    assert_eq!((s.exhausted, s.os_errors), (0, 0));
    if kernel_has_guard_markers() {
        assert_eq!(guard_markers_supported(), Some(true));
        assert_eq!(s.unguarded_slots, 0, "guard markers guard every slot");
    }
    // Distinct, page-aligned, and a guard page apart.
    let mut addrs: Vec<usize> = bufs.iter().map(|b| b.as_ptr() as usize).collect();
    addrs.sort_unstable();
    assert!(addrs.iter().all(|a| a % page == 0));
    assert!(
        addrs.windows(2).all(|w| w[1] - w[0] >= 2 * page),
        "slots overlap or touch"
    );

    drop(bufs);
    let s = pool.stats();
    assert_eq!((s.buffers_in_use, s.releases), (0, N as u64));
    assert_eq!(pool.trim(), s.bytes_reserved);
    assert_eq!(pool.stats().bytes_reserved, 0);
}

#[test]
fn fresh_buffer_after_hundred_thousand_is_guarded() {
    const TEST: &str = "fresh_buffer_after_hundred_thousand_is_guarded";
    const SKIPPED: &str = "SKIPPED: no guard markers";
    const IN_BOUNDS_OK: &str = "IN-BOUNDS WRITES OK";
    if in_child(TEST) {
        let page = page_size();
        let pool = BufferPool::builder().name("scale-fault").build().unwrap();
        let held = allocate_pages(&pool, N);
        let mut fresh = pool.allocate_page_size_buffer(page).unwrap();
        if !kernel_has_guard_markers() {
            // Without MADV_GUARD_INSTALL the documented mprotect budget runs
            // out long before 100,000 slots; the fresh slot is then watched by
            // a canary, not a guard, and the write below would not fault.
            assert_eq!(guard_markers_supported(), Some(false));
            child_marker(SKIPPED);
            return;
        }
        assert_eq!(guard_markers_supported(), Some(true));
        let s = pool.stats();
        assert_eq!((s.buffers_in_use, s.unguarded_slots), (N + 1, 0));
        let p = fresh.as_mut_ptr();
        // SAFETY: the first and last bytes of the one-page slot we own.
        unsafe {
            std::ptr::write_volatile(p, 1);
            std::ptr::write_volatile(p.add(page - 1), 2);
        }
        child_marker(IN_BOUNDS_OK);
        // SAFETY: none; this write is meant to hit the guard page after the
        // slot and kill the process.
        unsafe { std::ptr::write_volatile(p.add(page), 3) };
        drop(held);
        no_fault();
    }
    let out = run_child(TEST, TEST);
    if out.stdout.lines().any(|l| l.trim() == SKIPPED) {
        out.assert_success(&[SKIPPED]);
        println!("{TEST}: this kernel has no MADV_GUARD_INSTALL; fault check skipped");
        return;
    }
    out.assert_sigsegv(&[IN_BOUNDS_OK]);
}

/// The `mprotect` fallback: all 100,000 allocations succeed although the
/// process-wide budget (half of `vm.max_map_count` memory areas) cannot guard
/// them all; the rest are counted as unguarded and watched by canaries, which
/// catch an out-of-bounds write. Unmapping gives the budget back.
#[test]
fn mprotect_fallback_hundred_thousand() {
    const TEST: &str = "mprotect_fallback_hundred_thousand";
    const DONE: &str = "MPROTECT SCALE OK";
    if !in_child(TEST) {
        let out = run_child(TEST, TEST);
        out.assert_success(&[DONE]);
        let unguarded: usize = out.value("unguarded");
        assert!(unguarded > 0 && unguarded < N, "unguarded = {unguarded}");
        println!("{TEST}: {unguarded} of {N} slots unguarded");
        return;
    }

    let page = page_size();
    let budget = max_map_count() / 2;
    let mprotect_pool = |name: &str| {
        BufferPool::builder()
            .name(name)
            .guard_mechanism(GuardMechanism::Mprotect)
            .build()
            .unwrap()
    };
    let pool = mprotect_pool("mprotect-scale");
    let mut bufs = allocate_pages(&pool, N);
    for (id, b) in bufs.iter_mut().enumerate() {
        stamp(b.as_max_slice_mut(), id as u64);
    }
    let s = pool.stats();
    assert_eq!(s.buffers_in_use, N);
    assert_eq!((s.exhausted, s.os_errors), (0, 0));
    assert!(s.unguarded_slots > 0, "the budget cannot guard {N} slots");
    assert!(s.unguarded_slots < N, "the budget guards some slots");
    // A guarded slot owns its own following guard, which costs at least one
    // memory area, so at most `budget` slots can be guarded.
    assert!(
        s.unguarded_slots >= N.saturating_sub(budget),
        "{} unguarded with a budget of {budget}",
        s.unguarded_slots
    );
    for (id, b) in bufs.iter().enumerate() {
        assert_stamped(b.as_max_slice(), id as u64);
    }
    child_marker(&format!("unguarded={}", s.unguarded_slots));

    // The budget is spent, so a new mprotect pool's slab gets no guard at all
    // between its slots: canaries stand in. Writing one byte past the middle
    // buffer, and one byte before it, damages them; releasing it notices.
    let canaried = mprotect_pool("mprotect-canary");
    let mut three = allocate_pages(&canaried, 3);
    let s = canaried.stats();
    assert_eq!(
        s.unguarded_slots,
        s.buffers_in_use + s.buffers_cached,
        "every slot of a slab mapped without budget is unguarded"
    );
    let p = three[1].as_mut_ptr();
    // SAFETY: the pages before and after the slot are unguarded pages of the
    // same slab mapping (checked above), readable and writable, holding only
    // the canary; nothing else uses them.
    unsafe {
        // Complements: a change whatever canary byte is there.
        std::ptr::write_volatile(p.add(page), !std::ptr::read_volatile(p.add(page)));
        std::ptr::write_volatile(p.sub(1), !std::ptr::read_volatile(p.sub(1)));
    }
    assert_eq!(canaried.stats().corruptions, 0, "found on release");
    drop(three.remove(1));
    let found = canaried.stats().corruptions;
    assert!(found >= 1, "the damaged canaries were seen");
    drop(three);
    assert_eq!(
        canaried.stats().corruptions,
        found,
        "neighbours' canaries are intact"
    );

    // Guard markers (where the kernel has them) need no budget.
    let auto = BufferPool::new();
    let one = auto.allocate_page_size_buffer(page).unwrap();
    if kernel_has_guard_markers() {
        assert_eq!(guard_markers_supported(), Some(true));
        assert_eq!(auto.stats().unguarded_slots, 0);
    }
    drop(one);

    // Unmapping returns the budget: a new mprotect slab is fully guarded.
    drop(bufs);
    let reserved = pool.stats().bytes_reserved;
    assert_eq!(pool.trim(), reserved);
    let fresh = mprotect_pool("mprotect-after");
    let again = allocate_pages(&fresh, 3);
    assert_eq!(
        fresh.stats().unguarded_slots,
        0,
        "budget given back on unmap"
    );
    drop(again);
    child_marker(DONE);
}
