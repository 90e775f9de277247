//! The publisher: one thread per process that ticks every periodic target
//! (each pool with metrics or decay on) at its own interval, from a timer heap of weak
//! references, so that 10,000 pools cost one thread, not 10,000.
//!
//! Targets are plain [`Periodic`] values behind a `Weak`: the thread never
//! keeps one alive between ticks, and a target whose last strong reference
//! is gone, or whose tick says so, leaves the heap. The heap's lock is held
//! only to pop and push entries, never across a tick, and is held across
//! `fork` by the pool's handlers ([`fork_hold`]). A `fork` child has no
//! publisher thread: the first [`ensure_running`] there (a pool built,
//! `stats`, `publish_metrics`, a slab mapped) starts a new one, which
//! ticks the inherited targets too.
//!
//! The lock and condition variable are `std`'s (futexes), not
//! `parking_lot`'s: the thread sleeps on them between ticks, so at almost
//! every `fork` it is parked there, and `parking_lot` would leave its wait
//! entry in the child's copy of its process-wide wait table, where the
//! child's new publisher thread, built on the dead one's recycled stack,
//! corrupted the queue. A futex keeps its waiters in the kernel, per process.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

/// Something the publisher ticks periodically.
pub(crate) trait Periodic: Send + Sync {
    /// One round of periodic work at `now`; `false` asks never to be ticked
    /// again.
    fn tick(&self, now: Instant) -> bool;
}

/// A scheduled target: cancel it with [`Entry::cancel`] (a dropped entry
/// stays scheduled until its target is gone).
#[derive(Debug)]
pub(crate) struct Entry {
    id: u64,
}

/// One scheduled target.
struct Scheduled {
    interval: Duration,
    target: Weak<dyn Periodic>,
}

/// The timer heap and the targets, under [`STATE`].
struct State {
    /// Next tick of each target, soonest first; an id no longer in
    /// `targets` was cancelled and is skipped.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    targets: HashMap<u64, Scheduled>,
    next_id: u64,
    /// Whether this process has a publisher thread.
    running: bool,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
/// Woken when an entry is added that may be due before the thread's wait ends.
static WAKE: Condvar = Condvar::new();
/// Set by the `fork` child handler: this process has no publisher thread.
static FORKED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The guard [`fork_hold`] took, on the forking thread, until
    /// [`fork_release`].
    static HELD: RefCell<Option<MutexGuard<'static, Option<State>>>> = const { RefCell::new(None) };
}

/// Takes [`STATE`]. Nothing panics while holding it (no user code runs
/// under it), but a poisoned lock would still hold a consistent heap.
fn lock() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Schedules `target` every `interval`, first at once plus `interval`,
/// starting the publisher thread if the process has none.
pub(crate) fn schedule(interval: Duration, target: Weak<dyn Periodic>) -> Entry {
    let mut guard = lock();
    let state = guard.get_or_insert_with(|| State {
        heap: BinaryHeap::new(),
        targets: HashMap::new(),
        next_id: 0,
        running: false,
    });
    let id = state.next_id;
    state.next_id += 1;
    state.targets.insert(id, Scheduled { interval, target });
    state.heap.push(Reverse((Instant::now() + interval, id)));
    start_if_stopped(state);
    drop(guard);
    WAKE.notify_one();
    Entry { id }
}

impl Entry {
    /// Unschedules the target: it is not ticked again once any tick of it
    /// running now has returned.
    pub(crate) fn cancel(&self) {
        if let Some(state) = lock().as_mut() {
            state.targets.remove(&self.id);
        }
    }
}

/// Starts the publisher thread if this process has none (a `fork` child's
/// first call after the fork); one relaxed load otherwise.
#[inline]
pub(crate) fn ensure_running() {
    if FORKED.load(Relaxed) {
        restart();
    }
}

#[cold]
fn restart() {
    let mut guard = lock();
    if FORKED.swap(false, Relaxed) {
        if let Some(state) = guard.as_mut() {
            state.reschedule_all(Instant::now());
            start_if_stopped(state);
        }
    }
}

impl State {
    /// Every target once, due at `now`. A `fork` child's heap lacks the
    /// entries the parent's thread had popped for a tick when the fork
    /// came (they were in that thread's `due`, not in the heap); without
    /// this, such a pool would never be ticked in the child.
    fn reschedule_all(&mut self, now: Instant) {
        self.heap.clear();
        self.heap
            .extend(self.targets.keys().map(|&id| Reverse((now, id))));
    }
}

/// Spawns the thread unless one runs (called under [`STATE`]).
fn start_if_stopped(state: &mut State) {
    if state.running {
        return;
    }
    match thread::Builder::new()
        .name("pagepool-ticker".into())
        .spawn(run)
    {
        Ok(_) => state.running = true,
        Err(e) => tracing::warn!(
            target: "pagepool",
            error = %e,
            "could not start the metrics publisher thread; call BufferPool::publish_metrics yourself"
        ),
    }
}

/// The publisher thread: waits for the soonest tick, ticks every due
/// target with no lock held, and puts each back one interval later.
fn run() {
    // (id, interval, target, still wanted after its tick)
    let mut due: Vec<(u64, Duration, Weak<dyn Periodic>, bool)> = Vec::new();
    loop {
        {
            let mut guard = lock();
            loop {
                let Some(state) = guard.as_mut() else {
                    guard = WAKE.wait(guard).unwrap_or_else(PoisonError::into_inner);
                    continue;
                };
                let now = Instant::now();
                while let Some(&Reverse((at, id))) = state.heap.peek() {
                    if at > now {
                        break;
                    }
                    state.heap.pop();
                    if let Some(s) = state.targets.get(&id) {
                        due.push((id, s.interval, s.target.clone(), true));
                    }
                }
                if !due.is_empty() {
                    break;
                }
                guard = match state.heap.peek() {
                    Some(&Reverse((at, _))) => {
                        let wait = at.saturating_duration_since(now);
                        WAKE.wait_timeout(guard, wait)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                    None => WAKE.wait(guard).unwrap_or_else(PoisonError::into_inner),
                };
            }
        }
        let now = Instant::now();
        for (_, _, target, alive) in &mut due {
            // The last strong reference may be dropped here: the target's
            // drop then runs on this thread, with no publisher lock held.
            *alive = target.upgrade().is_some_and(|t| t.tick(now));
        }
        let mut guard = lock();
        if let Some(state) = guard.as_mut() {
            let after = Instant::now();
            for (id, interval, _, alive) in due.drain(..) {
                if !alive {
                    state.targets.remove(&id);
                } else if state.targets.contains_key(&id) {
                    // A late round does not make up for lost ticks.
                    state.heap.push(Reverse(((now + interval).max(after), id)));
                }
            }
        }
    }
}

/// Takes the publisher's lock for a `fork` and keeps it, on this thread,
/// until [`fork_release`]: a leaf, under which no other pagepool lock is
/// taken.
pub(crate) fn fork_hold() {
    let guard = lock();
    HELD.with(|held| *held.borrow_mut() = Some(guard));
}

/// Lets go what [`fork_hold`] took on this thread; in the child, first
/// notes that the publisher thread is gone (the next [`ensure_running`]
/// starts one). In the child the unlock may wake a futex waiter that was
/// a parent thread: a no-op there.
pub(crate) fn fork_release(child: bool) {
    let mut guard = HELD.with(|held| held.borrow_mut().take());
    if child {
        if let Some(state) = guard.as_mut().and_then(|g| g.as_mut()) {
            state.running = false;
        }
        FORKED.store(true, Relaxed);
    }
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    struct Count(AtomicUsize, usize);

    impl Periodic for Count {
        fn tick(&self, _: Instant) -> bool {
            self.0.fetch_add(1, Relaxed) + 1 < self.1
        }
    }

    #[test]
    fn ticks_until_the_target_says_stop_or_is_gone() {
        let stops = Arc::new(Count(AtomicUsize::new(0), 3));
        let dropped = Arc::new(Count(AtomicUsize::new(0), usize::MAX));
        let weak: Weak<dyn Periodic> = Arc::downgrade(&stops) as _;
        let _a = schedule(Duration::from_millis(1), weak);
        let weak: Weak<dyn Periodic> = Arc::downgrade(&dropped) as _;
        let _b = schedule(Duration::from_millis(1), weak);
        let start = Instant::now();
        while dropped.0.load(Relaxed) < 5 && start.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(1));
        }
        assert!(dropped.0.load(Relaxed) >= 5);
        thread::sleep(Duration::from_millis(20));
        assert_eq!(stops.0.load(Relaxed), 3, "ticked after it said stop");
        let state = lock();
        assert!(!state.as_ref().unwrap().targets.contains_key(&_a.id));
    }

    #[test]
    fn a_fork_childs_restart_schedules_every_target_once() {
        let c: Arc<dyn Periodic> = Arc::new(Count(AtomicUsize::new(0), usize::MAX));
        let scheduled = || Scheduled {
            interval: Duration::from_secs(1),
            target: Arc::downgrade(&c),
        };
        let later = Instant::now() + Duration::from_secs(1);
        // Targets 0 and 2 were popped for a tick by the parent's thread when
        // the fork came; 1 is in the heap.
        let mut state = State {
            heap: BinaryHeap::from([Reverse((later, 1))]),
            targets: (0..3).map(|id| (id, scheduled())).collect(),
            next_id: 3,
            running: false,
        };
        let now = Instant::now();
        state.reschedule_all(now);
        let mut ids: Vec<u64> = state
            .heap
            .iter()
            .map(|&Reverse((at, id))| {
                assert_eq!(at, now);
                id
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, [0, 1, 2]);
    }

    #[test]
    fn a_cancelled_entry_is_not_ticked() {
        let c = Arc::new(Count(AtomicUsize::new(0), usize::MAX));
        let weak: Weak<dyn Periodic> = Arc::downgrade(&c) as _;
        let e = schedule(Duration::from_millis(50), weak);
        e.cancel();
        thread::sleep(Duration::from_millis(120));
        assert_eq!(c.0.load(Relaxed), 0);
    }
}
