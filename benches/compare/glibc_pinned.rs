//! `std_alloc_mmap`: glibc at 1 MiB with its mmap and trim thresholds
//! pinned, measured in a child process of the bench.

use crate::contenders::{Heap, StdAlloc, Visit, ALIGN};
use crate::criterion;
use crate::faults::{fault_row, fault_row_of, fault_table_header};
use crate::groups::{touch_all, SingleThread};

/// The contender of [`glibc_pinned`].
pub(crate) const GLIBC_PINNED: &str = "std_alloc_mmap";

/// Set in the child process that measures [`GLIBC_PINNED`].
pub(crate) const GLIBC_CHILD: &str = "PAGEPOOL_GLIBC_PINNED_CHILD";

/// Runs the [`GLIBC_PINNED`] groups in a child process of this binary, with
/// the same arguments: glibc with `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD`
/// pinned at their default, 128 KiB, by `MALLOC_MMAP_THRESHOLD_=131072
/// MALLOC_TRIM_THRESHOLD_=131072` from the start of the process. glibc then
/// maps every larger block afresh (a page fault on each first touch) and
/// unmaps it on free, as any process does for its first such block. Left
/// alone (the `std_alloc` column), glibc raises both thresholds after the
/// first free of a mapped block and serves later 1 MiB blocks from its heap,
/// already faulted in. A child, because the setting must hold from the
/// first allocation and would change every other glibc column.
pub(crate) fn glibc_pinned() {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(GLIBC_CHILD, "1")
        .env("MALLOC_MMAP_THRESHOLD_", "131072")
        .env("MALLOC_TRIM_THRESHOLD_", "131072")
        .status()
        .expect("start the glibc child");
    assert!(status.success(), "the glibc child failed: {status}");
}

/// The child of [`glibc_pinned`]: its page-fault row and its two groups.
pub(crate) fn glibc_pinned_child(bench_mode: bool) {
    const MIB: usize = 1 << 20;
    let heap = Heap(StdAlloc, ALIGN);
    if bench_mode {
        println!("\n## Page faults per operation, {GLIBC_PINNED} (getrusage)\n");
        fault_table_header();
        fault_row(GLIBC_PINNED, &heap, "1MiB", MIB, 1000);
        fault_row_of(GLIBC_PINNED, &heap, "1MiB, touch_all", MIB, 200, touch_all);
    }
    let mut c = criterion();
    for (kind, touch) in [("overhead", false), ("touch_all", true)] {
        let mut group = c.benchmark_group(format!("{kind}/1MiB"));
        SingleThread {
            group: &mut group,
            size: MIB,
            touch,
        }
        .visit(GLIBC_PINNED, &heap);
        group.finish();
    }
    c.final_summary();
}
