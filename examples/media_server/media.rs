//! `GET /media` and `GET /media/{name}`: files read with `O_DIRECT` into
//! pooled page-aligned buffers, streamed with Range support.

use std::collections::HashSet;
use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{
    HeaderValue, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE,
};
use hyper::{HeaderMap, Response, StatusCode};
use metrics::Counter;
use pagepool::direct::{DirectError, DirectErrorKind, DirectFile};
use pagepool::BufferPool;
use tokio::sync::mpsc;

use crate::body::{self, Body};
use crate::conditional::{self, Verdict};
use crate::open_files::{Found, OpenFiles, Opened};
use crate::range::{parse_range, Wanted};
use crate::read_path::{UringReads, READ_PATH_HEADER};
use crate::read_queue::ReadQueue;
use crate::reader::{read_refused, Reader, ReaderGuard};
use crate::wire;
use crate::{text, State};

pub use crate::samples::{generate_samples, SAMPLES};

/// The header that tells how a response was read.
pub const READ_MODE_HEADER: &str = "x-pagepool-read-mode";

/// What `/media` serves from, and how.
#[derive(Debug)]
pub struct Media {
    pub dir: PathBuf,
    /// Whether `dir` holds samples we generated (and remove at exit).
    pub generated: bool,
    /// Files whose content is the sample pattern of their name.
    pub samples: HashSet<String>,
    /// The io_uring read path, when it runs (`--read-path`); before `pool`,
    /// so it drops first (it stops its reaper; its reads in flight keep
    /// their buffers until the kernel is done).
    pub uring: Option<Arc<UringReads>>,
    pub pool: BufferPool,
    /// Bytes per read; a multiple of the page size.
    pub chunk: usize,
    /// Whether to try `O_DIRECT` (the startup probe did not rule it out).
    pub direct: AtomicBool,
    /// Files smaller than this are read through the page cache
    /// (`--direct-min-size`).
    pub direct_min_size: u64,
    /// How long a read waits for the pool to have room before giving up.
    pub pool_wait: Duration,
    /// Slot bytes one response may hold (its quota of the media pool).
    pub response_quota: usize,
    /// Files kept open between requests (`--open-files`).
    pub open_files: OpenFiles,
    /// The order of reads on each read path.
    pub read_queues: ReadQueues,
    /// Reader tasks streaming a response right now.
    pub readers: Arc<AtomicUsize>,
    pub counters: MediaCounters,
}

/// A [`ReadQueue`] per read path.
#[derive(Debug)]
pub struct ReadQueues {
    pub uring: Arc<ReadQueue>,
    pub blocking: Arc<ReadQueue>,
}

impl ReadQueues {
    /// At most `limit` reads in flight on each path.
    pub fn new(limit: usize) -> ReadQueues {
        ReadQueues {
            uring: ReadQueue::new(limit),
            blocking: ReadQueue::new(limit),
        }
    }
}

/// Metric handles, registered once.
#[derive(Debug)]
pub struct MediaCounters {
    pub read_direct_uring: Counter,
    pub read_direct_blocking: Counter,
    pub read_buffered_uring: Counter,
    pub read_buffered_blocking: Counter,
    pub read_buffered_cached: Counter,
    pub open_file_hits: Counter,
    pub open_file_misses: Counter,
    pub pool_waits: Counter,
    pub fallbacks: Counter,
}

impl MediaCounters {
    pub fn register() -> MediaCounters {
        metrics::describe_counter!(
            "media_server_read_bytes_total",
            metrics::Unit::Bytes,
            "Bytes read from media files into pooled buffers, by read mode (direct: O_DIRECT; buffered: page cache) and path (io_uring; blocking: pread on the blocking pool; page_cache: a buffered read the page cache held whole, copied on the worker)."
        );
        metrics::describe_counter!(
            "media_server_open_files_total",
            metrics::Unit::Count,
            "Media requests by whether their file was found open (hit: the path's statx matched the file kept open) or opened (miss)."
        );
        metrics::describe_counter!(
            "media_server_pool_waits_total",
            metrics::Unit::Count,
            "Times a media read found the pool at its byte cap, or its response at its quota, and waited (backpressure)."
        );
        metrics::describe_counter!(
            "media_server_odirect_fallbacks_total",
            metrics::Unit::Count,
            "Media files that refused O_DIRECT (EINVAL) and were read buffered instead."
        );
        MediaCounters {
            read_direct_uring: metrics::counter!("media_server_read_bytes_total", "mode" => "direct", "path" => "io_uring"),
            read_direct_blocking: metrics::counter!("media_server_read_bytes_total", "mode" => "direct", "path" => "blocking"),
            read_buffered_uring: metrics::counter!("media_server_read_bytes_total", "mode" => "buffered", "path" => "io_uring"),
            read_buffered_blocking: metrics::counter!("media_server_read_bytes_total", "mode" => "buffered", "path" => "blocking"),
            read_buffered_cached: metrics::counter!("media_server_read_bytes_total", "mode" => "buffered", "path" => "page_cache"),
            open_file_hits: metrics::counter!("media_server_open_files_total", "result" => "hit"),
            open_file_misses: metrics::counter!("media_server_open_files_total", "result" => "miss"),
            pool_waits: metrics::counter!("media_server_pool_waits_total"),
            fallbacks: metrics::counter!("media_server_odirect_fallbacks_total"),
        }
    }
}

/// Checks that `dir` is a directory we can list.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        format!(
            "--media-dir {}: {}",
            dir.display(),
            describe_io(&e, "no such directory")
        )
    })?;
    if !meta.is_dir() {
        return Err(format!("--media-dir {}: not a directory", dir.display()));
    }
    std::fs::read_dir(dir)
        .map_err(|e| format!("--media-dir {}: cannot read it: {e}", dir.display()))?;
    Ok(())
}

fn describe_io(e: &io::Error, not_found: &str) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => not_found.to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

/// The result of trying an `O_DIRECT` read in the media directory.
#[derive(Debug)]
pub enum Probe {
    On(String),
    Off(String),
    Unknown(String),
}

/// Opens the first non-empty file of `dir` with `O_DIRECT` and reads its
/// first page into a pooled buffer.
pub fn probe_direct(dir: &Path, pool: &BufferPool) -> Probe {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() > 0))
            .collect(),
        Err(e) => return Probe::Unknown(format!("cannot list: {e}")),
    };
    files.sort();
    let Some(path) = files.first() else {
        return Probe::Unknown("no file to probe; each file falls back on its own".to_owned());
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let file = match DirectFile::open(path) {
        Ok(f) => f,
        Err(e) if unsupported(&e) => return Probe::Off(format!("open of {name} refused: {e}")),
        Err(e) => return Probe::Unknown(format!("cannot open {name}: {e}")),
    };
    let page = pagepool::page_size();
    let mut buf = match pool.allocate_page_size_buffer(page) {
        Ok(b) => b,
        Err(e) => return Probe::Unknown(format!("no buffer for the probe: {e}")),
    };
    match file.read_at(&mut buf, 0) {
        Ok(_) => Probe::On(format!("probed with {name}")),
        Err(e) if read_refused(&e) => Probe::Off(format!("read of {name} refused: {e}")),
        Err(e) => Probe::Unknown(format!("cannot read {name}: {e}")),
    }
}

/// Whether `e` is a file system refusing `O_DIRECT` at the open.
fn unsupported(e: &io::Error) -> bool {
    DirectError::of(e).is_some_and(|d| d.kind() == DirectErrorKind::Unsupported)
}

/// Opens a media file (a regular one: [`OpenFiles::open`] checked): with
/// `O_DIRECT` when `try_direct` and the file system accepts it
/// ([`DirectFile::open_or_buffered`]), else through the page cache.
/// Returns the file with its size and validators, and its `fstat`.
fn open_media(path: &Path, try_direct: bool) -> io::Result<(Opened, Metadata)> {
    let file = if try_direct {
        DirectFile::open_or_buffered(path)?
    } else {
        DirectFile::open_buffered(path)?
    };
    Opened::of(file, try_direct)
}

/// `GET /media`: one line per regular file, `name \t size \t pattern`.
pub async fn list(state: Arc<State>) -> Response<Body> {
    let st = Arc::clone(&state);
    let listed = tokio::task::spawn_blocking(move || -> io::Result<String> {
        let media = &st.media;
        let mut rows = Vec::new();
        for entry in std::fs::read_dir(&media.dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.chars().any(char::is_control) || valid_name(&name).is_none() {
                continue;
            }
            match std::fs::metadata(entry.path()) {
                Ok(m) if m.is_file() => rows.push((name, m.len())),
                _ => continue,
            }
        }
        rows.sort();
        Ok(rows
            .iter()
            .map(|(n, size)| wire::listing_line(n, *size, media.samples.contains(n)))
            .collect())
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e)));
    match listed {
        Ok(body) => text(StatusCode::OK, body),
        Err(e) => {
            tracing::error!(dir = %state.media.dir.display(), error = %e, "cannot list the media directory");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot list the media directory\n",
            )
        }
    }
}

/// Decodes `%XX` escapes of a path segment; `None` for bad escapes or UTF-8.
pub fn percent_decode(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A file name a client may ask for: not empty, no `/`, no `..`, no NUL.
fn valid_name(name: &str) -> Option<&str> {
    (!name.is_empty() && !name.contains('/') && !name.contains("..") && !name.contains('\0'))
        .then_some(name)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("ts") => "video/mp2t",
        Some("mp4" | "m4s") => "video/mp4",
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("mpd") => "application/dash+xml",
        _ => "application/octet-stream",
    }
}

/// `GET /media/{name}` (and `HEAD`), with the request's headers.
pub async fn get(
    state: Arc<State>,
    raw_name: &str,
    headers: &HeaderMap,
    head: bool,
) -> Response<Body> {
    let Some(name) = percent_decode(raw_name) else {
        return text(StatusCode::BAD_REQUEST, "bad file name\n");
    };
    if valid_name(&name).is_none() {
        return text(
            StatusCode::BAD_REQUEST,
            "file names may not be empty or contain '/', '..' or NUL\n",
        );
    }
    let media = &state.media;
    let path = media.dir.join(&name);
    let direct = media.direct.load(Relaxed);
    let wants_direct = |m: &Metadata| direct && m.len() >= media.direct_min_size;
    // On the worker, as nginx does: on a local file system a `statx` (and
    // on a miss the open and `fstat`) take microseconds, less than the
    // blocking pool's two thread hops would cost.
    let opened = media.open_files.open(&path, wants_direct, open_media);
    let (file, size, validators, try_direct, found) = match opened {
        Ok((o, found)) => (o.file, o.size, o.validators, o.try_direct, found),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return text(StatusCode::NOT_FOUND, format!("no such file: {name}\n"))
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return text(StatusCode::FORBIDDEN, format!("cannot read {name}\n"))
        }
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot open a media file");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot open {name}\n"),
            );
        }
    };
    match found {
        Found::Open => media.counters.open_file_hits.increment(1),
        Found::Opened => {
            media.counters.open_file_misses.increment(1);
            if try_direct && !file.is_direct() {
                media.counters.fallbacks.increment(1);
                log_fallback(&name, "open");
            }
        }
    }

    let range = match conditional::evaluate(headers, &validators) {
        Verdict::Send { range: true } => headers.get(RANGE).and_then(|v| v.to_str().ok()),
        Verdict::Send { range: false } => None,
        Verdict::NotModified => {
            let mut r = Response::new(body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            validators.insert(r.headers_mut());
            return r;
        }
        Verdict::PreconditionFailed => {
            let mut r = text(
                StatusCode::PRECONDITION_FAILED,
                format!("{name} does not match the request's preconditions\n"),
            );
            validators.insert(r.headers_mut());
            return r;
        }
    };
    let (status, first, len) = match parse_range(range, size) {
        Wanted::Whole => (StatusCode::OK, 0, size),
        Wanted::Part { first, last } => (StatusCode::PARTIAL_CONTENT, first, last - first + 1),
        Wanted::Unsatisfiable => {
            let mut r = text(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("range not satisfiable: {name} has {size} bytes\n"),
            );
            let h = r.headers_mut();
            h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            h.insert(CONTENT_RANGE, header(format!("bytes */{size}")));
            return r;
        }
    };

    let mut reader = Reader::new(
        file,
        media.pool.quota(media.response_quota),
        first,
        len,
        Arc::clone(&state),
    );
    // The read mode after the first read (a read can refuse O_DIRECT where
    // the open did not; the reader then reopens the file buffered).
    let mut direct = reader.is_direct();
    let mut path = reader.read_path();
    let body = if head || len == 0 {
        body::empty()
    } else {
        // The first chunk is read before the headers go out, so a read error
        // is still a clean 5xx and the read-mode header tells the truth.
        let chunk = match reader.next().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(file = %name, error = %e, "media read failed");
                return if e.kind() == io::ErrorKind::OutOfMemory {
                    let mut r = text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "media buffers exhausted, try again\n",
                    );
                    r.headers_mut()
                        .insert("retry-after", HeaderValue::from_static("1"));
                    r
                } else {
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot read {name}\n"),
                    )
                };
            }
        };
        direct = reader.is_direct();
        path = reader.read_path();
        if reader.remaining() == 0 {
            body::full(chunk) // one chunk: no reader task, no channel
        } else {
            // One chunk waits for hyper; the reader reads the next once
            // hyper took it (`Reader::run`).
            let (tx, rx) = mpsc::channel(1);
            let turn = reader.turn();
            let guard = ReaderGuard::new(&media.readers);
            tokio::spawn(async move {
                reader.run(tx).await;
                drop(guard);
            });
            body::sized(chunk, rx, len, turn)
        }
    };

    let mode = if direct { "direct" } else { "buffered" };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_LENGTH, header(len.to_string()));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&name)));
    h.insert(READ_MODE_HEADER, HeaderValue::from_static(mode));
    h.insert(READ_PATH_HEADER, HeaderValue::from_static(path.label()));
    validators.insert(h);
    if status == StatusCode::PARTIAL_CONTENT {
        let last = first + len - 1;
        h.insert(
            CONTENT_RANGE,
            header(format!("bytes {first}-{last}/{size}")),
        );
    }
    r
}

/// Logs a file refusing `O_DIRECT`: the first at info level, the rest at
/// debug (the metric counts them all).
pub fn log_fallback(file: &str, at: &str) {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if LOGGED.swap(true, Relaxed) {
        tracing::debug!(file, "O_DIRECT refused at {at} (EINVAL); reading buffered");
    } else {
        tracing::info!(
            file,
            "O_DIRECT refused at {at} (EINVAL); reading buffered (further files at debug level)"
        );
    }
}

fn header(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("digits and ASCII make a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert!(valid_name("..").is_none());
        assert!(valid_name("a/b").is_none());
        assert!(valid_name("a\0b").is_none());
        assert!(valid_name("sample-1m.ts").is_some());
    }
}
