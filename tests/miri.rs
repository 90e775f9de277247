//! Small concurrent workloads meant for Miri (its data-race detector and
//! aliasing model check the hand-over argument of `pagepool::design`):
//!
//! ```text
//! MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-strict-provenance" cargo +nightly miri test --test miri
//! ```
//!
//! Miri cannot run `madvise` or `mprotect`, so these pools have no guard
//! pages; metrics, decay and leak tracking are off (no background thread:
//! Miri's clock is real and its runs long, so a 10 s decay would unmap
//! slabs under the tests' own `trim` checks). Under
//! plain `cargo test` they run as ordinary quick tests.

use std::sync::mpsc;

use pagepool::{BufferPool, DebugLevel, LeakTracking, PageBuffer, SharedBuffer};

/// Fewer rounds under Miri, which is some 10,000 times slower.
const ROUNDS: usize = if cfg!(miri) { 40 } else { 4_000 };

fn pool(thread_cache: bool, debug: DebugLevel) -> BufferPool {
    BufferPool::builder()
        .name(format!("miri-{thread_cache}-{debug:?}"))
        .guard_pages(false)
        .metrics(false)
        .decay(None)
        .leak_tracking(LeakTracking::Off)
        .debug(debug)
        .thread_cache(thread_cache)
        .slab_size(8 * pagepool::page_size())
        .build()
        .unwrap()
}

fn fill(b: &mut PageBuffer, v: u8) {
    // A few bytes at both ends (Miri is slow on whole pages).
    let n = b.max_len();
    let s = b.as_max_slice_mut();
    for i in (0..n.min(16)).chain(n.saturating_sub(16)..n) {
        s[i] = v ^ i as u8;
    }
}

fn check(b: &[u8], v: u8) {
    let n = b.len();
    for i in (0..n.min(16)).chain(n.saturating_sub(16)..n) {
        assert_eq!(b[i], v ^ i as u8);
    }
}

/// Two threads hand buffers to each other through a channel and release them
/// on the receiving side (the slot then travels back through the free lists),
/// while the main thread trims.
fn ping_pong(thread_cache: bool, debug: DebugLevel) {
    let pool = &pool(thread_cache, debug);
    let page = pagepool::page_size();
    let (tx, rx) = mpsc::channel::<(u8, PageBuffer)>();
    let (stx, srx) = mpsc::channel::<(u8, SharedBuffer)>();
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            for r in 0..ROUNDS {
                let size = 1 + (r * 1237) % (3 * page);
                let mut b = pool.allocate_page_size_buffer(size).unwrap();
                fill(&mut b, r as u8);
                b.set_len(size).unwrap();
                if r % 3 == 0 {
                    let shared = b.freeze();
                    stx.send((r as u8, shared.clone())).unwrap();
                    check(&shared, r as u8);
                } else {
                    tx.send((r as u8, b)).unwrap();
                }
            }
            drop((tx, stx));
        });
        let consumer = s.spawn(move || {
            let mut got = 0;
            for (v, b) in rx.iter() {
                check(&b, v);
                got += 1;
            }
            for (v, sh) in srx.iter() {
                check(&sh, v);
                got += 1;
            }
            got
        });
        for _ in 0..4 {
            pool.trim();
            std::thread::yield_now();
        }
        producer.join().unwrap();
        assert_eq!(consumer.join().unwrap(), ROUNDS);
    });
    let s = pool.stats();
    assert_eq!(
        (s.buffers_in_use, s.allocations),
        (0, ROUNDS as u64),
        "{s:?}"
    );
    let reserved = s.bytes_reserved;
    assert_eq!(pool.trim(), reserved);
}

#[test]
fn ping_pong_with_thread_caches() {
    ping_pong(true, DebugLevel::Standard);
}

#[test]
fn ping_pong_without_thread_caches() {
    ping_pong(false, DebugLevel::Off);
}

/// Several threads allocate and release the same classes at once, so slots
/// move between their caches through the shared lists.
#[test]
fn contended_classes() {
    let pool = pool(true, DebugLevel::Standard);
    let page = pagepool::page_size();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..3u8)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || {
                    let mut held = Vec::new();
                    for r in 0..ROUNDS {
                        let mut b = pool.allocate_page_size_buffer(page).unwrap();
                        fill(&mut b, t ^ r as u8);
                        held.push((t ^ r as u8, b));
                        if held.len() > 6 {
                            let (v, b) = held.remove(r % held.len());
                            check(b.as_max_slice(), v);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    });
    let s = pool.stats();
    assert_eq!(s.buffers_in_use, 0, "{s:?}");
}

/// The last handle drops while a buffer is released on a thread that has no
/// happens-before edge with the close (it only sees the close through the
/// pool's relaxed `closed` flag). The release must not conclude "nothing is
/// out" from a stale view of the counters and unmap the slab of a buffer
/// that another thread still holds and writes. Under Miri (whose weak-memory
/// emulation may return stale relaxed values) run with several seeds:
/// `MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-many-seeds=0..64"`.
#[test]
fn a_release_racing_the_close_does_not_unmap_a_live_buffer() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let page = pagepool::page_size();
    let pool = pool(true, DebugLevel::Off);
    let for_a = pool.clone();
    let go = AtomicBool::new(false);
    let (x_tx, x_rx) = mpsc::channel::<PageBuffer>();
    let (dropped_tx, dropped_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let go = &go;
        // A: allocates X (for R) and Y (kept), drops its handle, and writes
        // Y once R is done.
        s.spawn(move || {
            let warm: Vec<_> = (0..2)
                .map(|_| for_a.allocate_page_size_buffer(page).unwrap())
                .collect();
            drop(warm);
            let x = for_a.allocate_page_size_buffer(page).unwrap();
            x_tx.send(x).unwrap();
            let mut y = for_a.allocate_page_size_buffer(page).unwrap();
            drop(for_a);
            dropped_tx.send(()).unwrap();
            done_rx.recv().unwrap();
            y.as_max_slice_mut()[0] = 1; // must still be mapped
            drop(y);
        });
        // R: releases X once it sees (without synchronising) that the
        // close happened.
        s.spawn(move || {
            let x = x_rx.recv().unwrap();
            while !go.load(Relaxed) {
                std::thread::yield_now();
            }
            drop(x);
            done_tx.send(()).unwrap();
        });
        // The closer: drops the last handle after A dropped its one.
        dropped_rx.recv().unwrap();
        drop(pool);
        go.store(true, Relaxed);
    });
}
