//! A ready Prometheus exporter for pagepool's [metrics](crate::metrics)
//! (feature `prometheus`).
//!
//! ```no_run
//! # fn main() -> Result<(), pagepool::Error> {
//! // One call: global recorder, HTTP listener on /metrics, upkeep.
//! let handle = pagepool::prometheus::install("127.0.0.1:9187".parse().unwrap())?;
//! let pool = pagepool::BufferPool::builder().name("vod").build()?;
//! let _buf = pool.allocate_page_size_buffer(4096)?;
//! pool.publish_metrics();
//! assert!(handle.render().contains("pagepool_allocations_total"));
//! # Ok(()) }
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::thread;

use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use crate::config::DEFAULT_MAX_BUFFER_SIZE;
use crate::Error;

pub use metrics_exporter_prometheus;

pub use crate::metrics::{duration_buckets, hold_buckets, size_buckets};

/// How long [`builder`]'s exporter keeps a gauge nobody updates: five
/// minutes, several scrapes at any usual scrape interval, so the last
/// (zero) value of a series that went away is scraped before it goes.
///
/// ```
/// assert!(pagepool::prometheus::GAUGE_IDLE_TIMEOUT.as_secs() >= 60);
/// ```
pub const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A `PrometheusBuilder` preconfigured for pagepool: recommended naming
/// (`_total` on counters, unit suffixes) and histogram buckets that fit each
/// histogram (see [`duration_buckets`], [`hold_buckets`], [`size_buckets`] for
/// the default 16 MiB largest buffer), and gauges not updated for
/// [`GAUGE_IDLE_TIMEOUT`] dropped from the output: the series of a site
/// that left a pool's top sites, and of a pool shut down, go away (every
/// live pool updates its gauges each publish interval, at most 1 s). Add a
/// listener or call `install_recorder` as you like.
#[must_use = "a builder does nothing until it installs or builds"]
pub fn builder() -> PrometheusBuilder {
    builder_for(DEFAULT_MAX_BUFFER_SIZE)
}

/// [`builder`] with request-size buckets up to `max_buffer_size`.
#[must_use = "a builder does nothing until it installs or builds"]
pub fn builder_for(max_buffer_size: usize) -> PrometheusBuilder {
    crate::metrics::histogram_buckets(max_buffer_size)
        .into_iter()
        .fold(
            PrometheusBuilder::new()
                .with_recommended_naming(true)
                .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT)),
            |b, (name, buckets)| {
                b.set_buckets_for_metric(Matcher::Full(name.to_owned()), &buckets)
                    .expect("bucket lists are never empty")
            },
        )
}

/// Why [`install`] could not start the exporter, in [`Error::Exporter`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ExporterError {
    /// The exporter's runtime could not start.
    Runtime(io::Error),
    /// The HTTP listener could not be built on `addr` (in use, not local).
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The exporter's reason.
        source: BuildError,
    },
    /// A global `metrics` recorder is already installed.
    RecorderInstalled,
    /// The exporter's thread could not start.
    Thread(io::Error),
}

impl fmt::Display for ExporterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExporterError::Runtime(e) => write!(f, "cannot start the exporter's runtime: {e}"),
            ExporterError::Listen { addr, source } => {
                write!(f, "cannot listen on {addr}: {source}")
            }
            ExporterError::RecorderInstalled => f.write_str(
                "cannot install the recorder: a global metrics recorder is already installed",
            ),
            ExporterError::Thread(e) => write!(f, "cannot start the exporter thread: {e}"),
        }
    }
}

impl std::error::Error for ExporterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ExporterError::Runtime(e) | ExporterError::Thread(e) => Some(e),
            ExporterError::Listen { source, .. } => Some(source),
            ExporterError::RecorderInstalled => None,
        }
    }
}

/// Installs the [`builder`]'s recorder as the global `metrics` recorder,
/// serves `GET /metrics` (any path, in fact) on `addr` from a thread of its
/// own, and runs the exporter's upkeep there. Returns a handle that renders
/// the same text on demand.
///
/// Install it before building pools: a pool registers its metric handles
/// with the recorder current at `build`.
///
/// # Errors
/// [`Error::Exporter`] when the address cannot be bound (in use, not
/// local) or another global recorder is already installed.
pub fn install(addr: SocketAddr) -> Result<PrometheusHandle, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Exporter(Box::new(ExporterError::Runtime(e))))?;
    let (recorder, exporter) = {
        let _entered = runtime.enter();
        builder()
            .with_http_listener(addr)
            .build()
            .map_err(|source| Error::Exporter(Box::new(ExporterError::Listen { addr, source })))?
    };
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| Error::Exporter(Box::new(ExporterError::RecorderInstalled)))?;
    thread::Builder::new()
        .name("pagepool-prometheus".to_owned())
        .spawn(move || {
            if let Err(e) = runtime.block_on(exporter) {
                tracing::error!(target: "pagepool", error = ?e, "the Prometheus exporter stopped");
            }
        })
        .map_err(|e| Error::Exporter(Box::new(ExporterError::Thread(e))))?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_in_use_is_a_typed_error_with_its_source() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        match install(addr) {
            Err(Error::Exporter(e)) if matches!(*e, ExporterError::Listen { addr: a, .. } if a == addr) =>
                {}
            other => panic!("expected a Listen error, got {other:?}"),
        }
        let e = install(addr).unwrap_err();
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
        let source = std::error::Error::source(&e).expect("the ExporterError");
        assert!(
            source.source().is_some(),
            "the exporter's own reason is kept"
        );
    }
}
