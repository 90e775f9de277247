//! What the publisher's tick costs: 100 pools holding 100,000 outstanding
//! buffers between them (1,000 each, from 20 allocation sites), the
//! Prometheus recorder installed, and one round of the publisher's work
//! (`publish_metrics` on every pool: the walk of the slot metadata for
//! leak suspects and site totals, the snapshot, the handles, the top
//! sites' gauges) timed over 200 rounds: median, p99 and max per round, and
//! per pool. Then the same 100 pools with metrics off, for the cost of the
//! snapshot alone (`stats()`).
//!
//! ```text
//! cargo bench -p pagepool-benches --bench publisher
//! ```

use std::time::{Duration, Instant};

use pagepool::{BufferPool, PageBuffer};

const POOLS: usize = 100;
const BUFFERS: usize = 100_000;
const ROUNDS: usize = 200;

/// Allocates `n` buffers from `pool`, spread over 20 call sites (one
/// line each: a site is a source location).
fn hold(pool: &BufferPool, n: usize) -> Vec<PageBuffer> {
    (0..n)
        .map(|i| match i % 20 {
            0 => pool.allocate_buffer(512).unwrap(),
            1 => pool.allocate_buffer(576).unwrap(),
            2 => pool.allocate_buffer(640).unwrap(),
            3 => pool.allocate_buffer(704).unwrap(),
            4 => pool.allocate_buffer(768).unwrap(),
            5 => pool.allocate_buffer(832).unwrap(),
            6 => pool.allocate_buffer(896).unwrap(),
            7 => pool.allocate_buffer(960).unwrap(),
            8 => pool.allocate_buffer(1024).unwrap(),
            9 => pool.allocate_buffer(1088).unwrap(),
            10 => pool.allocate_buffer(1152).unwrap(),
            11 => pool.allocate_buffer(1216).unwrap(),
            12 => pool.allocate_buffer(1280).unwrap(),
            13 => pool.allocate_buffer(1344).unwrap(),
            14 => pool.allocate_buffer(1408).unwrap(),
            15 => pool.allocate_buffer(1472).unwrap(),
            16 => pool.allocate_buffer(1536).unwrap(),
            17 => pool.allocate_buffer(1600).unwrap(),
            18 => pool.allocate_buffer(1664).unwrap(),
            19 => pool.allocate_buffer(1728).unwrap(),
            _ => unreachable!(),
        })
        .collect()
}

fn report(label: &str, mut rounds: Vec<Duration>) {
    rounds.sort();
    let at = |q: f64| rounds[((rounds.len() - 1) as f64 * q) as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "  {label:<34} median {:>9.1} us  p99 {:>9.1} us  max {:>9.1} us  ({:.2} us a pool, median)",
        us(at(0.5)),
        us(at(0.99)),
        us(rounds[rounds.len() - 1]),
        us(at(0.5)) / POOLS as f64
    );
}

fn pools(metrics: bool) -> Vec<BufferPool> {
    (0..POOLS)
        .map(|i| {
            BufferPool::builder()
                .name(format!("bench-publisher-{metrics}-{i}"))
                .metrics(metrics)
                // The bench drives the rounds itself.
                .metrics_publish_interval(Duration::from_secs(1))
                .guard_pages(false)
                .build()
                .unwrap()
        })
        .collect()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches`: nothing to measure
    }
    let _handle = pagepool::prometheus::builder()
        .install_recorder()
        .expect("no other recorder");
    println!("publisher: {POOLS} pools, {BUFFERS} buffers out, 20 sites, {ROUNDS} rounds");
    let on = pools(true);
    let held: Vec<Vec<PageBuffer>> = on.iter().map(|p| hold(p, BUFFERS / POOLS)).collect();
    let rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for p in &on {
                p.publish_metrics();
            }
            t.elapsed()
        })
        .collect();
    report("publish_metrics, every pool", rounds);
    drop(held);

    let off = pools(false);
    let held: Vec<Vec<PageBuffer>> = off.iter().map(|p| hold(p, BUFFERS / POOLS)).collect();
    let rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for p in &off {
                std::hint::black_box(p.stats());
            }
            t.elapsed()
        })
        .collect();
    report("stats() only, every pool", rounds);
    drop(held);
}
