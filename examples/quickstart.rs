//! A tour of pagepool: alignment, lengths, packets, reuse, the byte cap and
//! the bounded wait, statistics, and the guard-page layout around a buffer.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::time::Duration;

use pagepool::{page_size, BufferPool, Error, SMALL_SIZES};

fn main() -> Result<(), Error> {
    let page = page_size();
    let pool = BufferPool::builder()
        .name("quickstart")
        .max_bytes(64 << 20)
        .build()?;
    println!("page size: {page} bytes; pool {:?}", pool.name());
    let classes = pool.size_classes();
    let pages = &classes[SMALL_SIZES.len()..];
    println!(
        "{} small classes {:?} B, then {} page classes from {} B to {} B: {:?} ...",
        SMALL_SIZES.len(),
        SMALL_SIZES,
        pages.len(),
        pages[0],
        pages[pages.len() - 1],
        &pages[..12]
    );

    // 1. AllocatePageSizeBuffer: page-aligned, max_len exactly as requested.
    println!("\n-- alignment and lengths");
    for size in [1, 1500, page, page + 1, 188 * 7 * 50, (1 << 20) + 3] {
        let buf = pool.allocate_page_size_buffer(size)?;
        println!(
            "request {size:>8} B -> {:p} aligned={} max_len={:>8} slot_len={:>8} len={}",
            buf.as_ptr(),
            (buf.as_ptr() as usize).is_multiple_of(page),
            buf.max_len(),
            buf.slot_len(),
            buf.len()
        );
    }

    // 1b. AllocateBuffer: packets packed between red zones, 64-byte aligned.
    println!("\n-- packets (allocate_buffer)");
    for size in [60, 188, 1316, 1500, 2048, 2049] {
        let buf = pool.allocate_buffer(size)?;
        println!(
            "request {size:>8} B -> {:p} 64-aligned={} page-aligned={} slot_len={:>5}",
            buf.as_ptr(),
            (buf.as_ptr() as usize).is_multiple_of(64),
            (buf.as_ptr() as usize).is_multiple_of(page),
            buf.slot_len()
        );
    }

    // 2. SetLength within the maximum, and its failure past it.
    println!("\n-- set_len");
    let mut buf = pool.allocate_page_size_buffer(1316)?; // 7 MPEG-TS packets
    let n = fill(buf.as_max_slice_mut());
    buf.set_len(n)?;
    println!(
        "filled {} of {} bytes: {:02x?}...",
        buf.len(),
        buf.max_len(),
        &buf[..8]
    );
    match buf.set_len(1317) {
        Err(e) => println!("set_len(1317) refused: {e}"),
        Ok(()) => unreachable!("set_len past max_len must fail"),
    }

    // 3. The guard layout around this buffer.
    println!("\n-- guard pages (on: {})", pool.guard_pages());
    let start = buf.as_ptr() as usize;
    let end = start + buf.slot_len();
    println!(
        "  [{:#x}, {:#x})  guard page: as_ptr() - 1 faults",
        start - page,
        start
    );
    println!(
        "  [{start:#x}, {end:#x})  the slot: {} bytes usable",
        buf.slot_len()
    );
    println!(
        "  [{end:#x}, {:#x})  guard page: as_ptr() + slot_len() faults",
        end + page
    );
    println!(
        "  MADV_GUARD_INSTALL in use: {:?} (otherwise mprotect)",
        pagepool::guard_markers_supported()
    );

    // 4. Reuse: released slots come back without a system call.
    println!("\n-- reuse");
    drop(buf);
    let before = pool.stats();
    for _ in 0..10_000 {
        let b = pool.allocate_page_size_buffer(1316)?;
        drop(b);
    }
    let after = pool.stats();
    println!(
        "10,000 allocate+release: hits +{}, misses +{}, bytes_reserved {} -> {}",
        after.hits - before.hits,
        after.misses - before.misses,
        before.bytes_reserved,
        after.bytes_reserved
    );

    // 5. The byte cap: Exhausted, then success once buffers come back.
    println!("\n-- the 64 MiB cap");
    let mut held = Vec::new();
    let err = loop {
        match pool.allocate_page_size_buffer(4 << 20) {
            Ok(b) => held.push(b),
            Err(e) => break e,
        }
    };
    println!("held {} buffers of 4 MiB, then: {err}", held.len());
    let short = pool.allocate_page_size_buffer_timeout(4 << 20, Duration::from_millis(10));
    println!("waiting 10 ms for one: {}", short.expect_err("still full"));
    // A release on another thread wakes a waiting call.
    let one = held.pop().expect("held some");
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        drop(one);
    });
    let again = pool.allocate_page_size_buffer_timeout(4 << 20, Duration::from_secs(5))?;
    releaser.join().expect("releaser");
    println!(
        "woken by a release on another thread: allocated again at {:p}",
        again.as_ptr()
    );
    drop(again);
    drop(held);

    // 6. Statistics and trim.
    println!("\n-- stats");
    println!("{:#?}", pool.stats());
    let freed = pool.trim();
    println!(
        "trim gave back {freed} bytes; reserved now {}",
        pool.stats().bytes_reserved
    );
    Ok(())
}

/// Writes a recognisable pattern (MPEG-TS sync bytes every 188 bytes).
fn fill(buf: &mut [u8]) -> usize {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = if i % 188 == 0 { 0x47 } else { i as u8 };
    }
    buf.len()
}
