//! The async waits (`allocate_page_size_buffer_async`, `allocate_buffer_async`):
//! first come, first served whatever the size, cancel-safe at every point,
//! woken by releases, trims, a raised cap and the pool's close, under a bare
//! executor and under tokio.

mod common;

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use common::{assert_stamped, full_pool, stamp};
use pagepool::{page_size, BufferPool, Error};

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// A counting waker, and its count.
fn counting() -> (Arc<Count>, Waker) {
    let c = Arc::new(Count::default());
    (Arc::clone(&c), Waker::from(c))
}

fn woken(c: &Count) -> usize {
    c.0.load(SeqCst)
}

/// Polls `f` once with `waker`.
fn poll_once<F: Future>(f: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(waker))
}

#[test]
fn resolves_at_once_under_a_bare_executor_when_there_is_room() {
    let pool = BufferPool::new();
    let (count, waker) = counting();
    let mut f = pin!(pool.allocate_page_size_buffer_async(5000));
    let Poll::Ready(Ok(buf)) = poll_once(f.as_mut(), &waker) else {
        panic!("a free pool made the future wait");
    };
    assert_eq!((buf.max_len(), buf.slot_len()), (5000, 8192));
    assert_eq!(woken(&count), 0);
    let small = futures_executor::block_on(pool.allocate_buffer_async(188)).unwrap();
    assert_eq!(small.slot_len(), 192);
    assert_eq!(pool.stats().waiting, 0);
    // Bad input is refused at once, not waited on.
    assert!(matches!(
        futures_executor::block_on(pool.allocate_page_size_buffer_async(0)),
        Err(Error::ZeroSize)
    ));
}

#[test]
fn a_request_no_empty_pool_could_hold_fails_at_once_instead_of_blocking_the_line() {
    let page = page_size();
    let (pool, _held) = full_pool("async-never");
    // Sixteen pages and their guards never fit under a nine-page cap.
    assert!(matches!(
        futures_executor::block_on(pool.allocate_page_size_buffer_async(16 * page)),
        Err(Error::Exhausted { .. })
    ));
    assert!(matches!(
        pool.allocate_page_size_buffer_timeout(16 * page, Duration::from_secs(60)),
        Err(Error::Exhausted { .. })
    ));
    assert_eq!(pool.stats().waiting, 0);
}

#[test]
fn a_large_request_first_in_line_is_not_overtaken_by_smaller_ones() {
    let page = page_size();
    let (pool, mut held) = full_pool("async-fifo");
    let (large_woken, large_waker) = counting();
    let (small_woken, small_waker) = counting();
    // Two pages: a slab of that class does not fit beside the one-page slab.
    let mut large = pin!(pool.allocate_page_size_buffer_async(2 * page));
    let mut small = pin!(pool.allocate_page_size_buffer_async(page));
    assert!(poll_once(large.as_mut(), &large_waker).is_pending());
    assert!(poll_once(small.as_mut(), &small_waker).is_pending());
    assert_eq!(pool.stats().waiting, 2);

    // A one-page slot comes back: it would serve `small`, but `large` is first.
    drop(held.pop());
    assert_eq!(woken(&large_woken), 1, "the head is woken by the release");
    assert_eq!(woken(&small_woken), 0, "only the head is woken");
    assert!(poll_once(small.as_mut(), &small_waker).is_pending());
    // Immediate calls do not take it either.
    assert!(matches!(
        pool.allocate_page_size_buffer(page),
        Err(Error::Exhausted { .. })
    ));
    assert!(poll_once(large.as_mut(), &large_waker).is_pending());

    // The other three come back: the idle slab is unmapped, the large slab
    // fits, and the turn passes to `small`.
    held.clear();
    let Poll::Ready(Ok(big)) = poll_once(large.as_mut(), &large_waker) else {
        panic!("the head was not served once the slab was idle");
    };
    assert_eq!(big.max_len(), 2 * page);
    assert!(woken(&small_woken) >= 1, "the turn was not passed on");
    // The two-slot slab of the large class fills the cap: `small` waits
    // for it to come back.
    assert!(poll_once(small.as_mut(), &small_waker).is_pending());
    let before = woken(&small_woken);
    drop(big);
    assert!(
        woken(&small_woken) > before,
        "the release did not wake the head"
    );
    let polled = poll_once(small.as_mut(), &small_waker);
    let Poll::Ready(Ok(one)) = polled else {
        panic!("the second waiter was not served after the first: {polled:?}");
    };
    assert_eq!(one.max_len(), page);
    assert_eq!(pool.stats().waiting, 0);
    // With no one waiting, immediate calls are served again.
    let _again = pool.allocate_page_size_buffer(page).unwrap();
}

#[test]
fn a_wake_up_that_reaches_a_dropped_head_is_passed_on() {
    let page = page_size();
    let (pool, mut held) = full_pool("async-cancel");
    let (a_woken, a_waker) = counting();
    let (b_woken, b_waker) = counting();
    let mut a = Box::pin(pool.allocate_page_size_buffer_async(page));
    let mut b = pin!(pool.allocate_page_size_buffer_async(page));
    assert!(poll_once(a.as_mut(), &a_waker).is_pending());
    assert!(poll_once(b.as_mut(), &b_waker).is_pending());
    drop(held.pop());
    assert_eq!((woken(&a_woken), woken(&b_woken)), (1, 0));
    // `a` is dropped before it could take the slot (tokio-uring #280).
    drop(a);
    assert_eq!(
        woken(&b_woken),
        1,
        "the wake-up was lost with the dropped waiter"
    );
    let Poll::Ready(Ok(buf)) = poll_once(b.as_mut(), &b_waker) else {
        panic!("the slot the dropped waiter was woken for did not reach the next one");
    };
    drop(buf);
    let s = pool.stats();
    assert_eq!((s.waiting, s.buffers_in_use), (0, 3));

    // Dropped before its first poll, or while waiting at the back: nothing
    // is left in the queue and nothing is held.
    drop(pool.allocate_page_size_buffer_async(page));
    let (_, w) = counting();
    let mut c = Box::pin(pool.allocate_page_size_buffer_async(page));
    let mut d = Box::pin(pool.allocate_page_size_buffer_async(page));
    // Room for one: `c` gets it on its first poll; `d` waits.
    let pc = poll_once(c.as_mut(), &w);
    assert!(matches!(pc, Poll::Ready(Ok(_))), "{pc:?}");
    let pd = poll_once(d.as_mut(), &w);
    assert!(pd.is_pending(), "{pd:?}");
    drop(d);
    drop((c, pc));
    let s = pool.stats();
    assert_eq!((s.waiting, s.buffers_in_use), (0, 3));
    held.clear();
    assert_eq!(pool.stats().buffers_in_use, 0);
}

#[test]
fn trim_a_raised_cap_and_close_wake_the_waiters() {
    let page = page_size();
    let (pool, held) = full_pool("async-wakers");
    let (w1, waker1) = counting();
    let mut first = pin!(pool.allocate_page_size_buffer_async(page));
    assert!(poll_once(first.as_mut(), &waker1).is_pending());
    pool.trim();
    assert_eq!(woken(&w1), 1, "trim did not wake the head");
    assert!(poll_once(first.as_mut(), &waker1).is_pending());
    pool.set_max_bytes(Some(64 * page)).unwrap();
    assert_eq!(woken(&w1), 2, "a raised cap did not wake the head");
    let Poll::Ready(Ok(extra)) = poll_once(first.as_mut(), &waker1) else {
        panic!("a raised cap did not make room");
    };
    // A cap below one slot is refused, like the builder's.
    assert!(matches!(
        pool.set_max_bytes(Some(1)),
        Err(Error::InvalidConfig(_))
    ));

    // Lower the cap again and queue three waiters; close wakes them all
    // with a clear error.
    pool.set_max_bytes(Some(9 * page)).unwrap();
    // The slab mapped under the raised cap keeps its free slots: take them.
    let mut rest = Vec::new();
    while let Ok(b) = pool.allocate_page_size_buffer(page) {
        rest.push(b);
    }
    assert!(
        pool.stats().bytes_reserved > 9 * page,
        "a lowered cap unmaps no slot in use"
    );
    let (wc, wakerc) = counting();
    let mut waits: Vec<_> = (0..3)
        .map(|_| Box::pin(pool.allocate_page_size_buffer_async(page)))
        .collect();
    for w in &mut waits {
        assert!(poll_once(w.as_mut(), &wakerc).is_pending());
    }
    pool.close();
    assert!(pool.is_closed());
    assert!(woken(&wc) >= 3, "close woke {} of 3 waiters", woken(&wc));
    for w in &mut waits {
        assert!(matches!(
            poll_once(w.as_mut(), &wakerc),
            Poll::Ready(Err(Error::Closed))
        ));
    }
    assert!(matches!(
        pool.allocate_page_size_buffer(page),
        Err(Error::Closed)
    ));
    assert!(matches!(
        futures_executor::block_on(pool.allocate_buffer_async(100)),
        Err(Error::Closed)
    ));
    // Buffers out still come back to a closed pool.
    drop((extra, held, rest));
    let s = pool.stats();
    assert_eq!((s.buffers_in_use, s.waiting), (0, 0));
}

#[test]
fn blocking_and_async_waiters_share_one_line() {
    let page = page_size();
    let (pool, mut held) = full_pool("async-blocking");
    let p = pool.clone();
    let blocked =
        thread::spawn(move || p.allocate_page_size_buffer_timeout(page, Duration::from_secs(30)));
    while pool.stats().waiting == 0 {
        thread::yield_now();
    }
    let (_, w) = counting();
    let mut later = pin!(pool.allocate_page_size_buffer_async(page));
    assert!(poll_once(later.as_mut(), &w).is_pending());
    // One slot: the thread that came first gets it.
    drop(held.pop());
    let first = blocked.join().unwrap().unwrap();
    assert!(poll_once(later.as_mut(), &w).is_pending());
    drop(held.pop());
    assert!(matches!(poll_once(later.as_mut(), &w), Poll::Ready(Ok(_))));
    drop(first);
}

#[test]
fn tokio_tasks_are_woken_by_releases_on_other_threads() {
    let page = page_size();
    let (pool, held) = full_pool("async-tokio");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|i: u64| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut b = pool.allocate_page_size_buffer_async(page).await.unwrap();
                    stamp(b.as_max_slice_mut(), i);
                    tokio::task::yield_now().await;
                    assert_stamped(b.as_max_slice(), i);
                })
            })
            .collect();
        // Release the four held buffers from a plain thread, one by one.
        let releaser = thread::spawn(move || {
            for b in held {
                thread::sleep(Duration::from_millis(5));
                drop(b);
            }
        });
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("a task was never woken")
                .unwrap();
        }
        releaser.join().unwrap();
    });
    let s = pool.stats();
    assert_eq!((s.waiting, s.buffers_in_use), (0, 0));
}

/// Many tasks over a tiny pool, a third of their waits cut short by a
/// timeout (the future dropped mid-wait), and plain threads allocating and
/// releasing beside them: every task finishes (no wake-up is lost), every
/// buffer's contents are its own, and nothing is left queued or held.
#[test]
fn stress_waits_dropped_mid_wait_and_releases_on_other_threads() {
    let page = page_size();
    let pool = BufferPool::builder()
        .name("async-stress")
        .max_bytes(24 * page)
        .slab_size(4 * page)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..2)
        .map(|t: u64| {
            let pool = pool.clone();
            thread::spawn(move || {
                for i in 0..300u64 {
                    if let Ok(mut b) = pool.allocate_page_size_buffer_timeout(
                        page * (1 + (i as usize % 2)),
                        Duration::from_millis(50),
                    ) {
                        stamp(b.as_max_slice_mut(), 1_000_000 + t * 1000 + i);
                        thread::yield_now();
                        assert_stamped(b.as_max_slice(), 1_000_000 + t * 1000 + i);
                    }
                }
            })
        })
        .collect();
    rt.block_on(async {
        let tasks: Vec<_> = (0..48)
            .map(|task: u64| {
                let (pool, served, cut) = (pool.clone(), served.clone(), cut.clone());
                tokio::spawn(async move {
                    for round in 0..20u64 {
                        let id = task * 100 + round;
                        let size = page * (1 + id as usize % 3);
                        let wait = pool.allocate_page_size_buffer_async(size);
                        let got = if id.is_multiple_of(3) {
                            match tokio::time::timeout(Duration::from_micros(200), wait).await {
                                Ok(got) => got,
                                Err(_) => {
                                    cut.fetch_add(1, SeqCst);
                                    continue;
                                }
                            }
                        } else {
                            wait.await
                        };
                        let mut b = got.unwrap();
                        stamp(b.as_max_slice_mut(), id);
                        tokio::task::yield_now().await;
                        assert_stamped(b.as_max_slice(), id);
                        served.fetch_add(1, SeqCst);
                    }
                })
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .expect("a task hung: a wake-up was lost")
                .unwrap();
        }
    });
    for t in threads {
        t.join().unwrap();
    }
    let s = pool.stats();
    assert_eq!((s.waiting, s.buffers_in_use), (0, 0), "{s:?}");
    assert!(
        served.load(SeqCst) > 48 * 20 / 2,
        "served {}",
        served.load(SeqCst)
    );
    eprintln!(
        "served {}, cut short {}, exhausted refusals {}",
        served.load(SeqCst),
        cut.load(SeqCst),
        s.exhausted
    );
}
