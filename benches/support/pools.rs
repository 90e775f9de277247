//! The two pagepool configurations the benches compare, and the Prometheus
//! recorder they measure the default one with, shared by the benches that
//! need them (`#[path = "support/pools.rs"] mod pools;`).

#![allow(dead_code)] // each bench uses what it needs

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use pagepool::{BufferPool, DebugLevel, LeakTracking};

/// `pagepool_default`: the defaults (guard pages, call-site leak tracking,
/// `DebugLevel::Standard`, metrics).
pub fn default_pool(name: &str) -> BufferPool {
    BufferPool::builder()
        .name(name)
        .build()
        .expect("default configuration")
}

/// `pagepool_bare`: no guard pages, `DebugLevel::Off`, `LeakTracking::Off`,
/// metrics off.
pub fn bare_pool(name: &str) -> BufferPool {
    BufferPool::builder()
        .name(name)
        .guard_pages(false)
        .debug(DebugLevel::Off)
        .leak_tracking(LeakTracking::Off)
        .metrics(false)
        .build()
        .expect("bare configuration")
}

/// Installs pagepool's Prometheus recorder, with its upkeep on a thread of
/// its own every 5 s as the exporter would run it. Call it before building
/// the pools it should see.
pub fn install_prometheus() -> PrometheusHandle {
    let prometheus = pagepool::prometheus::builder()
        .install_recorder()
        .expect("no other recorder in this process");
    let upkeep = prometheus.clone();
    std::thread::Builder::new()
        .name("prometheus-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        })
        .expect("spawn the upkeep thread");
    prometheus
}
