//! Allocator handles: creating and destroying a pool.

use std::ffi::{c_char, CStr};

use super::config::{pagepool_config, read_versioned, CONFIG_V1};
use super::handles::{new_handle, HandleKind, Held, TABLE};
use super::report::install_sink;
use super::{code, guarded, pagepool_allocator, E_HANDLE, E_INVALIDARG, E_POINTER, HRESULT};
use crate::buffer_pool::BufferPool;
use crate::builder::PoolBuilder;

/// The allocator name C passed: `"capi"` for null.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
unsafe fn name<'a>(name: *const c_char) -> Result<&'a str, HRESULT> {
    if name.is_null() {
        return Ok("capi");
    }
    // SAFETY: a NUL-terminated string (caller's contract).
    unsafe { CStr::from_ptr(name) }
        .to_str()
        .map_err(|_| E_INVALIDARG)
}

/// Builds the pool `make` gives and stores a handle to it in `*out`
/// (NULL on failure).
///
/// # Safety
/// `out` is null or valid for a write of a pointer.
unsafe fn create(
    out: *mut *mut pagepool_allocator,
    make: impl FnOnce() -> Result<PoolBuilder, HRESULT>,
) -> HRESULT {
    super::handles::join_fork_handlers();
    let held = || {
        let pool = make()?.build().map_err(|e| code(&e))?;
        // From now on the process's reports reach stderr or the callback.
        install_sink();
        Ok(Held::Allocator(pool))
    };
    // SAFETY: `out` as the caller promised.
    unsafe { new_handle(out, held) }
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
    let make = || {
        let mut builder = BufferPool::builder().name(
            // SAFETY: null or NUL-terminated (caller's contract).
            unsafe { self::name(name) }?,
        );
        if max_bytes != 0 {
            builder = builder.max_bytes(usize::try_from(max_bytes).map_err(|_| E_INVALIDARG)?);
        }
        Ok(builder)
    };
    // SAFETY: `out` is null or valid (caller's contract).
    unsafe { create(out, make) }
}

/// Creates an allocator with the settings in `*config` (see
/// `pagepool_config`; `name` as for `pagepool_allocator_create`).
///
/// Returns `S_OK`, `E_POINTER` (null `config` or `out`), or `E_INVALIDARG`
/// (a name that is not UTF-8, `config->size` too small, or larger with
/// nonzero fields this library does not know, a value out of range, a
/// quarantine without guard pages, a cap too small for one buffer).
///
/// # Safety
/// `name` is null or a NUL-terminated string; `config` is null or valid for
/// reads of `config->size` bytes; `out` is null or valid for a write of a
/// pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_allocator_create_ex(
    name: *const c_char,
    config: *const pagepool_config,
    out: *mut *mut pagepool_allocator,
) -> HRESULT {
    let make = || {
        if config.is_null() {
            return Err(E_POINTER);
        }
        // SAFETY: non-null (checked), `size` bytes readable (caller's
        // contract).
        let config = unsafe { read_versioned(config, CONFIG_V1, pagepool_config::default()) }?;
        // SAFETY: null or NUL-terminated (caller's contract).
        config.builder(unsafe { self::name(name) }?)
    };
    // SAFETY: `out` is null or valid (caller's contract).
    unsafe { create(out, make) }
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
