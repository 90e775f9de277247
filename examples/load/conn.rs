//! One keep-alive HTTP/1.1 client connection, and reading its answers.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{HOST, RANGE};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: http1::SendRequest<Empty<Bytes>>,
    authority: String,
}

impl Conn {
    pub async fn open(authority: &str) -> Result<Conn, String> {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake with {authority}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            authority: authority.to_owned(),
        })
    }

    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        range: Option<&str>,
    ) -> Result<Response<Incoming>, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("{path}: connection: {e}"))?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.authority);
        if let Some(r) = range {
            req = req.header(RANGE, r);
        }
        let req = req.body(Empty::new()).map_err(|e| format!("{path}: {e}"))?;
        self.sender
            .send_request(req)
            .await
            .map_err(|e| format!("{path}: {e}"))
    }
}

/// The next data chunk of a body (trailers skipped); `None` at its end.
pub async fn next_data(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

/// The whole body.
pub async fn read_all(body: &mut Incoming) -> Result<Vec<u8>, String> {
    let collected = body.collect().await.map_err(|e| e.to_string())?;
    Ok(collected.to_bytes().into())
}

/// A header's value, `""` when absent or not text.
pub fn header_str(r: &Response<Incoming>, name: impl hyper::header::AsHeaderName) -> &str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}
