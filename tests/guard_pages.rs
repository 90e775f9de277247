//! Guard pages: a write one byte past a buffer's slot, or one byte before the
//! buffer, kills the process with SIGSEGV. Each faulting access runs in a
//! child process (see `common::run_child`); the parent asserts the signal and
//! that the child got as far as the faulting write.

mod common;

use std::ptr::{read_volatile, write_volatile};

use common::{child_marker, in_child, no_fault, run_child, NO_FAULT_EXIT, NO_FAULT_MARKER};
use pagepool::{page_size, BufferPool, GuardMechanism};

/// Printed by the child after the in-bounds writes succeeded, right before
/// the faulting write.
const IN_BOUNDS_OK: &str = "IN-BOUNDS WRITES OK";

#[derive(Debug, Clone, Copy)]
enum Side {
    /// Write at `as_ptr() + k * page_size()`, the first byte after the slot.
    Overflow,
    /// Write at `as_ptr() - 1`, the last byte before the buffer.
    Underflow,
}

/// The pool a case runs against: default guards, forced `mprotect`, or none.
#[derive(Debug, Clone, Copy)]
enum Guards {
    Auto,
    Mprotect,
    Off,
}

fn pool(guards: Guards) -> BufferPool {
    let b = BufferPool::builder().name("guard-test");
    match guards {
        Guards::Auto => b.guard_mechanism(GuardMechanism::Auto),
        Guards::Mprotect => b.guard_mechanism(GuardMechanism::Mprotect),
        Guards::Off => b.guard_pages(false),
    }
    .build()
    .expect("valid configuration")
}

/// The child's work: allocate three buffers of exactly `pages` pages, prove
/// the middle one's first and last slot bytes are writable, then write one
/// byte outside it. Never returns.
fn child_body(pages: usize, side: Side, guards: Guards) -> ! {
    let page = page_size();
    let size = pages * page;
    let pool = pool(guards);
    // The middle buffer of three has interior guards (shared with its
    // neighbours) on both sides, not just the slab's edge guards.
    let mut bufs: Vec<_> = (0..3)
        .map(|_| pool.allocate_page_size_buffer(size).expect("allocation"))
        .collect();
    let stats = pool.stats();
    assert_eq!(stats.buffers_in_use, 3);
    assert_eq!(
        stats.unguarded_slots, 0,
        "a fresh pool has the guard budget to guard every slot"
    );
    if let Guards::Auto = guards {
        // Auto uses guard markers exactly where the kernel has them.
        assert_eq!(
            pagepool::guard_markers_supported(),
            Some(common::kernel_has_guard_markers())
        );
    }

    let buf = &mut bufs[1];
    assert_eq!(buf.max_len(), size);
    assert_eq!(
        buf.slot_len(),
        size,
        "a whole-page request gets a slot of exactly that size"
    );
    let p = buf.as_mut_ptr();
    assert_eq!(p as usize % page, 0);
    // SAFETY: the first and last bytes of the slot are inside the buffer's
    // `max_len() == slot_len()` bytes, which we own.
    unsafe {
        write_volatile(p, 0x11);
        write_volatile(p.add(size - 1), 0x22);
        assert_eq!(read_volatile(p), 0x11);
        assert_eq!(read_volatile(p.add(size - 1)), 0x22);
    }
    child_marker(IN_BOUNDS_OK);

    let target = match side {
        // SAFETY (address arithmetic only): one past the slot is inside the
        // slab's mapping, where the guard page is.
        Side::Overflow => unsafe { p.add(size) },
        // SAFETY (address arithmetic only): the page before the buffer is
        // inside the slab's mapping.
        Side::Underflow => unsafe { p.sub(1) },
    };
    // SAFETY: none; this write is meant to hit a guard page and kill the
    // process. Without guards it lands in mapped memory of the same slab (a
    // neighbouring slot), which nothing reads afterwards: the process exits.
    unsafe { write_volatile(target, 0xee) };
    no_fault()
}

/// Runs `test` (whose name is also the child case) in a child and asserts it
/// died of SIGSEGV after its in-bounds writes.
fn expect_fault(test: &str, pages: usize, side: Side, guards: Guards) {
    if in_child(test) {
        child_body(pages, side, guards);
    }
    run_child(test, test).assert_sigsegv(&[IN_BOUNDS_OK]);
}

macro_rules! faults {
    ($($name:ident: $pages:expr, $side:ident, $guards:ident;)*) => {$(
        #[test]
        fn $name() {
            expect_fault(stringify!($name), $pages, Side::$side, Guards::$guards);
        }
    )*};
}

faults! {
    overflow_faults_1_page: 1, Overflow, Auto;
    overflow_faults_2_pages: 2, Overflow, Auto;
    overflow_faults_4_pages: 4, Overflow, Auto;
    overflow_faults_16_pages: 16, Overflow, Auto;
    underflow_faults_1_page: 1, Underflow, Auto;
    underflow_faults_2_pages: 2, Underflow, Auto;
    underflow_faults_4_pages: 4, Underflow, Auto;
    underflow_faults_16_pages: 16, Underflow, Auto;
    mprotect_overflow_faults_1_page: 1, Overflow, Mprotect;
    mprotect_overflow_faults_4_pages: 4, Overflow, Mprotect;
    mprotect_underflow_faults_1_page: 1, Underflow, Mprotect;
    mprotect_underflow_faults_16_pages: 16, Underflow, Mprotect;
}

/// Control for the harness itself: without guard pages the same overflowing
/// write lands in the neighbouring slot, the child survives it, and the parent
/// sees the no-fault exit rather than a signal. So a missing guard page would
/// fail the tests above instead of passing unnoticed.
#[test]
fn harness_detects_a_missing_fault() {
    const TEST: &str = "harness_detects_a_missing_fault";
    if in_child(TEST) {
        child_body(1, Side::Overflow, Guards::Off);
    }
    let out = run_child(TEST, TEST);
    out.assert_markers(&[IN_BOUNDS_OK, NO_FAULT_MARKER]);
    assert_eq!(out.status.code(), Some(NO_FAULT_EXIT), "{out:?}");
}

/// The slack between `max_len()` and the end of the slot is still inside the
/// slot: a request of one page minus a byte gets a whole page, and its last
/// byte is writable; the guard starts only after it.
#[test]
fn slack_after_max_len_is_writable_and_guard_follows_slot() {
    const TEST: &str = "slack_after_max_len_is_writable_and_guard_follows_slot";
    const SLACK_OK: &str = "SLACK WRITE OK";
    if in_child(TEST) {
        let page = page_size();
        let pool = pool(Guards::Auto);
        let mut buf = pool
            .allocate_page_size_buffer(page - 1)
            .expect("allocation");
        assert_eq!((buf.max_len(), buf.slot_len()), (page - 1, page));
        let p = buf.as_mut_ptr();
        // SAFETY: byte `page - 1` is the slot's last byte, inside the mapping
        // and owned by this buffer's slot.
        unsafe {
            write_volatile(p.add(page - 1), 0x33);
            assert_eq!(read_volatile(p.add(page - 1)), 0x33);
        }
        child_marker(SLACK_OK);
        // SAFETY: none; meant to hit the guard page after the slot.
        unsafe { write_volatile(p.add(page), 0xee) };
        no_fault();
    }
    run_child(TEST, TEST).assert_sigsegv(&[SLACK_OK]);
}

/// Reading (not only writing) past the slot faults too.
#[test]
fn read_past_slot_faults() {
    const TEST: &str = "read_past_slot_faults";
    if in_child(TEST) {
        let page = page_size();
        let pool = pool(Guards::Auto);
        let buf = pool
            .allocate_page_size_buffer(2 * page)
            .expect("allocation");
        let p = buf.as_ptr();
        // SAFETY: the buffer's own last byte.
        let last = unsafe { read_volatile(p.add(2 * page - 1)) };
        child_marker(&format!("READ OK {last}"));
        // SAFETY: none; meant to hit the guard page after the slot.
        let past = unsafe { read_volatile(p.add(2 * page)) };
        child_marker(&format!("read {past}"));
        no_fault();
    }
    run_child(TEST, TEST).assert_sigsegv(&["READ OK 0"]);
}
