//! The byte cap, read by mapping and changed at run time, and closing the
//! pool to new buffers; both wake waiters.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use super::PoolInner;
use crate::Error;

impl PoolInner {
    /// The cap on reserved bytes, `None` when unlimited.
    #[inline]
    pub(crate) fn max_bytes(&self) -> Option<usize> {
        *self.limit.lock()
    }

    /// `BufferPool::set_max_bytes`: a new cap (`None`: unlimited). A raised
    /// cap wakes the head waiter; a lowered one trims idle slabs at once,
    /// and maps no more until `reserved` is under it.
    pub(crate) fn set_max_bytes(&self, limit: Option<usize>) -> Result<(), Error> {
        if limit.is_some_and(|m| m < self.config.smallest_cap(self.page)) {
            return Err(Error::InvalidConfig(
                "max_bytes cannot hold one page-sized slot and its guard pages",
            ));
        }
        let mut slabs = self.slabs.lock();
        let old = std::mem::replace(&mut *self.limit.lock(), limit);
        if limit.is_some_and(|new| old.is_none_or(|old| new < old)) {
            self.trim_locked(&mut slabs, None);
        }
        self.update_near_cap();
        drop(slabs);
        self.depot.notify_room();
        Ok(())
    }

    /// Recomputes whether the pool is *near its cap* (the room left under
    /// it is less than one standard slab) and keeps a detour counted while
    /// it is: near the cap, releases go to the shared free lists, never to a
    /// thread's cache, so no free slot can sit stranded in an idle thread
    /// when another needs it, and `trim` reaches every free slot. Call with
    /// the slab lock held, after `reserved` or the cap changed.
    pub(super) fn update_near_cap(&self) {
        let near = self.max_bytes().is_some_and(|limit| {
            limit.saturating_sub(self.counters.reserved.load(Relaxed)) < self.config.slab_size
        });
        if self.depot.set_near_cap(near) {
            if near {
                self.detours.fetch_add(1, SeqCst);
                // Slots cached before go back at each thread's next call.
                self.depot.request_flush();
            } else {
                self.detours.fetch_sub(1, SeqCst);
            }
        }
    }

    /// Whether the pool makes no more buffers.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// Closes the pool to new buffers (`BufferPool::close`, and the last
    /// handle's drop): allocations fail with `Closed` and every wait ends
    /// with it. Buffers out keep working and come back as before. Returns
    /// whether this call closed it.
    pub(crate) fn close_to_new_buffers(&self) -> bool {
        if self.closed.swap(true, SeqCst) {
            return false;
        }
        // A detour for every release from now on (see `release_detour`),
        // and a flush request so the next allocation on every thread leaves
        // its cache for the slow path, which refuses.
        self.detours.fetch_add(1, SeqCst);
        self.depot.request_flush();
        self.depot.room.wake_all();
        self.wake_quota_waiters();
        true
    }
}
