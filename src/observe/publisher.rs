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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Weak;
use std::thread;
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex};

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

static STATE: Mutex<Option<State>> = crate::sync::const_mutex(None);
/// Woken when an entry is added that may be due before the thread's wait ends.
static WAKE: Condvar = Condvar::new();
/// Set by the `fork` child handler: this process has no publisher thread.
static FORKED: AtomicBool = AtomicBool::new(false);

/// Schedules `target` every `interval`, first at once plus `interval`,
/// starting the publisher thread if the process has none.
pub(crate) fn schedule(interval: Duration, target: Weak<dyn Periodic>) -> Entry {
    let mut guard = STATE.lock();
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
        if let Some(state) = STATE.lock().as_mut() {
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
    let mut guard = STATE.lock();
    if FORKED.swap(false, Relaxed) {
        if let Some(state) = guard.as_mut() {
            start_if_stopped(state);
        }
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
            let mut guard = STATE.lock();
            loop {
                let Some(state) = guard.as_mut() else {
                    WAKE.wait(&mut guard);
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
                match state.heap.peek() {
                    Some(&Reverse((at, _))) => {
                        WAKE.wait_until(&mut guard, at);
                    }
                    None => WAKE.wait(&mut guard),
                }
            }
        }
        let now = Instant::now();
        for (_, _, target, alive) in &mut due {
            // The last strong reference may be dropped here: the target's
            // drop then runs on this thread, with no publisher lock held.
            *alive = target.upgrade().is_some_and(|t| t.tick(now));
        }
        let mut guard = STATE.lock();
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

/// Takes the publisher's lock for a `fork` (see [`crate::forklock`]): a
/// leaf, under which no other pagepool lock is taken.
pub(crate) fn fork_hold() {
    crate::forklock::hold(&STATE);
}

/// Lets go what [`fork_hold`] took; in the child, notes that the publisher
/// thread is gone (the next [`ensure_running`] starts one).
///
/// # Safety
///
/// As [`crate::forklock::release`]'s: this thread took it with
/// [`fork_hold`], and in the child no other thread runs yet.
pub(crate) unsafe fn fork_release(child: bool) {
    if child {
        // SAFETY: this thread holds `STATE` (the caller's contract), and no
        // other thread of the child exists to read it.
        if let Some(state) = unsafe { &mut *STATE.data_ptr() } {
            state.running = false;
        }
        FORKED.store(true, Relaxed);
    }
    // SAFETY: the caller's contract is `release`'s.
    unsafe { crate::forklock::release(&STATE, child) }
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
        let state = STATE.lock();
        assert!(!state.as_ref().unwrap().targets.contains_key(&_a.id));
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
