//! Quotas: one client cannot hold more than its cap, whatever its buffers
//! become; the errors say which cap was hit; async waits on a quota wait
//! for its room, then the pool's; stalled clients do not starve a new one.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

mod common;

use pagepool::{page_size, BufferPool, CorruptionAction, Error};

#[test]
fn the_quota_caps_slot_bytes_and_says_which_cap_was_hit() {
    let page = page_size();
    let pool = BufferPool::builder()
        .name("quota-caps")
        .max_bytes(64 * page)
        .slab_size(4 * page)
        .build()
        .unwrap();
    let client = pool.quota(4 * page);
    // 5000 bytes take a two-page slot: two of them fill the quota.
    let a = client.allocate_page_size_buffer(5000).unwrap();
    let b = client.allocate_page_size_buffer(5000).unwrap();
    match client.allocate_page_size_buffer(1) {
        Err(Error::QuotaExceeded {
            requested,
            charge,
            held,
            limit,
        }) => assert_eq!(
            (requested, charge, held, limit),
            (1, page, 4 * page, 4 * page)
        ),
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    // The pool itself still has room, for others.
    let other = pool.allocate_page_size_buffer(page).unwrap();
    let s = client.stats();
    assert_eq!((s.held_bytes, s.buffers, s.refusals), (4 * page, 2, 1));
    let p = pool.stats();
    assert_eq!(
        (p.quotas, p.bytes_in_quotas, p.quota_refusals),
        (1, 4 * page, 1)
    );
    drop(a);
    assert_eq!(client.stats().held_bytes, 2 * page);
    // A quota under a full pool gets the pool's error, not its own.
    let tiny = BufferPool::builder()
        .name("quota-pool-cap")
        .max_bytes(3 * page)
        .build()
        .unwrap();
    let q = tiny.quota(1 << 30);
    let only = q.allocate_page_size_buffer(page).unwrap();
    assert!(matches!(
        q.allocate_page_size_buffer(page),
        Err(Error::Exhausted { .. })
    ));
    assert_eq!(
        q.stats().held_bytes,
        page,
        "a refused allocation holds nothing"
    );
    // Bad input is the pool's refusal too.
    assert!(matches!(
        q.allocate_page_size_buffer(0),
        Err(Error::ZeroSize)
    ));
    drop((b, other, only));
    assert_eq!(pool.stats().bytes_in_quotas, 0);
}

#[test]
fn buffers_count_until_their_last_owner_drops_even_past_the_handle() {
    let pool = BufferPool::new();
    let client = pool.quota(1 << 20);
    let mut buf = client.allocate_buffer(1500).unwrap();
    buf.extend_from_slice(&[7; 1500]).unwrap();
    let shared = buf.freeze();
    let slice = shared.slice(0..100);
    drop(shared);
    let clone = client.clone();
    drop(client);
    assert_eq!(clone.stats().buffers, 1, "a slice still holds the slot");
    drop(clone);
    // The handle is gone; its buffer still counts in the pool's totals.
    let s = pool.stats();
    assert_eq!((s.quotas, s.bytes_in_quotas), (0, 1536));
    drop(slice);
    let s = pool.stats();
    assert_eq!((s.bytes_in_quotas, s.buffers_in_use), (0, 0));
}

#[test]
fn an_async_wait_on_a_quota_is_woken_by_its_own_release_and_gives_back_when_dropped() {
    let page = page_size();
    let pool = BufferPool::new();
    let client = pool.quota(2 * page);
    let first = client.allocate_page_size_buffer(2 * page).unwrap();
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut next = pin!(client.allocate_page_size_buffer_async(page));
    assert!(next.as_mut().poll(&mut cx).is_pending());
    assert_eq!(client.stats().waiting, 1);
    // Another quota of the same pool is not held back.
    let other = pool.quota(page);
    let theirs = other.allocate_page_size_buffer(page).unwrap();
    drop(first);
    let Poll::Ready(Ok(mine)) = next.as_mut().poll(&mut cx) else {
        panic!("the quota's release did not serve its waiter");
    };
    assert_eq!(client.stats().held_bytes, page);
    // A request above the whole cap fails at once rather than wait for ever.
    assert!(matches!(
        futures_executor::block_on(client.allocate_page_size_buffer_async(4 * page)),
        Err(Error::QuotaExceeded { .. })
    ));
    // A wait cut short at the quota, and one cut short at the pool after it
    // reserved: neither leaves bytes held.
    let mut cut = Box::pin(client.allocate_page_size_buffer_async(2 * page));
    assert!(cut.as_mut().poll(&mut cx).is_pending());
    drop(cut);
    assert_eq!(client.stats(), {
        let mut s = client.stats();
        s.held_bytes = page;
        s.waiting = 0;
        s
    });
    let full = BufferPool::builder()
        .name("quota-then-pool")
        .max_bytes(3 * page)
        .build()
        .unwrap();
    let q = full.quota(1 << 20);
    let hog = full.allocate_page_size_buffer(page).unwrap();
    let mut at_pool = Box::pin(q.allocate_page_size_buffer_async(page));
    assert!(at_pool.as_mut().poll(&mut cx).is_pending());
    assert_eq!(
        q.stats().held_bytes,
        page,
        "reserved while waiting at the pool"
    );
    drop(at_pool);
    assert_eq!(
        q.stats().held_bytes,
        0,
        "the reservation was not given back"
    );
    assert_eq!(full.stats().waiting, 0);
    // The pool's close ends a quota's waits too.
    let mut closing = Box::pin(q.allocate_page_size_buffer_async(page));
    assert!(closing.as_mut().poll(&mut cx).is_pending());
    full.close();
    assert!(matches!(
        closing.as_mut().poll(&mut cx),
        Poll::Ready(Err(Error::Closed))
    ));
    drop((mine, theirs, hog));
}

/// The story, scaled down: clients that requested a large file and
/// stopped reading each hold all their quota, yet a new client's request
/// is served at once, and the stalled ones' waits stay queued at their own
/// quotas, not the pool.
#[test]
fn stalled_clients_cannot_starve_a_new_one() {
    let pool = BufferPool::builder()
        .name("quota-stalled")
        .max_bytes(48 << 20)
        .build()
        .unwrap();
    let per_client = 1 << 20;
    let stalled: Vec<_> = (0..40).map(|_| pool.quota(per_client)).collect();
    let mut held = Vec::new();
    for q in &stalled {
        while let Ok(b) = q.allocate_page_size_buffer(256 << 10) {
            held.push(b);
        }
        assert!(matches!(
            q.allocate_page_size_buffer(256 << 10),
            Err(Error::QuotaExceeded { .. })
        ));
    }
    let s = pool.stats();
    assert_eq!(s.bytes_in_quotas, 40 * per_client);
    assert!(s.bytes_reserved < 48 << 20, "{s:?}");
    let newcomer = pool.quota(per_client);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        // The stalled clients keep asking (and wait at their quotas)...
        let waits: Vec<_> = stalled
            .iter()
            .map(|q| q.allocate_page_size_buffer_async(256 << 10))
            .collect();
        let mut waits: Vec<_> = waits.into_iter().map(Box::pin).collect();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for w in &mut waits {
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            pool.stats().waiting,
            0,
            "quota waits hold no place at the pool"
        );
        // ...and the newcomer's 1 MiB request is served at once.
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            newcomer.allocate_page_size_buffer_async(1 << 20),
        )
        .await
        .expect("the newcomer waited")
        .unwrap();
        assert_eq!(got.max_len(), 1 << 20);
    });
    drop(held);
    assert_eq!(pool.stats().bytes_in_quotas, 0);
}

/// A quota's buffer keeps its account in its slot while it lives; its
/// release gives that word back to the release site, which a poison report
/// then names (`Abort`: report, then SIGABRT).
#[test]
fn a_quota_buffer_written_after_release_is_reported_with_its_release_site() {
    if common::in_child("quota-poison") {
        let pool = BufferPool::builder()
            .name("quota-poison")
            .poison(1, usize::MAX)
            .on_corruption(CorruptionAction::Abort)
            .build()
            .unwrap();
        let quota = pool.quota(1 << 20);
        let mut buf = quota.allocate_buffer(1500).unwrap();
        let p = buf.as_mut_ptr();
        let line = line!() + 1;
        buf.release();
        common::child_marker(&format!("line={line}"));
        assert_eq!(quota.stats().buffers, 0, "credited at release");
        // SAFETY (test): the packed slot stays mapped in its slab; the write
        // into its poison is the planted use after release.
        unsafe { std::ptr::write_volatile(p.add(7), 0) };
        let again = quota.allocate_buffer(1500).unwrap();
        drop(again);
        common::no_fault();
    }
    let out = common::run_child(
        "a_quota_buffer_written_after_release_is_reported_with_its_release_site",
        "quota-poison",
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{}", out.stderr);
    let line: u32 = out.value("line");
    let needle = format!("released at tests/quota.rs:{line}:");
    assert!(
        out.stderr.contains(&needle),
        "stderr lacks {needle:?}:\n{}",
        out.stderr
    );
}
