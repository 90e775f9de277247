//! Instructions per allocate + write + release, counted by callgrind.
//!
//! Timings on a VM move by tens of percent from run to run; instruction
//! counts do not, so this is the figure a change to the hot path is held
//! to. `cargo bench -p pagepool-benches --bench instructions` builds this binary, runs itself
//! under `valgrind --tool=callgrind` once per case, collecting only inside
//! `measured_cycles` (the loop included, warm-up and the pool's background
//! threads excluded), and prints a table of instructions per cycle.
//!
//! | case | what one cycle is |
//! |---|---|
//! | `default/4KiB` | `BufferPool` defaults, Prometheus recorder installed: `allocate_page_size_buffer(4096)`, write the first byte, drop |
//! | `default/4KiB_async` | the same, through `allocate_page_size_buffer_async(4096)` polled once with a no-op waker |
//! | `bare/4KiB` | no guard pages, `DebugLevel::Off`, `LeakTracking::Off`, metrics off; the same cycle |
//! | `bare/4KiB_async` | bare, through the async call polled once |
//! | `default/1500B_page` | defaults: `allocate_page_size_buffer(1500)` (a slack canary to check) |
//! | `default/1500B_packet` | defaults: `allocate_buffer(1500)` (a small class, red zones) |
//! | `default/4KiB_quota` | defaults: `Quota::allocate_page_size_buffer(4096)` on a quota of the pool (a media server's per-connection quota: the charge and credit included) |
//! | `default/4KiB_quota_async` | the same through `Quota::allocate_page_size_buffer_async`, polled once with a no-op waker |
//! | `default/handoff_4KiB`, `default/handoff_64KiB` | per buffer, producer → two consumers as in `handoff.rs`: one thread allocates batches of 64 (writing one byte of each) and sends each batch (a `Vec`) to one of two consumers in turn over a channel 16 batches deep; the consumers write one byte and drop them (all three threads counted, the hand-off included) |
//! | `ids/handoff` | the same hand-off of plain `u64` ids: what the two rows above pay that is not the pool |
//!
//! The hand-off cases are the only ones whose counts move a little: a
//! consumer that finds its channel empty spins before it parks, and how
//! often depends on how valgrind schedules the three threads (runs repeat
//! within about 2 %).
//!
//! ```text
//! cargo bench -p pagepool-benches --bench instructions
//! ```
//!
//! Needs `valgrind` on the `PATH`; without it the bench says so and exits 0.

#[path = "support/pools.rs"]
mod pools;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::task::{Context, Poll, Waker};

use pagepool::BufferPool;

/// Cycles collected per case: enough that the 1 in 256 sampled allocation
/// and the rare slow paths are averaged in.
const CYCLES: u32 = 200_000;
/// Cycles run first, outside the collected function.
const WARM_UP: u32 = 10_000;
/// The environment variable that makes this binary run one case.
const CASE_VAR: &str = "PAGEPOOL_INSTRUCTIONS_CASE";

const CASES: [&str; 11] = [
    "default/4KiB",
    "default/4KiB_async",
    "bare/4KiB",
    "bare/4KiB_async",
    "default/1500B_page",
    "default/1500B_packet",
    "default/4KiB_quota",
    "default/4KiB_quota_async",
    "default/handoff_4KiB",
    "default/handoff_64KiB",
    "ids/handoff",
];
/// Batches of [`HANDOFF_BATCH`] buffers the hand-off cases send.
const HANDOFF_BATCHES: u32 = 2_000;
/// Buffers per batch, as in `handoff.rs`.
const HANDOFF_BATCH: u32 = 64;
/// Batches the hand-off channels hold, as in `handoff.rs`.
const HANDOFF_DEPTH: usize = 16;

fn main() {
    match std::env::var(CASE_VAR) {
        Ok(case) => run_case(&case),
        Err(_) => report(),
    }
}

/// Runs every case under callgrind and prints the table.
fn report() {
    // `cargo test --benches` runs bench binaries once as tests: nothing to
    // measure there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("instructions: valgrind is not installed; nothing measured");
        return;
    }
    let me = std::env::current_exe().expect("the bench binary's path");
    println!("\n| case | instructions per cycle |\n|---|---:|");
    for case in CASES {
        let out_file = std::env::temp_dir().join(format!(
            "pagepool-callgrind-{}-{}.out",
            std::process::id(),
            case.replace('/', "_")
        ));
        let status = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg("--toggle-collect=*measured_cycles*")
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg(&me)
            .env(CASE_VAR, case)
            .output()
            .expect("run valgrind");
        assert!(
            status.status.success(),
            "callgrind failed for {case}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let text = std::fs::read_to_string(&out_file).expect("callgrind's output file");
        let _ = std::fs::remove_file(&out_file);
        let total: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("totals:"))
            .or_else(|| text.lines().find_map(|l| l.strip_prefix("summary:")))
            .and_then(|v| v.trim().parse().ok())
            .expect("a totals line in callgrind's output");
        let cycles = if case.contains("handoff") {
            HANDOFF_BATCHES * HANDOFF_BATCH
        } else {
            CYCLES
        };
        println!("| {case} | {:.1} |", total as f64 / f64::from(cycles));
    }
}

/// One case, as the child under callgrind.
fn run_case(case: &str) {
    let (config, size) = case.split_once('/').expect("config/size");
    if config == "ids" {
        warm_up_handoff(|id| id);
        measured_cycles_handoff(|id| id);
        return;
    }
    let _recorder = (config == "default").then(|| {
        pagepool::prometheus::builder()
            .install_recorder()
            .expect("no other recorder in this process")
    });
    let pool = match config {
        "default" => pools::default_pool("instructions"),
        "bare" => pools::bare_pool("instructions_bare"),
        other => panic!("unknown configuration {other}"),
    };
    if let Some(size) = size.strip_prefix("handoff_") {
        let bytes = if size == "4KiB" { 4096 } else { 65_536 };
        let buffer = |_| {
            let mut buf = pool.allocate_page_size_buffer(bytes).expect("room");
            buf.as_max_slice_mut()[0] = 1;
            buf
        };
        warm_up_handoff(buffer);
        measured_cycles_handoff(buffer);
        return;
    }
    let (bytes, call) = match size {
        "4KiB" => (4096, Call::Page),
        "4KiB_async" => (4096, Call::PageAsync),
        "1500B_page" => (1500, Call::Page),
        "1500B_packet" => (1500, Call::Packet),
        "4KiB_quota" => (4096, Call::Quota),
        "4KiB_quota_async" => (4096, Call::QuotaAsync),
        other => panic!("unknown size {other}"),
    };
    warm_up(&pool, bytes, call);
    run_measured(&pool, bytes, call, CYCLES);
}

/// What a consumer of the hand-off cases does with an item.
trait Consume: Send + 'static {
    fn consume(self);
}

impl Consume for u64 {
    fn consume(self) {
        black_box(self);
    }
}

impl Consume for pagepool::PageBuffer {
    fn consume(mut self) {
        self.as_max_slice_mut()[0] = 2;
        black_box(&self);
    }
}

#[inline(never)]
fn warm_up_handoff<T: Consume>(make: impl Fn(u64) -> T) {
    handoff(make, HANDOFF_BATCHES / 10, warm_up_consumer);
}

/// The collected hand-off: producer here, consumers on two threads (their
/// loop is `measured_cycles_consumer`, collected too).
#[inline(never)]
fn measured_cycles_handoff<T: Consume>(make: impl Fn(u64) -> T) {
    handoff(make, HANDOFF_BATCHES, measured_cycles_consumer);
}

/// Consumers fed by channels (each runs `consumer`); the calling thread
/// makes `batches` batches with `make` and sends them in turn.
fn handoff<T: Consume>(make: impl Fn(u64) -> T, batches: u32, consumer: fn(Receiver<Vec<T>>)) {
    let (senders, consumers): (Vec<_>, Vec<_>) = (0..2)
        .map(|_| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<T>>(HANDOFF_DEPTH);
            (tx, std::thread::spawn(move || consumer(rx)))
        })
        .unzip();
    for b in 0..batches {
        let batch = (0..HANDOFF_BATCH)
            .map(|i| make(u64::from(b * HANDOFF_BATCH + i)))
            .collect();
        senders[b as usize % 2].send(batch).expect("a consumer");
    }
    drop(senders);
    for c in consumers {
        c.join().expect("a consumer");
    }
}

/// A consumer's loop, collected. Its body differs from
/// `warm_up_consumer`'s (the count it hands to `black_box`): identical
/// functions are folded into one symbol, which callgrind would then know
/// by the other's name.
#[inline(never)]
fn measured_cycles_consumer<T: Consume>(rx: Receiver<Vec<T>>) {
    black_box(consume_all(rx));
}

#[inline(never)]
fn warm_up_consumer<T: Consume>(rx: Receiver<Vec<T>>) {
    consume_all(rx);
}

/// Consumes every item `rx` brings; returns how many.
#[inline(always)]
fn consume_all<T: Consume>(rx: Receiver<Vec<T>>) -> usize {
    let mut n = 0;
    for batch in rx {
        n += batch.len();
        for item in batch {
            item.consume();
        }
    }
    n
}

/// Which allocation a case calls.
#[derive(Clone, Copy, PartialEq)]
enum Call {
    /// `allocate_page_size_buffer`.
    Page,
    /// `allocate_page_size_buffer_async`, polled once with a no-op waker.
    PageAsync,
    /// `allocate_buffer`.
    Packet,
    /// `Quota::allocate_page_size_buffer` on a quota of the pool.
    Quota,
    /// `Quota::allocate_page_size_buffer_async`, polled once with a no-op
    /// waker.
    QuotaAsync,
}

#[inline(never)]
fn warm_up(pool: &BufferPool, size: usize, call: Call) {
    match call {
        Call::Page => page_cycles(pool, size, WARM_UP),
        Call::PageAsync => page_async_cycles(pool, size, WARM_UP),
        Call::Packet => packet_cycles(pool, size, WARM_UP),
        Call::Quota => quota_cycles(pool, size, WARM_UP),
        Call::QuotaAsync => quota_async_cycles(pool, size, WARM_UP),
    }
}

/// `n` cycles of `call`, each call's loop a function of its own (the
/// collected ones: callgrind's `--toggle-collect` flips at each, so this
/// dispatch must not match the pattern), so that adding a case moves no
/// other case's count.
#[inline(never)]
fn run_measured(pool: &BufferPool, size: usize, call: Call, n: u32) {
    match call {
        Call::Page => measured_cycles_page(pool, size, n),
        Call::PageAsync => measured_cycles_page_async(pool, size, n),
        Call::Packet => measured_cycles_packet(pool, size, n),
        Call::Quota => measured_cycles_quota(pool, size, n),
        Call::QuotaAsync => measured_cycles_quota_async(pool, size, n),
    }
}

#[inline(never)]
fn measured_cycles_page(pool: &BufferPool, size: usize, n: u32) {
    page_cycles(pool, size, n);
}

#[inline(never)]
fn measured_cycles_page_async(pool: &BufferPool, size: usize, n: u32) {
    page_async_cycles(pool, size, n);
}

#[inline(never)]
fn measured_cycles_packet(pool: &BufferPool, size: usize, n: u32) {
    packet_cycles(pool, size, n);
}

#[inline(never)]
fn measured_cycles_quota(pool: &BufferPool, size: usize, n: u32) {
    quota_cycles(pool, size, n);
}

#[inline(never)]
fn measured_cycles_quota_async(pool: &BufferPool, size: usize, n: u32) {
    quota_async_cycles(pool, size, n);
}

/// Writes the first byte of a new buffer and keeps the compiler from
/// dropping it unseen: the same end of every cycle.
#[inline(always)]
fn touch(mut buf: pagepool::PageBuffer) {
    buf.as_max_slice_mut()[0] = 1;
    black_box(&buf);
}

#[inline(always)]
fn page_cycles(pool: &BufferPool, size: usize, n: u32) {
    for _ in 0..n {
        touch(
            pool.allocate_page_size_buffer(black_box(size))
                .expect("room"),
        );
    }
}

#[inline(always)]
fn packet_cycles(pool: &BufferPool, size: usize, n: u32) {
    for _ in 0..n {
        touch(pool.allocate_buffer(black_box(size)).expect("room"));
    }
}

#[inline(always)]
fn quota_cycles(pool: &BufferPool, size: usize, n: u32) {
    let quota = pool.quota(1 << 30);
    for _ in 0..n {
        touch(
            quota
                .allocate_page_size_buffer(black_box(size))
                .expect("room"),
        );
    }
}

/// Polls a future once with a no-op waker: a warm pool has room at once.
#[inline(always)]
fn ready<F: Future<Output = Result<pagepool::PageBuffer, pagepool::Error>>>(
    wait: F,
    cx: &mut Context<'_>,
) -> pagepool::PageBuffer {
    let mut wait = pin!(wait);
    let Poll::Ready(got) = wait.as_mut().poll(cx) else {
        panic!("a warm pool has room");
    };
    got.expect("room")
}

#[inline(always)]
fn page_async_cycles(pool: &BufferPool, size: usize, n: u32) {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..n {
        touch(ready(
            pool.allocate_page_size_buffer_async(black_box(size)),
            &mut cx,
        ));
    }
}

#[inline(always)]
fn quota_async_cycles(pool: &BufferPool, size: usize, n: u32) {
    let quota = pool.quota(1 << 30);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..n {
        touch(ready(
            quota.allocate_page_size_buffer_async(black_box(size)),
            &mut cx,
        ));
    }
}
