//! A stand-in server for the load's own tests: fixed answers on a free
//! 127.0.0.1 port, so a test can hand the checks damaged media and see
//! them fail.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the stand-in answers for one path (query strings ignored).
#[derive(Debug, Clone)]
pub struct Answer {
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// Serves `answers` (404 for other paths) until the runtime ends.
pub async fn serve(answers: HashMap<String, Answer>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let answers = Arc::new(answers);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answers = Arc::clone(&answers);
            let svc = service_fn(move |req: Request<Incoming>| {
                let found = answers.get(req.uri().path()).cloned();
                async move {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    match found {
                        Some(a) => {
                            for (name, value) in a.headers {
                                r.headers_mut()
                                    .insert(name, value.parse().expect("header value"));
                            }
                            *r.body_mut() = Full::new(a.body);
                        }
                        None => *r.status_mut() = StatusCode::NOT_FOUND,
                    }
                    Ok::<_, Infallible>(r)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
        }
    });
    addr
}

/// A current-thread runtime for one test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
