//! Leak tracking and the debugging knobs that need no child process.

use std::time::Duration;

use pagepool::{BufferPool, DebugLevel, LeakTracking, Zeroing};

#[test]
fn outstanding_names_site_thread_size_and_age() {
    let pool = BufferPool::builder().name("out").build().unwrap();
    let (a, line) = (pool.allocate_page_size_buffer(1000).unwrap(), line!());
    let b = std::thread::Builder::new()
        .name("reader-7".into())
        .spawn({
            let pool = pool.clone();
            move || pool.allocate_page_size_buffer(70_000).unwrap()
        })
        .unwrap()
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let out = pool.outstanding();
    assert_eq!(out.len(), 2);
    let mine = out
        .iter()
        .find(|o| o.address == a.as_ptr() as usize)
        .unwrap();
    assert_eq!((mine.max_len, mine.slot_len), (1000, 4096));
    let site = mine
        .allocated_at
        .expect("call-site tracking is the default");
    assert_eq!((site.file(), site.line()), ("tests/leak.rs", line));
    assert!(mine.age >= Duration::from_millis(20), "{:?}", mine.age);
    assert!(mine.age < Duration::from_secs(30), "{:?}", mine.age);
    assert!(mine.backtrace.is_none());
    let theirs = out
        .iter()
        .find(|o| o.address == b.as_ptr() as usize)
        .unwrap();
    assert_eq!(theirs.thread.as_deref(), Some("reader-7"));
    assert_eq!(theirs.max_len, 70_000);
    drop((a, b));
    assert!(pool.outstanding().is_empty());
}

#[test]
fn the_report_groups_by_site_biggest_first() {
    let pool = BufferPool::builder().name("grouped").build().unwrap();
    let mut held = Vec::new();
    let mut small_line = 0;
    for _ in 0..3 {
        let (b, l) = (pool.allocate_page_size_buffer(100).unwrap(), line!());
        small_line = l;
        held.push(b);
    }
    let (big, big_line) = (pool.allocate_page_size_buffer(1 << 20).unwrap(), line!());
    let report = pool.leak_report(Duration::ZERO);
    assert_eq!(report.buffers(), 4);
    assert_eq!(report.bytes(), 3 * 4096 + (1 << 20));
    let sites = report.sites();
    assert_eq!(sites.len(), 2);
    assert_eq!(sites[0].location.unwrap().line(), big_line, "biggest first");
    assert_eq!(
        (sites[1].location.unwrap().line(), sites[1].buffers),
        (small_line, 3)
    );
    assert!(sites[1].youngest <= sites[1].oldest);
    let text = report.to_string();
    assert!(
        text.starts_with("pagepool \"grouped\": 4 buffers"),
        "{text}"
    );
    assert!(
        text.contains(&format!("tests/leak.rs:{big_line}:")),
        "{text}"
    );
    // A minimum age nobody reaches empties it.
    assert!(pool.leak_report(Duration::from_secs(3600)).is_empty());
    drop((held, big));
}

#[test]
fn leak_check_passes_when_everything_comes_back_and_reports_what_does_not() {
    let pool = BufferPool::new();
    let outside = pool.allocate_page_size_buffer(10).unwrap();
    let check = pool.leak_check();
    let a = pool.allocate_page_size_buffer(10).unwrap();
    drop(a);
    check
        .finish()
        .expect("nothing allocated during the check is out");

    let check = pool.leak_check();
    let (kept, line) = (pool.allocate_page_size_buffer(9000).unwrap(), line!());
    let report = check.finish().expect_err("one buffer is still out");
    assert_eq!(
        report.buffers(),
        1,
        "the buffer from before the check is not counted"
    );
    assert_eq!(report.sites()[0].location.unwrap().line(), line);
    drop((kept, outside));
}

#[test]
fn leak_check_works_without_tracking_but_names_no_site() {
    let pool = BufferPool::builder()
        .leak_tracking(LeakTracking::Off)
        .build()
        .unwrap();
    let check = pool.leak_check();
    let kept = pool.allocate_page_size_buffer(10).unwrap();
    let report = check.finish().unwrap_err();
    assert_eq!(report.buffers(), 1);
    assert_eq!(report.sites()[0].location, None);
    assert!(report.to_string().contains("(allocation site not tracked)"));
    let out = pool.outstanding();
    assert_eq!(
        (out[0].age, out[0].thread.as_deref()),
        (Duration::ZERO, None)
    );
    drop(kept);
}

#[test]
fn backtrace_tracking_captures_sampled_backtraces() {
    let pool = BufferPool::builder()
        .leak_tracking(LeakTracking::Backtrace { sample_every: 1 })
        .build()
        .unwrap();
    let kept = pool.allocate_page_size_buffer(10).unwrap();
    let out = pool.outstanding();
    let bt = out[0]
        .backtrace
        .as_deref()
        .expect("every allocation sampled");
    assert!(
        bt.contains("backtrace_tracking_captures_sampled_backtraces"),
        "{bt}"
    );
    let report = pool.leak_report(Duration::ZERO).to_string();
    assert!(
        report.contains("backtrace_tracking_captures_sampled_backtraces"),
        "{report}"
    );
    drop(kept);
    // Released: its backtrace is gone with it.
    let again = pool.allocate_page_size_buffer(10).unwrap();
    assert_eq!(pool.outstanding().len(), 1);
    drop(again);
}

#[test]
fn leak_suspects_count_buffers_older_than_the_threshold() {
    let pool = BufferPool::builder()
        .leak_age_threshold(Duration::from_millis(40))
        .metrics(false)
        .build()
        .unwrap();
    let old = pool.allocate_page_size_buffer(10).unwrap();
    assert_eq!(pool.leak_suspects(), 0);
    std::thread::sleep(Duration::from_millis(80));
    let young = pool.allocate_page_size_buffer(10).unwrap();
    assert_eq!(pool.leak_suspects(), 1);
    assert_eq!(pool.stats().leak_suspects, 1);
    drop(old);
    assert_eq!(pool.leak_suspects(), 0);
    drop(young);
}

#[test]
fn zeroing_keeps_one_clients_bytes_from_the_next() {
    for when in [Zeroing::OnRelease, Zeroing::OnAllocate] {
        let pool = BufferPool::builder()
            .slab_size(1) // one slot per slab: the next buffer reuses it
            .debug(DebugLevel::Off)
            .zero(when)
            .build()
            .unwrap();
        let mut a = pool.allocate_page_size_buffer(3000).unwrap();
        a.as_max_slice_mut().fill(0xee);
        drop(a);
        let b = pool.allocate_page_size_buffer(3000).unwrap();
        assert!(b.as_max_slice().iter().all(|&x| x == 0), "{when:?}");
    }
    // Without zeroing the bytes stay (the documented default).
    let pool = BufferPool::builder()
        .slab_size(1)
        .debug(DebugLevel::Off)
        .build()
        .unwrap();
    let mut a = pool.allocate_page_size_buffer(3000).unwrap();
    a.as_max_slice_mut().fill(0xee);
    drop(a);
    let b = pool.allocate_page_size_buffer(3000).unwrap();
    assert_eq!(b.as_max_slice()[0], 0xee);
}

#[test]
fn quarantine_holds_slots_out_of_reuse_then_lets_them_go() {
    let pool = BufferPool::builder().quarantine(1, 3).build().unwrap();
    let addrs: Vec<usize> = (0..5)
        .map(|_| {
            let b = pool.allocate_page_size_buffer(100).unwrap();
            let a = b.as_ptr() as usize;
            drop(b);
            a
        })
        .collect();
    // Each release quarantined its slot, so no address repeated while at most
    // three were held.
    for w in addrs.windows(4) {
        assert!(w[3] != w[0] && w[3] != w[1] && w[3] != w[2], "{addrs:x?}");
    }
    let s = pool.stats();
    assert_eq!(s.buffers_quarantined, 3);
    assert_eq!(s.releases, 5);
    assert_eq!(s.buffers_in_use, 0);
    // Slots leaving quarantine work again (their pages read as zero or hold
    // what they held; either way they are writable).
    let mut many: Vec<_> = (0..300)
        .map(|_| pool.allocate_page_size_buffer(100).unwrap())
        .collect();
    for b in &mut many {
        b.as_max_slice_mut().fill(1);
    }
    drop(many);
    assert_eq!(pool.stats().buffers_quarantined, 3);
}

#[test]
fn paranoid_pools_serve_and_verify_many_cycles_cleanly() {
    let pool = BufferPool::builder()
        .debug(DebugLevel::Paranoid)
        .build()
        .unwrap();
    for i in 0..2000usize {
        let size = 1 + (i * 7919) % 50_000;
        let mut b = pool.allocate_page_size_buffer(size).unwrap();
        assert!(
            b.as_max_slice().iter().all(|&x| x == 0),
            "zeroed on allocate"
        );
        b.as_max_slice_mut().fill(i as u8);
        b.set_len(size).unwrap();
        drop(b);
    }
    let s = pool.stats();
    assert_eq!((s.corruptions, s.buffers_in_use), (0, 0));
    assert!(s.buffers_quarantined > 0);
}
