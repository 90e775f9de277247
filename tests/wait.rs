//! The bounded wait (`allocate_page_size_buffer_timeout`): it times out
//! cleanly when nothing comes back, wakes when a buffer is released on any
//! thread (one that caches slots included), makes room from other classes,
//! returns other errors at once, and never hands one slot to two waiters.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_stamped, full_pool, stamp};
use pagepool::{page_size, BufferPool, Error, PageBuffer};

#[test]
fn times_out_cleanly_and_the_pool_goes_on() {
    let page = page_size();
    let (pool, mut held) = full_pool("wait-timeout");
    let before = pool.stats();
    let timeout = Duration::from_millis(30);
    let start = Instant::now();
    match pool.allocate_page_size_buffer_timeout(page, timeout) {
        Err(Error::TimedOut { requested, waited }) => {
            assert_eq!(requested, page);
            assert!(waited >= timeout, "gave up after {waited:?}");
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(start.elapsed() >= timeout);
    let after = pool.stats();
    // One refusal, however many times the waiter retried; nothing leaked.
    assert_eq!(after.exhausted, before.exhausted + 1);
    assert_eq!(after.buffers_in_use, 4);
    assert_eq!(after.bytes_reserved, before.bytes_reserved);
    // A zero timeout is a single try.
    assert!(matches!(
        pool.allocate_page_size_buffer_timeout(page, Duration::ZERO),
        Err(Error::TimedOut { .. })
    ));
    // Usable afterwards: a release makes room at once.
    held.pop();
    let b = pool
        .allocate_page_size_buffer_timeout(page, Duration::ZERO)
        .unwrap();
    assert_eq!(b.max_len(), page);
    assert_eq!(pool.stats().buffers_in_use, 4);
}

#[test]
fn wakes_when_another_thread_releases() {
    let page = page_size();
    let (pool, held) = full_pool("wait-wake");
    // The releasing thread allocates first, so it has a thread cache for the
    // pool, and stays alive (and idle) until the waiter is served: its
    // release must reach the waiter, not sit in its cache.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let releaser = {
        let pool = pool.clone();
        thread::spawn(move || {
            let mut held = held;
            let extra = held.pop().unwrap();
            drop(extra);
            let again = pool.allocate_page_size_buffer(page).unwrap();
            held.push(again);
            ready_tx.send(()).unwrap();
            thread::sleep(Duration::from_millis(50));
            drop(held.pop());
            done_rx.recv().unwrap();
            held
        })
    };
    // The releaser's own allocation is done before anyone waits.
    ready_rx.recv().unwrap();
    let timeout = Duration::from_secs(10);
    let start = Instant::now();
    let got = pool.allocate_page_size_buffer_timeout(page, timeout);
    let waited = start.elapsed();
    done_tx.send(()).unwrap();
    let mut b = got.expect("a release wakes the waiter");
    assert!(waited < timeout, "woke only at the timeout");
    stamp(b.as_max_slice_mut(), 7);
    let rest = releaser.join().unwrap();
    assert_stamped(b.as_max_slice(), 7);
    assert_eq!(rest.len(), 3);
    assert_eq!(pool.stats().buffers_in_use, 4);
    // Releases cache normally again once nobody waits.
    drop(b);
    drop(rest);
    assert_eq!(pool.stats().buffers_in_use, 0);
}

#[test]
fn a_release_of_another_class_makes_room() {
    let page = page_size();
    // Room for one slab of two 4-page slots ((2 * 5 + 1) pages); a one-page
    // request then needs that slab trimmed away.
    let pool = BufferPool::builder()
        .name("wait-other-class")
        .max_bytes(11 * page)
        .slab_size(8 * page)
        .build()
        .unwrap();
    let big: Vec<PageBuffer> = (0..2)
        .map(|_| pool.allocate_page_size_buffer(4 * page).unwrap())
        .collect();
    assert!(matches!(
        pool.allocate_page_size_buffer(page),
        Err(Error::Exhausted { .. })
    ));
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        drop(big);
    });
    let small = pool
        .allocate_page_size_buffer_timeout(page, Duration::from_secs(30))
        .expect("trimming the idle slab makes room");
    releaser.join().unwrap();
    assert_eq!(small.max_len(), page);
    let s = pool.stats();
    assert!(
        s.trimmed_bytes >= 11 * page as u64,
        "the big slab was unmapped: {s:?}"
    );
    assert!(s.bytes_reserved <= 11 * page);
}

#[test]
fn other_errors_return_at_once() {
    let (pool, _held) = full_pool("wait-errors");
    let long = Duration::from_secs(3600);
    let start = Instant::now();
    assert!(matches!(
        pool.allocate_page_size_buffer_timeout(0, long),
        Err(Error::ZeroSize)
    ));
    let too_large = pool.max_buffer_size() + 1;
    assert!(matches!(
        pool.allocate_page_size_buffer_timeout(too_large, long),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        pool.allocate_page_size_buffer_timeout(usize::MAX, Duration::MAX),
        Err(Error::TooLarge { .. })
    ));
    assert!(start.elapsed() < Duration::from_secs(60), "it waited");
}

#[test]
fn many_waiters_each_get_their_own_slot() {
    const WAITERS: usize = 4;
    const ROUNDS: usize = 50;
    let page = page_size();
    let (pool, held) = full_pool("wait-many");
    let barrier = Arc::new(Barrier::new(WAITERS + 1));
    let waiters: Vec<_> = (0..WAITERS)
        .map(|w| {
            let pool = pool.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                for round in 0..ROUNDS {
                    let mut b = pool
                        .allocate_page_size_buffer_timeout(page, Duration::from_secs(60))
                        .expect("the holders keep releasing");
                    let id = (w * ROUNDS + round) as u64;
                    stamp(b.as_max_slice_mut(), id);
                    thread::yield_now();
                    // Nobody else wrote into our slot meanwhile.
                    assert_stamped(b.as_max_slice(), id);
                }
            })
        })
        .collect();
    barrier.wait();
    // Let the four held buffers go while the waiters are (mostly) waiting.
    for b in held {
        thread::sleep(Duration::from_millis(5));
        drop(b);
    }
    for w in waiters {
        w.join().unwrap();
    }
    let s = pool.stats();
    assert_eq!(s.buffers_in_use, 0);
    assert!(s.bytes_reserved <= 9 * page);
}
