//! The synchronisation primitives pagepool uses, from one place:
//!
//! - the atomics of the lock-free parts it owns (the anchor's biased count,
//!   the depot's flush epoch and abandoned flag), from `std`, or from `loom`
//!   when the crate is built with `--cfg pagepool_loom` so that the loom
//!   models (`free::loom_models`) explore every interleaving of them;
//! - the locks of the slow paths, from `parking_lot`, or under Miri from
//!   [`spin`]: `parking_lot_core` keeps thread pointers in a `usize`, which
//!   Miri's `-Zmiri-strict-provenance` rejects, so Miri checks pagepool's own
//!   code with locks of the same API and layout that keep no pointers.
//!
//! The rest of the crate imports its locks from here, never from
//! `parking_lot` (`.ci/run` checks).

#[cfg(pagepool_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicIsize, AtomicU32};
#[cfg(not(pagepool_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU32};

#[cfg(all(not(miri), feature = "io-uring", target_os = "linux"))]
pub(crate) use parking_lot::MutexGuard;
#[cfg(not(miri))]
pub(crate) use parking_lot::{const_mutex, Condvar, Mutex, RawMutex, RawRwLock, RwLock};

#[cfg(miri)]
mod spin;
#[cfg(all(miri, feature = "io-uring", target_os = "linux"))]
pub(crate) use spin::MutexGuard;
#[cfg(miri)]
pub(crate) use spin::{const_mutex, Condvar, Mutex, RawMutex, RawRwLock, RwLock};
