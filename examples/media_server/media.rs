//! `GET /media` and `GET /media/{name}`: files read with `O_DIRECT` into
//! pooled page-aligned buffers, streamed with Range support.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderValue, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use metrics::Counter;
use pagepool::{BufferPool, PageBuffer, Quota};
use tokio::sync::mpsc;

use crate::body::Body;
use crate::wire;
use crate::{text, State};

/// The sample files made when no `--media-dir` is given: name and size. The
/// last one has an odd size, so its tail is a partial page.
pub const SAMPLES: [(&str, u64); 4] = [
    ("sample-tiny.bin", 1000),
    ("sample-1m.ts", 1 << 20),
    ("sample-8m.ts", 8 << 20),
    ("sample-33m.bin", (33 << 20) + 123),
];

/// Chunks read ahead of the client, per response (on top of the one being
/// read and the one hyper is writing).
const READ_AHEAD: usize = 2;

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
    pub pool: BufferPool,
    /// Bytes per read; a multiple of the page size.
    pub chunk: usize,
    /// Whether to try `O_DIRECT` (the startup probe did not rule it out).
    pub direct: AtomicBool,
    /// How long a read waits for the pool to have room before giving up.
    pub pool_wait: Duration,
    /// Slot bytes one response may hold (its quota of the media pool).
    pub response_quota: usize,
    /// Reader tasks streaming a response right now.
    pub readers: Arc<AtomicUsize>,
    pub counters: MediaCounters,
}

/// Metric handles, registered once.
#[derive(Debug)]
pub struct MediaCounters {
    pub read_direct: Counter,
    pub read_buffered: Counter,
    pub pool_waits: Counter,
    pub fallbacks: Counter,
}

impl MediaCounters {
    pub fn register() -> MediaCounters {
        metrics::describe_counter!(
            "media_server_read_bytes_total",
            metrics::Unit::Bytes,
            "Bytes read from media files into pooled buffers, by read mode (direct: O_DIRECT; buffered: page cache)."
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
            read_direct: metrics::counter!("media_server_read_bytes_total", "mode" => "direct"),
            read_buffered: metrics::counter!("media_server_read_bytes_total", "mode" => "buffered"),
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

/// Writes the [`SAMPLES`] into a fresh directory under the system temp dir.
pub fn generate_samples() -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("pagepool-media-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut block = vec![0u8; 1 << 20];
    for (name, size) in SAMPLES {
        let seed = wire::sample_seed(name);
        let mut out = BufWriter::new(File::create(dir.join(name))?);
        let mut at = 0u64;
        while at < size {
            let n = (size - at).min(block.len() as u64) as usize;
            wire::fill_pattern(seed, at, &mut block[..n]);
            out.write_all(&block[..n])?;
            at += n as u64;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    Ok(dir)
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
    let file = match open_direct(path) {
        Ok(f) => f,
        Err(e) if is_einval(&e) => return Probe::Off(format!("open of {name} refused: {e}")),
        Err(e) => return Probe::Unknown(format!("cannot open {name}: {e}")),
    };
    let page = pagepool::page_size();
    let mut buf = match pool.allocate_page_size_buffer(page) {
        Ok(b) => b,
        Err(e) => return Probe::Unknown(format!("no buffer for the probe: {e}")),
    };
    match file.read_at(buf.as_max_slice_mut(), 0) {
        Ok(_) => Probe::On(format!("probed with {name}")),
        Err(e) if is_einval(&e) => Probe::Off(format!("read of {name} refused: {e}")),
        Err(e) => Probe::Unknown(format!("cannot read {name}: {e}")),
    }
}

fn is_einval(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Opens a media file: with `O_DIRECT` when `try_direct` and the file system
/// accepts it, else plain. Returns the file, whether it is direct, its size.
fn open_media(path: &Path, try_direct: bool) -> io::Result<(File, bool, u64)> {
    // Only regular files: opening a FIFO would block, a directory is no media.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "not a regular file",
        ));
    }
    let (file, direct) = if try_direct {
        match open_direct(path) {
            Ok(f) => (f, true),
            Err(e) if is_einval(&e) => (File::open(path)?, false),
            Err(e) => return Err(e),
        }
    } else {
        (File::open(path)?, false)
    };
    let size = file.metadata()?.len();
    Ok((file, direct, size))
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

/// What a `Range` header asks of a file of some size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// No (usable) range: the whole file, 200.
    Whole,
    /// Bytes `first..=last`, 206.
    Part { first: u64, last: u64 },
    /// 416.
    Unsatisfiable,
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a single-range `Range` header (`bytes=a-b`, `bytes=a-`,
/// `bytes=-n`). Anything else (other units, several ranges, bad syntax) is
/// ignored, as RFC 9110 allows: the whole file is served.
pub fn parse_range(header: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Wanted::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Some(n) = digits(b) else {
            return Wanted::Whole;
        };
        if n == 0 || size == 0 {
            return Wanted::Unsatisfiable;
        }
        let n = n.min(size);
        return Wanted::Part {
            first: size - n,
            last: size - 1,
        };
    }
    let Some(first) = digits(a) else {
        return Wanted::Whole;
    };
    let last = if b.is_empty() {
        u64::MAX
    } else {
        match digits(b) {
            Some(last) if last >= first => last,
            _ => return Wanted::Whole,
        }
    };
    if first >= size {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part {
        first,
        last: last.min(size - 1),
    }
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

/// `GET /media/{name}` (and `HEAD`).
pub async fn get(
    state: Arc<State>,
    raw_name: &str,
    range: Option<&str>,
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
    let try_direct = media.direct.load(Relaxed);
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || open_media(&path, try_direct))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)))
    };
    let (file, direct, size) = match opened {
        Ok(o) => o,
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
    if try_direct && !direct {
        media.counters.fallbacks.increment(1);
        log_fallback(&name, "open");
    }

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

    let mut reader = Reader {
        path,
        file: Arc::new(file),
        direct,
        quota: media.pool.quota(media.response_quota),
        chunk: media.chunk,
        page: pagepool::page_size() as u64,
        pos: 0,
        skip: 0,
        remaining: len,
        pool_wait: media.pool_wait,
        state: Arc::clone(&state),
    };
    // Read from the page boundary at or below the first byte; the chunk is
    // sliced past the bytes before it.
    reader.pos = first - first % reader.page;
    reader.skip = (first - reader.pos) as usize;

    // The read mode after the first read (a read can refuse O_DIRECT where
    // the open did not; the reader then reopens the file buffered).
    let mut direct = reader.direct;
    let body = if head || len == 0 {
        Body::empty()
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
        direct = reader.direct;
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        if reader.remaining > 0 {
            let guard = ReaderGuard::new(&media.readers);
            tokio::spawn(async move {
                reader.run(tx).await;
                drop(guard);
            });
        }
        Body::stream(Some(chunk), rx, Some(len))
    };

    let mode = if direct { "direct" } else { "buffered" };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_LENGTH, header(len.to_string()));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&name)));
    h.insert(READ_MODE_HEADER, HeaderValue::from_static(mode));
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
fn log_fallback(file: &str, at: &str) {
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

/// Counts a live reader task.
struct ReaderGuard(Arc<AtomicUsize>);

impl ReaderGuard {
    fn new(n: &Arc<AtomicUsize>) -> ReaderGuard {
        n.fetch_add(1, Relaxed);
        ReaderGuard(Arc::clone(n))
    }
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Reads one response's bytes, chunk by chunk, on the blocking pool.
struct Reader {
    path: PathBuf,
    file: Arc<File>,
    direct: bool,
    /// This response's share of the media pool.
    quota: Quota,
    chunk: usize,
    page: u64,
    /// The next offset to read: page-aligned.
    pos: u64,
    /// Bytes at the start of the next chunk that precede the range.
    skip: usize,
    /// Bytes of the range not yet produced.
    remaining: u64,
    pool_wait: Duration,
    state: Arc<State>,
}

impl Reader {
    /// Streams the rest into `tx` until done, failed, or the client left.
    async fn run(mut self, tx: mpsc::Sender<io::Result<Bytes>>) {
        while self.remaining > 0 {
            let item = tokio::select! {
                item = self.next() => item,
                // The client went away: stop reading.
                () = tx.closed() => return,
            };
            let failed = item.is_err();
            if let Err(e) = &item {
                tracing::warn!(file = %self.path.display(), error = %e, "media read failed mid-stream; aborting the response");
            }
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    }

    /// A pooled buffer, counted against this response's quota: waits
    /// (without holding a worker thread) while the response holds its whole
    /// quota (its client is slow) or the pool is at its cap, up to
    /// `pool_wait`.
    async fn buffer(&self, size: usize) -> io::Result<PageBuffer> {
        match self.quota.allocate_page_size_buffer(size) {
            Ok(buf) => return Ok(buf),
            Err(pagepool::Error::Exhausted { .. } | pagepool::Error::QuotaExceeded { .. }) => {
                self.state.media.counters.pool_waits.increment(1);
            }
            Err(e) => return Err(e.into()),
        }
        match tokio::time::timeout(
            self.pool_wait,
            self.quota.allocate_page_size_buffer_async(size),
        )
        .await
        {
            Ok(got) => got.map_err(io::Error::from),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no pool room for {size} bytes within {:?}", self.pool_wait),
            )),
        }
    }

    /// The next chunk of the range.
    async fn next(&mut self) -> io::Result<Bytes> {
        let want_total = self.skip as u64 + self.remaining;
        let want = want_total.div_ceil(self.page) * self.page;
        let want = want.min(self.chunk as u64) as usize;
        let mut buf = self.buffer(want).await?;
        let (buf, n) = loop {
            let file = Arc::clone(&self.file);
            let (pos, direct, page) = (self.pos, self.direct, self.page as usize);
            let (b, res) = tokio::task::spawn_blocking(move || {
                let res = read_chunk(&file, &mut buf, pos, direct, page);
                (buf, res)
            })
            .await
            .map_err(io::Error::other)?;
            buf = b;
            match res {
                Ok(n) => break (buf, n),
                Err(e) if self.direct && is_einval(&e) => {
                    // This file system took the O_DIRECT open but refuses the
                    // read: reopen buffered and read the same chunk again.
                    log_fallback(&self.path.display().to_string(), "read");
                    self.state.media.counters.fallbacks.increment(1);
                    let path = self.path.clone();
                    let f = tokio::task::spawn_blocking(move || File::open(path))
                        .await
                        .map_err(io::Error::other)??;
                    self.file = Arc::new(f);
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        };
        if self.direct {
            self.state.media.counters.read_direct.increment(n as u64);
        } else {
            self.state.media.counters.read_buffered.increment(n as u64);
        }
        if n <= self.skip {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than when the response started",
            ));
        }
        let take = ((n - self.skip) as u64).min(self.remaining) as usize;
        let mut buf = buf;
        buf.set_len(self.skip + take).map_err(io::Error::from)?;
        let shared = buf.freeze();
        let shared = if self.skip > 0 {
            shared.slice(self.skip..)
        } else {
            shared
        };
        self.pos += want as u64;
        self.skip = 0;
        self.remaining -= take as u64;
        Ok(Bytes::from_owner(shared))
    }
}

/// Fills `buf` (all of `max_len()`) from `pos`; returns the bytes read, short
/// only at the end of the file.
fn read_chunk(
    file: &File,
    buf: &mut PageBuffer,
    pos: u64,
    direct: bool,
    page: usize,
) -> io::Result<usize> {
    let space = buf.as_max_slice_mut();
    let mut filled = 0;
    while filled < space.len() {
        match file.read_at(&mut space[filled..], pos + filled as u64) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                // With O_DIRECT a read that stops off a page boundary is the
                // file's tail; another read from there would be unaligned.
                if direct && !filled.is_multiple_of(page) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use Wanted::*;
        assert_eq!(parse_range(None, 10), Whole);
        assert_eq!(
            parse_range(Some("bytes=2-4"), 10),
            Part { first: 2, last: 4 }
        );
        assert_eq!(
            parse_range(Some("bytes=2-"), 10),
            Part { first: 2, last: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Part { first: 7, last: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            Part { first: 0, last: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-100"), 10),
            Part { first: 5, last: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=+1-2"), 10), Whole);
    }

    #[test]
    fn names() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert!(valid_name("..").is_none());
        assert!(valid_name("a/b").is_none());
        assert!(valid_name("a\0b").is_none());
        assert!(valid_name("sample-1m.ts").is_some());
    }
}
