//! The report sink: a process-wide seam through which observers hand each
//! report (a corruption, a leak) as plain data to whoever installed a sink,
//! beside the `tracing` event they also raise. The C ABI installs one; Rust
//! callers have `tracing`. A sink never sees a pool.

use std::sync::OnceLock;

use crate::stats::CorruptionKind;

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReportKind {
    /// Damaged memory, found by a check.
    Corruption(CorruptionKind),
    /// Buffers still out when a pool's last handle was dropped.
    Leak,
}

/// One report.
#[derive(Debug, Clone, Copy)]
// Read by a sink, and only the C ABI installs one.
#[cfg_attr(not(feature = "capi"), allow(dead_code))]
pub(crate) struct Report<'a> {
    pub(crate) kind: ReportKind,
    /// The whole report, as a line (or lines) of text.
    pub(crate) text: &'a str,
    /// The buffer's first byte (0 when the report names no one buffer).
    pub(crate) address: usize,
}

/// A sink: called on the thread that found the report, with no pool lock
/// held.
pub(crate) type Sink = fn(&Report<'_>);

static SINK: OnceLock<Sink> = OnceLock::new();

/// Installs `sink` for the rest of the process, unless one is installed.
#[cfg_attr(not(feature = "capi"), allow(dead_code))]
pub(crate) fn install(sink: Sink) {
    let _ = SINK.set(sink);
}

/// Whether a sink is installed (so a report's text is worth formatting).
pub(crate) fn installed() -> bool {
    SINK.get().is_some()
}

/// Hands `report` to the sink; whether there was one.
pub(crate) fn emit(report: &Report<'_>) -> bool {
    match SINK.get() {
        Some(sink) => {
            sink(report);
            true
        }
        None => false,
    }
}
