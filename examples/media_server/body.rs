//! The one response body type, from `http-body-util`: nothing, a fixed
//! text, or a stream of pooled chunks arriving over a bounded channel (of
//! unknown length, or of a known one: [`sized`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::read_queue::Turn;

/// A response body.
pub type Body = BoxBody<Bytes, io::Error>;

/// The chunks of a streamed body; an `Err` aborts the response (the client
/// sees the connection close before `Content-Length` bytes).
pub type Chunks = mpsc::Receiver<io::Result<Bytes>>;

/// No bytes.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body held in memory.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// `first`, then whatever arrives on `rx` until it closes. The length, when
/// known, goes out as the response's `Content-Length` header; without one
/// hyper uses chunked encoding.
pub fn stream(first: Option<Bytes>, mut rx: Chunks) -> Body {
    let rest = stream::poll_fn(move |cx| rx.poll_recv(cx));
    let chunks = stream::iter(first.map(Ok)).chain(rest);
    BodyExt::boxed(StreamBody::new(chunks.map(|chunk| chunk.map(Frame::data))))
}

/// `first`, then the chunks on `rx`: `len` bytes in all. Its end is known
/// (hyper needs no further poll once the last byte is out), and a channel
/// that closes short of `len` is an error, so the response is aborted
/// rather than ended early. `turn` learns when hyper waits for a chunk
/// (its read is then urgent: `read_queue.rs`).
pub fn sized(first: Bytes, rx: Chunks, len: u64, turn: Arc<Turn>) -> Body {
    BodyExt::boxed(Sized {
        first: Some(first),
        rx,
        remaining: len,
        turn,
    })
}

struct Sized {
    first: Option<Bytes>,
    rx: Chunks,
    remaining: u64,
    turn: Arc<Turn>,
}

impl HttpBody for Sized {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let chunk = match self.first.take() {
            Some(c) => c,
            None => match self.rx.poll_recv(cx) {
                Poll::Pending => {
                    self.turn.set_wanted(true);
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(c))) => c,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    return Poll::Ready(Some(Err(io::Error::other(
                        "the reader stopped before the end of the response",
                    ))))
                }
            },
        };
        self.turn.set_wanted(false);
        self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
