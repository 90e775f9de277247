//! Load generator and end-to-end checker for the `media_server` example.
//!
//! ```text
//! cargo run --release --example media_server &
//! cargo run --release --example load -- --target http://127.0.0.1:8080 --clients 8 --seconds 10
//! ```
//!
//! For `--seconds S`, `--clients N` concurrent clients (each on its own
//! keep-alive HTTP/1.1 connection) work against the server:
//!
//! - media clients (N minus the live clients) fetch the files listed by
//!   `GET /media`: whole files, random single ranges (`a-b`, `a-`, `-n`,
//!   unaligned starts, ends past the file) and unsatisfiable ranges (expecting
//!   416). Every byte of a generated sample is checked against what its name
//!   makes at that offset (the byte pattern of a `.bin`, the stamped MPEG-TS
//!   frames of a `.ts`: see `media_server/wire.rs`), and the status,
//!   `Content-Length` and `Content-Range` against the request;
//! - live clients (`--live-clients`, default N/4) subscribe to
//!   `/live/load-{i % channels}` (MPEG-TS) and check every frame (sync bytes,
//!   PIDs, continuity counters, the stamp's channel and sequence number, and
//!   every byte against the frame the stamp names) and that sequence numbers
//!   only go up.
//!   A jump is a *gap* (the server skips frames for a lagging subscriber and
//!   drops frames when its live pool is full): gaps are reported, and are not
//!   failures.
//!
//! First a few protocol checks run (404, 400 for bad names, HEAD, 416). At the
//! end it prints the figures and the server's pool metrics from `/metrics`.
//! The exit code is 1 when any request errored or any check failed, 2 for bad
//! arguments.
//!
//! ```text
//! --target URL          server base URL, http only (default http://127.0.0.1:8080)
//! --clients N           concurrent clients (default 8)
//! --live-clients M      of which live subscribers (default N/4, at least 1 when N >= 2)
//! --channels K          live channels to spread them over (default 2)
//! --seconds S           how long to run (default 10)
//! --wait S              how long to wait for the server to answer at start (default 5)
//! --seed X              random seed (default: from the clock)
//! ```
//!
//! `--help` prints them and exits 0. The parts, one file each: the command
//! line (`args.rs`), a client connection (`conn.rs`), the media clients and
//! their plans (`media.rs`), the live clients (`live.rs`), the protocol checks
//! (`checks.rs`), the tallies (`totals.rs`) and the server's metrics at the
//! end, read with `prometheus-parse` (`scrape.rs`).

#[path = "../common/mod.rs"]
mod common;
#[path = "../media_server/wire.rs"]
mod wire;

mod args;
mod checks;
mod conn;
#[cfg(test)]
mod fake;
mod live;
mod media;
mod scrape;
mod totals;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::args::Args;
use crate::scrape::mib;
use crate::totals::Totals;

fn main() -> ExitCode {
    let args = match common::cli::parse("load", args::HELP, args::parse_args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let files = match media::discover(&args).await {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("load: the server lists no media files (GET /media)");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("load: cannot reach http://{}: {e}", args.authority);
            return ExitCode::FAILURE;
        }
    };
    let media_clients = args.clients - args.live_clients;
    println!(
        "load: {} s against http://{}, {} clients ({media_clients} media, {} live on {} channels), seed {}",
        args.seconds, args.authority, args.clients, args.live_clients, args.channels, args.seed
    );
    let totals = Arc::new(Totals::default());
    if let Err(e) = checks::protocol_checks(&args, &files[0], &totals).await {
        totals.error(format!("protocol checks: {e}"));
    }
    let files = media::references(&args, files, &totals).await;
    for t in &files {
        let how = if t.file.content == wire::Content::MpegTs {
            "MPEG-TS: every byte checked against the frames its name makes"
        } else if t.file.content == wire::Content::Pattern {
            "every byte checked against the sample pattern"
        } else if t.reference.is_some() {
            "every byte checked against a copy fetched at the start"
        } else {
            "too large for a reference copy: lengths checked only"
        };
        println!("  {:<24} {:>12} bytes  {how}", t.file.name, t.file.size);
    }

    let args = Arc::new(args);
    let files = Arc::new(files);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut tasks = JoinSet::new();
    for id in 0..media_clients {
        tasks.spawn(media::media_client(
            id,
            Arc::clone(&args),
            Arc::clone(&files),
            Arc::clone(&totals),
            deadline,
        ));
    }
    for id in 0..args.live_clients {
        tasks.spawn(live::live_client(
            id,
            Arc::clone(&args),
            Arc::clone(&totals),
            deadline,
        ));
    }
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            totals.error(format!("client task: {e}"));
        }
    }
    let elapsed = start.elapsed().as_secs_f64();

    let t = &*totals;
    let get = |a: &AtomicU64| a.load(Relaxed);
    let media_bytes = get(&t.media_bytes) as f64;
    let live_bytes = get(&t.live_bytes) as f64;
    let mibs = |b: f64| b / (1u64 << 20) as f64 / elapsed;
    println!();
    println!("ran {elapsed:.1} s");
    println!(
        "requests:              {} (media {} whole, {} ranges, {} expected 416; live streams {}; protocol checks {})",
        get(&t.requests),
        get(&t.media_whole),
        get(&t.media_ranges),
        get(&t.media_416),
        get(&t.live_streams),
        get(&t.checks)
    );
    println!(
        "bytes:                 {} (media {}, live {}){}",
        mib(media_bytes + live_bytes),
        mib(media_bytes),
        mib(live_bytes),
        match get(&t.unverified_bytes) {
            0 => String::new(),
            n => format!("; {} without a pattern, unverified", mib(n as f64)),
        }
    );
    println!(
        "throughput:            {:.1} MiB/s (media {:.1} MiB/s, live {:.2} MiB/s)",
        mibs(media_bytes + live_bytes),
        mibs(media_bytes),
        mibs(live_bytes)
    );
    println!(
        "read modes:            direct {}, buffered {}",
        get(&t.direct),
        get(&t.buffered)
    );
    println!(
        "live:                  {} frames received, {} gaps ({} frames skipped or dropped by the server)",
        get(&t.live_frames),
        get(&t.live_gaps),
        get(&t.live_missing)
    );
    println!("errors:                {}", get(&t.errors));
    println!("verification failures: {}", get(&t.failures));
    for m in t.messages.lock().expect("messages lock").iter() {
        println!("  {m}");
    }
    if let Err(e) = scrape::report_server(&args).await {
        println!("server metrics: {e}");
    }
    let ok = get(&t.errors) == 0 && get(&t.failures) == 0;
    println!("result: {}", if ok { "PASS" } else { "FAIL" });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
