//! The free-list layer: where released slots wait for their next owner,
//! and what keeps a pool alive for its buffers. It works over `mem` and the
//! leaves and never calls the pool.
//!
//! | file | concept |
//! |---|---|
//! | `anchor` | the biased count that keeps a pool alive for its buffers |
//! | `depot` | what thread caches share: free lists, flush epoch, cache limits, abandoned flag, waiters for room |
//! | `bin` | one thread's stack of free slots of one class |
//! | `cache` | per-thread bins over the depot, and what they report back (`Taken`, `Released`) |
//! | `sample` | the countdown that picks the allocations with sampled duties |

pub(crate) mod anchor;
mod bin;
pub(crate) mod cache;
pub(crate) mod depot;
#[cfg(all(test, pagepool_loom))]
mod loom_models;
pub(crate) mod sample;
