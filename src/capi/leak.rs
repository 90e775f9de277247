//! Leak reports for C: the text of an allocator's outstanding buffers,
//! grouped by allocation site. (The report at `destroy` comes from the
//! pool's own last-handle check, through the report sink.)

use std::time::Duration;

use super::handles::TABLE;
use super::{guarded, pagepool_allocator, E_POINTER, HRESULT};

/// Writes the allocator's current leak report (every buffer out, grouped by
/// allocation site, biggest first; see `pagepool::LeakReport`) into `buf` as
/// a NUL-terminated string, cut at `len - 1` bytes; the bytes the whole
/// report needs, its NUL included, go to `*needed` unless `needed` is null.
/// With `len == 0`, `buf` may be null and only `*needed` is written.
///
/// Returns `S_OK` (check `*needed > len` for a cut report), `E_POINTER`
/// (`buf` null with `len > 0`) or `E_HANDLE`.
///
/// # Safety
/// `buf` is null or valid for writes of `len` bytes; `needed` is null or
/// valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_leak_report(
    a: *mut pagepool_allocator,
    buf: *mut u8,
    len: usize,
    needed: *mut usize,
) -> HRESULT {
    guarded(|| {
        if buf.is_null() && len > 0 {
            return Err(E_POINTER);
        }
        let pool = TABLE.lock().pool(a as usize)?;
        let text = pool.leak_report(Duration::ZERO).to_string();
        if len > 0 {
            // Cut at a character boundary, leaving room for the NUL.
            let mut n = text.len().min(len - 1);
            while !text.is_char_boundary(n) {
                n -= 1;
            }
            // SAFETY: `buf` is non-null (checked: `len > 0`) and valid for
            // `len > n` bytes (caller's contract).
            unsafe {
                std::ptr::copy_nonoverlapping(text.as_ptr(), buf, n);
                buf.add(n).write(0);
            }
        }
        if !needed.is_null() {
            // SAFETY: non-null (checked), valid (caller's contract).
            unsafe { needed.write(text.len() + 1) };
        }
        Ok(())
    })
}
