//! pagepool against its peers, in one run, one thread unless said otherwise,
//! nanoseconds per operation:
//!
//! - `overhead/{4KiB,64KiB,1MiB}`: allocate a buffer, write its first byte,
//!   release it;
//! - `touch_all/{4KiB,64KiB,1MiB}`: allocate, write one byte per 4 KiB page,
//!   release;
//! - `packet/1500B`: `overhead` for an RTP packet: pagepool through
//!   `allocate_buffer` (a small class, 64-byte aligned), the heaps with
//!   64-byte alignment;
//! - `cross_thread/{4KiB,64KiB}`: a producer allocates, writes the first byte
//!   and sends the buffer over a bounded channel (`sync_channel`, 32 deep) to
//!   a consumer thread that drops it (the media-server pattern); the time of
//!   N items end to end, per item. `channel_only` sends a one-byte value and
//!   is the floor the channel alone costs;
//! - `contended/4KiB`: two threads allocate and release on one shared pool
//!   at once, each doing N operations; the wall time of those N, per
//!   operation. `contended_1thread/4KiB` is the same harness on one thread.
//!   The scaling factor is (two-thread ops/s) ÷ (one-thread ops/s), 2.0 at
//!   best. `share_nothing` runs the same harness with each thread cycling
//!   its own `arrayqueue_usize` (nothing shared): the machine's own scaling
//!   in that run, which the pool's is divided by.
//!
//! The contenders:
//!
//! | id | what |
//! |---|---|
//! | `pagepool_default` | `BufferPool` defaults (guard pages, call-site leak tracking, `DebugLevel::Standard`, metrics) with the Prometheus recorder installed |
//! | `pagepool_bare` | no guard pages, `DebugLevel::Off`, `LeakTracking::Off`, metrics off |
//! | `std_alloc` | `std::alloc::alloc`/`dealloc` with a 4096-aligned `Layout` (the global allocator here: glibc malloc) |
//! | `std_alloc_mmap` | `std_alloc` at 1 MiB in a child process started with `MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=131072` (glibc's mmap and trim thresholds pinned at their defaults): every buffer is a fresh mapping, as a process's first big block is |
//! | `mimalloc` | `mimalloc::MiMalloc` called as a value through `GlobalAlloc`, 4096-aligned (not the global allocator) |
//! | `mmap_guard` | per buffer, `mmap` of size + 2 pages, `mprotect` of the first and last page to `PROT_NONE`, `munmap` on drop |
//! | `arrayqueue_usize` | the bare free list (`overhead` and `contended` only): a `crossbeam_queue::ArrayQueue<usize>` holding the address of one pre-touched, page-aligned buffer of the size; per operation pop, write one byte through the address, push. No trait, no `Option`, no drop guard |
//! | `arrayqueue` (wrapped) | a `crossbeam_queue::ArrayQueue` of `HeapBuf` values behind the `Contender` trait, in an `Option` taken on drop: pop, write, push. Its wrapper costs what `arrayqueue_usize` does not |
//! | `object_pool` | `object_pool::Pool<Vec<u8>>` of pre-sized vectors: `pull`, write, drop (not page-aligned) |
//! | `byte_pool` | `byte_pool::BytePool<Vec<u8>>::alloc(size)`, write, drop (not page-aligned) |
//! | `opool` | `opool::Pool` with a `Vec<u8>` allocator of the size: `get`, write, drop (not page-aligned) |
//!
//! Each pool-like peer is built per size and per group, holding as many
//! buffers as the group keeps in flight (1; 2 for `contended`; the channel's
//! depth + 2 for `cross_thread`), and falls back to allocating when empty.
//!
//! At the end it prints, from criterion's saved estimates, a markdown table of
//! the means, the ratios `pagepool_default ÷ peer` (below 1: pagepool is
//! faster) and the contended scaling factors. Before criterion runs it
//! counts page faults (`getrusage`) over 1,000,000 warm
//! allocate + write + release cycles.
//!
//! ```text
//! cargo bench -p pagepool-benches --bench compare
//! ```
//!
//! With `PAGEPOOL_SYSCALL_PROBE=1` it counts system calls instead: see
//! `compare/syscall_probe.rs`.
//!
//! This file wires the criterion groups; the contenders are in
//! `compare/contenders.rs`, the harnesses in `compare/groups.rs`, the
//! probes in `compare/faults.rs` and `compare/syscall_probe.rs`, the pinned
//! glibc in `compare/glibc_pinned.rs` and the tables in `compare/report.rs`.

#[path = "support/estimates.rs"]
mod estimates;
#[path = "support/pools.rs"]
mod pools;

#[path = "compare/contenders.rs"]
mod contenders;
#[path = "compare/faults.rs"]
mod faults;
#[path = "compare/glibc_pinned.rs"]
mod glibc_pinned;
#[path = "compare/groups.rs"]
mod groups;
#[path = "compare/report.rs"]
mod report;
#[path = "compare/syscall_probe.rs"]
mod syscall_probe;

use std::time::{Duration, Instant};

use criterion::Criterion;

use contenders::{for_each_contender, BareFreeList, ChannelOnly, Packets, Visit, BARE_FREE_LIST};
use groups::{ContendedPairs, CrossThread, SingleThread, CHANNEL_DEPTH};

const KIB: usize = 1024;
const SIZES: [(&str, usize); 3] = [("4KiB", 4 * KIB), ("64KiB", 64 * KIB), ("1MiB", 1024 * KIB)];
const CROSS_SIZES: [(&str, usize); 2] = [("4KiB", 4 * KIB), ("64KiB", 64 * KIB)];
const CONTENDED_SIZES: [(&str, usize); 1] = [("4KiB", 4 * KIB)];
/// The `packet` group: an RTP packet from `allocate_buffer` (a small class,
/// 64-byte aligned), against the allocators at that alignment.
const PACKET_SIZES: [(&str, usize); 1] = [("1500B", 1500)];

/// The criterion settings of every group.
fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(600))
        .measurement_time(Duration::from_millis(1600))
        .configure_from_args()
}

fn main() {
    if std::env::var_os("PAGEPOOL_SYSCALL_PROBE").is_some_and(|v| v != "0") {
        syscall_probe::syscall_probe();
        return;
    }
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`)
    // criterion runs each benchmark once as a test, and the probe and the
    // report are skipped.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    if std::env::var_os(glibc_pinned::GLIBC_CHILD).is_some() {
        glibc_pinned::glibc_pinned_child(bench_mode);
        return;
    }

    // The recorder before any pool is built, so that `pagepool_default`
    // registers its handles with it; its upkeep on a thread of its own, as
    // the exporter would run it.
    let prometheus = pools::install_prometheus();

    let default = pools::default_pool("compare_default");
    let bare = pools::bare_pool("compare_bare");
    let pools = [("pagepool_default", &default), ("pagepool_bare", &bare)];

    if bench_mode {
        faults::fault_probe(&pools, &prometheus);
    }

    let mut c = criterion();
    let start = Instant::now();

    for (kind, touch) in [("overhead", false), ("touch_all", true)] {
        for (label, size) in SIZES {
            let mut group = c.benchmark_group(format!("{kind}/{label}"));
            if !touch {
                let list = BareFreeList::new(size);
                group.bench_function(BARE_FREE_LIST, |b| b.iter(|| list.cycle()));
            }
            for_each_contender(
                &pools,
                size,
                1,
                &mut SingleThread {
                    group: &mut group,
                    size,
                    touch,
                },
            );
            group.finish();
        }
    }
    for (label, size) in PACKET_SIZES {
        let mut group = c.benchmark_group(format!("packet/{label}"));
        let packets = [
            ("pagepool_default", Packets(&default)),
            ("pagepool_bare", Packets(&bare)),
        ];
        let mut v = SingleThread {
            group: &mut group,
            size,
            touch: false,
        };
        for (name, p) in &packets {
            v.visit(name, p);
        }
        for_each_contender(&[], size, 1, &mut v);
        group.finish();
    }
    for (label, size) in CROSS_SIZES {
        let mut group = c.benchmark_group(format!("cross_thread/{label}"));
        let mut v = CrossThread {
            group: &mut group,
            size,
        };
        for_each_contender(&pools, size, CHANNEL_DEPTH + 2, &mut v);
        v.visit("channel_only", &ChannelOnly);
        group.finish();
    }
    for (label, size) in CONTENDED_SIZES {
        // Each contender's one- and two-thread runs back to back, and
        // `share_nothing` first, next to `pagepool_default`: the load on this
        // shared VM moves from minute to minute, and a scaling divides the
        // two runs (with every one-thread run before every two-thread one, a
        // load that came or went in between made the ratios meaningless).
        let mut pairs = ContendedPairs {
            c: &mut c,
            label,
            size,
        };
        pairs.share_nothing();
        for_each_contender(&pools, size, 2, &mut pairs);
    }

    c.final_summary();
    glibc_pinned::glibc_pinned();
    if bench_mode {
        report::report(start.elapsed());
    }
}
