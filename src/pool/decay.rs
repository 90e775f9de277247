//! Decay: free slabs a class has not needed for the decay period go back to
//! the OS, from the pool's background tick; and the `min_buffers` floor
//! that neither decay nor trim goes below, mapped at build.
//!
//! Every quarter period (at a tick) the pool writes down a *mark*: per
//! class, the buffers in use and the allocations so far. At most
//! `in_use + allocations since` distinct slots of a class can have been
//! handed out since a mark, so when the newest mark at least one period old
//! says a class touched `k` slots since, every slot beyond `max(k, floor)` lay
//! free for the whole period, and the slabs wholly among them are unmapped
//! (the trim machinery, `unmap_idle_locked`); so many free slots of the
//! slabs left mapped have their pages discarded too. Reading the counters costs the
//! hot path nothing; see the `design` module.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::map::FreePages;
use super::PoolInner;
use crate::class::{ClassIdx, SizeClasses};
use crate::sync::Mutex;
use crate::Error;

/// What one class had at a mark: buffers in use, allocations so far.
type ClassMark = (usize, u64);

/// One mark: when, and each class's counts then, in the table's order.
#[derive(Debug)]
struct Mark {
    at: Instant,
    classes: Vec<ClassMark>,
}

/// A pool's decay state: the floors, and the marks of the last period.
#[derive(Debug)]
pub(crate) struct Decay {
    /// Per class, the slots kept mapped whatever happens (`min_buffers`).
    floors: Box<[usize]>,
    /// Oldest first; only the tick (or a manual `decay_idle`) takes it, with
    /// `try_lock`, so a `fork` child whose parent held it never waits.
    marks: Mutex<VecDeque<Mark>>,
}

impl Decay {
    /// The floors of `min_buffers` (`(max_size, count)`, sizes checked)
    /// over `classes`: per page class, the largest count asked.
    pub(crate) fn new(classes: &SizeClasses, min_buffers: &[(usize, usize)]) -> Decay {
        let mut floors = vec![0; classes.all().count()];
        for &(size, count) in min_buffers {
            if let Some(c) = classes.class_for(size, false) {
                floors[c.get()] = floors[c.get()].max(count);
            }
        }
        Decay {
            floors: floors.into(),
            marks: Mutex::new(VecDeque::new()),
        }
    }

    /// The slots class `idx` keeps mapped (its `min_buffers`).
    #[inline]
    pub(crate) fn floor(&self, idx: ClassIdx) -> usize {
        self.floors[idx.get()]
    }
}

impl PoolInner {
    /// Maps the `min_buffers` of every class, their slots on the free lists.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when they do not fit under `max_bytes`;
    /// [`Error::Os`] when a mapping fails.
    pub(crate) fn prefill(&self) -> Result<(), Error> {
        for c in self.classes.all() {
            let floor = self.decay.floor(c);
            let mut slabs = self.slabs.lock();
            while self.depot.class(c).counters.slots.load(Relaxed) < floor {
                match self.map_free_slab(&mut slabs, c) {
                    Err(Error::Exhausted { .. }) => {
                        return Err(Error::InvalidConfig(
                            "min_buffers do not fit under max_bytes",
                        ))
                    }
                    other => other?,
                };
            }
        }
        Ok(())
    }

    /// Unmaps the free slabs no class needed for the decay period, at most
    /// once a quarter period (see the module docs); returns the bytes.
    /// Called by the background tick with the time now; never on the hot
    /// path.
    pub(crate) fn decay_idle(&self, now: Instant) -> usize {
        let Some(period) = self.config.decay else {
            return 0;
        };
        let Some(mut marks) = self.decay.marks.try_lock() else {
            return 0;
        };
        if marks
            .back()
            .is_some_and(|m| now.saturating_duration_since(m.at) < period / 4)
        {
            return 0;
        }
        let classes: Vec<ClassMark> = self
            .class_stats()
            .iter()
            .map(|c| (c.buffers_in_use, c.allocations))
            .collect();
        let start = marks
            .iter()
            .rposition(|m| now.saturating_duration_since(m.at) >= period);
        let freed = match start {
            Some(i) => {
                marks.drain(..i);
                self.unmap_untouched(&marks[0].classes, &classes)
            }
            None => 0,
        };
        marks.push_back(Mark { at: now, classes });
        freed
    }

    /// Unmaps, per class, idle slabs beyond the slots touched between the
    /// counts `then` and `now`, and beyond its floor; returns the bytes.
    fn unmap_untouched(&self, then: &[ClassMark], now: &[ClassMark]) -> usize {
        let mut freed = 0;
        let mut held_back = false;
        let mut slabs = self.slabs.lock();
        for ((c, &(in_use, allocs)), &(_, allocs_now)) in self.classes.all().zip(then).zip(now) {
            let touched = in_use.saturating_add(allocs_now.saturating_sub(allocs) as usize);
            let keep = touched.max(self.decay.floor(c));
            let slots = &self.depot.class(c).counters.slots;
            if slots.load(Relaxed) <= keep {
                continue;
            }
            freed += self.unmap_idle_locked(&mut slabs, c, keep, FreePages::Discard);
            // Room for a whole slab beyond `keep` is left: each slab holds a
            // slot in use, quarantined or cached by a thread.
            let smallest = slabs.class(c).iter().map(|s| s.slots().len()).min();
            held_back |= smallest.is_some_and(|n| slots.load(Relaxed) >= keep + n);
        }
        drop(slabs);
        if held_back && self.depot.has_caches() {
            // Threads return their cached slots at their next call; the
            // next quarter's look finds those slabs idle.
            self.depot.request_flush();
        }
        if freed != 0 {
            self.counters.decayed.fetch_add(freed as u64, Relaxed);
            self.depot.notify_room();
        }
        freed
    }
}
