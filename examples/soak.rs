//! Soak test: many threads allocate, stamp, hand over, verify and release
//! pooled buffers as fast as they can, and every byte and every hand-out is
//! checked.
//!
//! ```text
//! cargo run --release --example soak -- --threads N --ops M --seconds S --max-bytes B
//! ```
//!
//! Each of `--threads` workers (default: the available parallelism) runs a
//! random mix of operations until `--ops` operations have run in all
//! (default 10,000,000; 0 = no limit) or `--seconds` have passed (default: no
//! limit):
//!
//! - **allocate** a random size from 1 byte to `--max-size` (default 4 MiB),
//!   skewed small: 90% up to 16 KiB, 9% up to 256 KiB, 1% up to the maximum,
//!   each log-uniform; **stamp** every byte of it (`max_len` bytes, a word at
//!   a time, with a pattern unique to the buffer and the offset) and register
//!   its slot's address range in a global live-range map, which reports a
//!   **double hand-out** if it overlaps the slot of any live buffer;
//! - **release** one of its buffers, after verifying every byte of it
//!   (a mismatch is a **corruption**) and removing it from the map;
//! - **hand over** one of its buffers to the next worker (a ring of bounded
//!   channels), which verifies and releases it, or keeps it for a while and
//!   hands it on again.
//!
//! `Exhausted` (the byte cap, `--max-bytes`, default 512 MiB) is counted and
//! the worker releases a buffer instead; any other error is a failure. At the
//! end every worker releases what it holds and is joined (so its thread
//! cache flushes), and the pool must show nothing outstanding
//! (`buffers_in_use == 0`, `allocations == releases`, the counts agree with
//! ours), `bytes_reserved <= max_bytes`, no corruption found by the pool's
//! own canaries, and after `trim()` nothing reserved. It prints the figures
//! and exits with 1 on any failure (2 for bad arguments).
//!
//! ```text
//! --threads N            workers (default: available parallelism)
//! --ops M                operations in all, 0 = unlimited (default 10000000)
//! --seconds S            stop after S seconds (default: no limit)
//! --max-bytes B          the pool's byte cap (default 512MiB; K/M/G suffixes)
//! --max-size B           largest buffer (default 4MiB)
//! --guard-mechanism M    auto | mprotect | off (default auto)
//! --debug L              off | standard | paranoid (default standard)
//! --no-thread-cache      turn the pool's thread caches off
//! --seed X               random seed (default 1)
//! ```
//!
//! `.ci/valgrind` runs a short version under valgrind; `tests/soak.rs` runs
//! the same [`run`] for about 200,000 operations.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use pagepool::{BufferPool, DebugLevel, Error, GuardMechanism, PageBuffer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub threads: usize,
    /// Operations in all (allocations, releases and hand-overs); 0: no limit.
    pub ops: u64,
    pub seconds: Option<f64>,
    pub max_bytes: usize,
    pub max_size: usize,
    /// `None`: no guard pages.
    pub guards: Option<GuardMechanism>,
    pub debug: DebugLevel,
    pub thread_cache: bool,
    pub seed: u64,
    /// Print progress every few seconds.
    pub progress: bool,
}

impl Default for SoakConfig {
    fn default() -> Self {
        SoakConfig {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            ops: 10_000_000,
            seconds: None,
            max_bytes: 512 << 20,
            max_size: 4 << 20,
            guards: Some(GuardMechanism::Auto),
            debug: DebugLevel::Standard,
            thread_cache: true,
            seed: 1,
            progress: false,
        }
    }
}

/// What a soak found.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub elapsed: Duration,
    /// Operations run (allocations, releases, hand-overs).
    pub ops: u64,
    pub allocations: u64,
    pub releases: u64,
    pub handed_over: u64,
    /// Buffers whose every byte was verified before release.
    pub checked: u64,
    pub bytes_checked: u64,
    pub corruptions: u64,
    pub double_handouts: u64,
    pub exhausted: u64,
    /// Errors other than `Exhausted` (OS refusals and anything unexpected).
    pub other_errors: u64,
    /// The pool's final state (after every worker was joined) and after trim.
    pub final_stats: Option<pagepool::PoolStats>,
    pub reserved_after_trim: usize,
    /// Whether guard pages went in as `MADV_GUARD_INSTALL` markers
    /// (`pagepool::guard_markers_supported`).
    pub guard_markers: Option<bool>,
    /// Every failed end-of-run check, in words.
    pub failures: Vec<String>,
}

impl SoakReport {
    /// Whether the soak found nothing wrong.
    pub fn ok(&self) -> bool {
        self.corruptions == 0
            && self.double_handouts == 0
            && self.other_errors == 0
            && self.failures.is_empty()
    }

    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for SoakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "soak: {} ops in {:.2?} = {:.0} ops/s",
            self.ops,
            self.elapsed,
            self.ops_per_sec()
        )?;
        writeln!(
            f,
            "soak: allocations {}, releases {}, handed over between threads {}",
            self.allocations, self.releases, self.handed_over
        )?;
        writeln!(
            f,
            "soak: ops checked {} (buffers verified in full before release, {:.1} GiB)",
            self.checked,
            self.bytes_checked as f64 / (1u64 << 30) as f64
        )?;
        writeln!(f, "soak: corruptions {}", self.corruptions)?;
        writeln!(f, "soak: double hand-outs {}", self.double_handouts)?;
        writeln!(f, "soak: exhausted {}", self.exhausted)?;
        writeln!(f, "soak: other errors {}", self.other_errors)?;
        if let Some(s) = &self.final_stats {
            writeln!(
                f,
                "soak: pool at the end: in use {}, reserved {} of {:?}, slabs {}, hits {}, misses {}, trimmed {} B, pool corruptions {}",
                s.buffers_in_use,
                s.bytes_reserved,
                s.bytes_limit,
                s.slabs,
                s.hits,
                s.misses,
                s.trimmed_bytes,
                s.corruptions
            )?;
            writeln!(f, "soak: reserved after trim {}", self.reserved_after_trim)?;
        }
        writeln!(
            f,
            "soak: guard markers (MADV_GUARD_INSTALL) used: {:?}",
            self.guard_markers
        )?;
        for failure in &self.failures {
            writeln!(f, "soak: FAILED: {failure}")?;
        }
        write!(f, "soak: {}", if self.ok() { "OK" } else { "FAILED" })
    }
}

// ---------------------------------------------------------------------------
// Stamps: word `i` of buffer `id` is unique for every (id, i), so a byte from
// another buffer, or from another offset of this one, never passes.

/// Word `i` of the stamp of buffer `id` (`id < 2^40`, `i < 2^24`: buffers up
/// to 128 MiB): distinct before the multiplication by an odd constant, which
/// is a bijection, so distinct after it.
#[inline]
fn stamp_word(id: u64, i: usize) -> u64 {
    ((id << 24) ^ i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a_c3c3_a5a5_3c3c
}

/// Fills `bytes` (8-aligned: every buffer is page-aligned) with `id`'s stamp.
fn stamp(bytes: &mut [u8], id: u64) {
    // SAFETY: any bit pattern is a valid u64 and a valid u8.
    let (pre, words, post) = unsafe { bytes.align_to_mut::<u64>() };
    assert!(pre.is_empty(), "buffers are page-aligned");
    for (i, w) in words.iter_mut().enumerate() {
        *w = stamp_word(id, i);
    }
    let tail = stamp_word(id, words.len()).to_ne_bytes();
    post.copy_from_slice(&tail[..post.len()]);
}

/// The first offset of `bytes` not holding `id`'s stamp.
fn first_mismatch(bytes: &[u8], id: u64) -> Option<usize> {
    // SAFETY: as in `stamp`.
    let (pre, words, post) = unsafe { bytes.align_to::<u64>() };
    assert!(pre.is_empty(), "buffers are page-aligned");
    // A branch-free pass first (vectorises), then find the word.
    let bad = words
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, &w)| acc | (w ^ stamp_word(id, i)));
    if bad != 0 {
        let i = words
            .iter()
            .enumerate()
            .position(|(i, &w)| w != stamp_word(id, i))
            .expect("a differing word");
        let want = stamp_word(id, i).to_ne_bytes();
        let got = words[i].to_ne_bytes();
        return (0..8).find(|&k| got[k] != want[k]).map(|k| i * 8 + k);
    }
    let tail = stamp_word(id, words.len()).to_ne_bytes();
    (0..post.len())
        .find(|&k| post[k] != tail[k])
        .map(|k| words.len() * 8 + k)
}

// ---------------------------------------------------------------------------
// The live-range map.

/// Slots can be up to `max_size` rounded up; shards cover `1 << SHARD_SHIFT`
/// bytes of address space each, and a slot is entered in every shard its
/// range touches, so two overlapping slots always meet in one shard.
const SHARD_SHIFT: u32 = 22;
const SHARDS: usize = 256;

/// Address ranges (`start -> (end, id)`) of every live buffer's slot.
struct LiveRanges {
    shards: Vec<Mutex<BTreeMap<usize, (usize, u64)>>>,
}

impl LiveRanges {
    fn new() -> Self {
        LiveRanges {
            shards: (0..SHARDS).map(|_| Mutex::new(BTreeMap::new())).collect(),
        }
    }

    fn shards_of(start: usize, end: usize) -> impl Iterator<Item = usize> {
        let (first, last) = (start >> SHARD_SHIFT, (end - 1) >> SHARD_SHIFT);
        let mut idx: Vec<usize> = (first..=last).map(|r| r % SHARDS).collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
    }

    /// Enters `start..end` (buffer `id`); returns the live range it
    /// overlaps, if any (a double hand-out). The range is entered anyway.
    fn insert(&self, start: usize, end: usize, id: u64) -> Option<(usize, usize, u64)> {
        let mut clash = None;
        for s in Self::shards_of(start, end) {
            let mut map = self.shards[s].lock().unwrap();
            // Ranges in a shard are disjoint unless a clash was already
            // reported, so only the last one starting before `end` can overlap.
            if let Some((&s0, &(e0, id0))) = map.range(..end).next_back() {
                if e0 > start && clash.is_none() {
                    clash = Some((s0, e0, id0));
                }
            }
            map.insert(start, (end, id));
        }
        clash
    }

    /// Removes buffer `id`'s range; `false` if it was not there.
    fn remove(&self, start: usize, end: usize, id: u64) -> bool {
        let mut ok = true;
        for s in Self::shards_of(start, end) {
            let mut map = self.shards[s].lock().unwrap();
            match map.get(&start) {
                Some(&(e, i)) if e == end && i == id => {
                    map.remove(&start);
                }
                _ => ok = false,
            }
        }
        ok
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

// ---------------------------------------------------------------------------
// The workers.

/// A live buffer and its stamp.
struct Held {
    id: u64,
    buf: PageBuffer,
    slot_len: usize,
}

/// Counters shared by the workers.
#[derive(Default)]
struct Totals {
    ops: AtomicU64,
    allocations: AtomicU64,
    releases: AtomicU64,
    handed_over: AtomicU64,
    checked: AtomicU64,
    bytes_checked: AtomicU64,
    corruptions: AtomicU64,
    double_handouts: AtomicU64,
    exhausted: AtomicU64,
    other_errors: AtomicU64,
}

/// Complaints printed at most this many times each.
const MAX_REPORTS: u64 = 10;

struct Shared<'a> {
    pool: &'a BufferPool,
    live: &'a LiveRanges,
    totals: &'a Totals,
    cfg: &'a SoakConfig,
    /// Operations not yet claimed by a worker (when `cfg.ops > 0`).
    budget: &'a AtomicU64,
    stop: &'a AtomicBool,
    deadline: Option<Instant>,
}

impl Shared<'_> {
    /// Claims up to `n` operations; 0 once the budget or the time is spent.
    fn claim(&self, n: u64) -> u64 {
        if self.stop.load(Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.stop.store(true, Relaxed);
            return 0;
        }
        if self.cfg.ops == 0 {
            return n;
        }
        let mut left = self.budget.load(Relaxed);
        loop {
            if left == 0 {
                return 0;
            }
            let take = left.min(n);
            match self
                .budget
                .compare_exchange_weak(left, left - take, Relaxed, Relaxed)
            {
                Ok(_) => return take,
                Err(now) => left = now,
            }
        }
    }

    /// Verifies every byte of `h`, takes it out of the live map and releases it.
    fn release(&self, h: Held) {
        self.verify(&h);
        let start = h.buf.as_ptr() as usize;
        if !self.live.remove(start, start + h.slot_len, h.id) {
            self.complain(
                &self.totals.double_handouts,
                format!(
                    "buffer {} at {start:#x} was not in the live map at release",
                    h.id
                ),
            );
        }
        drop(h.buf);
        self.totals.releases.fetch_add(1, Relaxed);
    }

    fn verify(&self, h: &Held) {
        let bytes = h.buf.as_max_slice();
        if h.buf.len() != bytes.len() {
            self.complain(
                &self.totals.corruptions,
                format!(
                    "buffer {}: len {} != max_len {}",
                    h.id,
                    h.buf.len(),
                    bytes.len()
                ),
            );
        }
        if let Some(off) = first_mismatch(bytes, h.id) {
            self.complain(
                &self.totals.corruptions,
                format!(
                    "buffer {} ({} bytes at {:p}) lost its stamp at offset {off}",
                    h.id,
                    bytes.len(),
                    bytes.as_ptr()
                ),
            );
        }
        self.totals.checked.fetch_add(1, Relaxed);
        self.totals
            .bytes_checked
            .fetch_add(bytes.len() as u64, Relaxed);
    }

    fn complain(&self, counter: &AtomicU64, what: String) {
        if counter.fetch_add(1, Relaxed) < MAX_REPORTS {
            eprintln!("soak: {what}");
        }
    }
}

/// Mostly small: 90% up to 16 KiB, 9% up to 256 KiB, 1% up to `max`; each
/// log-uniform (so many 1-byte, page-sized and odd sizes).
fn random_size(rng: &mut SmallRng, max: usize) -> usize {
    let roll = rng.random_range(0..100);
    let top = match roll {
        0..90 => 16 << 10,
        90..99 => 256 << 10,
        _ => max,
    }
    .min(max);
    let bits = usize::BITS - top.leading_zeros(); // top < 2^bits
    let e = rng.random_range(0..bits);
    let lo = 1usize << e;
    let hi = ((lo << 1) - 1).min(top);
    rng.random_range(lo..=hi.max(lo))
}

/// Most buffers a worker holds at once.
const MAX_HELD: usize = 48;
/// Depth of each hand-over channel.
const CHANNEL_DEPTH: usize = 32;

fn worker(
    t: usize,
    sh: &Shared<'_>,
    tx: SyncSender<Held>,
    rx: Receiver<Held>,
    start: &Barrier,
) -> Result<(), String> {
    let mut rng = SmallRng::seed_from_u64(sh.cfg.seed ^ (0x9e37_79b9 * (t as u64 + 1)));
    let mut held: Vec<Held> = Vec::new();
    let mut next = 0u64;
    start.wait();
    'run: loop {
        let mut n = sh.claim(256);
        if n == 0 {
            break 'run;
        }
        while n > 0 {
            // Take what the previous worker handed us: keep it (its stamp is
            // verified when it is released or handed on).
            while held.len() < MAX_HELD {
                match rx.try_recv() {
                    Ok(h) => held.push(h),
                    Err(_) => break,
                }
            }
            let roll = rng.random_range(0..100);
            if held.is_empty() || (roll < 50 && held.len() < MAX_HELD) {
                let size = random_size(&mut rng, sh.cfg.max_size);
                match sh.pool.allocate_page_size_buffer(size) {
                    Ok(mut buf) => {
                        let id = ((t as u64) << 32) | next;
                        next += 1;
                        let start = buf.as_ptr() as usize;
                        let slot_len = buf.slot_len();
                        if !start.is_multiple_of(pagepool::page_size())
                            || buf.max_len() != size
                            || slot_len < size
                        {
                            sh.complain(
                                &sh.totals.other_errors,
                                format!("buffer of {size} bytes has the wrong shape: {buf:?}"),
                            );
                        }
                        if let Some((s0, e0, id0)) = sh.live.insert(start, start + slot_len, id) {
                            sh.complain(
                                &sh.totals.double_handouts,
                                format!(
                                    "double hand-out: new buffer {id} at {start:#x}..{:#x} overlaps live buffer {id0} at {s0:#x}..{e0:#x}",
                                    start + slot_len
                                ),
                            );
                        }
                        stamp(buf.as_max_slice_mut(), id);
                        buf.set_len(size).map_err(|e| e.to_string())?;
                        sh.totals.allocations.fetch_add(1, Relaxed);
                        held.push(Held { id, buf, slot_len });
                    }
                    Err(Error::Exhausted { .. }) => {
                        sh.totals.exhausted.fetch_add(1, Relaxed);
                        if !held.is_empty() {
                            // Make room: one more operation.
                            let i = rng.random_range(0..held.len());
                            sh.release(held.swap_remove(i));
                            sh.totals.ops.fetch_add(1, Relaxed);
                        } else {
                            std::thread::yield_now();
                        }
                    }
                    Err(e) => {
                        sh.complain(&sh.totals.other_errors, format!("allocating {size}: {e}"));
                    }
                }
            } else {
                let i = rng.random_range(0..held.len());
                let h = held.swap_remove(i);
                if roll < 85 {
                    sh.release(h);
                } else {
                    sh.verify(&h);
                    match tx.try_send(h) {
                        Ok(()) => {
                            sh.totals.handed_over.fetch_add(1, Relaxed);
                        }
                        Err(TrySendError::Full(h)) | Err(TrySendError::Disconnected(h)) => {
                            sh.release(h)
                        }
                    }
                }
            }
            n -= 1;
            sh.totals.ops.fetch_add(1, Relaxed);
        }
    }
    // Done: no more hand-overs from us; release what we hold and what the
    // previous worker still sends until it is done too.
    drop(tx);
    for h in held {
        sh.release(h);
    }
    for h in rx.iter() {
        sh.release(h);
    }
    Ok(())
}

/// Runs a soak as configured and checks the pool at the end.
pub fn run(cfg: &SoakConfig) -> Result<SoakReport, Error> {
    let threads = cfg.threads.max(1);
    let mut builder = BufferPool::builder()
        .name("soak")
        .max_bytes(cfg.max_bytes)
        .max_buffer_size(cfg.max_size)
        .debug(cfg.debug)
        .thread_cache(cfg.thread_cache);
    builder = match cfg.guards {
        None => builder.guard_pages(false),
        Some(m) => builder.guard_mechanism(m),
    };
    let pool = builder.build()?;
    let live = LiveRanges::new();
    let totals = Totals::default();
    let budget = AtomicU64::new(cfg.ops);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let shared = Shared {
        pool: &pool,
        live: &live,
        totals: &totals,
        cfg,
        budget: &budget,
        stop: &stop,
        deadline: cfg.seconds.map(|s| started + Duration::from_secs_f64(s)),
    };
    let start = Barrier::new(threads);

    // Worker t hands over to worker t + 1 (mod threads).
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..threads)
        .map(|_| mpsc::sync_channel::<Held>(CHANNEL_DEPTH))
        .unzip();
    let mut senders: Vec<Option<SyncSender<Held>>> = senders.into_iter().map(Some).collect();
    senders.rotate_left(1);

    let mut report = SoakReport::default();
    let results: Vec<std::thread::Result<Result<(), String>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = receivers
            .into_iter()
            .zip(senders.iter_mut())
            .enumerate()
            .map(|(t, (rx, tx))| {
                let tx = tx.take().expect("one sender per worker");
                let (shared, start) = (&shared, &start);
                std::thread::Builder::new()
                    .name(format!("soak-{t}"))
                    .spawn_scoped(scope, move || worker(t, shared, tx, rx, start))
                    .expect("spawn a worker")
            })
            .collect();
        let mut last = Instant::now();
        while cfg.progress && !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() >= Duration::from_secs(5) {
                last = Instant::now();
                eprintln!(
                    "soak: {:.0}s: {} ops, {} checked, {} corruptions, {} double hand-outs, {} exhausted",
                    started.elapsed().as_secs_f64(),
                    totals.ops.load(Relaxed),
                    totals.checked.load(Relaxed),
                    totals.corruptions.load(Relaxed),
                    totals.double_handouts.load(Relaxed),
                    totals.exhausted.load(Relaxed),
                );
            }
        }
        // `join` returns once each worker's thread-local destructors ran,
        // which hand its cached slots back to the pool.
        handles.into_iter().map(|h| h.join()).collect()
    });
    report.elapsed = started.elapsed();
    for (t, r) in results.into_iter().enumerate() {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => report.failures.push(format!("worker {t}: {e}")),
            Err(_) => report.failures.push(format!("worker {t} panicked")),
        }
    }
    let load = |c: &AtomicU64| c.load(Relaxed);
    report.ops = load(&totals.ops);
    report.allocations = load(&totals.allocations);
    report.releases = load(&totals.releases);
    report.handed_over = load(&totals.handed_over);
    report.checked = load(&totals.checked);
    report.bytes_checked = load(&totals.bytes_checked);
    report.corruptions = load(&totals.corruptions);
    report.double_handouts = load(&totals.double_handouts);
    report.exhausted = load(&totals.exhausted);
    report.other_errors = load(&totals.other_errors);

    // Nothing outstanding, nothing lost, the cap held.
    let s = pool.stats();
    let mut fail = |what: String| report.failures.push(what);
    if live.len() != 0 {
        fail(format!("{} buffers still in the live map", live.len()));
    }
    if s.buffers_in_use != 0 || s.bytes_in_use != 0 {
        fail(format!(
            "{} buffers ({} bytes) still in use after every worker was joined",
            s.buffers_in_use, s.bytes_in_use
        ));
    }
    if s.allocations != report.allocations || s.releases != report.releases {
        fail(format!(
            "the pool counted {} allocations and {} releases, the workers {} and {}",
            s.allocations, s.releases, report.allocations, report.releases
        ));
    }
    if s.allocations != s.hits + s.misses {
        fail(format!(
            "allocations {} != hits + misses {}",
            s.allocations,
            s.hits + s.misses
        ));
    }
    if s.exhausted != report.exhausted {
        fail(format!(
            "the pool counted {} Exhausted, the workers {}",
            s.exhausted, report.exhausted
        ));
    }
    if s.bytes_reserved > cfg.max_bytes {
        fail(format!(
            "bytes_reserved {} > cap {}",
            s.bytes_reserved, cfg.max_bytes
        ));
    }
    if s.corruptions != 0 {
        fail(format!(
            "the pool's own checks found {} corruptions",
            s.corruptions
        ));
    }
    if s.os_errors != 0 || s.rejected != 0 {
        fail(format!(
            "os_errors {}, rejected {}",
            s.os_errors, s.rejected
        ));
    }
    let freed = pool.trim();
    let after = pool.stats();
    if after.buffers_quarantined > 0 {
        // `trim` does not drain the quarantine (Paranoid, or `quarantine`), so
        // slabs holding quarantined slots stay mapped: reported, not a failure.
        eprintln!(
            "soak: note: {} quarantined slots keep {} bytes in {} slabs mapped after trim",
            after.buffers_quarantined, after.bytes_reserved, after.slabs
        );
    } else if freed != s.bytes_reserved || after.bytes_reserved != 0 || after.slabs != 0 {
        fail(format!(
            "trim gave back {freed} of {} bytes; {} bytes in {} slabs left",
            s.bytes_reserved, after.bytes_reserved, after.slabs
        ));
    }
    report.final_stats = Some(s);
    report.reserved_after_trim = after.bytes_reserved;
    report.guard_markers = pagepool::guard_markers_supported();
    Ok(report)
}

// ---------------------------------------------------------------------------
// The command line.

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (s, 0),
        Some((i, _)) => (
            &s[..i],
            match s[i..].to_ascii_lowercase().as_str() {
                "k" | "kib" | "kb" => 10,
                "m" | "mib" | "mb" => 20,
                "g" | "gib" | "gb" => 30,
                other => return Err(format!("unknown size suffix {other:?}")),
            },
        ),
    };
    let n: usize = num.parse().map_err(|e| format!("bad size {s:?}: {e}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} overflows"))
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<SoakConfig, String> {
    let mut cfg = SoakConfig {
        progress: true,
        ..SoakConfig::default()
    };
    let mut it = args;
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--threads" => cfg.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--ops" => cfg.ops = value()?.parse().map_err(|e| format!("--ops: {e}"))?,
            "--seconds" => {
                let s: f64 = value()?.parse().map_err(|e| format!("--seconds: {e}"))?;
                if !(s > 0.0 && s.is_finite()) {
                    return Err("--seconds must be positive".into());
                }
                cfg.seconds = Some(s);
            }
            "--max-bytes" => cfg.max_bytes = parse_size(&value()?)?,
            "--max-size" => cfg.max_size = parse_size(&value()?)?,
            "--guard-mechanism" => {
                cfg.guards = match value()?.as_str() {
                    "auto" => Some(GuardMechanism::Auto),
                    "mprotect" => Some(GuardMechanism::Mprotect),
                    "off" | "none" => None,
                    other => return Err(format!("--guard-mechanism: unknown {other:?}")),
                }
            }
            "--debug" => {
                cfg.debug = match value()?.as_str() {
                    "off" => DebugLevel::Off,
                    "standard" => DebugLevel::Standard,
                    "paranoid" => DebugLevel::Paranoid,
                    other => return Err(format!("--debug: unknown {other:?}")),
                }
            }
            "--no-thread-cache" => cfg.thread_cache = false,
            "--quiet" => cfg.progress = false,
            "--seed" => cfg.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if cfg.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    if cfg.max_size == 0 {
        return Err("--max-size must be at least 1".into());
    }
    Ok(cfg)
}

const USAGE: &str = "usage: soak [--threads N] [--ops M (0 = unlimited)] [--seconds S] \
[--max-bytes B] [--max-size B] [--guard-mechanism auto|mprotect|off] \
[--debug off|standard|paranoid] [--no-thread-cache] [--seed X] [--quiet]";

fn main() -> ExitCode {
    let cfg = match parse_args(std::env::args().skip(1)) {
        Ok(cfg) => cfg,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("soak: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!(
        "soak: {} threads, {} ops{}, max_bytes {} B, sizes 1 B ..= {} B, guards {:?}, debug {:?}, thread caches {}",
        cfg.threads,
        if cfg.ops == 0 { "unlimited".to_string() } else { cfg.ops.to_string() },
        cfg.seconds.map_or(String::new(), |s| format!(" or {s} s")),
        cfg.max_bytes,
        cfg.max_size,
        cfg.guards,
        cfg.debug,
        if cfg.thread_cache { "on" } else { "off" },
    );
    match run(&cfg) {
        Ok(report) => {
            println!("{report}");
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("soak: cannot build the pool: {e}");
            ExitCode::from(1)
        }
    }
}
