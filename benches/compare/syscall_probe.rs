//! Counting system calls: with `PAGEPOOL_SYSCALL_PROBE=1` the compare binary
//! runs only this: install the Prometheus recorder, build a default pool,
//! warm it with 1,000,000 cycles at 4 KiB and at 64 KiB (and drain the
//! recorder once, as its upkeep would), write `PAGEPOOL_PROBE_BEGIN` to
//! stderr, run `PAGEPOOL_PROBE_CYCLES` (default 1,000,000) more cycles at
//! each size, write `PAGEPOOL_PROBE_END`, exit. Compare a run with 0 cycles against one
//! with 1,000,000; `strace` without `-f` follows only the main thread, the one
//! that runs the loop (with `-f` the pool's 5 ms coarse-clock thread and its
//! metrics publisher show up too, in proportion to the run's wall time, not
//! to the number of operations):
//!
//! ```text
//! cargo bench -p pagepool-benches --bench compare --no-run
//! BIN=$(ls -t target/release/deps/compare-* | grep -v '\.d$' | head -1)
//! PAGEPOOL_SYSCALL_PROBE=1 PAGEPOOL_PROBE_CYCLES=0       strace -c -o /tmp/sys0 $BIN
//! PAGEPOOL_SYSCALL_PROBE=1 PAGEPOOL_PROBE_CYCLES=1000000 strace -c -o /tmp/sys1 $BIN
//! # Every thread, with the main thread's calls between the two markers:
//! PAGEPOOL_SYSCALL_PROBE=1 strace -f -o /tmp/trace $BIN
//! ```
//!
//! or `perf stat -e 'raw_syscalls:sys_enter' --per-thread` where tracepoints
//! are available. `PAGEPOOL_PROBE_METRICS=0` builds the probe's pool with
//! metrics off (the rest still default), to tell the recorder's share of any
//! page fault from the pool's.

use std::io::Write;
use std::time::Instant;

use pagepool::BufferPool;

use crate::faults::{usage, warm_for_probe, PROBE_CYCLES};
use crate::groups::cycles;
use crate::CROSS_SIZES;

/// `PAGEPOOL_SYSCALL_PROBE=1`: only the warm loop between two markers on
/// stderr, for `strace`.
pub(crate) fn syscall_probe() {
    let n: u64 = std::env::var("PAGEPOOL_PROBE_CYCLES")
        .ok()
        .map(|v| v.parse().expect("PAGEPOOL_PROBE_CYCLES: a number"))
        .unwrap_or(PROBE_CYCLES);
    let handle = pagepool::prometheus::builder()
        .install_recorder()
        .expect("no other recorder in this process");
    // PAGEPOOL_PROBE_METRICS=0: the same pool without metrics, to tell the
    // recorder's share from the pool's.
    let metrics = std::env::var("PAGEPOOL_PROBE_METRICS").map_or(true, |v| v != "0");
    let pool = BufferPool::builder()
        .name("compare_probe")
        .metrics(metrics)
        .build()
        .expect("default configuration");
    warm_for_probe(&pool, Some(&handle));
    // Each marker is one write(2), the last system call before the loop and
    // the first after it.
    let begin = format!("PAGEPOOL_PROBE_BEGIN cycles={n} per size\n");
    let mut stderr = std::io::stderr().lock();
    let before = usage(libc::RUSAGE_THREAD);
    stderr.write_all(begin.as_bytes()).expect("stderr");
    let start = Instant::now();
    for (_, size) in CROSS_SIZES {
        cycles(&pool, size, n);
    }
    let elapsed = start.elapsed();
    stderr.write_all(b"PAGEPOOL_PROBE_END\n").expect("stderr");
    let after = usage(libc::RUSAGE_THREAD);
    drop(stderr);
    println!(
        "syscall probe: {n} cycles at each of 4 KiB and 64 KiB in {:.1} ms ({:.1} ns/op); \
         this thread: {} minor / {} major faults, {} / {} context switches",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_nanos() as f64 / (2 * n).max(1) as f64,
        after.minflt - before.minflt,
        after.majflt - before.majflt,
        after.nvcsw - before.nvcsw,
        after.nivcsw - before.nivcsw,
    );
}
