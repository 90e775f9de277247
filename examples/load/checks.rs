//! A few requests with known answers, before the load starts.

use std::sync::atomic::Ordering::Relaxed;

use hyper::header::{CONTENT_LENGTH, CONTENT_RANGE};
use hyper::{Method, StatusCode};

use crate::args::Args;
use crate::conn::{header_str, read_all, Conn};
use crate::totals::Totals;
use crate::wire::Listed;

/// A few requests with known answers.
pub async fn protocol_checks(args: &Args, file: &Listed, totals: &Totals) -> Result<(), String> {
    let mut conn = Conn::open(&args.authority).await?;
    let name = &file.name;
    let size = file.size;
    let cases: Vec<(Method, String, Option<String>, StatusCode)> = vec![
        (
            Method::GET,
            "/media/pagepool-load-no-such-file".into(),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            format!("/media/..%2F{name}"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/media/a%00b".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/live/bad%20name".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (Method::HEAD, format!("/media/{name}"), None, StatusCode::OK),
        (
            Method::GET,
            format!("/media/{name}"),
            Some(format!("bytes={size}-")),
            StatusCode::RANGE_NOT_SATISFIABLE,
        ),
    ];
    for (method, path, range, want) in cases {
        let what = format!(
            "check {method} {path}{}",
            range
                .as_deref()
                .map(|r| format!(" Range: {r}"))
                .unwrap_or_default()
        );
        let mut resp = conn.send(method.clone(), &path, range.as_deref()).await?;
        totals.requests.fetch_add(1, Relaxed);
        totals.checks.fetch_add(1, Relaxed);
        let status = resp.status();
        let cl = header_str(&resp, CONTENT_LENGTH).to_owned();
        let cr = header_str(&resp, CONTENT_RANGE).to_owned();
        let body = read_all(resp.body_mut()).await?;
        if status != want {
            totals.failure(format!("{what}: status {status}, expected {want}"));
        } else if method == Method::HEAD && (cl != size.to_string() || !body.is_empty()) {
            totals.failure(format!(
                "{what}: Content-Length {cl:?} and {} body bytes, expected {size} and none",
                body.len()
            ));
        } else if want == StatusCode::RANGE_NOT_SATISFIABLE && cr != format!("bytes */{size}") {
            totals.failure(format!("{what}: Content-Range {cr:?}"));
        }
    }
    Ok(())
}
