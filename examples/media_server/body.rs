//! The one response body type: nothing, a fixed text, or a stream of pooled
//! chunks arriving over a bounded channel.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// The chunks of a streamed body; an `Err` aborts the response (the client
/// sees the connection close before `Content-Length` bytes).
pub type Chunks = mpsc::Receiver<io::Result<Bytes>>;

/// A response body.
#[derive(Debug)]
pub struct Body {
    /// Sent before anything from `rx`.
    first: Option<Bytes>,
    rx: Option<Chunks>,
    /// Bytes still to come when the length is known (it then goes out as
    /// `Content-Length`); `None` for live streams (chunked encoding).
    remaining: Option<u64>,
}

impl Body {
    /// No bytes.
    pub fn empty() -> Body {
        Body {
            first: None,
            rx: None,
            remaining: Some(0),
        }
    }

    /// A body held in memory.
    pub fn full(data: impl Into<Bytes>) -> Body {
        let data = data.into();
        Body {
            remaining: Some(data.len() as u64),
            first: (!data.is_empty()).then_some(data),
            rx: None,
        }
    }

    /// `first`, then whatever arrives on `rx` until it closes; `len` is the
    /// total when known.
    pub fn stream(first: Option<Bytes>, rx: Chunks, len: Option<u64>) -> Body {
        Body {
            first,
            rx: Some(rx),
            remaining: len,
        }
    }

    fn sent(&mut self, n: usize) {
        if let Some(r) = &mut self.remaining {
            *r = r.saturating_sub(n as u64);
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(b) = this.first.take() {
            this.sent(b.len());
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        let Some(rx) = this.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(rx.poll_recv(cx)) {
            Some(Ok(b)) => {
                this.sent(b.len());
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Some(Err(e)) => {
                this.rx = None;
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.rx = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && (self.rx.is_none() || self.remaining == Some(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
