//! # Guide (documentation only)
//!
//! The longer tour that the README points to: leak and memory-error
//! checks, metrics, the `std::io` and `bytes` adapters, packets, the slab
//! layout, how the crate is tested, and what it depends on.
//!
//! ## Leaks and memory errors
//!
//! ```rust
//! use pagepool::{BufferPool, CorruptionAction, DebugLevel};
//!
//! let pool = BufferPool::builder()
//!     .name("codec")
//!     .debug(DebugLevel::Standard)            // canary + sampled poison (the default)
//!     .on_corruption(CorruptionAction::Log)   // or Abort
//!     .build()?;
//!
//! let check = pool.leak_check();
//! let buf = pool.allocate_page_size_buffer(1316)?;
//! drop(buf);
//! check.finish().expect("nothing leaked");
//!
//! let kept = pool.allocate_page_size_buffer(4096)?;
//! let report = pool.leak_report(std::time::Duration::ZERO);
//! assert_eq!(report.buffers(), 1);
//! println!("{report}"); // grouped by allocation site, like SLUB's alloc_traces
//! # drop(kept);
//! # Ok::<(), pagepool::Error>(())
//! ```
//!
//! Tests that share one pool and run in parallel use
//! [`BufferPool::thread_leak_check`](crate::BufferPool::thread_leak_check):
//! it counts only the buffers its own thread allocates, so one test's leak
//! fails its own check and no other.
//!
//! With `pagepool::install_fault_handler()`, a write past a buffer's slot dies
//! like this (from `tests/planted.rs`):
//!
//! ```text
//! pagepool: heap-buffer-overflow: WRITE at 0x7f8b29700000, offset 4096 from buffer 0x7f8b296ff000 (0 bytes after the end of its 4096-byte slot)
//! pagepool:   pool "guarded", max_len 1500, slot 4096 bytes
//! pagepool:   allocated at tests/planted.rs:132:37 by thread #1
//! ```
//!
//! ## Memory given back, and a warm start
//!
//! ```rust
//! use std::time::Duration;
//!
//! let pool = pagepool::BufferPool::builder()
//!     .name("edge")
//!     .min_buffers(64 << 10, 128)                // mapped at build, never given back
//!     .decay(Some(Duration::from_secs(30)))      // idle slabs go back after 30 s
//!     .build()?;
//! assert!(pool.stats().buffers_cached >= 128);
//! # Ok::<(), pagepool::Error>(())
//! ```
//!
//! After a burst, slabs no class needed for the decay period go back to the
//! OS from the pool's background thread (`PoolStats::decayed_bytes`,
//! `pagepool_decayed_bytes_total`); `trim` gives back every idle slab at
//! once. Both also give back the pages of free page slots in slabs a live
//! buffer keeps mapped (`PoolStats::discarded_bytes`,
//! `pagepool_discarded_bytes_total`): after a burst, the resident memory
//! falls to about what is still in use. Neither goes below the
//! `min_buffers`. See [`crate::design`] for
//! what decay counts and what it never touches.
//!
//! ## Metrics
//!
//! ```rust,no_run
//! # #[cfg(feature = "prometheus")]
//! # fn main() -> Result<(), pagepool::Error> {
//! let handle = pagepool::prometheus::install("127.0.0.1:9187".parse().unwrap())?;
//! let pool = pagepool::BufferPool::builder().name("vod").max_bytes(1 << 30).build()?;
//! // ... scrape http://127.0.0.1:9187/metrics: pagepool_allocations_total{pool="vod",class,outcome},
//! // pagepool_bytes_in_use / _cached / _reserved / _limit, pagepool_leak_suspects, ...
//! # let _ = (handle, pool);
//! # Ok(()) }
//! # #[cfg(not(feature = "prometheus"))]
//! # fn main() {}
//! ```
//!
//! Counters and gauges are copied from the pool's own counters by one
//! background publisher thread for the whole process, every 250 ms per pool
//! (at most 1 s), so the hot path never touches the recorder; histograms
//! are sampled one allocation in 256. For an on-call: waits by outcome
//! (`pagepool_waits_total`, `pagepool_wait_duration_seconds`), high-water
//! marks (`pagepool_bytes_in_use_peak`, `pagepool_bytes_reserved_peak`,
//! [`BufferPool::reset_peaks`](crate::BufferPool::reset_peaks)), and who
//! holds the memory (`pagepool_site_bytes{site}` for the top
//! [`site_metrics`](crate::PoolBuilder::site_metrics) allocation sites,
//! plus `site="other"`); the same figures are in
//! [`PoolStats`](crate::PoolStats). The full table is in the `metrics`
//! module docs; `dashboards/README.md` explains the dashboard and the
//! alerts.
//!
//! ## Ecosystem
//!
//! A `PageBuffer` is an `std::io::Write` sink bounded by `max_len()` (a write
//! that does not fit is short, or `WriteZero` when full; `write_all` is all or
//! nothing) and fills itself from any `std::io::Read` (`fill_from` until full or
//! EOF, `read_once` for one read); `SharedBuffer::reader()` reads one back.
//! Feature `bytes` adds `From<PageBuffer>` and `From<SharedBuffer>` for
//! `bytes::Bytes` without a copy: the slot returns when the last `Bytes` drops.
//! On Linux, `pagepool::direct::DirectFile` reads files with `O_DIRECT` straight
//! into buffers, checks the alignment before calling the OS, and says so when a
//! filesystem refuses `O_DIRECT` (`open_or_buffered` falls back).
//!
//! ```rust
//! use std::io::Write;
//!
//! let pool = pagepool::BufferPool::new();
//! let mut buf = pool.allocate_page_size_buffer(4096)?;
//! write!(buf, "#EXTM3U\n#EXT-X-VERSION:{}\n", 7)?;
//! let n = buf.fill_from(&b"#EXTINF:6.0,\n"[..])?;
//! assert_eq!((n, buf.len()), (13, 38));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Small buffers (packets)
//!
//! `allocate_buffer(max_size)` is `IWMSBufferAllocator::AllocateBuffer`: no page
//! alignment promised. Up to `SMALL_MAX` (2048) bytes it uses the small classes
//! `SMALL_SIZES` (64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048 bytes):
//! slots packed into shared pages, 64-byte aligned, each between two 64-byte
//! red zones of canary that every release checks (16 bytes each side; all 64
//! with the full canary), with a guard page at each end of the slab. A write
//! one byte past a packet is reported at its release, naming the buffer and
//! where it was allocated; the stats, leak reports and metrics count each small
//! class like the page classes. Above 2 KiB it serves page classes, exactly
//! like `allocate_page_size_buffer`.
//!
//! ```rust
//! let pool = pagepool::BufferPool::new();
//! let mut rtp = pool.allocate_buffer(1500)?;
//! assert_eq!((rtp.slot_len(), rtp.as_ptr() as usize % 64), (1536, 0));
//! rtp.extend_from_slice(&[0x80, 0x60, 0x00, 0x01])?;
//! # Ok::<(), pagepool::Error>(())
//! ```
//!
//! ## Layout
//!
//! ```text
//!  [ G ][ slot 0: P pages ][ G ][ slot 1: P pages ][ G ] ... [ slot n-1 ][ G ]
//!        ^ as_ptr(), page-aligned           G = guard page, any access faults
//! ```
//!
//! Size classes are 1, 2, 3, 4 pages, then four steps per doubling (5, 6, 7, 8,
//! 10, 12, 14, 16, 20, ... pages) up to `max_buffer_size` (16 MiB by default):
//! every power-of-two number of pages is a class, and a slot exceeds its request
//! by less than one page up to 4 pages and by less than a fifth of the slot above.
//! See the `design` module of the docs (`cargo doc --open`) for the slab picture
//! and the concurrency argument.
//!
//! ## Reliability
//!
//! Besides the unit and integration tests, `cargo test --all-features` runs
//! model-based property tests (`tests/model.rs`: random programs of allocations,
//! releases on other threads, shared handles, trims and cap changes, checked
//! against a model after every step; `PROPTEST_CASES=10000` for a longer run),
//! fault injection under `RLIMIT_AS`, every entry point with bad input (Rust
//! and C), panic safety, the bounded wait (a timeout, a wake-up by a release
//! on another thread, many waiters), and a short soak. The full soak, with buffers crossing threads and
//! every byte stamped and verified:
//!
//! ```sh
//! cargo run --release --example soak -- --ops 10000000
//! ```
//!
//! (2 threads, sizes from 1 byte to 4 MiB: about 1.6 million operations a
//! second here, 0 corruptions, 0 double hand-outs.) CI also runs the soak under
//! valgrind's memcheck (`.ci/valgrind`).
//!
//! ## Dependencies
//!
//! `region` (mapping and protection), `crossbeam-queue` and `crossbeam-utils`
//! (the lock-free free lists and cache padding: the two crossbeam crates used,
//! rather than the whole `crossbeam` facade), `parking_lot` (the slow paths'
//! locks), `libc` (`madvise`, `sigaction`, `write`), `tracing` (warnings and
//! corruption reports; the library writes to stderr only from the fault handler
//! and for `CorruptionAction::Abort`), `metrics` (the facade): the default
//! features add nothing more, so a dependent's tree has no runtime, HTTP
//! server or C compiler. Feature
//! `prometheus` adds `metrics-exporter-prometheus` with only its HTTP
//! listener (no push gateway, so no TLS stack or C build) and the `tokio`
//! runtime it already uses. Feature `bytes` adds `bytes`; feature `io-uring`
//! (Linux) adds the `io-uring` crate. The async waits depend on no runtime.
//!
//! ## The C ABI's codes
//!
//! | code | value | when |
//! |---|---|---|
//! | `S_OK` | `0x00000000` | success |
//! | `E_POINTER` | `0x80004003` | a required out pointer is null |
//! | `E_HANDLE` | `0x80070006` | not a live allocator / buffer of that kind: null, forged, released (a double `Release`), destroyed, or the other kind |
//! | `E_INVALIDARG` | `0x80070057` | size 0 or above the largest buffer, `SetLength` past the maximum, a name that is not UTF-8 |
//! | `E_OUTOFMEMORY` | `0x8007000E` | the byte cap is reached, or the OS refused memory |
//! | `E_FAIL` | `0x80004005` | the OS refused (`pagepool_install_fault_handler`) |
//! | `E_UNEXPECTED` | `0x8000FFFF` | a bug inside pagepool (a panic caught at the boundary) |
//!
//! Handles are indices with a generation into one table, checked on every call,
//! never dereferenced: bad input from C gets an error code and leaves the
//! allocator usable. Each call takes one uncontended lock. `tests/capi.rs`
//! compiles `tests/c/capi_test.c` (every function and every error path) and
//! `tests/c/diag_test.c` (each memory error a C program can make, one child
//! process each, its signal and report checked) with the system C compiler,
//! and keeps the header and `src/capi/` in agreement.
