//! Sampling: which allocations do the rare, costly duties.
//!
//! Three duties are sampled, each one allocation in `every` (0: never): the
//! metrics histograms (`metrics_sample_every`), poisoning at release
//! (`DebugConfig::poison_every`) and a backtrace
//! (`LeakTracking::Backtrace { sample_every }`). Each thread's cache entry
//! for a pool keeps one [`Sampler`]: a single countdown, `tick`, to the next
//! allocation that has any duty. The hot path only checks that `tick` is
//! above 1 and decrements it; the allocation that would bring it to 0 takes
//! the slow path, which works out which duties are due and restarts the
//! countdown at the nearest next one. So every duty keeps its exact rate,
//! and an allocation pays for sampling with one compare and one store,
//! however many duties are on.

/// The sampled *duties* of one allocation: the rare, costly work it was
/// picked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SampledDuties(u8);

impl SampledDuties {
    /// No duty.
    pub(crate) const NONE: SampledDuties = SampledDuties(0);
    /// Record the allocation in the metrics histograms (and its hold time
    /// at release).
    pub(crate) const HISTOGRAMS: SampledDuties = SampledDuties(1);
    /// Poison the buffer's first bytes when it is released.
    pub(crate) const POISON: SampledDuties = SampledDuties(2);
    /// Capture a backtrace of the allocation.
    pub(crate) const BACKTRACE: SampledDuties = SampledDuties(4);

    /// Whether `duty` is among these.
    #[inline]
    pub(crate) fn contains(self, duty: SampledDuties) -> bool {
        self.0 & duty.0 == duty.0
    }

    /// Whether there is none.
    #[inline]
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The duties, in the order of [`Sampler::every`].
const DUTIES: [SampledDuties; 3] = [
    SampledDuties::HISTOGRAMS,
    SampledDuties::POISON,
    SampledDuties::BACKTRACE,
];

/// One thread's countdown to its next sampled allocation in one pool.
///
/// Invariants between calls: `tick >= 1`; `tick <= period`; for every duty
/// `i` that is on (`every[i] != 0`), `1 <= left[i] <= every[i]` and
/// `period <= left[i]`, so no duty comes due before `tick` runs out.
#[derive(Debug)]
pub(crate) struct Sampler {
    /// Allocations until the next one with a duty, counting that one.
    pub(crate) tick: u32,
    /// What `tick` was last set to: the allocations between two visits of
    /// the slow path to `left`.
    period: u32,
    /// Each duty's rate: one allocation in this many (0: off).
    every: [u32; 3],
    /// Each duty's allocations until it is due, as of the last reset of
    /// `tick`.
    left: [u32; 3],
}

impl Sampler {
    /// A sampler whose duties are first due after `every` allocations each
    /// (`[histograms, poison, backtrace]`; 0: off).
    pub(crate) fn new(every: [u32; 3]) -> Sampler {
        let mut s = Sampler {
            tick: 1,
            period: 1,
            every,
            left: every,
        };
        s.restart();
        s
    }

    /// Sets `tick` and `period` to the nearest duty (`u32::MAX` with none).
    fn restart(&mut self) {
        let next = (0..DUTIES.len())
            .filter(|&i| self.every[i] != 0)
            .map(|i| self.left[i])
            .min()
            .unwrap_or(u32::MAX);
        self.tick = next;
        self.period = next;
    }

    /// The hot path's test: counts one allocation and returns `true` if it
    /// has no duty and leaves `tick >= 1`; otherwise changes nothing and
    /// returns `false` (the caller then takes the slow path, which calls
    /// [`Sampler::count`]).
    #[inline(always)]
    pub(crate) fn quiet(&self) -> bool {
        self.tick > 1
    }

    /// Counts one allocation that `quiet` let through.
    #[inline(always)]
    pub(crate) fn count_quiet(&mut self) {
        debug_assert!(self.tick > 1);
        self.tick -= 1;
    }

    /// Counts one allocation on the slow path and returns its duties.
    /// Inlined into `acquire_slow` (left to itself, LLVM's choice there moves
    /// with unrelated code: 0.2 instructions per cycle in `instructions.rs`).
    #[inline]
    pub(crate) fn count(&mut self) -> SampledDuties {
        self.tick -= 1;
        if self.tick != 0 {
            return SampledDuties::NONE;
        }
        let mut due = SampledDuties::NONE;
        for (i, duty) in DUTIES.into_iter().enumerate() {
            if self.every[i] == 0 {
                continue;
            }
            // `period <= left[i]` (invariant): no underflow.
            self.left[i] -= self.period;
            if self.left[i] == 0 {
                due.0 |= duty.0;
                self.left[i] = self.every[i];
            }
        }
        self.restart();
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` allocations through a sampler the way the pool does and
    /// returns, per duty, the (1-based) allocations that had it.
    fn run(every: [u32; 3], n: u32) -> [Vec<u32>; 3] {
        let mut s = Sampler::new(every);
        let mut hits: [Vec<u32>; 3] = Default::default();
        for call in 1..=n {
            let due = if s.quiet() {
                s.count_quiet();
                SampledDuties::NONE
            } else {
                s.count()
            };
            assert!(s.tick >= 1);
            for (i, duty) in DUTIES.into_iter().enumerate() {
                if due.contains(duty) {
                    hits[i].push(call);
                }
            }
        }
        hits
    }

    #[test]
    fn every_duty_keeps_its_exact_rate() {
        let [h, p, b] = run([4, 6, 0], 24);
        assert_eq!(h, [4, 8, 12, 16, 20, 24]);
        assert_eq!(p, [6, 12, 18, 24]);
        assert!(b.is_empty());
        let [h, p, b] = run([256, 64, 1024], 4096);
        assert_eq!(h.len(), 16);
        assert_eq!(p.len(), 64);
        assert_eq!(b, [1024, 2048, 3072, 4096]);
        assert!(h.iter().all(|c| c % 256 == 0) && p.iter().all(|c| c % 64 == 0));
    }

    #[test]
    fn every_one_samples_every_call_and_off_samples_none() {
        let [h, p, b] = run([1, 1, 1], 5);
        assert_eq!((h.len(), p.len(), b.len()), (5, 5, 5));
        let [h, p, b] = run([0, 0, 0], 100_000);
        assert!(h.is_empty() && p.is_empty() && b.is_empty());
        // With nothing on, the countdown still never runs out in between.
        let mut s = Sampler::new([0, 0, 0]);
        s.tick = 1;
        assert_eq!(s.count(), SampledDuties::NONE);
        assert_eq!(s.tick, u32::MAX);
    }

    #[test]
    fn coprime_rates_and_u32_max() {
        let [h, p, _] = run([3, 7, 0], 21);
        assert_eq!(h, [3, 6, 9, 12, 15, 18, 21]);
        assert_eq!(p, [7, 14, 21]);
        let s = Sampler::new([u32::MAX, 0, 0]);
        assert_eq!(s.tick, u32::MAX);
    }
}
