//! The soak (`examples/soak.rs`) in short: four workers, about 200,000
//! operations, buffers up to 1 MiB handed around a ring of threads, every byte
//! stamped and verified, every hand-out checked against the live-range map;
//! at the end nothing is outstanding, the cap held and `trim` unmaps
//! everything.

#[path = "../examples/soak.rs"]
#[allow(dead_code)] // its `main` and argument parsing are for the example
mod soak;

use pagepool::{DebugLevel, GuardMechanism};

fn short(cfg: soak::SoakConfig) -> soak::SoakReport {
    let report = soak::run(&cfg).expect("the pool builds");
    println!("{cfg:?}\n{report}");
    assert!(report.ok(), "{report}");
    assert_eq!((report.corruptions, report.double_handouts), (0, 0));
    assert!(report.checked > 0 && report.handed_over > 0, "{report}");
    let s = report.final_stats.expect("final stats");
    assert_eq!((s.buffers_in_use, s.allocations), (0, report.allocations));
    assert!(s.bytes_reserved <= cfg.max_bytes);
    assert_eq!(report.reserved_after_trim, 0);
    report
}

#[test]
fn soak_short_default_pool() {
    let report = short(soak::SoakConfig {
        threads: 4,
        ops: 200_000,
        max_size: 1 << 20,
        ..soak::SoakConfig::default()
    });
    assert_eq!(report.exhausted, 0, "512 MiB is plenty here");
}

/// A tight cap (so `Exhausted` happens and slabs are unmapped to make room),
/// `mprotect` guards, no thread caches.
#[test]
fn soak_short_tight_cap_mprotect_no_cache() {
    let report = short(soak::SoakConfig {
        threads: 3,
        ops: 60_000,
        max_bytes: 8 << 20,
        max_size: 1 << 20,
        guards: Some(GuardMechanism::Mprotect),
        debug: DebugLevel::Off,
        thread_cache: false,
        seed: 7,
        ..soak::SoakConfig::default()
    });
    assert!(report.exhausted > 0, "the cap was never reached: {report}");
}
