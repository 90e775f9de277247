//! Quotas: accounts that cap what one client holds of a pool, and the book
//! of live accounts (a charged buffer's slot holds its own account).
//!
//! A buffer allocated through a quota is charged its slot's bytes (its size
//! class, what it really holds of the pool), marked `SlotFlags::QUOTA`, and
//! its slot holds a counted reference to the account while it lives (in
//! `Slot::release_site`, unused until the release); its release, whichever
//! path it takes, credits the account and wakes the quota's head waiter.
//! Buffers outside quotas never touch an account.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Weak};

use crate::sync::Mutex;

use super::PoolInner;
use crate::mem::slot::{Slot, SlotFlags, ACCOUNT_TAG};
use crate::waitlist::WaitList;

// A charged slot's word holds an account's address with `ACCOUNT_TAG` set.
const _: () = assert!(std::mem::align_of::<QuotaAccount>() > ACCOUNT_TAG);

/// One quota's cap and what its buffers hold.
#[derive(Debug)]
pub(crate) struct QuotaAccount {
    /// The cap on `held`, in slot bytes.
    pub(crate) limit: AtomicUsize,
    /// Slot bytes of the account's live buffers, plus reservations of
    /// allocations in progress; never above `limit` through a reservation.
    pub(crate) held: AtomicUsize,
    /// The account's live buffers.
    pub(crate) buffers: AtomicUsize,
    /// `QuotaExceeded` refusals.
    pub(crate) refusals: AtomicU64,
    /// Waits for this account's room, first come, first served.
    pub(crate) room: WaitList,
}

impl QuotaAccount {
    /// Reserves `charge` bytes if they fit under the cap; else returns
    /// the bytes held.
    pub(crate) fn reserve(&self, charge: usize) -> Result<(), usize> {
        let limit = self.limit.load(Relaxed);
        self.held
            .fetch_update(Relaxed, Relaxed, |held| {
                held.checked_add(charge).filter(|&n| n <= limit)
            })
            .map(drop)
    }

    /// Gives back a reservation (or a credited buffer's bytes), and wakes
    /// the head waiter.
    pub(crate) fn unreserve(&self, charge: usize) {
        self.held.fetch_sub(charge, Relaxed);
        self.room.wake_head();
    }
}

/// Every live account of a pool.
#[derive(Debug, Default)]
pub(crate) struct QuotaBook {
    /// Live accounts, to wake their waiters when the pool closes.
    accounts: Mutex<Vec<Weak<QuotaAccount>>>,
}

impl QuotaBook {
    /// Takes the accounts list and every live account's waiters' queue,
    /// for a `fork`; returns the accounts, to be let go with
    /// [`fork_release`](Self::fork_release).
    pub(crate) fn fork_hold(&self) -> Vec<Arc<QuotaAccount>> {
        crate::forklock::hold(&self.accounts);
        // SAFETY: `accounts` was taken just above, on this thread, and its
        // guard forgotten; this reads it as that guard would.
        let live: Vec<_> = unsafe { &*self.accounts.data_ptr() }
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for a in &live {
            a.room.fork_hold();
        }
        live
    }

    /// Lets go what [`fork_hold`](Self::fork_hold) took.
    ///
    /// # Safety
    ///
    /// As [`crate::forklock::release`]'s: this thread took them with
    /// `fork_hold`, which returned `live`, and in the child no other thread
    /// runs yet.
    pub(crate) unsafe fn fork_release(&self, live: &[Arc<QuotaAccount>], child: bool) {
        // SAFETY: the caller's contract is `release`'s, for every lock.
        unsafe {
            for a in live {
                a.room.fork_release(child);
            }
            crate::forklock::release(&self.accounts, child);
        }
    }
}

impl PoolInner {
    /// A new account capped at `limit` slot bytes, counted in the pool.
    pub(crate) fn open_account(&self, limit: usize) -> Arc<QuotaAccount> {
        let account = Arc::new(QuotaAccount {
            limit: AtomicUsize::new(limit),
            held: AtomicUsize::new(0),
            buffers: AtomicUsize::new(0),
            refusals: AtomicU64::new(0),
            room: WaitList::default(),
        });
        let mut accounts = self.quotas.accounts.lock();
        accounts.retain(|a| a.strong_count() != 0);
        accounts.push(Arc::downgrade(&account));
        self.counters.quotas.fetch_add(1, Relaxed);
        account
    }

    /// A quota handle went; its account lives on while its buffers do.
    pub(crate) fn close_account(&self, account: &Arc<QuotaAccount>) {
        let mut accounts = self.quotas.accounts.lock();
        accounts.retain(|a| a.strong_count() != 0 && !std::ptr::eq(a.as_ptr(), &**account));
        self.counters.quotas.fetch_sub(1, Relaxed);
    }

    /// Wakes every waiter of every account (the pool closed).
    pub(crate) fn wake_quota_waiters(&self) {
        let accounts: Vec<_> = self
            .quotas
            .accounts
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for a in accounts {
            a.room.wake_all();
        }
    }

    /// The slot bytes a request of `max_size` would be charged (`small`:
    /// as `allocate_buffer`), `None` when no class serves it.
    pub(crate) fn charge_for(&self, max_size: usize, small: bool) -> Option<usize> {
        let c = self.classes.class_for(max_size, small)?;
        Some(self.classes.slot_bytes(c))
    }

    /// Charges the buffer in slot `s`, just allocated for a request whose
    /// `charge` bytes `account` reserved, to that account: the slot holds
    /// a counted reference to it until `credit` takes it back.
    pub(crate) fn charge(&self, s: &Slot, account: &Arc<QuotaAccount>, charge: usize) {
        debug_assert_eq!(charge, self.classes.slot_bytes(s.class()));
        debug_assert!(!s.flags.load().contains(SlotFlags::QUOTA));
        // `release_site` is the last release's, which only a poison check
        // at allocation (done by now) and a quarantined slot's report
        // read: free while the buffer lives. The pointer's provenance is
        // exposed, to be taken up again by `credit`.
        let raw = Arc::into_raw(Arc::clone(account)).expose_provenance();
        s.release_site.store(raw | ACCOUNT_TAG, Relaxed);
        account.buffers.fetch_add(1, Relaxed);
        self.counters.quota_bytes.fetch_add(charge, Relaxed);
        // The buffer's owner is the only writer of its flags.
        s.flags.store(s.flags.load() | SlotFlags::QUOTA);
    }

    /// The release of a buffer flagged `QUOTA` in slot `s`: credits its
    /// account, and clears the flag and the account's reference (the
    /// release may record its site there next).
    #[inline(always)]
    pub(super) fn credit(&self, s: &Slot) {
        s.flags.store(s.flags.load().without(SlotFlags::QUOTA));
        let raw = s.release_site.swap(0, Relaxed);
        if raw & ACCOUNT_TAG == 0 {
            debug_assert!(false, "a QUOTA buffer holds no account");
            return;
        }
        let raw = raw & !ACCOUNT_TAG;
        // SAFETY: a tagged word is stored only by `charge`, from
        // `Arc::into_raw` of the account, exposed; only this release (the
        // buffer's owner) takes it back, once (it was swapped for 0).
        let account =
            unsafe { Arc::from_raw(std::ptr::with_exposed_provenance::<QuotaAccount>(raw)) };
        let charge = self.classes.slot_bytes(s.class());
        self.counters.quota_bytes.fetch_sub(charge, Relaxed);
        account.buffers.fetch_sub(1, Relaxed);
        account.unreserve(charge);
    }
}
