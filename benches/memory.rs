//! Memory the pool keeps beyond what its callers hold (a plain script, not
//! criterion), for `pagepool_default` (guard pages, call-site tracking,
//! `DebugLevel::Standard`, metrics on, no recorder) and `pagepool_bare` (all
//! of that off), each case in a fresh process of this binary:
//!
//! - **burst**: allocate 1 GiB of buffers of mixed sizes, 4 KiB to 1 MiB
//!   (log-uniform, from a seeded splitmix64), writing one byte per 4 KiB
//!   page of each; keep every 10th, drop the rest, `trim()`, then read the
//!   process's RSS (`/proc/self/statm`). Printed: RSS before the pool was
//!   built (the fixed part: binary, libraries, the pool's threads), how
//!   long `trim()` took, what it unmapped and what it discarded
//!   (`PoolStats::discarded_bytes`: free slots' pages in slabs still
//!   mapped), RSS after, the live bytes
//!   (the sizes asked for), rounded up to whole pages, and the pool's
//!   `bytes_in_use` (sizes rounded up to their class), the slot metadata
//!   (64 bytes a mapped slot), and the overhead `RSS after − RSS before −
//!   live`, in bytes and as % of live.
//! - **per slot** (first, on the fresh pool): 100,000 live small buffers (`allocate_buffer(256)`) and
//!   100,000 live 4 KiB page buffers, every byte written: RSS and virtual
//!   size growth per buffer, beside its payload (the class size).
//!
//! A slot's own metadata is one 64-byte `Slot` (asserted in
//! `src/mem/slot.rs`); the per-slot figures show what else a live buffer
//! costs (slab headers, free-list and tracking entries, guard pages'
//! page-table share, class rounding).
//!
//! ```text
//! cargo bench -p pagepool-benches --bench memory
//! ```
//!
//! Without `--bench` (`cargo test --benches`) it runs a 16 MiB burst and
//! 1,000 buffers per kind, and prints nothing.

#[path = "support/pools.rs"]
mod pools;

use std::hint::black_box;

use pagepool::{BufferPool, PageBuffer};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// One buffer in this many stays live after the burst.
const KEEP_EVERY: usize = 10;

/// Resident and virtual bytes of this process, from `/proc/self/statm`.
fn statm() -> (usize, usize) {
    let text = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<usize>().expect("a number"));
    let size = fields.next().expect("size");
    let resident = fields.next().expect("resident");
    (
        resident * pagepool::page_size(),
        size * pagepool::page_size(),
    )
}

/// splitmix64: a seeded, reproducible stream of sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A size between 4 KiB and 1 MiB, log-uniform.
    fn size(&mut self) -> usize {
        let octave = 12 + (self.next() % 8) as u32; // 4 KiB ..= 512 KiB
        let low = 1usize << octave;
        (low + (self.next() as usize % (low + 1))).min(MIB)
    }
}

/// Writes one byte per 4 KiB page.
fn touch(buf: &mut PageBuffer, size: usize) {
    let bytes = &mut buf.as_max_slice_mut()[..size];
    for i in (0..size).step_by(4 * KIB) {
        bytes[i] = 1;
    }
    black_box(bytes);
}

fn mib(bytes: f64) -> String {
    format!("{:.1}", bytes / MIB as f64)
}

fn pools() -> [(&'static str, BufferPool); 2] {
    [
        ("pagepool_default", pools::default_pool("memory_default")),
        ("pagepool_bare", pools::bare_pool("memory_bare")),
    ]
}

/// The burst: returns the row of the table.
fn burst(name: &str, pool: &BufferPool, total: usize) -> String {
    let (before, _) = statm();
    let mut rng = Rng(0x5eed_2026);
    let mut held = Vec::new();
    let mut allocated = 0;
    while allocated < total {
        let size = rng.size();
        let mut buf = pool.allocate_page_size_buffer(size).expect("allocation");
        touch(&mut buf, size);
        held.push((size, buf));
        allocated += size;
    }
    let (peak, _) = statm();
    let count = held.len();
    let kept: Vec<(usize, PageBuffer)> = held
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % KEEP_EVERY == 0)
        .map(|(_, b)| b)
        .collect();
    let trim_started = std::time::Instant::now();
    let trimmed = pool.trim();
    let trim_took = trim_started.elapsed();
    let (after, _) = statm();
    let live: usize = kept.iter().map(|(size, _)| size).sum();
    let page = pagepool::page_size();
    let live_pages: usize = kept
        .iter()
        .map(|(size, _)| size.next_multiple_of(page))
        .sum();
    let stats = pool.stats();
    let slots: usize = pool
        .class_stats()
        .iter()
        .map(|c| c.buffers_in_use + c.buffers_cached + c.buffers_quarantined)
        .sum();
    let overhead = after as f64 - before as f64 - live as f64;
    drop(kept);
    pool.trim();
    format!(
        "| {name} | {count} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} % |",
        mib(allocated as f64),
        mib(before as f64),
        mib(peak as f64),
        trim_took.as_secs_f64() * 1e3,
        mib(trimmed as f64),
        mib(stats.discarded_bytes as f64),
        mib(after as f64),
        mib(live as f64),
        mib(live_pages as f64),
        mib(stats.bytes_in_use as f64),
        mib((slots * 64) as f64),
        mib(overhead),
        100.0 * overhead / live as f64,
    )
}

/// `n` live buffers from `alloc`, every byte written: the row of the table.
fn per_slot(
    name: &str,
    what: &str,
    pool: &BufferPool,
    n: usize,
    alloc: impl Fn(&BufferPool) -> PageBuffer,
) -> String {
    let (rss0, vm0) = statm();
    let held: Vec<PageBuffer> = (0..n)
        .map(|_| {
            let mut buf = alloc(pool);
            buf.as_max_slice_mut().fill(1);
            buf
        })
        .collect();
    let (rss1, vm1) = statm();
    let payload = held[0].max_len();
    drop(held);
    pool.trim();
    let harness = std::mem::size_of::<PageBuffer>() as f64;
    let per = |a: usize, b: usize| (b as f64 - a as f64) / n as f64 - harness;
    format!(
        "| {name} | {what} | {n} | {payload} | {:.0} | {:.0} | {:.0} |",
        per(rss0, rss1),
        per(rss0, rss1) - payload as f64,
        per(vm0, vm1),
    )
}

/// Set in a child process: the one case it runs (`pool/case`).
const CASE_VAR: &str = "PAGEPOOL_MEMORY_CASE";
const CASES: [&str; 3] = ["small", "page4k", "burst"];

/// Runs `pool/case` in this process and prints its row.
fn run_case(which: &str, total: usize, n: usize) {
    let (name, case) = which.split_once('/').expect("pool/case");
    let (_, pool) = pools()
        .into_iter()
        .find(|(p, _)| *p == name)
        .expect("a pool");
    let row = match case {
        "small" => per_slot(name, "allocate_buffer(256)", &pool, n, |p| {
            p.allocate_buffer(256).expect("allocation")
        }),
        "page4k" => per_slot(name, "page buffer 4 KiB", &pool, n, |p| {
            p.allocate_page_size_buffer(4 * KIB).expect("allocation")
        }),
        "burst" => burst(name, &pool, total),
        _ => unreachable!("{case} is not a case"),
    };
    println!("{row}");
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let (total, n) = if bench_mode {
        (1024 * MIB, 100_000)
    } else {
        (16 * MIB, 1000)
    };
    if let Ok(which) = std::env::var(CASE_VAR) {
        run_case(&which, total, n);
        return;
    }
    // Each case in a fresh process of this binary: memory freed by one case
    // (the pool's metadata goes back to the heap, which keeps it resident)
    // would hide the next one's growth.
    let me = std::env::current_exe().expect("the bench binary's path");
    let mut rows = std::collections::BTreeMap::new();
    for (name, _) in pools() {
        for case in CASES {
            let out = std::process::Command::new(&me)
                .args(std::env::args_os().skip(1))
                .env(CASE_VAR, format!("{name}/{case}"))
                .output()
                .expect("start a case");
            assert!(out.status.success(), "{name}/{case} failed: {out:?}");
            let row = String::from_utf8(out.stdout).expect("utf-8");
            rows.entry(case).or_insert_with(Vec::new).push(row);
        }
    }
    if !bench_mode {
        return;
    }
    println!(
        "\n## memory: a burst of {} MiB, 4 KiB–1 MiB, every {KEEP_EVERY}th kept, then trim() \
         (MiB unless said; each row a fresh process)\n",
        total / MIB
    );
    println!(
        "| pool | buffers | allocated | RSS before | RSS at peak | trim (ms) | trim unmapped | trim discarded \
         | RSS after | live (asked) | live, whole pages | bytes_in_use (classes) \
         | slot metadata | overhead = after − before − live | of live |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    print!("{}", rows["burst"].concat());
    println!(
        "\n## memory per live buffer ({n} live, every byte written; bytes per buffer; each row a \
         fresh process; the harness's own `Vec<PageBuffer>` ({} bytes a buffer) subtracted)\n\n\
         One slot's metadata: 64 bytes (`size_of::<Slot>() == 64`, asserted in src/mem/slot.rs).\n",
        std::mem::size_of::<PageBuffer>()
    );
    println!("| pool | buffer | live | payload (max_len) | RSS per buffer | RSS − payload | virtual per buffer |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    print!("{}", rows["small"].concat());
    print!("{}", rows["page4k"].concat());
}
