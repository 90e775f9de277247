//! One HTTP/1.1 connection: hyper over a socket wrapper that cuts off
//! clients that stop reading (`slow.rs`) and tells the connection's
//! [`Exchange`] when everything was written (`outcome.rs`).
//!
//! Memory a stalled client holds: hyper takes a body chunk only when less
//! than [`WRITE_BUFFER`] bytes of what it has are unwritten, and the reader
//! reads one chunk ahead (`reader.rs`), so a stalled response holds two or
//! three chunks, within its quota (`--response-quota`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::outcome::Exchange;
use crate::slow::{Limits, SendWatch, Slow};
use crate::{route, stopping, State};

/// hyper's buffer bound (`http1::Builder::max_buf_size`): the request head
/// it reads, and the unwritten bytes below which it takes the next body
/// chunk. Small, so a stalled client's hyper holds one chunk, not several.
pub const WRITE_BUFFER: usize = 16 << 10;

/// A `TcpStream` that fails a write blocked past the client's limits.
struct Watched {
    stream: TcpStream,
    watch: SendWatch,
    /// Armed while a write is blocked and a limit applies.
    wake: Pin<Box<Sleep>>,
    exchange: Arc<Exchange>,
}

impl Watched {
    fn new(stream: TcpStream, limits: Limits, exchange: Arc<Exchange>) -> Watched {
        Watched {
            stream,
            watch: SendWatch::new(limits),
            wake: Box::pin(tokio::time::sleep(Duration::ZERO)),
            exchange,
        }
    }

    fn write_with(
        &mut self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        loop {
            match write(Pin::new(&mut self.stream), cx) {
                Poll::Ready(Ok(n)) => {
                    self.watch.wrote(n);
                    return Poll::Ready(Ok(n));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            match self.watch.blocked(Instant::now().into_std()) {
                Err(slow) => return Poll::Ready(Err(self.cut_off(slow))),
                Ok(None) => return Poll::Pending,
                Ok(Some(at)) => {
                    let at = Instant::from_std(at);
                    if self.wake.deadline() != at {
                        self.wake.as_mut().reset(at);
                    }
                    if self.wake.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // The limit is due: try the write once more, then judge.
                }
            }
        }
    }

    /// Counts and logs the cut-off, and makes the close a reset, so the
    /// kernel drops the unsent bytes at once instead of probing a closed
    /// window for them.
    fn cut_off(&mut self, slow: Slow) -> io::Error {
        static LOGGED: AtomicBool = AtomicBool::new(false);
        metrics::counter!("media_server_slow_clients_closed_total", "reason" => slow.label())
            .increment(1);
        let peer = self.stream.peer_addr().ok();
        if LOGGED.swap(true, Relaxed) {
            tracing::debug!(?peer, reason = slow.label(), "closing a slow client");
        } else {
            tracing::warn!(
                ?peer,
                reason = slow.label(),
                "closing a slow client (further ones at debug level; \
                 media_server_slow_clients_closed_total counts them)"
            );
        }
        self.exchange.cut_off(slow);
        let _ = self.stream.set_zero_linger();
        io::Error::new(io::ErrorKind::TimedOut, slow.label())
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_with(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_with(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }

    /// True, as the socket's: hyper then sends pooled chunks with `writev`
    /// instead of copying them into a buffer of its own.
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.stream).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            // hyper flushes the socket only once its own buffer is written.
            if self.exchange.flushed() {
                self.watch.caught_up();
            }
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Counts an open connection; at its end, fails what it left unsent (also
/// when shutdown aborts its task).
struct Open {
    state: Arc<State>,
    exchange: Arc<Exchange>,
}

impl Open {
    fn new(state: &Arc<State>) -> Open {
        state.connections.fetch_add(1, Relaxed);
        metrics::gauge!("media_server_connections").increment(1.0);
        Open {
            state: Arc::clone(state),
            exchange: Arc::default(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.exchange.close();
        self.state.connections.fetch_sub(1, Relaxed);
        metrics::gauge!("media_server_connections").decrement(1.0);
    }
}

/// Serves one connection until the client closes it, it fails, or shutdown.
pub async fn connection(stream: TcpStream, state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let open = Open::new(&state);
    let io = Watched::new(stream, state.send_limits, Arc::clone(&open.exchange));
    let svc = {
        let state = Arc::clone(&state);
        let exchange = Arc::clone(&open.exchange);
        service_fn(move |req| route(Arc::clone(&state), Arc::clone(&exchange), req))
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(WRITE_BUFFER)
        .writev(true);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopping(&mut shutdown) => {
            // Finish the response in flight, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
    drop(open);
}
