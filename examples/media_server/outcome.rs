//! Whether each response went out whole: a response counts as answered
//! (`media_server_requests_total{route,status}`) only once its last byte
//! was written to the socket, and as failed
//! (`media_server_responses_failed_total{route,reason}`) when its
//! connection ended before that.
//!
//! A connection's [`Exchange`] follows its responses: [`Tracked`] (the body
//! hyper sends) marks a response's body as all handed over; the socket
//! wrapper reports each flush that left nothing unwritten (hyper flushes
//! its buffer whole before it flushes the socket), which confirms every
//! response handed over before it; what is left when the connection ends
//! failed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::StatusCode;
use metrics::Counter;

use crate::body::Body;
use crate::slow::Slow;

/// One response not yet confirmed written.
#[derive(Debug)]
struct Sending {
    id: u64,
    route: &'static str,
    status: StatusCode,
    /// Every body byte is with hyper.
    handed_over: bool,
    /// Why its body failed, if it did.
    failed: Option<&'static str>,
}

#[derive(Debug, Default)]
struct Responses {
    next_id: u64,
    /// In the order hyper sends them (HTTP/1.1: one at a time, a pipelined
    /// one starting while the last bytes of the one before are flushed).
    sending: Vec<Sending>,
    /// Set when the connection was cut off for a slow client.
    cut: Option<Slow>,
}

/// One connection's responses in flight.
#[derive(Debug, Default)]
pub struct Exchange(Mutex<Responses>);

impl Exchange {
    fn lock(&self) -> MutexGuard<'_, Responses> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows the response `body` of `route`; `handed_over` when it has no
    /// body to send (`HEAD`, empty).
    pub fn track(
        self: &Arc<Self>,
        route: &'static str,
        status: StatusCode,
        body: Body,
        handed_over: bool,
    ) -> Tracked {
        let mut r = self.lock();
        let id = r.next_id;
        r.next_id += 1;
        let handed_over = handed_over || body.is_end_stream();
        r.sending.push(Sending {
            id,
            route,
            status,
            handed_over,
            failed: None,
        });
        Tracked {
            body,
            exchange: Arc::clone(self),
            id,
            settled: handed_over,
        }
    }

    fn settle(&self, id: u64, failed: Option<&'static str>) {
        let mut r = self.lock();
        if let Some(s) = r.sending.iter_mut().find(|s| s.id == id) {
            s.handed_over = failed.is_none();
            s.failed = failed;
        }
    }

    /// Everything hyper had was written: the responses handed over are
    /// answered. Returns whether none is left in flight.
    pub fn flushed(&self) -> bool {
        let mut r = self.lock();
        if r.sending.is_empty() {
            return true;
        }
        r.sending.retain(|s| {
            if s.handed_over {
                count_answered(s.route, s.status);
            }
            !s.handed_over
        });
        r.sending.is_empty()
    }

    /// The connection is being cut off for a slow client.
    pub fn cut_off(&self, why: Slow) {
        self.lock().cut = Some(why);
    }

    /// The connection ended: what is still in flight failed.
    pub fn close(&self) {
        let mut r = self.lock();
        let cut = r.cut.map(Slow::label);
        for s in r.sending.drain(..) {
            let reason = s.failed.or(cut).unwrap_or("client_gone");
            metrics::counter!("media_server_responses_failed_total", "route" => s.route, "reason" => reason)
                .increment(1);
        }
    }
}

/// Counts a response of `route` with `status` written whole in
/// `media_server_requests_total`, through a handle looked up once per
/// thread and pair (the registry's lookup hashes the labels, and the
/// status label is a `String`).
fn count_answered(route: &'static str, status: StatusCode) {
    thread_local! {
        static HANDLES: RefCell<HashMap<(&'static str, StatusCode), Counter>> =
            RefCell::default();
    }
    HANDLES.with_borrow_mut(|handles| {
        handles
            .entry((route, status))
            .or_insert_with(|| {
                metrics::counter!("media_server_requests_total", "route" => route, "status" => status.as_str().to_owned())
            })
            .increment(1);
    });
}

/// A response body that tells its [`Exchange`] when it is all handed over
/// (or failed).
pub struct Tracked {
    body: Body,
    exchange: Arc<Exchange>,
    id: u64,
    settled: bool,
}

/// The `reason` of a body that failed with `e`.
fn failure_reason(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::TimedOut => "pool_wait",
        io::ErrorKind::UnexpectedEof => "file_shrank",
        _ => "read_error",
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if !self.settled {
            let outcome = match &frame {
                None => Some(None),
                Some(Ok(_)) if self.body.is_end_stream() => Some(None),
                Some(Ok(_)) => None,
                Some(Err(e)) => Some(Some(failure_reason(e))),
            };
            if let Some(failed) = outcome {
                self.settled = true;
                self.exchange.settle(self.id, failed);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
