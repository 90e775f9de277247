//! A small media server on pagepool: files read with `O_DIRECT` into pooled,
//! page-aligned, guarded buffers and streamed over HTTP/1.1 (with Range
//! requests), synthetic live channels fanned out to every subscriber without
//! a copy, Prometheus metrics and a buffer report.
//!
//! ```text
//! cargo run --release --example media_server
//! cargo run --release --example media_server -- --listen 127.0.0.1:8080 --media-dir /srv/media
//! cargo run --release --features io-uring --example media_server    # reads through io_uring
//! cargo run --release --example load -- --clients 8 --seconds 10    # in another terminal
//! ```
//!
//! Endpoints:
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /media` | the files: `name \t size \t content` per line (`content`: `mpegts-v1` for generated `.ts` samples, `splitmix64` for generated `.bin` ones, else `-`) |
//! | `GET /media/{name}` | the file, `Range: bytes=a-b`, `a-` or `-n` (206, or 416 when unsatisfiable; the unit in any case); a strong `ETag` and `Last-Modified`, with `If-None-Match` / `If-Modified-Since` (304), `If-Match` / `If-Unmodified-Since` (412) and `If-Range`; headers `x-pagepool-read-mode: direct\|buffered`, `x-pagepool-read-path: io_uring\|blocking\|page_cache` |
//! | `GET /live/{channel}[?seconds=N]` | a live MPEG-TS (`video/mp2t`, H.264) in stamped 1316-byte frames (see `wire.rs`); lagging subscribers skip ahead |
//! | `GET /metrics` | Prometheus text format: pagepool's pools and the server's counters |
//! | `GET /debug/buffers[?min_age=S]` | each pool's stats and the size classes in use |
//!
//! Options (`--help` prints them and exits 0):
//!
//! ```text
//! --listen ADDR       address to serve on (default 127.0.0.1:8080; port 0 picks one)
//! --media-dir DIR     files to serve (default: generate samples in a temp dir, removed at exit)
//! --max-bytes N       cap on pooled memory (default 256MiB): 7/8 for the
//!                     "media" pool, 1/8 for the "live" pool
//! --chunk-size N      bytes per file read, a multiple of the page size (default 256KiB)
//! --live-rate N       frames per second per live channel (default 500, about 5.3 Mbit/s)
//! --direct-min-size N read files smaller than N through the page cache, not O_DIRECT
//!                     (default one chunk, as nginx's `directio` reads a file, or
//!                     its tail, shorter than its output buffer; 0: every file O_DIRECT)
//! --read-path P       auto, io_uring or blocking (default auto: io_uring where the build
//!                     has feature io-uring, the kernel allows it and O_DIRECT is on)
//! --pool-wait SECS    how long a media read waits for pool room before failing (default 5)
//! --response-quota N  slot bytes one media response may hold (default four chunks)
//! --open-files N      media files kept open between requests, each checked against
//!                     a statx of its path on every request (default 256; 0: none)
//! --reads-in-flight N file reads in flight at once per read path; the others wait,
//!                     those a response waits on and younger responses' first (default 32)
//! --send-timeout SECS close a client to which no byte could be sent for SECS
//!                     (default 10; 0: never)
//! --min-send-rate N   close a client reading slower than N bytes/s, averaged over
//!                     windows of --send-timeout, 10 s if 0 (default 16KiB; 0: no minimum)
//! --decay SECS        give a pool's free slabs back to the OS once unneeded for SECS
//!                     (the pools' decay; default 30; 0: never)
//! --grace SECS        how long shutdown lets responses in flight finish (default 5)
//! --seconds N         shut down by itself after N seconds (default: run until a signal)
//! ```
//!
//! Sizes are bytes, or with a suffix: `K`, `M`, `G` (or `KiB`, `MiB`, `GiB`)
//! are powers of 1024, `KB`, `MB`, `GB` powers of 1000 (`common/size.rs`).
//!
//! The parts: the command line (`args.rs`), a connection (`conn.rs`) with
//! its slow-client limits (`slow.rs`) and its responses' outcomes
//! (`outcome.rs`), the response body (`body.rs`, on `http-body-util`),
//! `/media` (`media.rs`) with its `Range` header (`range.rs`, on
//! `http-range-header`), its validators and conditional requests
//! (`conditional.rs`, on `headers`), the files it keeps open
//! (`open_files.rs`) and its reads through the
//! crate's `DirectFile` (`reader.rs`), `/live` (`live.rs`), `/metrics` and
//! `/debug/buffers` (`pages.rs`), the wire formats `load` checks (`wire.rs`),
//! the read path (`read_path.rs`; io_uring in `uring.rs`) and the order of
//! its reads (`read_queue.rs`), starting up
//! (`startup.rs`); the tests share `harness.rs`.
//!
//! Memory: every byte read or sent lives in one of the two pools, so
//! `--max-bytes` bounds it. A media response holds at most its quota
//! (`--response-quota`); in practice two or three chunks: the one hyper is
//! writing (hyper takes the next only when less than 16 KiB of it is left)
//! and the one read ahead (read once hyper took the one before). So clients
//! that stop reading hold that much each, not the pool, until they are cut
//! off (`--send-timeout`, `--min-send-rate`; their responses count as
//! failed, never as answered). When the response is at its quota or the
//! media pool at its cap, its reads await room (up to `--pool-wait`, first
//! come first served, without holding a worker thread), so a busy server
//! slows down rather than failing requests. A live channel holds at
//! most 256 frames (its broadcast ring); when the live pool is full the
//! producer drops the frame and counts it (its sequence number is skipped).
//!
//! Metrics of the server's own: `media_server_requests_total{route,status}`
//! (responses written whole), `media_server_responses_failed_total{route,reason}`
//! (cut short: `send_timeout`, `min_send_rate`, `client_gone`, `pool_wait`,
//! `read_error`, `file_shrank`), `media_server_slow_clients_closed_total{reason}`.
//!
//! Logs go to stderr (`RUST_LOG`, e.g. `info` or `media_server=debug,pagepool=info`);
//! the startup banner and the final pool statistics go to stdout. Ctrl-C or
//! SIGTERM shut down gracefully (a second one skips the grace period); the
//! exit code is 0 then, 1 when the server cannot start, 2 for bad arguments.

#[path = "../common/mod.rs"]
mod common;

mod args;
mod body;
mod conditional;
mod conn;
mod live;
mod media;
mod open_files;
mod outcome;
mod pages;
mod range;
mod read_path;
mod read_queue;
mod reader;
mod samples;
mod slow;
mod startup;
#[cfg(feature = "io-uring")]
mod uring;
mod wire;

#[cfg(test)]
mod harness;
#[cfg(test)]
mod test_decay;
#[cfg(test)]
mod test_http;
#[cfg(test)]
mod test_slow;

use std::collections::HashSet;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RANGE};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use pagepool::BufferPool;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::args::Args;
use crate::body::Body;
use crate::live::Live;
use crate::media::Media;
use crate::outcome::{Exchange, Tracked};

/// How often the Prometheus exporter's upkeep runs (it drains histogram
/// buffers; `install_recorder` leaves that to us).
const UPKEEP: Duration = Duration::from_secs(5);

/// Everything the handlers share.
#[derive(Debug)]
pub struct State {
    media: Media,
    live: Arc<Live>,
    prometheus: PrometheusHandle,
    connections: AtomicUsize,
    /// When a client that stops reading is cut off.
    send_limits: slow::Limits,
}

impl State {
    fn pools(&self) -> [&BufferPool; 2] {
        [&self.media.pool, &self.live.pool]
    }
}

/// Resolves once shutdown starts (or its sender is gone).
pub async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // Not holding the guard `wait_for` returns keeps the future `Send`.
    let _ = shutdown.wait_for(|s| *s).await;
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(body::full(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The value of `key` in a query string (no decoding; our values are numbers).
pub fn query_param<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

async fn route(
    state: Arc<State>,
    exchange: Arc<Exchange>,
    req: Request<Incoming>,
) -> Result<Response<Tracked>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let range = req
        .headers()
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let head = method == Method::HEAD;

    let (name, response) = if method != Method::GET && !head {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        ("other", r)
    } else if path == "/media" || path == "/media/" {
        ("media_list", media::list(Arc::clone(&state)).await)
    } else if let Some(name) = path.strip_prefix("/media/") {
        let r = media::get(Arc::clone(&state), name, req.headers(), head).await;
        ("media", r)
    } else if let Some(channel) = path.strip_prefix("/live/") {
        let r = live::get(Arc::clone(&state.live), channel, query.as_deref()).await;
        ("live", r)
    } else if path == "/metrics" {
        ("metrics", pages::metrics(&state))
    } else if path == "/debug/buffers" {
        ("debug", pages::debug_buffers(&state, query.as_deref()))
    } else {
        ("other", text(StatusCode::NOT_FOUND, "not found\n"))
    };
    let status = response.status();
    tracing::debug!(%method, %path, range = range.as_deref().unwrap_or(""), status = status.as_u16(), elapsed = ?started.elapsed(), "request");
    // Counted once written whole, or as failed (`outcome.rs`).
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(
        parts,
        exchange.track(name, status, body, head),
    ))
}

/// Why the server stops.
enum Stop {
    Signal(&'static str),
    Timer,
    /// [`Control::stop`] fired.
    Asked,
}

/// How a caller in the same process (the tests) learns the server's address
/// and stops it.
#[derive(Debug, Default)]
pub struct Control {
    pub ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    pub stop: Option<tokio::sync::oneshot::Receiver<()>>,
}

async fn accept_loop(
    listener: TcpListener,
    state: &Arc<State>,
    shutdown: &watch::Receiver<bool>,
    signals: &mut Signals,
    seconds: Option<u64>,
    stop: Option<tokio::sync::oneshot::Receiver<()>>,
) -> (JoinSet<()>, Stop) {
    let mut conns = JoinSet::new();
    let timer = async {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    let asked = async {
        match stop {
            Some(rx) => drop(rx.await),
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timer, asked);
    let stop = loop {
        tokio::select! {
            which = signals.next() => break Stop::Signal(which),
            () = &mut timer => break Stop::Timer,
            () = &mut asked => break Stop::Asked,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    conns.spawn(conn::connection(stream, Arc::clone(state), shutdown.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    };
    (conns, stop)
}

struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn new() -> io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

fn main() -> ExitCode {
    let args = match common::cli::parse("media_server", args::HELP, args::parse_args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("media-server")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("media_server: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(io::stderr)
                .with_ansi(false),
        )
        .with(filter)
        .init();
}

async fn run(args: Args) -> ExitCode {
    match serve(args, Control::default()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("media_server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args, control: Control) -> Result<(), String> {
    if let Some(dir) = &args.media_dir {
        media::check_dir(dir)?;
    }
    let listener = startup::bind(args.listen)?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let mut signals =
        Signals::new().map_err(|e| format!("cannot install the signal handlers: {e}"))?;

    // The recorder first: pools register their metrics with the recorder
    // current when they are built.
    let prometheus = startup::recorder(args.chunk)?;
    pages::describe_server_metrics();
    let live_bytes = args.max_bytes / 8;
    let media_pool = BufferPool::builder()
        .name("media")
        .max_bytes(args.max_bytes - live_bytes)
        .max_buffer_size(args.chunk)
        .slab_size((4 * args.chunk).max(1 << 20))
        .decay(args.decay)
        .build()
        .map_err(|e| format!("cannot build the media pool: {e}"))?;
    let live_pool = BufferPool::builder()
        .name("live")
        .max_bytes(live_bytes)
        .max_buffer_size(wire::FRAME_LEN)
        .decay(args.decay)
        .build()
        .map_err(|e| format!("cannot build the live pool: {e}"))?;

    let (dir, generated) = match args.media_dir.clone() {
        Some(dir) => (dir, false),
        None => (
            tokio::task::spawn_blocking(media::generate_samples)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot write the sample files: {e}"))?,
            true,
        ),
    };
    let samples: HashSet<String> = if generated {
        media::SAMPLES
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .collect()
    } else {
        HashSet::new()
    };
    let probe = media::probe_direct(&dir, &media_pool);
    let direct = match &probe {
        media::Probe::On(why) => {
            tracing::info!("O_DIRECT: on for {} ({why})", dir.display());
            true
        }
        media::Probe::Off(why) => {
            tracing::warn!(
                "O_DIRECT: off for {} ({why}); reading through the page cache",
                dir.display()
            );
            false
        }
        media::Probe::Unknown(why) => {
            tracing::info!("O_DIRECT: on for {} (not verified: {why})", dir.display());
            true
        }
    };

    let uring = read_path::choose(args.read_path, direct, &media_pool)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(State {
        media: Media {
            dir: dir.clone(),
            generated,
            samples,
            pool: media_pool,
            chunk: args.chunk,
            direct: AtomicBool::new(direct),
            direct_min_size: args.direct_min_size.unwrap_or(args.chunk as u64),
            pool_wait: args.pool_wait,
            response_quota: args.response_quota.unwrap_or(4 * args.chunk),
            uring,
            open_files: open_files::OpenFiles::new(args.open_files),
            read_queues: media::ReadQueues::new(args.reads_in_flight),
            readers: Arc::default(),
            counters: media::MediaCounters::register(),
        },
        live: Arc::new(Live::new(live_pool, args.live_rate, shutdown_rx.clone())),
        prometheus,
        connections: AtomicUsize::new(0),
        send_limits: slow::Limits {
            timeout: args.send_timeout,
            min_rate: args.min_send_rate,
            window: args.send_timeout.unwrap_or(Duration::from_secs(10)),
        },
    });

    let upkeep = {
        let handle = state.prometheus.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP);
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        })
    };

    startup::print_banner(&state, addr, direct, args.seconds);
    tracing::info!(%addr, "serving");
    if let Some(ready) = control.ready {
        let _ = ready.send(addr);
    }

    let (mut conns, why) = accept_loop(
        listener,
        &state,
        &shutdown_rx,
        &mut signals,
        args.seconds,
        control.stop,
    )
    .await;
    match why {
        Stop::Signal(s) => tracing::info!(
            "{s}: shutting down ({} connections open; grace {:?})",
            conns.len(),
            args.grace
        ),
        Stop::Timer => tracing::info!(
            "--seconds elapsed: shutting down ({} connections open)",
            conns.len()
        ),
        Stop::Asked => tracing::info!(
            "stop asked: shutting down ({} connections open)",
            conns.len()
        ),
    }
    // Stops the live producers (their subscribers' streams end) and tells
    // every connection to close after its response in flight.
    let _ = shutdown_tx.send(true);
    let drained = tokio::select! {
        r = tokio::time::timeout(args.grace, async { while conns.join_next().await.is_some() {} }) => r.is_ok(),
        s = signals.next() => {
            tracing::warn!("{s} again: not waiting for responses in flight");
            false
        }
    };
    if !drained {
        tracing::warn!(
            "closing {} connections with responses in flight",
            conns.len()
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    upkeep.abort();
    // Reader tasks end when they see their body gone; producers when they
    // see the shutdown. Give them a moment to hand their buffers back.
    let quiet_by = Instant::now() + Duration::from_secs(2);
    while (state.media.readers.load(Relaxed) > 0
        || state.live.subscribers() > 0
        || !state.live.channels().is_empty())
        && Instant::now() < quiet_by
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    println!("final pool stats:");
    for pool in state.pools() {
        pool.publish_metrics();
        println!("{}: {:#?}", pool.name(), pool.stats());
    }
    let outstanding: usize = state.pools().iter().map(|p| p.stats().buffers_in_use).sum();
    if outstanding > 0 {
        tracing::warn!(outstanding, "buffers still in use at exit");
    }
    if state.media.generated {
        if let Err(e) = std::fs::remove_dir_all(&state.media.dir) {
            tracing::warn!(dir = %state.media.dir.display(), error = %e, "cannot remove the sample files");
        }
    }
    tracing::info!("bye");
    Ok(())
}
