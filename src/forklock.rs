//! Holding a lock across `fork()`: the `pthread_atfork` prepare handler
//! takes a lock with [`hold`] (the guard forgotten), and the parent and
//! child handlers let it go with [`release`] / [`release_write`]. Layers
//! above the pools (the C ABI's handle table) add their locks with
//! [`add_leaf`]. See the "Fork" section of [`design`](crate::design).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Release};

use crate::sync::{Mutex, RawMutex, RawRwLock, RwLock};

// The child's reset relies on this: the raw locks (`parking_lot`'s, or
// under Miri `sync::spin`'s) are one atomic each (a `u8` of lock and parked
// bits, a `usize` of reader count and bits), all 0 when unlocked with no
// waiter. A type of one field whose size is the field's has that field at
// offset 0.
const _: () = assert!(std::mem::size_of::<RawMutex>() == 1);
const _: () = assert!(std::mem::size_of::<RawRwLock>() == std::mem::size_of::<usize>());

/// Takes `m` and keeps it taken past this call (the guard is forgotten).
pub(crate) fn hold<T: ?Sized>(m: &Mutex<T>) {
    std::mem::forget(m.lock());
}

/// Takes `l` exclusively and keeps it taken past this call.
pub(crate) fn hold_write<T: ?Sized>(l: &RwLock<T>) {
    std::mem::forget(l.write());
}

/// Lets `m` go after [`hold`]. In the parent an ordinary unlock (its waiters
/// are real threads); in the child the lock is reset to its initial state:
/// a parent thread parked on it at the fork left its "parked" bit set, and
/// an unlock would hand the lock to that thread, which the child lacks.
///
/// # Safety
///
/// - `m` was taken by [`hold`] on this thread (in the child: on the thread
///   that called `fork`, which the child's only thread is) and not let go since.
/// - In the child, no other thread of the child uses `m` yet (the child
///   handler runs before `fork` returns, when the child has one thread).
pub(crate) unsafe fn release<T: ?Sized>(m: &Mutex<T>, child: bool) {
    if child {
        // SAFETY: `raw` only lends the raw lock, which the caller holds
        // (the first point above). `RawMutex` is one `AtomicU8` (its size,
        // asserted above), so its address is that atomic's, and 0 is its
        // unlocked state; no other thread exists to see the store (the
        // second point).
        unsafe { (*(m.raw() as *const RawMutex).cast::<AtomicU8>()).store(0, Release) };
    } else {
        // SAFETY: this thread holds `m` through a forgotten guard (the
        // first point above), so unlocking it is what that guard's drop would do.
        unsafe { m.force_unlock() };
    }
}

/// Lets `l` go after [`hold_write`], as [`release`] does a mutex.
///
/// # Safety
///
/// As [`release`]'s, with [`hold_write`] for [`hold`].
pub(crate) unsafe fn release_write<T: ?Sized>(l: &RwLock<T>, child: bool) {
    if child {
        // SAFETY: as in `release`: the caller holds `l` exclusively,
        // `RawRwLock` is one `AtomicUsize` (asserted above) whose unlocked
        // state is 0, and the child has no other thread.
        unsafe { (*(l.raw() as *const RawRwLock).cast::<AtomicUsize>()).store(0, Release) };
    } else {
        // SAFETY: this thread holds `l` exclusively through a forgotten guard.
        unsafe { l.force_unlock_write() };
    }
}

/// A process-wide lock of a layer above the pools, held across `fork` after
/// every pool lock: a leaf, under which no other pagepool lock is taken.
pub(crate) trait Leaf: Sync {
    /// Takes the lock and keeps it taken ([`hold`]).
    fn hold(&self);

    /// Lets it go ([`release`]).
    ///
    /// # Safety
    ///
    /// As [`release`]'s, with `Leaf::hold` for [`hold`].
    unsafe fn release(&self, child: bool);
}

impl<T: Send> Leaf for Mutex<T> {
    fn hold(&self) {
        hold(self);
    }

    unsafe fn release(&self, child: bool) {
        // SAFETY: the caller's contract is `release`'s.
        unsafe { release(self, child) }
    }
}

/// The leaves, in the order they were added.
static LEAVES: Mutex<Vec<&'static dyn Leaf>> = crate::sync::const_mutex(Vec::new());

/// Adds `leaf` to the locks the fork handlers hold; call it once per lock.
// Only the C ABI adds one today.
#[cfg_attr(not(feature = "capi"), allow(dead_code))]
pub(crate) fn add_leaf(leaf: &'static dyn Leaf) {
    LEAVES.lock().push(leaf);
}

/// Takes every leaf, in order (the list itself stays taken until
/// [`release_leaves`]).
pub(crate) fn hold_leaves() {
    hold(&LEAVES);
    // SAFETY: `LEAVES` was taken just above on this thread, its guard
    // forgotten; this reads it as that guard would.
    for leaf in unsafe { &*LEAVES.data_ptr() } {
        leaf.hold();
    }
}

/// Lets go, in reverse, what [`hold_leaves`] took.
///
/// # Safety
///
/// As [`release`]'s, with [`hold_leaves`] for [`hold`].
pub(crate) unsafe fn release_leaves(child: bool) {
    // SAFETY: the caller took `LEAVES` with `hold_leaves` on this thread;
    // each leaf's lock was taken there by its `hold`, so its `release`'s
    // contract is the caller's.
    unsafe {
        for leaf in (*LEAVES.data_ptr()).iter().rev() {
            leaf.release(child);
        }
        release(&LEAVES, child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_locks_are_let_go() {
        let m = Mutex::new(1);
        let l = RwLock::new(());
        for child in [false, true] {
            hold(&m);
            hold_write(&l);
            assert!(m.try_lock().is_none() && l.try_read().is_none());
            // SAFETY: both were taken just above on this thread, and no
            // other thread uses them.
            unsafe {
                release(&m, child);
                release_write(&l, child);
            }
            assert!(m.try_lock().is_some() && l.try_write().is_some());
        }
    }
}
