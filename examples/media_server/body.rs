//! The one response body type, from `http-body-util`: nothing, a fixed
//! text, or a stream of pooled chunks arriving over a bounded channel.

use std::io;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

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
