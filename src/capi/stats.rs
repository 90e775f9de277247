//! An allocator's counters, as C structs.

use std::mem::size_of;

use super::handles::TABLE;
use super::{guarded, pagepool_allocator, put, E_INVALIDARG, E_POINTER, HRESULT};
use crate::stats::CorruptionKind;

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
        let stats = stats_ex(a)?;
        let stats = pagepool_stats {
            buffers_in_use: stats.buffers_in_use,
            bytes_in_use: stats.bytes_in_use,
            bytes_reserved: stats.bytes_reserved,
            bytes_limit: stats.bytes_limit,
            exhausted: stats.exhausted,
            rejected: stats.rejected,
        };
        // SAFETY: non-null (checked), valid (caller's contract).
        unsafe { put(out, stats) }
    })
}

/// An allocator's counters with the diagnostics, for
/// `pagepool_allocator_stats_ex`; versioned by `size` as `pagepool_config`
/// is (later versions add fields at the end).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct pagepool_stats_ex {
    /// `sizeof(pagepool_stats_ex)` as the caller compiled it; set by the
    /// caller.
    pub size: u32,
    /// 0.
    pub reserved: u32,
    /// As in `pagepool_stats`.
    pub buffers_in_use: u64,
    /// As in `pagepool_stats`.
    pub bytes_in_use: u64,
    /// As in `pagepool_stats`.
    pub bytes_reserved: u64,
    /// As in `pagepool_stats`.
    pub bytes_limit: u64,
    /// As in `pagepool_stats`.
    pub exhausted: u64,
    /// As in `pagepool_stats`.
    pub rejected: u64,
    /// Corruptions found, every kind.
    pub corruptions: u64,
    /// Writes past `max_len` found in the slack canary.
    pub corruptions_slack_canary: u64,
    /// Writes into a packet's red zone or an edge canary.
    pub corruptions_edge_canary: u64,
    /// Writes after release found in the poison.
    pub corruptions_poison: u64,
    /// Slots without a guard page they should have.
    pub unguarded_slots: u64,
    /// Released slots held in the quarantine.
    pub buffers_quarantined: u64,
}

/// The size of the first version of `pagepool_stats_ex`.
const STATS_EX_V1: usize = 104;
const _: () = assert!(size_of::<pagepool_stats_ex>() == STATS_EX_V1);

/// The counters of allocator `a`.
fn stats_ex(a: *mut pagepool_allocator) -> Result<pagepool_stats_ex, HRESULT> {
    let pool = TABLE.lock().pool(a as usize)?;
    let s = pool.stats();
    let kinds = pool.inner.checks.corruption_counts();
    Ok(pagepool_stats_ex {
        size: size_of::<pagepool_stats_ex>() as u32,
        reserved: 0,
        buffers_in_use: s.buffers_in_use as u64,
        bytes_in_use: s.bytes_in_use as u64,
        bytes_reserved: s.bytes_reserved as u64,
        bytes_limit: s.bytes_limit.unwrap_or(0) as u64,
        exhausted: s.exhausted,
        rejected: s.rejected,
        corruptions: s.corruptions,
        corruptions_slack_canary: kinds[CorruptionKind::SlackCanary.index()],
        corruptions_edge_canary: kinds[CorruptionKind::EdgeCanary.index()],
        corruptions_poison: kinds[CorruptionKind::Poison.index()],
        unguarded_slots: s.unguarded_slots as u64,
        buffers_quarantined: s.buffers_quarantined as u64,
    })
}

/// The allocator's counters, the corruption counts by kind among them.
/// Set `out->size = sizeof *out` first: the call writes that many bytes
/// (the fields it knows, zero past them) and leaves `size` as it was.
///
/// Returns `S_OK`, `E_POINTER`, `E_HANDLE`, or `E_INVALIDARG` when
/// `out->size` is below the first version's.
///
/// # Safety
/// `out` is null or valid for reads of a `uint32_t` and writes of
/// `out->size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_allocator_stats_ex(
    a: *mut pagepool_allocator,
    out: *mut pagepool_stats_ex,
) -> HRESULT {
    guarded(|| {
        if out.is_null() {
            return Err(E_POINTER);
        }
        // SAFETY: non-null (checked); its first field is readable (caller's
        // contract).
        let size = unsafe { out.cast::<u32>().read() };
        if (size as usize) < STATS_EX_V1 {
            return Err(E_INVALIDARG);
        }
        let stats = pagepool_stats_ex {
            size,
            ..stats_ex(a)?
        };
        let n = (size as usize).min(size_of::<pagepool_stats_ex>());
        // SAFETY: `out` is valid for writes of `size >= n` bytes (caller's
        // contract); `stats` is `n` readable bytes at least.
        unsafe {
            std::ptr::write_bytes(out.cast::<u8>(), 0, size as usize);
            std::ptr::copy_nonoverlapping(
                (&stats as *const pagepool_stats_ex).cast::<u8>(),
                out.cast::<u8>(),
                n,
            );
        }
        Ok(())
    })
}
