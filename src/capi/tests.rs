//! The C functions and their helpers called from Rust: handle checks and
//! struct versions that C cannot make.

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

#[test]
fn config_versions_are_read_up_to_the_callers_size() {
    use super::config::{read_versioned, CONFIG_V1};
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Newer {
        c: pagepool_config,
        extra: u64,
    }
    let mut newer = Newer {
        c: pagepool_config {
            size: std::mem::size_of::<Newer>() as u32,
            max_bytes: 1 << 20,
            ..pagepool_config::default()
        },
        extra: 0,
    };
    let base = pagepool_config::default();
    // SAFETY: `newer` is `size` readable bytes.
    let read = unsafe { read_versioned(&newer.c, CONFIG_V1, base) }.unwrap();
    assert_eq!(read.max_bytes, 1 << 20);
    newer.extra = 1;
    // SAFETY: as above.
    let refused = unsafe { read_versioned(&newer.c, CONFIG_V1, base) };
    assert_eq!(refused.err(), Some(E_INVALIDARG));
    let small = pagepool_config { size: 8, ..base };
    // SAFETY: `small` is a whole struct, more than its `size` says.
    let refused = unsafe { read_versioned(&small, CONFIG_V1, base) };
    assert_eq!(refused.err(), Some(E_INVALIDARG));
}

#[test]
fn config_values_out_of_range_are_refused() {
    let ok = pagepool_config::default();
    assert!(ok.builder("t").is_ok());
    for bad in [
        pagepool_config {
            debug_level: 3,
            ..ok
        },
        pagepool_config { zeroing: -2, ..ok },
        pagepool_config {
            quarantine_every: -5,
            ..ok
        },
        pagepool_config {
            on_corruption: 2,
            ..ok
        },
        pagepool_config {
            guard_pages: 2,
            ..ok
        },
        pagepool_config { reserved: 1, ..ok },
    ] {
        assert_eq!(bad.builder("t").err(), Some(E_INVALIDARG));
    }
}
