//! The server's pool metrics at the end: `GET /metrics`, read with
//! `prometheus-parse`, as a table.

use std::collections::BTreeMap;

use hyper::{Method, StatusCode};
use prometheus_parse::{Scrape, Value};

use crate::args::Args;
use crate::conn::{read_all, Conn};

/// One pool's figures, from its `pool`-labelled series.
#[derive(Debug, Default, PartialEq)]
pub struct Pool {
    pub in_use: f64,
    pub reserved: f64,
    pub limit: Option<f64>,
    pub cached: f64,
    pub hits: f64,
    pub misses: f64,
    pub exhausted: f64,
}

/// What the report shows of a scrape.
#[derive(Debug, Default)]
pub struct Figures {
    /// By pool name.
    pub pools: BTreeMap<String, Pool>,
    /// The server's own counters and gauges (`media_server_*`, but the
    /// per-route request counts), summed over their labels.
    pub server: BTreeMap<String, f64>,
}

/// Parses a Prometheus text exposition and picks out the [`Figures`];
/// histograms and summaries are left out.
pub fn figures(text: &str) -> Result<Figures, String> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .map_err(|e| format!("cannot parse /metrics: {e}"))?;
    let mut out = Figures::default();
    for sample in &scrape.samples {
        let v = match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            Value::Histogram(_) | Value::Summary(_) => continue,
        };
        let name = sample.metric.as_str();
        if let Some(pool) = sample.labels.get("pool") {
            let p = out.pools.entry(pool.to_owned()).or_default();
            match name {
                "pagepool_bytes_in_use" => p.in_use = v,
                "pagepool_bytes_reserved" => p.reserved = v,
                "pagepool_bytes_limit" => p.limit = Some(v),
                "pagepool_bytes_cached" => p.cached = v,
                "pagepool_allocations_total" => match sample.labels.get("outcome") {
                    Some("hit") => p.hits += v,
                    Some("miss") => p.misses += v,
                    Some("exhausted") => p.exhausted += v,
                    _ => {}
                },
                _ => {}
            }
        } else if name.starts_with("media_server_") && !name.starts_with("media_server_requests") {
            *out.server.entry(name.to_owned()).or_default() += v;
        }
    }
    Ok(out)
}

pub fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1u64 << 20) as f64)
}

/// Prints the server's pools and counters from `GET /metrics`.
pub async fn report_server(args: &Args) -> Result<(), String> {
    let mut conn = Conn::open(&args.authority).await?;
    let mut resp = conn.send(Method::GET, "/metrics", None).await?;
    if resp.status() != StatusCode::OK {
        return Err(format!("GET /metrics: status {}", resp.status()));
    }
    let text = String::from_utf8_lossy(&read_all(resp.body_mut()).await?).into_owned();
    let Figures { pools, server } = figures(&text)?;
    if pools.is_empty() {
        return Err("no pagepool metrics in /metrics".to_owned());
    }
    println!("server pools (GET /metrics):");
    println!(
        "  {:<8} {:>12} {:>12} {:>12} {:>12} {:>12} {:>8} {:>10} {:>8}",
        "pool", "in use", "reserved", "limit", "cached", "hits", "misses", "exhausted", "hit rate"
    );
    for (name, p) in &pools {
        let total = p.hits + p.misses;
        println!(
            "  {:<8} {:>12} {:>12} {:>12} {:>12} {:>12} {:>8} {:>10} {:>7.3}%",
            name,
            mib(p.in_use),
            mib(p.reserved),
            p.limit.map_or("none".to_owned(), mib),
            mib(p.cached),
            p.hits,
            p.misses,
            p.exhausted,
            if total > 0.0 {
                100.0 * p.hits / total
            } else {
                0.0
            },
        );
    }
    if !server.is_empty() {
        println!("server counters:");
        for (name, v) in &server {
            println!("  {name:<42} {v}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP pagepool_bytes_in_use Bytes handed out.
# TYPE pagepool_bytes_in_use gauge
pagepool_bytes_in_use{pool="media"} 1048576
pagepool_bytes_in_use{pool="live"} 0
# TYPE pagepool_bytes_limit gauge
pagepool_bytes_limit{pool="media"} 234881024
# TYPE pagepool_allocations_total counter
pagepool_allocations_total{pool="media",outcome="hit"} 90
pagepool_allocations_total{pool="media",outcome="miss"} 10
pagepool_allocations_total{outcome="exhausted",pool="media"} 2
# TYPE pagepool_wait_seconds histogram
pagepool_wait_seconds_bucket{pool="media",le="0.1"} 3
pagepool_wait_seconds_bucket{pool="media",le="+Inf"} 4
pagepool_wait_seconds_sum{pool="media"} 0.5
pagepool_wait_seconds_count{pool="media"} 4
# TYPE media_server_read_bytes_total counter
media_server_read_bytes_total{mode="direct"} 100
media_server_read_bytes_total{mode="buffered"} 23
# TYPE media_server_requests_total counter
media_server_requests_total{route="media",status="200"} 7
"#;

    #[test]
    fn picks_out_pools_and_server_counters() {
        let f = figures(SCRAPE).unwrap();
        let media = &f.pools["media"];
        assert_eq!(
            (media.in_use, media.limit),
            (1_048_576.0, Some(234_881_024.0))
        );
        assert_eq!(
            (media.hits, media.misses, media.exhausted),
            (90.0, 10.0, 2.0)
        );
        assert_eq!(f.pools["live"], Pool::default());
        assert_eq!(f.pools.len(), 2);
        assert_eq!(
            f.server.iter().collect::<Vec<_>>(),
            [(&"media_server_read_bytes_total".to_owned(), &123.0)]
        );
    }
}
