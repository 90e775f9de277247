//! Fault injection: the OS refuses mappings (a low `RLIMIT_AS` in a child
//! process), and the pool answers `Error::Os`, never a panic, counts it,
//! keeps serving free slots, stays consistent, and recovers when the OS
//! gives memory again.
//!
//! The byte cap under contention is covered by `threads.rs`
//! (`cap_holds_under_contention`) and by `soak.rs`
//! (`soak_short_tight_cap_mprotect_no_cache`: another mix, with buffers up
//! to 1 MiB, `mprotect` guards and no thread caches).

mod common;

use std::sync::Barrier;

use common::{assert_stamped, child_marker, in_child, run_child, stamp};
use pagepool::{BufferPool, Error, LeakTracking, PageBuffer, PoolStats};

const MIB: usize = 1 << 20;

/// The process's current address-space size (`VmSize`), in bytes.
fn vm_size() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a VmSize line in kB");
    kib * 1024
}

/// Sets the soft `RLIMIT_AS` (the hard limit stays, so it can be raised
/// again); `None` lifts it.
fn set_address_space_limit(bytes: Option<usize>) {
    // SAFETY: `getrlimit`/`setrlimit` only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut lim), 0);
        lim.rlim_cur = match bytes {
            Some(b) => (b as libc::rlim_t).min(lim.rlim_max),
            None => lim.rlim_max,
        };
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_AS, &lim),
            0,
            "setrlimit(RLIMIT_AS)"
        );
    }
}

/// What one run against the limit saw. Plain numbers: filled in while the
/// limit is low, when even the test's own `malloc` may fail.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    allocated: usize,
    os_errors: u64,
    errno: i32,
    other_errors: usize,
}

/// Allocates `size`-byte buffers into `held` (whose capacity is reserved)
/// until the OS refuses one `refusals` times.
fn allocate_until_refused(
    pool: &BufferPool,
    size: usize,
    held: &mut Vec<(u64, PageBuffer)>,
    id_base: u64,
    refusals: u64,
) -> Outcome {
    let mut out = Outcome::default();
    while out.os_errors < refusals && held.len() < held.capacity() {
        match pool.allocate_page_size_buffer(size) {
            Ok(mut b) => {
                let id = id_base + held.len() as u64;
                stamp(b.as_max_slice_mut(), id);
                held.push((id, b));
                out.allocated += 1;
            }
            Err(Error::Os(e)) => {
                out.os_errors += 1;
                out.errno = e.raw_os_error().unwrap_or(-1);
            }
            Err(_) => out.other_errors += 1,
        }
    }
    out
}

#[track_caller]
fn assert_consistent(s: &PoolStats, in_use: usize) {
    assert_eq!(s.buffers_in_use, in_use, "{s:?}");
    assert_eq!(s.allocations, s.hits + s.misses, "{s:?}");
    assert_eq!(s.buffers_in_use as u64, s.allocations - s.releases, "{s:?}");
    assert!(s.bytes_in_use + s.bytes_cached <= s.bytes_reserved, "{s:?}");
    assert_eq!((s.exhausted, s.rejected, s.corruptions), (0, 0, 0), "{s:?}");
}

const CASE: &str = "rlimit-as";

#[test]
fn os_refusals_are_errors_counted_and_survivable() {
    if in_child(CASE) {
        return child_body();
    }
    let out = run_child("os_refusals_are_errors_counted_and_survivable", CASE);
    out.assert_success(&["LIMIT SET", "REFUSED", "RECOVERED"]);
    let faults: u64 = out.value("faults_injected");
    println!("faults injected (mmap refused): {faults}");
    assert!(faults >= 4, "{faults}");
}

fn child_body() {
    // Everything that needs memory of its own comes before the limit: the
    // pool (no cap, no metrics thread), the helper threads and their stacks,
    // and room for every buffer we will hold.
    // No background thread at all: no metrics publisher, and no leak
    // tracking (whose coarse clock thread might only start running, and map
    // its signal stack, once the limit is set).
    let pool = BufferPool::builder()
        .name("rlimit")
        .metrics(false)
        .leak_tracking(LeakTracking::Off)
        .build()
        .unwrap();
    let mut held: Vec<(u64, PageBuffer)> = Vec::with_capacity(4096);
    let mut side: Vec<Vec<(u64, PageBuffer)>> = (0..2).map(|_| Vec::with_capacity(4096)).collect();
    let ready = Barrier::new(3);
    let barrier = Barrier::new(3);
    let done = Barrier::new(3);

    let (first, s1, s2, reused, other_refused, outs, s3) = std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for (t, mine) in side.iter_mut().enumerate() {
            let (pool, ready, barrier, done) = (&pool, &ready, &barrier, &done);
            workers.push(scope.spawn(move || {
                // Set up this thread's cache (and malloc arena) first.
                drop(pool.allocate_page_size_buffer(256 << 10).unwrap());
                ready.wait(); // running, with its signal stack mapped
                barrier.wait(); // the limit is set
                let out = allocate_until_refused(pool, 256 << 10, mine, (t as u64 + 1) << 32, 3);
                done.wait();
                out
            }));
        }

        ready.wait();
        let headroom = 64 * MIB;
        set_address_space_limit(Some(vm_size() + headroom));
        child_marker("LIMIT SET");

        // 1. One thread: 1 MiB buffers (one-slot slabs) until mmap fails.
        let first = allocate_until_refused(&pool, MIB, &mut held, 0, 1);
        let s1 = pool.stats();
        // 2. The pool still serves a free slot of that class: give one back
        //    and take it again, with no mapping.
        let (id, b) = held.pop().unwrap();
        drop(b);
        let again = pool.allocate_page_size_buffer(MIB - 1);
        let reused = again.is_ok();
        if let Ok(mut b) = again {
            stamp(b.as_max_slice_mut(), id);
            held.push((id, b));
        }
        let s2 = pool.stats();
        // 3. Another class still needs a mapping: refused again.
        let other = pool.allocate_page_size_buffer(3 * MIB);
        let other_refused = matches!(other, Err(Error::Os(_)));
        drop(other);
        // 4. Two threads at once, 256 KiB buffers.
        barrier.wait();
        done.wait();
        let mut outs = [Outcome::default(); 2];
        for (o, w) in outs.iter_mut().zip(workers) {
            *o = w.join().unwrap();
        }
        let s3 = pool.stats();
        // The limit goes; now we may allocate and panic freely.
        set_address_space_limit(None);
        (first, s1, s2, reused, other_refused, outs, s3)
    });
    child_marker("REFUSED");
    println!("first {first:?}\nworkers {outs:?}\n{s1:?}\n{s3:?}");

    assert_eq!(first.other_errors, 0);
    assert_eq!(first.os_errors, 1);
    assert_eq!(first.errno, libc::ENOMEM, "mmap fails with ENOMEM");
    assert!(first.allocated > 0, "something fit under the limit");
    assert_eq!(s1.os_errors, 1);
    assert_consistent(&s1, first.allocated);
    assert!(
        reused,
        "a free slot is served after the OS refused a mapping"
    );
    assert_eq!((s2.hits, s2.misses), (s1.hits + 1, s1.misses), "{s2:?}");
    assert!(other_refused, "a 3 MiB slab did not fit either");
    let worker_refusals: u64 = outs.iter().map(|o| o.os_errors).sum();
    let worker_allocs: usize = outs.iter().map(|o| o.allocated).sum();
    assert!(outs.iter().all(|o| o.other_errors == 0 && o.os_errors == 3));
    assert_eq!(s3.os_errors, 1 + 1 + worker_refusals, "{s3:?}");
    assert_consistent(&s3, held.len() + worker_allocs);
    let class_errors: u64 = pool.class_stats().iter().map(|c| c.os_errors).sum();
    assert_eq!(class_errors, s3.os_errors);

    // Every buffer handed out under the limit holds its stamp.
    for (id, b) in held.iter().chain(side.iter().flatten()) {
        assert_stamped(b.as_max_slice(), *id);
    }
    // With memory again, the same requests succeed.
    let big = pool
        .allocate_page_size_buffer(3 * MIB)
        .expect("mapping works again");
    assert_eq!(big.max_len(), 3 * MIB);
    drop(big);
    drop(held);
    drop(side);
    let s = pool.stats();
    assert_consistent(&s, 0);
    assert_eq!(pool.trim(), s.bytes_reserved);
    assert_eq!(pool.stats().bytes_reserved, 0);
    println!("faults_injected={}", s.os_errors);
    child_marker("RECOVERED");
}
