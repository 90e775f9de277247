//! Fork safety: a registry of live pools, and `pthread_atfork` handlers
//! (registered once per process) that hold every lock of every pool across
//! `fork()`, so that a child never inherits one held by a thread it lacks.
//! See the "Fork" section of [`design`](crate::design).
//!
//! The prepare handler takes, pool by pool and in this order, the locks the
//! code nests in this order: `slabs`, `mapped` (exclusively: it waits for
//! running scans), `limit`, `backtraces`, the quarantine, the quota book
//! (accounts, each account's waiters), the depot (thread counters,
//! waiters, each class's batch lock) and its slab-event subscribers' locks (an io_uring registry's
//! table); then the process-wide metric-name, thread-name and call-site
//! registries, the fault handler's install lock, the publisher's timer
//! heap, and the leaves added by
//! layers above (the C ABI's handle table and report callback), which are
//! taken under pool locks or alone. No code holds two pools' locks at once,
//! nor any of them while it takes the registry (a pool leaves it first
//! thing in its drop).

use std::collections::BTreeMap;
use std::sync::{Arc, Once, Weak};

use crate::sync::Mutex;

use super::{PoolInner, QuotaAccount};
use crate::forklock;
use crate::observe::{fault, metrics, publisher};
use crate::site;
use crate::threads;

/// The pools held across a fork, with the quota accounts whose waiters'
/// queues were taken.
type Held = Vec<(Arc<PoolInner>, Vec<Arc<QuotaAccount>>)>;

/// Live pools, and (between the prepare handler and the parent's or
/// child's) the ones the prepare handler holds.
struct Registry {
    /// By the address of the pool's `PoolInner` (unique while it lives; a
    /// pool leaves in its drop), so that adding and removing one cost
    /// O(log n), not a scan of every live pool.
    pools: BTreeMap<usize, Weak<PoolInner>>,
    held: Held,
}

static REGISTRY: Mutex<Registry> = crate::sync::const_mutex(Registry {
    pools: BTreeMap::new(),
    held: Vec::new(),
});

/// Adds a pool to the registry, installing the handlers on first use.
pub(super) fn register(pool: &Arc<PoolInner>) {
    static HANDLERS: Once = Once::new();
    HANDLERS.call_once(|| {
        // SAFETY: the three handlers are `extern "C" fn()`s that live for
        // the whole program; registering them has no other precondition.
        let e = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if e != 0 {
            tracing::warn!(
                target: "pagepool",
                error = e,
                "pthread_atfork failed: a child of fork() may inherit a pool lock held"
            );
        }
    });
    REGISTRY
        .lock()
        .pools
        .insert(Arc::as_ptr(pool).addr(), Arc::downgrade(pool));
}

/// Removes the pool at `pool` (being dropped).
pub(super) fn deregister(pool: *const PoolInner) {
    REGISTRY.lock().pools.remove(&pool.addr());
}

impl PoolInner {
    /// Takes every lock of this pool, in the order of the module docs;
    /// returns the quota accounts whose queues it took.
    fn fork_hold(&self) -> Vec<Arc<QuotaAccount>> {
        forklock::hold(&self.slabs);
        // SAFETY: the slab lock was taken just above on this thread (its
        // guard forgotten); this reads the set as that guard would.
        unsafe { &*self.slabs.data_ptr() }.fork_hold_subscribers();
        forklock::hold_write(&self.mapped);
        forklock::hold(&self.limit);
        forklock::hold(&self.backtraces);
        self.quarantine.fork_hold();
        let accounts = self.quotas.fork_hold();
        self.depot.fork_hold();
        accounts
    }

    /// Lets go what [`fork_hold`](Self::fork_hold) took, in reverse.
    ///
    /// # Safety
    ///
    /// As [`forklock::release`]'s: this thread took them with `fork_hold`,
    /// which returned `accounts`, and in the child no other thread runs yet.
    unsafe fn fork_release(&self, accounts: &[Arc<QuotaAccount>], child: bool) {
        // SAFETY: the caller's contract is `release`'s, for every lock.
        unsafe {
            self.depot.fork_release(child);
            self.quotas.fork_release(accounts, child);
            self.quarantine.fork_release(child);
            forklock::release(&self.backtraces, child);
            forklock::release(&self.limit, child);
            forklock::release_write(&self.mapped, child);
            // The slab lock is still held by `fork_hold`, on this thread, and
            // the subscribers' locks were taken there.
            (*self.slabs.data_ptr()).fork_release_subscribers(child);
            forklock::release(&self.slabs, child);
        }
    }
}

/// Before `fork`: takes the registry, then every live pool's locks, then the
/// process-wide registries.
extern "C" fn prepare() {
    forklock::hold(&REGISTRY);
    // SAFETY: the registry was taken just above on this thread (its guard
    // forgotten); this uses it as that guard would, until `finish`.
    let r = unsafe { &mut *REGISTRY.data_ptr() };
    let held: Held = r
        .pools
        .values()
        .filter_map(Weak::upgrade)
        .map(|p| {
            let accounts = p.fork_hold();
            (p, accounts)
        })
        .collect();
    r.held = held;
    metrics::fork_hold_names();
    threads::fork_hold();
    site::fork_hold();
    fault::fork_hold();
    publisher::fork_hold();
    forklock::hold_leaves();
}

/// After `fork`, in the parent.
extern "C" fn parent() {
    finish(false);
}

/// After `fork`, in the child: its only thread is the one that forked.
extern "C" fn child() {
    finish(true);
}

/// Lets go, in reverse, what `prepare` took; in the child, then closes the
/// pools whose slabs the child did not inherit.
fn finish(child: bool) {
    // SAFETY: `prepare` ran on this thread just before the fork (the C
    // library runs the parent or child handlers on the thread that ran the
    // prepare handlers) and took these; in the child only this thread exists.
    let held = unsafe {
        forklock::release_leaves(child);
        publisher::fork_release(child);
        fault::fork_release(child);
        site::fork_release(child);
        threads::fork_release(child);
        metrics::fork_release_names(child);
        // The registry is still held by `prepare`, on this thread.
        let held = std::mem::take(&mut (*REGISTRY.data_ptr()).held);
        for (pool, accounts) in &held {
            pool.fork_release(accounts, child);
        }
        forklock::release(&REGISTRY, child);
        held
    };
    if child {
        for (pool, _) in &held {
            if !pool.config.inherit_on_fork {
                pool.close_to_new_buffers();
            }
        }
    }
    // Dropped last, with no lock held: this may be a pool's last reference.
    drop(held);
}
