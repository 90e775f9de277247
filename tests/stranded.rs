//! Near its cap, a pool keeps no free slot in a thread's cache: slots
//! released by a thread that then goes idle (alive, making no more calls)
//! serve other threads at once, and `trim` gives them back to the OS.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use pagepool::{page_size, BufferPool, Error};

/// A thread that allocates all it can from `pool`, releases `release` of
/// them (all, with `usize::MAX`), and stays alive and idle, holding the
/// rest, until the returned sender is dropped. Returns how many it got.
fn idle_thread(
    pool: &BufferPool,
    release: usize,
) -> (usize, mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (got_tx, got_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel::<()>();
    let pool = pool.clone();
    let page = page_size();
    let t = thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok(b) = pool.allocate_page_size_buffer(page) {
            held.push(b);
        }
        let n = held.len();
        held.truncate(n.saturating_sub(release));
        got_tx.send(n).unwrap();
        // Idle: no pool call until told to go.
        let _ = exit_rx.recv();
        drop(held);
    });
    (got_rx.recv().unwrap(), exit_tx, t)
}

#[test]
fn slots_an_idle_thread_released_serve_another_thread_at_the_cap() {
    let page = page_size();
    let pool = BufferPool::builder()
        .name("stranded-serve")
        .max_bytes(1 << 20)
        .build()
        .unwrap();
    let (n, exit, t) = idle_thread(&pool, 15);
    assert!(n > 15, "the cap held only {n} buffers");
    // The 15 are usable here at once, and a 16th is not there.
    let mine: Vec<_> = (0..15)
        .map(|i| {
            pool.allocate_page_size_buffer_timeout(page, Duration::from_millis(500))
                .unwrap_or_else(|e| panic!("slot {i} of 15 was stranded: {e}"))
        })
        .collect();
    assert!(matches!(
        pool.allocate_page_size_buffer(page),
        Err(Error::Exhausted { .. })
    ));
    drop(mine);
    drop(exit);
    t.join().unwrap();
    assert_eq!(pool.stats().buffers_in_use, 0);
}

#[test]
fn trim_reaches_slots_an_idle_thread_released_at_the_cap() {
    let pool = BufferPool::builder()
        .name("stranded-trim")
        .max_bytes(1 << 20)
        .build()
        .unwrap();
    let (n, exit, t) = idle_thread(&pool, usize::MAX);
    assert!(n > 0);
    let before = pool.stats();
    assert_eq!(before.buffers_in_use, 0);
    let freed = pool.trim();
    assert!(
        freed > 0,
        "trim freed nothing: the idle thread's slots were out of reach"
    );
    assert_eq!(pool.stats().bytes_reserved, 0);
    drop(exit);
    t.join().unwrap();
}
