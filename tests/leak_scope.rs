//! `thread_leak_check`: tests sharing one pool, each on its own thread with
//! its own scoped check, see only their own leaks (netty/netty#8423).

use std::sync::Barrier;
use std::thread;

use pagepool::{BufferPool, LeakTracking, PageBuffer};

#[test]
fn only_the_leaking_threads_check_fails() {
    let pool = BufferPool::builder().name("leak-scope").build().unwrap();
    // Both checks begin before either thread allocates, and both finish
    // while the leaked buffer is still out: a pool-wide check would see it.
    let started = Barrier::new(2);
    let allocated = Barrier::new(2);
    let checked = Barrier::new(2);
    let (leaker, clean) = thread::scope(|s| {
        let leaker = s.spawn(|| {
            let check = pool.thread_leak_check();
            started.wait();
            let leaked = pool.allocate_page_size_buffer(4096).unwrap();
            allocated.wait();
            let result = check.finish();
            checked.wait();
            drop(leaked);
            result
        });
        let clean = s.spawn(|| {
            let check = pool.thread_leak_check();
            started.wait();
            let mine = pool.allocate_page_size_buffer(4096).unwrap();
            drop(mine);
            allocated.wait();
            let result = check.finish();
            checked.wait();
            result
        });
        (leaker.join().unwrap(), clean.join().unwrap())
    });
    let report = leaker.expect_err("the leaking thread's check passed");
    assert_eq!(report.buffers(), 1, "{report}");
    assert!(
        clean.is_ok(),
        "the other thread's leak failed a clean check"
    );
}

#[test]
fn a_pool_wide_check_sees_every_threads_leak() {
    let pool = BufferPool::builder()
        .name("leak-scope-all")
        .build()
        .unwrap();
    let check = pool.leak_check();
    let theirs = allocated_on_another_thread(&pool);
    assert!(check.finish().is_err());
    drop(theirs);
}

#[test]
fn without_tracking_a_thread_check_counts_every_thread() {
    let pool = BufferPool::builder()
        .name("leak-scope-untracked")
        .leak_tracking(LeakTracking::Off)
        .build()
        .unwrap();
    let check = pool.thread_leak_check();
    let theirs = allocated_on_another_thread(&pool);
    // The thread is not recorded: the check must not pass over the leak.
    assert!(check.finish().is_err());
    drop(theirs);
}

/// A buffer of `pool` that another thread allocated (and is still out).
fn allocated_on_another_thread(pool: &BufferPool) -> PageBuffer {
    let other = pool.clone();
    thread::spawn(move || other.allocate_page_size_buffer(4096).unwrap())
        .join()
        .unwrap()
}
