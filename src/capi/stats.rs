//! An allocator's counters, as C structs.

use super::handles::TABLE;
use super::{guarded, pagepool_allocator, put, E_POINTER, HRESULT};

/// An allocator's counters, for `pagepool_allocator_stats`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct pagepool_stats {
    /// Buffers handed out and not yet released.
    pub buffers_in_use: u64,
    /// Slot bytes of those buffers.
    pub bytes_in_use: u64,
    /// Bytes mapped, guard pages included.
    pub bytes_reserved: u64,
    /// The byte cap; 0 when unlimited.
    pub bytes_limit: u64,
    /// Allocations refused at the cap.
    pub exhausted: u64,
    /// Allocations refused for their size.
    pub rejected: u64,
}

/// The allocator's counters.
///
/// Returns `S_OK`, `E_POINTER` or `E_HANDLE`.
///
/// # Safety
/// `out` is null or valid for a write of a `pagepool_stats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_allocator_stats(
    a: *mut pagepool_allocator,
    out: *mut pagepool_stats,
) -> HRESULT {
    guarded(|| {
        if out.is_null() {
            return Err(E_POINTER);
        }
        let pool = TABLE.lock().pool(a as usize)?;
        let s = pool.stats();
        let stats = pagepool_stats {
            buffers_in_use: s.buffers_in_use as u64,
            bytes_in_use: s.bytes_in_use as u64,
            bytes_reserved: s.bytes_reserved as u64,
            bytes_limit: s.bytes_limit.unwrap_or(0) as u64,
            exhausted: s.exhausted,
            rejected: s.rejected,
        };
        // SAFETY: non-null (checked), valid (caller's contract).
        unsafe { put(out, stats) }
    })
}
