//! Observability an on-call can act on (issue #17): waits by outcome and
//! their duration, high-water marks and their reset, outstanding bytes by
//! allocation site with bounded cardinality, and series going away when a
//! pool shuts down.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use pagepool::metrics::{
    BYTES_IN_USE_PEAK, BYTES_RESERVED_PEAK, SITE_BUFFERS, SITE_BYTES, WAITS_TOTAL,
    WAIT_DURATION_SECONDS,
};
use pagepool::{page_size, BufferPool, PageBuffer};

/// Every series by name, then by sorted labels. (A `DebuggingRecorder`
/// snapshot resets what it reads: take one per check.)
type Series = HashMap<String, HashMap<Vec<(String, String)>, DebugValue>>;

fn snapshot(s: &Snapshotter) -> Series {
    let mut out = Series::new();
    for (k, _, _, v) in s.snapshot().into_vec() {
        let mut l: Vec<(String, String)> = k
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        l.sort();
        out.entry(k.key().name().to_owned())
            .or_default()
            .insert(l, v);
    }
    out
}

fn label(pool: &str, key: &str, value: &str) -> Vec<(String, String)> {
    let mut l = vec![
        ("pool".to_owned(), pool.to_owned()),
        (key.to_owned(), value.to_owned()),
    ];
    l.sort();
    l
}

fn gauge_of(v: Option<&DebugValue>) -> f64 {
    match v {
        Some(DebugValue::Gauge(g)) => g.into_inner(),
        other => panic!("not a gauge: {other:?}"),
    }
}

#[test]
fn waits_are_counted_by_outcome_with_their_duration() {
    let page = page_size();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (pool, mut held) = metrics::with_local_recorder(&recorder, || common::full_pool("waits"));
    assert_eq!(pool.stats().waits, Default::default());

    // Timed out.
    assert!(pool
        .allocate_page_size_buffer_timeout(page, Duration::from_millis(20))
        .is_err());
    // Cancelled: an async wait polled once (it queues), then dropped.
    {
        let mut wait = pin!(pool.allocate_page_size_buffer_async(page));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert_eq!(pool.stats().waiting, 1);
    }
    // Granted: a release while a thread waits.
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.allocate_page_size_buffer_timeout(page, Duration::from_secs(20))
                .map(drop)
        })
    };
    while pool.stats().waiting == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(10));
    drop(held.pop());
    waiter.join().unwrap().unwrap();

    let w = pool.stats().waits;
    assert_eq!(
        (w.granted, w.timed_out, w.cancelled, w.failed),
        (1, 1, 1, 0)
    );
    // The timed-out wait alone took 20 ms, the granted one at least 10.
    assert!(w.waited >= Duration::from_millis(30), "{:?}", w.waited);
    assert_eq!(pool.stats().waiting, 0);

    pool.publish_metrics();
    let snap = snapshot(&snapshotter);
    let waits = &snap[WAITS_TOTAL];
    for (outcome, n) in [
        ("granted", 1),
        ("timed_out", 1),
        ("cancelled", 1),
        ("failed", 0),
    ] {
        match waits.get(&label("waits", "outcome", outcome)) {
            Some(DebugValue::Counter(c)) => assert_eq!(*c, n, "{outcome}"),
            other => panic!("{outcome}: {other:?}"),
        }
    }
    let durations = &snap[WAIT_DURATION_SECONDS];
    match durations.values().next() {
        Some(DebugValue::Histogram(h)) => {
            assert_eq!(h.len(), 3);
            assert!(h.iter().any(|s| s.into_inner() >= 0.02));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_wait_ended_by_close_is_failed() {
    let page = page_size();
    let (pool, _held) = common::full_pool("waits-close");
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.allocate_page_size_buffer_timeout(page, Duration::from_secs(20))
        })
    };
    while pool.stats().waiting == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    pool.close();
    assert!(waiter.join().unwrap().is_err());
    let w = pool.stats().waits;
    assert_eq!(
        (w.granted, w.timed_out, w.cancelled, w.failed),
        (0, 0, 0, 1)
    );
}

#[test]
fn peaks_hold_until_reset_and_are_published() {
    let page = page_size();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let pool = metrics::with_local_recorder(&recorder, || {
        BufferPool::builder()
            .name("peaks")
            .thread_cache(false)
            .build()
            .unwrap()
    });
    let bufs: Vec<PageBuffer> = (0..40)
        .map(|_| pool.allocate_page_size_buffer(page).unwrap())
        .collect();
    let busy = pool.stats();
    drop(bufs);
    pool.trim();
    let s = pool.stats();
    assert_eq!((s.bytes_in_use, s.bytes_reserved), (0, 0));
    assert_eq!(s.peak_bytes_in_use, busy.bytes_in_use);
    assert_eq!(s.peak_bytes_reserved, busy.bytes_reserved);
    assert!(s.peak_bytes_in_use >= 40 * page);

    pool.publish_metrics();
    let snap = snapshot(&snapshotter);
    let peak = |snap: &Series, name: &str| gauge_of(snap[name].values().next());
    assert_eq!(peak(&snap, BYTES_IN_USE_PEAK), busy.bytes_in_use as f64);
    assert_eq!(peak(&snap, BYTES_RESERVED_PEAK), busy.bytes_reserved as f64);

    pool.reset_peaks();
    let s = pool.stats();
    assert_eq!((s.peak_bytes_in_use, s.peak_bytes_reserved), (0, 0));
    let one = pool.allocate_page_size_buffer(page).unwrap();
    let s = pool.stats();
    assert_eq!(s.peak_bytes_in_use, s.bytes_in_use);
    assert_eq!(s.peak_bytes_reserved, s.bytes_reserved);
    drop(one);
    pool.publish_metrics();
    assert_eq!(
        peak(&snapshot(&snapshotter), BYTES_IN_USE_PEAK),
        s.bytes_in_use as f64
    );
}

/// Holds `n` buffers of `size` bytes allocated at one site of its own per
/// `which` (three sites in all).
fn hold_at(pool: &BufferPool, which: usize, n: usize, size: usize) -> Vec<PageBuffer> {
    (0..n)
        .map(|_| match which {
            0 => pool.allocate_page_size_buffer(size).unwrap(),
            1 => pool.allocate_page_size_buffer(size).unwrap(),
            _ => pool.allocate_page_size_buffer(size).unwrap(),
        })
        .collect()
}

/// Site series are registered by whichever thread publishes when a site
/// enters the top (the publisher thread's global recorder): this case runs
/// in a child process with a global recorder of its own.
#[test]
fn the_top_sites_are_shown_the_rest_is_other_and_a_dropped_site_is_zeroed() {
    if !common::in_child("sites") {
        common::run_child(
            "the_top_sites_are_shown_the_rest_is_other_and_a_dropped_site_is_zeroed",
            "sites",
        )
        .assert_success(&["ok"]);
        return;
    }
    let page = page_size();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let pool = BufferPool::builder()
        .name("sites")
        .site_metrics(2)
        .build()
        .unwrap();
    let publish = || pool.publish_metrics();
    let a = hold_at(&pool, 0, 3, page);
    let b = hold_at(&pool, 1, 2, page);
    let c = hold_at(&pool, 2, 1, page);
    publish();
    let snap = snapshot(&snapshotter);
    let bytes = &snap[SITE_BYTES];
    let shown: Vec<f64> = {
        let mut v: Vec<f64> = bytes
            .iter()
            .filter(|(l, _)| !l.contains(&("site".to_owned(), "other".to_owned())))
            .map(|(_, v)| gauge_of(Some(v)))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    assert_eq!(shown, vec![(2 * page) as f64, (3 * page) as f64]);
    assert_eq!(
        gauge_of(bytes.get(&label("sites", "site", "other"))),
        page as f64
    );
    let buffers = &snap[SITE_BUFFERS];
    assert_eq!(gauge_of(buffers.get(&label("sites", "site", "other"))), 1.0);
    // The labels name the sites: this file.
    assert!(bytes.keys().all(|l| l
        .iter()
        .any(|(k, v)| k == "site" && (v == "other" || v.starts_with("tests/observe.rs:")))));

    // Site 1 drops out, site 2 takes its place (that the dropped series
    // is set to zero is checked through the exporter below).
    drop(b);
    let c2 = hold_at(&pool, 2, 3, page);
    publish();
    let snap = snapshot(&snapshotter);
    let bytes = &snap[SITE_BYTES];
    let nonzero = bytes.values().filter(|v| gauge_of(Some(v)) != 0.0).count();
    assert_eq!(nonzero, 2, "{bytes:?}");
    assert_eq!(bytes.len(), 4, "three sites and other registered");
    assert_eq!(gauge_of(bytes.get(&label("sites", "site", "other"))), 0.0);
    let four = (4 * page) as f64;
    assert!(
        bytes.values().any(|v| gauge_of(Some(v)) == four),
        "{bytes:?}"
    );
    drop((a, c, c2));
    common::child_marker("ok");
}

/// In a child process: the exporter is the global recorder.
#[cfg(feature = "prometheus")]
#[test]
fn an_idle_gauge_leaves_the_exporter_so_the_series_stay_bounded() {
    use metrics_util::MetricKindMask;
    if !common::in_child("idle") {
        common::run_child(
            "an_idle_gauge_leaves_the_exporter_so_the_series_stay_bounded",
            "idle",
        )
        .assert_success(&["ok"]);
        return;
    }
    let page = page_size();
    let handle = pagepool::prometheus::builder()
        .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_millis(100)))
        .install_recorder()
        .unwrap();
    let pool = BufferPool::builder()
        .name("bounded")
        .site_metrics(1)
        .build()
        .unwrap();
    let publish = || pool.publish_metrics();
    let site_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("pagepool_site_bytes{"))
            .map(str::to_owned)
            .collect()
    };
    // Each of three sites in turn is the top one; the one before it is
    // zeroed, and `other` holds nothing.
    let mut before: Option<String> = None;
    for which in 0..3 {
        let held = hold_at(&pool, which, 2, page);
        publish();
        let lines = site_lines(&handle.render());
        assert_eq!(lines.len(), which + 2, "{lines:?}");
        let top: Vec<&String> = lines
            .iter()
            .filter(|l| l.ends_with(&format!(" {}", 2 * page)))
            .collect();
        assert_eq!(top.len(), 1, "{lines:?}");
        if let Some(before) = &before {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(before) && l.ends_with(" 0")),
                "{lines:?}"
            );
        }
        before = Some(top[0].rsplit_once(' ').unwrap().0.to_owned());
        drop(held);
    }
    // Scrapes long enough for the dropped sites' zeroes to go idle (the
    // exporter notices a gauge unchanged between two renders); `other` and
    // the pool's gauges are refreshed by every publish.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(60));
        publish();
        handle.render();
    }
    let text = handle.render();
    assert_eq!(site_lines(&text).len(), 1, "{text}");
    assert!(text.contains("pagepool_bytes_in_use{pool=\"bounded\"}"));
    // A pool that shut down updates nothing: its gauges go too.
    drop(pool);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(60));
        handle.render();
    }
    let text = handle.render();
    assert!(
        !text.contains("pagepool_bytes_in_use{pool=\"bounded\"}"),
        "{text}"
    );
    common::child_marker("ok");
}
