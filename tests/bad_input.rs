//! Bad input at every public entry point: zero, one, page boundaries,
//! `usize::MAX`, values just past each limit, out-of-range slices, and
//! builder settings at and past their ends. Each gives its documented error
//! (or documented behaviour, or documented panic), and the pool stays usable
//! afterwards: every section ends with an allocate + release.
//!
//! The inputs tried are counted and printed
//! (`cargo test --test bad_input -- --nocapture`).

use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use pagepool::{
    page_size, BufferPool, DebugLevel, Error, GuardMechanism, LeakTracking, PageBuffer,
    PoolBuilder, SharedBuffer, Zeroing, DEFAULT_MAX_BUFFER_SIZE, SIZE_LIMIT, SMALL_MAX,
};

/// Inputs tried.
static TRIED: AtomicUsize = AtomicUsize::new(0);

fn tried(n: usize) {
    TRIED.fetch_add(n, Relaxed);
}

/// `catch_unwind` without printing the (expected) panic. This file has one
/// test, so swapping the process-wide hook races with no other panic.
fn quietly<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    r
}

/// The pool still works: one allocation of each of a few sizes, written in
/// full, released; counters consistent.
#[track_caller]
fn assert_usable(pool: &BufferPool) {
    let before = pool.stats();
    let max = pool.max_buffer_size();
    // A third class only where the cap leaves room for it.
    let roomy = pool.max_bytes().is_none_or(|c| c >= 64 * page_size());
    let third = if roomy { 3 * page_size() } else { 1 };
    for size in [1, page_size().min(max), third.min(max)] {
        let mut b = pool
            .allocate_page_size_buffer(size)
            .unwrap_or_else(|e| panic!("pool {:?} unusable: {e}", pool.name()));
        b.as_max_slice_mut().fill(0x5a);
        b.set_len(size).unwrap();
        assert!(b.iter().all(|&x| x == 0x5a));
    }
    let s = pool.stats();
    assert_eq!(s.allocations, before.allocations + 3);
    assert_eq!(s.buffers_in_use, before.buffers_in_use);
    assert_eq!(s.allocations, s.hits + s.misses);
    assert_eq!(s.corruptions, 0);
}

#[track_caller]
fn assert_too_large(r: Result<PageBuffer, Error>, requested: usize, max: usize) {
    match r {
        Err(Error::TooLarge {
            requested: r,
            max: m,
        }) => assert_eq!((r, m), (requested, max)),
        other => panic!("{requested}: expected TooLarge, got {other:?}"),
    }
}

fn allocation_sizes() {
    let page = page_size();
    let pool = BufferPool::builder().name("bad-sizes").build().unwrap();
    let max = pool.max_buffer_size();
    assert_eq!(max, DEFAULT_MAX_BUFFER_SIZE);

    // Accepted: exactly `max_len == size`, slot the smallest class that fits.
    let good = [
        1,
        2,
        page - 1,
        page,
        page + 1,
        2 * page - 1,
        2 * page,
        2 * page + 1,
        max - 1,
        max,
    ];
    for size in good {
        let b = pool.allocate_page_size_buffer(size).unwrap();
        assert_eq!((b.len(), b.max_len()), (0, size));
        assert_eq!(b.as_ptr() as usize % page, 0);
        assert_eq!(Some(b.slot_len()), pool.slot_size_for(size));
        assert!(b.slot_len() >= size && b.slot_len().is_multiple_of(page));
    }
    tried(good.len());

    // Refused, and counted as rejected.
    assert!(matches!(
        pool.allocate_page_size_buffer(0),
        Err(Error::ZeroSize)
    ));
    let too_large = [
        max + 1,
        max + page,
        2 * max,
        SIZE_LIMIT,
        SIZE_LIMIT + 1,
        usize::MAX / 2,
        usize::MAX - page,
        usize::MAX - 1,
        usize::MAX,
    ];
    for size in too_large {
        assert_too_large(pool.allocate_page_size_buffer(size), size, max);
    }
    tried(1 + too_large.len());
    let s = pool.stats();
    assert_eq!(s.rejected, 1 + too_large.len() as u64);
    assert_eq!((s.exhausted, s.os_errors), (0, 0));

    // `slot_size_for` agrees with what allocation does.
    assert_eq!(pool.slot_size_for(0), None);
    for size in too_large {
        assert_eq!(pool.slot_size_for(size), None, "{size}");
    }
    assert_eq!(pool.slot_size_for(1), Some(page));
    assert_eq!(pool.slot_size_for(page), Some(page));
    assert_eq!(pool.slot_size_for(page + 1), Some(2 * page));
    assert_eq!(pool.slot_size_for(max), Some(max));
    tried(5 + too_large.len());
    assert_usable(&pool);

    // A pool whose largest buffer is SIZE_LIMIT: SIZE_LIMIT itself is a
    // request like any other (the OS may refuse 2 GiB, as `Error::Os`),
    // SIZE_LIMIT + 1 is too large.
    let huge = BufferPool::builder()
        .name("bad-sizes-huge")
        .max_buffer_size(SIZE_LIMIT)
        .metrics(false)
        .build()
        .unwrap();
    match huge.allocate_page_size_buffer(SIZE_LIMIT) {
        Ok(b) => assert_eq!(b.max_len(), SIZE_LIMIT),
        Err(Error::Os(_)) => assert_eq!(huge.stats().os_errors, 1),
        Err(e) => panic!("SIZE_LIMIT: {e:?}"),
    }
    assert_too_large(
        huge.allocate_page_size_buffer(SIZE_LIMIT + 1),
        SIZE_LIMIT + 1,
        SIZE_LIMIT,
    );
    assert_too_large(
        huge.allocate_page_size_buffer(usize::MAX),
        usize::MAX,
        SIZE_LIMIT,
    );
    tried(3);
    let reserved = huge.stats().bytes_reserved;
    assert_eq!(huge.trim(), reserved);
    assert_usable(&huge);

    // A one-byte largest buffer: a one-page class, 2 bytes too large.
    let tiny = BufferPool::builder()
        .name("bad-sizes-tiny")
        .max_buffer_size(1)
        .build()
        .unwrap();
    // One small class (for `allocate_buffer`) and one page class.
    assert_eq!(tiny.size_classes(), vec![64, page]);
    assert!(tiny.allocate_page_size_buffer(1).is_ok());
    assert_too_large(tiny.allocate_page_size_buffer(2), 2, 1);
    assert_too_large(tiny.allocate_page_size_buffer(page), page, 1);
    tried(3);
    drop(tiny.allocate_page_size_buffer(1).unwrap());
}

fn lengths_and_appends() {
    let page = page_size();
    let pool = BufferPool::builder().name("bad-lengths").build().unwrap();
    for max_len in [1, page - 1, page, page + 1] {
        let mut b = pool.allocate_page_size_buffer(max_len).unwrap();
        b.as_max_slice_mut().fill(7);
        // set_len: 0 and max_len are fine; one past, far past and
        // usize::MAX fail with LengthExceedsMax and leave the length alone.
        for ok in [0, max_len / 2, max_len] {
            b.set_len(ok).unwrap();
            assert_eq!((b.len(), b.remaining()), (ok, max_len - ok));
        }
        for bad in [
            max_len + 1,
            max_len + page,
            page * 1000,
            usize::MAX - 1,
            usize::MAX,
        ] {
            match b.set_len(bad) {
                Err(Error::LengthExceedsMax { requested, max }) => {
                    assert_eq!((requested, max), (bad, max_len))
                }
                other => panic!("set_len({bad}) of {max_len}: {other:?}"),
            }
            assert_eq!(b.len(), max_len, "a failed set_len changes nothing");
        }
        tried(8);

        // extend_from_slice: an empty append is fine even when full; one
        // byte past fails and writes nothing.
        b.extend_from_slice(&[]).unwrap();
        match b.extend_from_slice(&[1]) {
            Err(Error::LengthExceedsMax { requested, max }) => {
                assert_eq!((requested, max), (max_len + 1, max_len))
            }
            other => panic!("append past max_len {max_len}: {other:?}"),
        }
        b.clear();
        assert!(b.is_empty());
        let too_long = vec![9u8; max_len + 1];
        assert!(matches!(
            b.extend_from_slice(&too_long),
            Err(Error::LengthExceedsMax { .. })
        ));
        assert_eq!(b.len(), 0);
        assert!(
            b.as_max_slice().iter().all(|&x| x == 7),
            "a failed append writes nothing"
        );
        b.extend_from_slice(&too_long[..max_len]).unwrap();
        assert_eq!(b.len(), max_len);
        b.set_len(max_len - 1).unwrap();
        assert!(matches!(
            b.extend_from_slice(&[1, 2]),
            Err(Error::LengthExceedsMax { .. })
        ));
        b.extend_from_slice(&[3]).unwrap();
        assert_eq!(b[max_len - 1], 3);
        tried(6);
        // The io conversion of the error.
        let e = b.set_len(usize::MAX).unwrap_err();
        assert_eq!(
            std::io::Error::from(e).kind(),
            std::io::ErrorKind::WriteZero
        );
        tried(1);
        let (p, l) = b.buffer_and_length();
        assert_eq!((p as *const u8, l), (b.as_ptr(), max_len));
    }
    assert_eq!(pool.stats().buffers_in_use, 0);
    assert_eq!(pool.stats().corruptions, 0, "no write went past max_len");
    assert_usable(&pool);
}

/// Every way to ask `SharedBuffer::slice` for an impossible range.
fn shared_slices_out_of_range_panic_and_leak_nothing() {
    let pool = BufferPool::builder().name("bad-slices").build().unwrap();
    let mut b = pool.allocate_page_size_buffer(100).unwrap();
    b.extend_from_slice(&[0xab; 10]).unwrap();
    let full = b.freeze();
    let sub = full.slice(2..6); // 4 bytes
    let empty = pool.allocate_page_size_buffer(1).unwrap().freeze();
    assert_eq!((full.len(), sub.len(), empty.len()), (10, 4, 0));

    type Bounds = (Bound<usize>, Bound<usize>);
    use Bound::{Excluded as X, Included as I, Unbounded as U};
    let bad = |len: usize| -> Vec<Bounds> {
        vec![
            (I(0), X(len + 1)),
            (I(0), I(len)),
            (I(len + 1), U),
            (X(len), U),
            (I(len + 1), X(len + 1)),
            (I(1), X(0)),
            (I(usize::MAX), U),
            (X(usize::MAX), U),
            (U, I(usize::MAX)),
            (U, X(usize::MAX)),
            (I(usize::MAX), X(usize::MAX)),
        ]
    };
    let good = |len: usize| -> Vec<Bounds> {
        vec![
            (U, U),
            (I(0), X(len)),
            (I(len), U),
            (I(len), X(len)),
            (U, I(len.saturating_sub(1))),
        ]
    };
    let mut n = 0;
    for h in [&full, &sub, &empty] {
        let len = h.len();
        for r in bad(len) {
            let refs = h.ref_count();
            let got = quietly(|| h.slice(r));
            assert!(got.is_err(), "slice {r:?} of {len} bytes did not panic");
            assert_eq!(h.ref_count(), refs, "a failed slice holds no handle");
            n += 1;
        }
        for r in good(len) {
            if len == 0 && matches!(r.1, I(_)) {
                continue; // `..=0` is one byte: out of range for an empty buffer
            }
            let s: SharedBuffer = h.slice(r);
            assert!(s.len() <= len);
            n += 1;
        }
    }
    tried(n);
    // try_unwrap with other handles gives the handle back.
    let sub = match sub.try_unwrap() {
        Err(sub) => sub,
        Ok(_) => panic!("try_unwrap with two handles succeeded"),
    };
    tried(1);
    drop(sub);
    let back = full.try_unwrap().expect("the last handle unwraps");
    assert_eq!(back.len(), 10);
    drop((back, empty));
    let s = pool.stats();
    assert_eq!((s.buffers_in_use, s.releases), (0, 2));
    assert_usable(&pool);
}

#[track_caller]
fn invalid(b: PoolBuilder, what: &str) {
    match b.build() {
        Err(Error::InvalidConfig(why)) => {
            assert!(!why.is_empty(), "{what}");
            let io = std::io::Error::from(Error::InvalidConfig(why));
            assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
        }
        other => panic!("{what}: expected InvalidConfig, got {other:?}"),
    }
    tried(1);
}

#[track_caller]
fn valid(b: PoolBuilder, what: &str) -> BufferPool {
    let pool = b
        .metrics(false)
        .build()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_usable(&pool);
    tried(1);
    pool
}

fn builder_settings_at_and_past_their_ends() {
    let page = page_size();
    let b = BufferPool::builder;

    for (v, ok) in [
        (0, false),
        (1, true),
        (page - 1, true),
        (page, true),
        (page + 1, true),
        (SIZE_LIMIT, true),
        (SIZE_LIMIT + 1, false),
        (usize::MAX, false),
    ] {
        let what = format!("max_buffer_size({v})");
        if ok {
            valid(b().max_buffer_size(v), &what);
        } else {
            invalid(b().max_buffer_size(v), &what);
        }
    }
    for (v, ok) in [
        (0, false),
        (1, true),
        (page, true),
        (SIZE_LIMIT, true),
        (SIZE_LIMIT + 1, false),
        (usize::MAX, false),
    ] {
        let what = format!("slab_size({v})");
        if ok {
            valid(b().slab_size(v), &what);
        } else {
            invalid(b().slab_size(v), &what);
        }
    }
    // max_bytes: one guarded page slot needs 3 pages, an unguarded one 1.
    for (v, guards, ok) in [
        (0, true, false),
        (1, true, false),
        (page, true, false),
        (3 * page - 1, true, false),
        (3 * page, true, true),
        (usize::MAX, true, true),
        (0, false, false),
        (page - 1, false, false),
        (page, false, true),
        (usize::MAX, false, true),
    ] {
        let what = format!("max_bytes({v}), guards {guards}");
        let builder = b().max_bytes(v).guard_pages(guards);
        if ok {
            let pool = valid(builder, &what);
            assert_eq!(pool.max_bytes(), Some(v));
        } else {
            invalid(builder, &what);
        }
    }
    // A cap of exactly one guarded page slot: one buffer, then Exhausted.
    let one = valid(b().max_bytes(3 * page), "one-slot cap");
    let kept = one.allocate_page_size_buffer(page).unwrap();
    match one.allocate_page_size_buffer(1) {
        Err(Error::Exhausted { requested, limit }) => assert_eq!((requested, limit), (1, 3 * page)),
        other => panic!("second buffer under a one-slot cap: {other:?}"),
    }
    match one.allocate_page_size_buffer(page + 1) {
        Err(Error::Exhausted { .. }) => {}
        other => panic!("two pages under a one-slot cap: {other:?}"),
    }
    tried(2);
    drop(kept);
    assert_usable(&one);

    // The metrics publish interval: 1 ms ..= 1 s, checked even with metrics off.
    let ms = Duration::from_millis(1);
    let s = Duration::from_secs(1);
    for (d, ok) in [
        (Duration::ZERO, false),
        (Duration::from_nanos(1), false),
        (ms - Duration::from_nanos(1), false),
        (ms, true),
        (s, true),
        (s + Duration::from_nanos(1), false),
        (Duration::from_secs(u64::MAX), false),
        (Duration::MAX, false),
    ] {
        let what = format!("metrics_publish_interval({d:?})");
        for metrics in [true, false] {
            let builder = b().metrics(metrics).metrics_publish_interval(d);
            match builder.build() {
                Ok(pool) if ok => assert_usable(&pool),
                Err(Error::InvalidConfig(_)) if !ok => {}
                other => panic!("{what} (metrics {metrics}): {other:?}"),
            }
            tried(1);
        }
    }
    for n in [0, 1, u32::MAX] {
        valid(
            b().metrics_sample_every(n),
            &format!("metrics_sample_every({n})"),
        );
    }

    // Leak age threshold: any Duration; MAX means nothing is ever a suspect.
    for d in [Duration::ZERO, Duration::from_nanos(1), Duration::MAX] {
        let pool = valid(
            b().leak_age_threshold(d),
            &format!("leak_age_threshold({d:?})"),
        );
        let held = pool.allocate_page_size_buffer(1).unwrap();
        let suspects = pool.leak_suspects();
        assert!(suspects <= 1);
        if d == Duration::MAX {
            assert_eq!(suspects, 0);
        }
        drop(held);
        assert_eq!(pool.leak_suspects(), 0);
    }
    for t in [
        LeakTracking::Off,
        LeakTracking::CallSite,
        LeakTracking::Backtrace { sample_every: 0 },
        LeakTracking::Backtrace { sample_every: 1 },
        LeakTracking::Backtrace {
            sample_every: u32::MAX,
        },
    ] {
        valid(b().leak_tracking(t), &format!("leak_tracking({t:?})"));
    }

    // Quarantine: 0 sampling is off whatever the size; sampling needs guard
    // pages and room for at least one slot.
    valid(b().quarantine(0, 0), "quarantine(0, 0)");
    valid(b().quarantine(0, usize::MAX), "quarantine(0, MAX)");
    invalid(b().quarantine(1, 0), "quarantine(1, 0)");
    invalid(b().quarantine(u32::MAX, 0), "quarantine(MAX, 0)");
    invalid(
        b().guard_pages(false).quarantine(1, 1),
        "quarantine without guards",
    );
    invalid(
        b().guard_pages(false).debug(DebugLevel::Paranoid),
        "Paranoid (quarantine) without guards",
    );
    let q = valid(b().quarantine(1, 1), "quarantine(1, 1)");
    let q_held: Vec<_> = (0..3)
        .map(|_| q.allocate_page_size_buffer(page).unwrap())
        .collect();
    drop(q_held);
    assert_eq!(q.stats().buffers_quarantined, 1, "at most one slot inside");
    valid(b().quarantine(1, usize::MAX), "quarantine(1, MAX)");
    valid(b().quarantine(u32::MAX, 1), "quarantine(MAX, 1)");
    valid(
        b().guard_mechanism(GuardMechanism::Mprotect)
            .quarantine(1, 2),
        "quarantine with mprotect",
    );

    // Poison: any rate and any span (0 bytes: nothing; usize::MAX: max_len).
    for (every, bytes) in [
        (0, 0),
        (0, usize::MAX),
        (1, 0),
        (1, 1),
        (1, page),
        (1, usize::MAX),
        (u32::MAX, usize::MAX),
    ] {
        let pool = valid(
            b().poison(every, bytes),
            &format!("poison({every}, {bytes})"),
        );
        for size in [1, page - 1, page, page + 1] {
            drop(pool.allocate_page_size_buffer(size).unwrap());
            drop(pool.allocate_page_size_buffer(size).unwrap());
        }
        assert_eq!(pool.stats().corruptions, 0, "poison({every}, {bytes})");
    }

    // The other knobs, and presets with knobs overridden after them.
    for z in [Zeroing::Off, Zeroing::OnRelease, Zeroing::OnAllocate] {
        valid(b().zero(z), &format!("zero({z:?})"));
    }
    for level in [DebugLevel::Off, DebugLevel::Standard, DebugLevel::Paranoid] {
        valid(b().debug(level), &format!("debug({level:?})"));
        valid(
            b().debug(level).slack_canary(false).full_canary(true),
            "full canary only",
        );
    }
    valid(b().name(""), "an empty name");
    valid(b().name("x".repeat(10_000)), "a long name");
    valid(
        b().guard_pages(false)
            .guard_mechanism(GuardMechanism::Mprotect),
        "mechanism after guards off",
    );
}

fn pool_level_calls_on_empty_and_busy_pools() {
    let pool = BufferPool::builder()
        .name("bad-pool-calls")
        .build()
        .unwrap();
    // An empty pool: nothing to trim, report or check.
    assert_eq!(pool.trim(), 0);
    assert_eq!(pool.trim(), 0);
    assert!(pool.outstanding().is_empty());
    for age in [Duration::ZERO, Duration::from_nanos(1), Duration::MAX] {
        let r = pool.leak_report(age);
        assert!(r.is_empty() && r.buffers() == 0 && r.bytes() == 0);
        assert!(r.to_string().contains("0 buffers"));
    }
    assert_eq!(pool.leak_suspects(), 0);
    pool.leak_check().finish().expect("an empty check passes");
    pool.publish_metrics();
    assert!(pool.class_stats().iter().all(|c| c.slabs == 0));
    tried(10);

    // With buffers out: a report of MAX age is empty, of zero age lists them.
    let a = pool.allocate_page_size_buffer(1).unwrap();
    let b = pool.allocate_page_size_buffer(page_size() + 1).unwrap();
    assert!(pool.leak_report(Duration::MAX).is_empty());
    let r = pool.leak_report(Duration::ZERO);
    assert_eq!(r.buffers(), 2);
    assert_eq!(r.bytes(), a.slot_len() + b.slot_len());
    assert_eq!(pool.trim(), 0, "busy slabs are not trimmed");
    tried(3);
    drop((a, b));
    assert!(pool.trim() > 0);
    assert_eq!(pool.stats().bytes_reserved, 0);
    // The fault handler installs once; a second call does nothing.
    pagepool::install_fault_handler().unwrap();
    pagepool::install_fault_handler().unwrap();
    tried(2);
    // Every error converts to io::Error of the documented kind.
    let kinds = [
        (Error::ZeroSize, std::io::ErrorKind::InvalidInput),
        (
            Error::TooLarge {
                requested: usize::MAX,
                max: 1,
            },
            std::io::ErrorKind::InvalidInput,
        ),
        (
            Error::Exhausted {
                requested: usize::MAX,
                limit: 0,
            },
            std::io::ErrorKind::OutOfMemory,
        ),
        (
            Error::LengthExceedsMax {
                requested: usize::MAX,
                max: 0,
            },
            std::io::ErrorKind::WriteZero,
        ),
        (Error::InvalidConfig(""), std::io::ErrorKind::InvalidInput),
    ];
    for (e, kind) in kinds {
        assert!(!e.to_string().is_empty());
        assert_eq!(std::io::Error::from(e).kind(), kind);
    }
    tried(5);
    assert_usable(&pool);
}

/// The bounded wait with bad sizes and extreme timeouts: bad sizes fail at
/// once whatever the timeout; a zero or huge timeout on a pool with room
/// succeeds at once; a full pool with a zero timeout times out at once.
fn timed_allocation_sizes() {
    let page = page_size();
    let pool = BufferPool::builder()
        .name("bad-timeout")
        .max_bytes(3 * page)
        .build()
        .unwrap();
    let max = pool.max_buffer_size();
    let timeouts = [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_secs(3600),
        Duration::MAX,
    ];
    for t in timeouts {
        assert!(matches!(
            pool.allocate_page_size_buffer_timeout(0, t),
            Err(Error::ZeroSize)
        ));
        for size in [max + 1, SIZE_LIMIT + 1, usize::MAX] {
            assert_too_large(pool.allocate_page_size_buffer_timeout(size, t), size, max);
        }
        // Room for one guarded page: each call gets it at once.
        let b = pool.allocate_page_size_buffer_timeout(page, t).unwrap();
        assert_eq!((b.max_len(), b.as_ptr() as usize % page), (page, 0));
        if t < Duration::from_secs(1) {
            // Full now: a short wait ends in a clean timeout.
            assert!(matches!(
                pool.allocate_page_size_buffer_timeout(1, t),
                Err(Error::TimedOut { requested: 1, .. })
            ));
            tried(1);
        }
        drop(b);
        tried(5);
    }
    let s = pool.stats();
    assert_eq!(s.rejected, 4 * 4);
    assert_eq!(s.buffers_in_use, 0);
    assert_usable(&pool);
}

/// `allocate_buffer` at the edges of the small classes and past every limit.
fn unaligned_allocation_sizes() {
    let page = page_size();
    let pool = BufferPool::builder().name("bad-unaligned").build().unwrap();
    let max = pool.max_buffer_size();
    let good = [
        (1, 64),
        (63, 64),
        (64, 64),
        (65, 128),
        (1500, 1536),
        (SMALL_MAX - 1, SMALL_MAX),
        (SMALL_MAX, SMALL_MAX),
        (SMALL_MAX + 1, page),
        (page - 1, page),
        (page, page),
        (page + 1, 2 * page),
        (max, max),
    ];
    for (size, slot) in good {
        let b = pool.allocate_buffer(size).unwrap();
        assert_eq!((b.len(), b.max_len(), b.slot_len()), (0, size, slot));
        let align = if slot < page { 64 } else { page };
        assert_eq!(b.as_ptr() as usize % align, 0, "{size}");
    }
    tried(good.len());
    assert!(matches!(pool.allocate_buffer(0), Err(Error::ZeroSize)));
    let too_large = [max + 1, SIZE_LIMIT + 1, usize::MAX - 1, usize::MAX];
    for size in too_large {
        assert_too_large(pool.allocate_buffer(size), size, max);
    }
    tried(1 + too_large.len());
    // A pool whose largest buffer is small: allocate_buffer stays within it.
    let tiny = BufferPool::builder()
        .name("bad-unaligned-tiny")
        .max_buffer_size(100)
        .build()
        .unwrap();
    assert_eq!(tiny.allocate_buffer(100).unwrap().slot_len(), 128);
    assert_too_large(tiny.allocate_buffer(101), 101, 100);
    tried(2);
    assert_eq!(pool.stats().rejected, 1 + too_large.len() as u64);
    assert_usable(&pool);
}

/// One test, so the sections run in order and the count is the total.
#[test]
fn every_entry_point_rejects_bad_input_and_stays_usable() {
    allocation_sizes();
    timed_allocation_sizes();
    unaligned_allocation_sizes();
    lengths_and_appends();
    shared_slices_out_of_range_panic_and_leak_nothing();
    builder_settings_at_and_past_their_ends();
    pool_level_calls_on_empty_and_busy_pools();
    println!("bad inputs tried: {}", TRIED.load(Relaxed));
}
