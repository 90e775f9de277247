//! What a soak is asked to do ([`SoakConfig`]) and what it found
//! ([`SoakReport`]).

use std::time::Duration;

use pagepool::{DebugLevel, GuardMechanism};

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
