//! [`PoolBuilder`]: a pool's settings, checked once at `build`; and the
//! constructors of [`BufferPool`] that use it.

use std::time::Duration;

use crate::buffer_pool::BufferPool;
use crate::config::{
    Config, CorruptionAction, DebugConfig, DebugLevel, GuardMechanism, LeakTracking, Zeroing,
};
use crate::limits::page_size;
use crate::Error;

/// Builds a [`BufferPool`]; every setter consumes and returns the builder.
///
/// ```
/// let pool = pagepool::BufferPool::builder()
///     .name("media")
///     .max_bytes(256 << 20)
///     .max_buffer_size(4 << 20)
///     .guard_pages(true)
///     .build()?;
/// assert_eq!(pool.name(), "media");
/// # Ok::<(), pagepool::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct PoolBuilder {
    config: Config,
}

impl BufferPool {
    /// A pool with the default settings (see [`PoolBuilder::new`]). It maps
    /// nothing until the first allocation.
    pub fn new() -> BufferPool {
        PoolBuilder::new()
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder for a pool with other settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }
}

impl Default for BufferPool {
    fn default() -> Self {
        BufferPool::new()
    }
}

impl PoolBuilder {
    /// A builder with the defaults: name `"default"`, no byte cap, buffers up
    /// to 16 MiB, guard pages on, slabs of about 1 MiB of slots.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pool's name, used in logs, leak reports and as the `pool` label of
    /// its metrics.
    ///
    /// **Two pools with the same name share every metric series** and
    /// overwrite each other's values; pagepool logs a warning when that
    /// happens. Give each pool its own name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Caps the bytes the pool maps (`PoolStats::bytes_reserved`, guard pages
    /// included). An allocation that would pass it fails with
    /// [`Error::Exhausted`] once no free slot of its class is left and idle
    /// slabs of other classes have been unmapped. Default: no cap.
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.config.max_bytes = Some(max_bytes);
        self
    }

    /// The largest `max_size` the pool accepts (default 16 MiB); it is rounded
    /// up to whole pages and becomes the largest size class. Larger requests
    /// fail with [`Error::TooLarge`].
    pub fn max_buffer_size(mut self, bytes: usize) -> Self {
        self.config.max_buffer_size = bytes;
        self
    }

    /// Whether every slot gets an inaccessible guard page directly before and
    /// after it (default `true`). Guards cost address space (one page per
    /// slot), no memory, and no time after the slab is mapped.
    pub fn guard_pages(mut self, on: bool) -> Self {
        self.config.guards = on.then(|| self.config.guards.unwrap_or_default());
        self
    }

    /// Which system call places the guard pages (default
    /// [`GuardMechanism::Auto`]); turns guard pages on.
    pub fn guard_mechanism(mut self, mechanism: GuardMechanism) -> Self {
        self.config.guards = Some(mechanism);
        self
    }

    /// Target bytes of slots per slab (default 1 MiB): a slab holds
    /// `slab_size / slot size` slots, at least 1 and at most 4096. Larger
    /// slabs mean fewer system calls while the pool warms up; smaller ones
    /// mean finer trimming and less reserved up front.
    pub fn slab_size(mut self, bytes: usize) -> Self {
        self.config.slab_size = bytes;
        self
    }

    /// Whether a child of `fork()` inherits the pool's slabs (default
    /// `true`). With `false`, every slab is marked `madvise(MADV_DONTFORK)`
    /// when mapped: a child (say of a pre-forking server) does not get a
    /// copy-on-write copy of the parent's media buffers, and forking costs
    /// no page-table copy for them.
    ///
    /// In such a child the slab pages are not mapped at all: reading or
    /// writing an inherited buffer faults (`SIGSEGV`), and the child's copy
    /// of the pool is closed (allocations fail with [`Error::Closed`](crate::Error::Closed)),
    /// since its free slots lie in those pages too. The child must neither
    /// touch nor drop inherited buffers (a drop returns the slot through
    /// the checks, which may read its canaries): `std::mem::forget` them,
    /// or leave with `_exit`, and build a pool of its own. The slot
    /// metadata lives on the heap, so the pool handle itself may be
    /// forgotten or dropped. See the "Fork" section of
    /// [`design`](crate::design).
    ///
    /// ```
    /// let pool = pagepool::BufferPool::builder().inherit_on_fork(false).build()?;
    /// let buf = pool.allocate_page_size_buffer(4096)?;
    /// assert!(buf.max_len() >= 4096);
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    pub fn inherit_on_fork(mut self, inherit: bool) -> Self {
        self.config.inherit_on_fork = inherit;
        self
    }

    /// Whether the pool registers and publishes [metrics](crate::metrics)
    /// (default `true`). With `false` it never touches the `metrics` recorder,
    /// and is not ticked by the process's publisher thread unless
    /// [`decay`](Self::decay) is on;
    /// [`BufferPool::stats`] still works.
    pub fn metrics(mut self, on: bool) -> Self {
        self.config.metrics = on;
        self
    }

    /// How often the background publisher copies the pool's counters into
    /// its metric handles (default 250 ms; between 1 ms and 1 s). Once the
    /// pool has been idle this long, scraped values equal [`BufferPool::stats`].
    /// Decay looks at the same tick.
    pub fn metrics_publish_interval(mut self, interval: Duration) -> Self {
        self.config.publish_interval = interval;
        self
    }

    /// Record the histograms (allocation latency, request size, hold time)
    /// for one allocation in `n` (default 256, see
    /// [`DEFAULT_SAMPLE_EVERY`](crate::metrics::DEFAULT_SAMPLE_EVERY)); 0
    /// turns them off, 1 records every call (exporters buffer every sample
    /// until a scrape: keep it for tests and low rates).
    pub fn metrics_sample_every(mut self, n: u32) -> Self {
        self.config.sample_every = n;
        self
    }

    /// How many allocation sites get series of their own in
    /// `pagepool_site_bytes` / `pagepool_site_buffers` (default
    /// [`DEFAULT_SITE_METRICS`](crate::metrics::DEFAULT_SITE_METRICS), at
    /// most [`MAX_SITE_METRICS`](crate::metrics::MAX_SITE_METRICS)): the
    /// sites holding the most bytes at each publish; every other site adds
    /// to `site="other"`. 0 publishes `other` only. Each publish walks the
    /// slot metadata (as the leak-suspect count does); needs leak tracking.
    ///
    /// ```
    /// let pool = pagepool::BufferPool::builder().site_metrics(3).build()?;
    /// # drop(pool);
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    pub fn site_metrics(mut self, n: usize) -> Self {
        self.config.site_metrics = n;
        self
    }

    /// Whether each thread keeps a small cache of free slots (default
    /// `true`): the hot path then makes no atomic read-modify-write on
    /// shared memory. A cache holds at most 1 MiB (or 64 slots) per class,
    /// flushed when its thread exits. `trim` and an allocation about to fail
    /// with [`Error::Exhausted`] flush the calling thread's cache at once and
    /// ask every other thread to flush at its next call. Idle threads keep
    /// theirs until then, so with a tight
    /// `max_bytes` an allocation may fail while another, idle thread caches
    /// a free slot of its class: turn caching off where the cap must be exact.
    pub fn thread_cache(mut self, on: bool) -> Self {
        self.config.thread_cache = on;
        self
    }

    /// What the pool records about each outstanding buffer (default
    /// [`LeakTracking::CallSite`]); see [`crate::leak`].
    pub fn leak_tracking(mut self, tracking: LeakTracking) -> Self {
        self.config.tracking = tracking;
        self
    }

    /// Buffers out longer than this are leak suspects, counted by the
    /// `pagepool_leak_suspects` gauge (default one minute). Needs leak
    /// tracking (ages are not recorded with [`LeakTracking::Off`]).
    pub fn leak_age_threshold(mut self, age: Duration) -> Self {
        self.config.leak_age = age;
        self
    }

    /// Sets every debugging knob to a preset (default
    /// [`DebugLevel::Standard`]); setters called after it override single
    /// knobs. See [`crate::debug`] for what each costs.
    pub fn debug(mut self, level: DebugLevel) -> Self {
        self.config.debug = DebugConfig::preset(level, self.config.debug.on_corruption);
        self
    }

    /// The bytes from `max_len` to the end of its page hold an
    /// address-dependent canary, checked when the buffer is released.
    pub fn slack_canary(mut self, on: bool) -> Self {
        self.config.debug.slack_canary = on;
        self
    }

    /// Every byte of the slot beyond `max_len` (all its later pages too)
    /// holds the canary and is checked at release: catches a write anywhere
    /// past `max_len`, at the cost of comparing the whole slack.
    pub fn full_canary(mut self, on: bool) -> Self {
        self.config.debug.full_canary = on;
        self
    }

    /// Poisons one buffer in `sample_every` (0: none, 1: all) when it is
    /// released, over its first `bytes` bytes (`usize::MAX`: all
    /// `max_len`), and checks the poison when the slot is handed out again:
    /// a write after release is reported with the buffer's allocation and
    /// release sites. Each thread picks its one allocation in
    /// `sample_every` with a countdown per pool, so the choice costs the
    /// hot path nothing beyond the countdown the other sampled duties share.
    pub fn poison(mut self, sample_every: u32, bytes: usize) -> Self {
        self.config.debug.poison_every = sample_every;
        self.config.debug.poison_bytes = bytes;
        self
    }

    /// When buffers are zeroed (default [`Zeroing::Off`]).
    pub fn zero(mut self, when: Zeroing) -> Self {
        self.config.debug.zero = when;
        self
    }

    /// Every buffer's `max_len` bytes are zero when it is handed out
    /// (`zero(Zeroing::OnAllocate)`): no buffer ever shows a previous
    /// owner's bytes, whatever `set_len` or `as_max_slice` is called with.
    /// For servers whose buffers carry different tenants' or clients' data;
    /// the cost is one `memset` of `max_len` bytes per allocation.
    ///
    /// ```
    /// let pool = pagepool::BufferPool::builder().zero_on_allocate().build()?;
    /// let mut secret = pool.allocate_page_size_buffer(4096)?;
    /// secret.extend_from_slice(b"another tenant's key")?;
    /// drop(secret);
    /// let mut next = pool.allocate_page_size_buffer(4096)?; // the same slot
    /// next.set_len(20)?;
    /// assert_eq!(&next[..], &[0u8; 20]);
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    pub fn zero_on_allocate(self) -> Self {
        self.zero(Zeroing::OnAllocate)
    }

    /// Quarantines one release in `sample_every` (0: none): the slot is made
    /// inaccessible and kept out of reuse until `max_slots` newer ones have
    /// joined it, so a late access through a stale pointer faults (and, with
    /// [`install_fault_handler`](crate::install_fault_handler), is reported).
    /// Needs guard pages.
    pub fn quarantine(mut self, sample_every: u32, max_slots: usize) -> Self {
        self.config.debug.quarantine_every = sample_every;
        self.config.debug.quarantine_slots = max_slots;
        self
    }

    /// What to do on detected corruption (default [`CorruptionAction::Log`]).
    pub fn on_corruption(mut self, action: CorruptionAction) -> Self {
        self.config.debug.on_corruption = action;
        self
    }

    /// Slabs whose slots have all been free for `period` go back to the OS
    /// (default [`DEFAULT_DECAY`](crate::DEFAULT_DECAY), 10 s; `None`: never),
    /// as jemalloc's and mimalloc's decay and Netty's trim interval do. The
    /// process's publisher thread looks once per
    /// [`metrics_publish_interval`](Self::metrics_publish_interval) tick
    /// (with metrics off too), so a slab goes between one period and one
    /// period plus two ticks after its class last needed it; per class it
    /// keeps as many slots as the busiest tick of the last period had in use,
    /// and the [`min_buffers`](Self::min_buffers). Buffers in use,
    /// quarantined slots and slots cached by a thread are never touched
    /// (a thread's cache comes back at its next call); see
    /// [`crate::design`]. Counted in
    /// [`PoolStats::decayed_bytes`](crate::PoolStats::decayed_bytes).
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = pagepool::BufferPool::builder()
    ///     .decay(Some(Duration::from_secs(30)))
    ///     .build()?;
    /// let never = pagepool::BufferPool::builder().decay(None).build()?;
    /// let zero = pagepool::BufferPool::builder().decay(Some(Duration::ZERO)).build();
    /// assert!(matches!(zero, Err(pagepool::Error::InvalidConfig(_))));
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    pub fn decay(mut self, period: Option<Duration>) -> Self {
        self.config.decay = period;
        self
    }

    /// Keeps at least `count` buffers of `max_size`'s page class (the class
    /// [`allocate_page_size_buffer(max_size)`](BufferPool::allocate_page_size_buffer)
    /// uses) mapped from `build` on: the pool starts warm, and neither
    /// [`trim`](BufferPool::trim) nor decay goes below them (GStreamer's
    /// `min_buffers`). Their pages are faulted in at first write. Calls
    /// for one class keep the largest count.
    ///
    /// ```
    /// let pool = pagepool::BufferPool::builder().min_buffers(64 << 10, 32).build()?;
    /// let warm = pool.stats();
    /// assert!(warm.buffers_cached >= 32 && warm.misses == 0);
    /// pool.trim();
    /// assert!(pool.stats().buffers_cached >= 32);
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    pub fn min_buffers(mut self, max_size: usize, count: usize) -> Self {
        self.config.min_buffers.push((max_size, count));
        self
    }

    /// Checks the settings and creates the pool. Nothing is mapped until the
    /// first allocation, but the [`min_buffers`](Self::min_buffers).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `max_buffer_size` or `slab_size` is zero
    /// or above [`SIZE_LIMIT`](crate::SIZE_LIMIT), when `max_bytes` cannot hold even one
    /// one-page slot (with its guard pages) or the `min_buffers`, when the
    /// metrics publish interval is outside 1 ms ..= 1 s, when the decay
    /// period is outside [`MIN_DECAY`](crate::MIN_DECAY) ..=
    /// [`MAX_DECAY`](crate::MAX_DECAY), or a `min_buffers` size is 0 or above
    /// `max_buffer_size`; [`Error::Os`] when mapping the `min_buffers` fails.
    pub fn build(self) -> Result<BufferPool, Error> {
        self.config.check(page_size())?;
        BufferPool::from_config(self.config)
    }
}
