//! The fixed limits every layer sizes itself by.

/// The largest `max_buffer_size` and `slab_size` a pool accepts: 2 GiB (1 GiB
/// on 32-bit targets). Like the seed's `DWORD dwMaxBufferSize`, every offset
/// into a buffer fits 32 bits, which keeps the per-slot metadata in one cache
/// line.
pub const SIZE_LIMIT: usize = if usize::BITS >= 64 { 1 << 31 } else { 1 << 30 };

// Offsets and lengths inside a slot are stored as `u32`.
const _: () = assert!(SIZE_LIMIT <= u32::MAX as usize);

/// The most slots one slab holds.
pub(crate) const MAX_SLOTS_PER_SLAB: usize = 4096;

// Slot indices fit the metadata's `u32`s.
const _: () = assert!(MAX_SLOTS_PER_SLAB <= u32::MAX as usize);

/// The most bytes of slots in one small-class slab (its red zones are
/// written when it is mapped, touching every page).
pub(crate) const SMALL_SLAB_BYTES: usize = 64 << 10;

/// Bytes of canary between two packed slots (and before the first and after
/// the last): a multiple of 64, so packed slots stay 64-byte aligned.
pub(crate) const REDZONE: usize = 64;

/// Bytes of canary at each end of a guard page that could not be placed.
pub(crate) const EDGE_CANARY: usize = 64;

const _: () = assert!(REDZONE.is_multiple_of(64) && REDZONE >= EDGE_CANARY);

/// Bytes of one class a thread may keep in its cache (at least one slot, at
/// most [`THREAD_CACHE_SLOTS`]).
pub(crate) const THREAD_CACHE_BYTES: usize = 1 << 20;

/// The most slots of one class a thread keeps.
pub(crate) const THREAD_CACHE_SLOTS: usize = 64;

/// The size of a memory page in bytes (4096 on most x86-64 and ARM Linux
/// systems); every buffer's first byte is a multiple of it.
#[inline]
pub fn page_size() -> usize {
    region::page::size()
}
