//! The order of media reads on one read path: at most `--reads-in-flight`
//! at a time, the others waiting their turn, the most urgent first.
//!
//! Urgent is, in this order: a read its response waits on (the first
//! chunk, before the headers; or the next one, once hyper asked for it and
//! found nothing: [`Turn::set_wanted`]) before a read ahead; then the
//! response that has read fewer bytes so far; then the one that came
//! first. So 200 clients that request a large file at once and fill their
//! socket buffers (megabytes each) do not queue a new response's reads
//! behind theirs: it waits only for the reads in flight and for demand
//! reads of responses younger than it. Without the bound, every read would
//! go straight to the device queue (or the blocking pool) in arrival
//! order, where no order can be imposed. A long response can be overtaken
//! by younger ones while the device is saturated; it is never dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// One response's place in the queue, reused by each of its reads.
#[derive(Debug)]
pub struct Turn {
    /// Its body waits for the next chunk (hyper polled and found none).
    wanted: AtomicBool,
    /// Bytes its reads produced so far.
    read: AtomicU64,
    /// Set (under the queue's lock) when the queue let a waiting read of
    /// it in.
    admitted: AtomicBool,
    notify: Notify,
}

impl Default for Turn {
    /// A new response: its first read is wanted (the headers wait on it).
    fn default() -> Turn {
        Turn {
            wanted: AtomicBool::new(true),
            read: AtomicU64::new(0),
            admitted: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }
}

impl Turn {
    /// Whether the response's body waits for a chunk now.
    pub fn set_wanted(&self, wanted: bool) {
        self.wanted.store(wanted, Ordering::Relaxed);
    }

    /// Whether the response's body waits for a chunk.
    #[cfg(test)]
    pub fn is_wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Counts `n` bytes read for the response.
    pub fn add_read(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
    }

    /// Smaller is more urgent; `seq` breaks ties (first come first).
    fn urgency(&self, seq: u64) -> (bool, u64, u64) {
        (
            !self.wanted.load(Ordering::Relaxed),
            self.read.load(Ordering::Relaxed),
            seq,
        )
    }
}

#[derive(Debug, Default)]
struct State {
    in_flight: usize,
    next_seq: u64,
    /// Reads waiting, with their arrival number.
    waiting: Vec<(u64, Arc<Turn>)>,
}

/// The reads of one read path.
#[derive(Debug)]
pub struct ReadQueue {
    limit: usize,
    state: Mutex<State>,
}

/// Leave to read; dropped, it lets the most urgent waiting read in.
#[derive(Debug)]
pub struct Pass(Arc<ReadQueue>);

impl Drop for Pass {
    fn drop(&mut self) {
        self.0.leave(&mut self.0.lock());
    }
}

/// Drops a waiting read's place, or the pass it was given meanwhile.
struct Waiting<'q> {
    queue: &'q Arc<ReadQueue>,
    turn: &'q Arc<Turn>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut s = self.queue.lock();
        if self.turn.admitted.swap(false, Ordering::Acquire) {
            self.queue.leave(&mut s);
        } else {
            s.waiting.retain(|(_, t)| !Arc::ptr_eq(t, self.turn));
        }
    }
}

impl ReadQueue {
    /// At most `limit` (at least 1) reads in flight.
    pub fn new(limit: usize) -> Arc<ReadQueue> {
        Arc::new(ReadQueue {
            limit: limit.max(1),
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `turn`'s next read may go (at once while fewer than
    /// `limit` are in flight). One read per turn at a time.
    pub async fn enter(self: &Arc<Self>, turn: &Arc<Turn>) -> Pass {
        {
            let mut s = self.lock();
            if s.in_flight < self.limit {
                s.in_flight += 1;
                return Pass(Arc::clone(self));
            }
            let seq = s.next_seq;
            s.next_seq += 1;
            s.waiting.push((seq, Arc::clone(turn)));
        }
        let waiting = Waiting { queue: self, turn };
        // `notify_one` keeps a permit, so a grant between the check and the
        // wait is not lost; a permit left from an earlier read only loops.
        while !turn.admitted.load(Ordering::Acquire) {
            turn.notify.notified().await;
        }
        turn.admitted.store(false, Ordering::Relaxed);
        std::mem::forget(waiting);
        Pass(Arc::clone(self))
    }

    /// A read's pass is given back: hands it to the most urgent waiting
    /// read, if any.
    fn leave(&self, s: &mut State) {
        let next = s
            .waiting
            .iter()
            .enumerate()
            .min_by_key(|(_, (seq, turn))| turn.urgency(*seq))
            .map(|(i, _)| i);
        match next {
            Some(i) => {
                let (_, turn) = s.waiting.swap_remove(i);
                turn.admitted.store(true, Ordering::Release);
                turn.notify.notify_one();
            }
            None => s.in_flight -= 1,
        }
    }

    /// Reads in flight at most.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Reads waiting for a pass.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}
