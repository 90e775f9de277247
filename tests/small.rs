//! Small buffers (`allocate_buffer` up to `SMALL_MAX` bytes): packed into
//! shared slab pages between red zones, 64-byte aligned, never overlapping,
//! checked at release, guarded at the slab's ends, and tracked, counted,
//! measured, trimmed and capped like page buffers.

mod common;

use std::collections::HashSet;
use std::ptr;
use std::sync::mpsc;
use std::thread;

use common::{assert_stamped, child_marker, in_child, no_fault, run_child, stamp};
use pagepool::{
    page_size, BufferPool, CorruptionAction, Error, PageBuffer, SMALL_MAX, SMALL_SIZES,
};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Bytes of canary between packed slots (`slab::REDZONE`).
const REDZONE: usize = 64;

/// The small class that serves `n` bytes.
fn small_slot(n: usize) -> usize {
    *SMALL_SIZES.iter().find(|&&s| s >= n).unwrap()
}

#[test]
fn every_small_size_gets_its_class_and_alignment() {
    let pool = BufferPool::builder().name("small-sizes").build().unwrap();
    for n in 1..=SMALL_MAX {
        let b = pool.allocate_buffer(n).unwrap();
        assert_eq!((b.len(), b.max_len()), (0, n));
        assert_eq!(b.slot_len(), small_slot(n), "{n}");
        assert_eq!(b.as_ptr() as usize % 64, 0, "{n} is 64-byte aligned");
    }
    // Past the small classes: page classes, page-aligned, as for
    // `allocate_page_size_buffer`.
    let page = page_size();
    for n in [SMALL_MAX + 1, page - 1, page, page + 1, 64 << 10] {
        let b = pool.allocate_buffer(n).unwrap();
        assert_eq!(b.max_len(), n);
        assert_eq!(b.as_ptr() as usize % page, 0, "{n}");
        assert_eq!(Some(b.slot_len()), pool.slot_size_for(n));
    }
    // `allocate_page_size_buffer` never uses a small class.
    let b = pool.allocate_page_size_buffer(1).unwrap();
    assert_eq!((b.slot_len(), b.as_ptr() as usize % page), (page, 0));
    assert!(matches!(pool.allocate_buffer(0), Err(Error::ZeroSize)));
    let max = pool.max_buffer_size();
    assert!(matches!(
        pool.allocate_buffer(max + 1),
        Err(Error::TooLarge { requested, .. }) if requested == max + 1
    ));
    assert!(matches!(
        pool.allocate_buffer(usize::MAX),
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(pool.stats().rejected, 3);
}

#[test]
fn live_small_buffers_never_overlap_and_keep_their_bytes() {
    let mut rng = SmallRng::seed_from_u64(0x5a11);
    let pool = BufferPool::builder().name("small-overlap").build().unwrap();
    let mut live: Vec<(u64, PageBuffer)> = Vec::new();
    let mut next = 0u64;
    for round in 0..4 {
        while live.len() < 3000 {
            let n = rng.random_range(1..=SMALL_MAX);
            let mut b = pool.allocate_buffer(n).unwrap();
            stamp(b.as_max_slice_mut(), next);
            live.push((next, b));
            next += 1;
        }
        // No two live buffers share a byte (their slots, red zones apart).
        let mut spans: Vec<(usize, usize)> = live
            .iter()
            .map(|(_, b)| (b.as_ptr() as usize, b.as_ptr() as usize + b.slot_len()))
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 + REDZONE <= w[1].0, "round {round}: {w:?} overlap");
        }
        for (id, b) in &live {
            assert_stamped(b.as_max_slice(), *id);
        }
        // Release half, in random order.
        live.shuffle(&mut rng);
        live.truncate(1500);
    }
    drop(live);
    let s = pool.stats();
    assert_eq!((s.buffers_in_use, s.corruptions), (0, 0));
}

#[test]
fn threads_stamp_and_release_small_buffers_across_threads() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 20_000;
    let pool = BufferPool::builder().name("small-threads").build().unwrap();
    let (tx, rx) = mpsc::sync_channel::<(u64, PageBuffer)>(64);
    let releaser = thread::spawn(move || {
        let mut n = 0u64;
        for (id, b) in rx {
            assert_stamped(b.as_max_slice(), id);
            n += 1;
        }
        n
    });
    thread::scope(|s| {
        for t in 0..THREADS {
            let pool = pool.clone();
            let tx = tx.clone();
            s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(t);
                let mut mine = Vec::new();
                for i in 0..PER_THREAD {
                    let id = t * PER_THREAD + i;
                    let mut b = pool
                        .allocate_buffer(rng.random_range(1..=SMALL_MAX))
                        .unwrap();
                    stamp(b.as_max_slice_mut(), id);
                    if i % 2 == 0 {
                        tx.send((id, b)).unwrap(); // released on another thread
                    } else {
                        mine.push((id, b));
                        if mine.len() > 32 {
                            let (id, b) = mine.swap_remove(rng.random_range(0..mine.len()));
                            assert_stamped(b.as_max_slice(), id);
                        }
                    }
                }
                for (id, b) in mine {
                    assert_stamped(b.as_max_slice(), id);
                }
            });
        }
    });
    drop(tx);
    assert_eq!(releaser.join().unwrap(), THREADS * PER_THREAD / 2);
    let s = pool.stats();
    assert_eq!((s.buffers_in_use, s.corruptions), (0, 0));
    assert_eq!(s.allocations, THREADS * PER_THREAD);
}

/// A write one byte past a small slot lands in the red zone: reported at
/// release, naming the allocation site (`Abort`: report, then SIGABRT).
#[test]
fn a_write_into_the_red_zone_is_reported_at_release() {
    if in_child("redzone") {
        let pool = BufferPool::builder()
            .name("packed")
            .on_corruption(CorruptionAction::Abort)
            .build()
            .unwrap();
        let (mut buf, line) = (pool.allocate_buffer(1500).unwrap(), line!());
        child_marker(&format!("line={line}"));
        let end = buf.slot_len();
        // SAFETY (test): the red zone after the slot is mapped canary; the
        // write is the planted overflow.
        unsafe {
            let p = buf.as_mut_ptr().add(end);
            ptr::write_volatile(p, !ptr::read_volatile(p));
        }
        drop(buf);
        no_fault();
    }
    let out = run_child(
        "a_write_into_the_red_zone_is_reported_at_release",
        "redzone",
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{}", out.stderr);
    let line: u32 = out.value("line");
    for needle in [
        "write outside the slot (red zone or edge canary damaged)",
        "pool \"packed\"",
        "max_len 1500, slot 1536 bytes",
        "the first at offset 1536 (36 past max_len)",
        &format!("allocated at tests/small.rs:{line}:"),
    ] {
        assert!(
            out.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            out.stderr
        );
    }
}

/// Underflows, slack writes and red-zone writes are counted with `Log`, the
/// damage repaired, and the pool goes on.
#[test]
fn red_zone_and_slack_damage_is_counted_and_repaired() {
    let pool = BufferPool::builder().name("packed-log").build().unwrap();
    let mut a = pool.allocate_buffer(100).unwrap();
    let p = a.as_mut_ptr();
    // SAFETY (test): the byte before the slot is the red zone's last; byte
    // 100 is slack inside the 128-byte slot.
    unsafe {
        ptr::write_volatile(p.sub(1), !ptr::read_volatile(p.sub(1)));
        ptr::write_volatile(p.add(100), !ptr::read_volatile(p.add(100)));
    }
    drop(a);
    assert_eq!(pool.stats().corruptions, 2, "one red zone, one slack");
    // Repaired: the same slot comes back and releases cleanly.
    let again = pool.allocate_buffer(100).unwrap();
    assert_eq!(again.as_ptr(), p);
    drop(again);
    assert_eq!(pool.stats().corruptions, 2);
}

/// Every byte of the windows a standard release compares is damage it
/// counts: the 16 bytes of red zone each side of a packet's slot, and its
/// slack's head (to 16 bytes past `max_len`'s word) and last 8 bytes; and
/// for a page buffer, its slack's head and the page's last 8 bytes.
#[test]
fn every_byte_of_the_compared_windows_is_caught() {
    let pool = BufferPool::builder().name("windows").build().unwrap();
    let page = page_size();
    let cases: [(bool, std::ops::Range<isize>); 6] = [
        (true, -16..0),
        (true, 1500..1512),
        (true, 1528..1536),
        (true, 1536..1552),
        (false, 1500..1512),
        (false, page as isize - 8..page as isize),
    ];
    let mut expected = 0;
    for (packet, range) in cases {
        for at in range {
            let mut buf = if packet {
                pool.allocate_buffer(1500).unwrap()
            } else {
                pool.allocate_page_size_buffer(1500).unwrap()
            };
            // SAFETY (test): `at` is in the slot's slack or the red zones
            // around a packed slot, mapped canary; the flip is the planted
            // damage, repaired by the release.
            unsafe {
                let p = buf.as_mut_ptr().offset(at);
                ptr::write_volatile(p, !ptr::read_volatile(p));
            }
            drop(buf);
            expected += 1;
            assert_eq!(
                pool.stats().corruptions,
                expected,
                "packet {packet}, offset {at}"
            );
        }
    }
}

/// A packet whose slack is short (its last byte within 24 bytes of its
/// slot's end, where the release compares all of the slack): every byte of
/// the slack and of the 16 bytes of red zone each side is damage it counts,
/// and writes to the buffer's own bytes are not.
#[test]
fn a_short_slack_is_compared_whole() {
    let pool = BufferPool::builder().name("short").build().unwrap();
    let slot = small_slot(1500);
    let mut expected = 0;
    for len in slot - 24..slot {
        let damage = (-16..0).chain(len as isize..slot as isize + 16);
        for at in damage.chain(len as isize - 9..len as isize) {
            let mut buf = pool.allocate_buffer(len).unwrap();
            assert_eq!(buf.max_len(), len);
            // SAFETY (test): `at` is in the buffer, its slot's slack or the
            // red zones around the packed slot, mapped; a flip outside the
            // buffer is the planted damage, repaired by the release.
            unsafe {
                let p = buf.as_mut_ptr().offset(at);
                ptr::write_volatile(p, !ptr::read_volatile(p));
            }
            drop(buf);
            if !(0..len as isize).contains(&at) {
                expected += 1;
            }
            assert_eq!(pool.stats().corruptions, expected, "len {len}, offset {at}");
        }
    }
}

/// Past the last slot of a small slab (its red zone and the padding) is the
/// slab's guard page: SIGSEGV, and the fault handler names the buffer.
#[test]
fn past_the_last_small_slot_is_a_guard_page() {
    if in_child("small-guard") {
        pagepool::install_fault_handler().unwrap();
        let pool = BufferPool::builder().name("packed-guard").build().unwrap();
        // A whole slab of the 2048-byte class; the highest slot is last.
        let mut bufs: Vec<PageBuffer> = (0..64)
            .map(|_| pool.allocate_buffer(2048).unwrap())
            .collect();
        let slabs = pool.stats().slabs;
        bufs.sort_by_key(|b| b.as_ptr() as usize);
        let page = page_size();
        // The last slot of the first slab: the next slot is not right after it.
        let last = bufs
            .windows(2)
            .position(|w| w[1].as_ptr() as usize != w[0].as_ptr() as usize + 2048 + REDZONE)
            .unwrap_or(bufs.len() - 1);
        let b = &mut bufs[last];
        let end = b.as_ptr() as usize + 2048 + REDZONE;
        let guard = end.next_multiple_of(page);
        child_marker(&format!("slabs={slabs}"));
        child_marker(&format!("offset={}", guard - b.as_ptr() as usize));
        // SAFETY (test): the red zone and padding up to `guard` are mapped;
        // `guard` itself is the planted overflow into the guard page.
        unsafe {
            ptr::write_volatile(b.as_mut_ptr().add(2048 + REDZONE - 1), 0x5a);
            ptr::write_volatile(guard as *mut u8, 1);
        }
        no_fault();
    }
    let out = run_child("past_the_last_small_slot_is_a_guard_page", "small-guard");
    out.assert_sigsegv(&[]);
    let slabs: usize = out.value("slabs");
    assert!(slabs >= 2, "64 slots of 2 KiB span several small slabs");
    let offset: usize = out.value("offset");
    for needle in [
        "heap-buffer-overflow".to_owned(),
        format!("offset {offset} from buffer"),
        "pool \"packed-guard\", max_len 2048, slot 2048 bytes".to_owned(),
        "allocated at tests/small.rs:".to_owned(),
    ] {
        assert!(
            out.stderr.contains(&needle),
            "stderr lacks {needle:?}:\n{}",
            out.stderr
        );
    }
}

#[test]
fn small_buffers_are_tracked_counted_measured_and_trimmed() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let pool = metrics::with_local_recorder(&recorder, || {
        BufferPool::builder().name("small-acct").build().unwrap()
    });
    let check = pool.leak_check();
    let (kept, line) = (pool.allocate_buffer(1316).unwrap(), line!());
    let others: Vec<_> = (0..10).map(|_| pool.allocate_buffer(60).unwrap()).collect();
    drop(others);

    // Stats, per class.
    let classes = pool.class_stats();
    let c1536 = classes.iter().find(|c| c.slot_bytes == 1536).unwrap();
    let c64 = classes.iter().find(|c| c.slot_bytes == 64).unwrap();
    assert_eq!((c1536.allocations, c1536.buffers_in_use), (1, 1));
    assert_eq!(
        (c64.allocations, c64.releases, c64.buffers_in_use),
        (10, 10, 0)
    );
    let s = pool.stats();
    assert_eq!(s.buffers_in_use, 1);
    assert_eq!(s.bytes_in_use, 1536);

    // Leak report and check name the small buffer and its site.
    let report = pool.leak_report(std::time::Duration::ZERO);
    assert_eq!((report.buffers(), report.bytes()), (1, 1536));
    let text = report.to_string();
    assert!(text.contains(&format!("tests/small.rs:{line}")), "{text}");
    let err = check.finish().unwrap_err();
    assert_eq!(err.buffers(), 1);

    // Metrics: the small classes carry their slot size as the class label.
    pool.publish_metrics();
    let has = |class: &str| {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .any(|(key, _, _, _)| {
                key.key().name() == "pagepool_buffers_in_use"
                    && key
                        .key()
                        .labels()
                        .any(|l| l.key() == "class" && l.value() == class)
            })
    };
    assert!(has("1536") && has("64"));

    // Trim gives the idle small slab (of the 64-byte class) back.
    drop(kept);
    let before = pool.stats().slabs;
    let freed = pool.trim();
    assert!(freed > 0);
    assert_eq!(
        pool.stats().slabs,
        0,
        "both small slabs were idle ({before} before)"
    );
    assert_eq!(pool.stats().bytes_reserved, 0);
}

#[test]
fn the_cap_holds_with_small_buffers() {
    let page = page_size();
    let cap = 10 * page;
    let pool = BufferPool::builder()
        .name("small-cap")
        .max_bytes(cap)
        .build()
        .unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut held = Vec::new();
    let mut addrs = HashSet::new();
    let mut refused = 0;
    for _ in 0..5000 {
        match pool.allocate_buffer(rng.random_range(1..=SMALL_MAX)) {
            Ok(b) => {
                assert!(addrs.insert(b.as_ptr() as usize), "handed out twice");
                held.push(b);
            }
            Err(Error::Exhausted { limit, .. }) => {
                assert_eq!(limit, cap);
                refused += 1;
                if let Some(b) = held.pop() {
                    addrs.remove(&(b.as_ptr() as usize));
                }
            }
            Err(e) => panic!("{e}"),
        }
        assert!(pool.stats().bytes_reserved <= cap);
    }
    assert!(refused > 0, "the cap was reached");
    drop(held);
    assert_eq!(pool.stats().buffers_in_use, 0);
}

#[test]
fn paranoid_small_buffers_are_poisoned_not_quarantined() {
    let pool = BufferPool::builder()
        .name("small-paranoid")
        .debug(pagepool::DebugLevel::Paranoid)
        .build()
        .unwrap();
    for n in [1, 63, 64, 65, 1500, SMALL_MAX] {
        let mut b = pool.allocate_buffer(n).unwrap();
        assert!(b.as_max_slice().iter().all(|&x| x == 0), "zeroed at {n}");
        b.as_max_slice_mut().fill(0xab);
        drop(b);
    }
    let s = pool.stats();
    assert_eq!(
        (s.corruptions, s.buffers_quarantined, s.buffers_in_use),
        (0, 0, 0)
    );
}
