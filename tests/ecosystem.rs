//! The ecosystem traits: `std::io::Write` into a `PageBuffer`, filling one
//! from any `std::io::Read`, reading a `SharedBuffer` back, and (feature
//! `bytes`) zero-copy conversion to `bytes::Bytes`.

use std::io::{self, ErrorKind, IoSlice, Read, Write};

use pagepool::{page_size, BufferPool, Error, PageBuffer};

fn pool(name: &str) -> BufferPool {
    BufferPool::builder().name(name).build().unwrap()
}

/// A buffer of `max_len` bytes whose whole max slice holds 0xAA, length 0.
fn sentinel_buffer(pool: &BufferPool, max_len: usize) -> PageBuffer {
    let mut buf = pool.allocate_page_size_buffer(max_len).unwrap();
    buf.as_max_slice_mut().fill(0xaa);
    buf
}

fn assert_write_zero(e: &io::Error, requested: usize, max: usize) {
    assert_eq!(e.kind(), ErrorKind::WriteZero, "{e}");
    assert_eq!(
        e.to_string(),
        format!("length {requested} exceeds the buffer's maximum length {max}")
    );
    let inner = e.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(
        matches!(inner, Some(Error::LengthExceedsMax { requested: r, max: m }) if *r == requested && *m == max),
        "{inner:?}"
    );
}

// ---- io::Write ------------------------------------------------------------

#[test]
fn write_copies_what_fits_then_fails_with_write_zero() {
    let pool = pool("io-write");
    let mut buf = sentinel_buffer(&pool, 10);
    assert_eq!(buf.write(b"abcdef").unwrap(), 6);
    assert_eq!(
        buf.write(b"ghijkl").unwrap(),
        4,
        "a short write of what fits"
    );
    assert_eq!(&buf[..], b"abcdefghij");
    assert_eq!(buf.remaining(), 0);

    let e = buf.write(b"k").unwrap_err();
    assert_write_zero(&e, 11, 10);
    assert_eq!(
        buf.write(b"").unwrap(),
        0,
        "an empty write on a full buffer"
    );
    assert_eq!(&buf[..], b"abcdefghij", "a failed write changes nothing");
    buf.flush().unwrap();
}

#[test]
fn zero_length_writes_change_nothing() {
    let pool = pool("io-write");
    let mut buf = sentinel_buffer(&pool, 4);
    assert_eq!(buf.write(b"").unwrap(), 0);
    buf.write_all(b"").unwrap();
    assert_eq!(buf.write_vectored(&[]).unwrap(), 0);
    assert_eq!(buf.write_vectored(&[IoSlice::new(b"")]).unwrap(), 0);
    assert_eq!(buf.len(), 0);
    assert_eq!(buf.as_max_slice(), &[0xaa; 4]);
}

#[test]
fn write_all_exactly_full_then_one_past() {
    let pool = pool("io-write");
    let max = page_size() + 17;
    let mut buf = sentinel_buffer(&pool, max);
    let data: Vec<u8> = (0..max).map(|i| i as u8).collect();
    buf.write_all(&data).unwrap();
    assert_eq!((buf.len(), buf.remaining()), (max, 0));
    assert_eq!(&buf[..], &data[..]);
    buf.write_all(b"").unwrap();

    let e = buf.write_all(b"x").unwrap_err();
    assert_write_zero(&e, max + 1, max);
    assert_eq!(&buf[..], &data[..]);
}

#[test]
fn write_all_that_does_not_fit_writes_nothing() {
    let pool = pool("io-write");
    let mut buf = sentinel_buffer(&pool, 10);
    buf.write_all(b"12345").unwrap();
    let e = buf.write_all(b"678901").unwrap_err(); // one byte too many
    assert_write_zero(&e, 11, 10);
    assert_eq!(&buf[..], b"12345");
    assert_eq!(
        &buf.as_max_slice()[5..],
        &[0xaa; 5],
        "nothing past len() was touched"
    );
    buf.write_all(b"67890").unwrap();
    assert_eq!(&buf[..], b"1234567890");
}

#[test]
fn write_macro_and_io_copy() {
    let pool = pool("io-write");
    let mut buf = pool.allocate_page_size_buffer(64).unwrap();
    writeln!(buf, "#EXT-X-MEDIA-SEQUENCE:{}", 42).unwrap();
    assert_eq!(&buf[..], b"#EXT-X-MEDIA-SEQUENCE:42\n");

    // io::copy of a source that fits...
    buf.clear();
    let n = io::copy(&mut &[7u8; 64][..], &mut buf).unwrap();
    assert_eq!((n, buf.len()), (64, 64));

    // ...and of one that does not: WriteZero. io::copy hands each chunk it
    // read to write_all, which is all or nothing, so the chunk that did not
    // fit (here all 100 bytes) is not written at all...
    buf.clear();
    let e = io::copy(&mut &[9u8; 100][..], &mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WriteZero);
    assert_eq!(buf.len(), 0);
    // ...while fill_from takes what fits.
    let mut src = &[9u8; 100][..];
    assert_eq!(buf.fill_from(&mut src).unwrap(), 64);
    assert_eq!((&buf[..], src.len()), (&[9u8; 64][..], 36));
}

#[test]
fn write_vectored_fills_across_slices_and_stops_at_max() {
    let pool = pool("io-write");
    let mut buf = sentinel_buffer(&pool, 8);
    let n = buf
        .write_vectored(&[
            IoSlice::new(b"ab"),
            IoSlice::new(b""),
            IoSlice::new(b"cdefgh"),
            IoSlice::new(b"ijk"),
        ])
        .unwrap();
    assert_eq!(n, 8);
    assert_eq!(&buf[..], b"abcdefgh");
    let e = buf.write_vectored(&[IoSlice::new(b"ij")]).unwrap_err();
    assert_write_zero(&e, 10, 8);
}

// ---- Read into a PageBuffer -------------------------------------------------

/// A reader serving `data` in chunks of at most `chunk` bytes, answering
/// `Interrupted` before every chunk when `interrupt` is set, and failing with
/// `fail` once the data is exhausted (EOF when `None`). Counts its calls.
struct Scripted {
    data: Vec<u8>,
    at: usize,
    chunk: usize,
    interrupt: bool,
    interrupted_last: bool,
    fail: Option<ErrorKind>,
    calls: usize,
}

impl Scripted {
    fn new(data: &[u8], chunk: usize) -> Self {
        Scripted {
            data: data.to_vec(),
            at: 0,
            chunk,
            interrupt: false,
            interrupted_last: false,
            fail: None,
            calls: 0,
        }
    }
}

impl Read for Scripted {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.interrupt && !self.interrupted_last {
            self.interrupted_last = true;
            return Err(ErrorKind::Interrupted.into());
        }
        self.interrupted_last = false;
        let n = self.chunk.min(out.len()).min(self.data.len() - self.at);
        if n == 0 {
            if let Some(kind) = self.fail {
                return Err(io::Error::new(kind, "the disk is on fire"));
            }
        }
        out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn fill_from_reads_until_full() {
    let pool = pool("io-read");
    let mut buf = pool.allocate_page_size_buffer(10).unwrap();
    buf.write_all(b"ab").unwrap();
    let mut src = Scripted::new(b"0123456789", 3);
    assert_eq!(buf.fill_from(&mut src).unwrap(), 8);
    assert_eq!(&buf[..], b"ab01234567");
    assert_eq!(src.at, 8, "the reader keeps what did not fit");
    let calls = src.calls;
    assert_eq!(buf.fill_from(&mut src).unwrap(), 0, "full");
    assert_eq!(src.calls, calls, "a full buffer does not call the reader");
}

#[test]
fn fill_from_exactly_full_and_to_the_end() {
    let pool = pool("io-read");
    let mut buf = pool.allocate_page_size_buffer(6).unwrap();
    assert_eq!(buf.fill_from(&b"abcdef"[..]).unwrap(), 6);
    assert_eq!((&buf[..], buf.remaining()), (&b"abcdef"[..], 0));

    buf.clear();
    assert_eq!(buf.fill_from(&b"xyz"[..]).unwrap(), 3, "stops at EOF");
    assert_eq!(&buf[..], b"xyz");
    assert_eq!(buf.fill_from(io::empty()).unwrap(), 0);
    assert_eq!(&buf[..], b"xyz");
}

#[test]
fn fill_from_retries_interrupted_reads() {
    let pool = pool("io-read");
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let mut buf = pool.allocate_page_size_buffer(8192).unwrap();
    let mut src = Scripted::new(&data, 1000);
    src.interrupt = true;
    assert_eq!(buf.fill_from(&mut src).unwrap(), 5000);
    assert_eq!(&buf[..], &data[..]);
    assert!(
        src.calls >= 10,
        "every chunk was interrupted once: {}",
        src.calls
    );
}

#[test]
fn fill_from_keeps_what_it_read_before_an_error() {
    let pool = pool("io-read");
    let mut buf = pool.allocate_page_size_buffer(64).unwrap();
    buf.write_all(b">").unwrap();
    let mut src = Scripted::new(b"hello", 2);
    src.fail = Some(ErrorKind::ConnectionReset);
    let e = buf.fill_from(&mut src).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionReset);
    assert_eq!(e.to_string(), "the disk is on fire");
    assert_eq!(&buf[..], b">hello", "bytes before the error are kept");
}

#[test]
fn read_once_makes_one_read() {
    let pool = pool("io-read");
    let mut buf = pool.allocate_page_size_buffer(16).unwrap();
    let mut src = Scripted::new(b"abcdefghij", 4);
    src.interrupt = true;
    assert_eq!(buf.read_once(&mut src).unwrap(), 4);
    assert_eq!(src.calls, 2, "one Interrupted, retried, then one read");
    assert_eq!(buf.read_once(&mut src).unwrap(), 4);
    assert_eq!(&buf[..], b"abcdefgh");

    // At the end of the reader: Ok(0) with room left.
    let mut src = Scripted::new(b"", 4);
    assert_eq!(buf.read_once(&mut src).unwrap(), 0);
    assert!(buf.remaining() > 0);

    // On a full buffer: Ok(0) without calling the reader.
    buf.write_all(&[0; 8]).unwrap();
    let mut src = Scripted::new(b"more", 4);
    assert_eq!(buf.read_once(&mut src).unwrap(), 0);
    assert_eq!((src.calls, buf.remaining()), (0, 0));
}

#[test]
fn read_once_error_leaves_the_buffer_unchanged() {
    let pool = pool("io-read");
    let mut buf = pool.allocate_page_size_buffer(16).unwrap();
    buf.write_all(b"kept").unwrap();
    let mut src = Scripted::new(b"", 4);
    src.fail = Some(ErrorKind::TimedOut);
    assert_eq!(
        buf.read_once(&mut src).unwrap_err().kind(),
        ErrorKind::TimedOut
    );
    assert_eq!(&buf[..], b"kept");
}

/// A broken reader that claims more bytes than it was offered.
struct Overclaims;

impl Read for Overclaims {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        Ok(out.len() + 1)
    }
}

#[test]
fn a_reader_claiming_too_much_is_an_error_not_a_panic() {
    let pool = pool("io-read");
    let mut buf = pool.allocate_page_size_buffer(16).unwrap();
    buf.write_all(b"ok").unwrap();
    let e = buf.fill_from(Overclaims).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
    let e = buf.read_once(&mut Overclaims).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
    assert_eq!(&buf[..], b"ok");
}

// ---- SharedBuffer::reader ---------------------------------------------------

#[test]
fn shared_buffer_reader_reads_the_visible_bytes() {
    let pool = pool("io-shared");
    let mut buf = pool.allocate_page_size_buffer(4096).unwrap();
    buf.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
    let shared = buf.freeze();
    let mut all = Vec::new();
    shared.reader().read_to_end(&mut all).unwrap();
    assert_eq!(all, b"HTTP/1.1 200 OK\r\n");

    let mut status = String::new();
    shared
        .slice(9..12)
        .reader()
        .read_to_string(&mut status)
        .unwrap();
    assert_eq!(status, "200");

    let reader = shared.reader();
    assert_eq!(shared.ref_count(), 2, "the cursor holds a handle");
    drop(shared);
    assert_eq!(pool.stats().buffers_in_use, 1);
    drop(reader);
    assert_eq!(pool.stats().buffers_in_use, 0);
}

// ---- bytes::Bytes (feature `bytes`) -----------------------------------------

#[cfg(feature = "bytes")]
mod bytes_feature {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn page_buffer_into_bytes_without_a_copy() {
        let pool = pool("bytes");
        let mut buf = pool.allocate_page_size_buffer(64 * 1024).unwrap();
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        buf.write_all(&data).unwrap();
        let at = buf.as_ptr();

        let body = Bytes::from(buf);
        assert_eq!(body.as_ptr(), at, "the Bytes points at the buffer itself");
        assert_eq!(body.as_ptr() as usize % page_size(), 0);
        assert_eq!(&body[..], &data[..]);

        let clone = body.clone();
        let tail = body.slice(40_000..);
        assert_eq!(tail.as_ptr(), at.wrapping_add(40_000));
        drop(body);
        assert_eq!(
            pool.stats().buffers_in_use,
            1,
            "the clone and slice keep it"
        );
        drop(clone);
        assert_eq!(pool.stats().buffers_in_use, 1, "the slice keeps it");
        assert_eq!(&tail[..], &data[40_000..]);
        drop(tail);

        let before = pool.stats();
        assert_eq!(
            before.buffers_in_use, 0,
            "the last Bytes gave the slot back"
        );
        let again = pool.allocate_page_size_buffer(60 * 1024).unwrap();
        let after = pool.stats();
        assert_eq!(after.hits, before.hits + 1, "the slot is reused");
        assert_eq!(after.misses, before.misses);
        drop(again);
    }

    #[test]
    fn shared_buffer_into_bytes_without_a_copy() {
        let pool = pool("bytes");
        let mut buf = pool.allocate_page_size_buffer(1316).unwrap();
        buf.write_all(&[0x47; 1316]).unwrap();
        let at = buf.as_ptr();
        let shared = buf.freeze();

        let whole = Bytes::from(shared.clone());
        let part = Bytes::from(shared.slice(188..376));
        assert_eq!(whole.as_ptr(), at);
        assert_eq!(part.as_ptr(), at.wrapping_add(188));
        assert_eq!((whole.len(), part.len()), (1316, 188));

        drop(shared);
        let part_clone = part.clone();
        drop((whole, part));
        assert_eq!(pool.stats().buffers_in_use, 1);
        drop(part_clone);

        let before = pool.stats();
        assert_eq!(before.buffers_in_use, 0);
        let again = pool.allocate_page_size_buffer(1316).unwrap();
        assert_eq!(pool.stats().hits, before.hits + 1);
        drop(again);
    }

    #[test]
    fn bytes_release_the_slot_on_another_thread() {
        let pool = pool("bytes");
        let mut buf = pool.allocate_page_size_buffer(4096).unwrap();
        buf.write_all(b"fan-out").unwrap();
        let body = Bytes::from(buf);
        let clones: Vec<Bytes> = (0..4).map(|_| body.clone()).collect();
        drop(body);
        let handles: Vec<_> = clones
            .into_iter()
            .map(|b| std::thread::spawn(move || assert_eq!(&b[..], b"fan-out")))
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(pool.stats().buffers_in_use, 0);
        assert_eq!(pool.stats().releases, 1);
    }

    #[test]
    fn an_empty_buffer_becomes_an_empty_bytes() {
        let pool = pool("bytes");
        let buf = pool.allocate_page_size_buffer(100).unwrap();
        let body = Bytes::from(buf);
        assert!(body.is_empty());
        assert_eq!(pool.stats().buffers_in_use, 1);
        drop(body);
        assert_eq!(pool.stats().buffers_in_use, 0);
    }
}
