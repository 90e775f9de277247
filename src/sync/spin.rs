//! Locks for Miri runs: `lock_api` locks over raw locks of one atomic each
//! that spin with `yield_now`.
//! They keep `parking_lot`'s layout (a `u8` mutex, a `usize` rwlock, 0 when
//! unlocked), on which the fork handlers rely (`forklock`), and its API.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::thread;

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
