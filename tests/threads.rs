//! Many threads at once: buffers allocated on one thread and released on
//! another, contents never disturbed, live buffers never overlapping, the cap
//! holding, and `trim` racing with allocation.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Barrier, Mutex};

use common::{assert_stamped, stamp};
use pagepool::{page_size, BufferPool, Error, PageBuffer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const KIB: usize = 1024;

/// Address ranges (`start -> end` of the slot) of every live buffer.
#[derive(Default)]
struct LiveRanges(Mutex<BTreeMap<usize, usize>>);

impl LiveRanges {
    /// Records a freshly allocated buffer, asserting it overlaps no live one.
    fn insert(&self, buf: &PageBuffer) {
        let start = buf.as_ptr() as usize;
        let end = start + buf.slot_len();
        let mut map = self.0.lock().unwrap();
        // The live range starting last before `end` is the only one that can
        // overlap (the map's ranges are disjoint).
        if let Some((&s, &e)) = map.range(..end).next_back() {
            assert!(
                e <= start,
                "new buffer {start:#x}..{end:#x} overlaps live buffer {s:#x}..{e:#x}"
            );
        }
        map.insert(start, end);
    }

    /// Forgets a buffer about to be released.
    fn remove(&self, buf: &PageBuffer) {
        let start = buf.as_ptr() as usize;
        let end = self.0.lock().unwrap().remove(&start);
        assert_eq!(
            end,
            Some(start + buf.slot_len()),
            "buffer {start:#x} was not live"
        );
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A buffer and the id its contents are stamped with.
struct Held {
    id: u64,
    buf: PageBuffer,
}

impl Held {
    /// Verifies the whole buffer, unregisters it, and drops it.
    fn release(self, live: &LiveRanges) {
        self.verify();
        live.remove(&self.buf);
        drop(self.buf);
    }

    fn verify(&self) {
        assert_eq!(self.buf.len(), self.buf.max_len());
        assert_stamped(&self.buf, self.id);
    }
}

/// Mostly small (1 B ..= 16 KiB), one in 64 up to 256 KiB.
fn random_size(rng: &mut SmallRng) -> usize {
    if rng.random_ratio(1, 64) {
        rng.random_range(16 * KIB + 1..=256 * KIB)
    } else {
        rng.random_range(1..=16 * KIB)
    }
}

#[test]
fn four_threads_hand_buffers_around() {
    const THREADS: usize = 4;
    const TOTAL_OPS: usize = 200_000;
    const MAX_HELD: usize = 64;

    let pool = BufferPool::builder().name("threads").build().unwrap();
    let live = LiveRanges::default();
    let allocated = AtomicU64::new(0);
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);
    let start = Barrier::new(THREADS);

    // Thread t sends to thread t + 1 (mod THREADS).
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..THREADS).map(|_| mpsc::channel::<Held>()).unzip();
    let mut senders: Vec<Option<mpsc::Sender<Held>>> = senders.into_iter().map(Some).collect();
    senders.rotate_left(1);

    std::thread::scope(|scope| {
        for (t, (rx, tx)) in receivers.into_iter().zip(senders).enumerate() {
            let (pool, live, allocated, sent, received, start) =
                (&pool, &live, &allocated, &sent, &received, &start);
            scope.spawn(move || {
                let tx = tx.expect("one sender per thread");
                let mut rng = SmallRng::seed_from_u64(0x5eed_0000 + t as u64);
                let mut held: Vec<Held> = Vec::new();
                let mut next_id = 0u64;
                start.wait();
                for _ in 0..TOTAL_OPS / THREADS {
                    for h in rx.try_iter() {
                        h.verify();
                        received.fetch_add(1, Ordering::Relaxed);
                        held.push(h);
                    }
                    let choice = rng.random_range(0..10);
                    if held.is_empty() || (choice < 5 && held.len() < MAX_HELD) {
                        let size = random_size(&mut rng);
                        let mut buf = pool.allocate_page_size_buffer(size).unwrap();
                        assert_eq!(buf.max_len(), size);
                        assert_eq!(buf.as_ptr() as usize % page_size(), 0);
                        live.insert(&buf);
                        // Unique across threads: the thread in the top bits.
                        let id = (t as u64) << 28 | next_id;
                        next_id += 1;
                        stamp(buf.as_max_slice_mut(), id);
                        buf.set_len(size).unwrap();
                        allocated.fetch_add(1, Ordering::Relaxed);
                        held.push(Held { id, buf });
                    } else {
                        let i = rng.random_range(0..held.len());
                        let h = held.swap_remove(i);
                        if choice < 8 {
                            h.release(live);
                        } else {
                            h.verify();
                            sent.fetch_add(1, Ordering::Relaxed);
                            tx.send(h).expect("the next thread is receiving");
                        }
                    }
                }
                // No more sends from us; take what the previous thread still
                // sends until it is done too.
                drop(tx);
                for h in rx.iter() {
                    received.fetch_add(1, Ordering::Relaxed);
                    h.release(live);
                }
                for h in held {
                    h.release(live);
                }
            });
        }
    });

    let allocated = allocated.load(Ordering::Relaxed);
    let (sent, received) = (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    assert!(sent > 10_000, "buffers crossed threads: {sent}");
    assert_eq!(sent, received, "every sent buffer arrived");
    assert_eq!(live.len(), 0);
    let s = pool.stats();
    assert_eq!(s.buffers_in_use, 0, "{s:?}");
    assert_eq!(s.bytes_in_use, 0);
    assert_eq!(s.allocations, allocated);
    assert_eq!(s.releases, s.allocations);
    assert_eq!(s.hits + s.misses, s.allocations);
    assert!(s.hits > s.misses, "a warm pool mostly recycles: {s:?}");
    assert_eq!((s.exhausted, s.os_errors, s.rejected), (0, 0, 0));
    assert_eq!(s.corruptions, 0);
}

#[test]
fn cap_holds_under_contention() {
    const THREADS: usize = 4;
    const OPS: usize = 10_000;
    let page = page_size();
    let cap = 1 << 20;
    let pool = BufferPool::builder()
        .name("contended-cap")
        .max_bytes(cap)
        .slab_size(16 * page)
        .build()
        .unwrap();
    let live = LiveRanges::default();
    let exhausted = AtomicU64::new(0);
    let start = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for t in 0..THREADS {
            let (pool, live, exhausted, start) = (&pool, &live, &exhausted, &start);
            workers.push(scope.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(0xca9 + t as u64);
                let mut held: Vec<Held> = Vec::new();
                start.wait();
                for op in 0..OPS as u64 {
                    if held.len() < 16 && rng.random_ratio(3, 5) {
                        let size = rng.random_range(1..=16 * page);
                        match pool.allocate_page_size_buffer(size) {
                            Ok(mut buf) => {
                                live.insert(&buf);
                                let id = (t as u64) << 28 | op;
                                stamp(buf.as_max_slice_mut(), id);
                                buf.set_len(size).unwrap();
                                held.push(Held { id, buf });
                            }
                            Err(Error::Exhausted { requested, limit }) => {
                                assert_eq!((requested, limit), (size, cap));
                                exhausted.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    } else if !held.is_empty() {
                        let i = rng.random_range(0..held.len());
                        held.swap_remove(i).release(live);
                    }
                    let reserved = pool.stats().bytes_reserved;
                    assert!(reserved <= cap, "reserved {reserved} > cap {cap}");
                }
                for h in held {
                    h.release(live);
                }
            }));
        }
        // Join explicitly: unlike the scope's own wait, `join` returns only
        // after each thread has run its thread-local destructors, which hand
        // its cached slots back to the pool.
        for w in workers {
            w.join().expect("worker panicked");
        }
    });
    let s = pool.stats();
    let exhausted = exhausted.load(Ordering::Relaxed);
    assert!(exhausted > 0, "the cap was never reached; test too weak");
    assert_eq!(s.exhausted, exhausted);
    assert!(s.bytes_reserved <= cap);
    assert_eq!((s.buffers_in_use, s.releases), (0, s.allocations));
    assert!(s.trimmed_bytes > 0, "classes took room from idle classes");
    pool.trim();
    assert_eq!(pool.stats().bytes_reserved, 0);
}

#[test]
fn trim_races_with_allocation() {
    const WORKERS: usize = 3;
    const OPS: usize = 15_000;
    let page = page_size();
    let pool = BufferPool::builder()
        .name("trim-race")
        .slab_size(8 * page)
        .build()
        .unwrap();
    let live = LiveRanges::default();
    let done = AtomicBool::new(false);
    let trims = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let (pool, done, trims) = (&pool, &done, &trims);
        scope.spawn(move || {
            while !done.load(Ordering::Relaxed) {
                pool.trim();
                trims.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
        });
        let workers: Vec<_> = (0..WORKERS)
            .map(|t| {
                let live = &live;
                scope.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(0x7e1 + t as u64);
                    let mut held: Vec<Held> = Vec::new();
                    for op in 0..OPS as u64 {
                        if held.len() < 8 && rng.random_bool(0.5) {
                            // Few pages, many classes, so slabs go idle often.
                            let size = rng.random_range(1..=12 * page);
                            let mut buf = pool.allocate_page_size_buffer(size).unwrap();
                            live.insert(&buf);
                            let id = (t as u64) << 28 | op;
                            stamp(buf.as_max_slice_mut(), id);
                            buf.set_len(size).unwrap();
                            held.push(Held { id, buf });
                        } else if !held.is_empty() {
                            let i = rng.random_range(0..held.len());
                            held.swap_remove(i).release(live);
                        }
                    }
                    for h in held {
                        h.release(live);
                    }
                })
            })
            .collect();
        // Stop the trimmer before reporting a failed worker, or the scope
        // would wait for it forever.
        let results: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        done.store(true, Ordering::Relaxed);
        for r in results {
            if let Err(panic) = r {
                std::panic::resume_unwind(panic);
            }
        }
    });
    let s = pool.stats();
    assert!(trims.load(Ordering::Relaxed) > 0);
    assert!(s.trimmed_bytes > 0, "trim found idle slabs mid-run: {s:?}");
    assert_eq!((s.buffers_in_use, s.releases), (0, s.allocations));
    let reserved = s.bytes_reserved;
    assert_eq!(pool.trim(), reserved);
    assert_eq!(pool.stats().slabs, 0);
}

/// Pools on different threads map and unmap slabs at the same time: each
/// unmapping looks its slab up in the process-wide fault table while the
/// other pool's entries come and go (ThreadSanitizer, run by `.ci/run`,
/// reported a read of a description the other pool was freeing).
#[test]
fn pools_map_and_unmap_slabs_side_by_side() {
    const ROUNDS: usize = 2_000;
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        for t in 0..2u64 {
            let barrier = &barrier;
            scope.spawn(move || {
                let pool = BufferPool::builder()
                    .name(format!("side-by-side-{t}"))
                    .metrics(false)
                    .build()
                    .unwrap();
                barrier.wait();
                for round in 0..ROUNDS as u64 {
                    let mut buf = pool.allocate_page_size_buffer(page_size()).unwrap();
                    stamp(buf.as_max_slice_mut(), t << 32 | round);
                    assert_stamped(buf.as_max_slice(), t << 32 | round);
                    drop(buf);
                    assert!(pool.trim() > 0, "round {round}: trim unmapped nothing");
                }
            });
        }
    });
}

/// The media-server pattern: one thread allocates, two others verify and
/// release, so the consumers' bins spill what the producer's refill takes
/// (whole batches at 4 KiB and 64 KiB); no slot is handed out twice and no
/// content is disturbed on the way.
#[test]
fn a_producer_hands_buffers_to_two_consumers() {
    const BATCHES: u64 = 400;
    const BATCH: u64 = 64;
    for size in [4 * KIB, 64 * KIB] {
        let pool = BufferPool::builder().name("handoff").build().unwrap();
        let live = LiveRanges::default();
        let (pool, live) = (&pool, &live);
        std::thread::scope(|scope| {
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    let (tx, rx) = mpsc::sync_channel::<Vec<Held>>(4);
                    scope.spawn(move || {
                        for batch in rx {
                            for h in batch {
                                h.release(live);
                            }
                        }
                    });
                    tx
                })
                .collect();
            for b in 0..BATCHES {
                let batch = (0..BATCH)
                    .map(|i| {
                        let mut buf = pool.allocate_page_size_buffer(size).unwrap();
                        live.insert(&buf);
                        let id = b * BATCH + i;
                        stamp(buf.as_max_slice_mut(), id);
                        buf.set_len(size).unwrap();
                        Held { id, buf }
                    })
                    .collect();
                consumers[b as usize % 2].send(batch).expect("a consumer");
            }
        });
        assert_eq!(live.len(), 0);
        let s = pool.stats();
        assert_eq!(s.allocations, BATCHES * BATCH);
        assert_eq!((s.releases, s.buffers_in_use), (s.allocations, 0), "{s:?}");
        assert!(
            s.hits > 10 * s.misses,
            "slots came back to the producer: {s:?}"
        );
        assert_eq!(s.corruptions, 0);
    }
}
