//! Subscribing to a live pool's slab events: the entry point for observers
//! that join after the pool is built (an io_uring buffer registry), beside
//! the fault table given at build.

use std::sync::Arc;

use super::PoolInner;
use crate::mem::slabs::SlabEvents;

impl PoolInner {
    /// Subscribes `subscriber` to this pool's slab events, first replaying
    /// `mapped` for every slab already mapped. All under the slab lock, so
    /// no slab is missed or told twice, and no slab is mapped or unmapped
    /// meanwhile.
    ///
    /// The subscriber is called with the slab lock held, from whichever
    /// thread maps or trims: it must not call back into this pool.
    // Only the io-uring feature subscribes today.
    #[cfg_attr(not(all(feature = "io-uring", target_os = "linux")), allow(dead_code))]
    pub(crate) fn subscribe(&self, subscriber: Arc<dyn SlabEvents>) {
        self.slabs.lock().subscribe(subscriber);
    }

    /// Removes `subscriber`, replaying `unmapped` for every slab still
    /// mapped, under the slab lock; returns whether it was subscribed.
    #[cfg_attr(not(all(feature = "io-uring", target_os = "linux")), allow(dead_code))]
    pub(crate) fn unsubscribe(&self, subscriber: &Arc<dyn SlabEvents>) -> bool {
        self.slabs.lock().unsubscribe(subscriber)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};

    use super::*;
    use crate::mem::slabs::SlabDesc;
    use crate::BufferPool;

    /// Counts live slabs and events.
    #[derive(Debug, Default)]
    struct Count {
        live: AtomicIsize,
        events: AtomicUsize,
    }

    impl SlabEvents for Count {
        fn mapped(&self, _: &SlabDesc<'_>) {
            self.live.fetch_add(1, Relaxed);
            self.events.fetch_add(1, Relaxed);
        }
        fn unmapped(&self, _: &SlabDesc<'_>) {
            self.live.fetch_sub(1, Relaxed);
            self.events.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn subscribe_replays_and_unsubscribe_unwinds() {
        let pool = BufferPool::builder().metrics(false).build().unwrap();
        let a = pool.allocate_page_size_buffer(4096).unwrap();
        let b = pool.allocate_page_size_buffer(64 * 1024).unwrap();
        let count = Arc::new(Count::default());
        let sub: Arc<dyn SlabEvents> = count.clone();
        pool.inner.subscribe(Arc::clone(&sub));
        // Two classes, one slab each, replayed.
        assert_eq!(count.live.load(Relaxed), 2);
        let c = pool.allocate_page_size_buffer(1 << 20).unwrap();
        assert_eq!(count.live.load(Relaxed), 3);
        drop((a, c));
        pool.trim();
        // The 4 KiB and 1 MiB slabs are idle and unmapped; b's stays.
        assert_eq!(count.live.load(Relaxed), 1);
        assert!(pool.inner.unsubscribe(&sub));
        assert_eq!(count.live.load(Relaxed), 0);
        let events = count.events.load(Relaxed);
        assert!(!pool.inner.unsubscribe(&sub));
        drop(b);
        pool.trim();
        assert_eq!(count.events.load(Relaxed), events, "no event after leaving");
    }
}
