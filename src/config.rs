//! A pool's settings: every knob, its default, and the check that makes a
//! [`Config`] valid.

use std::time::Duration;

use crate::limits::SIZE_LIMIT;
use crate::Error;

/// Default largest buffer: 16 MiB.
pub const DEFAULT_MAX_BUFFER_SIZE: usize = 16 << 20;
/// Default target size of a slab's slots: 1 MiB (a slab of 4 KiB slots holds 256).
pub const DEFAULT_SLAB_SIZE: usize = 1 << 20;
/// Default [`PoolBuilder::leak_age_threshold`](crate::PoolBuilder::leak_age_threshold): a buffer out for a minute is
/// a leak suspect.
pub const DEFAULT_LEAK_AGE_THRESHOLD: Duration = Duration::from_secs(60);

/// The default metrics publish interval
/// ([`PoolBuilder::metrics_publish_interval`](crate::PoolBuilder::metrics_publish_interval)).
pub const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_millis(250);
/// The longest publish interval a pool accepts.
pub const MAX_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// Default [`PoolBuilder::decay`](crate::PoolBuilder::decay): slabs idle
/// for 10 s go back to the OS.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// The shortest decay period a pool accepts.
pub const MIN_DECAY: Duration = Duration::from_millis(1);
/// The longest decay period a pool accepts (a day).
pub const MAX_DECAY: Duration = Duration::from_secs(24 * 60 * 60);
/// By default one allocation in this many records the histograms. A sample
/// costs three clock reads and three histogram records, about 200 ns on a
/// VM: one in 256 keeps that near 1 ns per allocation while a pool busy
/// enough for the cost to matter (100,000 calls a second) still records
/// about 400 samples a second.
pub const DEFAULT_SAMPLE_EVERY: u32 = 256;

/// Default [`PoolBuilder::site_metrics`](crate::PoolBuilder::site_metrics):
/// the ten sites holding the most bytes get series of their own.
pub const DEFAULT_SITE_METRICS: usize = 10;
/// The most sites [`PoolBuilder::site_metrics`](crate::PoolBuilder::site_metrics) accepts.
pub const MAX_SITE_METRICS: usize = 1000;

/// Settings of a pool; valid once [`Config::check`] accepted them.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) max_bytes: Option<usize>,
    pub(crate) max_buffer_size: usize,
    pub(crate) guards: Option<GuardMechanism>,
    pub(crate) slab_size: usize,
    pub(crate) metrics: bool,
    pub(crate) publish_interval: Duration,
    pub(crate) sample_every: u32,
    pub(crate) debug: DebugConfig,
    pub(crate) tracking: LeakTracking,
    pub(crate) leak_age: Duration,
    pub(crate) thread_cache: bool,
    pub(crate) inherit_on_fork: bool,
    /// Free slabs idle this long are unmapped (`None`: never).
    pub(crate) decay: Option<Duration>,
    /// `(max_size, count)`: buffers of `max_size`'s page class mapped at
    /// build and never trimmed or decayed.
    pub(crate) min_buffers: Vec<(usize, usize)>,
    pub(crate) site_metrics: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "default".to_owned(),
            max_bytes: None,
            max_buffer_size: DEFAULT_MAX_BUFFER_SIZE,
            guards: Some(GuardMechanism::Auto),
            slab_size: DEFAULT_SLAB_SIZE,
            metrics: true,
            publish_interval: DEFAULT_PUBLISH_INTERVAL,
            sample_every: DEFAULT_SAMPLE_EVERY,
            debug: DebugConfig::preset(DebugLevel::Standard, CorruptionAction::Log),
            tracking: LeakTracking::CallSite,
            leak_age: DEFAULT_LEAK_AGE_THRESHOLD,
            thread_cache: true,
            inherit_on_fork: true,
            decay: Some(DEFAULT_DECAY),
            min_buffers: Vec::new(),
            site_metrics: DEFAULT_SITE_METRICS,
        }
    }
}

impl Config {
    /// Checks the settings (`page`: bytes in a page).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], saying which setting is out of range.
    pub(crate) fn check(&self, page: usize) -> Result<(), Error> {
        if self.max_buffer_size == 0 {
            return Err(Error::InvalidConfig(
                "max_buffer_size must be at least 1 byte",
            ));
        }
        if self.max_buffer_size > SIZE_LIMIT {
            return Err(Error::InvalidConfig(
                "max_buffer_size is above pagepool::SIZE_LIMIT",
            ));
        }
        if self.slab_size == 0 || self.slab_size > SIZE_LIMIT {
            return Err(Error::InvalidConfig(
                "slab_size must be between 1 byte and pagepool::SIZE_LIMIT",
            ));
        }
        if self.publish_interval < Duration::from_millis(1)
            || self.publish_interval > MAX_PUBLISH_INTERVAL
        {
            return Err(Error::InvalidConfig(
                "metrics_publish_interval must be between 1 ms and 1 s",
            ));
        }
        if self
            .decay
            .is_some_and(|d| !(MIN_DECAY..=MAX_DECAY).contains(&d))
        {
            return Err(Error::InvalidConfig(
                "decay must be between 1 ms and 24 h (None turns it off)",
            ));
        }
        if self
            .min_buffers
            .iter()
            .any(|&(size, _)| size == 0 || size > self.max_buffer_size)
        {
            return Err(Error::InvalidConfig(
                "min_buffers needs a size between 1 byte and max_buffer_size",
            ));
        }
        if self.site_metrics > MAX_SITE_METRICS {
            return Err(Error::InvalidConfig(
                "site_metrics is above pagepool::metrics::MAX_SITE_METRICS",
            ));
        }
        if self.debug.quarantine_every != 0
            && (self.guards.is_none() || self.debug.quarantine_slots == 0)
        {
            return Err(Error::InvalidConfig(
                "quarantine needs guard pages and room for at least one slot",
            ));
        }
        if self.max_bytes.is_some_and(|m| m < self.smallest_cap(page)) {
            return Err(Error::InvalidConfig(
                "max_bytes cannot hold one page-sized slot and its guard pages",
            ));
        }
        Ok(())
    }

    /// The smallest cap that holds one page-sized slot and its guard pages.
    pub(crate) fn smallest_cap(&self, page: usize) -> usize {
        page * if self.guards.is_some() { 3 } else { 1 }
    }
}

/// A preset of the debugging knobs, set with
/// [`PoolBuilder::debug`](crate::PoolBuilder::debug); individual knobs set
/// after it override it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DebugLevel {
    /// No canary, poison, zeroing or quarantine (guard pages are separate).
    Off,
    /// Slack canary, and poison on the first 256 bytes of one buffer in 64
    /// at its release: a few nanoseconds. The default.
    #[default]
    Standard,
    /// Everything: full-slot canary, poison on every release, zero on
    /// allocate, quarantine of every release (256 slots). For tests and
    /// debugging sessions; it costs system calls on every release.
    Paranoid,
}

/// When buffers are zeroed, so one client's bytes never reach another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Zeroing {
    /// Never (fresh slots are zero; reused ones hold the last owner's bytes).
    #[default]
    Off,
    /// `max_len` bytes are zeroed when the buffer is released.
    OnRelease,
    /// `max_len` bytes are zeroed when the buffer is handed out.
    OnAllocate,
}

/// What a pool does when it finds damaged memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CorruptionAction {
    /// Log a `tracing` error event with the report, count it in
    /// `pagepool_corruptions_total{pool, kind}`, repair the pattern and go on.
    #[default]
    Log,
    /// Write the report to stderr, then abort the process.
    Abort,
}

/// The knobs, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DebugConfig {
    pub(crate) slack_canary: bool,
    pub(crate) full_canary: bool,
    /// Poison one buffer in this many at its release (0: never)...
    pub(crate) poison_every: u32,
    /// ...over at most this many bytes from the buffer's start.
    pub(crate) poison_bytes: usize,
    pub(crate) zero: Zeroing,
    /// Quarantine one release in this many (0: never)...
    pub(crate) quarantine_every: u32,
    /// ...holding at most this many slots.
    pub(crate) quarantine_slots: usize,
    pub(crate) on_corruption: CorruptionAction,
}

impl DebugConfig {
    pub(crate) fn preset(level: DebugLevel, on_corruption: CorruptionAction) -> Self {
        let off = DebugConfig {
            slack_canary: false,
            full_canary: false,
            poison_every: 0,
            poison_bytes: 0,
            zero: Zeroing::Off,
            quarantine_every: 0,
            quarantine_slots: 0,
            on_corruption,
        };
        match level {
            DebugLevel::Off => off,
            DebugLevel::Standard => DebugConfig {
                slack_canary: true,
                poison_every: 64,
                poison_bytes: 256,
                ..off
            },
            DebugLevel::Paranoid => DebugConfig {
                slack_canary: true,
                full_canary: true,
                poison_every: 1,
                poison_bytes: usize::MAX,
                zero: Zeroing::OnAllocate,
                quarantine_every: 1,
                quarantine_slots: 256,
                ..off
            },
        }
    }

    /// Whether any canary is kept.
    #[inline]
    pub(crate) fn canary(&self) -> bool {
        self.slack_canary || self.full_canary
    }
}

/// What a pool records about each outstanding buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LeakTracking {
    /// Counts only: `outstanding()` lists buffers without site, age or thread.
    Off,
    /// The allocation's `#[track_caller]` location, time and thread, for every
    /// buffer, at a few nanoseconds per allocation. The default.
    #[default]
    CallSite,
    /// `CallSite`, plus a captured backtrace for one allocation in
    /// `sample_every` (1 = every allocation; 0 = none). Capturing costs
    /// microseconds: sample in production.
    Backtrace {
        /// Capture for one allocation in this many.
        sample_every: u32,
    },
}

/// Which system call places guard pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum GuardMechanism {
    /// `madvise(MADV_GUARD_INSTALL)` where the kernel has it (Linux 6.13+),
    /// otherwise `mprotect` within the process-wide area budget. The default.
    #[default]
    Auto,
    /// Always `mprotect`, even where `MADV_GUARD_INSTALL` exists: each
    /// interior guard then costs two kernel memory areas from the budget. For
    /// testing the fallback, and for kernels whose guard markers misbehave.
    Mprotect,
}
