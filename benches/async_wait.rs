//! The async allocation's cost, and how fast a release wakes a waiting task.
//!
//! - `async_room_free/<size>`: allocate + write one byte + release when a
//!   buffer is free, through `allocate_page_size_buffer` (`sync`), through
//!   `allocate_page_size_buffer_async` polled once by hand with a no-op
//!   waker (`async_poll`: the future's own cost), and awaited inside
//!   `futures_executor::block_on` (`async_block_on`: plus a bare executor's).
//!   Prints the ratios to `sync` at the end.
//! - `wake_latency` (printed, not criterion): a tokio task waits on a full
//!   pool; a plain thread stamps the time and releases one buffer; the task
//!   stamps the time it resumes. Median, p90 and p99 over the samples, for
//!   a multi-thread runtime and a current-thread one.
//!
//! ```text
//! cargo bench -p pagepool-benches --bench async_wait
//! ```

#[path = "support/estimates.rs"]
mod estimates;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pagepool::{page_size, BufferPool, PageBuffer};

fn touch(mut buf: PageBuffer) {
    buf.as_max_slice_mut()[0] = 1;
    black_box(&buf);
}

fn room_free(c: &mut Criterion) {
    for (label, size) in [("4KiB", 4096usize), ("64KiB", 64 << 10)] {
        let group = format!("async_room_free/{label}");
        let mut g = c.benchmark_group(&group);
        let pool = BufferPool::builder()
            .name("bench-async")
            .metrics(false)
            .build()
            .unwrap();
        touch(pool.allocate_page_size_buffer(size).unwrap());
        g.bench_function("sync", |b| {
            b.iter(|| touch(pool.allocate_page_size_buffer(black_box(size)).unwrap()))
        });
        let mut cx = Context::from_waker(Waker::noop());
        g.bench_function("async_poll", |b| {
            b.iter(|| {
                let mut f = pin!(pool.allocate_page_size_buffer_async(black_box(size)));
                match f.as_mut().poll(&mut cx) {
                    Poll::Ready(r) => touch(r.unwrap()),
                    Poll::Pending => unreachable!("a warm pool has room"),
                }
            })
        });
        g.bench_function("async_block_on", |b| {
            b.iter(|| {
                touch(
                    futures_executor::block_on(
                        pool.allocate_page_size_buffer_async(black_box(size)),
                    )
                    .unwrap(),
                )
            })
        });
        g.finish();
        estimates::print_ratios(&group, &["sync", "async_poll", "async_block_on"]);
    }
}

/// Samples of release-to-resume latency on `rt`.
fn wake_samples(rt: &tokio::runtime::Runtime, samples: usize) -> Vec<Duration> {
    let page = page_size();
    let pool = BufferPool::builder()
        .name("bench-wake")
        .metrics(false)
        .max_bytes(9 * page)
        .slab_size(4 * page)
        .build()
        .unwrap();
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let mut held: Vec<_> = (0..4)
            .map(|_| pool.allocate_page_size_buffer(page).unwrap())
            .collect();
        let (tx, rx) = mpsc::channel::<Instant>();
        // Releases one buffer once the task waits.
        let one = held.pop().unwrap();
        let watching = pool.clone();
        let releaser = thread::spawn(move || {
            while watching.stats().waiting == 0 {
                thread::yield_now();
            }
            let at = Instant::now();
            drop(one);
            tx.send(at).unwrap();
        });
        let waiting = pool.clone();
        let task = rt.spawn(async move {
            let buf = waiting.allocate_page_size_buffer_async(page).await.unwrap();
            // Back to this thread, so its cache holds every slot again.
            (Instant::now(), buf)
        });
        let (resumed, buf) = rt.block_on(task).unwrap();
        drop(buf);
        releaser.join().unwrap();
        let released = rx.recv().unwrap();
        out.push(resumed.saturating_duration_since(released));
        drop(held);
    }
    out
}

fn print_latency(label: &str, mut s: Vec<Duration>) {
    s.sort();
    let at = |q: f64| s[((s.len() - 1) as f64 * q) as usize];
    println!(
        "  {label:<16} n={:<5} median {:>7.1} us  p90 {:>7.1} us  p99 {:>7.1} us",
        s.len(),
        at(0.5).as_secs_f64() * 1e6,
        at(0.9).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
    );
}

fn wake_latency(_: &mut Criterion) {
    println!("\nwake_latency: a plain thread's release to the waiting task's resume");
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    print_latency("multi_thread(2)", wake_samples(&multi, 2000));
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    print_latency("current_thread", wake_samples(&current, 2000));
}

/// A failed allocation at the cap while another class holds many free slots
/// in slabs that are not idle (one slot of each is still out): what an
/// `Exhausted` refusal costs, the price every retry of a wait pays.
fn exhausted_at_cap(c: &mut Criterion) {
    let page = page_size();
    let mut g = c.benchmark_group("exhausted_at_cap");
    for free_slots in [2_000usize, 32_000] {
        // One-page slots in slabs of 16; the cap holds exactly those slabs.
        let slabs = free_slots / 15 + 1;
        let pool = BufferPool::builder()
            .name("bench-exhausted")
            .metrics(false)
            .slab_size(16 * page)
            .max_bytes(slabs * 33 * page)
            .build()
            .unwrap();
        let all: Vec<_> =
            std::iter::from_fn(|| pool.allocate_page_size_buffer(page).ok()).collect();
        // Keep one slot of every slab of 16 out; the rest go back.
        let kept: Vec<_> = all
            .into_iter()
            .enumerate()
            .filter_map(|(i, b)| (i % 16 == 0).then_some(b))
            .collect();
        let big = 64 * page;
        assert!(pool.allocate_page_size_buffer(big).is_err());
        g.bench_function(format!("{free_slots}_free_slots"), |b| {
            b.iter(|| black_box(pool.allocate_page_size_buffer(black_box(big)).is_err()))
        });
        drop(kept);
    }
    g.finish();
}

criterion_group!(benches, room_free, wake_latency, exhausted_at_cap);
criterion_main!(benches);
