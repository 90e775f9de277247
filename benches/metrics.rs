//! What metrics cost on the hot path: allocate a buffer, write its first
//! byte, release it, with metrics off, on without a recorder, and on with the
//! Prometheus recorder installed. Prints the ratio "on / off" at the end.
//!
//! ```text
//! cargo bench -p pagepool-benches --bench metrics
//! ```

#[path = "support/estimates.rs"]
mod estimates;

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
        estimates::print_ratios(
            &format!("metrics_overhead/{label}"),
            &["off", "on_no_recorder", "on_prometheus"],
        );
    }
}

criterion_group!(benches, metrics_overhead);
criterion_main!(benches);
