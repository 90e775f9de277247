//! What each debug level and leak-tracking mode costs on allocate + write the
//! first byte + release, at 1500 bytes (a packet: the slack canary has work)
//! and at 64 KiB (whole pages: no slack). Prints the ratio to `Off` at the end.
//!
//! ```text
//! cargo bench -p pagepool-benches --bench debug
//! ```

#[path = "support/estimates.rs"]
mod estimates;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use pagepool::{BufferPool, DebugLevel, LeakTracking};

fn cycle(pool: &BufferPool, size: usize) {
    let mut buf = pool.allocate_page_size_buffer(size).expect("warm pool");
    buf.as_max_slice_mut()[0] = 1;
    black_box(&buf);
}

fn pool(debug: DebugLevel, tracking: LeakTracking) -> BufferPool {
    BufferPool::builder()
        .debug(debug)
        .leak_tracking(tracking)
        .metrics(false)
        .build()
        .expect("valid configuration")
}

fn debug_levels(c: &mut Criterion) {
    let configs = [
        ("off", pool(DebugLevel::Off, LeakTracking::Off)),
        ("callsite", pool(DebugLevel::Off, LeakTracking::CallSite)),
        (
            "backtrace_1_in_1024",
            pool(
                DebugLevel::Off,
                LeakTracking::Backtrace { sample_every: 1024 },
            ),
        ),
        (
            "standard",
            pool(DebugLevel::Standard, LeakTracking::CallSite),
        ),
        (
            "paranoid",
            pool(DebugLevel::Paranoid, LeakTracking::CallSite),
        ),
    ];
    for (label, size) in [("1500B", 1500usize), ("64KiB", 64 << 10)] {
        let group = format!("debug_cost/{label}");
        let mut g = c.benchmark_group(&group);
        for (name, pool) in &configs {
            cycle(pool, size);
            g.bench_function(*name, |b| b.iter(|| cycle(pool, size)));
        }
        g.finish();
        let names: Vec<&str> = configs.iter().map(|(n, _)| *n).collect();
        estimates::print_ratios(&group, &names);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = debug_levels
}
criterion_main!(benches);
