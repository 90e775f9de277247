//! `GET /live/{channel}`: synthetic live channels, each a live MPEG-TS
//! (`video/mp2t`, H.264 video; players and `ffmpeg` open it). One producer
//! task per channel fills pooled buffers with frames (see `wire`: each a
//! self-contained, stamped piece of the stream), freezes each into a
//! `SharedBuffer`, wraps it once in `Bytes::from_owner`, and broadcasts it:
//! every subscriber sends the very same bytes, and the slot goes back to the
//! pool when the last subscriber (and the broadcast ring) let go of it.
//!
//! A subscriber that falls behind by more than the ring ([`BACKLOG`] frames)
//! **skips** to the oldest frame still there; it sees a jump in the sequence
//! numbers, as it does for frames the producer dropped because the pool was
//! at its cap. Both are counted in the metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use metrics::{Counter, Gauge};
use pagepool::BufferPool;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::body::{self, Body};
use crate::text;
use crate::wire::{self, FrameWriter, FRAME_LEN};

/// Frames the broadcast ring holds: how far a subscriber may fall behind
/// before it skips. A frame leaves the ring (and its buffer goes back to the
/// pool, once the bodies are done with it) when every subscriber has read it
/// or it is overwritten, so a channel pins at most `BACKLOG` frames.
pub const BACKLOG: usize = 256;
/// Frames queued per subscriber between its broadcast receiver and its
/// response body.
const QUEUE: usize = 16;
/// How often a producer wakes up to make its frames.
const TICK: Duration = Duration::from_millis(10);

/// The live channels.
#[derive(Debug)]
pub struct Live {
    pub pool: BufferPool,
    /// Frames per second per channel.
    pub rate: u32,
    channels: Mutex<HashMap<String, broadcast::Sender<Bytes>>>,
    shutdown: watch::Receiver<bool>,
    subscribers: AtomicUsize,
    counters: LiveCounters,
}

#[derive(Debug)]
struct LiveCounters {
    frames: Counter,
    dropped: Counter,
    skipped: Counter,
    subscribers: Gauge,
}

impl Live {
    pub fn new(pool: BufferPool, rate: u32, shutdown: watch::Receiver<bool>) -> Live {
        metrics::describe_counter!(
            "media_server_live_frames_total",
            metrics::Unit::Count,
            "Live frames produced and broadcast, all channels."
        );
        metrics::describe_counter!(
            "media_server_live_dropped_frames_total",
            metrics::Unit::Count,
            "Live frames not produced because the live pool was at its byte cap."
        );
        metrics::describe_counter!(
            "media_server_live_skipped_frames_total",
            metrics::Unit::Count,
            "Live frames lagging subscribers skipped (they fell more than the broadcast ring behind)."
        );
        metrics::describe_gauge!(
            "media_server_live_subscribers",
            metrics::Unit::Count,
            "Open live subscriptions."
        );
        Live {
            pool,
            rate,
            channels: Mutex::new(HashMap::new()),
            shutdown,
            subscribers: AtomicUsize::new(0),
            counters: LiveCounters {
                frames: metrics::counter!("media_server_live_frames_total"),
                dropped: metrics::counter!("media_server_live_dropped_frames_total"),
                skipped: metrics::counter!("media_server_live_skipped_frames_total"),
                subscribers: metrics::gauge!("media_server_live_subscribers"),
            },
        }
    }

    /// Channels with a producer, and their subscriber counts.
    pub fn channels(&self) -> Vec<(String, usize)> {
        let map = self.channels.lock().expect("channel map lock");
        let mut v: Vec<_> = map
            .iter()
            .map(|(name, tx)| (name.clone(), tx.receiver_count()))
            .collect();
        v.sort();
        v
    }

    /// Open subscriptions (response bodies not yet dropped).
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Relaxed)
    }

    /// A receiver of `name`'s frames, starting a producer for a new channel;
    /// `None` once shutting down.
    fn subscribe(self: &Arc<Self>, name: &str) -> Option<broadcast::Receiver<Bytes>> {
        if *self.shutdown.borrow() {
            return None;
        }
        // Producers leave the map under this lock when they see no receiver,
        // so a sender found here cannot be on its way out.
        let mut map = self.channels.lock().expect("channel map lock");
        if let Some(tx) = map.get(name) {
            return Some(tx.subscribe());
        }
        let (tx, rx) = broadcast::channel(BACKLOG);
        map.insert(name.to_owned(), tx.clone());
        tracing::info!(channel = name, "live channel started");
        tokio::spawn(Arc::clone(self).produce(name.to_owned(), tx));
        Some(rx)
    }

    /// Makes `rate` frames a second for `name` while it has subscribers.
    async fn produce(self: Arc<Self>, name: String, tx: broadcast::Sender<Bytes>) {
        let id = wire::channel_id(&name);
        let mut frames = FrameWriter::live(self.rate);
        let mut shutdown = self.shutdown.clone();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let per_tick = f64::from(self.rate) * TICK.as_secs_f64();
        let (mut seq, mut credit, mut dropped) = (0u64, 0.0f64, 0u64);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = crate::stopping(&mut shutdown) => break,
            }
            {
                let mut map = self.channels.lock().expect("channel map lock");
                if tx.receiver_count() == 0 {
                    map.remove(&name);
                    break;
                }
            }
            credit += per_tick;
            while credit >= 1.0 {
                credit -= 1.0;
                // A dropped frame still uses its sequence number: subscribers
                // see the gap.
                let s = seq;
                seq += 1;
                match self.pool.allocate_page_size_buffer(FRAME_LEN) {
                    Ok(mut buf) => {
                        frames.write(buf.as_max_slice_mut(), id, s);
                        buf.set_len(FRAME_LEN).expect("FRAME_LEN is the max_len");
                        self.counters.frames.increment(1);
                        // Err only when the last subscriber just left; the
                        // next tick notices.
                        let _ = tx.send(Bytes::from_owner(buf.freeze()));
                    }
                    Err(e) => {
                        dropped += 1;
                        self.counters.dropped.increment(1);
                        if dropped.is_power_of_two() {
                            tracing::warn!(channel = %name, dropped, error = %e, "live pool exhausted: dropping frames");
                        }
                    }
                }
            }
        }
        self.channels
            .lock()
            .expect("channel map lock")
            .remove(&name);
        tracing::info!(channel = %name, frames = seq, dropped, "live channel stopped");
    }
}

/// A channel name a client may use: 1 to 64 of `[A-Za-z0-9._-]`.
fn valid_channel(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `GET /live/{channel}[?seconds=N]`.
pub async fn get(live: Arc<Live>, channel: &str, query: Option<&str>) -> Response<Body> {
    if !valid_channel(channel) {
        return text(
            StatusCode::BAD_REQUEST,
            "channel names are 1 to 64 of A-Z a-z 0-9 . _ -\n",
        );
    }
    let seconds = match crate::query_param(query, "seconds").map(str::parse::<u64>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "seconds must be a number\n"),
    };
    let Some(rx) = live.subscribe(channel) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    };
    let (tx, body_rx) = mpsc::channel(QUEUE);
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    tokio::spawn(forward(Arc::clone(&live), rx, tx, deadline));

    let mut r = Response::new(body::stream(None, body_rx));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-pagepool-frame-bytes", HeaderValue::from(FRAME_LEN));
    h.insert(wire::FRAME_RATE_HEADER, HeaderValue::from(live.rate));
    h.insert("x-pagepool-lagged", HeaderValue::from_static("skip"));
    r
}

/// Moves one subscriber's frames from the broadcast ring into its body,
/// until the deadline, the channel's end, or the client leaving.
async fn forward(
    live: Arc<Live>,
    mut rx: broadcast::Receiver<Bytes>,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    deadline: Option<Instant>,
) {
    live.subscribers.fetch_add(1, Relaxed);
    live.counters.subscribers.increment(1.0);
    let until = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    loop {
        let frame = tokio::select! {
            r = rx.recv() => r,
            () = &mut until => break,
            () = tx.closed() => break,
        };
        match frame {
            Ok(b) => {
                let sent = tokio::select! {
                    r = tx.send(Ok(b)) => r.is_ok(),
                    () = &mut until => false,
                };
                if !sent {
                    break;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => live.counters.skipped.increment(n),
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    live.subscribers.fetch_sub(1, Relaxed);
    live.counters.subscribers.decrement(1.0);
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::process::Command;

    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::Request;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;
    use crate::samples::tests::{check_ts, ffprobe, run_bounded, tool};

    /// Serves `/live/{channel}` of `live` on a free 127.0.0.1 port, for as
    /// long as the runtime runs.
    async fn serve(live: Arc<Live>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let live = Arc::clone(&live);
                let svc = service_fn(move |req: Request<Incoming>| {
                    let live = Arc::clone(&live);
                    async move {
                        let channel = req.uri().path().strip_prefix("/live/").unwrap_or("");
                        let query = req.uri().query();
                        Ok::<_, Infallible>(get(live, channel, query).await)
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
            }
        });
        addr
    }

    /// `ffprobe` finds H.264 in MPEG-TS on `/live/{channel}`, and `ffmpeg -i
    /// URL -c copy -t 5 out.ts` records it: every access unit in `out.ts` is
    /// the one its stamp names, in order.
    #[test]
    fn ffprobe_and_ffmpeg_open_the_live_stream() {
        let (Some(_), Some(ffmpeg)) = (tool("ffprobe"), tool("ffmpeg")) else {
            return;
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (stop, stopped) = watch::channel(false);
        let pool = BufferPool::builder()
            .name("live-test")
            .max_bytes(16 << 20)
            .max_buffer_size(FRAME_LEN)
            .build()
            .unwrap();
        let live = Arc::new(Live::new(pool, 500, stopped));
        let addr = rt.block_on(serve(Arc::clone(&live)));

        // Both ends are bounded: the server ends each stream after ?seconds.
        let probed = ffprobe(&format!("http://{addr}/live/probe?seconds=20"));
        for fact in [
            "codec_name=h264",
            "width=32",
            "height=16",
            "r_frame_rate=500/1",
            "format_name=mpegts",
        ] {
            assert!(
                probed.lines().any(|l| l == fact),
                "{fact} not in:\n{probed}"
            );
        }

        let out_ts =
            std::env::temp_dir().join(format!("pagepool-live-test-{}.ts", std::process::id()));
        let out = run_bounded(
            Command::new(ffmpeg)
                .args(["-v", "error", "-y", "-i"])
                .arg(format!("http://{addr}/live/record?seconds=30"))
                .args(["-c", "copy", "-t", "5"])
                .arg(&out_ts),
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "ffmpeg: {stderr}"
        );
        let data = std::fs::read(&out_ts).unwrap();
        std::fs::remove_file(&out_ts).unwrap();
        let sum = check_ts(&data, &mut FrameWriter::live(500), false);
        // In order, and 5 s of a 500 frames/s stream by their PTS. (A frame
        // may be missing only if ffmpeg fell the whole ring behind.)
        let seqs: Vec<u64> = sum.stamps.iter().map(|s| s.seq).collect();
        assert!(sum
            .stamps
            .iter()
            .all(|s| s.id == wire::channel_id("record")));
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "out of order: {seqs:?}"
        );
        let span = seqs[seqs.len() - 1] - seqs[0] + 1;
        assert!((2400..=2600).contains(&span), "{span} frames");
        println!("out.ts: {} frames of {span}", seqs.len());
        let _ = stop.send(true);
    }
}
