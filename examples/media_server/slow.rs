//! When a client that stops reading is cut off: the send timeout and the
//! minimum send rate, as plain bookkeeping over the instants a connection's
//! writes make progress or block (the socket wrapper in `conn.rs` feeds it).
//!
//! - **Send timeout**: a write blocked (the socket buffer full) without a
//!   byte going out for `timeout`.
//! - **Minimum send rate**: from the first blocked write of a response, the
//!   bytes sent over each window of `window` average at least `min_rate`
//!   per second. Only client-limited time counts: a window opens when a
//!   write blocks, is judged when a write blocks at or past its end, and
//!   closes when the connection has written everything it had (so the idle
//!   time between keep-alive requests never counts against the client).

use std::time::{Duration, Instant};

/// Why a client was cut off: the `reason` label of
/// `media_server_slow_clients_closed_total` and of the failed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slow {
    /// No byte went out for the send timeout.
    SendTimeout,
    /// Fewer bytes than the minimum rate over a window.
    MinSendRate,
}

impl Slow {
    pub fn label(self) -> &'static str {
        match self {
            Slow::SendTimeout => "send_timeout",
            Slow::MinSendRate => "min_send_rate",
        }
    }
}

/// The limits (`--send-timeout`, `--min-send-rate`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `None`: no send timeout.
    pub timeout: Option<Duration>,
    /// Bytes per second; 0: no minimum.
    pub min_rate: u64,
    /// The span the rate is averaged over.
    pub window: Duration,
}

/// One connection's write progress.
#[derive(Debug)]
pub struct SendWatch {
    limits: Limits,
    /// The first blocked write since a byte last went out.
    blocked_since: Option<Instant>,
    /// The open rate window: when it opened, bytes sent since.
    window: Option<(Instant, u64)>,
}

impl SendWatch {
    pub fn new(limits: Limits) -> SendWatch {
        SendWatch {
            limits,
            blocked_since: None,
            window: None,
        }
    }

    /// `n` bytes went out.
    pub fn wrote(&mut self, n: usize) {
        if n > 0 {
            self.blocked_since = None;
        }
        if let Some((_, bytes)) = &mut self.window {
            *bytes += n as u64;
        }
    }

    /// Everything the connection had is written: the client kept up.
    pub fn caught_up(&mut self) {
        self.window = None;
    }

    /// A write blocked at `now`: `Err` if the client is too slow, else the
    /// instant to look again if it stays blocked (`None`: never).
    pub fn blocked(&mut self, now: Instant) -> Result<Option<Instant>, Slow> {
        let since = *self.blocked_since.get_or_insert(now);
        let mut wake = None;
        if let Some(timeout) = self.limits.timeout {
            if now.duration_since(since) >= timeout {
                return Err(Slow::SendTimeout);
            }
            wake = Some(since + timeout);
        }
        if self.limits.min_rate > 0 {
            let (start, bytes) = *self.window.get_or_insert((now, 0));
            let elapsed = now.duration_since(start);
            let start = if elapsed >= self.limits.window {
                let due = self.limits.min_rate as f64 * elapsed.as_secs_f64();
                if (bytes as f64) < due {
                    return Err(Slow::MinSendRate);
                }
                self.window = Some((now, 0));
                now
            } else {
                start
            };
            let end = start + self.limits.window;
            wake = Some(wake.map_or(end, |w: Instant| w.min(end)));
        }
        Ok(wake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn watch(timeout: u64, min_rate: u64) -> SendWatch {
        SendWatch::new(Limits {
            timeout: (timeout > 0).then(|| S * timeout as u32),
            min_rate,
            window: S * 10,
        })
    }

    #[test]
    fn a_stalled_client_times_out() {
        let t0 = Instant::now();
        let mut w = watch(10, 0);
        assert_eq!(w.blocked(t0), Ok(Some(t0 + S * 10)));
        assert_eq!(w.blocked(t0 + S * 9), Ok(Some(t0 + S * 10)));
        assert_eq!(w.blocked(t0 + S * 10), Err(Slow::SendTimeout));
    }

    #[test]
    fn progress_restarts_the_timeout() {
        let t0 = Instant::now();
        let mut w = watch(10, 0);
        w.blocked(t0).unwrap();
        w.wrote(1);
        assert_eq!(w.blocked(t0 + S * 9), Ok(Some(t0 + S * 19)));
        // A zero-byte write is no progress.
        w.wrote(0);
        assert_eq!(w.blocked(t0 + S * 19), Err(Slow::SendTimeout));
    }

    #[test]
    fn a_trickle_is_below_the_minimum_rate() {
        let t0 = Instant::now();
        let mut w = watch(10, 16 << 10);
        assert_eq!(w.blocked(t0), Ok(Some(t0 + S * 10)));
        for s in 1..10 {
            w.wrote(4096); // 4 KiB/s: never stalled, too slow
            assert!(w.blocked(t0 + S * s).is_ok());
        }
        assert_eq!(w.blocked(t0 + S * 10), Err(Slow::MinSendRate));
    }

    #[test]
    fn a_client_at_the_rate_passes_window_after_window() {
        let t0 = Instant::now();
        let mut w = watch(0, 16 << 10);
        w.blocked(t0).unwrap();
        for s in 1..=30 {
            w.wrote(20 << 10);
            assert!(w.blocked(t0 + S * s).is_ok(), "second {s}");
        }
    }

    #[test]
    fn idle_time_between_responses_does_not_count() {
        let t0 = Instant::now();
        let mut w = watch(0, 16 << 10);
        w.blocked(t0).unwrap();
        w.wrote(1000);
        w.caught_up(); // the response went out; the connection idles
        assert_eq!(w.blocked(t0 + S * 60), Ok(Some(t0 + S * 70)));
    }

    #[test]
    fn off_means_never() {
        let t0 = Instant::now();
        let mut w = watch(0, 0);
        assert_eq!(w.blocked(t0), Ok(None));
        assert_eq!(w.blocked(t0 + S * 3600), Ok(None));
    }
}
