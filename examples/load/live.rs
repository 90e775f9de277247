//! The live clients: follow a subscription and check every frame (TS
//! packet headers and continuity, the stamp, every byte: `wire::LiveChecker`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};

use crate::args::Args;
use crate::conn::header_str;
use crate::conn::{next_data, Conn};
use crate::totals::{Outcome, Totals};
use crate::wire::{self, FrameError, LiveChecker, FRAME_LEN};

/// Follows one live subscription to its end; checks every frame.
async fn live_stream(authority: &str, channel: &str, seconds: u64, totals: &Totals) -> Outcome {
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
    let rate = header_str(&resp, wire::FRAME_RATE_HEADER);
    let Some(rate) = rate
        .parse::<u32>()
        .ok()
        .filter(|r| (1..=wire::MAX_RATE).contains(r))
    else {
        return Outcome::Failed(format!("GET {path}: {} {rate:?}", wire::FRAME_RATE_HEADER));
    };
    let mut checker = LiveChecker::new(channel, rate);
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
            let seq = match checker.check(&frame) {
                Ok(s) => s,
                Err(FrameError::Backwards { from, to }) => {
                    return Outcome::Failed(format!(
                        "GET {path}: sequence went from {from} to {to}"
                    ))
                }
                Err(e) => {
                    return Outcome::Failed(format!(
                        "GET {path}: bad frame after sequence {last:?}: {e:?}"
                    ))
                }
            };
            frame.clear();
            totals.live_frames.fetch_add(1, Relaxed);
            if let Some(prev) = last.filter(|&p| seq > p + 1) {
                totals.live_gaps.fetch_add(1, Relaxed);
                totals.live_missing.fetch_add(seq - prev - 1, Relaxed);
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

pub async fn live_client(id: usize, args: Arc<Args>, totals: Arc<Totals>, deadline: Instant) {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::common::ts;
    use crate::fake::{self, Answer};
    use crate::wire::FrameWriter;

    /// 50 frames of channel `x` at 500 frames/s, passed through `damage`,
    /// served as `/live/x`; what the live check makes of them.
    fn check_stream(damage: impl FnOnce(&mut [u8])) -> (Outcome, u64) {
        let mut w = FrameWriter::live(500);
        let mut body = vec![0u8; 50 * FRAME_LEN];
        for (seq, f) in body.chunks_exact_mut(FRAME_LEN).enumerate() {
            w.write(f, wire::channel_id("x"), 100 + seq as u64);
        }
        damage(&mut body);
        let answer = Answer {
            headers: vec![(wire::FRAME_RATE_HEADER, "500".into())],
            body: body.into(),
        };
        let rt = fake::runtime();
        rt.block_on(async {
            let addr = fake::serve(HashMap::from([("/live/x".to_owned(), answer)])).await;
            let totals = Totals::default();
            let outcome = live_stream(&addr.to_string(), "x", 1, &totals).await;
            (outcome, totals.live_frames.load(Relaxed))
        })
    }

    #[test]
    fn a_clean_stream_passes() {
        let (outcome, frames) = check_stream(|_| {});
        assert!(matches!(outcome, Outcome::Ok), "{outcome:?}");
        assert_eq!(frames, 50);
    }

    #[test]
    fn a_damaged_packet_fails_the_stream() {
        let frame = 20 * FRAME_LEN;
        // A picture byte, a continuity counter, a PTS byte: each is caught,
        // at frame 20.
        for at in [
            frame + 900,
            frame + 4 * ts::PACKET + 3,
            frame + 2 * ts::PACKET + 24,
        ] {
            let (outcome, frames) = check_stream(|b| b[at] ^= 0x01);
            match outcome {
                Outcome::Failed(msg) => assert!(msg.contains("bad frame"), "{msg}"),
                other => panic!("damage at {at}: {other:?}"),
            }
            assert_eq!(frames, 20, "damage at {at}");
        }
    }
}
