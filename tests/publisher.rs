//! One publisher thread per process, whatever the number of pools: each
//! pool is ticked at its own interval, and a dropped pool leaves.
//!
//! Thread counts are read from `/proc/self/task`, so each case runs in a
//! child process of its own (no other test's threads).

mod common;

use std::time::{Duration, Instant};

use pagepool::{BufferPool, LeakTracking};

fn publishers() -> usize {
    common::thread_names()
        .iter()
        .filter(|n| n.as_str() == "pagepool-ticker")
        .count()
}

/// Waits up to 10 s for `f`.
fn eventually(f: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

#[test]
fn ten_thousand_pools_share_one_publisher_thread() {
    if !common::in_child("many") {
        common::run_child("ten_thousand_pools_share_one_publisher_thread", "many")
            .assert_success(&["ok"]);
        return;
    }
    let before = common::thread_names().len();
    assert_eq!(publishers(), 0);
    let pools: Vec<BufferPool> = (0..10_000)
        .map(|i| {
            BufferPool::builder()
                .name(format!("many-{i}"))
                .guard_pages(false)
                .leak_tracking(LeakTracking::CallSite)
                .leak_age_threshold(Duration::ZERO)
                .metrics_publish_interval(Duration::from_secs(1))
                .build()
                .unwrap()
        })
        .collect();
    // A new thread names itself once it runs.
    assert!(eventually(|| publishers() == 1));
    // The coarse clock of buffer ages is the only other thread a pool starts.
    assert!(
        common::thread_names().len() <= before + 2,
        "{:?}",
        common::thread_names()
    );
    // Every pool is ticked: the tick recounts leak suspects, here every
    // outstanding buffer (threshold zero).
    let held: Vec<_> = [0, 4_999, 9_999]
        .iter()
        .map(|&i| pools[i].allocate_page_size_buffer(4096).unwrap())
        .collect();
    assert!(eventually(|| [0, 4_999, 9_999]
        .iter()
        .all(|&i| pools[i].stats().leak_suspects == 1)));
    drop(held);
    drop(pools);
    assert_eq!(publishers(), 1);
    common::child_marker("ok");
}

#[test]
fn each_pool_ticks_at_its_own_interval() {
    let fast = BufferPool::builder()
        .name("interval-fast")
        .leak_age_threshold(Duration::ZERO)
        .metrics_publish_interval(Duration::from_millis(5))
        .build()
        .unwrap();
    let slow = BufferPool::builder()
        .name("interval-slow")
        .leak_age_threshold(Duration::ZERO)
        .metrics_publish_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let _a = fast.allocate_page_size_buffer(4096).unwrap();
    let _b = slow.allocate_page_size_buffer(4096).unwrap();
    let start = Instant::now();
    assert!(eventually(|| fast.stats().leak_suspects == 1));
    // The fast pool was ticked well within the slow one's interval; the
    // slow one is ticked once that interval has passed.
    if start.elapsed() < Duration::from_millis(500) {
        assert_eq!(slow.stats().leak_suspects, 0);
    }
    assert!(eventually(|| slow.stats().leak_suspects == 1));
    assert!(start.elapsed() >= Duration::from_millis(500));
}
