//! What metrics cost on the hot path: allocate a buffer, write its first
//! byte, release it, with metrics off, on without a recorder, and on with the
//! Prometheus recorder installed. Prints the ratio "on / off" at the end.
//!
//! ```text
//! cargo bench --bench metrics
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pagepool::BufferPool;

fn cycle(pool: &BufferPool, size: usize) {
    let mut buf = pool.allocate_page_size_buffer(size).expect("warm pool");
    buf.as_max_slice_mut()[0] = 1;
    black_box(&buf);
}

fn warm(pool: BufferPool, size: usize) -> BufferPool {
    cycle(&pool, size);
    pool
}

fn metrics_overhead(c: &mut Criterion) {
    for (label, size) in [("4KiB", 4096usize), ("64KiB", 64 << 10)] {
        let mut g = c.benchmark_group(format!("metrics_overhead/{label}"));
        let off = warm(
            BufferPool::builder()
                .name("off")
                .metrics(false)
                .build()
                .unwrap(),
            size,
        );
        g.bench_function("off", |b| b.iter(|| cycle(&off, size)));
        let noop = warm(BufferPool::builder().name("noop").build().unwrap(), size);
        g.bench_function("on_no_recorder", |b| b.iter(|| cycle(&noop, size)));
        // The Prometheus recorder, installed once for the process (upkeep is
        // not needed within a benchmark's lifetime).
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            pagepool::prometheus::builder()
                .install_recorder()
                .expect("no other recorder in this process");
        });
        let on = warm(BufferPool::builder().name("prom").build().unwrap(), size);
        g.bench_function("on_prometheus", |b| b.iter(|| cycle(&on, size)));
        g.finish();
        report(
            &format!("metrics_overhead/{label}"),
            &["off", "on_no_recorder", "on_prometheus"],
        );
    }
}

/// Reads criterion's saved mean for `group/id`, in ns.
fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let path = format!(
        "{dir}/criterion/{}/{id}/new/estimates.json",
        group.replace('/', "_")
    );
    let text = std::fs::read_to_string(path).ok()?;
    let at = text.find("\"mean\"")?;
    let rest = &text[at..];
    let at = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let rest = &rest[at..];
    let end = rest.find([',', '}'])?;
    rest[..end].trim().parse().ok()
}

fn report(group: &str, ids: &[&str]) {
    let Some(base) = mean_ns(group, ids[0]) else {
        return;
    };
    println!("\n{group}: ratio to {}", ids[0]);
    for id in ids {
        if let Some(ns) = mean_ns(group, id) {
            println!("  {id:<16} {ns:>8.2} ns  {:>5.2}x", ns / base);
        }
    }
}

criterion_group!(benches, metrics_overhead);
criterion_main!(benches);
