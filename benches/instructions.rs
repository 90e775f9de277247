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
use std::task::{Context, Poll, Waker};

use pagepool::BufferPool;

/// Cycles collected per case: enough that the 1 in 256 sampled allocation
/// and the rare slow paths are averaged in.
const CYCLES: u32 = 200_000;
/// Cycles run first, outside the collected function.
const WARM_UP: u32 = 10_000;
/// The environment variable that makes this binary run one case.
const CASE_VAR: &str = "PAGEPOOL_INSTRUCTIONS_CASE";

const CASES: [&str; 6] = [
    "default/4KiB",
    "default/4KiB_async",
    "bare/4KiB",
    "bare/4KiB_async",
    "default/1500B_page",
    "default/1500B_packet",
];

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
        println!("| {case} | {:.1} |", total as f64 / f64::from(CYCLES));
    }
}

/// One case, as the child under callgrind.
fn run_case(case: &str) {
    let (config, size) = case.split_once('/').expect("config/size");
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
    let (bytes, call) = match size {
        "4KiB" => (4096, Call::Page),
        "4KiB_async" => (4096, Call::PageAsync),
        "1500B_page" => (1500, Call::Page),
        "1500B_packet" => (1500, Call::Packet),
        other => panic!("unknown size {other}"),
    };
    warm_up(&pool, bytes, call);
    measured_cycles(&pool, bytes, call, CYCLES);
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
}

#[inline(never)]
fn warm_up(pool: &BufferPool, size: usize, call: Call) {
    measured_cycles_inner(pool, size, call, WARM_UP);
}

/// The collected function: `n` cycles.
#[inline(never)]
fn measured_cycles(pool: &BufferPool, size: usize, call: Call, n: u32) {
    measured_cycles_inner(pool, size, call, n);
}

#[inline(always)]
fn measured_cycles_inner(pool: &BufferPool, size: usize, call: Call, n: u32) {
    if call == Call::PageAsync {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..n {
            let mut wait = pin!(pool.allocate_page_size_buffer_async(black_box(size)));
            let Poll::Ready(got) = wait.as_mut().poll(&mut cx) else {
                panic!("a warm pool has room");
            };
            let mut buf = got.expect("room");
            buf.as_max_slice_mut()[0] = 1;
            black_box(&buf);
        }
    } else if call == Call::Packet {
        for _ in 0..n {
            let mut buf = pool.allocate_buffer(black_box(size)).expect("room");
            buf.as_max_slice_mut()[0] = 1;
            black_box(&buf);
        }
    } else {
        for _ in 0..n {
            let mut buf = pool
                .allocate_page_size_buffer(black_box(size))
                .expect("room");
            buf.as_max_slice_mut()[0] = 1;
            black_box(&buf);
        }
    }
}
