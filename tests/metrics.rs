//! The metrics a pool publishes: exact values after a known sequence, their
//! agreement with `stats()`, and the real exporter's rendering.

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use pagepool::{page_size, BufferPool, Error};

/// One metric's value, keyed by name and sorted `label=value` pairs.
type Values = HashMap<(String, Vec<String>), DebugValue>;

fn values(snapshotter: &metrics_util::debugging::Snapshotter) -> Values {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _unit, _desc, value): (CompositeKey, _, _, _)| {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            ((key.key().name().to_owned(), labels), value)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<String> {
    let mut v: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v
}

fn counter(v: &Values, name: &str, l: &[(&str, &str)]) -> u64 {
    match v.get(&(name.to_owned(), labels(l))) {
        Some(DebugValue::Counter(c)) => *c,
        other => panic!("{name}{l:?} is not a counter: {other:?}"),
    }
}

fn gauge(v: &Values, name: &str, l: &[(&str, &str)]) -> f64 {
    match v.get(&(name.to_owned(), labels(l))) {
        Some(DebugValue::Gauge(g)) => g.into_inner(),
        other => panic!("{name}{l:?} is not a gauge: {other:?}"),
    }
}

fn histogram(v: &Values, name: &str, l: &[(&str, &str)]) -> Vec<f64> {
    match v.get(&(name.to_owned(), labels(l))) {
        Some(DebugValue::Histogram(h)) => h.iter().map(|x| x.into_inner()).collect(),
        other => panic!("{name}{l:?} is not a histogram: {other:?}"),
    }
}

#[test]
fn a_known_sequence_gives_exact_values_that_agree_with_stats() {
    let page = page_size();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // One one-page slot per slab (slab_size = one page), room for three slabs.
    let cap = 3 * 3 * page;
    let pool = metrics::with_local_recorder(&recorder, || {
        BufferPool::builder()
            .name("seq")
            .slab_size(page)
            .max_bytes(cap)
            .metrics_sample_every(1)
            .build()
            .unwrap()
    });

    let a = pool.allocate_page_size_buffer(100).unwrap(); // miss
    let b = pool.allocate_page_size_buffer(200).unwrap(); // miss
    let c = pool.allocate_page_size_buffer(page).unwrap(); // miss
    assert!(matches!(
        pool.allocate_page_size_buffer(1),
        Err(Error::Exhausted { requested: 1, limit }) if limit == cap
    ));
    drop(a);
    let e = pool.allocate_page_size_buffer(50).unwrap(); // hit
    assert!(matches!(
        pool.allocate_page_size_buffer(0),
        Err(Error::ZeroSize)
    ));
    assert!(matches!(
        pool.allocate_page_size_buffer(usize::MAX),
        Err(Error::TooLarge { .. })
    ));

    // While b, c, e are out.
    pool.publish_metrics();
    let first = values(&snapshotter);
    let v = &first;
    let class = page.to_string();
    let cl = |outcome| {
        [
            ("pool", "seq"),
            ("class", class.as_str()),
            ("outcome", outcome),
        ]
    };
    assert_eq!(counter(v, "pagepool_allocations_total", &cl("hit")), 1);
    assert_eq!(counter(v, "pagepool_allocations_total", &cl("miss")), 3);
    assert_eq!(
        counter(v, "pagepool_allocations_total", &cl("exhausted")),
        1
    );
    assert_eq!(counter(v, "pagepool_allocations_total", &cl("error")), 0);
    let pc = [("pool", "seq"), ("class", class.as_str())];
    assert_eq!(counter(v, "pagepool_releases_total", &pc), 1);
    assert_eq!(gauge(v, "pagepool_buffers_in_use", &pc), 3.0);
    let p = [("pool", "seq")];
    assert_eq!(gauge(v, "pagepool_bytes_in_use", &p), (3 * page) as f64);
    assert_eq!(gauge(v, "pagepool_bytes_cached", &p), 0.0);
    assert_eq!(gauge(v, "pagepool_bytes_reserved", &p), cap as f64);
    assert_eq!(gauge(v, "pagepool_bytes_limit", &p), cap as f64);
    assert_eq!(gauge(v, "pagepool_slabs", &p), 3.0);
    assert_eq!(counter(v, "pagepool_rejected_total", &p), 2);
    assert_eq!(counter(v, "pagepool_trimmed_bytes_total", &p), 0);

    let s = pool.stats();
    assert_eq!(s.hits, 1);
    assert_eq!(s.misses, 3);
    assert_eq!(s.exhausted, 1);
    assert_eq!(s.buffers_in_use, 3);
    assert_eq!(s.bytes_in_use as f64, gauge(v, "pagepool_bytes_in_use", &p));
    assert_eq!(
        s.bytes_reserved as f64,
        gauge(v, "pagepool_bytes_reserved", &p)
    );

    drop((b, c, e));
    let trimmed = pool.trim();
    assert_eq!(trimmed, cap);
    pool.publish_metrics();
    let v = values(&snapshotter);
    assert_eq!(counter(&v, "pagepool_releases_total", &pc), 4);
    assert_eq!(gauge(&v, "pagepool_buffers_in_use", &pc), 0.0);
    assert_eq!(gauge(&v, "pagepool_bytes_in_use", &p), 0.0);
    assert_eq!(gauge(&v, "pagepool_bytes_reserved", &p), 0.0);
    assert_eq!(gauge(&v, "pagepool_slabs", &p), 0.0);
    assert_eq!(counter(&v, "pagepool_trimmed_bytes_total", &p), cap as u64);
    let s = pool.stats();
    assert_eq!(s.trimmed_bytes, cap as u64);
    assert_eq!(s.releases, 4);

    // Every successful allocation was sampled (sample_every = 1); failures
    // record no latency. A snapshot drains the histograms, so the first one
    // holds the four allocations and `a`'s hold time, the second the rest.
    let mut sizes = histogram(&first, "pagepool_request_size_bytes", &p);
    sizes.sort_by(f64::total_cmp);
    assert_eq!(sizes, [50.0, 100.0, 200.0, page as f64]);
    let lat = histogram(&first, "pagepool_allocation_duration_seconds", &p);
    assert_eq!(lat.len(), 4);
    assert!(lat.iter().all(|&s| s > 0.0 && s < 1.0), "{lat:?}");
    assert_eq!(
        histogram(&first, "pagepool_buffer_hold_seconds", &p).len(),
        1
    );
    assert_eq!(histogram(&v, "pagepool_buffer_hold_seconds", &p).len(), 3);
}

#[test]
fn the_publisher_catches_up_within_one_interval() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let interval = std::time::Duration::from_millis(20);
    let pool = metrics::with_local_recorder(&recorder, || {
        BufferPool::builder()
            .name("bg")
            .metrics_publish_interval(interval)
            .build()
            .unwrap()
    });
    let held: Vec<_> = (0..10)
        .map(|_| pool.allocate_page_size_buffer(5000).unwrap())
        .collect();
    // No explicit publish: the background thread must get there.
    let class = pool.slot_size_for(5000).unwrap().to_string();
    let l = [("pool", "bg"), ("class", class.as_str())];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        std::thread::sleep(interval * 2);
        let v = values(&snapshotter);
        if gauge(&v, "pagepool_buffers_in_use", &l) == 10.0 {
            assert_eq!(
                gauge(&v, "pagepool_bytes_in_use", &[("pool", "bg")]),
                pool.stats().bytes_in_use as f64
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "publisher never published"
        );
    }
    drop(held);
}

#[test]
fn metrics_off_registers_nothing() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let pool = metrics::with_local_recorder(&recorder, || {
        BufferPool::builder()
            .name("quiet")
            .metrics(false)
            .build()
            .unwrap()
    });
    drop(pool.allocate_page_size_buffer(1).unwrap());
    pool.publish_metrics();
    let v = values(&snapshotter);
    assert!(
        v.keys().all(|(_, l)| !l.contains(&"pool=quiet".to_owned())),
        "{v:?}"
    );
    assert_eq!(pool.stats().allocations, 1);
}

#[test]
fn kinds_match_the_documented_table() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let pool = metrics::with_local_recorder(&recorder, || {
        BufferPool::builder()
            .name("kinds")
            .max_bytes(1 << 20)
            .build()
            .unwrap()
    });
    pool.publish_metrics();
    let kinds: HashMap<String, MetricKind> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, ..)| (k.key().name().to_owned(), k.kind()))
        .collect();
    for name in pagepool::metrics::ALL {
        let want = if name.ends_with("_total") {
            MetricKind::Counter
        } else if name.ends_with("_seconds") || name.ends_with("_size_bytes") {
            MetricKind::Histogram
        } else {
            MetricKind::Gauge
        };
        assert_eq!(kinds.get(name), Some(&want), "{name}");
    }
}

#[cfg(feature = "prometheus")]
#[test]
fn the_prometheus_exporter_renders_every_metric_with_help_and_type() {
    let recorder = pagepool::prometheus::builder().build_recorder();
    let handle = recorder.handle();
    let pool = metrics::with_local_recorder(&recorder, || {
        BufferPool::builder()
            .name("render")
            .max_bytes(8 << 20)
            .metrics_sample_every(1)
            .build()
            .unwrap()
    });
    let bufs: Vec<_> = [1usize, 5000, 70_000]
        .iter()
        .map(|&n| pool.allocate_page_size_buffer(n).unwrap())
        .collect();
    drop(bufs);
    pool.publish_metrics();
    let text = handle.render();
    for name in pagepool::metrics::ALL {
        let kind = if name.ends_with("_total") {
            "counter"
        } else if name.ends_with("_seconds") || name.ends_with("_size_bytes") {
            "histogram"
        } else {
            "gauge"
        };
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "HELP for {name}:\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "TYPE for {name}:\n{text}"
        );
    }
    assert!(
        text.contains(r#"pagepool_allocations_total{pool="render",class="4096",outcome="miss"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"pagepool_bytes_limit{pool="render"} 8388608"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"pagepool_allocation_duration_seconds_bucket{pool="render",le="0.0000001"}"#
        ) || text
            .contains(r#"pagepool_allocation_duration_seconds_bucket{pool="render",le="1e-7"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"pagepool_request_size_bytes_count{pool="render"} 3"#),
        "{text}"
    );
}

#[test]
fn corruptions_and_leak_suspects_are_published() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let pool = metrics::with_local_recorder(&recorder, || {
        BufferPool::builder()
            .name("bad")
            .leak_age_threshold(std::time::Duration::from_millis(20))
            .build()
            .unwrap()
    });
    let mut b = pool.allocate_page_size_buffer(10).unwrap();
    // SAFETY (test): inside the slot's first page; the planted overflow.
    unsafe {
        let p = b.as_mut_ptr().add(10);
        std::ptr::write_volatile(p, !std::ptr::read_volatile(p));
    }
    drop(b);
    let held = pool.allocate_page_size_buffer(10).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(60));
    pool.publish_metrics();
    let v = values(&snapshotter);
    let kind = |k| [("pool", "bad"), ("kind", k)];
    assert_eq!(
        counter(&v, "pagepool_corruptions_total", &kind("slack_canary")),
        1
    );
    assert_eq!(
        counter(&v, "pagepool_corruptions_total", &kind("poison")),
        0
    );
    assert_eq!(
        counter(&v, "pagepool_corruptions_total", &kind("edge_canary")),
        0
    );
    assert_eq!(gauge(&v, "pagepool_leak_suspects", &[("pool", "bad")]), 1.0);
    assert_eq!(pool.stats().corruptions, 1);
    drop(held);
}

#[test]
fn discarded_bytes_are_published() {
    let page = page_size();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let pool = metrics::with_local_recorder(&recorder, || {
        BufferPool::builder()
            .name("discard")
            .slab_size(16 * page)
            .build()
            .unwrap()
    });
    // Three one-page buffers from one slab; the one kept holds it mapped.
    let bufs: Vec<_> = (0..3)
        .map(|_| {
            let mut b = pool.allocate_page_size_buffer(page).unwrap();
            b.as_max_slice_mut().fill(7);
            b
        })
        .collect();
    assert_eq!(pool.stats().slabs, 1);
    let mut bufs = bufs.into_iter();
    let kept = bufs.next().unwrap();
    drop(bufs);
    assert_eq!(pool.trim(), 0, "the slab holds a buffer");
    let s = pool.stats();
    assert_eq!(s.discarded_bytes, 2 * page as u64);
    pool.publish_metrics();
    let v = values(&snapshotter);
    let p = [("pool", "discard")];
    assert_eq!(
        counter(&v, "pagepool_discarded_bytes_total", &p),
        2 * page as u64
    );
    assert_eq!(counter(&v, "pagepool_trimmed_bytes_total", &p), 0);
    drop(kept);
}
