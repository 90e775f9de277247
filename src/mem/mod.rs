//! The memory layer: slots, slabs, guard pages, byte patterns, and where
//! slab memory comes from. It knows nothing of free lists or pools.
//!
//! | file | concept |
//! |---|---|
//! | `slot` | one slot's metadata line, its typed state and flag sets, `SlotRef` |
//! | `slab` | one mapping of one class's slots, and its layout |
//! | `slabs` | a pool's slabs, and the mapped/unmapped events subscribers hear |
//! | `backing` | the `Backing` seam: anonymous mappings today |
//! | `guard` | placing guard pages and sealing quarantined slots |
//! | `canary`, `poison` | the byte patterns the debug checks write and compare |

pub(crate) mod backing;
pub(crate) mod canary;
pub(crate) mod guard;
pub(crate) mod poison;
pub(crate) mod slab;
pub(crate) mod slabs;
pub(crate) mod slot;
