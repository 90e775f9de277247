//! `fork()` with pools live (issue #19, item 1): children never inherit a
//! pool lock held, may use and drop inherited buffers, and with
//! `inherit_on_fork(false)` do not have the slab pages at all.
//!
//! Each case runs in a re-run of this binary ([`common::run_child`]), a
//! process with no other test's threads, which then forks.

mod common;

use std::time::{Duration, Instant};

use common::{assert_stamped, in_child, run_child, stamp};
use pagepool::{BufferPool, Error, PageBuffer};

/// How a forked child ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Exited(i32),
    Signaled(i32),
    /// Still running after the timeout: killed.
    Hung,
}

/// Forks; the child runs `f` and `_exit`s with its code (101 if it panicked). Waits for the
/// child at most `timeout`, then kills it.
fn fork_and_wait(timeout: Duration, f: impl FnOnce() -> i32) -> End {
    // SAFETY: the child runs only `f` and then `_exit`s, never returning
    // into the test harness; this process has no thread but the test's,
    // the pool's publisher and the coarse clock (a fresh re-run of the
    // binary).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // A panic must not unwind into the harness's copy in the child.
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: ends the child at once, running no destructor or atexit
        // handler of the parent's.
        unsafe { libc::_exit(code) };
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waits, without blocking, for our own child `pid`.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid failed");
        if r == pid {
            return if libc::WIFEXITED(status) {
                End::Exited(libc::WEXITSTATUS(status))
            } else {
                End::Signaled(libc::WTERMSIG(status))
            };
        }
        if Instant::now() > deadline {
            // SAFETY: kills and reaps our own child `pid`, by its id.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return End::Hung;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The race: the publisher scans 200,000 outstanding slots every
/// millisecond while the parent forks; every child maps a slab and trims.
#[test]
fn children_forked_during_scans_never_hang() {
    if !in_child("race") {
        run_child("children_forked_during_scans_never_hang", "race").assert_success(&["hung=0"]);
        return;
    }
    let pool = BufferPool::builder()
        .name("fork-race")
        .guard_pages(false)
        .metrics_publish_interval(Duration::from_millis(1))
        .build()
        .unwrap();
    let packets: Vec<PageBuffer> = (0..200_000)
        .map(|_| pool.allocate_buffer(256).unwrap())
        .collect();
    let mut hung = 0;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_micros(300));
        let end = fork_and_wait(Duration::from_secs(2), || {
            // A class no slab serves yet: maps one (the slab lock), then
            // trims it (the slab lock and `mapped`, exclusively).
            let b = pool.allocate_page_size_buffer(64 << 10).unwrap();
            drop(b);
            pool.trim();
            0
        });
        match end {
            End::Exited(0) => {}
            End::Hung => hung += 1,
            other => panic!("a child ended {other:?}"),
        }
    }
    common::child_marker(&format!("hung={hung}"));
    drop(packets);
}

/// A child reads, writes and drops the buffers it inherited (their slots go
/// back to its copy of the pool), and allocates new ones.
#[test]
fn children_use_and_drop_inherited_buffers() {
    if !in_child("inherit") {
        run_child("children_use_and_drop_inherited_buffers", "inherit").assert_success(&["ok"]);
        return;
    }
    let pool = BufferPool::builder().name("fork-inherit").build().unwrap();
    let mut bufs: Vec<PageBuffer> = (0..64)
        .map(|_| pool.allocate_page_size_buffer(8192).unwrap())
        .collect();
    for (id, b) in bufs.iter_mut().enumerate() {
        stamp(b.as_max_slice_mut(), id as u64);
    }
    let end = fork_and_wait(Duration::from_secs(10), || {
        for (id, b) in bufs.iter_mut().enumerate() {
            assert_stamped(b.as_max_slice(), id as u64);
            b.as_max_slice_mut().fill(0xA5);
        }
        let before = pool.stats().buffers_in_use;
        let addrs: Vec<usize> = bufs.iter().map(|b| b.as_ptr() as usize).collect();
        bufs.clear();
        if pool.stats().buffers_in_use + 64 != before {
            return 2;
        }
        // New buffers, from the slots just dropped and from new slabs.
        let new: Vec<PageBuffer> = (0..256)
            .map(|_| pool.allocate_page_size_buffer(8192).unwrap())
            .collect();
        if !addrs
            .iter()
            .all(|a| new.iter().any(|b| b.as_ptr() as usize == *a))
        {
            return 3;
        }
        drop(new);
        pool.trim();
        0
    });
    assert_eq!(end, End::Exited(0));
    // The parent's buffers are untouched by the child's writes.
    for (id, b) in bufs.iter().enumerate() {
        assert_stamped(b.as_max_slice(), id as u64);
    }
    common::child_marker("ok");
}

/// With `inherit_on_fork(false)` the child has no slab pages: its copy of
/// the pool is closed, and touching an inherited buffer faults.
#[test]
fn not_inherited_slabs_fault_in_the_child() {
    if !in_child("dontfork") {
        run_child("not_inherited_slabs_fault_in_the_child", "dontfork").assert_success(&["ok"]);
        return;
    }
    let pool = BufferPool::builder()
        .name("fork-dontfork")
        .inherit_on_fork(false)
        .build()
        .unwrap();
    let mut buf = pool.allocate_page_size_buffer(4096).unwrap();
    stamp(buf.as_max_slice_mut(), 7);
    let end = fork_and_wait(Duration::from_secs(10), || {
        if !pool.is_closed() {
            return 2;
        }
        if !matches!(pool.allocate_page_size_buffer(4096), Err(Error::Closed)) {
            return 3;
        }
        // SAFETY: none: this read is meant to fault, the slab not being
        // mapped in this child.
        let byte = unsafe { std::ptr::read_volatile(buf.as_ptr()) };
        std::hint::black_box(byte);
        4
    });
    assert_eq!(end, End::Signaled(libc::SIGSEGV));
    assert_stamped(buf.as_max_slice(), 7);
    assert!(!pool.is_closed());
    drop(buf);
    common::child_marker("ok");
}

/// A parent thread waiting for room at the fork is not in the child: the
/// child's own allocations are not refused on its account.
#[test]
fn the_parents_waiters_do_not_block_the_child() {
    if !in_child("waiters") {
        run_child("the_parents_waiters_do_not_block_the_child", "waiters").assert_success(&["ok"]);
        return;
    }
    let pool = BufferPool::builder()
        .name("fork-waiters")
        .guard_pages(false)
        .max_bytes(1 << 20)
        .build()
        .unwrap();
    let mut held: Vec<PageBuffer> = Vec::new();
    while let Ok(b) = pool.allocate_page_size_buffer(4096) {
        held.push(b);
    }
    assert!(!held.is_empty());
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.allocate_page_size_buffer_timeout(4096, Duration::from_secs(20))
                .map(drop)
        })
    };
    while pool.stats().waiting == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let end = fork_and_wait(Duration::from_secs(10), || {
        drop(held.pop());
        match pool.allocate_page_size_buffer(4096) {
            Ok(_) => 0,
            Err(_) => 2,
        }
    });
    assert_eq!(end, End::Exited(0));
    drop(held.pop());
    waiter.join().unwrap().unwrap();
    common::child_marker("ok");
}

/// Forks 30 children while `busy` keeps a lock of the parent's taken most of
/// the time on another thread; each child runs `child` (0 for success).
/// Returns how many hung.
#[cfg(any(feature = "capi", all(feature = "io-uring", target_os = "linux")))]
fn hung_children(busy: impl Fn() + Send + Sync, child: impl Fn() -> i32) -> usize {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                busy();
            }
        });
        let mut hung = 0;
        for _ in 0..30 {
            std::thread::sleep(Duration::from_micros(300));
            match fork_and_wait(Duration::from_secs(2), &child) {
                End::Exited(0) => {}
                End::Hung => hung += 1,
                other => panic!("a child ended {other:?}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        hung
    })
}

/// A C program forks while another thread is in `pagepool_*` calls (each
/// takes the handle table's lock): its children's calls never block.
#[cfg(feature = "capi")]
#[test]
fn c_callers_forked_mid_call_never_hang() {
    use pagepool::capi::*;
    if !in_child("capi") {
        run_child("c_callers_forked_mid_call_never_hang", "capi").assert_success(&["hung=0"]);
        return;
    }
    let mut alloc = std::ptr::null_mut();
    let mut buf = std::ptr::null_mut();
    // SAFETY: valid out-pointers and a NUL-terminated name.
    unsafe {
        assert_eq!(
            pagepool_allocator_create(c"fork-capi".as_ptr(), 0, &mut alloc),
            S_OK
        );
        assert_eq!(
            pagepool_allocate_page_size_buffer(alloc, 4096, &mut buf),
            S_OK
        );
    }
    // Handles are plain numbers: sent to the busy thread as such.
    let (a, b) = (alloc as usize, buf as usize);
    let hung = hung_children(
        // SAFETY: `b` is a live buffer handle until the end of the test.
        || unsafe {
            assert_eq!(
                pagepool_buffer_set_length(b as *mut pagepool_buffer, 100),
                S_OK
            );
        },
        || {
            let mut fresh = std::ptr::null_mut();
            // SAFETY: `a` is a live allocator handle; valid out-pointers.
            unsafe {
                let ok = pagepool_allocate_page_size_buffer(a as *mut _, 8192, &mut fresh) == S_OK
                    && pagepool_buffer_release(fresh, std::ptr::null_mut()) == S_OK;
                i32::from(!ok) * 2
            }
        },
    );
    common::child_marker(&format!("hung={hung}"));
    // SAFETY: the handles made above, each released once.
    unsafe {
        assert_eq!(pagepool_buffer_release(buf, std::ptr::null_mut()), S_OK);
        assert_eq!(pagepool_allocator_destroy(alloc), S_OK);
    }
}

/// A registry on `pool`; `None` where io_uring is unavailable, after
/// printing SKIPPED and the child's success `marker`.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
fn registry_or_skip(pool: &BufferPool, marker: &str) -> Option<pagepool::uring::Registry> {
    match pagepool::uring::Registry::new(pool) {
        Ok(r) => Some(r),
        Err(e) if pagepool::uring::is_unavailable(&e) => {
            eprintln!("SKIPPED: no io_uring here ({e})");
            common::child_marker(marker);
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// The io_uring registry's table lock, taken by lookups on another thread
/// at the fork, does not stop a child from mapping and trimming slabs.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[test]
fn children_forked_during_registry_lookups_never_hang() {
    if !in_child("uring-race") {
        run_child(
            "children_forked_during_registry_lookups_never_hang",
            "uring-race",
        )
        .assert_success(&["hung=0"]);
        return;
    }
    let pool = BufferPool::builder()
        .name("fork-uring-race")
        .build()
        .unwrap();
    let Some(registry) = registry_or_skip(&pool, "hung=0") else {
        return;
    };
    let buf = pool.allocate_page_size_buffer(4096).unwrap();
    assert!(buf.fixed_index(&registry).is_some());
    let hung = hung_children(
        || {
            std::hint::black_box(buf.fixed_index(&registry));
        },
        || {
            // A class no slab serves yet: mapped (and registered, in the
            // parent), then trimmed.
            drop(pool.allocate_page_size_buffer(1 << 20).unwrap());
            pool.trim();
            0
        },
    );
    common::child_marker(&format!("hung={hung}"));
}

/// A child's copy of a registry names no table index and enters no ring
/// (both are the parent's), and dropping it leaves the parent's tables
/// alone: the parent's `READ_FIXED` reads still work after the child ends.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[test]
fn a_childs_registry_leaves_the_parents_table_alone() {
    use pagepool::direct::DirectFile;
    if !in_child("uring-inherit") {
        run_child(
            "a_childs_registry_leaves_the_parents_table_alone",
            "uring-inherit",
        )
        .assert_success(&["ok"]);
        return;
    }
    let pool = BufferPool::builder().name("fork-uring").build().unwrap();
    let mut registry = registry_or_skip(&pool, "ok");
    if registry.is_none() {
        return;
    }
    let path = std::env::temp_dir().join(format!("pagepool-fork-uring-{}", std::process::id()));
    std::fs::write(&path, vec![0x5Au8; 64 << 10]).unwrap();
    let file = DirectFile::open(&path).unwrap();
    let mut buf = pool.allocate_page_size_buffer(64 << 10).unwrap();
    let index = buf.fixed_index(registry.as_ref().unwrap());
    assert!(index.is_some());
    let end = fork_and_wait(Duration::from_secs(10), || {
        let r = registry.as_ref().unwrap();
        if buf.fixed_index(r).is_some() {
            return 2;
        }
        if r.read_fixed(&file, &mut buf, 0).is_ok() || r.ring(0).unwrap().lock().is_ok() {
            return 3;
        }
        // Mapping and trimming in the child touch no table.
        drop(pool.allocate_page_size_buffer(1 << 20).unwrap());
        pool.trim();
        drop(registry.take());
        0
    });
    assert_eq!(end, End::Exited(0));
    let r = registry.as_ref().unwrap();
    assert_eq!(buf.fixed_index(r), index);
    buf.as_max_slice_mut().fill(0);
    assert_eq!(r.read_fixed(&file, &mut buf, 0).unwrap(), 64 << 10);
    assert!(buf.iter().all(|&b| b == 0x5A));
    let stats = r.stats();
    assert_eq!(stats.retired, 0);
    drop(buf);
    drop(registry);
    std::fs::remove_file(&path).unwrap();
    common::child_marker("ok");
}

/// A child has no publisher thread: its first slab mapping starts one,
/// which ticks the pool the child inherited (and the parent's goes on).
#[test]
fn a_child_restarts_the_publisher_lazily() {
    if !in_child("publisher") {
        run_child("a_child_restarts_the_publisher_lazily", "publisher").assert_success(&["ok"]);
        return;
    }
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let pool = BufferPool::builder()
        .name("fork-publisher")
        .site_metrics(0)
        .metrics_publish_interval(Duration::from_millis(1))
        .build()
        .unwrap();
    let tickers = || {
        common::thread_names()
            .iter()
            .filter(|n| *n == "pagepool-ticker")
            .count()
    };
    // A new thread names itself once it runs.
    let tickers_become = |n: usize| {
        let start = Instant::now();
        while tickers() != n && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        tickers() == n
    };
    assert!(tickers_become(1));
    // The published `pagepool_bytes_in_use`, once it equals `want`.
    let published = |want: f64| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let seen = snapshotter.snapshot().into_vec().into_iter().any(|(k, _, _, v)| {
                k.key().name() == pagepool::metrics::BYTES_IN_USE
                    && matches!(v, metrics_util::debugging::DebugValue::Gauge(g) if g.into_inner() == want)
            });
            if seen {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    };
    let end = fork_and_wait(Duration::from_secs(10), || {
        if tickers() != 0 {
            return 2;
        }
        // A class no slab serves yet: maps one, which restarts the publisher.
        let b = pool.allocate_page_size_buffer(64 << 10).unwrap();
        if !tickers_become(1) {
            return 3;
        }
        // Published by the child's new thread: no `publish_metrics` here.
        if !published(b.slot_len() as f64) {
            return 4;
        }
        0
    });
    assert_eq!(end, End::Exited(0));
    assert_eq!(tickers(), 1);
    let b = pool.allocate_page_size_buffer(4096).unwrap();
    assert!(published(b.slot_len() as f64));
    common::child_marker("ok");
}
