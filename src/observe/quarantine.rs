//! Quarantine: a sampled release makes its slot inaccessible and keeps it out
//! of reuse while newer releases go through, so a late access through a stale
//! pointer faults at once (and the fault handler names the buffer).

use std::cell::Cell;
use std::collections::VecDeque;

use crate::sync::Mutex;

use crate::mem::guard::Sealed;
use crate::mem::slot::SlotRef;

/// Slots in quarantine, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Quarantine {
    queue: Mutex<VecDeque<(SlotRef, Sealed)>>,
}

impl Quarantine {
    /// Takes the queue lock for a `fork` (see [`crate::forklock`]).
    pub(crate) fn fork_hold(&self) {
        crate::forklock::hold(&self.queue);
    }

    /// Lets go what [`fork_hold`](Self::fork_hold) took.
    ///
    /// # Safety
    ///
    /// As [`crate::forklock::release`]'s: this thread took it with
    /// `fork_hold`, and in the child no other thread runs yet.
    pub(crate) unsafe fn fork_release(&self, child: bool) {
        // SAFETY: the caller's contract is `release`'s.
        unsafe { crate::forklock::release(&self.queue, child) }
    }
    /// Adds a sealed slot; returns the slots that must leave (oldest first)
    /// to keep at most `max` inside.
    pub(crate) fn admit(
        &self,
        slot: SlotRef,
        sealed: Sealed,
        max: usize,
    ) -> Vec<(SlotRef, Sealed)> {
        let mut q = self.queue.lock();
        q.push_back((slot, sealed));
        let over = q.len().saturating_sub(max);
        q.drain(..over).collect()
    }

    /// Empties the quarantine (for trimming and dropping the pool).
    pub(crate) fn drain(&self) -> Vec<(SlotRef, Sealed)> {
        self.queue.lock().drain(..).collect()
    }
}

thread_local! {
    /// This thread's countdown to its next quarantined release.
    static COUNTDOWN: Cell<u32> = const { Cell::new(0) };
}

/// Whether this release is the one in `every` (0: never) that is
/// quarantined: a per-thread countdown, so the decision costs no shared
/// write.
pub(crate) fn sampled(every: u32) -> bool {
    if every == 0 {
        return false;
    }
    COUNTDOWN.with(|c| match c.get() {
        0 => {
            c.set(every - 1);
            true
        }
        n => {
            c.set(n - 1);
            false
        }
    })
}
