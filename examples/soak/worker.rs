//! The workers: each allocates, stamps, verifies, releases and hands over
//! buffers until the shared budget of operations (or the time) is spent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Barrier;
use std::time::Instant;

use pagepool::{BufferPool, Error, PageBuffer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::live_ranges::LiveRanges;
use super::report::SoakConfig;
use super::stamp::{first_mismatch, stamp};

/// A live buffer and its stamp.
pub struct Held {
    pub id: u64,
    pub buf: PageBuffer,
    pub slot_len: usize,
}

/// Counters shared by the workers.
#[derive(Default)]
pub struct Totals {
    pub ops: AtomicU64,
    pub allocations: AtomicU64,
    pub releases: AtomicU64,
    pub handed_over: AtomicU64,
    pub checked: AtomicU64,
    pub bytes_checked: AtomicU64,
    pub corruptions: AtomicU64,
    pub double_handouts: AtomicU64,
    pub exhausted: AtomicU64,
    pub other_errors: AtomicU64,
}

/// Complaints printed at most this many times each.
const MAX_REPORTS: u64 = 10;

pub struct Shared<'a> {
    pub pool: &'a BufferPool,
    pub live: &'a LiveRanges,
    pub totals: &'a Totals,
    pub cfg: &'a SoakConfig,
    /// Operations not yet claimed by a worker (when `cfg.ops > 0`).
    pub budget: &'a AtomicU64,
    pub stop: &'a AtomicBool,
    pub deadline: Option<Instant>,
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
pub const CHANNEL_DEPTH: usize = 32;

pub fn worker(
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
