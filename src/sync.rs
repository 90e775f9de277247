//! The atomics of the lock-free parts pagepool owns (the anchor's biased
//! count, the depot's flush epoch and abandoned flag), from `std`, or from
//! `loom` when the crate is built with `--cfg pagepool_loom` so that the
//! loom models (`free::loom_models`) explore every interleaving of them.

#[cfg(pagepool_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicIsize, AtomicU32};
#[cfg(not(pagepool_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU32};
