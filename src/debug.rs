//! Memory-error detection: canaries, poisoning, zeroing, quarantine, and the
//! fault handler that names the culprit.
//!
//! | knob | what it catches | cost on allocate + release |
//! |---|---|---|
//! | [`slack_canary`](crate::PoolBuilder::slack_canary) | a write past `max_len` inside its last page | nothing while `max_len` stays put (the pattern is rewritten only where a shorter buffer exposes new slack); release compares the 9 to 16 bytes after `max_len`, up to the end of the next aligned word (a contiguous overflow always starts there), and the page's last 8 |
//! | [`full_canary`](crate::PoolBuilder::full_canary) | a write anywhere in the slot beyond `max_len` | release compares every slack byte of the slot (about 0.1 ns a byte) |
//! | [`poison`](crate::PoolBuilder::poison) | a write after release, at the next hand-out | a `memset` and a compare of the poisoned span, for the sampled releases |
//! | [`zero`](crate::PoolBuilder::zero) | nothing: it keeps one client's bytes from the next | a `memset` of `max_len` bytes |
//! | [`quarantine`](crate::PoolBuilder::quarantine) | a late access through a stale pointer faults at once | two system calls per sampled release, and page faults when the slot is reused |
//!
//! Presets ([`DebugLevel`]): `Off` has none; `Standard` (the default) has the
//! slack canary and poisons the first 256 bytes of one buffer in 64 at its
//! release;
//! `Paranoid` has the full canary, poisons every release over `max_len`,
//! zeroes on allocate and quarantines every release (up to 256 slots).
//!
//! Guard pages (a builder setting of their own) catch overflows past the
//! slot and underflows before it; with [`install_fault_handler`] the fault is
//! reported with the buffer and its allocation site before the process dies.

pub use crate::config::{CorruptionAction, DebugLevel, Zeroing};
pub use crate::observe::fault::install_fault_handler;
pub use crate::stats::CorruptionKind;
