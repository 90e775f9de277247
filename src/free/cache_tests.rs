//! Unit tests of the thread caches (`cache.rs`): `FAST` and the entries.

use super::*;
use crate::class::SizeClasses;

/// The least a pool is to the thread caches.
struct TestPool {
    depot: Depot,
}

impl HasDepot for TestPool {
    fn depot(&self) -> &Depot {
        &self.depot
    }
}

fn pool() -> Arc<TestPool> {
    let classes = SizeClasses::new(crate::limits::page_size(), 1 << 16);
    Arc::new(TestPool {
        depot: Depot::new(&classes, true, [0; 3]),
    })
}

fn fast_points_at(depot: &Depot) -> bool {
    fast_entry(depot).is_some()
}

#[test]
fn fast_follows_the_last_entry_and_is_cleared_before_an_entry_retires() {
    std::thread::spawn(|| {
        let (a, b) = (pool(), pool());
        // One "buffer" of `a` issued on this thread: an entry, and `FAST`.
        // The test stands for the buffers: it releases each one it
        // counts once.
        // SAFETY: as just said.
        let anchor_a = unsafe { issue(&a) }.expect("an entry for a live pool");
        assert!(fast_points_at(a.depot()));
        // SAFETY: as for `anchor_a`.
        let anchor_b = unsafe { issue(&b) }.expect("an entry for b");
        assert!(fast_points_at(b.depot()) && !fast_points_at(a.depot()));
        // The entry for `a` is found again through the list.
        // SAFETY: as for `anchor_a`.
        assert_eq!(unsafe { issue(&a) }, Some(anchor_a));
        assert!(fast_points_at(a.depot()));
        // `a` is abandoned; making an entry for a third pool retires `a`'s
        // entry, clearing `FAST` first, while its buffers stay counted.
        a.depot().abandon();
        let c = pool();
        // SAFETY: as for `anchor_a`.
        let anchor_c = unsafe { issue(&c) }.expect("an entry for c");
        assert!(!fast_points_at(a.depot()) && fast_points_at(c.depot()));
        // An abandoned pool gets no new entry: its releases go remote.
        // SAFETY: as for `anchor_a`.
        assert_eq!(unsafe { settle(&a, anchor_a) }, Released::Remote);
        // Two buffers of `a` were issued and are still out: the anchor
        // (and its `Arc` of `a`) lives until both are released.
        assert_eq!(Arc::strong_count(&a), 2);
        // SAFETY: two buffers were counted on `anchor_a`, each released
        // once here.
        unsafe { AnchorCount::release_remote(anchor_a) };
        assert_eq!(Arc::strong_count(&a), 2);
        // SAFETY: as above.
        unsafe { AnchorCount::release_remote(anchor_a) };
        assert_eq!(Arc::strong_count(&a), 1);
        // The other buffers come back from "elsewhere" too; the entries
        // retire their anchors at this thread's exit.
        // SAFETY: one buffer counted on each, released once.
        unsafe {
            AnchorCount::release_remote(anchor_b);
            AnchorCount::release_remote(anchor_c);
        }
    })
    .join()
    .unwrap();
}
