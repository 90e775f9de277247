//! What decay costs off the hot path: one look by the background tick
//! (`BufferPool::decay_idle`) when nothing is due, when every slab holds a
//! buffer (the free lists are walked for nothing), and when 16 idle slabs
//! go back to the OS, next to `trim` giving back the same 16 slabs. The hot
//! path's share is in `instructions.rs` (decay adds nothing there).
//!
//! ```text
//! cargo bench -p pagepool-benches --bench decay
//! ```

#[path = "support/estimates.rs"]
mod estimates;

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pagepool::{page_size, BufferPool, PageBuffer, MIN_DECAY};

/// Slabs in the `fragmented` and `unmap` cases.
const SLABS: usize = 16;

fn pool(name: &str) -> BufferPool {
    BufferPool::builder()
        .name(name)
        .metrics(false)
        .thread_cache(false)
        // The shortest period; the background tick looks once a second, so
        // the measured calls are nearly always the only looks.
        .decay(Some(MIN_DECAY))
        .metrics_publish_interval(Duration::from_secs(1))
        .build()
        .expect("valid configuration")
}

/// Page buffers filling `slabs` slabs of the 4 KiB class.
fn fill(pool: &BufferPool, slabs: usize) -> Vec<PageBuffer> {
    let per_slab = (1 << 20) / page_size();
    (0..slabs * per_slab)
        .map(|_| pool.allocate_page_size_buffer(page_size()).expect("no cap"))
        .collect()
}

/// Lets more than a period pass, so the next look is a full one.
fn past_period() {
    thread::sleep(MIN_DECAY + MIN_DECAY / 2);
}

/// Times `look` alone, `iters` times, after `setup` and a period each. A
/// look that returns less than `least` bytes found its work done by the
/// background tick (which looks once a second): it is not counted, and the
/// iteration runs again.
fn timed(
    iters: u64,
    least: usize,
    mut setup: impl FnMut(),
    mut look: impl FnMut() -> usize,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut counted = 0;
    while counted < iters {
        setup();
        past_period();
        let start = Instant::now();
        let freed = black_box(look());
        let took = start.elapsed();
        if freed >= least {
            total += took;
            counted += 1;
        }
    }
    total
}

fn looks(c: &mut Criterion) {
    let group = "decay/look";
    let mut g = c.benchmark_group(group);
    g.sample_size(20);

    // One slab, every slot in use: nothing to look for beyond the counters.
    let steady = pool("decay-bench-steady");
    let _held = fill(&steady, 1);
    g.bench_function("nothing_due", |b| {
        b.iter_custom(|iters| timed(iters, 0, || {}, || steady.decay_idle()))
    });

    // One buffer held in each of 16 slabs: a surplus no slab can give, so
    // each look drains and refills the free list.
    let fragmented = pool("decay-bench-fragmented");
    let per_slab = (1 << 20) / page_size();
    let mut all = fill(&fragmented, SLABS);
    let _one_per_slab: Vec<_> = all.drain(..).step_by(per_slab).collect();
    g.bench_function("fragmented_16_slabs", |b| {
        b.iter_custom(|iters| timed(iters, 0, || {}, || fragmented.decay_idle()))
    });

    // 16 idle slabs to unmap, remapped before each look.
    let idle = pool("decay-bench-unmap");
    let setup = || {
        drop(fill(&idle, SLABS));
        // The mark the timed look starts its period from (a period after
        // the last look, so it is not skipped as too soon).
        past_period();
        idle.decay_idle();
    };
    g.bench_function("unmap_16_slabs", |b| {
        b.iter_custom(|iters| timed(iters, 1, setup, || idle.decay_idle()))
    });
    let trimmed = pool("decay-bench-trim");
    g.bench_function("trim_16_slabs", |b| {
        b.iter_custom(|iters| timed(iters, 1, || drop(fill(&trimmed, SLABS)), || trimmed.trim()))
    });
    g.finish();
    estimates::print_ratios(group, &["trim_16_slabs", "unmap_16_slabs"]);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = looks
}
criterion_main!(benches);
