//! The observers: they watch slots and slabs and count, check and report,
//! and receive plain data (a `&Slot`, a slab's description, counters),
//! never the pool.
//!
//! | file | concept |
//! |---|---|
//! | `checks` | canary, poison, zeroing, edge and red-zone checks of one slot |
//! | `report` | the corruption report those checks raise |
//! | `sink` | the process-wide seam that hands reports as plain data to an installed sink (the C ABI's) |
//! | `quarantine` | the queue of sealed released slots, and its sampling |
//! | `fault` | the SIGSEGV/SIGBUS handler and its slab table (a slab-event subscriber) |
//! | `leak` | outstanding buffers and leak reports from slot metadata |
//! | `metrics` | one pool's metric handles, and copying snapshots into them |
//! | `sites` | outstanding buffers by allocation site, the top sites' gauges |
//! | `publisher` | the one thread per process that ticks every pool at its interval |

pub(crate) mod checks;
pub(crate) mod fault;
pub(crate) mod leak;
pub(crate) mod metrics;
pub(crate) mod publisher;
pub(crate) mod quarantine;
pub(crate) mod report;
pub(crate) mod sink;
pub(crate) mod sites;
