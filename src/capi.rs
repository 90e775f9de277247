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
//! usable. A buffer handle among the last 4096 released is remembered: a
//! double release or a use of it after its last release is also reported
//! (`PAGEPOOL_REPORT_STALE_HANDLE`) with the buffer it was, its pool,
//! allocation site and releasing thread. A generation is 32 bits (16 on 32-bit targets): a stale handle is
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
//! | `E_FAIL` | `0x80004005` | the OS refused to install the fault handler |
//! | `E_UNEXPECTED` | `0x8000FFFF` | a bug inside pagepool (a caught panic) |
//!
//! # Reports
//!
//! Once C has created an allocator (or set a callback), every report of the
//! process (a corruption a check finds, the leak report of an allocator
//! destroyed with buffers out, a stale buffer handle) goes to stderr, or to
//! the callback set with `pagepool_set_report_callback`: the library's
//! report sink (`observe/sink.rs`) hands them over as plain data (kind,
//! text, address) beside the `tracing` events Rust callers get. Faults on
//! guard pages and quarantined buffers are reported by the fault handler
//! (`pagepool_install_fault_handler`), to stderr.
//!
//! # Sites
//!
//! With leak tracking on, reports name where C allocated and released a
//! buffer: the header's `pagepool_allocate_buffer`,
//! `pagepool_allocate_page_size_buffer` and `pagepool_buffer_release` are
//! macros over their `_at` functions, passing `__FILE__`, `__LINE__` and
//! `__func__` (interned once per distinct site, at most 4096; later ones
//! read "(too many sites)"). The plain functions stay exported for `dlsym`
//! and other languages and record the caller's return address (x86-64 and
//! AArch64, not Windows; none elsewhere), which reports print
//! with what `dladdr` finds, and the fault handler raw (`dladdr` is not
//! async-signal-safe).
//!
//! # Files
//!
//! | file | concept |
//! |---|---|
//! | `capi.rs` | the codes, the opaque handle types, the panic guard |
//! | `capi/handles.rs` | the handle table |
//! | `capi/allocator.rs` | creating and destroying allocators |
//! | `capi/config.rs` | `pagepool_config`, the settings of `create_ex` |
//! | `capi/leak.rs` | the leak report as text |
//! | `capi/report.rs` | where diagnostics go: the fault handler |
//! | `capi/buffer.rs` | allocating buffers, the `INSSBuffer` calls |
//! | `capi/sites.rs` | C call sites: named by the header's macros, or return addresses |
//! | `capi/stats.rs` | the counters |

// The C names, as the header spells them.
#![allow(non_camel_case_types)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::Error;

mod allocator;
mod buffer;
mod config;
mod handles;
mod leak;
mod report;
mod sites;
mod stats;
#[cfg(test)]
mod tests;

pub use allocator::*;
pub use buffer::*;
pub use config::*;
pub use leak::*;
pub use report::*;
pub use stats::*;

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
/// The operating system refused a request (installing the fault handler).
pub const E_FAIL: HRESULT = 0x8000_4005_u32 as i32;
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
