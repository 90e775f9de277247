//! Producer → consumers, the media server's pattern: one thread allocates
//! batches of 64 buffers, stamps each (its id in the first and the last 8
//! bytes), and hands each batch, a `Vec` of 64, to one of two consumer
//! threads in turn over a bounded channel (`DEPTH` batches deep each); the
//! consumer checks every stamp and releases the batch. Time end to end
//! (from the first allocation to both consumers having released the last
//! batch), per buffer, at 4 KiB and 64 KiB.
//!
//! | contender | a buffer is |
//! |---|---|
//! | `pagepool_default` | `allocate_page_size_buffer` with the defaults (guard pages, call-site tracking, `DebugLevel::Standard`, metrics), Prometheus recorder installed |
//! | `pagepool_bare` | the same with guard pages, checks, leak tracking and metrics off |
//! | `mimalloc` | `mimalloc::MiMalloc` called as a value through `GlobalAlloc`, 4096-aligned (not the global allocator) |
//! | `handoff_only` | no buffer: the id itself, a `u64`, in the same batches over the same channels, checked the same way |
//!
//! A contender's pool share is its total minus `handoff_only`'s: the
//! allocation and release, and the cache lines the stamps touch in the
//! buffers (the `u64`s travel inside the batch's own `Vec`). Each contender
//! runs `ROUNDS` times, the order rotated every round; the table gives the
//! median and the range, and `pagepool ÷ mimalloc` (totals, and shares).
//!
//! ```text
//! cargo bench -p pagepool-benches --bench handoff
//! ```
//!
//! Without `--bench` (`cargo test --benches`) it runs a few batches of each
//! contender, stamps checked, and prints nothing.

#[path = "support/pools.rs"]
mod pools;

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;
use pagepool::{BufferPool, PageBuffer};

/// Buffers per batch.
const BATCH: usize = 64;
/// Batches each consumer's channel holds. At 2, a consumer drained its
/// channel and parked on nearly every batch, and the wake-ups (about 12 µs a
/// batch on the 2-core VM, three threads on two cores) made the hand-off
/// alone 200–250 ns a buffer, hiding the allocators; at 16 the producer
/// runs ahead and `handoff_only` is 30–40 ns.
const DEPTH: usize = 16;
/// Batches per measured round.
const BATCHES: u64 = 10_000;
/// Rounds per contender and size.
const ROUNDS: usize = 7;
const SIZES: [(&str, usize); 2] = [("4KiB", 4096), ("64KiB", 65_536)];
const CONTENDERS: [&str; 4] = [
    "pagepool_default",
    "pagepool_bare",
    "mimalloc",
    "handoff_only",
];

/// A buffer that carries its id where a consumer can check it.
trait Stamped: Send {
    fn id(&self) -> u64;
}

/// Writes `id` at both ends of `bytes`.
fn stamp(bytes: &mut [u8], id: u64) {
    let end = bytes.len() - 8;
    bytes[..8].copy_from_slice(&id.to_ne_bytes());
    bytes[end..].copy_from_slice(&id.to_ne_bytes());
}

/// The id at both ends of `bytes`; panics if they differ.
fn read_stamp(bytes: &[u8]) -> u64 {
    let word = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let (head, tail) = (word(0), word(bytes.len() - 8));
    assert_eq!(head, tail, "torn stamp");
    head
}

impl Stamped for PageBuffer {
    fn id(&self) -> u64 {
        read_stamp(self.as_slice())
    }
}

impl Stamped for u64 {
    fn id(&self) -> u64 {
        *self
    }
}

/// A 4096-aligned block from mimalloc, freed on drop.
struct MiBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the block is owned by this value alone; mimalloc frees from any
// thread.
unsafe impl Send for MiBuf {}

impl MiBuf {
    fn new(size: usize, id: u64) -> Self {
        let layout = Layout::from_size_align(size, 4096).expect("valid layout");
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { MiMalloc.alloc(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        // SAFETY: both words lie inside the fresh block of `size >= 8`
        // bytes we own; unaligned writes need no alignment.
        unsafe {
            ptr.as_ptr().cast::<u64>().write_unaligned(id);
            ptr.as_ptr().add(size - 8).cast::<u64>().write_unaligned(id);
        }
        MiBuf { ptr, layout }
    }
}

impl Stamped for MiBuf {
    fn id(&self) -> u64 {
        let p = self.ptr.as_ptr();
        // SAFETY: `new` wrote both words, inside the block we own.
        let (head, tail) = unsafe {
            (
                p.cast::<u64>().read_unaligned(),
                p.add(self.layout.size() - 8).cast::<u64>().read_unaligned(),
            )
        };
        assert_eq!(head, tail, "torn stamp");
        head
    }
}

impl Drop for MiBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by `MiMalloc` with `layout`, not freed before.
        unsafe { MiMalloc.dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// A pool buffer of `size` bytes, stamped with `id`.
fn pooled(pool: &BufferPool, size: usize, id: u64) -> PageBuffer {
    let mut buf = pool
        .allocate_page_size_buffer(size)
        .expect("pool allocation");
    buf.set_len(size).expect("size within max_len");
    stamp(buf.as_mut_slice(), id);
    buf
}

/// A consumer: checks that each batch holds `first..first + BATCH`, drops
/// it; an empty batch asks for an acknowledgement.
fn consume<B: Stamped>(rx: Receiver<(u64, Vec<B>)>, ack: SyncSender<()>) {
    while let Ok((first, batch)) = rx.recv() {
        if batch.is_empty() {
            if ack.send(()).is_err() {
                break;
            }
            continue;
        }
        for (i, buf) in batch.iter().enumerate() {
            assert_eq!(buf.id(), first + i as u64, "wrong stamp");
        }
        drop(batch);
    }
}

/// `batches` batches made by `make(id)`, handed to two consumers in turn;
/// the time until both have released the last one.
fn run<B: Stamped>(batches: u64, make: impl Fn(u64) -> B + Sync) -> Duration {
    std::thread::scope(|s| {
        let mut txs = Vec::new();
        let (ack_tx, ack_rx) = sync_channel::<()>(2);
        for _ in 0..2 {
            let (tx, rx) = sync_channel::<(u64, Vec<B>)>(DEPTH);
            let ack = ack_tx.clone();
            s.spawn(move || consume(rx, ack));
            txs.push(tx);
        }
        let start = Instant::now();
        for k in 0..batches {
            let first = k * BATCH as u64;
            let batch: Vec<B> = (first..first + BATCH as u64).map(&make).collect();
            txs[(k % 2) as usize]
                .send((first, batch))
                .expect("consumer alive");
        }
        for tx in &txs {
            tx.send((0, Vec::new())).expect("consumer alive");
        }
        for _ in 0..2 {
            ack_rx.recv().expect("consumer alive");
        }
        start.elapsed()
    })
}

/// One round of contender `name` at `size`, ns per buffer.
fn round(name: &str, pools: &[&BufferPool; 2], size: usize, batches: u64) -> f64 {
    let t = match name {
        "pagepool_default" => run(batches, |id| pooled(pools[0], size, id)),
        "pagepool_bare" => run(batches, |id| pooled(pools[1], size, id)),
        "mimalloc" => run(batches, |id| MiBuf::new(size, id)),
        "handoff_only" => run(batches, |id| id),
        _ => unreachable!("{name} is not a contender"),
    };
    t.as_nanos() as f64 / (batches * BATCH as u64) as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    // As in compare.rs: the recorder before the pools, its upkeep on a
    // thread of its own.
    let _prometheus = pools::install_prometheus();
    let default = pools::default_pool("handoff_default");
    let bare = pools::bare_pool("handoff_bare");
    let pools = [&default, &bare];
    if !bench_mode {
        for (_, size) in SIZES {
            for name in CONTENDERS {
                round(name, &pools, size, 4);
            }
        }
        return;
    }

    println!(
        "\n## handoff: producer → 2 consumers, batches of {BATCH}, ns per buffer end to end \
         (median of {ROUNDS} rounds of {BATCHES} batches; min–max)\n"
    );
    println!("| size | contender | ns/buffer | min–max | pool share (− handoff_only) |");
    println!("|---|---|---:|---:|---:|");
    for (label, size) in SIZES {
        // Warm every contender (slabs mapped, mimalloc's pages in use).
        for name in CONTENDERS {
            round(name, &pools, size, BATCHES / 10);
        }
        let mut samples = vec![Vec::new(); CONTENDERS.len()];
        for r in 0..ROUNDS {
            for i in 0..CONTENDERS.len() {
                let c = (i + r) % CONTENDERS.len();
                samples[c].push(round(CONTENDERS[c], &pools, size, BATCHES));
            }
        }
        let ranges: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| {
                (
                    s.iter().copied().fold(f64::MAX, f64::min),
                    s.iter().copied().fold(0.0, f64::max),
                )
            })
            .collect();
        let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
        let floor = medians[3];
        for (c, name) in CONTENDERS.iter().enumerate() {
            let share = if c == 3 {
                "—".to_owned()
            } else {
                format!("{:.1}", medians[c] - floor)
            };
            println!(
                "| {label} | {name} | {:.1} | {:.1}–{:.1} | {share} |",
                medians[c], ranges[c].0, ranges[c].1
            );
        }
        let (pool, mi) = (medians[0], medians[2]);
        println!(
            "| {label} | **pagepool_default ÷ mimalloc** | total {:.2}x (target ≤ 0.50x) | | share {:.2}x |",
            pool / mi,
            (pool - floor) / (mi - floor)
        );
    }
}
