//! A pool's mapped slabs, by class, and the events their mapping and
//! unmapping raise.
//!
//! [`SlabSet`] is the only owner of slabs: every slab enters through
//! [`SlabSet::insert`] and leaves through [`SlabSet::retain_class`],
//! [`SlabSet::clear`] or the set's drop, so every subscriber
//! ([`SlabEvents`]) hears of each mapping once, before any slot of it is
//! handed out, and of each unmapping once, before the memory goes away. The
//! fault handler's slab table subscribes when the pool is built; an io_uring
//! buffer registration subscribes to a live pool with
//! [`SlabSet::subscribe`], which replays the slabs already mapped, and
//! leaves with [`SlabSet::unsubscribe`], which replays their unmapping.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use super::slab::{Layout, Slab};
use super::slot::Slot;
use crate::class::{ClassIdx, SizeClasses};

/// What subscribers learn of a slab being mapped or unmapped.
#[derive(Debug)]
pub(crate) struct SlabDesc<'a> {
    /// The pool's name.
    pub(crate) pool: &'a Arc<str>,
    /// First mapped byte.
    pub(crate) base: usize,
    /// Bytes mapped, guard pages included.
    pub(crate) len: usize,
    /// How its slots are laid out.
    pub(crate) layout: Layout,
    /// Its slot metadata, in address order: at this address from `mapped`
    /// until `unmapped` for the same `base`.
    pub(crate) slots: &'a [Slot],
}

/// A subscriber to slab mappings.
pub(crate) trait SlabEvents: Send + Sync + fmt::Debug {
    /// A slab was mapped; none of its slots has been handed out yet.
    fn mapped(&self, slab: &SlabDesc<'_>);

    /// A slab is about to be unmapped; no slot of it is in use.
    fn unmapped(&self, slab: &SlabDesc<'_>);

    /// Whether this subscriber holds the pages of page-class slots (an
    /// io_uring buffer registration pins them): a trim must not discard
    /// them, since the holder would keep the old pages while the slot maps
    /// fresh zero ones.
    fn pins_pages(&self) -> bool {
        false
    }

    /// Before `fork`, with the slab lock held by the fork handler: takes
    /// and keeps this subscriber's own locks ([`crate::forklock::hold`]).
    fn fork_hold(&self) {}

    /// After `fork`: lets go what [`fork_hold`](Self::fork_hold) took; in
    /// the child (`child`), also forgets what the child must not share
    /// with the parent (an io_uring instance).
    ///
    /// # Safety
    ///
    /// As [`crate::forklock::release`]'s: this thread called `fork_hold`
    /// just before the fork, and in the child no other thread runs yet.
    unsafe fn fork_release(&self, child: bool) {
        let _ = child;
    }
}

/// The mapped slabs of one pool, by class, each list sorted by base
/// address; see the module docs.
#[derive(Debug)]
pub(crate) struct SlabSet {
    /// The pool's name, for the events.
    pool: Arc<str>,
    /// One list per class of the pool's table, in its order, each sorted by
    /// base address.
    classes: Vec<(ClassIdx, Vec<Slab>)>,
    /// Told of every mapping and unmapping, in order.
    subscribers: Vec<Arc<dyn SlabEvents>>,
}

impl SlabSet {
    /// An empty set for the classes of pool `pool`.
    pub(crate) fn new(
        pool: Arc<str>,
        classes: &SizeClasses,
        subscribers: Vec<Arc<dyn SlabEvents>>,
    ) -> SlabSet {
        SlabSet {
            pool,
            classes: classes.all().map(|c| (c, Vec::new())).collect(),
            subscribers,
        }
    }

    fn describe<'a>(pool: &'a Arc<str>, slab: &'a Slab) -> SlabDesc<'a> {
        SlabDesc {
            pool,
            base: slab.base(),
            len: slab.reserved(),
            layout: slab.layout(),
            slots: slab.slots(),
        }
    }

    /// Adds a freshly mapped slab of class `class`, tells the subscribers,
    /// and returns it where it now lives.
    pub(crate) fn insert(&mut self, class: ClassIdx, slab: Slab) -> &Slab {
        let desc = Self::describe(&self.pool, &slab);
        for s in &self.subscribers {
            s.mapped(&desc);
        }
        let list = &mut self.classes[class.get()].1;
        let at = list.partition_point(|s| s.base() < slab.base());
        list.insert(at, slab);
        &list[at]
    }

    /// Adds `subscriber`, first telling it `mapped` for every slab already
    /// mapped. Called under the pool's slab lock, as every event is, so the
    /// subscriber hears of each live slab exactly once: from this replay or
    /// from a later [`insert`](Self::insert).
    pub(crate) fn subscribe(&mut self, subscriber: Arc<dyn SlabEvents>) {
        for (_, slab) in self.iter() {
            subscriber.mapped(&Self::describe(&self.pool, slab));
        }
        self.subscribers.push(subscriber);
    }

    /// Removes `subscriber` (the same `Arc` given to
    /// [`subscribe`](Self::subscribe)), telling it `unmapped` for every slab
    /// still mapped, so it ends holding none; returns whether it was
    /// subscribed (if not, it is told nothing).
    pub(crate) fn unsubscribe(&mut self, subscriber: &Arc<dyn SlabEvents>) -> bool {
        // Compare the data pointers only: the same object may be seen
        // through different vtable pointers.
        let target = Arc::as_ptr(subscriber).cast::<()>();
        let Some(at) = self
            .subscribers
            .iter()
            .position(|s| Arc::as_ptr(s).cast::<()>() == target)
        else {
            return false;
        };
        let gone = self.subscribers.remove(at);
        for (_, slab) in self.iter() {
            gone.unmapped(&Self::describe(&self.pool, slab));
        }
        true
    }

    /// Each subscriber's [`SlabEvents::fork_hold`], in order.
    pub(crate) fn fork_hold_subscribers(&self) {
        for s in &self.subscribers {
            s.fork_hold();
        }
    }

    /// Each subscriber's [`SlabEvents::fork_release`], in reverse.
    ///
    /// # Safety
    ///
    /// As [`SlabEvents::fork_release`]'s, with
    /// [`fork_hold_subscribers`](Self::fork_hold_subscribers) for `fork_hold`.
    pub(crate) unsafe fn fork_release_subscribers(&self, child: bool) {
        for s in self.subscribers.iter().rev() {
            // SAFETY: the caller's contract, for each subscriber.
            unsafe { s.fork_release(child) };
        }
    }

    /// Whether a subscriber pins the pages of page-class slots
    /// ([`SlabEvents::pins_pages`]): then no free slot's pages may be
    /// discarded.
    pub(crate) fn pages_pinned(&self) -> bool {
        self.subscribers.iter().any(|s| s.pins_pages())
    }

    /// The slabs of class `class`, by address.
    pub(crate) fn class(&self, class: ClassIdx) -> &[Slab] {
        &self.classes[class.get()].1
    }

    /// Every slab, by class, then by address.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ClassIdx, &Slab)> {
        self.classes
            .iter()
            .flat_map(|(class, list)| list.iter().map(move |slab| (*class, slab)))
    }

    /// Where every slab's slot metadata lies now: `(class, first slot,
    /// slots)`, for a scan that reads them after the set's lock is gone
    /// (its caller keeps the slabs mapped meanwhile).
    pub(crate) fn spans(&self) -> Vec<(ClassIdx, NonNull<Slot>, usize)> {
        self.iter()
            .map(|(class, slab)| {
                let slots = slab.slots();
                (class, NonNull::from(slots).cast(), slots.len())
            })
            .collect()
    }

    /// The index in `class(class)` of the slab holding `addr`, if any.
    pub(crate) fn owner(&self, class: ClassIdx, addr: usize) -> Option<usize> {
        let list = self.class(class);
        let at = list
            .partition_point(|slab| slab.base() <= addr)
            .checked_sub(1)?;
        list[at].contains(addr).then_some(at)
    }

    /// Unmaps the slabs of class `class` that `keep` (given each slab's
    /// index) rejects, telling the subscribers first; returns them, already
    /// unmapped, as `(reserved bytes, unguarded slots, slots)` each.
    ///
    /// # Safety
    /// No slot of a rejected slab is in use, on a free list, or anywhere it
    /// will be dereferenced again.
    pub(crate) unsafe fn retain_class(
        &mut self,
        class: ClassIdx,
        mut keep: impl FnMut(usize) -> bool,
    ) -> Vec<(usize, usize, usize)> {
        let list = std::mem::take(&mut self.classes[class.get()].1);
        let mut kept = Vec::with_capacity(list.len());
        let mut gone = Vec::new();
        for (i, slab) in list.into_iter().enumerate() {
            if keep(i) {
                kept.push(slab);
            } else {
                gone.push((slab.reserved(), slab.unguarded(), slab.slots().len()));
                self.unmap(slab);
            }
        }
        self.classes[class.get()].1 = kept;
        gone
    }

    /// Unmaps every slab.
    ///
    /// # Safety
    /// No slot of any slab is in use, and none will be dereferenced again
    /// (pointers left in thread caches are only pushed back to free lists).
    pub(crate) unsafe fn clear(&mut self) {
        let lists: Vec<Vec<Slab>> = self
            .classes
            .iter_mut()
            .map(|(_, list)| std::mem::take(list))
            .collect();
        for slab in lists.into_iter().flatten() {
            self.unmap(slab);
        }
    }

    fn unmap(&self, slab: Slab) {
        let desc = Self::describe(&self.pool, &slab);
        for s in &self.subscribers {
            s.unmapped(&desc);
        }
        drop(slab);
    }
}

impl Drop for SlabSet {
    fn drop(&mut self) {
        // SAFETY: the set goes with its pool, after the last buffer and the
        // last thread cache entry (whose anchor kept the pool alive).
        unsafe { self.clear() };
    }
}
