//! What the clients add up, and how one request went.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

/// Failure and error messages kept for the report.
const KEEP_MESSAGES: usize = 12;

/// Everything the clients add up.
#[derive(Debug, Default)]
pub struct Totals {
    pub requests: AtomicU64,
    pub media_whole: AtomicU64,
    pub media_ranges: AtomicU64,
    pub media_416: AtomicU64,
    pub checks: AtomicU64,
    pub live_streams: AtomicU64,
    pub media_bytes: AtomicU64,
    pub unverified_bytes: AtomicU64,
    pub live_bytes: AtomicU64,
    pub live_frames: AtomicU64,
    pub live_gaps: AtomicU64,
    pub live_missing: AtomicU64,
    pub direct: AtomicU64,
    pub buffered: AtomicU64,
    pub errors: AtomicU64,
    pub failures: AtomicU64,
    pub messages: Mutex<Vec<String>>,
}

impl Totals {
    pub fn note(&self, what: &str, msg: String) {
        let mut m = self.messages.lock().expect("messages lock");
        if m.len() < KEEP_MESSAGES {
            m.push(format!("{what}: {msg}"));
        }
    }

    pub fn error(&self, msg: String) {
        self.errors.fetch_add(1, Relaxed);
        self.note("error", msg);
    }

    pub fn failure(&self, msg: String) {
        self.failures.fetch_add(1, Relaxed);
        self.note("FAILED", msg);
    }

    pub fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => {}
            Outcome::Error(m) => self.error(m),
            Outcome::Failed(m) => self.failure(m),
        }
    }
}

/// How one request went.
#[derive(Debug)]
pub enum Outcome {
    Ok,
    /// Transport trouble or a server error (5xx, connection reset, timeout).
    Error(String),
    /// The server answered, wrongly.
    Failed(String),
}
