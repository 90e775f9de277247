//! Feature `bytes`: `PageBuffer` as a `bytes::BufMut` (filled by tokio's
//! `read_buf` from a real file and from a TCP socket, and by generic
//! `BufMut` writers), and `SharedCursor` as a `bytes::Buf`.
#![cfg(feature = "bytes")]

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use pagepool::{page_size, BufferPool, PageBuffer, SharedCursor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every async test finishes well within this, or fails.
const DEADLINE: Duration = Duration::from_secs(30);

fn pool(name: &str) -> BufferPool {
    BufferPool::builder().name(name).build().unwrap()
}

/// `len` bytes, each unique to its offset (and to `id`).
fn pattern(id: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    common::stamp(&mut v, id);
    v
}

/// A buffer of `max_len` whose whole max slice holds 0xAA, length 0.
fn sentinel(pool: &BufferPool, max_len: usize) -> PageBuffer {
    let mut buf = pool.allocate_page_size_buffer(max_len).unwrap();
    buf.as_max_slice_mut().fill(0xaa);
    buf
}

/// The panic message of `f`, which must panic.
#[track_caller]
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p.downcast_ref::<&str>().unwrap_or(&"?").to_string(),
    }
}

/// A file under the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, data: &[u8]) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("pagepool-bytes-io-{}-{name}", std::process::id()));
        std::fs::write(&path, data).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---- read_buf from a real file ----------------------------------------------

/// Fills pooled buffers from a file with `read_buf` alone: each fills to
/// exactly `max_len`, a full buffer reads nothing more (`Ok(0)`, the file
/// position kept), and together they hold the file byte for byte.
#[tokio::test]
async fn read_buf_fills_pooled_buffers_from_a_file_and_stops_at_max_len() {
    const MAX: usize = 100_000; // not a page multiple
    let data = pattern(1, 3 * MAX + 12_345);
    let file = TempFile::new("whole", &data);
    let pool = pool("bytes-io-file");

    tokio::time::timeout(DEADLINE, async {
        let mut f = tokio::fs::File::open(&file.0).await.unwrap();
        let mut got = Vec::new();
        loop {
            let mut buf = sentinel(&pool, MAX);
            assert_eq!(buf.remaining_mut(), MAX);
            let mut eof = false;
            while buf.has_remaining_mut() {
                let before = buf.len();
                let n = f.read_buf(&mut buf).await.unwrap();
                assert_eq!(buf.len(), before + n, "read_buf advances len by n");
                assert_eq!(buf.remaining_mut(), MAX - buf.len());
                if n == 0 {
                    eof = true;
                    break;
                }
            }
            assert!(buf.len() <= buf.max_len());
            if !eof {
                assert_eq!(buf.len(), MAX, "filled to max_len exactly");
                assert_eq!(f.read_buf(&mut buf).await.unwrap(), 0, "full: no read");
                assert_eq!(buf.len(), MAX);
            }
            let at = got.len();
            assert_eq!(&buf[..], &data[at..at + buf.len()], "buffer at offset {at}");
            got.extend_from_slice(&buf);
            if eof {
                assert!(buf.remaining_mut() > 0, "the last buffer is partial");
                break;
            }
        }
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the buffers hold the file");
    })
    .await
    .expect("file reads finish in time");

    let s = pool.stats();
    assert_eq!(s.buffers_in_use, 0);
    assert!(s.hits >= 3, "each buffer went back and was reused: {s:?}");
}

/// Reads a file in small, odd chunks (`BufMut::limit` over the buffer), so
/// `chunk_mut` and `advance_mut` run at many unaligned positions, until the
/// buffer is full; the spare bytes past `len()` are never touched.
#[tokio::test]
async fn read_buf_in_small_chunks_until_the_buffer_is_full() {
    const MAX: usize = 3 * 4096 + 100;
    const CHUNK: usize = 1000;
    let data = pattern(2, 2 * MAX);
    let file = TempFile::new("chunks", &data);
    let pool = pool("bytes-io-chunks");
    let mut buf = sentinel(&pool, MAX);
    assert_eq!(buf.as_ptr() as usize % page_size(), 0);

    tokio::time::timeout(DEADLINE, async {
        let mut f = tokio::fs::File::open(&file.0).await.unwrap();
        let mut calls = 0;
        while buf.has_remaining_mut() {
            let n = f.read_buf(&mut (&mut buf).limit(CHUNK)).await.unwrap();
            assert!(n > 0 && n <= CHUNK, "a chunk of {n}");
            calls += 1;
            let len = buf.len();
            assert_eq!(&buf[..], &data[..len]);
            assert!(
                buf.as_max_slice()[len..].iter().all(|&b| b == 0xaa),
                "nothing written past len() {len}"
            );
        }
        assert_eq!(buf.len(), MAX);
        assert!(calls >= MAX.div_ceil(CHUNK), "{calls} reads");
        assert_eq!(f.read_buf(&mut buf).await.unwrap(), 0, "full: no read");

        // The file position was kept: the next buffer starts at MAX.
        let mut next = pool.allocate_page_size_buffer(MAX).unwrap();
        while f.read_buf(&mut next).await.unwrap() > 0 {}
        assert_eq!(&next[..], &data[MAX..]);
    })
    .await
    .expect("file reads finish in time");
    assert_eq!(&buf[..], &data[..MAX]);
}

// ---- read_buf from a socket -------------------------------------------------

/// A writer task sends a stamped stream in uneven writes; the reader fills
/// pooled buffers with `read_buf` straight from the socket, each to
/// `max_len` (the last one partly), and every byte arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_buf_fills_pooled_buffers_from_a_socket() {
    const MAX: usize = 64 * 1024;
    const TOTAL: usize = 5 * MAX + 4321;
    let data = pattern(3, TOTAL);
    let pool = pool("bytes-io-socket");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let sent = data.clone();
    let writer = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut rest = &sent[..];
        let mut step = 1;
        while !rest.is_empty() {
            step = (step * 7919) % 9000 + 1; // 1..=9000 bytes, uneven
            let n = step.min(rest.len());
            s.write_all(&rest[..n]).await.unwrap();
            rest = &rest[n..];
        }
        s.shutdown().await.unwrap();
    });

    let frozen = tokio::time::timeout(DEADLINE, async {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut frozen = Vec::new();
        loop {
            let mut buf = pool.allocate_page_size_buffer(MAX).unwrap();
            while buf.has_remaining_mut() {
                if sock.read_buf(&mut buf).await.unwrap() == 0 {
                    break;
                }
            }
            let full = !buf.has_remaining_mut();
            if !buf.is_empty() {
                frozen.push(buf.freeze());
            }
            if !full {
                return frozen;
            }
        }
    })
    .await
    .expect("the socket stream arrives in time");
    writer.await.unwrap();

    let lens: Vec<usize> = frozen.iter().map(|b| b.len()).collect();
    assert_eq!(lens, [MAX, MAX, MAX, MAX, MAX, 4321]);
    let mut at = 0;
    for b in &frozen {
        assert_eq!(&b[..], &data[at..at + b.len()], "buffer at offset {at}");
        at += b.len();
    }
    assert_eq!(pool.stats().buffers_in_use, frozen.len());
    drop(frozen);
    assert_eq!(pool.stats().buffers_in_use, 0);
}

// ---- BufMut methods ---------------------------------------------------------

#[test]
fn put_methods_append_and_advance_len() {
    let pool = pool("bytes-bufmut");
    let mut buf = sentinel(&pool, 32);
    buf.put_u8(0x47);
    buf.put_i8(-1);
    buf.put_u16(0x0102);
    buf.put_u32_le(0x0403_0201);
    buf.put_u64(0x1122_3344_5566_7788);
    buf.put_slice(b"ts");
    buf.put_bytes(0, 3);
    buf.put(&b"xy"[..]);
    let expect: &[u8] =
        b"\x47\xff\x01\x02\x01\x02\x03\x04\x11\x22\x33\x44\x55\x66\x77\x88ts\0\0\0xy";
    assert_eq!(&buf[..], expect);
    assert_eq!(buf.len(), expect.len());
    assert_eq!(buf.remaining_mut(), 32 - expect.len());
    assert!(buf.as_max_slice()[expect.len()..]
        .iter()
        .all(|&b| b == 0xaa));
}

#[test]
fn chunk_mut_is_the_spare_bytes_and_advance_mut_moves_len() {
    let pool = pool("bytes-bufmut");
    let mut buf = sentinel(&pool, 10);
    buf.extend_from_slice(b"abc").unwrap();
    let base = buf.as_ptr();
    let chunk = buf.chunk_mut();
    assert_eq!(chunk.as_mut_ptr() as *const u8, base.wrapping_add(3));
    assert_eq!(chunk.len(), 7);
    chunk[..2].copy_from_slice(b"de");
    // SAFETY: the two bytes after len() were just written.
    unsafe { buf.advance_mut(2) };
    assert_eq!(&buf[..], b"abcde");

    // advance_mut over bytes not written this time: the slot's bytes are
    // initialised, so they read back as what was there (the sentinel).
    // SAFETY: every byte of a PageBuffer is initialised memory.
    unsafe { buf.advance_mut(1) };
    assert_eq!(&buf[..], b"abcde\xaa");

    buf.set_len(10).unwrap();
    assert_eq!(buf.remaining_mut(), 0);
    assert!(!buf.has_remaining_mut());
    assert_eq!(buf.chunk_mut().len(), 0, "empty exactly when full");
    // SAFETY: a zero-byte advance is a no-op, even when full.
    unsafe { buf.advance_mut(0) };
    assert_eq!(buf.len(), 10);
    buf.clear();
    assert_eq!(buf.chunk_mut().len(), 10, "room comes back with clear");
}

#[test]
fn writes_past_max_len_panic_and_change_nothing() {
    let pool = pool("bytes-bufmut");
    let mut buf = sentinel(&pool, 8);
    buf.put_slice(b"abcde");

    let msg = panic_message(|| buf.put_u32(0xdead_beef)); // 5 + 4 > 8
    assert!(
        msg.contains("4 bytes after len() 5 pass max_len() 8"),
        "{msg}"
    );
    panic_message(|| buf.put_slice(b"xyzw"));
    panic_message(|| buf.put_bytes(1, 4));
    panic_message(|| buf.put(&b"1234"[..]));
    // SAFETY: the call panics before moving len (checked below).
    panic_message(|| unsafe { buf.advance_mut(4) });
    // SAFETY: as above; the sum saturates, and is past max_len.
    panic_message(|| unsafe { buf.advance_mut(usize::MAX) });

    assert_eq!(&buf[..], b"abcde", "len() unchanged: {}", buf.len());
    assert_eq!(&buf.as_max_slice()[5..], b"\xaa\xaa\xaa", "nothing written");
    buf.put_u16(0x3132); // what fits still goes in
    buf.put_u8(b'!');
    assert_eq!(&buf[..], b"abcde12!");
    assert!(buf.len() <= buf.max_len());
    assert!(buf.extend_from_slice(b"?").is_err(), "the fallible form");
}

/// A `BufMut` writer as generic code has it: a length-prefixed record.
fn fill<B: BufMut>(dst: &mut B, tag: u8, payload: &[u8]) {
    dst.put_u8(tag);
    dst.put_u16(payload.len() as u16);
    dst.put_slice(payload);
}

#[test]
fn generic_bufmut_writers_fill_a_page_buffer_like_a_vec() {
    let pool = pool("bytes-bufmut");
    let payload = pattern(4, 1000);
    let mut buf = pool.allocate_page_size_buffer(4096).unwrap();
    let mut vec = Vec::new();
    for tag in 0..4 {
        fill(&mut buf, tag, &payload);
        fill(&mut vec, tag, &payload);
    }
    fill(&mut &mut buf, 9, b"via &mut"); // the blanket `&mut B` impl
    fill(&mut vec, 9, b"via &mut");
    assert_eq!(&buf[..], &vec[..]);
    assert_eq!(buf.len(), 4 * 1003 + 11);

    // One more record does not fit: a panic, with the buffer as it was.
    let len = buf.len();
    panic_message(|| fill(&mut buf, 5, &payload));
    assert_eq!(
        buf.len(),
        len + 3,
        "the header went in, the payload did not"
    );
    assert_eq!(&buf[..len], &vec[..]);
}

// ---- SharedCursor as Buf ----------------------------------------------------

/// A frozen buffer holding `data`.
fn shared(pool: &BufferPool, data: &[u8]) -> pagepool::SharedBuffer {
    let mut buf = pool.allocate_page_size_buffer(data.len().max(1)).unwrap();
    buf.extend_from_slice(data).unwrap();
    buf.freeze()
}

#[test]
fn cursor_chunk_advance_remaining_follow_the_buf_contract() {
    let pool = pool("bytes-cursor");
    let whole = shared(&pool, b"0123456789");
    let mut cur = whole.slice(2..9).cursor(); // "2345678"
    assert_eq!((cur.remaining(), cur.position()), (7, 0));
    assert_eq!(cur.chunk(), b"2345678");
    assert_eq!(cur.chunk().as_ptr(), whole.as_ptr().wrapping_add(2));
    cur.advance(3);
    assert_eq!(
        (cur.chunk(), cur.remaining(), cur.position()),
        (&b"5678"[..], 4, 3)
    );
    assert_eq!(cur.get_u16(), u16::from_be_bytes(*b"56"));

    let msg = panic_message(|| cur.advance(3));
    assert!(msg.contains("3 bytes requested, 2 remaining"), "{msg}");
    assert_eq!(cur.position(), 5, "a failed advance does not move");
    assert!(cur.try_get_u32().is_err());
    assert_eq!(cur.position(), 5);

    let mut rest = [0; 2];
    cur.copy_to_slice(&mut rest);
    assert_eq!(&rest, b"78");
    assert!(!cur.has_remaining());
    assert_eq!(cur.chunk(), b"");
    cur.advance(0); // a no-op at the end
    assert_eq!(
        &cur.into_inner()[..],
        b"2345678",
        "the whole handle comes back"
    );
}

#[test]
fn copy_to_bytes_shares_the_slot_until_the_last_bytes_drops() {
    let pool = pool("bytes-cursor");
    let data = pattern(5, 1316);
    let handle = shared(&pool, &data);
    let base = handle.as_ptr();
    let mut cur = SharedCursor::from(handle);
    assert_eq!(cur.get_ref().ref_count(), 1, "From moves the handle in");

    cur.advance(4);
    let a = cur.copy_to_bytes(184);
    let b = cur.copy_to_bytes(188);
    assert_eq!(a.as_ptr(), base.wrapping_add(4), "no copy");
    assert_eq!(b.as_ptr(), base.wrapping_add(188), "no copy");
    assert_eq!((&a[..], &b[..]), (&data[4..188], &data[188..376]));
    assert_eq!(cur.position(), 376);

    let empty = cur.copy_to_bytes(0);
    assert!(empty.is_empty());
    let msg = panic_message(|| drop(cur.copy_to_bytes(1000)));
    assert!(msg.contains("1000 bytes requested, 940 remaining"), "{msg}");
    assert_eq!(cur.position(), 376, "a failed copy_to_bytes does not move");

    let b_part = b.slice(10..20);
    drop((cur, a, b));
    assert_eq!(
        pool.stats().buffers_in_use,
        1,
        "a slice of a Bytes holds it"
    );
    assert_eq!(&b_part[..], &data[198..208]);
    drop(b_part);
    assert_eq!(
        pool.stats().buffers_in_use,
        0,
        "the last Bytes gave it back"
    );
    assert!(empty.is_empty(), "an empty Bytes never held the slot");
}

#[test]
fn cursor_clones_the_handle_and_buf_moves_into_bufmut() {
    let pool = pool("bytes-cursor");
    let handle = shared(&pool, b"GET /seg1.ts HTTP/1.1\r\n");
    let mut cur = handle.cursor();
    assert_eq!(handle.ref_count(), 2, "cursor() holds a clone");
    let twin = cur.clone();
    assert_eq!(handle.ref_count(), 3);

    let method = cur.copy_to_bytes(4);
    assert_eq!(&method[..], b"GET ");
    assert_eq!(twin.position(), 0, "clones move independently");

    // Buf into BufMut: the rest of the cursor into another pooled buffer.
    let mut out = pool.allocate_page_size_buffer(64).unwrap();
    out.put(cur);
    assert_eq!(&out[..], b"/seg1.ts HTTP/1.1\r\n");

    // Buf::reader, for std::io consumers.
    let mut line = String::new();
    std::io::BufRead::read_line(&mut twin.reader(), &mut line).unwrap();
    assert_eq!(line, "GET /seg1.ts HTTP/1.1\r\n");

    drop(handle); // `twin` went into the reader, dropped with it
    assert_eq!(
        pool.stats().buffers_in_use,
        2,
        "`method` and `out` hold slots"
    );
    drop(method);
    assert_eq!(pool.stats().buffers_in_use, 1);

    let mut small = pool.allocate_page_size_buffer(4).unwrap();
    let too_much = shared(&pool, &[7; 8]).cursor();
    panic_message(|| small.put(too_much));
    assert!(small.is_empty(), "put checks the room before writing");
    drop((out, small));
    assert_eq!(pool.stats().buffers_in_use, 0);
}

#[test]
fn bytes_from_a_cursor_drop_on_other_threads() {
    let pool = pool("bytes-cursor");
    let data = pattern(6, 4 * 1024);
    let mut cur = shared(&pool, &data).cursor();
    let parts: Vec<Bytes> = (0..4).map(|_| cur.copy_to_bytes(1024)).collect();
    drop(cur);
    let threads: Vec<_> = parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let want = data[i * 1024..(i + 1) * 1024].to_vec();
            std::thread::spawn(move || assert_eq!(&p[..], &want[..]))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(pool.stats().buffers_in_use, 0);
    assert_eq!(pool.stats().releases, 1);
}
