//! The pool layer: the shared state behind a `BufferPool`, allocate and
//! release over the layers below.
//!
//! | file | concept |
//! |---|---|
//! | `mod` | `PoolInner`: what one pool is made of, and building it |
//! | `allocate` | taking a slot for a buffer, stamping it, the sampled duties |
//! | `release` | giving a buffer's slot back, with its checks and detours |
//! | `map` | mapping slabs under the cap, trimming idle ones, flushing caches |
//! | `events` | subscribing to a live pool's slab events, and leaving |
//! | `wait` | waiting for room when the cap is reached, first come first served |
//! | `cap` | the byte cap, changed at run time, and closing to new buffers |
//! | `quarantine` | sealing released slots and letting them go |
//! | `quotas` | quota accounts, and the book of live accounts (a charged buffer's slot holds its account) |
//! | `close` | the last handle's drop, and shutting down once no buffer is out |
//! | `decay` | giving back slabs idle for the decay period, and the `min_buffers` floor |
//! | `stats` | counters, snapshots, metric publishing, and the publisher's tick |
//! | `leak` | walking the slabs for leak reports and suspects |
//! | `fork` | the registry of live pools, and the `pthread_atfork` handlers |

mod allocate;
mod cap;
mod close;
mod decay;
mod events;
mod fork;
mod leak;
mod map;
mod quarantine;
mod quotas;
mod release;
mod stats;
mod wait;

pub(crate) use quotas::QuotaAccount;
pub(crate) use wait::RoomWait;

use std::backtrace::Backtrace;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
use std::sync::{Arc, OnceLock, Weak};

use crate::sync::{Mutex, RwLock};

use crate::class::SizeClasses;
use crate::clock;
use crate::config::{Config, LeakTracking};
use crate::free::cache::HasDepot;
use crate::free::depot::Depot;
use crate::limits::page_size;
use crate::mem::backing::{Anonymous, Backing, NotInherited};
use crate::mem::slabs::SlabSet;
use crate::observe::checks::Checks;
use crate::observe::fault::FaultTable;
use crate::observe::metrics::PoolMetrics;
use crate::observe::publisher;
use crate::observe::quarantine::Quarantine;
use crate::stats::PoolCounters;

/// The shared state behind every handle and buffer of one pool.
pub(crate) struct PoolInner {
    /// The checked settings.
    pub(crate) config: Config,
    /// Bytes in a page.
    pub(crate) page: usize,
    /// The size classes.
    pub(crate) classes: SizeClasses,
    /// What thread caches share: free lists, flush epoch, abandoned flag, waiters.
    pub(crate) depot: Depot,
    /// Pool-wide counters.
    pub(crate) counters: PoolCounters,
    /// Every mapped slab. Held for mapping and trimming, never on the hot
    /// path, and only briefly by scans; every change of `counters.reserved`
    /// happens under it.
    pub(crate) slabs: Mutex<SlabSet>,
    /// Keeps slabs mapped for scans that read slot metadata after letting
    /// `slabs` go (leak reports, the publisher's suspect count): shared by
    /// them, taken exclusively, under `slabs`, by whatever unmaps slabs.
    pub(crate) mapped: RwLock<()>,
    /// Where slab memory comes from.
    backing: Arc<dyn Backing>,
    /// Bumped by every `leak_check`; each allocation records the value.
    pub(crate) leak_epoch: AtomicU32,
    /// Backtraces of sampled allocations, by slot address (slots flagged
    /// `HAS_BACKTRACE`).
    pub(crate) backtraces: Mutex<HashMap<usize, Arc<Backtrace>>>,
    /// Released slots kept inaccessible for a while.
    pub(crate) quarantine: Quarantine,
    /// Quota accounts, and which one each charged buffer counts against.
    quotas: quotas::QuotaBook,
    /// The debug checks and what they found.
    pub(crate) checks: Checks,
    /// Live `BufferPool` handles (buffers keep the pool alive through their
    /// anchors, not handles).
    handles: AtomicUsize,
    /// Set once the slabs were unmapped and the metrics retired.
    shut: AtomicBool,
    /// Set by `BufferPool::close` or the last handle's drop: the pool makes
    /// no more buffers (`Error::Closed`).
    closed: AtomicBool,
    /// The cap on `counters.reserved` (`None`: none); changed under the
    /// slab lock, like `reserved`.
    limit: Mutex<Option<usize>>,
    /// `depot.returns() + 1` at the last trim by `map_slab` that freed
    /// nothing (0: none yet); read and written under the slab lock.
    fruitless_trim: std::sync::atomic::AtomicU64,
    /// Reasons every release must take a *detour* (`release_detour`)
    /// instead of the thread cache: 1 for the quarantine (if on), 1 once the
    /// pool is closed, 1 while it is near its cap, plus the waits for room. One load on every release
    /// instead of one per reason.
    detours: AtomicU32,
    /// Whether buffers record where, when and by whom they were allocated
    /// (`config.tracking` is not `Off`), read on every call.
    tracking: bool,
    /// Metric handles, registered at build; `None` with metrics off.
    metrics: Option<PoolMetrics>,
    /// The pool's place in the process's publisher, scheduled right after
    /// the pool is shared (see [`PoolInner::tick`]).
    publisher: OnceLock<publisher::Entry>,
    /// Decay's marks and the `min_buffers` floors.
    decay: decay::Decay,
}

impl HasDepot for PoolInner {
    #[inline(always)]
    fn depot(&self) -> &Depot {
        &self.depot
    }
}

impl PoolInner {
    /// A pool of the checked `config`, its publisher started.
    pub(crate) fn new(config: Config) -> Arc<PoolInner> {
        let page = page_size();
        let classes = SizeClasses::new(page, config.max_buffer_size);
        let name: Arc<str> = config.name.as_str().into();
        let metrics = config.metrics.then(|| {
            let sizes = classes.all().map(|c| classes.slot_bytes(c));
            PoolMetrics::register(&config.name, sizes, config.max_bytes, config.site_metrics)
        });
        let d = config.debug;
        let tracking = config.tracking != LeakTracking::Off;
        let histograms_every = if metrics.is_some() {
            config.sample_every
        } else {
            0
        };
        let backtrace_every = match config.tracking {
            LeakTracking::Backtrace { sample_every } => sample_every,
            _ => 0,
        };
        if tracking {
            clock::start_coarse_clock();
        }
        let depot = Depot::new(
            &classes,
            config.thread_cache,
            [histograms_every, d.poison_every, backtrace_every],
        );
        let slabs = SlabSet::new(Arc::clone(&name), &classes, vec![Arc::new(FaultTable)]);
        let limit = config.max_bytes;
        let inherit_on_fork = config.inherit_on_fork;
        let decay = decay::Decay::new(&classes, &config.min_buffers);
        let inner = Arc::new(PoolInner {
            checks: Checks::new(&d, page, Arc::clone(&name)),
            depot,
            detours: AtomicU32::new(u32::from(d.quarantine_every != 0)),
            config,
            page,
            classes,
            counters: PoolCounters::default(),
            slabs: Mutex::new(slabs),
            mapped: RwLock::new(()),
            backing: if inherit_on_fork {
                Arc::new(Anonymous)
            } else {
                Arc::new(NotInherited)
            },
            metrics,
            publisher: OnceLock::new(),
            leak_epoch: AtomicU32::new(0),
            backtraces: Mutex::new(HashMap::new()),
            quarantine: Quarantine::default(),
            quotas: quotas::QuotaBook::default(),
            handles: AtomicUsize::new(1),
            shut: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            limit: Mutex::new(limit),
            fruitless_trim: std::sync::atomic::AtomicU64::new(0),
            tracking,
            decay,
        });
        fork::register(&inner);
        // A cap smaller than one slab is near from the start.
        {
            let _slabs = inner.slabs.lock();
            inner.update_near_cap();
        }
        // The tick publishes (metrics on) and decays (decay on).
        if inner.metrics.is_some() || inner.config.decay.is_some() {
            inner.publish_metrics();
            let weak: Weak<dyn publisher::Periodic> = Arc::downgrade(&inner) as _;
            let entry = publisher::schedule(inner.config.publish_interval, weak);
            let _ = inner.publisher.set(entry);
        }
        inner
    }

    /// Whether buffers record their sites (tracking on): a C caller's site
    /// is interned only then.
    #[cfg(feature = "capi")]
    pub(crate) fn tracks_sites(&self) -> bool {
        self.tracking
    }

    /// The pool's name.
    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }
}

impl fmt::Debug for PoolInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolInner")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // First, with no lock held (see `fork`'s lock order).
        fork::deregister(self);
        self.shutdown();
    }
}
