//! Page faults and context switches per operation once warm, counted with
//! `getrusage`, before criterion runs.

use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use pagepool::BufferPool;

use crate::contenders::{Contender, MmapGuard};
use crate::groups::{cycle, cycles};
use crate::{CROSS_SIZES, KIB};

/// Cycles per size in the page-fault and system-call probes.
pub(crate) const PROBE_CYCLES: u64 = 1_000_000;

#[derive(Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) minflt: i64,
    pub(crate) majflt: i64,
    pub(crate) nvcsw: i64,
    pub(crate) nivcsw: i64,
}

pub(crate) fn usage(who: libc::c_int) -> Usage {
    // SAFETY: `getrusage` fills the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        let rc = libc::getrusage(who, &mut ru);
        assert_eq!(rc, 0, "getrusage");
        ru
    };
    Usage {
        minflt: ru.ru_minflt as i64,
        majflt: ru.ru_majflt as i64,
        nvcsw: ru.ru_nvcsw as i64,
        nivcsw: ru.ru_nivcsw as i64,
    }
}

/// The header of the tables [`fault_row`] fills.
pub(crate) fn fault_table_header() {
    println!(
        "| contender | size | cycles | minor faults, process | major faults, process | \
         minor faults, this thread | ctx switches vol / invol, this thread | ns/op |"
    );
    println!("|---|---|---|---|---|---|---|---|");
}

/// Page faults (process and calling thread) and context switches of `n`
/// cycles of `c` at `size`, printed as one markdown row.
pub(crate) fn fault_row<C: Contender>(name: &str, c: &C, label: &str, size: usize, n: u64) {
    fault_row_of(name, c, label, size, n, cycle);
}

/// [`fault_row`] for `n` runs of `op` (`cycle` or `touch_all`).
pub(crate) fn fault_row_of<C: Contender>(
    name: &str,
    c: &C,
    label: &str,
    size: usize,
    n: u64,
    op: fn(&C, usize),
) {
    let (p0, t0) = (usage(libc::RUSAGE_SELF), usage(libc::RUSAGE_THREAD));
    let start = Instant::now();
    for _ in 0..n {
        op(c, size);
    }
    let elapsed = start.elapsed();
    let (p1, t1) = (usage(libc::RUSAGE_SELF), usage(libc::RUSAGE_THREAD));
    let per = |a: i64, b: i64| (b - a) as f64 / n as f64;
    println!(
        "| {name} | {label} | {n} | {} ({:.6}/op) | {} ({:.6}/op) | {} ({:.6}/op) | {} / {} | {:.1} |",
        p1.minflt - p0.minflt,
        per(p0.minflt, p1.minflt),
        p1.majflt - p0.majflt,
        per(p0.majflt, p1.majflt),
        t1.minflt - t0.minflt,
        per(t0.minflt, t1.minflt),
        t1.nvcsw - t0.nvcsw,
        t1.nivcsw - t0.nivcsw,
        elapsed.as_nanos() as f64 / n as f64,
    );
}

/// Warms `pool` at both probe sizes with `PROBE_CYCLES` cycles each, then
/// lets the recorder drain its histogram samples, as its upkeep does.
pub(crate) fn warm_for_probe(pool: &BufferPool, prometheus: Option<&PrometheusHandle>) {
    for (_, size) in CROSS_SIZES {
        cycles(pool, size, PROBE_CYCLES);
    }
    if let Some(handle) = prometheus {
        handle.run_upkeep();
    }
}

pub(crate) fn fault_probe(pools: &[(&str, &BufferPool)], prometheus: &PrometheusHandle) {
    println!("\n## Page faults per operation once warm (getrusage)\n");
    println!(
        "Each pool warmed with {PROBE_CYCLES} cycles per size and one recorder upkeep; then \
         {PROBE_CYCLES} allocate + write first byte + release cycles on this thread. \
         `mmap_guard` is the control (one fault per op expected).\n"
    );
    fault_table_header();
    for (name, pool) in pools {
        warm_for_probe(pool, Some(prometheus));
        for (label, size) in CROSS_SIZES {
            fault_row(name, *pool, label, size, PROBE_CYCLES);
        }
    }
    let mmap = MmapGuard {
        page: pagepool::page_size(),
    };
    cycles(&mmap, 4 * KIB, 1000);
    fault_row("mmap_guard", &mmap, "4KiB", 4 * KIB, 10_000);
}
