//! Starting up: the Prometheus recorder, the listening socket, the banner.

use std::io;
use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::{media, State};

/// The process's Prometheus recorder, installed by the first call (a test
/// process runs several servers; they share it).
pub fn recorder(chunk: usize) -> Result<PrometheusHandle, String> {
    static INSTALLED: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(handle) = INSTALLED.get() {
        return Ok(handle.clone());
    }
    let handle = pagepool::metrics::histogram_buckets(chunk)
        .into_iter()
        .try_fold(
            PrometheusBuilder::new().with_recommended_naming(true),
            |b, (name, buckets)| b.set_buckets_for_metric(Matcher::Full(name.to_owned()), &buckets),
        )
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))?;
    Ok(INSTALLED.get_or_init(|| handle).clone())
}

pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    let std_listener = std::net::TcpListener::bind(addr).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            format!("cannot listen on {addr}: address in use")
        } else {
            format!("cannot listen on {addr}: {e}")
        }
    })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    TcpListener::from_std(std_listener).map_err(|e| format!("cannot listen on {addr}: {e}"))
}

pub fn print_banner(state: &State, addr: SocketAddr, direct: bool, seconds: Option<u64>) {
    let m = &state.media;
    println!("media_server listening on http://{addr}");
    println!(
        "media dir: {}{}",
        m.dir.display(),
        if m.generated {
            " (generated samples, removed at exit)"
        } else {
            ""
        }
    );
    if m.generated {
        for (name, size) in media::SAMPLES {
            println!("  {name:<16} {size:>10} bytes   http://{addr}/media/{name}");
        }
    }
    let below = match (direct, m.direct_min_size) {
        (true, n) if n > 0 => format!(" (page cache below {n} bytes)"),
        _ => String::new(),
    };
    println!(
        "reads: {} KiB chunks, O_DIRECT {}{below}, read path {}, {} in flight; pools: media {} MiB, live {} MiB",
        m.chunk >> 10,
        if direct { "on" } else { "off" },
        if m.uring.is_some() {
            "io_uring"
        } else {
            "blocking"
        },
        m.read_queues.uring.limit(),
        m.pool.max_bytes().unwrap_or(0) >> 20,
        state.live.pool.max_bytes().unwrap_or(0) >> 20,
    );
    println!("endpoints:");
    let live = format!(
        "live MPEG-TS, {} frames/s each channel (?seconds=N to stop)",
        state.live.rate
    );
    for (path, what) in [
        ("/media", "file list: name, size, content"),
        ("/media/{name}", "a file; Range: bytes=a-b | a- | -n"),
        ("/live/{channel}", live.as_str()),
        ("/metrics", "Prometheus metrics"),
        ("/debug/buffers", "pool statistics"),
    ] {
        let url = format!("http://{addr}{path}");
        println!("  GET {url:<44} {what}");
    }
    match seconds {
        Some(s) => println!("stopping after {s} s, or on Ctrl-C / SIGTERM"),
        None => println!("Ctrl-C or SIGTERM to stop"),
    }
}
