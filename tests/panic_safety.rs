//! Panics never lose a buffer: unwinding drops every `PageBuffer` and
//! `SharedBuffer` on the way, which returns their slots; a thread that dies
//! by a panic flushes its thread cache like any other thread; a `LeakCheck`
//! dropped during a panic does not panic again; and since the pool's locks
//! (`parking_lot`, no poisoning) are never held across user code, the pool
//! keeps working after panics on any number of threads.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Barrier;

use common::{assert_stamped, child_marker, in_child, run_child, stamp};
use pagepool::{page_size, BufferPool, PageBuffer, SharedBuffer};

/// `catch_unwind` without the expected panic's message on stderr. The hook
/// is process-wide: the tests that use it hold `HOOK` meanwhile.
fn quietly<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    let _one = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    r
}

static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn pool(name: &str) -> BufferPool {
    BufferPool::builder().name(name).build().unwrap()
}

#[track_caller]
fn assert_all_back(pool: &BufferPool, allocations: u64) {
    let s = pool.stats();
    assert_eq!((s.buffers_in_use, s.bytes_in_use), (0, 0), "{s:?}");
    assert_eq!(
        (s.allocations, s.releases),
        (allocations, allocations),
        "{s:?}"
    );
    assert!(pool.outstanding().is_empty());
    assert_eq!(s.corruptions, 0);
}

#[test]
fn a_panic_with_buffers_borrowed_in_a_closure_returns_them() {
    let pool = pool("panic-closure");
    let page = page_size();
    // Buffers owned by the closure, borrowed mutably mid-write, frozen and
    // shared, and moved into a Vec: all dropped by the unwinding.
    let r = quietly(|| {
        let mut owned = pool.allocate_page_size_buffer(3 * page + 1).unwrap();
        let many: Vec<PageBuffer> = (1..=8)
            .map(|i| pool.allocate_page_size_buffer(i * 1000).unwrap())
            .collect();
        let mut frozen = pool.allocate_page_size_buffer(1316).unwrap();
        frozen.extend_from_slice(&[0x47; 1316]).unwrap();
        let shared: SharedBuffer = frozen.freeze();
        let _clones = [shared.clone(), shared.slice(4..8)];
        let slice = owned.as_max_slice_mut();
        slice[0] = 1;
        assert_eq!(pool.stats().buffers_in_use, 10);
        if slice[0] == 1 {
            panic!("mid-write, with {} buffers out", many.len() + 2);
        }
    });
    assert!(r.is_err());
    assert_all_back(&pool, 10);

    // The same through a borrowed buffer: the closure borrows, the owner
    // outside survives the panic and is intact.
    let mut outer = pool.allocate_page_size_buffer(page).unwrap();
    stamp(outer.as_max_slice_mut(), 42);
    let r = quietly(|| {
        let bytes = outer.as_max_slice_mut();
        let inner = pool.allocate_page_size_buffer(page).unwrap();
        assert_ne!(inner.as_ptr(), bytes.as_ptr());
        panic!("while borrowing");
    });
    assert!(r.is_err());
    assert_stamped(outer.as_max_slice(), 42);
    assert_eq!(pool.stats().buffers_in_use, 1);
    drop(outer);
    assert_all_back(&pool, 12);
    // Still usable, and nothing was lost: trim gives back every byte.
    drop(pool.allocate_page_size_buffer(page).unwrap());
    let reserved = pool.stats().bytes_reserved;
    assert_eq!(pool.trim(), reserved);
}

#[test]
fn a_thread_that_panics_holding_buffers_returns_them_and_its_cache() {
    let pool = pool("panic-thread");
    let page = page_size();
    let r = std::thread::scope(|s| {
        let h = s.spawn(|| {
            // Fill this thread's cache (release 32 one-page buffers here),
            // then hold a few buffers and a shared one, then panic.
            let warm: Vec<_> = (0..32)
                .map(|_| pool.allocate_page_size_buffer(page).unwrap())
                .collect();
            drop(warm);
            let _held: Vec<_> = (0..5)
                .map(|i| pool.allocate_page_size_buffer(page * (i + 1)).unwrap())
                .collect();
            let _shared = pool.allocate_page_size_buffer(100).unwrap().freeze();
            assert!(pool.stats().buffers_cached > 0);
            std::panic::panic_any("worker died");
        });
        // `join` returns after the thread's thread-local destructors ran.
        h.join()
    });
    assert!(r.is_err(), "the worker panicked");
    assert_all_back(&pool, 38);
    // Every cached slot is back on the shared lists: trim unmaps everything.
    let reserved = pool.stats().bytes_reserved;
    assert!(reserved > 0);
    assert_eq!(pool.trim(), reserved);
    assert_eq!(pool.stats().slabs, 0);
}

#[test]
fn panics_on_many_threads_leave_the_pool_working() {
    const THREADS: usize = 6;
    let pool = BufferPool::builder()
        .name("panic-many")
        .max_bytes(64 << 20)
        .build()
        .unwrap();
    let page = page_size();
    let start = Barrier::new(THREADS);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (pool, start) = (&pool, &start);
                s.spawn(move || {
                    start.wait();
                    let mut held = Vec::new();
                    for i in 0..200 {
                        let mut b = pool
                            .allocate_page_size_buffer(1 + (i * 997) % (8 * page))
                            .unwrap();
                        stamp(b.as_max_slice_mut(), (t * 1000 + i) as u64);
                        held.push(b);
                        if held.len() > 16 {
                            held.swap_remove(i % held.len());
                        }
                        // Half the threads panic somewhere in the middle,
                        // some of them while trimming concurrently.
                        if t % 2 == 0 && i == 50 + t * 20 {
                            if t % 4 == 0 {
                                pool.trim();
                            }
                            panic!("thread {t} gives up at {i}");
                        }
                    }
                    held.len()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let panicked = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(panicked, THREADS / 2);
    let s = pool.stats();
    assert_eq!(s.buffers_in_use, 0, "{s:?}");
    assert_eq!(s.allocations, s.releases);
    assert_eq!(s.corruptions, 0);
    // Every lock is free and every list consistent: the pool works on this
    // thread and on new ones, up to the cap.
    let mut again: Vec<_> = (0..64)
        .map(|_| pool.allocate_page_size_buffer(page).unwrap())
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            let b = pool.allocate_page_size_buffer(2 * page).unwrap();
            assert!(pool.leak_report(std::time::Duration::ZERO).buffers() >= 65);
            drop(b);
        })
        .join() // (unlike the scope's own wait, `join` waits for its cache flush)
        .unwrap();
    });
    again.clear();
    let reserved = pool.stats().bytes_reserved;
    assert_eq!(pool.trim(), reserved);
}

const LEAK_CASE: &str = "leak-check-panic";

/// A `LeakCheck` that finds a buffer still out while the thread is already
/// panicking must not panic again (a panic during a panic aborts the whole
/// process, so this runs in a child: an abort shows as SIGABRT there).
#[test]
fn a_leak_check_dropped_during_a_panic_does_not_panic_again() {
    if in_child(LEAK_CASE) {
        let pool = pool("panic-leak-check");
        let r = quietly(|| {
            // Declared before the check, so dropped after it: the check
            // runs while `kept` still holds a buffer allocated during it.
            let kept: PageBuffer;
            let _check = pool.leak_check();
            kept = pool.allocate_page_size_buffer(100).unwrap();
            assert_eq!(kept.max_len(), 100);
            panic!("the test body failed");
        });
        assert!(r.is_err());
        child_marker("UNWOUND ONCE");
        assert_all_back(&pool, 1);
        // Outside a panic the same check does panic, with the report.
        let r = quietly(|| {
            let kept: PageBuffer;
            let _check = pool.leak_check();
            kept = pool.allocate_page_size_buffer(100).unwrap();
            assert_eq!(kept.max_len(), 100);
        });
        let msg = r.expect_err("a leak outside a panic fails the check");
        let text = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains("LeakCheck"), "{text}");
        assert!(text.contains("panic_safety.rs"), "names the site: {text}");
        assert_all_back(&pool, 2);
        child_marker("CHECKED");
        return;
    }
    let out = run_child(
        "a_leak_check_dropped_during_a_panic_does_not_panic_again",
        LEAK_CASE,
    );
    out.assert_success(&["UNWOUND ONCE", "CHECKED"]);
}

/// A `tracing` subscriber that panics on every event.
struct PanickingSubscriber;

impl tracing::Subscriber for PanickingSubscriber {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        panic!("the subscriber panics on {}", event.metadata().name());
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// User code the pool runs on release: the `tracing` subscriber that receives
/// a corruption report (`CorruptionAction::Log`). If it panics, the pool
/// contains the panic (a panic out of `Drop` during an unwind would abort the
/// process), and the slot comes back.
#[test]
fn a_panicking_log_subscriber_during_release_loses_no_slot() {
    let pool = pool("panic-subscriber");
    let mut buf = pool.allocate_page_size_buffer(100).unwrap();
    // SAFETY: byte 100 of a 100-byte buffer lies in its slot's slack (the
    // slot is a whole page), which is mapped and ours: a planted overflow the
    // slack canary reports at release. Flipped, not set: a set value can be
    // the canary's own byte there (one address in 256).
    unsafe {
        let p = buf.as_mut_ptr().add(100);
        p.write(!p.read());
    }
    let r = quietly(|| {
        tracing::subscriber::with_default(PanickingSubscriber, || drop(buf));
    });
    assert!(
        r.is_ok(),
        "the subscriber's panic was contained in the report"
    );
    let s = pool.stats();
    assert_eq!(s.corruptions, 1, "{s:?}");
    assert_eq!(s.buffers_in_use, 0, "the slot came back: {s:?}");
    assert_eq!((s.allocations, s.releases), (1, 1), "{s:?}");
    assert!(pool.outstanding().is_empty());
    // And it is served again.
    drop(pool.allocate_page_size_buffer(100).unwrap());
    assert_eq!(pool.stats().hits, 1);
}

/// A recorder whose histograms panic when they record, and whose counters
/// and gauges do nothing.
struct PanickingHistograms;

struct Panics;

impl metrics::HistogramFn for Panics {
    fn record(&self, _: f64) {
        panic!("a recorder's histogram panicked");
    }
}

impl metrics::Recorder for PanickingHistograms {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::from_arc(std::sync::Arc::new(Panics))
    }
}

/// A recorder that panics in `record` (the sampled allocation and
/// hold-time histograms) loses the samples, never a slot: every allocation
/// still returns its buffer, every drop returns the slot, and the pool
/// shuts down when its last handle goes.
#[test]
fn a_panicking_recorder_loses_samples_not_slots() {
    let pool = metrics::with_local_recorder(&PanickingHistograms, || {
        BufferPool::builder()
            .name("panicking-recorder")
            .metrics_sample_every(1)
            .build()
            .unwrap()
    });
    let got = quietly(|| {
        let mut bufs = Vec::new();
        for i in 0..64 {
            let mut b = pool.allocate_page_size_buffer(page_size()).expect("room");
            stamp(b.as_max_slice_mut(), i);
            bufs.push(b);
        }
        assert_eq!(pool.stats().buffers_in_use, 64);
        for (i, b) in bufs.iter().enumerate() {
            assert_stamped(b.as_max_slice(), i as u64);
        }
        drop(bufs);
    });
    assert!(got.is_ok(), "a recorder's panic reached the caller");
    assert_all_back(&pool, 64);
}
