//! The planted bugs: each memory error runs in a child process, and each
//! report must name the buffer's allocation site (`file:line`).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::ptr;

use common::{child_marker, in_child, no_fault, run_child, ChildOutput};
use pagepool::{page_size, BufferPool, CorruptionAction, DebugLevel};

/// `tests/planted.rs:<line>` as a report prints it (followed by `:column`).
fn site(line: u32) -> String {
    format!("tests/planted.rs:{line}:")
}

/// The allocation line the child printed.
fn child_line(out: &ChildOutput, key: &str) -> u32 {
    out.value(key)
}

/// Overwrites the byte at `p` with its complement: a damage no canary
/// pattern can hide, whatever byte it holds there.
///
/// # Safety
/// `p` is readable and writable.
unsafe fn flip(p: *mut u8) {
    // SAFETY: forwarded from the caller.
    unsafe { ptr::write_volatile(p, !ptr::read_volatile(p)) };
}

fn assert_signal(out: &ChildOutput, sig: i32) {
    assert_eq!(
        out.status.signal(),
        Some(sig),
        "expected signal {sig}\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
}

fn assert_stderr(out: &ChildOutput, needles: &[&str]) {
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "stderr lacks {n:?}:\n{}",
            out.stderr
        );
    }
}

/// 1. One byte past `max_len`, inside its page: the slack canary reports it
///    at release (`Abort`: report on stderr, then SIGABRT).
#[test]
fn one_byte_past_max_len_is_reported_at_release() {
    if in_child("slack") {
        let pool = BufferPool::builder()
            .name("planted")
            .on_corruption(CorruptionAction::Abort)
            .build()
            .unwrap();
        let (mut buf, line) = (pool.allocate_page_size_buffer(1500).unwrap(), line!());
        child_marker(&format!("line={line}"));
        // SAFETY (test): byte 1500 is inside the slot's first page, so the
        // write itself is harmless; it is the bug the canary must catch.
        // The complement of what is there: a change whatever the canary byte.
        unsafe { flip(buf.as_mut_ptr().add(1500)) };
        drop(buf);
        no_fault();
    }
    let out = run_child("one_byte_past_max_len_is_reported_at_release", "slack");
    assert_signal(&out, libc::SIGABRT);
    let line = child_line(&out, "line");
    assert_stderr(
        &out,
        &[
            "write past max_len",
            "pool \"planted\"",
            "max_len 1500",
            "1 byte damaged, the first at offset 1500 (0 past max_len)",
            &site(line),
        ],
    );
}

/// 1b. The same bug with `Log`: counted, reported, and the pool goes on.
#[test]
fn one_byte_past_max_len_is_counted_when_logging() {
    let pool = BufferPool::builder().name("planted-log").build().unwrap();
    let mut buf = pool.allocate_page_size_buffer(100).unwrap();
    // SAFETY (test): inside the slot's first page.
    unsafe { flip(buf.as_mut_ptr().add(100)) };
    drop(buf);
    assert_eq!(pool.stats().corruptions, 1);
    // The canary was repaired: the slot is reused without a second report.
    let again = pool.allocate_page_size_buffer(100).unwrap();
    drop(again);
    assert_eq!(pool.stats().corruptions, 1);
}

/// 2. The first byte of the next page when the slot is larger: only the
///    full-slot canary of `Paranoid` sees it.
#[test]
fn a_write_in_a_later_page_of_the_slot_is_caught_by_paranoid() {
    let page = page_size();
    // 8 pages + 1 byte lands in the 10-page class: page 9 is inside the slot
    // but past max_len's page.
    let max_len = 8 * page + 1;
    let target = 9 * page;
    if in_child("paranoid") {
        let pool = BufferPool::builder()
            .name("paranoid")
            .debug(DebugLevel::Paranoid)
            .on_corruption(CorruptionAction::Abort)
            .build()
            .unwrap();
        let (mut buf, line) = (pool.allocate_page_size_buffer(max_len).unwrap(), line!());
        assert_eq!(buf.slot_len(), 10 * page);
        child_marker(&format!("line={line}"));
        // SAFETY (test): inside the slot.
        unsafe { flip(buf.as_mut_ptr().add(target)) };
        drop(buf);
        no_fault();
    }
    let out = run_child(
        "a_write_in_a_later_page_of_the_slot_is_caught_by_paranoid",
        "paranoid",
    );
    assert_signal(&out, libc::SIGABRT);
    let line = child_line(&out, "line");
    let offset = format!("the first at offset {target}");
    assert_stderr(
        &out,
        &[
            "write past max_len",
            "pool \"paranoid\"",
            &offset,
            &site(line),
        ],
    );

    // Standard checks only the start and end of max_len's page: no report.
    let pool = BufferPool::new();
    let mut buf = pool.allocate_page_size_buffer(max_len).unwrap();
    // SAFETY (test): inside the slot.
    unsafe { flip(buf.as_mut_ptr().add(target)) };
    drop(buf);
    assert_eq!(pool.stats().corruptions, 0);
}

/// 3. The first byte past the slot's last page: SIGSEGV, with the fault
///    handler's overflow report.
#[test]
fn a_write_past_the_slot_faults_with_an_overflow_report() {
    if in_child("overflow") {
        pagepool::install_fault_handler().unwrap();
        let pool = BufferPool::builder().name("guarded").build().unwrap();
        let (mut buf, line) = (pool.allocate_page_size_buffer(1500).unwrap(), line!());
        child_marker(&format!("line={line}"));
        let end = buf.slot_len();
        // SAFETY (test): deliberately hits the guard page after the slot.
        unsafe { ptr::write_volatile(buf.as_mut_ptr().add(end), 1) };
        no_fault();
    }
    let out = run_child(
        "a_write_past_the_slot_faults_with_an_overflow_report",
        "overflow",
    );
    assert_signal(&out, libc::SIGSEGV);
    let line = child_line(&out, "line");
    let offset = format!("offset {}", page_size());
    let mut needles = vec![
        "heap-buffer-overflow",
        "pool \"guarded\", max_len 1500",
        offset.as_str(),
        "0 bytes after the end of its",
    ];
    if cfg!(target_arch = "x86_64") {
        needles.push(": WRITE at ");
    }
    let s = site(line);
    needles.push(&s);
    assert_stderr(&out, &needles);
}

/// 4. One byte before the buffer: SIGSEGV, with the underflow report.
#[test]
fn a_write_before_the_buffer_faults_with_an_underflow_report() {
    if in_child("underflow") {
        pagepool::install_fault_handler().unwrap();
        let pool = BufferPool::builder().name("guarded").build().unwrap();
        let (mut buf, line) = (pool.allocate_page_size_buffer(64 * 1024).unwrap(), line!());
        child_marker(&format!("line={line}"));
        // SAFETY (test): deliberately hits the guard page before the slot.
        unsafe { ptr::write_volatile(buf.as_mut_ptr().sub(1), 1) };
        no_fault();
    }
    let out = run_child(
        "a_write_before_the_buffer_faults_with_an_underflow_report",
        "underflow",
    );
    assert_signal(&out, libc::SIGSEGV);
    let line = child_line(&out, "line");
    assert_stderr(
        &out,
        &[
            "heap-buffer-underflow",
            "offset -1 from buffer",
            "1 byte(s) before it",
            "max_len 65536",
            &site(line),
        ],
    );
}

/// 5a. A write through a stale pointer after release: the poison check
///     reports it when the slot is handed out again, naming both sites.
#[test]
fn a_write_after_release_is_reported_at_the_next_hand_out() {
    if in_child("poison") {
        // One slot per slab: the next allocation of the class gets it back.
        let pool = BufferPool::builder()
            .name("poisoned")
            .slab_size(1)
            .poison(1, usize::MAX)
            .on_corruption(CorruptionAction::Abort)
            .build()
            .unwrap();
        let (mut buf, alloc_line) = (pool.allocate_page_size_buffer(3000).unwrap(), line!());
        let stale = buf.as_mut_ptr();
        let ((), release_line) = (buf.release(), line!());
        child_marker(&format!("alloc={alloc_line}"));
        child_marker(&format!("release={release_line}"));
        // SAFETY (test): the slot is still mapped and accessible (no
        // quarantine); writing to it after release is the planted bug.
        unsafe { ptr::write_volatile(stale.add(10), 0) };
        let _again = pool.allocate_page_size_buffer(3000).unwrap();
        no_fault();
    }
    let out = run_child(
        "a_write_after_release_is_reported_at_the_next_hand_out",
        "poison",
    );
    assert_signal(&out, libc::SIGABRT);
    let (a, r) = (child_line(&out, "alloc"), child_line(&out, "release"));
    assert_stderr(
        &out,
        &[
            "write after release (poison damaged)",
            "pool \"poisoned\"",
            "the first at offset 10",
            &format!("allocated at {}", site(a)),
            &format!("released at {}", site(r)),
        ],
    );
}

/// 5b. With quarantine, the stale write faults at once, and the report names
///     the allocation and release sites.
#[test]
fn a_write_into_a_quarantined_slot_faults_with_both_sites() {
    if in_child("quarantine") {
        pagepool::install_fault_handler().unwrap();
        let pool = BufferPool::builder()
            .name("quarantined")
            .quarantine(1, 16)
            .build()
            .unwrap();
        let (mut buf, alloc_line) = (pool.allocate_page_size_buffer(20_000).unwrap(), line!());
        let stale = buf.as_mut_ptr();
        let ((), release_line) = (buf.release(), line!());
        child_marker(&format!("alloc={alloc_line}"));
        child_marker(&format!("release={release_line}"));
        assert_eq!(pool.stats().buffers_quarantined, 1);
        // SAFETY (test): the planted use after release; must fault.
        unsafe { ptr::write_volatile(stale.add(100), 0) };
        no_fault();
    }
    let out = run_child(
        "a_write_into_a_quarantined_slot_faults_with_both_sites",
        "quarantine",
    );
    assert_signal(&out, libc::SIGSEGV);
    let (a, r) = (child_line(&out, "alloc"), child_line(&out, "release"));
    assert_stderr(
        &out,
        &[
            "use-after-release",
            "offset 100 from buffer",
            "pool \"quarantined\", max_len 20000",
            &format!("allocated at {}", site(a)),
            &format!("released at {}", site(r)),
        ],
    );
}

/// 6. `mem::forget` of a buffer inside a `LeakCheck`: dropping the check
///    panics with a report naming the site.
#[test]
fn a_forgotten_buffer_fails_the_leak_check_with_its_site() {
    if in_child("forget") {
        let pool = BufferPool::builder().name("leaky").build().unwrap();
        let _before = pool.allocate_page_size_buffer(100).unwrap(); // not part of the check
        let check = pool.leak_check();
        let (buf, line) = (pool.allocate_page_size_buffer(5000).unwrap(), line!());
        child_marker(&format!("line={line}"));
        std::mem::forget(buf);
        drop(check); // panics: the test fails in the child
        no_fault();
    }
    let out = run_child(
        "a_forgotten_buffer_fails_the_leak_check_with_its_site",
        "forget",
    );
    assert_eq!(
        out.status.code(),
        Some(101),
        "the child's test must fail by panicking"
    );
    let line = child_line(&out, "line");
    let all = format!("{}{}", out.stdout, out.stderr);
    for needle in [
        "LeakCheck: buffers allocated during the check are still out",
        "pagepool \"leaky\": 1 buffer (8192 bytes)",
        &site(line),
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}
