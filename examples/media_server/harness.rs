//! What the server tests share (`cargo test --example media_server`): a
//! server in this process on 127.0.0.1 (its own runtime and thread, stopped
//! when dropped), a bare HTTP/1.1 client, and metric scrapes. The servers
//! share the process's Prometheus recorder, so the tests that start one run
//! one at a time ([`Server::start`] holds a lock).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::common::cli;
use crate::{args, serve, Control};

/// How long any one exchange may take before the test fails.
pub const EXCHANGE_LIMIT: Duration = Duration::from_secs(30);

/// Runs `future` to completion on a runtime of its own (the test's client
/// side; the server has its own).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// A media server of this process.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    _serial: MutexGuard<'static, ()>,
}

impl Server {
    /// Serves `dir` with the flags `extra` (on top of `--listen 127.0.0.1:0`
    /// and `--media-dir`), stopping by itself after two minutes at most.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        static SERIAL: Mutex<()> = Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = dir.to_str().expect("a UTF-8 temp path");
        let mut argv = vec![
            "--listen",
            "127.0.0.1:0",
            "--media-dir",
            dir,
            "--seconds",
            "120",
        ];
        argv.extend_from_slice(extra);
        let args = args::parse_args(cli::parser(&argv)).expect("valid test flags");
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let control = Control {
                ready: Some(ready_tx),
                stop: Some(stop_rx),
            };
            let served = rt.block_on(serve(args, control));
            rt.shutdown_timeout(Duration::from_secs(1));
            served
        });
        let addr = ready_rx.blocking_recv().expect("the server started");
        Server {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
            _serial: serial,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let served = thread.join();
            if !std::thread::panicking() {
                served.expect("the server thread").expect("a clean run");
            }
        }
    }
}

/// A fresh directory under the temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("pagepool-media-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        TempDir(dir)
    }

    /// Writes `name` with `len` bytes of a position stamp; returns them.
    pub fn file(&self, name: &str, len: usize) -> Vec<u8> {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(self.0.join(name), &bytes).expect("a test file");
        bytes
    }

    /// A file of `len` bytes that is one hole (no disk space, reads zeros).
    pub fn sparse(&self, name: &str, len: u64) {
        let f = std::fs::File::create(self.0.join(name)).expect("a test file");
        f.set_len(len).expect("a sparse file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A response, read whole (the request asks the server to close).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Whether the body has the length its `Content-Length` says.
    pub fn is_whole(&self) -> bool {
        self.header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n == self.body.len())
    }
}

/// `method path` with `headers`, on a connection of its own.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("a response");
        parse_reply(&raw)
    };
    tokio::time::timeout(EXCHANGE_LIMIT, exchange)
        .await
        .expect("the exchange finished in time")
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(addr, "GET", path, headers).await
}

fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = std::str::from_utf8(&raw[..end]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// The sum of the samples `name{labels..}` in the server's `/metrics` (0
/// when absent); `labels` as they appear, e.g. `reason="send_timeout"`.
pub async fn metric(addr: SocketAddr, name: &str, labels: &[&str]) -> f64 {
    let page = get(addr, "/metrics", &[]).await;
    let text = String::from_utf8(page.body).expect("UTF-8 metrics");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name && labels.iter().all(|want| rest.contains(want))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}
