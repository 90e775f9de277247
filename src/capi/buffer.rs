//! Buffer handles: allocation through an allocator handle, the `INSSBuffer`
//! calls, and the reference count.

use std::ffi::{c_char, c_int};

use super::handles::{new_handle, HandleKind, Held, TABLE};
use super::report::{deliver, PAGEPOOL_REPORT_STALE_HANDLE};
#[cfg(any(all(target_arch = "x86_64", not(windows)), target_arch = "aarch64"))]
use super::sites::with_return_address;
use super::sites::Caller;
use super::{
    code, guarded, pagepool_allocator, pagepool_buffer, put, E_HANDLE, E_INVALIDARG, E_POINTER,
    HRESULT, S_OK,
};
use crate::buffer::PageBuffer;
use crate::site::SiteRef;

/// `guarded(f)` for a call named `call` on buffer handle `b`: when the
/// handle is refused and is one released before, the use is reported
/// (`PAGEPOOL_REPORT_STALE_HANDLE`) with the buffer it was; still
/// `E_HANDLE`.
fn guarded_buffer(
    b: *mut pagepool_buffer,
    call: &str,
    f: impl FnOnce() -> Result<(), HRESULT>,
) -> HRESULT {
    let hr = guarded(f);
    if hr == E_HANDLE {
        // Formatted under the table's lock, delivered outside it (the
        // callback may call pagepool).
        let stale = guarded(|| {
            let found = TABLE.lock().grave(b as usize).map(|g| {
                let what = if call == "pagepool_buffer_release" {
                    "a double release"
                } else {
                    "a use after the last release"
                };
                (
                    format!("pagepool: {call} with stale buffer handle {b:p} ({what}); it was {g}"),
                    g.address,
                )
            });
            if let Some((text, address)) = found {
                deliver(PAGEPOOL_REPORT_STALE_HANDLE, &text, address);
            }
            Ok(())
        });
        debug_assert_eq!(stale, S_OK);
    }
    hr
}

/// Writes `f(buffer)` through `out` for the buffer handle `b`.
///
/// # Safety
/// `out` is null or valid for a write of `T`.
unsafe fn read_buffer<T>(
    b: *mut pagepool_buffer,
    call: &str,
    out: *mut T,
    f: impl FnOnce(&mut PageBuffer) -> T,
) -> HRESULT {
    guarded_buffer(b, call, || {
        if out.is_null() {
            return Err(E_POINTER);
        }
        let value = f(TABLE.lock().buffer(b as usize)?.0);
        // SAFETY: non-null (checked), valid (caller's contract).
        unsafe { put(out, value) }
    })
}

/// Allocates through `a` for `caller` and returns a new buffer handle in
/// `out`.
///
/// # Safety
/// `out` is null or valid for a write of a pointer; `caller` as for
/// [`Caller::site`].
unsafe fn allocate(
    a: *mut pagepool_allocator,
    max_size: u32,
    out: *mut *mut pagepool_buffer,
    page_aligned: bool,
    caller: Caller,
) -> HRESULT {
    let make = || {
        let pool = TABLE.lock().pool(a as usize)?;
        // SAFETY: forwarded from the caller (the strings are valid during
        // this call, and the closure runs within it).
        let site = || unsafe { caller.site() };
        let buf = pool
            .allocate_from(max_size as usize, site, !page_aligned)
            .map_err(|e| code(&e))?;
        Ok(Held::Buffer { buf, refs: 1 })
    };
    // SAFETY: `out` as the caller promised.
    unsafe { new_handle(out, make) }
}

/// `pagepool_allocate_buffer` called from `returned` (0: unknown).
///
/// # Safety
/// As for `pagepool_allocate_buffer`.
unsafe extern "C" fn allocate_buffer_returning(
    a: *mut pagepool_allocator,
    max_size: u32,
    out: *mut *mut pagepool_buffer,
    returned: usize,
) -> HRESULT {
    // SAFETY: forwarded from the caller; a return address is no pointer.
    unsafe { allocate(a, max_size, out, false, Caller::Returned(returned)) }
}

/// `pagepool_allocate_page_size_buffer` called from `returned`.
///
/// # Safety
/// As for `pagepool_allocate_page_size_buffer`.
unsafe extern "C" fn allocate_page_size_buffer_returning(
    a: *mut pagepool_allocator,
    max_size: u32,
    out: *mut *mut pagepool_buffer,
    returned: usize,
) -> HRESULT {
    // SAFETY: forwarded from the caller; a return address is no pointer.
    unsafe { allocate(a, max_size, out, true, Caller::Returned(returned)) }
}

/// `IWMSBufferAllocator::AllocateBuffer`: a buffer of at most `max_size`
/// bytes (length 0) with no page alignment promised: 64-byte aligned up to
/// 2 KiB (packet classes), page-aligned above. Records the caller's return
/// address as the allocation site (see `capi/sites.rs`); the header's
/// macro of the same name calls `pagepool_allocate_buffer_at` instead.
///
/// Returns `S_OK`, `E_POINTER`, `E_HANDLE`, `E_INVALIDARG` (0 or above the
/// largest buffer) or `E_OUTOFMEMORY` (cap reached, or the OS refused).
///
/// # Safety
/// `out` is null or valid for a write of a pointer.
#[cfg(any(all(target_arch = "x86_64", not(windows)), target_arch = "aarch64"))]
// SAFETY: the body only moves the return address into the fourth argument
// register and tail-jumps to a function taking it there.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_allocate_buffer(
    a: *mut pagepool_allocator,
    max_size: u32,
    out: *mut *mut pagepool_buffer,
) -> HRESULT {
    with_return_address!(3, allocate_buffer_returning)
}

/// `IWMSBufferAllocator::AllocateBuffer`, as above; this build records no
/// site for it (no naked functions: see `capi/sites.rs`).
///
/// # Safety
/// `out` is null or valid for a write of a pointer.
#[cfg(not(any(all(target_arch = "x86_64", not(windows)), target_arch = "aarch64")))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_allocate_buffer(
    a: *mut pagepool_allocator,
    max_size: u32,
    out: *mut *mut pagepool_buffer,
) -> HRESULT {
    // SAFETY: forwarded from the caller.
    unsafe { allocate_buffer_returning(a, max_size, out, 0) }
}

/// `IWMSBufferAllocator::AllocatePageSizeBuffer`: a page-aligned buffer of
/// at most `max_size` bytes (length 0), with guard pages around it. Records
/// the caller's return address, as `pagepool_allocate_buffer` does.
///
/// Returns as `pagepool_allocate_buffer`.
///
/// # Safety
/// `out` is null or valid for a write of a pointer.
#[cfg(any(all(target_arch = "x86_64", not(windows)), target_arch = "aarch64"))]
// SAFETY: as for `pagepool_allocate_buffer`.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_allocate_page_size_buffer(
    a: *mut pagepool_allocator,
    max_size: u32,
    out: *mut *mut pagepool_buffer,
) -> HRESULT {
    with_return_address!(3, allocate_page_size_buffer_returning)
}

/// `IWMSBufferAllocator::AllocatePageSizeBuffer`, as above; no site.
///
/// # Safety
/// `out` is null or valid for a write of a pointer.
#[cfg(not(any(all(target_arch = "x86_64", not(windows)), target_arch = "aarch64")))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_allocate_page_size_buffer(
    a: *mut pagepool_allocator,
    max_size: u32,
    out: *mut *mut pagepool_buffer,
) -> HRESULT {
    // SAFETY: forwarded from the caller.
    unsafe { allocate_page_size_buffer_returning(a, max_size, out, 0) }
}

/// `pagepool_allocate_buffer` recording `file:line` in `func` as the
/// allocation site (the header's `pagepool_allocate_buffer` macro passes
/// `__FILE__`, `__LINE__`, `__func__`). A null `file` records no site; a
/// null `func`, no function.
///
/// # Safety
/// `out` is null or valid for a write of a pointer; `file` and `func` are
/// null or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_allocate_buffer_at(
    a: *mut pagepool_allocator,
    max_size: u32,
    file: *const c_char,
    line: c_int,
    func: *const c_char,
    out: *mut *mut pagepool_buffer,
) -> HRESULT {
    let caller = Caller::Named {
        file,
        line,
        function: func,
    };
    // SAFETY: forwarded from the caller.
    unsafe { allocate(a, max_size, out, false, caller) }
}

/// `pagepool_allocate_page_size_buffer` recording `file:line` in `func`,
/// as `pagepool_allocate_buffer_at` does.
///
/// # Safety
/// As for `pagepool_allocate_buffer_at`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_allocate_page_size_buffer_at(
    a: *mut pagepool_allocator,
    max_size: u32,
    file: *const c_char,
    line: c_int,
    func: *const c_char,
    out: *mut *mut pagepool_buffer,
) -> HRESULT {
    let caller = Caller::Named {
        file,
        line,
        function: func,
    };
    // SAFETY: forwarded from the caller.
    unsafe { allocate(a, max_size, out, true, caller) }
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
    unsafe { read_buffer(b, "pagepool_buffer_get_buffer", out, PageBuffer::as_mut_ptr) }
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
    guarded_buffer(b, "pagepool_buffer_get_buffer_and_length", || {
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
    unsafe { read_buffer(b, "pagepool_buffer_get_length", len, |buf| buf.len() as u32) }
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
    unsafe {
        read_buffer(b, "pagepool_buffer_get_max_length", len, |buf| {
            buf.max_len() as u32
        })
    }
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
    guarded_buffer(b, "pagepool_buffer_set_length", || {
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
    guarded_buffer(b, "pagepool_buffer_add_ref", || {
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

/// Drops one reference to buffer `b` for `caller`; at zero the buffer goes
/// back to its pool, released at `caller`'s site.
///
/// # Safety
/// `count` is null or valid for a write; `caller` as for [`Caller::site`].
unsafe fn release(b: *mut pagepool_buffer, count: *mut u32, caller: Caller) -> HRESULT {
    guarded_buffer(b, "pagepool_buffer_release", || {
        let (n, gone) = {
            let mut table = TABLE.lock();
            let i = table.find(b as usize, HandleKind::Buffer).ok_or(E_HANDLE)?;
            let Held::Buffer { buf, refs } = &mut table.rows[i].held else {
                return Err(E_HANDLE);
            };
            *refs -= 1;
            let n = *refs;
            let gone = if n == 0 {
                let site = if buf.pool().tracks_sites() {
                    // SAFETY: forwarded from the caller.
                    unsafe { caller.site() }
                } else {
                    SiteRef::NONE
                };
                Some((table.bury(i, b as usize, site), site))
            } else {
                None
            };
            (n, gone)
        };
        // The buffer returns to its pool outside the table's lock.
        if let Some((Held::Buffer { buf, .. }, site)) = gone {
            buf.release_at(site);
        }
        if !count.is_null() {
            // SAFETY: non-null (checked), valid (caller's contract).
            unsafe { count.write(n) };
        }
        Ok(())
    })
}

/// `pagepool_buffer_release` called from `returned` (0: unknown).
///
/// # Safety
/// As for `pagepool_buffer_release`.
unsafe extern "C" fn buffer_release_returning(
    b: *mut pagepool_buffer,
    count: *mut u32,
    returned: usize,
) -> HRESULT {
    // SAFETY: forwarded from the caller; a return address is no pointer.
    unsafe { release(b, count, Caller::Returned(returned)) }
}

/// `Release`: drops one reference; at zero the buffer goes back to its pool
/// and the handle dies (a later call with it gives `E_HANDLE`). The new
/// count goes to `*count` when `count` is not null. The last release
/// records the caller's return address as the release site (see
/// `capi/sites.rs`); the header's macro calls `pagepool_buffer_release_at`.
///
/// Returns `S_OK` or `E_HANDLE` (including a `Release` after the last one).
///
/// # Safety
/// `count` is null or valid for a write.
#[cfg(any(all(target_arch = "x86_64", not(windows)), target_arch = "aarch64"))]
// SAFETY: the body only moves the return address into the third argument
// register and tail-jumps to a function taking it there.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_buffer_release(
    b: *mut pagepool_buffer,
    count: *mut u32,
) -> HRESULT {
    with_return_address!(2, buffer_release_returning)
}

/// `Release`, as above; this build records no release site for it.
///
/// # Safety
/// `count` is null or valid for a write.
#[cfg(not(any(all(target_arch = "x86_64", not(windows)), target_arch = "aarch64")))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_buffer_release(
    b: *mut pagepool_buffer,
    count: *mut u32,
) -> HRESULT {
    // SAFETY: forwarded from the caller.
    unsafe { buffer_release_returning(b, count, 0) }
}

/// `pagepool_buffer_release` recording `file:line` in `func` as the
/// release site (the header's macro passes `__FILE__`, `__LINE__`,
/// `__func__`); a null `file` records none.
///
/// # Safety
/// `count` is null or valid for a write; `file` and `func` are null or
/// NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_buffer_release_at(
    b: *mut pagepool_buffer,
    file: *const c_char,
    line: c_int,
    func: *const c_char,
    count: *mut u32,
) -> HRESULT {
    let caller = Caller::Named {
        file,
        line,
        function: func,
    };
    // SAFETY: forwarded from the caller.
    unsafe { release(b, count, caller) }
}
