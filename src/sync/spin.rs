//! Locks for Miri runs: `lock_api` locks over raw locks of one atomic each
//! that spin with `yield_now`, and a condition variable of a wake count.
//! They keep `parking_lot`'s layout (a `u8` mutex, a `usize` rwlock, 0 when
//! unlocked), on which the fork handlers rely (`forklock`), and its API.

use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::lock_api::{self, GuardSend};

/// A mutex over [`RawMutex`].
pub(crate) type Mutex<T> = lock_api::Mutex<RawMutex, T>;
/// Its guard.
pub(crate) type MutexGuard<'a, T> = lock_api::MutexGuard<'a, RawMutex, T>;
/// A reader-writer lock over [`RawRwLock`].
pub(crate) type RwLock<T> = lock_api::RwLock<RawRwLock, T>;

/// A mutex usable in a `static`, as `parking_lot::const_mutex`.
pub(crate) const fn const_mutex<T>(value: T) -> Mutex<T> {
    Mutex::const_new(<RawMutex as lock_api::RawMutex>::INIT, value)
}

/// A mutex of one byte: 0 unlocked, 1 locked.
#[derive(Debug)]
pub(crate) struct RawMutex(AtomicU8);

// SAFETY: `lock` and `try_lock` succeed only by swapping 0 for 1, so one
// holder at a time; they acquire what `unlock`'s release store published.
unsafe impl lock_api::RawMutex for RawMutex {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: RawMutex = RawMutex(AtomicU8::new(0));
    type GuardMarker = GuardSend;

    fn lock(&self) {
        while !self.try_lock() {
            thread::yield_now();
        }
    }

    fn try_lock(&self) -> bool {
        self.0
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    unsafe fn unlock(&self) {
        self.0.store(0, Ordering::Release);
    }
}

/// A reader-writer lock of one word: 0 unlocked, [`WRITER`] written,
/// else the number of readers.
#[derive(Debug)]
pub(crate) struct RawRwLock(AtomicUsize);

/// The state of a [`RawRwLock`] held exclusively.
const WRITER: usize = usize::MAX;

// SAFETY: a writer enters only from 0 and leaves 0 behind; a reader enters
// only from a count below `WRITER - 1` and takes one back on leaving, so a
// writer excludes everyone and readers exclude writers. Entries acquire what
// exits released.
unsafe impl lock_api::RawRwLock for RawRwLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: RawRwLock = RawRwLock(AtomicUsize::new(0));
    type GuardMarker = GuardSend;

    fn lock_shared(&self) {
        while !self.try_lock_shared() {
            thread::yield_now();
        }
    }

    fn try_lock_shared(&self) -> bool {
        let n = self.0.load(Ordering::Relaxed);
        n < WRITER - 1
            && self
                .0
                .compare_exchange(n, n + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    unsafe fn unlock_shared(&self) {
        self.0.fetch_sub(1, Ordering::Release);
    }

    fn lock_exclusive(&self) {
        while !self.try_lock_exclusive() {
            thread::yield_now();
        }
    }

    fn try_lock_exclusive(&self) -> bool {
        self.0
            .compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    unsafe fn unlock_exclusive(&self) {
        self.0.store(0, Ordering::Release);
    }
}

/// A condition variable: waiters watch a count that every notify bumps.
/// Wakes may be spurious, as `parking_lot`'s may.
#[derive(Debug)]
pub(crate) struct Condvar {
    wakes: AtomicU32,
}

/// Whether a timed wait ended at its timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// `true` if the wait ended because its time ran out.
    #[allow(dead_code)]
    pub(crate) fn timed_out(self) -> bool {
        self.0
    }
}

impl Condvar {
    /// A condition variable no one waits on.
    pub(crate) const fn new() -> Condvar {
        Condvar {
            wakes: AtomicU32::new(0),
        }
    }

    /// Unlocks `guard` until a notify, then locks it again.
    pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        let seen = self.wakes.load(Ordering::Acquire);
        MutexGuard::unlocked(guard, || {
            while self.wakes.load(Ordering::Acquire) == seen {
                thread::yield_now();
            }
        });
    }

    /// Unlocks `guard` until a notify or `deadline`, then locks it again.
    pub(crate) fn wait_until<T>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        deadline: Instant,
    ) -> WaitTimeoutResult {
        let seen = self.wakes.load(Ordering::Acquire);
        let mut timed_out = false;
        MutexGuard::unlocked(guard, || {
            while self.wakes.load(Ordering::Acquire) == seen {
                if Instant::now() >= deadline {
                    timed_out = true;
                    return;
                }
                thread::yield_now();
            }
        });
        WaitTimeoutResult(timed_out)
    }

    /// Unlocks `guard` until a notify or `timeout`, then locks it again.
    #[allow(dead_code)]
    pub(crate) fn wait_for<T>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        timeout: Duration,
    ) -> WaitTimeoutResult {
        self.wait_until(guard, Instant::now() + timeout)
    }

    /// Wakes the waiters (all of them: a wake may be spurious).
    pub(crate) fn notify_one(&self) {
        self.notify_all();
    }

    /// Wakes every waiter.
    pub(crate) fn notify_all(&self) {
        self.wakes.fetch_add(1, Ordering::Release);
    }
}
