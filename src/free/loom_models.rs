//! Loom models of the anchor's biased count: every interleaving of an
//! owner that issues, takes back and retires, and threads that release
//! remotely, frees the anchor (and drops its pool) exactly once, after the
//! last release's last access.
//!
//! ```text
//! RUSTFLAGS="--cfg pagepool_loom" cargo test --release --lib loom_models
//! ```

use std::ptr::NonNull;
use std::sync::Arc;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;

use super::anchor::{Anchor, AnchorCount, AnchorRef};

/// Stands for a pool: memory each releasing thread writes (as a release
/// writes its own slot's metadata), and a drop that writes all of it, so
/// loom reports a race if the pool can be dropped before a release's writes
/// happen before it.
struct Pool {
    /// One cell per buffer: releases of different buffers touch different
    /// slots.
    memory: [UnsafeCell<u64>; 3],
    drops: Arc<AtomicUsize>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for cell in &self.memory {
            // SAFETY: loom checks this access against every other.
            cell.with_mut(|m| unsafe { *m += 1 });
        }
        self.drops.fetch_add(1, SeqCst);
    }
}

/// An `AnchorRef` sent to another thread, as a buffer carries its anchor.
struct Sent(AnchorRef);
// SAFETY: an anchor is shared by design: its count is atomic, and the pool
// behind it is `Sync` in the crate (here only touched through loom cells).
unsafe impl Send for Sent {}

/// The release of buffer `i` on another thread: touch its part of the
/// pool, then the remote decrement.
fn release_remote(anchor: Sent, i: usize) {
    let anchor: NonNull<_> = anchor.0;
    // SAFETY: the buffer being released keeps the anchor and its pool alive.
    let pool = unsafe { Anchor::<Pool>::pool(anchor) };
    // SAFETY: loom checks this access against every other.
    pool.memory[i].with_mut(|m| unsafe { *m += 1 });
    // SAFETY: one buffer counted on `anchor`, released once; not touched
    // after.
    unsafe { AnchorCount::release_remote(anchor) };
}

fn pool(drops: &Arc<AtomicUsize>) -> Arc<Pool> {
    Arc::new(Pool {
        memory: std::array::from_fn(|_| UnsafeCell::new(0)),
        drops: Arc::clone(drops),
    })
}

#[test]
fn owner_retires_while_a_remote_release_races() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let anchor = Anchor::owned(pool(&drops));
        // The owner issued two buffers; one goes to another thread.
        let remote = Sent(anchor);
        let t = thread::spawn(move || release_remote(remote, 0));
        // The other is taken back on the owner (its plain count: 2 - 1), and
        // the owner's thread exits.
        // SAFETY: the owner retires once with its final count.
        unsafe { AnchorCount::retire(anchor, 1) };
        t.join().unwrap();
        assert_eq!(drops.load(SeqCst), 1);
    });
}

#[test]
fn two_remote_releases_race_with_retirement() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let anchor = Anchor::owned(pool(&drops));
        let (a, b) = (Sent(anchor), Sent(anchor));
        let ta = thread::spawn(move || release_remote(a, 0));
        let tb = thread::spawn(move || release_remote(b, 1));
        // Two buffers issued, both released elsewhere: the plain count is 2.
        // SAFETY: as above.
        unsafe { AnchorCount::retire(anchor, 2) };
        ta.join().unwrap();
        tb.join().unwrap();
        assert_eq!(drops.load(SeqCst), 1);
    });
}

#[test]
fn a_remote_release_before_retirement_never_frees() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let anchor = Anchor::owned(pool(&drops));
        let remote = Sent(anchor);
        let t = thread::spawn(move || release_remote(remote, 0));
        t.join().unwrap();
        // The count went negative, not to zero: the owner still holds it.
        assert_eq!(drops.load(SeqCst), 0);
        // SAFETY: the owner's pool access, then its retirement with the one
        // buffer it issued.
        unsafe { Anchor::<Pool>::pool(anchor) }.memory[2].with_mut(|m| unsafe { *m += 1 });
        // SAFETY: as above.
        unsafe { AnchorCount::retire(anchor, 1) };
        assert_eq!(drops.load(SeqCst), 1);
    });
}

#[test]
fn a_detached_anchor_is_freed_by_its_one_release() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let anchor = Sent(Anchor::detached(pool(&drops)));
        let t = thread::spawn(move || release_remote(anchor, 0));
        t.join().unwrap();
        assert_eq!(drops.load(SeqCst), 1);
    });
}
