//! The C functions called from Rust: handle checks that C cannot make.

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
