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
//!   416). Every byte of a generated sample is checked against its pattern at
//!   its offset (see `media_server/wire.rs`), and the status, `Content-Length`
//!   and `Content-Range` against the request;
//! - live clients (`--live-clients`, default N/4) subscribe to
//!   `/live/load-{i % channels}` and check every frame (magic, channel,
//!   checksum, every payload byte) and that sequence numbers only go up.
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

#[path = "../media_server/wire.rs"]
mod wire;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_LENGTH, CONTENT_RANGE, HOST, RANGE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use wire::{Listed, FRAME_LEN};

const USAGE: &str = "usage: load [--target http://HOST:PORT] [--clients N] [--live-clients M] \
[--channels K] [--seconds S] [--wait S] [--seed X]";

/// The longest a single media request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Failure and error messages kept for the report.
const KEEP_MESSAGES: usize = 12;

#[derive(Debug, Clone)]
struct Args {
    /// `host:port`.
    authority: String,
    clients: usize,
    live_clients: usize,
    channels: usize,
    seconds: u64,
    wait: u64,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut target = "http://127.0.0.1:8080".to_owned();
    let (mut clients, mut live_clients, mut channels) = (8usize, None, 2usize);
    let (mut seconds, mut wait) = (10u64, 5u64);
    let mut seed = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        let mut number = || -> Result<u64, String> {
            let v = value()?;
            v.parse().map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--target" => target = value()?,
            "--clients" => clients = number()? as usize,
            "--live-clients" => live_clients = Some(number()? as usize),
            "--channels" => channels = number()? as usize,
            "--seconds" => seconds = number()?,
            "--wait" => wait = number()?,
            "--seed" => seed = Some(number()?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let authority = target
        .strip_prefix("http://")
        .ok_or_else(|| format!("--target {target}: only http:// URLs"))?
        .trim_end_matches('/')
        .to_owned();
    if authority.is_empty() || authority.contains('/') {
        return Err(format!("--target {target}: expected http://HOST:PORT"));
    }
    let authority = if authority.contains(':') {
        authority
    } else {
        format!("{authority}:80")
    };
    if clients == 0 || clients > 10_000 {
        return Err("--clients must be between 1 and 10000".to_owned());
    }
    let live_clients = live_clients.unwrap_or(if clients >= 2 {
        (clients / 4).max(1)
    } else {
        0
    });
    if live_clients > clients {
        return Err("--live-clients cannot exceed --clients".to_owned());
    }
    if channels == 0 {
        return Err("--channels must be at least 1".to_owned());
    }
    if seconds == 0 {
        return Err("--seconds must be at least 1".to_owned());
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    Ok(Args {
        authority,
        clients,
        live_clients,
        channels,
        seconds,
        wait,
        seed,
    })
}

/// xorshift64*: plenty for picking files and ranges.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(wire::splitmix64(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Everything the clients add up.
#[derive(Debug, Default)]
struct Totals {
    requests: AtomicU64,
    media_whole: AtomicU64,
    media_ranges: AtomicU64,
    media_416: AtomicU64,
    checks: AtomicU64,
    live_streams: AtomicU64,
    media_bytes: AtomicU64,
    unverified_bytes: AtomicU64,
    live_bytes: AtomicU64,
    live_frames: AtomicU64,
    live_gaps: AtomicU64,
    live_missing: AtomicU64,
    direct: AtomicU64,
    buffered: AtomicU64,
    errors: AtomicU64,
    failures: AtomicU64,
    messages: Mutex<Vec<String>>,
}

impl Totals {
    fn note(&self, what: &str, msg: String) {
        let mut m = self.messages.lock().expect("messages lock");
        if m.len() < KEEP_MESSAGES {
            m.push(format!("{what}: {msg}"));
        }
    }

    fn error(&self, msg: String) {
        self.errors.fetch_add(1, Relaxed);
        self.note("error", msg);
    }

    fn failure(&self, msg: String) {
        self.failures.fetch_add(1, Relaxed);
        self.note("FAILED", msg);
    }

    fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => {}
            Outcome::Error(m) => self.error(m),
            Outcome::Failed(m) => self.failure(m),
        }
    }
}

/// How one request went.
#[derive(Debug)]
enum Outcome {
    Ok,
    /// Transport trouble or a server error (5xx, connection reset, timeout).
    Error(String),
    /// The server answered, wrongly.
    Failed(String),
}

/// An empty request body.
struct Empty;

impl hyper::body::Body for Empty {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(None)
    }
    fn is_end_stream(&self) -> bool {
        true
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(0)
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    sender: http1::SendRequest<Empty>,
    authority: String,
}

impl Conn {
    async fn open(authority: &str) -> Result<Conn, String> {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake with {authority}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            authority: authority.to_owned(),
        })
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        range: Option<&str>,
    ) -> Result<Response<Incoming>, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("{path}: connection: {e}"))?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.authority);
        if let Some(r) = range {
            req = req.header(RANGE, r);
        }
        let req = req.body(Empty).map_err(|e| format!("{path}: {e}"))?;
        self.sender
            .send_request(req)
            .await
            .map_err(|e| format!("{path}: {e}"))
    }
}

/// The next data chunk of a body; `None` at its end.
async fn next_data(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        let frame = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    return Some(Ok(data));
                }
                // Trailers: skip.
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

async fn read_all(body: &mut Incoming) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(d) = next_data(body).await {
        out.extend_from_slice(&d.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn header_str(r: &Response<Incoming>, name: impl hyper::header::AsHeaderName) -> &str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Largest file, and most bytes in all, fetched once as a reference for files
/// without the sample pattern.
const REFERENCE_FILE_MAX: u64 = 64 << 20;
const REFERENCE_TOTAL_MAX: u64 = 256 << 20;

/// A file to fetch, and how to check its bytes.
#[derive(Debug)]
struct Target {
    file: Listed,
    /// For files without the pattern: the whole file, fetched at the start.
    reference: Option<Vec<u8>>,
}

/// What a media request asks for and what must come back.
#[derive(Debug)]
struct Plan {
    range: Option<String>,
    status: StatusCode,
    first: u64,
    len: u64,
}

fn plan(rng: &mut Rng, size: u64) -> Plan {
    const MAX_SPAN: u64 = 4 << 20;
    let page = 4096;
    let whole = Plan {
        range: None,
        status: StatusCode::OK,
        first: 0,
        len: size,
    };
    let part = |header: String, first: u64, last: u64| Plan {
        range: Some(header),
        status: StatusCode::PARTIAL_CONTENT,
        first,
        len: last - first + 1,
    };
    if size == 0 {
        return whole;
    }
    let roll = rng.below(100);
    let mut start = rng.below(size);
    if rng.below(5) == 0 {
        start -= start % page; // sometimes an aligned start
    }
    match roll {
        0..=34 => whole,
        35..=59 => {
            let last = (start + rng.below(MAX_SPAN.min(size - start))).min(size - 1);
            part(format!("bytes={start}-{last}"), start, last)
        }
        60..=74 => part(format!("bytes={start}-"), start, size - 1),
        75..=89 => {
            let n = 1 + rng.below(MAX_SPAN.min(size));
            part(format!("bytes=-{n}"), size - n, size - 1)
        }
        90..=93 => {
            // A suffix longer than the file, an end past it: both clamp.
            if rng.below(2) == 0 {
                part(
                    format!("bytes=-{}", size + 1 + rng.below(1000)),
                    0,
                    size - 1,
                )
            } else {
                let ask = size + rng.below(1 << 20);
                part(format!("bytes={start}-{ask}"), start, size - 1)
            }
        }
        _ => {
            let header = if rng.below(2) == 0 {
                format!("bytes={}-", size + rng.below(1000))
            } else {
                "bytes=-0".to_owned()
            };
            Plan {
                range: Some(header),
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                first: 0,
                len: 0,
            }
        }
    }
}

/// Fetches `file` as `plan` says and checks everything that comes back.
async fn fetch(conn: &mut Conn, target: &Target, plan: &Plan, totals: &Totals) -> Outcome {
    let file = &target.file;
    let path = format!("/media/{}", file.name);
    let what = format!(
        "GET {path} {}",
        plan.range
            .as_deref()
            .map_or("(whole)".to_owned(), |r| format!("Range: {r}"))
    );
    let mut resp = match conn.send(Method::GET, &path, plan.range.as_deref()).await {
        Ok(r) => r,
        Err(e) => return Outcome::Error(e),
    };
    totals.requests.fetch_add(1, Relaxed);
    let status = resp.status();
    if status != plan.status {
        let body = read_all(resp.body_mut()).await.unwrap_or_default();
        let msg = format!(
            "{what}: status {status}, expected {} ({})",
            plan.status,
            String::from_utf8_lossy(&body).trim()
        );
        return if status.is_server_error() {
            Outcome::Error(msg)
        } else {
            Outcome::Failed(msg)
        };
    }
    let size = file.size;
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        totals.media_416.fetch_add(1, Relaxed);
        let cr = header_str(&resp, CONTENT_RANGE).to_owned();
        let _ = read_all(resp.body_mut()).await;
        return if cr == format!("bytes */{size}") {
            Outcome::Ok
        } else {
            Outcome::Failed(format!("{what}: 416 with Content-Range {cr:?}"))
        };
    }
    if plan.range.is_some() {
        totals.media_ranges.fetch_add(1, Relaxed);
        let want = format!("bytes {}-{}/{size}", plan.first, plan.first + plan.len - 1);
        let cr = header_str(&resp, CONTENT_RANGE);
        if cr != want {
            return Outcome::Failed(format!("{what}: Content-Range {cr:?}, expected {want:?}"));
        }
    } else {
        totals.media_whole.fetch_add(1, Relaxed);
    }
    let cl = header_str(&resp, CONTENT_LENGTH);
    if cl != plan.len.to_string() {
        return Outcome::Failed(format!(
            "{what}: Content-Length {cl:?}, expected {}",
            plan.len
        ));
    }
    match header_str(&resp, "x-pagepool-read-mode") {
        "direct" => totals.direct.fetch_add(1, Relaxed),
        "buffered" => totals.buffered.fetch_add(1, Relaxed),
        other => {
            return Outcome::Failed(format!("{what}: x-pagepool-read-mode {other:?}"));
        }
    };
    let seed = wire::sample_seed(&file.name);
    let mut got = 0u64;
    while let Some(data) = next_data(resp.body_mut()).await {
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                return Outcome::Error(format!(
                    "{what}: body broke after {got} of {} bytes: {e}",
                    plan.len
                ))
            }
        };
        if got + data.len() as u64 > plan.len {
            return Outcome::Failed(format!("{what}: more than {} bytes", plan.len));
        }
        let at = plan.first + got;
        let wrong = if file.pattern {
            wire::check_pattern(seed, at, &data)
        } else if let Some(reference) = &target.reference {
            let want = &reference[at as usize..at as usize + data.len()];
            (want != &data[..]).then(|| (0..data.len()).find(|&i| want[i] != data[i]).unwrap_or(0))
        } else {
            totals
                .unverified_bytes
                .fetch_add(data.len() as u64, Relaxed);
            None
        };
        if let Some(i) = wrong {
            return Outcome::Failed(format!(
                "{what}: wrong byte at file offset {}",
                at + i as u64
            ));
        }
        got += data.len() as u64;
        totals.media_bytes.fetch_add(data.len() as u64, Relaxed);
    }
    if got != plan.len {
        return Outcome::Failed(format!("{what}: {got} bytes, expected {}", plan.len));
    }
    Outcome::Ok
}

async fn media_client(
    id: usize,
    args: Arc<Args>,
    files: Arc<Vec<Target>>,
    totals: Arc<Totals>,
    deadline: Instant,
) {
    let mut rng = Rng::new(args.seed ^ (id as u64).wrapping_mul(0x9E37_79B9));
    let mut conn: Option<Conn> = None;
    while Instant::now() < deadline {
        let target = &files[rng.below(files.len() as u64) as usize];
        let plan = plan(&mut rng, target.file.size);
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(&args.authority).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    totals.error(e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let outcome =
            match tokio::time::timeout(REQUEST_TIMEOUT, fetch(c, target, &plan, &totals)).await {
                Ok(o) => o,
                Err(_) => Outcome::Error(format!(
                    "GET /media/{}: no answer within {REQUEST_TIMEOUT:?}",
                    target.file.name
                )),
            };
        if !matches!(outcome, Outcome::Ok) {
            // The connection's state is unknown: start afresh.
            conn = None;
        }
        totals.record(outcome);
    }
}

/// Follows one live subscription to its end; checks every frame.
async fn live_stream(authority: &str, channel: &str, seconds: u64, totals: &Totals) -> Outcome {
    let id = wire::channel_id(channel);
    let path = format!("/live/{channel}?seconds={seconds}");
    let mut conn = match Conn::open(authority).await {
        Ok(c) => c,
        Err(e) => return Outcome::Error(e),
    };
    let mut resp = match conn.send(Method::GET, &path, None).await {
        Ok(r) => r,
        Err(e) => return Outcome::Error(e),
    };
    totals.requests.fetch_add(1, Relaxed);
    totals.live_streams.fetch_add(1, Relaxed);
    if resp.status() != StatusCode::OK {
        return Outcome::Error(format!("GET {path}: status {}", resp.status()));
    }
    let mut frame = Vec::with_capacity(FRAME_LEN);
    let mut last: Option<u64> = None;
    while let Some(data) = next_data(resp.body_mut()).await {
        let data = match data {
            Ok(d) => d,
            Err(e) => return Outcome::Error(format!("GET {path}: stream broke: {e}")),
        };
        totals.live_bytes.fetch_add(data.len() as u64, Relaxed);
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = (FRAME_LEN - frame.len()).min(rest.len());
            frame.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if frame.len() < FRAME_LEN {
                continue;
            }
            let seq = match wire::check_frame(&frame, id) {
                Ok(s) => s,
                Err(e) => {
                    return Outcome::Failed(format!(
                        "GET {path}: bad frame after sequence {last:?}: {e:?}"
                    ))
                }
            };
            frame.clear();
            totals.live_frames.fetch_add(1, Relaxed);
            if let Some(prev) = last {
                if seq <= prev {
                    return Outcome::Failed(format!(
                        "GET {path}: sequence went from {prev} to {seq}"
                    ));
                }
                if seq > prev + 1 {
                    totals.live_gaps.fetch_add(1, Relaxed);
                    totals.live_missing.fetch_add(seq - prev - 1, Relaxed);
                }
            }
            last = Some(seq);
        }
    }
    if !frame.is_empty() {
        return Outcome::Failed(format!(
            "GET {path}: stream ended {} bytes into a frame",
            frame.len()
        ));
    }
    if last.is_none() {
        return Outcome::Failed(format!("GET {path}: no frame in {seconds} s"));
    }
    Outcome::Ok
}

async fn live_client(id: usize, args: Arc<Args>, totals: Arc<Totals>, deadline: Instant) {
    let channel = format!("load-{}", id % args.channels);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(500) {
            break;
        }
        let seconds = left.as_secs_f64().round().max(1.0) as u64;
        let limit = Duration::from_secs(seconds) + Duration::from_secs(15);
        let outcome = match tokio::time::timeout(
            limit,
            live_stream(&args.authority, &channel, seconds, &totals),
        )
        .await
        {
            Ok(o) => o,
            Err(_) => Outcome::Error(format!("/live/{channel}: did not end within {limit:?}")),
        };
        let bad = !matches!(outcome, Outcome::Ok);
        totals.record(outcome);
        if bad {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The listing, retried until the server answers or `wait` runs out.
async fn discover(args: &Args) -> Result<Vec<Listed>, String> {
    let give_up = Instant::now() + Duration::from_secs(args.wait);
    loop {
        let attempt = async {
            let mut conn = Conn::open(&args.authority).await?;
            let mut resp = conn.send(Method::GET, "/media", None).await?;
            if resp.status() != StatusCode::OK {
                return Err(format!("GET /media: status {}", resp.status()));
            }
            let body = read_all(resp.body_mut()).await?;
            wire::parse_listing(&String::from_utf8_lossy(&body))
        };
        match attempt.await {
            Ok(files) => return Ok(files),
            Err(e) if Instant::now() >= give_up => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Fetches the files without the sample pattern (within the limits) once,
/// as references for every later response.
async fn references(args: &Args, files: Vec<Listed>, totals: &Totals) -> Vec<Target> {
    let mut budget = REFERENCE_TOTAL_MAX;
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let mut reference = None;
        if !file.pattern && file.size <= REFERENCE_FILE_MAX && file.size <= budget {
            let path = format!("/media/{}", file.name);
            let got = async {
                let mut conn = Conn::open(&args.authority).await?;
                let mut resp = conn.send(Method::GET, &path, None).await?;
                totals.requests.fetch_add(1, Relaxed);
                if resp.status() != StatusCode::OK {
                    return Err(format!("GET {path}: status {}", resp.status()));
                }
                read_all(resp.body_mut()).await
            };
            match got.await {
                Ok(body) if body.len() as u64 == file.size => {
                    budget -= file.size;
                    reference = Some(body);
                }
                Ok(body) => totals.failure(format!(
                    "GET {path}: {} bytes, listed as {}",
                    body.len(),
                    file.size
                )),
                Err(e) => totals.error(e),
            }
        }
        out.push(Target { file, reference });
    }
    out
}

/// A few requests with known answers.
async fn protocol_checks(args: &Args, file: &Listed, totals: &Totals) -> Result<(), String> {
    let mut conn = Conn::open(&args.authority).await?;
    let name = &file.name;
    let size = file.size;
    let cases: Vec<(Method, String, Option<String>, StatusCode)> = vec![
        (
            Method::GET,
            "/media/pagepool-load-no-such-file".into(),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            format!("/media/..%2F{name}"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/media/a%00b".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/live/bad%20name".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (Method::HEAD, format!("/media/{name}"), None, StatusCode::OK),
        (
            Method::GET,
            format!("/media/{name}"),
            Some(format!("bytes={size}-")),
            StatusCode::RANGE_NOT_SATISFIABLE,
        ),
    ];
    for (method, path, range, want) in cases {
        let what = format!(
            "check {method} {path}{}",
            range
                .as_deref()
                .map(|r| format!(" Range: {r}"))
                .unwrap_or_default()
        );
        let mut resp = conn.send(method.clone(), &path, range.as_deref()).await?;
        totals.requests.fetch_add(1, Relaxed);
        totals.checks.fetch_add(1, Relaxed);
        let status = resp.status();
        let cl = header_str(&resp, CONTENT_LENGTH).to_owned();
        let cr = header_str(&resp, CONTENT_RANGE).to_owned();
        let body = read_all(resp.body_mut()).await?;
        if status != want {
            totals.failure(format!("{what}: status {status}, expected {want}"));
        } else if method == Method::HEAD && (cl != size.to_string() || !body.is_empty()) {
            totals.failure(format!(
                "{what}: Content-Length {cl:?} and {} body bytes, expected {size} and none",
                body.len()
            ));
        } else if want == StatusCode::RANGE_NOT_SATISFIABLE && cr != format!("bytes */{size}") {
            totals.failure(format!("{what}: Content-Range {cr:?}"));
        }
    }
    Ok(())
}

/// `name{labels} value` lines of a Prometheus scrape.
fn parse_scrape(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k.trim().to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some((name.to_owned(), labels, value))
        })
        .collect()
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1u64 << 20) as f64)
}

async fn report_server(args: &Args) -> Result<(), String> {
    let mut conn = Conn::open(&args.authority).await?;
    let mut resp = conn.send(Method::GET, "/metrics", None).await?;
    if resp.status() != StatusCode::OK {
        return Err(format!("GET /metrics: status {}", resp.status()));
    }
    let text = String::from_utf8_lossy(&read_all(resp.body_mut()).await?).into_owned();
    let samples = parse_scrape(&text);
    #[derive(Default)]
    struct Pool {
        in_use: f64,
        reserved: f64,
        limit: Option<f64>,
        cached: f64,
        hits: f64,
        misses: f64,
        exhausted: f64,
    }
    let mut pools: BTreeMap<String, Pool> = BTreeMap::new();
    let mut server: BTreeMap<String, f64> = BTreeMap::new();
    for (name, labels, v) in &samples {
        if let Some(pool) = labels.get("pool") {
            let p = pools.entry(pool.clone()).or_default();
            match name.as_str() {
                "pagepool_bytes_in_use" => p.in_use = *v,
                "pagepool_bytes_reserved" => p.reserved = *v,
                "pagepool_bytes_limit" => p.limit = Some(*v),
                "pagepool_bytes_cached" => p.cached = *v,
                "pagepool_allocations_total" => match labels.get("outcome").map(String::as_str) {
                    Some("hit") => p.hits += v,
                    Some("miss") => p.misses += v,
                    Some("exhausted") => p.exhausted += v,
                    _ => {}
                },
                _ => {}
            }
        } else if name.starts_with("media_server_") && !name.starts_with("media_server_requests") {
            *server.entry(name.clone()).or_default() += v;
        }
    }
    if pools.is_empty() {
        return Err("no pagepool metrics in /metrics".to_owned());
    }
    println!("server pools (GET /metrics):");
    println!(
        "  {:<8} {:>12} {:>12} {:>12} {:>12} {:>12} {:>8} {:>10} {:>8}",
        "pool", "in use", "reserved", "limit", "cached", "hits", "misses", "exhausted", "hit rate"
    );
    for (name, p) in &pools {
        let total = p.hits + p.misses;
        println!(
            "  {:<8} {:>12} {:>12} {:>12} {:>12} {:>12} {:>8} {:>10} {:>7.3}%",
            name,
            mib(p.in_use),
            mib(p.reserved),
            p.limit.map_or("none".to_owned(), mib),
            mib(p.cached),
            p.hits,
            p.misses,
            p.exhausted,
            if total > 0.0 {
                100.0 * p.hits / total
            } else {
                0.0
            },
        );
    }
    if !server.is_empty() {
        println!("server counters:");
        for (name, v) in &server {
            println!("  {name:<42} {v}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
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
    let files = match discover(&args).await {
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
    if let Err(e) = protocol_checks(&args, &files[0], &totals).await {
        totals.error(format!("protocol checks: {e}"));
    }
    let files = references(&args, files, &totals).await;
    for t in &files {
        let how = if t.file.pattern {
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
        tasks.spawn(media_client(
            id,
            Arc::clone(&args),
            Arc::clone(&files),
            Arc::clone(&totals),
            deadline,
        ));
    }
    for id in 0..args.live_clients {
        tasks.spawn(live_client(
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
    if let Err(e) = report_server(&args).await {
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
