//! The media clients: what to ask for (a [`Plan`]), and every byte of the
//! answer checked; plus the listing and the reference copies they start from.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::{CONTENT_LENGTH, CONTENT_RANGE};
use hyper::{Method, StatusCode};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::args::Args;
use crate::common::pattern;
use crate::conn::{header_str, next_data, read_all, Conn};
use crate::totals::{Outcome, Totals};
use crate::wire::{self, Content, FileChecker, Listed};

/// The longest a single media request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest file, and most bytes in all, fetched once as a reference for files
/// without the sample pattern.
const REFERENCE_FILE_MAX: u64 = 64 << 20;
const REFERENCE_TOTAL_MAX: u64 = 256 << 20;

/// A file to fetch, and how to check its bytes.
#[derive(Debug)]
pub struct Target {
    pub file: Listed,
    /// For files without the pattern: the whole file, fetched at the start.
    pub reference: Option<Vec<u8>>,
}

/// What a media request asks for and what must come back.
#[derive(Debug)]
pub struct Plan {
    pub range: Option<String>,
    pub status: StatusCode,
    pub first: u64,
    pub len: u64,
}

pub fn plan(rng: &mut impl Rng, size: u64) -> Plan {
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
    let roll = rng.random_range(0..100);
    let mut start = rng.random_range(0..size);
    if rng.random_range(0..5) == 0 {
        start -= start % page; // sometimes an aligned start
    }
    match roll {
        0..=34 => whole,
        35..=59 => {
            let last = (start + rng.random_range(0..MAX_SPAN.min(size - start))).min(size - 1);
            part(format!("bytes={start}-{last}"), start, last)
        }
        60..=74 => part(format!("bytes={start}-"), start, size - 1),
        75..=89 => {
            let n = 1 + rng.random_range(0..MAX_SPAN.min(size));
            part(format!("bytes=-{n}"), size - n, size - 1)
        }
        90..=93 => {
            // A suffix longer than the file, an end past it: both clamp.
            if rng.random_range(0..2) == 0 {
                part(
                    format!("bytes=-{}", size + 1 + rng.random_range(0..1000)),
                    0,
                    size - 1,
                )
            } else {
                let ask = size + rng.random_range(0..1 << 20);
                part(format!("bytes={start}-{ask}"), start, size - 1)
            }
        }
        _ => {
            let header = if rng.random_range(0..2) == 0 {
                format!("bytes={}-", size + rng.random_range(0..1000))
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
    let mut ts = (file.content == Content::MpegTs).then(|| FileChecker::new(&file.name));
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
        let wrong = if let Some(ts) = ts.as_mut() {
            ts.check(at, &data)
        } else if file.content == Content::Pattern {
            pattern::check_pattern(seed, at, &data)
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

pub async fn media_client(
    id: usize,
    args: Arc<Args>,
    files: Arc<Vec<Target>>,
    totals: Arc<Totals>,
    deadline: Instant,
) {
    let mut rng = SmallRng::seed_from_u64(args.seed ^ (id as u64).wrapping_mul(0x9E37_79B9));
    let mut conn: Option<Conn> = None;
    while Instant::now() < deadline {
        let target = &files[rng.random_range(0..files.len() as u64) as usize];
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

/// The listing, retried until the server answers or `wait` runs out.
pub async fn discover(args: &Args) -> Result<Vec<Listed>, String> {
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

/// Fetches the files that are not generated samples (within the limits) once,
/// as references for every later response.
pub async fn references(args: &Args, files: Vec<Listed>, totals: &Totals) -> Vec<Target> {
    let mut budget = REFERENCE_TOTAL_MAX;
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let mut reference = None;
        if file.content == Content::Other && file.size <= REFERENCE_FILE_MAX && file.size <= budget
        {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::fake::{self, Answer};
    use crate::wire::{FrameWriter, FILE_FRAME_LEN};

    /// A 3-frame `.ts` sample passed through `damage`, served whole as
    /// `/media/a.ts`; what the media check of a whole GET makes of it.
    fn fetch_sample(damage: impl FnOnce(&mut [u8])) -> Outcome {
        let mut w = FrameWriter::file();
        let mut body = vec![0u8; 3 * FILE_FRAME_LEN];
        for (k, f) in body.chunks_exact_mut(FILE_FRAME_LEN).enumerate() {
            w.write(f, wire::sample_seed("a.ts"), k as u64);
        }
        damage(&mut body);
        let size = body.len() as u64;
        let answer = Answer {
            headers: vec![("x-pagepool-read-mode", "direct".into())],
            body: body.into(),
        };
        let target = Target {
            file: Listed {
                name: "a.ts".into(),
                size,
                content: Content::MpegTs,
            },
            reference: None,
        };
        let plan = Plan {
            range: None,
            status: StatusCode::OK,
            first: 0,
            len: size,
        };
        fake::runtime().block_on(async {
            let addr = fake::serve(HashMap::from([("/media/a.ts".to_owned(), answer)])).await;
            let mut conn = Conn::open(&addr.to_string()).await.unwrap();
            fetch(&mut conn, &target, &plan, &Totals::default()).await
        })
    }

    #[test]
    fn a_damaged_ts_sample_fails_at_the_damaged_byte() {
        assert!(matches!(fetch_sample(|_| {}), Outcome::Ok));
        let at = FILE_FRAME_LEN + 5000;
        match fetch_sample(|b| b[at] ^= 0x40) {
            Outcome::Failed(msg) => {
                assert!(
                    msg.ends_with(&format!("wrong byte at file offset {at}")),
                    "{msg}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    /// Every plan asks for bytes inside the file (or expects 416), and its
    /// Range header says what the plan expects back.
    #[test]
    fn plans_stay_inside_the_file() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut seen = [0usize; 3];
        for size in [0, 1, 4095, 4096, 4097, 1 << 20, (33 << 20) + 123] {
            for _ in 0..2000 {
                let p = plan(&mut rng, size);
                match p.status {
                    StatusCode::OK => {
                        seen[0] += 1;
                        assert_eq!((p.range.as_deref(), p.first, p.len), (None, 0, size));
                    }
                    StatusCode::PARTIAL_CONTENT => {
                        seen[1] += 1;
                        assert!(p.len >= 1 && p.first + p.len <= size, "{p:?} of {size}");
                        assert!(p.range.as_deref().unwrap().starts_with("bytes="));
                    }
                    StatusCode::RANGE_NOT_SATISFIABLE => {
                        seen[2] += 1;
                        assert!(size > 0, "{p:?}");
                    }
                    other => panic!("{other}"),
                }
            }
        }
        assert!(seen.iter().all(|&n| n > 100), "{seen:?}");
    }
}
