//! Waiting for room when the cap is reached: one poll of a wait
//! ([`PoolInner::poll_room`]) that the async futures (and, through them,
//! the blocking `_timeout` forms) make, and the releases that wake waiters.
//!
//! Waiters queue in the depot's [`WaitList`](crate::waitlist::WaitList), in
//! arrival order, whatever their size: only the head tries for room, and
//! while anyone waits, allocations that miss their thread's cache are
//! refused (`take_slow`'s gate) rather than take what the head waits for.

use std::cell::Cell;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use super::PoolInner;
use crate::free::anchor::{AnchorRef, Released};
use crate::free::cache;
use crate::mem::slot::SlotRef;
use crate::stats::WaitOutcome;
use crate::waitlist::Ticket;
use crate::Error;

thread_local! {
    /// Set while this thread tries for room as the head waiter: the try
    /// passes the gate, and does not count as another `exhausted` refusal.
    static HEAD_TRY: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is trying for room as the head waiter.
#[inline]
pub(super) fn head_try() -> bool {
    HEAD_TRY.with(Cell::get)
}

/// One wait for room in a pool: in the list from its first refusal until
/// [`PoolInner::end_wait`], which its owner must call however the wait
/// ends (drop included).
#[derive(Debug, Default)]
pub(crate) struct RoomWait {
    /// The place in the list, once joined.
    ticket: Option<Ticket>,
    /// When the wait began (set with the join, on the wait path only).
    since: Option<Instant>,
}

impl RoomWait {
    /// Whether the wait is in the list.
    #[inline(always)]
    pub(crate) fn is_waiting(&self) -> bool {
        self.ticket.is_some()
    }
}

impl PoolInner {
    /// One poll of a wait for room, once its first try was refused or found
    /// others waiting (`take_slow`'s gate): `attempt` is the
    /// allocation (of `max_size` bytes; `small`: as `allocate_buffer`),
    /// tried only at this wait's turn.
    /// `Pending` until `attempt` is not `Exhausted`, unless even an empty
    /// pool could not hold the request under the cap (then the refusal
    /// stands: waiting would block everyone behind it for ever); the pool's
    /// close ends it with `Closed`. `cx`'s waker is woken when the turn
    /// comes or room is made.
    pub(crate) fn poll_room<T>(
        self: &Arc<Self>,
        wait: &mut RoomWait,
        cx: &mut Context<'_>,
        (max_size, small): (usize, bool),
        attempt: &mut dyn FnMut() -> Result<T, Error>,
    ) -> Poll<Result<T, Error>> {
        if self.is_closed() {
            self.end_wait(wait, WaitOutcome::Failed);
            return Poll::Ready(Err(Error::Closed));
        }
        let mut in_turn = || {
            // Cleared however the try ends (a panic in a tracing subscriber
            // included), so no later call on this thread passes the gate.
            struct HeadTry;
            impl Drop for HeadTry {
                fn drop(&mut self) {
                    HEAD_TRY.with(|h| h.set(false));
                }
            }
            HEAD_TRY.with(|h| h.set(true));
            let _head = HeadTry;
            attempt()
        };
        if wait.ticket.is_none() {
            // Counted before joining (which `poll_turn` does now), so every
            // release after the join comes to the depot and wakes the list.
            self.detours.fetch_add(1, SeqCst);
            wait.since = Some(Instant::now());
        }
        // Slots other threads cached before are asked back.
        let on_join = || self.ask_caches_to_flush();
        let polled = self.depot.room.poll_turn(
            &mut wait.ticket,
            cx,
            &mut in_turn,
            |e| matches!(e, Error::Exhausted { .. }) && self.could_fit(max_size, small),
            on_join,
        );
        if let Poll::Ready(got) = &polled {
            let outcome = match got {
                Ok(_) => WaitOutcome::Granted,
                Err(_) => WaitOutcome::Failed,
            };
            self.end_wait(wait, outcome);
        }
        polled
    }

    /// Ends a wait (served, failed, timed out or dropped: `outcome`):
    /// leaves the list, passing a wake-up on if it was the head, uncounts
    /// its detour, and counts the wait and its duration. Harmless on a wait
    /// not in it.
    pub(crate) fn end_wait(&self, wait: &mut RoomWait, outcome: WaitOutcome) {
        if self.depot.room.leave_with(&mut wait.ticket) {
            self.detours.fetch_sub(1, SeqCst);
            if let Some(since) = wait.since.take() {
                let waited = since.elapsed();
                self.counters.waits.count(outcome, waited);
                if let Some(m) = &self.metrics {
                    m.record_wait(waited.as_secs_f64());
                }
            }
        }
    }

    /// A release while anyone waits for room: the free slot goes to the
    /// depot, where the head waiter can take it, this thread's cached slots
    /// (of any class) follow, and the head wakes.
    ///
    /// # Safety
    /// `slot` is the slot, marked free, of a buffer of this pool counted on
    /// `anchor` that is being released.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn release_to_waiters(
        self: &Arc<Self>,
        slot: SlotRef,
        anchor: AnchorRef,
    ) -> Released {
        // SAFETY: the slot of the buffer being released (caller's
        // contract), which keeps the pool and its slabs alive.
        let idx = unsafe { slot.get() }.class();
        // Wakes the head.
        self.depot.push_released(idx, slot);
        cache::flush_current(self);
        // SAFETY: the buffer counted on `anchor` is being released, once.
        unsafe { cache::settle(self, anchor) }
    }
}
