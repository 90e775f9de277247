//! The server's own pages: `GET /metrics` (Prometheus text) and
//! `GET /debug/buffers` (each pool's stats and the size classes in use).

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use pagepool::BufferPool;

use crate::body::Body;
use crate::{query_param, text, State};

pub fn describe_server_metrics() {
    metrics::describe_counter!(
        "media_server_requests_total",
        metrics::Unit::Count,
        "HTTP responses written whole, by route and status code."
    );
    metrics::describe_counter!(
        "media_server_responses_failed_total",
        metrics::Unit::Count,
        "HTTP responses cut short (their connection closed as an error), by route and reason: send_timeout, min_send_rate, client_gone, pool_wait, read_error, file_shrank."
    );
    metrics::describe_counter!(
        "media_server_slow_clients_closed_total",
        metrics::Unit::Count,
        "Connections closed because the client stopped reading (send_timeout) or read too slowly (min_send_rate)."
    );
    metrics::describe_gauge!(
        "media_server_connections",
        metrics::Unit::Count,
        "Open HTTP connections."
    );
}

/// `GET /metrics`.
pub fn metrics(state: &State) -> Response<Body> {
    // Publish now so the scrape matches `stats()` exactly.
    for pool in state.pools() {
        pool.publish_metrics();
    }
    let mut r = text(StatusCode::OK, state.prometheus.render());
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `GET /debug/buffers`: per pool, its stats and the size classes in use.
pub fn debug_buffers(state: &State, query: Option<&str>) -> Response<Body> {
    let min_age = query_param(query, "min_age")
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_secs);
    let mut out = String::new();
    for pool in state.pools() {
        let _ = writeln!(
            out,
            "== pool {:?} (max_buffer_size {}, guard pages {}) ==",
            pool.name(),
            pool.max_buffer_size(),
            pool.guard_pages()
        );
        let _ = writeln!(out, "{:#?}", pool.stats());
        let _ = writeln!(out, "size classes in use:");
        for c in pool
            .class_stats()
            .iter()
            .filter(|c| c.allocations > 0 || c.slabs > 0 || c.buffers_in_use > 0)
        {
            let _ = writeln!(out, "  {c:?}");
        }
        leak_report(pool, min_age, &mut out);
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "media readers streaming: {}",
        state.media.readers.load(Relaxed)
    );
    let _ = writeln!(out, "connections: {}", state.connections.load(Relaxed));
    let _ = writeln!(out, "live subscribers: {}", state.live.subscribers());
    for (name, receivers) in state.live.channels() {
        let _ = writeln!(out, "  live channel {name}: {receivers} receivers");
    }
    text(StatusCode::OK, out)
}

/// The outstanding buffers of `pool` held at least `min_age`, by allocation site.
fn leak_report(pool: &BufferPool, min_age: Duration, out: &mut String) {
    let report = pool.leak_report(min_age);
    let _ = write!(out, "{report}");
}
