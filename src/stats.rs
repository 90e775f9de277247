//! Counters and the snapshots built from them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// A snapshot of one pool's state, from [`BufferPool::stats`](crate::BufferPool::stats).
///
/// Each field is read atomically, but not all at one instant: while other
/// threads allocate, the fields may disagree by the few operations that ran
/// during the read. Once the pool is quiet they agree exactly:
/// `allocations == hits + misses` and
/// `buffers_in_use == allocations - releases`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Buffers handed out and not yet dropped.
    pub buffers_in_use: usize,
    /// Slot bytes pinned by those buffers (whole slots, not `max_len`).
    pub bytes_in_use: usize,
    /// Free slots ready for reuse without a system call.
    pub buffers_cached: usize,
    /// Slot bytes of those free slots.
    pub bytes_cached: usize,
    /// Released slots held inaccessible in quarantine (neither in use nor
    /// cached).
    pub buffers_quarantined: usize,
    /// Every byte mapped, guard pages included; never above `bytes_limit`.
    pub bytes_reserved: usize,
    /// The cap on `bytes_reserved`, `None` when unlimited.
    pub bytes_limit: Option<usize>,
    /// Mapped slabs.
    pub slabs: usize,
    /// Successful allocations (`hits + misses`).
    pub allocations: u64,
    /// Allocations served from a free slot.
    pub hits: u64,
    /// Allocations that had to map a new slab.
    pub misses: u64,
    /// Allocations refused with [`Error::Exhausted`](crate::Error::Exhausted).
    pub exhausted: u64,
    /// Allocations refused with [`Error::Os`](crate::Error::Os).
    pub os_errors: u64,
    /// Requests refused as bad input (`ZeroSize`, `TooLarge`).
    pub rejected: u64,
    /// Buffers returned to the pool.
    pub releases: u64,
    /// Bytes given back to the OS by [`trim`](crate::BufferPool::trim), in all.
    pub trimmed_bytes: u64,
    /// Bytes given back to the OS by decay (idle slabs past
    /// [`PoolBuilder::decay`](crate::PoolBuilder::decay)), in all.
    pub decayed_bytes: u64,
    /// Bytes of free slots whose pages trim and decay gave back to the OS
    /// while their slabs stayed mapped (a slab with a buffer in use keeps
    /// its mapping; its free page slots read zeros afterwards), in all. Not
    /// in `trimmed_bytes`, `decayed_bytes` or what `trim` returns: those
    /// are unmapped bytes, which leave `bytes_reserved`; these stay in it.
    pub discarded_bytes: u64,
    /// Slots served without one of their guard pages because the guard budget
    /// ran out (a canary watches their edges instead). Zero without guards.
    pub unguarded_slots: usize,
    /// Corruptions found so far (damaged canaries and poison), all kinds.
    pub corruptions: u64,
    /// Outstanding buffers older than the leak age threshold, as of the last
    /// scan (the metrics publisher's, or [`BufferPool::leak_suspects`](crate::BufferPool::leak_suspects)).
    pub leak_suspects: usize,
    /// Tasks and threads waiting for room now (async and `_timeout` waits).
    pub waiting: usize,
    /// Live [`Quota`](crate::Quota)s of the pool (handles, or buffers of one).
    pub quotas: usize,
    /// Slot bytes held by buffers allocated through quotas, all quotas.
    pub bytes_in_quotas: usize,
    /// Allocations refused with [`Error::QuotaExceeded`](crate::Error::QuotaExceeded), all quotas.
    pub quota_refusals: u64,
    /// The most `bytes_in_use` seen since the pool was built or
    /// [`reset_peaks`](crate::BufferPool::reset_peaks): sampled by every
    /// snapshot (each publish tick, each `stats()`) and after each slab
    /// mapped, so a burst between two samples that maps no slab can be
    /// missed.
    pub peak_bytes_in_use: usize,
    /// The most `bytes_reserved` since the pool was built or
    /// [`reset_peaks`](crate::BufferPool::reset_peaks): exact (raised
    /// wherever a slab is mapped).
    pub peak_bytes_reserved: usize,
    /// Finished waits for room under the cap, by how they ended.
    pub waits: WaitStats,
}

/// Finished waits for room under the pool's cap (async and `_timeout`
/// allocations that could not be served at once), in
/// [`PoolStats::waits`]. Waits still going on are
/// [`PoolStats::waiting`]. A quota's allocation is counted here once it
/// waits at the pool; its wait at the quota's own cap is not (the quota's
/// refusals are [`PoolStats::quota_refusals`]).
///
/// ```
/// let pool = pagepool::BufferPool::new();
/// let w = pool.stats().waits;
/// assert_eq!(w.granted + w.timed_out + w.cancelled + w.failed, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitStats {
    /// Waits that got their buffer.
    pub granted: u64,
    /// `_timeout` waits whose time ran out.
    pub timed_out: u64,
    /// Async waits whose future was dropped before it resolved.
    pub cancelled: u64,
    /// Waits ended by an error: the pool closed, or the OS refused.
    pub failed: u64,
    /// Time spent waiting by all of them together.
    pub waited: Duration,
}

/// How a wait for room ended: the `outcome` label of `pagepool_waits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    Granted,
    TimedOut,
    Cancelled,
    Failed,
}

impl WaitOutcome {
    /// Every outcome, in label order.
    pub(crate) const ALL: [WaitOutcome; 4] =
        [Self::Granted, Self::TimedOut, Self::Cancelled, Self::Failed];

    /// The `outcome` label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WaitOutcome::Granted => "granted",
            WaitOutcome::TimedOut => "timed_out",
            WaitOutcome::Cancelled => "cancelled",
            WaitOutcome::Failed => "failed",
        }
    }
}

/// The counters behind [`WaitStats`], touched only when a wait ends.
#[derive(Debug, Default)]
pub(crate) struct WaitCounters {
    /// By [`WaitOutcome`], in `ALL`'s order.
    ended: [AtomicU64; 4],
    waited_nanos: AtomicU64,
}

impl WaitCounters {
    /// Counts one wait that ended `outcome` after `waited`.
    pub(crate) fn count(&self, outcome: WaitOutcome, waited: Duration) {
        self.ended[outcome as usize].fetch_add(1, Relaxed);
        let nanos = waited.as_nanos().min(u64::MAX as u128) as u64;
        self.waited_nanos.fetch_add(nanos, Relaxed);
    }

    /// A snapshot.
    pub(crate) fn snapshot(&self) -> WaitStats {
        let [granted, timed_out, cancelled, failed] =
            self.ended.each_ref().map(|c| c.load(Relaxed));
        WaitStats {
            granted,
            timed_out,
            cancelled,
            failed,
            waited: Duration::from_nanos(self.waited_nanos.load(Relaxed)),
        }
    }
}

/// A snapshot of one size class, from [`BufferPool::class_stats`](crate::BufferPool::class_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassStats {
    /// Bytes in one slot of this class (whole pages).
    pub slot_bytes: usize,
    /// Buffers of this class handed out and not yet dropped.
    pub buffers_in_use: usize,
    /// Free slots of this class.
    pub buffers_cached: usize,
    /// Slots of this class in quarantine.
    pub buffers_quarantined: usize,
    /// Mapped slabs of this class.
    pub slabs: usize,
    /// Successful allocations (`hits + misses`).
    pub allocations: u64,
    /// Allocations served from a free slot.
    pub hits: u64,
    /// Allocations that mapped a new slab.
    pub misses: u64,
    /// Allocations refused with `Exhausted`.
    pub exhausted: u64,
    /// Allocations refused with `Os`.
    pub os_errors: u64,
    /// Buffers returned.
    pub releases: u64,
}

/// The live counters of one size class.
///
/// The hot path touches `hits` (allocate) and `releases` (release) only;
/// everything else changes on the slow path under the pool's slab lock.
#[derive(Debug, Default)]
pub(crate) struct ClassCounters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) exhausted: AtomicU64,
    pub(crate) os_errors: AtomicU64,
    pub(crate) releases: AtomicU64,
    /// Slots in mapped slabs of this class (changed under the slab lock).
    pub(crate) slots: AtomicUsize,
    /// Mapped slabs of this class (changed under the slab lock).
    pub(crate) slabs: AtomicUsize,
    /// Slots of this class in quarantine.
    pub(crate) quarantined: AtomicUsize,
}

impl ClassCounters {
    /// Reads the counters into a snapshot, adding the hits and releases
    /// that thread caches counted.
    pub(crate) fn snapshot(
        &self,
        slot_bytes: usize,
        cached_hits: u64,
        cached_releases: u64,
    ) -> ClassStats {
        // Relaxed loads of different counters are not ordered with other
        // threads' increments: a racing read can see a release before its
        // allocation, so `in_use` saturates at zero (and shutdown, which must
        // not act on such a read, compares the raw totals instead).
        let releases = self.releases.load(Relaxed) + cached_releases;
        let hits = self.hits.load(Relaxed) + cached_hits;
        let misses = self.misses.load(Relaxed);
        let allocations = hits + misses;
        let in_use = allocations.saturating_sub(releases) as usize;
        let slots = self.slots.load(Relaxed);
        let quarantined = self.quarantined.load(Relaxed);
        ClassStats {
            slot_bytes,
            buffers_in_use: in_use,
            buffers_cached: slots.saturating_sub(in_use + quarantined),
            buffers_quarantined: quarantined,
            slabs: self.slabs.load(Relaxed),
            allocations,
            hits,
            misses,
            exhausted: self.exhausted.load(Relaxed),
            os_errors: self.os_errors.load(Relaxed),
            releases,
        }
    }
}

/// One thread's counters for one pool, by class. Only the owning thread
/// writes them (a load and a store, no locked instruction); `stats()` adds
/// them up through the pool's registry of them.
#[derive(Debug)]
pub(crate) struct ThreadCounters {
    pub(crate) classes: Box<[ThreadClassCounters]>,
}

/// A thread's hits and releases in one class.
#[derive(Debug, Default)]
pub(crate) struct ThreadClassCounters {
    pub(crate) hits: AtomicU64,
    pub(crate) releases: AtomicU64,
}

impl ThreadCounters {
    /// Zeroed counters for `classes` classes.
    pub(crate) fn new(classes: usize) -> Self {
        ThreadCounters {
            classes: (0..classes)
                .map(|_| ThreadClassCounters::default())
                .collect(),
        }
    }
}

/// Adds one to a counter only the calling thread writes.
#[inline(always)]
pub(crate) fn bump_own(c: &AtomicU64) {
    c.store(c.load(Relaxed) + 1, Relaxed);
}

/// Which check found damaged memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The canary after `max_len` (in the slot) was overwritten.
    SlackCanary,
    /// The canary standing in for a missing guard page, or a red zone
    /// between two small (packed) slots, was overwritten.
    EdgeCanary,
    /// A released, poisoned buffer was written before it was handed out again.
    Poison,
}

impl CorruptionKind {
    /// Every kind, in the order of `pagepool_corruptions_total`'s label values.
    pub const ALL: [CorruptionKind; 3] = [Self::SlackCanary, Self::EdgeCanary, Self::Poison];

    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CorruptionKind::SlackCanary => "slack_canary",
            CorruptionKind::EdgeCanary => "edge_canary",
            CorruptionKind::Poison => "poison",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Corruptions found, by [`CorruptionKind::index`].
#[derive(Debug, Default)]
pub(crate) struct CorruptionCounters([AtomicU64; 3]);

impl CorruptionCounters {
    /// Counts one corruption of `kind`.
    pub(crate) fn count(&self, kind: CorruptionKind) {
        self.0[kind.index()].fetch_add(1, Relaxed);
    }

    /// The counts, by [`CorruptionKind::index`].
    pub(crate) fn snapshot(&self) -> [u64; 3] {
        self.0.each_ref().map(|c| c.load(Relaxed))
    }
}

/// Pool-wide counters beside the per-class ones.
#[derive(Debug, Default)]
pub(crate) struct PoolCounters {
    /// Bytes mapped (changed under the slab lock).
    pub(crate) reserved: AtomicUsize,
    /// Bytes unmapped by trimming, in all.
    pub(crate) trimmed: AtomicU64,
    /// Bytes unmapped by decay, in all.
    pub(crate) decayed: AtomicU64,
    /// Bytes of free slots' pages discarded by trim and decay, in all.
    pub(crate) discarded: AtomicU64,
    /// Slots missing a guard page, in mapped slabs.
    pub(crate) unguarded: AtomicUsize,
    /// `ZeroSize` and `TooLarge` refusals.
    pub(crate) rejected: AtomicU64,
    /// Leak suspects at the last scan.
    pub(crate) leak_suspects: AtomicUsize,
    /// Live quota accounts.
    pub(crate) quotas: AtomicUsize,
    /// Slot bytes charged to quotas, all of them.
    pub(crate) quota_bytes: AtomicUsize,
    /// `QuotaExceeded` refusals, all quotas.
    pub(crate) quota_refusals: AtomicU64,
    /// The high-water mark of `reserved` (raised under the slab lock).
    pub(crate) peak_reserved: AtomicUsize,
    /// The high-water mark of bytes in use, as sampled.
    pub(crate) peak_in_use: AtomicUsize,
    /// Finished waits for room.
    pub(crate) waits: WaitCounters,
}

/// Adds up class snapshots and pool counters.
pub(crate) fn total(
    classes: impl Iterator<Item = ClassStats>,
    pool: &PoolCounters,
    corruptions: [u64; 3],
    limit: Option<usize>,
) -> PoolStats {
    let mut s = PoolStats {
        bytes_reserved: pool.reserved.load(Relaxed),
        bytes_limit: limit,
        trimmed_bytes: pool.trimmed.load(Relaxed),
        decayed_bytes: pool.decayed.load(Relaxed),
        discarded_bytes: pool.discarded.load(Relaxed),
        unguarded_slots: pool.unguarded.load(Relaxed),
        rejected: pool.rejected.load(Relaxed),
        corruptions: corruptions.iter().sum(),
        leak_suspects: pool.leak_suspects.load(Relaxed),
        quotas: pool.quotas.load(Relaxed),
        bytes_in_quotas: pool.quota_bytes.load(Relaxed),
        quota_refusals: pool.quota_refusals.load(Relaxed),
        waits: pool.waits.snapshot(),
        ..PoolStats::default()
    };
    for c in classes {
        s.buffers_in_use += c.buffers_in_use;
        s.bytes_in_use += c.buffers_in_use * c.slot_bytes;
        s.buffers_cached += c.buffers_cached;
        s.bytes_cached += c.buffers_cached * c.slot_bytes;
        s.buffers_quarantined += c.buffers_quarantined;
        s.slabs += c.slabs;
        s.allocations += c.allocations;
        s.hits += c.hits;
        s.misses += c.misses;
        s.exhausted += c.exhausted;
        s.os_errors += c.os_errors;
        s.releases += c.releases;
    }
    s.peak_bytes_in_use = pool
        .peak_in_use
        .fetch_max(s.bytes_in_use, Relaxed)
        .max(s.bytes_in_use);
    s.peak_bytes_reserved = pool.peak_reserved.load(Relaxed).max(s.bytes_reserved);
    s
}
