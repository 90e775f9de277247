//! C call sites: the `file`, `line` and `func` the header's macros pass to
//! the `_at` calls, or the return address a plain call records.
//!
//! A plain call (`pagepool_allocate_buffer`, through `dlsym` or another
//! language) is a naked function on x86-64 and AArch64: it moves its
//! return address into the next argument register and jumps to the Rust
//! body, so no frame is made and nothing else changes. Elsewhere it records
//! no site.

use std::ffi::{c_char, c_int, CStr};

use crate::site::{Site, SiteRef};

/// Who made a call, as the caller said or as its return address shows.
#[derive(Clone, Copy)]
pub(super) enum Caller {
    /// `file` (null: no site), `line` and `function` (null: unknown).
    Named {
        file: *const c_char,
        line: c_int,
        function: *const c_char,
    },
    /// A plain call's return address (0: unknown, no site).
    Returned(usize),
}

impl Caller {
    /// The interned site.
    ///
    /// # Safety
    /// For `Named`, `file` and `function` are null or NUL-terminated
    /// strings valid during the call.
    pub(super) unsafe fn site(self) -> SiteRef {
        match self {
            Caller::Named { file, .. } if file.is_null() => SiteRef::NONE,
            Caller::Named {
                file,
                line,
                function,
            } => {
                // SAFETY: non-null (checked) and a C string (caller's
                // contract).
                let file = unsafe { CStr::from_ptr(file) }.to_string_lossy();
                let function = if function.is_null() {
                    "".into()
                } else {
                    // SAFETY: non-null (checked) and a C string (caller's
                    // contract).
                    unsafe { CStr::from_ptr(function) }.to_string_lossy()
                };
                let line = u32::try_from(line).unwrap_or(0);
                SiteRef::c(Site::source(&file, line, &function))
            }
            Caller::Returned(0) => SiteRef::NONE,
            Caller::Returned(address) => SiteRef::c(Site::return_to(address)),
        }
    }
}

/// The body of a naked function: the return address into argument
/// register `$n` (0-based; x86-64 SysV: `[rsp]` at entry), then a tail
/// jump to `$f`, which takes it as that argument.
// SysV only: Windows x64 passes arguments in other registers.
#[cfg(all(target_arch = "x86_64", not(windows)))]
macro_rules! with_return_address {
    (2, $f:path) => {
        core::arch::naked_asm!("mov rdx, [rsp]", "jmp {f}", f = sym $f)
    };
    (3, $f:path) => {
        core::arch::naked_asm!("mov rcx, [rsp]", "jmp {f}", f = sym $f)
    };
}

/// As for x86-64; AArch64 keeps the return address in `x30`.
#[cfg(target_arch = "aarch64")]
macro_rules! with_return_address {
    (2, $f:path) => {
        core::arch::naked_asm!("mov x2, x30", "b {f}", f = sym $f)
    };
    (3, $f:path) => {
        core::arch::naked_asm!("mov x3, x30", "b {f}", f = sym $f)
    };
}

#[cfg(any(all(target_arch = "x86_64", not(windows)), target_arch = "aarch64"))]
pub(super) use with_return_address;
