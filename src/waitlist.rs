//! [`WaitList`]: tasks and threads waiting for room, served first come,
//! first served.
//!
//! A waiter [`join`](WaitList::join)s with its [`Waker`] and gets a
//! [`Ticket`]; only the waiter at the head of the list may take room, so a
//! large request is never overtaken by smaller ones that arrived after it.
//! Whoever makes room calls [`wake_head`](WaitList::wake_head). A waiter
//! that [`leave`](WaitList::leave)s from the head, served or dropped, wakes
//! the next one: a wake-up that landed on a waiter that is gone is passed
//! on, never lost.
//!
//! Lost wake-ups between a waiter's last try and a release are closed by a
//! pair of `SeqCst` fences: the waiter counts itself in `len`, fences, then
//! tries; whoever makes room does so, fences ([`WaitList::any`]), then reads
//! `len`. One of the two sees the other.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{fence, AtomicUsize};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::sync::Mutex;

/// A waiter's place in a [`WaitList`]: unique within its list, and
/// increasing in arrival order; with when it joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ticket(u64, Instant);

impl Ticket {
    /// When the waiter joined the list.
    pub(crate) fn since(self) -> Instant {
        self.1
    }
}

/// Waiters in arrival order; see the module docs.
#[derive(Default)]
pub(crate) struct WaitList {
    /// Waiters now: the length of `queue`, readable without the lock.
    len: AtomicUsize,
    /// The waiters, by ticket (so sorted), each with its latest waker.
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// The next ticket to hand out.
    next: u64,
    /// The waiters, head first.
    waiters: VecDeque<(Ticket, Waker)>,
}

impl Queue {
    /// Where `t` is in the list, if it is in it.
    fn position(&self, t: Ticket) -> Option<usize> {
        // Tickets increase from head to tail.
        let (front, back) = self.waiters.as_slices();
        match front.binary_search_by_key(&t, |w| w.0) {
            Ok(i) => Some(i),
            Err(_) => back
                .binary_search_by_key(&t, |w| w.0)
                .ok()
                .map(|i| front.len() + i),
        }
    }
}

impl WaitList {
    /// Takes the queue lock for a `fork` (see [`crate::forklock`]).
    pub(crate) fn fork_hold(&self) {
        crate::forklock::hold(&self.queue);
    }

    /// Lets go what [`fork_hold`](Self::fork_hold) took. In the child, the
    /// parent's waiters are not there: the list forgets them (their wakers
    /// leaked, never woken or dropped: they may belong to threads and
    /// runtimes the child lacks), and a wait of the forking thread that
    /// polls again with its old ticket joins anew (see
    /// [`poll_turn`](Self::poll_turn)).
    ///
    /// # Safety
    ///
    /// As [`crate::forklock::release`]'s: this thread took it with
    /// `fork_hold`, and in the child no other thread runs yet.
    pub(crate) unsafe fn fork_release(&self, child: bool) {
        // SAFETY: the caller's contract is `release`'s.
        unsafe { crate::forklock::release(&self.queue, child) }
        if child {
            let mut q = self.queue.lock();
            // `next` stays: old tickets never match new ones.
            std::mem::forget(std::mem::take(&mut q.waiters));
            self.len.store(0, Relaxed);
        }
    }

    /// Whether anyone waits, as seen after a `SeqCst` fence: a caller that
    /// just made room (pushed a slot, unmapped a slab, raised a cap) and
    /// gets `false` may be sure every waiter will see that room on its next
    /// try.
    #[inline]
    pub(crate) fn any(&self) -> bool {
        fence(SeqCst);
        self.len.load(Relaxed) != 0
    }

    /// Whether anyone waits (a relaxed read: a hint for fast paths, which
    /// must not rely on it to make room visible).
    #[inline(always)]
    pub(crate) fn any_relaxed(&self) -> bool {
        self.len.load(Relaxed) != 0
    }

    /// How many wait now.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Joins the tail of the list, to be woken through `waker`. The caller
    /// must try for room once more after this (see the module docs) and
    /// [`leave`](Self::leave) with the ticket however its wait ends.
    pub(crate) fn join(&self, waker: &Waker) -> Ticket {
        let now = Instant::now();
        let mut q = self.queue.lock();
        let t = Ticket(q.next, now);
        q.next += 1;
        q.waiters.push_back((t, waker.clone()));
        self.len.store(q.waiters.len(), Relaxed);
        drop(q);
        fence(SeqCst);
        t
    }

    /// Records `waker` as `t`'s latest and says whether `t` is at the head
    /// (whose turn it is to take room). A ticket that already left is not.
    pub(crate) fn is_turn(&self, t: Ticket, waker: &Waker) -> bool {
        let mut q = self.queue.lock();
        let Some(i) = q.position(t) else {
            return false;
        };
        let stored = &mut q.waiters[i].1;
        if !stored.will_wake(waker) {
            stored.clone_from(waker);
        }
        i == 0
    }

    /// Leaves the list (served, failed, timed out or dropped); if `t` was at
    /// the head, wakes the next waiter, whose turn it is now. Leaving twice
    /// is harmless. Out of line: its callers' common case holds no ticket
    /// ([`leave_with`](Self::leave_with)).
    #[inline(never)]
    pub(crate) fn leave(&self, t: Ticket) {
        let mut q = self.queue.lock();
        let Some(i) = q.position(t) else {
            return;
        };
        q.waiters.remove(i);
        self.len.store(q.waiters.len(), Relaxed);
        let next = if i == 0 {
            q.waiters.front().map(|w| w.1.clone())
        } else {
            None
        };
        drop(q);
        // Outside the lock: a waker may run arbitrary code.
        if let Some(w) = next {
            w.wake();
        }
    }

    /// One poll of a wait in this list, made after its first try was
    /// refused (or found others waiting): joins with `cx`'s waker if
    /// `ticket` is empty (`on_join` runs then), and in turn tries
    /// `attempt`. `Pending` while `attempt` fails with an error `refused`
    /// accepts. Any other result ends the wait: the caller then leaves with
    /// [`leave_with`](Self::leave_with), as it must when it drops the wait
    /// (`ticket` says whether it is in the list).
    pub(crate) fn poll_turn<T, E>(
        &self,
        ticket: &mut Option<Ticket>,
        cx: &mut Context<'_>,
        attempt: &mut dyn FnMut() -> Result<T, E>,
        refused: impl Fn(&E) -> bool,
        on_join: impl FnOnce(),
    ) -> Poll<Result<T, E>> {
        let t = match *ticket {
            // Only a `fork` child's list drops a ticket that has not left.
            Some(t) if self.queue.lock().position(t).is_some() => t,
            _ => {
                let t = self.join(cx.waker());
                *ticket = Some(t);
                on_join();
                t
            }
        };
        if !self.is_turn(t, cx.waker()) {
            return Poll::Pending;
        }
        match attempt() {
            Err(e) if refused(&e) => Poll::Pending,
            other => Poll::Ready(other),
        }
    }

    /// [`leave`](Self::leave)s with `ticket`'s ticket, if it holds one, and
    /// empties it; says whether it held one. The test inline (a request
    /// served at once never queued), the leave out of line.
    #[inline(always)]
    pub(crate) fn leave_with(&self, ticket: &mut Option<Ticket>) -> bool {
        match ticket.take() {
            Some(t) => {
                self.leave(t);
                true
            }
            None => false,
        }
    }

    /// Wakes the waiter at the head, if any: room was made. The test
    /// inline (most callers find no one waiting), the wake out of line.
    #[inline(always)]
    pub(crate) fn wake_head(&self) {
        if self.any() {
            self.wake_waiting_head();
        }
    }

    /// `wake_head` past its test.
    #[inline(never)]
    fn wake_waiting_head(&self) {
        let head = self.queue.lock().waiters.front().map(|w| w.1.clone());
        if let Some(w) = head {
            w.wake();
        }
    }

    /// Wakes every waiter (the pool closed: none will get room).
    pub(crate) fn wake_all(&self) {
        if !self.any() {
            return;
        }
        let all: Vec<Waker> = self
            .queue
            .lock()
            .waiters
            .iter()
            .map(|w| w.1.clone())
            .collect();
        for w in all {
            w.wake();
        }
    }
}

impl fmt::Debug for WaitList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitList")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count::default());
        (Arc::clone(&c), Waker::from(c))
    }

    #[test]
    fn a_fork_child_forgets_the_parents_waiters_and_old_tickets_join_anew() {
        let list = WaitList::default();
        let (_, w) = waker();
        let parent = list.join(&w);
        let mut mine = Some(list.join(&w));
        list.fork_hold();
        // SAFETY: taken just above on this thread; no other thread uses it.
        unsafe { list.fork_release(true) };
        assert!(!list.any() && !list.is_turn(parent, &w));
        let mut cx = Context::from_waker(&w);
        let polled = list.poll_turn(&mut mine, &mut cx, &mut || Ok::<_, ()>(1), |_| false, || {});
        assert_eq!(polled, Poll::Ready(Ok(1)));
        assert!(mine.is_some_and(|t| t > parent) && list.len() == 1);
    }

    #[test]
    fn only_the_head_has_its_turn_in_arrival_order() {
        let list = WaitList::default();
        let (_, w) = waker();
        let a = list.join(&w);
        let b = list.join(&w);
        let c = list.join(&w);
        assert!(list.is_turn(a, &w));
        assert!(!list.is_turn(b, &w) && !list.is_turn(c, &w));
        list.leave(a);
        assert!(list.is_turn(b, &w));
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn leaving_from_the_head_passes_the_wake_up_on() {
        let list = WaitList::default();
        let (ca, wa) = waker();
        let (cb, wb) = waker();
        let (cc, wc) = waker();
        let a = list.join(&wa);
        let b = list.join(&wb);
        let c = list.join(&wc);
        list.wake_head();
        assert_eq!(ca.0.load(SeqCst), 1);
        // The woken head is dropped before it could take the room: the
        // next one is woken instead.
        list.leave(a);
        assert_eq!(cb.0.load(SeqCst), 1);
        // Leaving from the middle wakes no one.
        list.leave(c);
        assert_eq!((cb.0.load(SeqCst), cc.0.load(SeqCst)), (1, 0));
        list.leave(b);
        list.leave(b);
        assert!(!list.any());
        list.wake_head();
        assert_eq!(cc.0.load(SeqCst), 0);
    }

    #[test]
    fn the_latest_waker_is_the_one_woken_and_close_wakes_everyone() {
        let list = WaitList::default();
        let (old, w_old) = waker();
        let (new, w_new) = waker();
        let (other, w_other) = waker();
        let a = list.join(&w_old);
        let _b = list.join(&w_other);
        assert!(list.is_turn(a, &w_new));
        list.wake_head();
        assert_eq!((old.0.load(SeqCst), new.0.load(SeqCst)), (0, 1));
        list.wake_all();
        assert_eq!((new.0.load(SeqCst), other.0.load(SeqCst)), (2, 1));
    }

    #[test]
    fn tickets_are_found_across_the_ring_buffers_wrap() {
        let list = WaitList::default();
        let (_, w) = waker();
        // Push and pop so the deque's contents wrap around its buffer.
        let mut live = std::collections::VecDeque::new();
        for round in 0..50 {
            live.push_back(list.join(&w));
            live.push_back(list.join(&w));
            if round % 2 == 0 {
                list.leave(live.pop_front().unwrap());
            }
        }
        for (i, t) in live.iter().enumerate() {
            assert_eq!(list.is_turn(*t, &w), i == 0);
        }
        // Leave from the back: the head stays the head.
        let head = live[0];
        while live.len() > 1 {
            list.leave(live.pop_back().unwrap());
        }
        assert!(list.is_turn(head, &w));
        assert_eq!(list.len(), 1);
    }
}
