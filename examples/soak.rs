//! Soak test: many threads allocate, stamp, hand over, verify and release
//! pooled buffers as fast as they can, and every byte and every hand-out is
//! checked.
//!
//! ```text
//! cargo run --release --example soak -- --threads N --ops M --seconds S --max-bytes B
//! ```
//!
//! Each of `--threads` workers (default: the available parallelism) runs a
//! random mix of operations until `--ops` operations have run in all
//! (default 10,000,000; 0 = no limit) or `--seconds` have passed (default: no
//! limit):
//!
//! - **allocate** a random size from 1 byte to `--max-size` (default 4 MiB),
//!   skewed small: 90% up to 16 KiB, 9% up to 256 KiB, 1% up to the maximum,
//!   each log-uniform; **stamp** every byte of it (`max_len` bytes, a word at
//!   a time, with a pattern unique to the buffer and the offset) and register
//!   its slot's address range in a global live-range map, which reports a
//!   **double hand-out** if it overlaps the slot of any live buffer;
//! - **release** one of its buffers, after verifying every byte of it
//!   (a mismatch is a **corruption**) and removing it from the map;
//! - **hand over** one of its buffers to the next worker (a ring of bounded
//!   channels), which verifies and releases it, or keeps it for a while and
//!   hands it on again.
//!
//! `Exhausted` (the byte cap, `--max-bytes`, default 512 MiB) is counted and
//! the worker releases a buffer instead; any other error is a failure. At the
//! end every worker releases what it holds and is joined (so its thread
//! cache flushes), and the pool must show nothing outstanding
//! (`buffers_in_use == 0`, `allocations == releases`, the counts agree with
//! ours), `bytes_reserved <= max_bytes`, no corruption found by the pool's
//! own canaries, and after `trim()` nothing reserved. It prints the figures
//! and exits with 1 on any failure (2 for bad arguments).
//!
//! ```text
//! --threads N            workers (default: available parallelism)
//! --ops M                operations in all, 0 = unlimited (default 10000000)
//! --seconds S            stop after S seconds (default: no limit)
//! --max-bytes B          the pool's byte cap (default 512MiB)
//! --max-size B           largest buffer (default 4MiB)
//! --guard-mechanism M    auto | mprotect | off (default auto)
//! --debug L              off | standard | paranoid (default standard)
//! --no-thread-cache      turn the pool's thread caches off (default: on)
//! --seed X               random seed (default 1)
//! --quiet                no progress lines on stderr (default: one every 5 s)
//! ```
//!
//! Sizes are bytes, or with a suffix: `K`, `M`, `G` (or `KiB`, `MiB`, `GiB`)
//! are powers of 1024, `KB`, `MB`, `GB` powers of 1000 (`common/size.rs`).
//! `--help` prints the options and exits 0.
//!
//! The parts, one file each under `soak/`: the config and the report
//! (`report.rs`), the stamps (`stamp.rs`), the live-range map
//! (`live_ranges.rs`), the workers (`worker.rs`), [`run`] (`run.rs`) and the
//! command line (`args.rs`).
//!
//! `.ci/valgrind` runs a short version under valgrind; `tests/soak.rs` runs
//! the same [`run`] for about 200,000 operations.

#[path = "soak/args.rs"]
mod args;
#[path = "common/mod.rs"]
mod common;
#[path = "soak/live_ranges.rs"]
mod live_ranges;
#[path = "soak/report.rs"]
mod report;
#[path = "soak/run.rs"]
mod run;
#[path = "soak/stamp.rs"]
mod stamp;
#[path = "soak/worker.rs"]
mod worker;

use std::process::ExitCode;

pub use report::{SoakConfig, SoakReport};
pub use run::run;

fn main() -> ExitCode {
    let cfg = match common::cli::parse("soak", args::HELP, args::parse_args) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    println!(
        "soak: {} threads, {} ops{}, max_bytes {} B, sizes 1 B ..= {} B, guards {:?}, debug {:?}, thread caches {}",
        cfg.threads,
        if cfg.ops == 0 { "unlimited".to_string() } else { cfg.ops.to_string() },
        cfg.seconds.map_or(String::new(), |s| format!(" or {s} s")),
        cfg.max_bytes,
        cfg.max_size,
        cfg.guards,
        cfg.debug,
        if cfg.thread_cache { "on" } else { "off" },
    );
    match run(&cfg) {
        Ok(report) => {
            println!("{report}");
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("soak: cannot build the pool: {e}");
            ExitCode::from(1)
        }
    }
}
