//! The C ABI (feature `capi`): `IWMSBufferAllocator` and `INSSBuffer` as C
//! functions returning HRESULT codes, declared in `include/pagepool.h`.
//!
//! The crate builds as a `staticlib` (`libpagepool.a`) and a `cdylib`
//! (`libpagepool.so`) besides the Rust library; link one and include the
//! header:
//!
//! ```c
//! #include "pagepool.h"
//!
//! pagepool_allocator *alloc;
//! pagepool_buffer *buf;
//! uint8_t *data;
//! if (pagepool_allocator_create("vod", 64u << 20, &alloc) != S_OK) abort();
//! if (pagepool_allocate_page_size_buffer(alloc, 65536, &buf) == S_OK) {
//!     pagepool_buffer_get_buffer(buf, &data);   /* page-aligned */
//!     /* read(fd, data, 65536) ... */
//!     pagepool_buffer_set_length(buf, 65536);
//!     pagepool_buffer_release(buf, NULL);        /* back to the pool */
//! }
//! pagepool_allocator_destroy(alloc);
//! ```
//!
//! # Handles are validated, not trusted
//!
//! `pagepool_allocator *` and `pagepool_buffer *` are opaque handles, not
//! addresses: each encodes an index into a process-wide table and a
//! generation number. Every call looks its handle up under the table's lock
//! and checks the index, the generation and the kind, so a null pointer
//! (`E_POINTER`), a forged or foreign pointer, a handle used after its last
//! `Release` or `destroy`, or an allocator passed as a buffer (all
//! `E_HANDLE`) is refused without touching memory, and the allocator stays
//! usable. A generation is 32 bits (16 on 32-bit targets): a stale handle is
//! recognised unless its table entry was reused 2^32 times since.
//!
//! Each call takes one uncontended lock: a C caller pays about as much as
//! for a `malloc`, not the Rust hot path's few nanoseconds.
//!
//! A failed `create` or allocation leaves NULL in its out pointer (when
//! that pointer is not itself NULL), as COM does.
//!
//! # Lifetimes
//!
//! A buffer holds one reference when allocated; `AddRef` adds one,
//! `Release` drops one and returns the slot to the pool at zero. Destroying
//! an allocator while its buffers are out is allowed: they stay valid until
//! released, and the pool's memory is unmapped after the last one.
//!
//! | code | value | when |
//! |---|---|---|
//! | `S_OK` | `0x00000000` | success |
//! | `E_POINTER` | `0x80004003` | a required pointer argument is null |
//! | `E_HANDLE` | `0x80070006` | a handle that is not a live allocator / buffer of that kind |
//! | `E_INVALIDARG` | `0x80070057` | size 0, above the largest buffer or `u32`, `SetLength` past the maximum, a name that is not UTF-8 |
//! | `E_OUTOFMEMORY` | `0x8007000E` | the byte cap is reached, or the OS refused memory |
//! | `E_UNEXPECTED` | `0x8000FFFF` | a bug inside pagepool (a caught panic) |

// The C names, as the header spells them.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::buffer::PageBuffer;
use crate::buffer_pool::BufferPool;
use crate::Error;

mod handles;

use handles::{HandleKind, Held, TABLE};

/// A COM-style status code: 0 for success, negative (high bit set) for a
/// failure.
pub type HRESULT = i32;

/// Success.
pub const S_OK: HRESULT = 0;
/// A required pointer argument is null.
pub const E_POINTER: HRESULT = 0x8000_4003_u32 as i32;
/// The handle is not a live allocator or buffer of the expected kind.
pub const E_HANDLE: HRESULT = 0x8007_0006_u32 as i32;
/// An argument is out of range.
pub const E_INVALIDARG: HRESULT = 0x8007_0057_u32 as i32;
/// The byte cap is reached, or the operating system refused memory.
pub const E_OUTOFMEMORY: HRESULT = 0x8007_000E_u32 as i32;
/// An internal error (a panic inside pagepool, caught at the boundary).
pub const E_UNEXPECTED: HRESULT = 0x8000_FFFF_u32 as i32;

/// An allocator handle (`IWMSBufferAllocator`); opaque to C.
#[repr(C)]
#[derive(Debug)]
pub struct pagepool_allocator {
    _opaque: [u8; 0],
}

/// A buffer handle (`INSSBuffer`); opaque to C.
#[repr(C)]
#[derive(Debug)]
pub struct pagepool_buffer {
    _opaque: [u8; 0],
}

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

/// Runs `f`, turning a panic into `E_UNEXPECTED` (a panic must not unwind
/// into C) and `Err(code)` into `code`.
fn guarded(f: impl FnOnce() -> Result<(), HRESULT>) -> HRESULT {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => S_OK,
        Ok(Err(code)) => code,
        Err(_) => E_UNEXPECTED,
    }
}

/// The HRESULT for a pagepool error.
fn code(e: &Error) -> HRESULT {
    match e {
        Error::ZeroSize
        | Error::TooLarge { .. }
        | Error::LengthExceedsMax { .. }
        | Error::InvalidConfig(_) => E_INVALIDARG,
        Error::Exhausted { .. }
        | Error::QuotaExceeded { .. }
        | Error::TimedOut { .. }
        | Error::Os(_) => E_OUTOFMEMORY,
        _ => E_UNEXPECTED,
    }
}

/// Writes `value` through an out pointer checked non-null.
///
/// # Safety
/// `out` is null or valid for a write of `T`.
unsafe fn put<T>(out: *mut T, value: T) -> Result<(), HRESULT> {
    if out.is_null() {
        return Err(E_POINTER);
    }
    // SAFETY: non-null (checked), and valid for writes (caller's contract).
    unsafe { out.write(value) };
    Ok(())
}

/// Writes `f(buffer)` through `out` for the buffer handle `b`.
///
/// # Safety
/// `out` is null or valid for a write of `T`.
unsafe fn read_buffer<T>(
    b: *mut pagepool_buffer,
    out: *mut T,
    f: impl FnOnce(&mut PageBuffer) -> T,
) -> HRESULT {
    guarded(|| {
        if out.is_null() {
            return Err(E_POINTER);
        }
        let value = f(TABLE.lock().buffer(b as usize)?.0);
        // SAFETY: non-null (checked), valid (caller's contract).
        unsafe { put(out, value) }
    })
}

/// Allocates through `a` and returns a new buffer handle in `out`.
///
/// # Safety
/// `out` is null or valid for a write of a pointer.
unsafe fn allocate(
    a: *mut pagepool_allocator,
    max_size: u32,
    out: *mut *mut pagepool_buffer,
    page_aligned: bool,
) -> HRESULT {
    if !out.is_null() {
        // COM's rule: a failed call leaves NULL in its out pointer.
        // SAFETY: non-null, valid for a write (caller's contract).
        unsafe { out.write(std::ptr::null_mut()) };
    }
    guarded(|| {
        if out.is_null() {
            return Err(E_POINTER);
        }
        let pool = TABLE.lock().pool(a as usize)?;
        let size = max_size as usize;
        let buf = if page_aligned {
            pool.allocate_page_size_buffer(size)
        } else {
            pool.allocate_buffer(size)
        }
        .map_err(|e| code(&e))?;
        let handle = TABLE
            .lock()
            .insert(Held::Buffer { buf, refs: 1 })
            .ok_or(E_OUTOFMEMORY)?;
        // SAFETY: `out` is non-null (checked) and valid (caller's contract).
        unsafe { put(out, handle as *mut pagepool_buffer) }
    })
}

/// Creates an allocator (a `BufferPool`): `name` (UTF-8, may be null for
/// `"capi"`) names it in metrics and reports, `max_bytes` caps its mapped
/// bytes (0: no cap). The handle goes to `*out`.
///
/// Returns `S_OK`, `E_POINTER` (null `out`), or `E_INVALIDARG` (a name that
/// is not UTF-8, or a cap too small for one buffer).
///
/// # Safety
/// `name` is null or a NUL-terminated string; `out` is null or valid for a
/// write of a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_allocator_create(
    name: *const c_char,
    max_bytes: u64,
    out: *mut *mut pagepool_allocator,
) -> HRESULT {
    if !out.is_null() {
        // COM's rule: a failed call leaves NULL in its out pointer.
        // SAFETY: non-null, valid for a write (caller's contract).
        unsafe { out.write(std::ptr::null_mut()) };
    }
    guarded(|| {
        if out.is_null() {
            return Err(E_POINTER);
        }
        let name = if name.is_null() {
            "capi"
        } else {
            // SAFETY: a NUL-terminated string (caller's contract).
            unsafe { CStr::from_ptr(name) }
                .to_str()
                .map_err(|_| E_INVALIDARG)?
        };
        let mut builder = BufferPool::builder().name(name);
        if max_bytes != 0 {
            builder = builder.max_bytes(usize::try_from(max_bytes).map_err(|_| E_INVALIDARG)?);
        }
        let pool = builder.build().map_err(|e| code(&e))?;
        let handle = TABLE
            .lock()
            .insert(Held::Allocator(pool))
            .ok_or(E_OUTOFMEMORY)?;
        // SAFETY: `out` is non-null (checked) and valid (caller's contract).
        unsafe { put(out, handle as *mut pagepool_allocator) }
    })
}

/// Destroys an allocator handle. Buffers it handed out stay valid until
/// their last `Release`.
///
/// Returns `S_OK` or `E_HANDLE`.
///
/// # Safety
/// None: any value is checked.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_allocator_destroy(a: *mut pagepool_allocator) -> HRESULT {
    guarded(|| {
        let entry = {
            let mut table = TABLE.lock();
            let i = table
                .find(a as usize, HandleKind::Allocator)
                .ok_or(E_HANDLE)?;
            table.remove(i)
        };
        // The pool handle drops outside the table's lock.
        drop(entry);
        Ok(())
    })
}

/// `IWMSBufferAllocator::AllocateBuffer`: a buffer of at most `max_size`
/// bytes (length 0) with no page alignment promised: 64-byte aligned up to
/// 2 KiB (packet classes), page-aligned above.
///
/// Returns `S_OK`, `E_POINTER`, `E_HANDLE`, `E_INVALIDARG` (0 or above the
/// largest buffer) or `E_OUTOFMEMORY` (cap reached, or the OS refused).
///
/// # Safety
/// `out` is null or valid for a write of a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_allocate_buffer(
    a: *mut pagepool_allocator,
    max_size: u32,
    out: *mut *mut pagepool_buffer,
) -> HRESULT {
    // SAFETY: forwarded from the caller.
    unsafe { allocate(a, max_size, out, false) }
}

/// `IWMSBufferAllocator::AllocatePageSizeBuffer`: a page-aligned buffer of
/// at most `max_size` bytes (length 0), with guard pages around it.
///
/// Returns as `pagepool_allocate_buffer`.
///
/// # Safety
/// `out` is null or valid for a write of a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_allocate_page_size_buffer(
    a: *mut pagepool_allocator,
    max_size: u32,
    out: *mut *mut pagepool_buffer,
) -> HRESULT {
    // SAFETY: forwarded from the caller.
    unsafe { allocate(a, max_size, out, true) }
}

/// `INSSBuffer::GetBuffer`: the buffer's first byte, valid for `max_length`
/// bytes until the buffer's last `Release`.
///
/// Returns `S_OK`, `E_POINTER` or `E_HANDLE`.
///
/// # Safety
/// `out` is null or valid for a write of a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_buffer_get_buffer(
    b: *mut pagepool_buffer,
    out: *mut *mut u8,
) -> HRESULT {
    // SAFETY: forwarded from the caller.
    unsafe { read_buffer(b, out, PageBuffer::as_mut_ptr) }
}

/// `INSSBuffer::GetBufferAndLength`: the first byte and the current length.
///
/// Returns `S_OK`, `E_POINTER` (either pointer null) or `E_HANDLE`.
///
/// # Safety
/// `out` and `len` are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_buffer_get_buffer_and_length(
    b: *mut pagepool_buffer,
    out: *mut *mut u8,
    len: *mut u32,
) -> HRESULT {
    guarded(|| {
        if out.is_null() || len.is_null() {
            return Err(E_POINTER);
        }
        let (ptr, n) = TABLE.lock().buffer(b as usize)?.0.buffer_and_length();
        // SAFETY: both non-null (checked), valid (caller's contract); the
        // length fits: it is at most `max_len`, a `u32` at allocation.
        unsafe {
            put(out, ptr)?;
            put(len, n as u32)
        }
    })
}

/// `INSSBuffer::GetLength`: the current length.
///
/// Returns `S_OK`, `E_POINTER` or `E_HANDLE`.
///
/// # Safety
/// `len` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_buffer_get_length(
    b: *mut pagepool_buffer,
    len: *mut u32,
) -> HRESULT {
    // SAFETY: forwarded from the caller. The length fits: it is at most
    // `max_len`, a `u32` at allocation.
    unsafe { read_buffer(b, len, |buf| buf.len() as u32) }
}

/// `INSSBuffer::GetMaxLength`: the `max_size` the buffer was allocated with.
///
/// Returns `S_OK`, `E_POINTER` or `E_HANDLE`.
///
/// # Safety
/// `len` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_buffer_get_max_length(
    b: *mut pagepool_buffer,
    len: *mut u32,
) -> HRESULT {
    // SAFETY: forwarded from the caller; `max_len` was a `u32`.
    unsafe { read_buffer(b, len, |buf| buf.max_len() as u32) }
}

/// `INSSBuffer::SetLength`: sets the current length.
///
/// Returns `S_OK`, `E_HANDLE`, or `E_INVALIDARG` past the maximum length
/// (the length is then unchanged).
///
/// # Safety
/// None: any value is checked.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_buffer_set_length(b: *mut pagepool_buffer, len: u32) -> HRESULT {
    guarded(|| {
        let mut table = TABLE.lock();
        let (buf, _) = table.buffer(b as usize)?;
        buf.set_len(len as usize).map_err(|e| code(&e))
    })
}

/// `AddRef`: one more reference to the buffer; the new count goes to
/// `*count` when `count` is not null.
///
/// Returns `S_OK`, `E_HANDLE`, or `E_INVALIDARG` when the count would
/// overflow.
///
/// # Safety
/// `count` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_buffer_add_ref(
    b: *mut pagepool_buffer,
    count: *mut u32,
) -> HRESULT {
    guarded(|| {
        let n = {
            let mut table = TABLE.lock();
            let (_, refs) = table.buffer(b as usize)?;
            *refs = refs.checked_add(1).ok_or(E_INVALIDARG)?;
            *refs
        };
        if !count.is_null() {
            // SAFETY: non-null (checked), valid (caller's contract).
            unsafe { count.write(n) };
        }
        Ok(())
    })
}

/// `Release`: drops one reference; at zero the buffer goes back to its pool
/// and the handle dies (a later call with it gives `E_HANDLE`). The new
/// count goes to `*count` when `count` is not null.
///
/// Returns `S_OK` or `E_HANDLE` (including a `Release` after the last one).
///
/// # Safety
/// `count` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_buffer_release(
    b: *mut pagepool_buffer,
    count: *mut u32,
) -> HRESULT {
    guarded(|| {
        let (n, gone) = {
            let mut table = TABLE.lock();
            let i = table.find(b as usize, HandleKind::Buffer).ok_or(E_HANDLE)?;
            let Held::Buffer { refs, .. } = &mut table.rows[i].held else {
                return Err(E_HANDLE);
            };
            *refs -= 1;
            let n = *refs;
            (n, (n == 0).then(|| table.remove(i)))
        };
        // The buffer returns to its pool outside the table's lock.
        drop(gone);
        if !count.is_null() {
            // SAFETY: non-null (checked), valid (caller's contract).
            unsafe { count.write(n) };
        }
        Ok(())
    })
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

#[cfg(test)]
mod tests {
    use super::handles::HALF;
    use super::*;

    #[test]
    fn handles_are_checked_for_index_generation_and_kind() {
        let mut a = std::ptr::null_mut();
        // SAFETY: a NUL-terminated name and a valid out pointer.
        let created = unsafe { pagepool_allocator_create(c"t".as_ptr(), 0, &mut a) };
        assert_eq!(created, S_OK);
        let mut b = std::ptr::null_mut();
        // SAFETY: valid out pointer.
        assert_eq!(unsafe { pagepool_allocate_buffer(a, 100, &mut b) }, S_OK);
        let mut n = 0u32;
        // SAFETY: valid out pointers; every handle is checked by the callee.
        unsafe {
            // The wrong kind each way.
            assert_eq!(pagepool_buffer_get_length(a.cast(), &mut n), E_HANDLE);
            assert_eq!(pagepool_allocator_destroy(b.cast()), E_HANDLE);
            // Forged values.
            for forged in [
                1usize,
                0x1234,
                usize::MAX,
                (b as usize) ^ 1,
                (b as usize) + (1 << HALF),
            ] {
                assert_eq!(pagepool_buffer_set_length(forged as *mut _, 0), E_HANDLE);
            }
            assert_eq!(pagepool_buffer_release(b, &mut n), S_OK);
            assert_eq!(n, 0);
            // Stale: released, then the entry reused by a new buffer.
            let mut c = std::ptr::null_mut();
            assert_eq!(pagepool_allocate_buffer(a, 100, &mut c), S_OK);
            assert_ne!(b, c);
            assert_eq!(pagepool_buffer_release(b, std::ptr::null_mut()), E_HANDLE);
            assert_eq!(pagepool_buffer_release(c, std::ptr::null_mut()), S_OK);
            assert_eq!(pagepool_allocator_destroy(a), S_OK);
            assert_eq!(pagepool_allocator_destroy(a), E_HANDLE);
        }
    }
}
