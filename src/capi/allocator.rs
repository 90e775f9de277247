//! Allocator handles: creating and destroying a pool.

use std::ffi::{c_char, CStr};

use super::handles::{HandleKind, Held, TABLE};
use super::{
    code, guarded, pagepool_allocator, put, E_HANDLE, E_INVALIDARG, E_OUTOFMEMORY, E_POINTER,
    HRESULT,
};
use crate::buffer_pool::BufferPool;

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
