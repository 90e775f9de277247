//! The tables printed at the end, from criterion's saved estimates: the
//! means, `pagepool_default ÷ peer`, the contended scaling and the pinned
//! glibc's rows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::contenders::BARE_FREE_LIST;
use crate::estimates;
use crate::glibc_pinned::GLIBC_PINNED;
use crate::groups::{CHANNEL_DEPTH, SHARE_NOTHING};
use crate::{CONTENDED_SIZES, CROSS_SIZES, PACKET_SIZES, SIZES};

/// The contenders in table order; the first is the one the ratios are about.
const CONTENDERS: [&str; 10] = [
    "pagepool_default",
    "pagepool_bare",
    BARE_FREE_LIST,
    "std_alloc",
    "mimalloc",
    "mmap_guard",
    "arrayqueue",
    "object_pool",
    "byte_pool",
    "opool",
];
/// Peers whose crate did not build here (none at the time of writing); they
/// are listed in the report rather than silently missing.
const SKIPPED: [(&str, &str); 0] = [];
/// Peers whose buffers are not page-aligned (`Vec<u8>` from the global
/// allocator).
const NOT_ALIGNED: [&str; 3] = ["object_pool", "byte_pool", "opool"];

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    // Other work on the machine skews one-thread numbers on 2 cores: say so.
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into());
    format!("{cpu}, nproc {cores}, Linux {kernel}, load average {load}")
}

/// Today's date (UTC) as YYYY-MM-DD, from the Unix clock.
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Howard Hinnant's civil_from_days.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn fmt_ns(ns: Option<f64>) -> String {
    match ns {
        Some(ns) if ns >= 100.0 => format!("{ns:.0}"),
        Some(ns) => format!("{ns:.1}"),
        None => "—".into(),
    }
}

/// Two decimals, or three significant digits below 0.1.
fn fmt_ratio(r: f64) -> String {
    if r >= 0.1 {
        format!("{r:.2}x")
    } else {
        let digits = (2 - r.log10().floor() as i32).clamp(2, 8) as usize;
        format!("{r:.digits$}x")
    }
}

pub(crate) fn report(total: Duration) {
    let mut rows: Vec<(String, String)> = Vec::new();
    for (kind, sizes) in [
        ("overhead", &SIZES[..]),
        ("touch_all", &SIZES[..]),
        ("packet", &PACKET_SIZES[..]),
        ("cross_thread", &CROSS_SIZES[..]),
        ("contended", &CONTENDED_SIZES[..]),
    ] {
        for (label, _) in sizes {
            let group = format!("{kind}/{label}");
            let row = if kind == "contended" {
                format!("{group} (2 threads)")
            } else {
                group.clone()
            };
            rows.push((group, row));
        }
    }

    println!(
        "\n## pagepool vs peers: mean ns per operation, one thread ({}; {})\n",
        machine(),
        today()
    );
    let header: Vec<String> = CONTENDERS
        .iter()
        .map(|c| {
            if NOT_ALIGNED.contains(c) {
                format!("{c}†")
            } else {
                (*c).to_owned()
            }
        })
        .collect();
    println!("| group/size | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(CONTENDERS.len()));
    for (group, row) in &rows {
        let cells: Vec<String> = CONTENDERS
            .iter()
            .map(|c| fmt_ns(estimates::mean_ns(group, c)))
            .collect();
        println!("| {row} | {} |", cells.join(" | "));
    }
    println!(
        "\n† not page-aligned (`Vec<u8>` from the global allocator). `cross_thread`: ns per item \
         end to end, producer → bounded channel ({CHANNEL_DEPTH}) → consumer drops; \
         `contended`: wall ns per operation with each of two threads doing N operations \
         on one shared contender."
    );
    for (label, _) in CROSS_SIZES {
        if let Some(ns) = estimates::mean_ns(&format!("cross_thread/{label}"), "channel_only") {
            println!("`cross_thread/{label}` channel_only floor (no allocation): {ns:.1} ns/item.");
        }
    }
    for (peer, why) in SKIPPED {
        println!("Skipped {peer}: {why}");
    }

    println!("\n## pagepool_default ÷ peer (mean time; below 1.00x pagepool_default is faster)\n");
    let peers = &CONTENDERS[1..];
    let header: Vec<String> = peers.iter().map(|p| format!("vs {p}")).collect();
    println!("| group/size | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(peers.len()));
    for (group, row) in &rows {
        let base = estimates::mean_ns(group, CONTENDERS[0]);
        let cells: Vec<String> = peers
            .iter()
            .map(|p| match (base, estimates::mean_ns(group, p)) {
                (Some(b), Some(ns)) => fmt_ratio(b / ns),
                _ => "—".into(),
            })
            .collect();
        println!("| {row} | {} |", cells.join(" | "));
    }

    println!(
        "\n## contended/4KiB scaling: two-thread total ops/s ÷ one-thread ops/s (2.00 = perfect)\n"
    );
    println!("| contender | 1 thread ns/op | 2 threads wall ns/op/thread | 1 thread Mops/s | 2 threads Mops/s | scaling | ÷ {SHARE_NOTHING} scaling |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, _) in CONTENDED_SIZES {
        let scaling = |c: &str| {
            let one = estimates::mean_ns(&format!("contended_1thread/{label}"), c)?;
            let two = estimates::mean_ns(&format!("contended/{label}"), c)?;
            Some((one, two, 2.0 * one / two))
        };
        let floor = scaling(SHARE_NOTHING).map(|(_, _, s)| s);
        for c in CONTENDERS.iter().chain(&[SHARE_NOTHING]) {
            if let Some((one, two, s)) = scaling(c) {
                let relative = floor.map_or("—".into(), |f| fmt_ratio(s / f));
                println!(
                    "| {c} | {one:.1} | {two:.1} | {:.1} | {:.1} | {s:.2} | {relative} |",
                    1e3 / one,
                    2e3 / two,
                );
            }
        }
    }
    println!(
        "\n#20's targets: `pagepool_default ÷ {BARE_FREE_LIST}` ≤ 1.50x in `overhead` \
         (the `vs {BARE_FREE_LIST}` column above); pagepool_default's scaling \
         ÷ {SHARE_NOTHING}'s ≥ 0.85x."
    );
    println!("\n## glibc with its mmap and trim thresholds pinned ({GLIBC_PINNED})\n");
    println!("| group/size | {GLIBC_PINNED} | pagepool_default | pagepool_default ÷ it |");
    println!("|---|---:|---:|---:|");
    for kind in ["overhead", "touch_all"] {
        let group = format!("{kind}/1MiB");
        let base = estimates::mean_ns(&group, CONTENDERS[0]);
        let pinned = estimates::mean_ns(&group, GLIBC_PINNED);
        let ratio = match (base, pinned) {
            (Some(b), Some(p)) => fmt_ratio(b / p),
            _ => "—".into(),
        };
        println!(
            "| {group} | {} | {} | {ratio} |",
            fmt_ns(pinned),
            fmt_ns(base)
        );
    }
    println!(
        "\ncompare: criterion groups took {:.0} s in all",
        total.as_secs_f64()
    );
}
