//! Waiting for room: `allocate_page_size_buffer_timeout` when the cap is
//! reached, and the releases that wake the waiters.

use std::cell::Cell;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::PoolInner;
use crate::free::anchor::{AnchorRef, Released};
use crate::free::cache;
use crate::mem::slot::SlotRef;
use crate::Error;

/// The longest sleep between two tries.
const SLICE: Duration = Duration::from_millis(1);

/// Threads waiting for room in one pool, and how they are woken.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    /// Threads waiting now. While it is not 0, releases go to the depot
    /// (not thread caches) and wake the waiters.
    count: AtomicU32,
    /// Bumped (under its lock) by every release that wakes waiters, so a
    /// waiter that saw a release since its last try does not sleep.
    generation: Mutex<u64>,
    /// Where waiters sleep.
    wake: Condvar,
}

impl Waiters {
    /// Whether any thread waits (a relaxed read: see `wait_for_room`).
    #[inline]
    pub(super) fn any(&self) -> bool {
        self.count.load(Relaxed) != 0
    }
}

thread_local! {
    /// Set while this thread waits for room: its repeated tries do not
    /// count as more `exhausted` refusals.
    static RETRYING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is retrying inside `wait_for_room`.
pub(super) fn retrying() -> bool {
    RETRYING.with(Cell::get)
}

impl PoolInner {
    /// The waiting part of `allocate_page_size_buffer_timeout`: `retry` (an
    /// allocation of `max_size` bytes) until it is not `Exhausted` or
    /// `timeout` passes.
    ///
    /// The waiter counts itself in `waiters` and in `detours` (the one word
    /// every release loads), and asks every thread to flush its cache. A
    /// release's check of `detours` is a relaxed load, so a release racing
    /// with the waiter's arrival can miss it; the waiter therefore never
    /// sleeps more than [`SLICE`] between tries, which bounds a lost
    /// wake-up's cost.
    #[cold]
    pub(crate) fn wait_for_room<T>(
        self: &Arc<Self>,
        max_size: usize,
        timeout: Duration,
        mut retry: impl FnMut() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let start = Instant::now();
        // `None`: a timeout too long to add to now, i.e. wait for ever.
        let deadline = start.checked_add(timeout);
        self.waiters.count.fetch_add(1, SeqCst);
        self.detours.fetch_add(1, SeqCst);
        // Counted out again however this ends (even by a panic in a
        // tracing subscriber).
        struct Waiting<'a>(&'a PoolInner);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.detours.fetch_sub(1, SeqCst);
                self.0.waiters.count.fetch_sub(1, SeqCst);
                RETRYING.with(|r| r.set(false));
            }
        }
        RETRYING.with(|r| r.set(true));
        let _waiting = Waiting(self);
        // Buffers other threads cached before we started waiting: ask for them.
        self.ask_caches_to_flush();
        loop {
            let seen = *self.waiters.generation.lock();
            match retry() {
                Err(Error::Exhausted { .. }) => {}
                other => return other,
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if now >= d => {
                    return Err(Error::TimedOut {
                        requested: max_size,
                        waited: now - start,
                    })
                }
                Some(d) => d - now,
                None => SLICE,
            };
            let mut generation = self.waiters.generation.lock();
            if *generation == seen {
                self.waiters.wake.wait_for(&mut generation, left.min(SLICE));
            }
        }
    }

    /// A release while threads wait for room: the free slot goes to the
    /// depot, where a waiter can take it, this thread's cached slots (of
    /// any class) follow, and the waiters wake.
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
        self.depot.push_released(idx, slot);
        cache::flush_current(self);
        // SAFETY: the buffer counted on `anchor` is being released, once.
        let released = unsafe { cache::settle(self, anchor) };
        *self.waiters.generation.lock() += 1;
        self.waiters.wake.notify_all();
        released
    }
}
