//! What holds the slab lock too long, measured:
//!
//! - a scan of the slot metadata: a pool with 1,000,000 packets out, one
//!   thread building leak reports of all of them in a loop, and the main
//!   thread allocating buffers that each map a slab of their own (so each
//!   takes the slab lock); the allocations' latency (median, p99, max) with
//!   and without the scanner, side by side in one run; and, for scale, with
//!   a thread that touches no pool but grows and frees a 100 MiB vector in
//!   a loop as the report does (what the process's memory-map lock costs);
//! - the publisher's tick: the same, with a metrics-on pool and one thread
//!   calling `publish_metrics` in a loop (the tick's work: the walk for
//!   leak suspects and site totals, then the snapshot), so the allocations
//!   meet a tick in progress far more often than at one tick per interval;
//! - refusals at the cap: a 256 MiB pool whose one-page slabs each keep one
//!   slot out (32,000 free slots, no slab idle), two threads failing large
//!   allocations in a loop, and the main thread's 10 ms timed waits: how far
//!   past its deadline each wait returns.
//!
//! ```text
//! cargo bench -p pagepool-benches --bench stall
//! ```

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pagepool::{page_size, BufferPool, PageBuffer, PoolBuilder};

const PACKETS: usize = 1_000_000;
const MAPPINGS: usize = 2_000;

fn latencies(pool: &BufferPool) -> Vec<Duration> {
    let page = page_size();
    let mut held = Vec::with_capacity(MAPPINGS);
    let mut out = Vec::with_capacity(MAPPINGS);
    for _ in 0..MAPPINGS {
        let t = Instant::now();
        // Two pages: the only buffer of its class in a one-slot slab.
        held.push(pool.allocate_page_size_buffer(2 * page).expect("room"));
        out.push(t.elapsed());
        thread::sleep(Duration::from_micros(200));
    }
    drop(held);
    pool.trim();
    out.sort();
    out
}

fn print(label: &str, s: &[Duration]) {
    let at = |q: f64| s[((s.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "  {label:<28} median {:>8.1} us  p99 {:>9.1} us  max {:>9.1} us",
        at(0.5),
        at(0.99),
        s[s.len() - 1].as_secs_f64() * 1e6
    );
}

/// Timed waits at the cap while two threads fail allocations in a loop.
fn wait_overshoot() {
    let page = page_size();
    let pool = BufferPool::builder()
        .name("bench-overshoot")
        .metrics(false)
        .slab_size(16 * page)
        .max_bytes(256 << 20)
        .build()
        .unwrap();
    let all: Vec<_> = std::iter::from_fn(|| pool.allocate_page_size_buffer(page).ok()).collect();
    let free = all.len() - all.len() / 16;
    let kept: Vec<_> = all
        .into_iter()
        .enumerate()
        .filter_map(|(i, b)| (i % 16 == 0).then_some(b))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let (pool, stop) = (pool.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Relaxed) {
                    assert!(pool.allocate_page_size_buffer(64 * page_size()).is_err());
                }
            })
        })
        .collect();
    let timeout = Duration::from_millis(10);
    let mut over: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            assert!(pool
                .allocate_page_size_buffer_timeout(64 * page, timeout)
                .is_err());
            t.elapsed().saturating_sub(timeout)
        })
        .collect();
    stop.store(true, Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    over.sort();
    println!(
        "
wait overshoot: {free} free slots in non-idle slabs, 2 threads failing, 200 waits of 10 ms"
    );
    print("past the deadline", &over);
    drop(kept);
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches`: nothing to measure
    }
    wait_overshoot();
    let (pool, packets) =
        with_packets_out(BufferPool::builder().name("bench-stall").metrics(false));
    println!("\nstall: {PACKETS} packets out; {MAPPINGS} allocations that each map a slab");
    print("no scanner", &latencies(&pool));
    let (lat, reports, longest) = while_looping(&pool, || {
        assert!(pool.leak_report(Duration::ZERO).buffers() >= PACKETS);
    });
    print("leak_report looping", &lat);
    println!("  ({reports} leak reports of {PACKETS} buffers, the longest {longest:?})");
    // For scale: a thread that touches no pool but grows and frees a vector
    // of about a leak report's size here (100 MiB).
    let (lat, _, _) = while_looping(&pool, || {
        let mut v: Vec<[u64; 13]> = Vec::new();
        for i in 0..PACKETS {
            v.push([i as u64; 13]);
        }
        std::hint::black_box(&v);
    });
    print("100 MiB Vec looping, no pool", &lat);
    drop(packets);
    drop(pool);
    publisher_stall();
}

/// A pool of `builder` with two-page slabs, and `PACKETS` 64-byte packets
/// out of it.
fn with_packets_out(builder: PoolBuilder) -> (BufferPool, Vec<PageBuffer>) {
    let pool = builder.slab_size(2 * page_size()).build().unwrap();
    let packets = (0..PACKETS)
        .map(|_| pool.allocate_buffer(64).unwrap())
        .collect();
    (pool, packets)
}

/// Allocations that map a slab while `publish_metrics` loops over a pool
/// with `PACKETS` out.
fn publisher_stall() {
    let (pool, packets) = with_packets_out(
        BufferPool::builder()
            .name("bench-stall-publisher")
            .metrics_publish_interval(Duration::from_secs(1)),
    );
    let (lat, ticks, longest) = while_looping(&pool, || pool.publish_metrics());
    print("publish_metrics looping", &lat);
    println!("  ({ticks} publishes of a pool with {PACKETS} buffers out, the longest {longest:?})");
    drop(packets);
}

/// The allocations' latency while another thread runs `step` in a loop;
/// with how many times it ran and its longest run.
fn while_looping(pool: &BufferPool, step: impl Fn() + Sync) -> (Vec<Duration>, usize, Duration) {
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let looping = s.spawn(|| {
            let (mut runs, mut longest) = (0, Duration::ZERO);
            while !stop.load(Relaxed) {
                let t = Instant::now();
                step();
                longest = longest.max(t.elapsed());
                runs += 1;
            }
            (runs, longest)
        });
        thread::sleep(Duration::from_millis(100));
        let out = latencies(pool);
        stop.store(true, Relaxed);
        let (runs, longest) = looping.join().unwrap();
        (out, runs, longest)
    })
}
