//! `trim` gives back the pages of free slots in slabs it cannot unmap (one
//! buffer still in use keeps the slab mapped): the pages leave the process's
//! resident set (`mincore`), the live buffer keeps its bytes, a second trim
//! does not discard again, a reused slot reads zeros and passes the debug
//! checks, and the guard pages around discarded slots still fault (in a
//! child process, see `common::run_child`). Decay discards such slots once
//! they lay free for its period; a pool whose slots an io_uring
//! registration pins discards nothing; a discard of neighbouring slots
//! never spans the edge canaries that stand in for missing guards.

mod common;

use std::ptr::write_volatile;
use std::time::{Duration, Instant};

use common::{child_marker, in_child, no_fault, run_child};
use pagepool::{
    page_size, BufferPool, DebugLevel, GuardMechanism, PageBuffer, PoolBuilder, Zeroing,
};

/// The class the tests use: 64 KiB slots, 16 to a 1 MiB slab.
const SLOT: usize = 64 << 10;

/// Pages of `base..base + len` (page-aligned) resident now, by `mincore`.
fn resident_pages(base: usize, len: usize) -> usize {
    let page = page_size();
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `mincore` only writes one byte per page into `vec`, which has
    // one per page of the range; the range is mapped (a pool's slot).
    let rc = unsafe { libc::mincore(base as *mut libc::c_void, len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

/// Every slot of one slab of the 64 KiB class, every byte written with
/// its index: the buffers and the slab's slot count.
fn fill_one_slab(pool: &BufferPool, max_len: usize) -> Vec<PageBuffer> {
    let first = pool.allocate_page_size_buffer(max_len).unwrap();
    let n = pool.stats().buffers_cached + 1;
    assert!(n >= 4, "a 1 MiB slab holds several 64 KiB slots, not {n}");
    let mut all = vec![first];
    all.extend((1..n).map(|_| pool.allocate_page_size_buffer(max_len).unwrap()));
    assert_eq!(pool.stats().slabs, 1, "all from one slab");
    for (i, b) in all.iter_mut().enumerate() {
        b.as_max_slice_mut().fill(i as u8 + 1);
    }
    all
}

/// A pool named `name` whose guards use `mechanism`.
fn guarded_pool(name: &str, mechanism: GuardMechanism) -> BufferPool {
    BufferPool::builder()
        .name(name)
        .guard_mechanism(mechanism)
        .build()
        .unwrap()
}

/// Takes `n` buffers of `max_len` bytes (the discarded slots, when that
/// many were), checks each reads zeros (`what` names the case), writes
/// `byte` over it; returns them.
fn reuse_discarded(
    pool: &BufferPool,
    n: usize,
    max_len: usize,
    byte: u8,
    what: &str,
) -> Vec<PageBuffer> {
    let mut again: Vec<PageBuffer> = (0..n)
        .map(|_| pool.allocate_page_size_buffer(max_len).unwrap())
        .collect();
    for b in &mut again {
        assert!(
            b.as_max_slice().iter().all(|&x| x == 0),
            "{what}: a discarded slot reads zeros"
        );
        b.as_max_slice_mut().fill(byte);
    }
    again
}

#[test]
fn trim_discards_the_free_slots_of_a_slab_in_use() {
    let pool = BufferPool::builder().name("discard").build().unwrap();
    let mut all = fill_one_slab(&pool, SLOT);
    let n = all.len();
    let kept = all.remove(0);
    let freed: Vec<usize> = all.iter().map(|b| b.as_ptr() as usize).collect();
    let pages = SLOT / page_size();
    assert!(freed.iter().all(|&a| resident_pages(a, SLOT) == pages));
    drop(all);

    assert_eq!(pool.trim(), 0, "the kept buffer keeps the slab mapped");
    let s = pool.stats();
    assert_eq!(s.slabs, 1);
    assert_eq!(s.discarded_bytes, ((n - 1) * SLOT) as u64, "{s:?}");
    for &a in &freed {
        assert_eq!(resident_pages(a, SLOT), 0, "slot {a:#x} still resident");
    }
    let base = kept.as_ptr() as usize;
    assert_eq!(resident_pages(base, SLOT), pages, "the live buffer stays");
    assert!(
        kept.as_max_slice().iter().all(|&b| b == 1),
        "its bytes intact"
    );

    assert_eq!(pool.trim(), 0);
    assert_eq!(
        pool.stats().discarded_bytes,
        s.discarded_bytes,
        "a second trim discards nothing again"
    );

    // Reused, the discarded slots read zeros; written and freed again, the
    // next trim discards them again.
    drop(reuse_discarded(&pool, n - 1, SLOT, 7, "reuse"));
    pool.trim();
    assert_eq!(pool.stats().discarded_bytes, 2 * s.discarded_bytes);
    assert!(kept.as_max_slice().iter().all(|&b| b == 1));
    drop(kept);
    assert!(pool.trim() > 0, "the slab, idle at last, is unmapped");
}

#[test]
fn min_buffers_stay_resident() {
    let keep = 6;
    let pool = BufferPool::builder()
        .name("discard-floor")
        .min_buffers(SLOT, keep)
        .build()
        .unwrap();
    let mut all = fill_one_slab(&pool, SLOT);
    let n = all.len();
    let kept = all.remove(0);
    drop(all);
    pool.trim();
    // The live buffer and `keep - 1` free slots make the floor's `keep`.
    assert_eq!(
        pool.stats().discarded_bytes,
        ((n - keep) * SLOT) as u64,
        "{:?}",
        pool.stats()
    );
    drop(kept);
}

#[test]
fn decay_discards_slots_free_for_the_period() {
    let pool = BufferPool::builder()
        .name("discard-decay")
        .thread_cache(false)
        .decay(Some(Duration::from_millis(200)))
        .metrics_publish_interval(Duration::from_millis(10))
        .build()
        .unwrap();
    let mut all = fill_one_slab(&pool, SLOT);
    let n = all.len();
    let kept = all.remove(0);
    let freed: Vec<usize> = all.iter().map(|b| b.as_ptr() as usize).collect();
    drop(all);
    let want = ((n - 1) * SLOT) as u64;
    let start = Instant::now();
    while pool.stats().discarded_bytes < want {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "decay discarded {:?}",
            pool.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = pool.stats();
    assert_eq!((s.discarded_bytes, s.slabs, s.decayed_bytes), (want, 1, 0));
    assert!(freed.iter().all(|&a| resident_pages(a, SLOT) == 0));
    assert!(kept.as_max_slice().iter().all(|&b| b == 1));
}

#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[test]
fn slots_pinned_by_an_io_uring_registration_are_not_discarded() {
    if std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").is_ok_and(|v| v.trim() != "0")
    {
        eprintln!("SKIPPED: io_uring disabled");
        return;
    }
    let pool = BufferPool::builder().name("discard-uring").build().unwrap();
    let reg = match pagepool::uring::Registry::builder().build(&pool) {
        Ok(r) => r,
        Err(e) if pagepool::uring::is_unavailable(&e) => {
            eprintln!("SKIPPED: io_uring_setup refused: {e}");
            return;
        }
        Err(e) => panic!("the registry builds: {e}"),
    };
    let mut all = fill_one_slab(&pool, SLOT);
    let kept = all.remove(0);
    assert!(kept.fixed_index(&reg).is_some(), "the slot is registered");
    drop(all);
    pool.trim();
    assert_eq!(pool.stats().discarded_bytes, 0, "pinned pages stay");
    drop(reg);
    pool.trim();
    assert!(
        pool.stats().discarded_bytes > 0,
        "once the registry is gone, they go"
    );
    drop(kept);
}

/// One case of the debug checks: a pool, and the size its buffers ask for.
/// Twice: trim (discarding the free slots), reuse every discarded slot,
/// write it, release it; no check may report anything.
fn check_reuse(name: &str, builder: PoolBuilder, max_len: usize) {
    let pool = builder.name(name).build().unwrap();
    let mut all = fill_one_slab(&pool, max_len);
    let n = all.len();
    let kept = all.remove(0);
    drop(all);
    let mut discarded = 0;
    for round in 0..2 {
        pool.trim();
        let s = pool.stats();
        assert!(
            s.discarded_bytes > discarded,
            "{name}, round {round}: {s:?}"
        );
        discarded = s.discarded_bytes;
        assert_eq!(
            s.corruptions, 0,
            "{name}, round {round}: false report at release"
        );
        let what = format!("{name}, round {round}");
        let again = reuse_discarded(&pool, n - 1, max_len, 9, &what);
        assert_eq!(
            pool.stats().corruptions,
            0,
            "{what}: false report at allocation"
        );
        drop(again);
        assert_eq!(pool.stats().corruptions, 0, "{name}, round {round}");
    }
    assert!(kept.as_max_slice().iter().all(|&b| b == 1));
    drop(kept);
    assert_eq!(pool.stats().corruptions, 0, "{name}");
}

#[test]
fn reused_discarded_slots_pass_the_debug_checks() {
    let b = BufferPool::builder;
    // Poison on every release: a discarded slot lost its poison, and the
    // next allocation must not check it. Sizes that leave slack in their
    // last page carry a canary, which the discard wiped too.
    for max_len in [SLOT, SLOT - 1000] {
        check_reuse(
            "standard",
            b().debug(DebugLevel::Standard).poison(1, usize::MAX),
            max_len,
        );
        check_reuse(
            "standard-full-canary",
            b().debug(DebugLevel::Standard)
                .full_canary(true)
                .poison(1, 256),
            max_len,
        );
        check_reuse("paranoid", b().debug(DebugLevel::Paranoid), max_len);
        // Neighbours with no guard between them: one discard each run.
        check_reuse(
            "no-guards",
            b().guard_pages(false).poison(1, usize::MAX),
            max_len,
        );
        check_reuse(
            "zero-on-release",
            b().debug(DebugLevel::Standard).zero(Zeroing::OnRelease),
            max_len,
        );
    }
}

/// Printed by the child once its slots were discarded and one reused.
const DISCARDED: &str = "DISCARDED AND REUSED";

/// The child's work: discard the free slots of a slab, take one back,
/// write one byte past its end (`after`) or before its start. Never
/// returns.
fn guard_child(mechanism: GuardMechanism, after: bool) -> ! {
    let pool = guarded_pool("discard-guard", mechanism);
    let mut all = fill_one_slab(&pool, SLOT);
    let kept = all.remove(0);
    drop(all);
    pool.trim();
    assert!(pool.stats().discarded_bytes > 0);
    // A slot whose pages were discarded, between two guards.
    let mut buf = pool.allocate_page_size_buffer(SLOT).unwrap();
    assert_eq!(resident_pages(buf.as_ptr() as usize, SLOT), 0);
    buf.as_max_slice_mut().fill(3);
    let p = buf.as_mut_ptr();
    child_marker(DISCARDED);
    // SAFETY: none; this write is meant to hit the guard page right after
    // (or before) the slot and kill the process.
    unsafe { write_volatile(if after { p.add(SLOT) } else { p.sub(1) }, 1) };
    drop((kept, buf));
    no_fault()
}

/// Runs `test` (whose name is also the child case) in a child and asserts
/// it died of SIGSEGV after the discard.
fn expect_fault(test: &str, mechanism: GuardMechanism, after: bool) {
    if in_child(test) {
        guard_child(mechanism, after);
    }
    run_child(test, test).assert_sigsegv(&[DISCARDED]);
}

#[test]
fn guard_after_a_discarded_slot_faults() {
    expect_fault(
        "guard_after_a_discarded_slot_faults",
        GuardMechanism::Auto,
        true,
    );
}

#[test]
fn guard_before_a_discarded_slot_faults() {
    expect_fault(
        "guard_before_a_discarded_slot_faults",
        GuardMechanism::Auto,
        false,
    );
}

#[test]
fn mprotect_guard_after_a_discarded_slot_faults() {
    expect_fault(
        "mprotect_guard_after_a_discarded_slot_faults",
        GuardMechanism::Mprotect,
        true,
    );
}

/// Printed by the child once its discarded slots were reused unreported.
const CANARIES_INTACT: &str = "EDGE CANARIES INTACT";

/// With the `mprotect` budget spent, a new slab's slots have edge canaries
/// instead of guard pages between them: a discard of neighbours must not
/// span those pages, or each release would report the canary it wiped. In
/// a child: the spent budget is process-wide.
#[test]
fn discards_leave_edge_canaries_alone() {
    const TEST: &str = "discards_leave_edge_canaries_alone";
    if !in_child(TEST) {
        run_child(TEST, TEST).assert_success(&[CANARIES_INTACT]);
        return;
    }
    // Each guarded slot costs at least one of the budget's memory areas.
    let spender = guarded_pool("discard-spend", GuardMechanism::Mprotect);
    let spent: Vec<PageBuffer> = (0..common::max_map_count() / 2 + 1)
        .map(|_| spender.allocate_page_size_buffer(page_size()).unwrap())
        .collect();
    let pool = guarded_pool("discard-canaries", GuardMechanism::Mprotect);
    let mut all = fill_one_slab(&pool, SLOT);
    let n = all.len();
    assert_eq!(pool.stats().unguarded_slots, n, "the budget is spent");
    let kept = all.remove(0);
    drop(all);
    pool.trim();
    assert_eq!(pool.stats().discarded_bytes, ((n - 1) * SLOT) as u64);
    drop(reuse_discarded(&pool, n - 1, SLOT, 5, "edge canaries"));
    drop(kept);
    assert_eq!(pool.stats().corruptions, 0, "{:?}", pool.stats());
    drop(spent);
    child_marker(CANARIES_INTACT);
}
