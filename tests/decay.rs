//! Decay: slabs idle for the decay period go back to the OS from the pool's
//! background tick, not before; slabs in use and the `min_buffers` stay;
//! with decay off nothing goes. Every wait polls with a deadline.

use std::thread;
use std::time::{Duration, Instant};

use pagepool::{page_size, BufferPool, Error, PageBuffer, PoolBuilder, PoolStats};

/// A short decay period, and a tick much shorter than it.
const PERIOD: Duration = Duration::from_millis(200);
const TICK: Duration = Duration::from_millis(10);
/// The longest any wait for the background tick may take.
const DEADLINE: Duration = Duration::from_secs(10);
/// Slots in one slab of the page class (1 MiB slabs of 4 KiB slots), when
/// the page is 4 KiB; computed from the page size otherwise.
fn slab_slots() -> usize {
    (1 << 20) / page_size()
}

fn builder(name: &str) -> PoolBuilder {
    BufferPool::builder()
        .name(name)
        .decay(Some(PERIOD))
        .metrics_publish_interval(TICK)
}

/// Polls `pool.stats()` until `done` holds, or fails after [`DEADLINE`].
fn wait_for(pool: &BufferPool, what: &str, done: impl Fn(&PoolStats) -> bool) -> PoolStats {
    let start = Instant::now();
    loop {
        let s = pool.stats();
        if done(&s) {
            return s;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}: {s:?}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// `n` page buffers, and the instant just before the last allocation.
fn allocate(pool: &BufferPool, n: usize) -> (Vec<PageBuffer>, Instant) {
    let mut held: Vec<_> = (1..n)
        .map(|_| pool.allocate_page_size_buffer(page_size()).unwrap())
        .collect();
    let last = Instant::now();
    held.push(pool.allocate_page_size_buffer(page_size()).unwrap());
    (held, last)
}

#[test]
fn idle_slabs_go_back_after_the_period_and_not_before() {
    let pool = builder("decay-after").thread_cache(false).build().unwrap();
    // Let the pool's looks run for more than a period first, so marks older
    // than a period exist when the slabs are used: only the count of what
    // was touched since keeps them (not the pool's young age).
    thread::sleep(PERIOD + PERIOD / 2);
    let (held, last_use) = allocate(&pool, 2 * slab_slots());
    drop(held);
    let before = pool.stats();
    assert!(before.bytes_reserved > 0 && before.decayed_bytes == 0);
    wait_for(&pool, "decay", |s| s.decayed_bytes > 0);
    let seen = last_use.elapsed();
    assert!(
        seen >= PERIOD,
        "decayed {seen:?} after the last use, before the {PERIOD:?} period"
    );
    // Both slabs are idle: both go, at one look.
    let after = wait_for(&pool, "both slabs", |s| s.bytes_reserved == 0);
    assert_eq!(after.decayed_bytes, before.bytes_reserved as u64);
    assert_eq!(after.trimmed_bytes, 0, "decay is not counted as trim");
    // The pool maps again on demand.
    drop(pool.allocate_page_size_buffer(page_size()).unwrap());
    assert!(pool.stats().bytes_reserved > 0);
}

#[test]
fn slabs_holding_a_buffer_in_use_stay() {
    let pool = builder("decay-in-use").thread_cache(false).build().unwrap();
    let n = slab_slots();
    // Slots are handed out in address order: the first slab's all held.
    let (mut held, _) = allocate(&pool, 3 * n);
    let three = pool.stats().bytes_reserved;
    held.truncate(n);
    let s = wait_for(&pool, "two idle slabs", |s| s.decayed_bytes > 0);
    let s = if s.bytes_reserved > three / 3 {
        wait_for(&pool, "the second idle slab", |s| {
            s.bytes_reserved <= three / 3
        })
    } else {
        s
    };
    assert_eq!(s.bytes_reserved, three / 3, "the slab in use went");
    assert_eq!(s.buffers_in_use, n);
    // Their contents are untouched: write and read each buffer.
    for (i, b) in held.iter_mut().enumerate() {
        b.extend_from_slice(&(i as u64).to_le_bytes()).unwrap();
        assert_eq!(b[..8], (i as u64).to_le_bytes());
    }
    drop(held);
    wait_for(&pool, "the last slab", |s| s.bytes_reserved == 0);
}

#[test]
fn a_class_in_steady_use_keeps_its_slabs() {
    let pool = builder("decay-steady").thread_cache(false).build().unwrap();
    // Each round needs more than one slab: both stay, round after round.
    let round = slab_slots() + slab_slots() / 4;
    drop(allocate(&pool, round));
    let warm = pool.stats();
    let until = Instant::now() + 4 * PERIOD;
    while Instant::now() < until {
        drop(allocate(&pool, round));
        thread::sleep(TICK / 2);
    }
    let s = pool.stats();
    assert_eq!(s.decayed_bytes, 0, "a slab in use every round decayed");
    assert_eq!(
        (s.misses, s.bytes_reserved),
        (warm.misses, warm.bytes_reserved)
    );
}

#[test]
fn a_slot_cached_by_a_thread_comes_back_at_its_next_call() {
    let page_class = |pool: &BufferPool| {
        pool.class_stats()
            .into_iter()
            .find(|c| c.slot_bytes == page_size())
            .unwrap()
    };
    let pool = builder("decay-cached").build().unwrap();
    let (held, _) = allocate(&pool, 2 * slab_slots());
    drop(held);
    // This thread's cache keeps slots of one slab; the other slab goes.
    wait_for(&pool, "the uncached slab", |s| s.decayed_bytes > 0);
    assert!(page_class(&pool).slabs >= 1, "a cached slot's slab went");
    // A call of another class flushes this thread's cache (decay asked).
    drop(pool.allocate_page_size_buffer(16 * page_size()).unwrap());
    let start = Instant::now();
    while page_class(&pool).slabs != 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "the cached slots never came back"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn min_buffers_are_mapped_at_build_and_kept() {
    let keep = slab_slots() + 1;
    let pool = builder("decay-min")
        .thread_cache(false)
        .min_buffers(page_size(), keep)
        .build()
        .unwrap();
    let warm = pool.stats();
    assert!(warm.buffers_cached >= keep, "{warm:?}");
    assert_eq!((warm.misses, warm.allocations), (0, 0));
    // A burst maps more; decay gives the surplus back, not the floor.
    let (held, _) = allocate(&pool, 4 * slab_slots());
    drop(held);
    let s = wait_for(&pool, "decay", |s| s.decayed_bytes > 0);
    assert!(
        s.buffers_cached >= keep,
        "decay went below min_buffers: {s:?}"
    );
    pool.trim();
    let s = pool.stats();
    assert!(
        s.buffers_cached >= keep,
        "trim went below min_buffers: {s:?}"
    );
    assert_eq!(s.bytes_reserved, warm.bytes_reserved);
}

#[test]
fn with_decay_off_nothing_goes() {
    let off = builder("decay-off")
        .decay(None)
        .thread_cache(false)
        .build()
        .unwrap();
    let on = builder("decay-on").thread_cache(false).build().unwrap();
    for pool in [&off, &on] {
        drop(allocate(pool, 2 * slab_slots()));
    }
    let reserved = off.stats().bytes_reserved;
    // The pool with decay on decays: the other had as long to.
    wait_for(&on, "decay", |s| s.bytes_reserved == 0);
    assert_eq!(off.decay_idle(), 0);
    let s = off.stats();
    assert_eq!((s.decayed_bytes, s.bytes_reserved), (0, reserved));
}

#[test]
fn bad_settings_are_typed_errors() {
    let bad = [
        BufferPool::builder().decay(Some(Duration::ZERO)).build(),
        BufferPool::builder()
            .decay(Some(pagepool::MAX_DECAY + Duration::from_secs(1)))
            .build(),
        BufferPool::builder().min_buffers(0, 1).build(),
        BufferPool::builder()
            .max_buffer_size(1 << 20)
            .min_buffers((1 << 20) + 1, 1)
            .build(),
        BufferPool::builder()
            .max_bytes(1 << 20)
            .min_buffers(page_size(), 1 << 20)
            .build(),
    ];
    for (i, b) in bad.into_iter().enumerate() {
        assert!(
            matches!(b, Err(Error::InvalidConfig(_))),
            "setting {i}: {b:?}"
        );
    }
}
