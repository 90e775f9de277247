//! `pagepool::direct::DirectFile`: `O_DIRECT` reads into `PageBuffer`s, the
//! alignment checks made before the OS is called, and the errors of
//! filesystems that refuse `O_DIRECT`.
//!
//! Where the filesystem under `CARGO_TARGET_TMPDIR` refuses `O_DIRECT`, the
//! tests that need it print a `SKIPPED:` line and return.
#![cfg(target_os = "linux")]

use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};

use pagepool::direct::{DirectError, DirectErrorKind, DirectFile};
use pagepool::{page_size, BufferPool, PageBuffer};

const MIB: usize = 1 << 20;
/// 3 MiB and a tail that ends off every alignment.
const FILE_LEN: usize = 3 * MIB + 123;

/// The byte at `i` of the test files: depends on the position within a page
/// and on the page, so a misplaced block shows.
fn pattern(i: usize) -> u8 {
    ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8 ^ (i / 4096) as u8
}

fn pattern_bytes(len: usize) -> Vec<u8> {
    (0..len).map(pattern).collect()
}

/// Removes the file when the test ends, passed or not.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

/// Writes `len` pattern bytes to `dir/name-<pid>.bin`, synced to the disk.
fn pattern_file(dir: &Path, name: &str, len: usize) -> TempFile {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{name}-{}.bin", std::process::id()));
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&pattern_bytes(len)).unwrap();
    f.sync_all().unwrap();
    TempFile(path)
}

fn target_tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

fn direct_kind(e: &io::Error) -> Option<DirectErrorKind> {
    DirectError::of(e).map(DirectError::kind)
}

/// Opens `path` with `O_DIRECT`, or prints why the test is skipped.
fn open_or_skip(path: &Path, test: &str) -> Option<DirectFile> {
    match DirectFile::open(path) {
        Ok(f) => Some(f),
        Err(e) if direct_kind(&e) == Some(DirectErrorKind::Unsupported) => {
            println!("SKIPPED: {test}: not run, {e}");
            None
        }
        Err(e) => panic!("opening {} with O_DIRECT: {e}", path.display()),
    }
}

/// Reads the whole file with `read_at` into buffers of `chunk` bytes and
/// checks every byte; returns the read sizes, or `None` when a read was
/// refused (the skip is printed).
fn read_all_and_check(
    file: &DirectFile,
    pool: &BufferPool,
    chunk: usize,
    len: usize,
    test: &str,
) -> Option<Vec<usize>> {
    let expected = pattern_bytes(len);
    let mut sizes = Vec::new();
    let mut offset = 0usize;
    loop {
        let mut buf: PageBuffer = pool.allocate_page_size_buffer(chunk).unwrap();
        buf.as_max_slice_mut().fill(0xee);
        let n = match file.read_at(&mut buf, offset as u64) {
            Ok(n) => n,
            Err(e) if matches!(direct_kind(&e), Some(DirectErrorKind::ReadRefused { .. })) => {
                println!("SKIPPED: {test}: not run, {e}");
                return None;
            }
            Err(e) => panic!("read_at({offset}): {e}"),
        };
        assert_eq!(buf.len(), n, "read_at sets the length");
        assert!(
            buf[..] == expected[offset..offset + n],
            "bytes {offset}..{} differ from the file",
            offset + n
        );
        sizes.push(n);
        offset += n;
        if n < chunk {
            break;
        }
    }
    assert_eq!(offset, len, "the whole file was read");
    Some(sizes)
}

#[test]
fn reads_a_file_chunk_by_chunk_including_the_short_tail() {
    let file = pattern_file(&target_tmp(), "direct-chunks", FILE_LEN);
    let test = "reads_a_file_chunk_by_chunk_including_the_short_tail";
    let Some(f) = open_or_skip(&file.0, test) else {
        return;
    };
    assert!(f.is_direct());
    let align = f.alignment();
    assert!(align.is_power_of_two() && align <= page_size(), "{align}");
    assert_eq!(f.len().unwrap(), FILE_LEN as u64);
    assert!(!f.is_empty().unwrap());
    assert_eq!(f.path(), file.0);

    let pool = BufferPool::builder().name("direct").build().unwrap();
    let Some(sizes) = read_all_and_check(&f, &pool, MIB, FILE_LEN, test) else {
        return;
    };
    assert_eq!(sizes, [MIB, MIB, MIB, 123]);
    println!(
        "O_DIRECT read of {FILE_LEN} bytes in reads of {sizes:?}, alignment {align}, \
         from {}",
        file.0.display()
    );

    // At and past the end (aligned offsets): nothing, length 0.
    let mut buf = pool.allocate_page_size_buffer(MIB).unwrap();
    buf.extend_from_slice(b"stale").unwrap();
    assert_eq!(f.read_at(&mut buf, 4 * MIB as u64).unwrap(), 0);
    assert_eq!(buf.len(), 0);
    assert_eq!(pool.stats().buffers_in_use, 1);
}

#[test]
fn reads_into_buffers_that_are_not_a_multiple_of_the_alignment() {
    let file = pattern_file(&target_tmp(), "direct-odd", FILE_LEN);
    let Some(f) = open_or_skip(&file.0, "reads_into_buffers_that_are_not_...") else {
        return;
    };
    let pool = BufferPool::new();
    // max_len rounds down to the alignment: MIB + 100 reads MIB bytes.
    let mut buf = pool.allocate_page_size_buffer(MIB + 100).unwrap();
    match f.read_at(&mut buf, 0) {
        Ok(n) => assert_eq!(n, MIB),
        Err(e) if matches!(direct_kind(&e), Some(DirectErrorKind::ReadRefused { .. })) => {
            println!("SKIPPED: reads_into_buffers_that_are_not_...: not run, {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    }
    assert!(buf[..] == pattern_bytes(MIB)[..]);

    // Any multiple of the alignment is a valid offset, not only pages.
    let align = f.alignment();
    assert_eq!(f.read_at(&mut buf, align as u64).unwrap(), MIB);
    assert!(buf[..] == pattern_bytes(MIB + align)[align..]);

    // A buffer of exactly one alignment unit reads one unit.
    let mut small = pool.allocate_page_size_buffer(align).unwrap();
    assert_eq!(f.read_at(&mut small, (2 * MIB) as u64).unwrap(), align);
    assert!(small[..] == pattern_bytes(2 * MIB + align)[2 * MIB..]);
}

#[test]
fn a_misaligned_offset_fails_before_any_read() {
    let file = pattern_file(&target_tmp(), "direct-misaligned", 2 * MIB);
    let Some(f) = open_or_skip(&file.0, "a_misaligned_offset_fails_before_any_read") else {
        return;
    };
    let align = f.alignment();
    let pool = BufferPool::new();
    let mut buf = pool.allocate_page_size_buffer(MIB).unwrap();
    buf.as_max_slice_mut().fill(0x5a);
    buf.set_len(77).unwrap();

    for offset in [1, align as u64 / 2 + 1, align as u64 + 1, MIB as u64 - 1] {
        let e = f.read_at(&mut buf, offset).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            direct_kind(&e),
            Some(DirectErrorKind::MisalignedOffset {
                offset,
                alignment: align
            })
        );
        let msg = e.to_string();
        assert!(msg.contains(&format!("offset {offset}")), "{msg}");
        assert!(
            msg.contains(&format!("alignment of {align} bytes")),
            "{msg}"
        );
        assert!(msg.contains(&*file.0.to_string_lossy()), "{msg}");
        assert!(DirectError::of(&e).unwrap().os_error().is_none());
        // No read happened: a read would have replaced the length and bytes.
        assert_eq!(buf.len(), 77);
        assert!(buf.as_max_slice().iter().all(|&b| b == 0x5a));
    }
}

#[test]
fn other_bad_reads_fail_before_any_read() {
    let file = pattern_file(&target_tmp(), "direct-bad", 64 * 1024);
    let Some(f) = open_or_skip(&file.0, "other_bad_reads_fail_before_any_read") else {
        return;
    };
    let align = f.alignment();
    let pool = BufferPool::new();

    // A buffer smaller than the alignment holds no aligned read.
    if align > 1 {
        let mut tiny = pool.allocate_page_size_buffer(align - 1).unwrap();
        tiny.extend_from_slice(b"x").unwrap();
        let e = f.read_at(&mut tiny, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            direct_kind(&e),
            Some(DirectErrorKind::BufferTooSmall {
                max_len: align - 1,
                alignment: align
            })
        );
        assert!(e.to_string().contains("smaller than"), "{e}");
        assert_eq!(&tiny[..], b"x");
    }

    // An aligned offset whose read would pass i64::MAX.
    let mut buf = pool.allocate_page_size_buffer(MIB).unwrap();
    let offset = u64::MAX / align as u64 * align as u64;
    let e = f.read_at(&mut buf, offset).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(matches!(
        direct_kind(&e),
        Some(DirectErrorKind::OffsetOutOfRange { .. })
    ));
}

#[test]
fn procfs_refuses_o_direct_with_a_clear_error() {
    let path = Path::new("/proc/self/status");
    let e = match DirectFile::open(path) {
        Ok(_) => {
            println!("SKIPPED: procfs_refuses_o_direct...: this kernel's procfs took O_DIRECT");
            return;
        }
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let msg = e.to_string();
    assert!(msg.contains("the filesystem refuses O_DIRECT"), "{msg}");
    assert!(msg.contains("/proc/self/status"), "{msg}");
    let why = DirectError::of(&e).unwrap();
    assert_eq!(why.kind(), DirectErrorKind::Unsupported);
    assert_eq!(why.path(), path);
    let os = why.os_error().unwrap();
    assert_eq!(os.raw_os_error(), Some(libc::EINVAL));
    assert_eq!(os.kind(), ErrorKind::InvalidInput);
    let source = std::error::Error::source(why).unwrap();
    assert_eq!(source.to_string(), os.to_string());

    // The fallback opens it buffered; reads then need no alignment.
    let f = DirectFile::open_or_buffered(path).unwrap();
    assert!(!f.is_direct());
    assert_eq!(f.alignment(), 1);
    let pool = BufferPool::new();
    let mut buf = pool.allocate_page_size_buffer(64 * 1024 + 3).unwrap();
    let n = f.read_at(&mut buf, 0).unwrap();
    assert!(n > 0 && buf.starts_with(b"Name:"), "{n}");
    let mut rest = pool.allocate_page_size_buffer(100).unwrap();
    let m = f.read_at(&mut rest, 1).unwrap();
    // Only the first line ("Name:\t...") is stable between two reads: the
    // rest (memory, thread counts) changes while other tests run.
    let line = buf[..n].iter().position(|&b| b == b'\n').unwrap();
    assert!(m >= line, "{m} < {line}");
    assert_eq!(&rest[..line - 1], &buf[1..line]);
}

#[test]
fn open_or_buffered_prefers_o_direct() {
    let file = pattern_file(&target_tmp(), "direct-fallback", 8192 + 10);
    let f = DirectFile::open_or_buffered(&file.0).unwrap();
    println!(
        "open_or_buffered on {}: direct {}, alignment {}",
        file.0.display(),
        f.is_direct(),
        f.alignment()
    );
    let direct_ok = DirectFile::open(&file.0).is_ok();
    assert_eq!(f.is_direct(), direct_ok);
    let pool = BufferPool::new();
    let mut buf = pool.allocate_page_size_buffer(16 * 1024).unwrap();
    let n = f.read_at(&mut buf, 0).unwrap();
    assert_eq!(n, 8192 + 10);
    assert!(buf[..] == pattern_bytes(8192 + 10)[..]);
}

#[test]
fn open_passes_other_errors_through() {
    let missing = target_tmp().join("direct-no-such-file.bin");
    let e = DirectFile::open(&missing).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(DirectError::of(&e).is_none());
    let e = DirectFile::open_or_buffered(&missing).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

/// tmpfs takes `O_DIRECT` since Linux 6.6; reports what this kernel does.
#[test]
fn o_direct_on_dev_shm() {
    let dir = Path::new("/dev/shm");
    if !dir.is_dir() {
        println!("SKIPPED: o_direct_on_dev_shm: no /dev/shm");
        return;
    }
    let len = MIB + 5;
    let file = pattern_file(dir, "pagepool-direct", len);
    let f = match DirectFile::open(&file.0) {
        Ok(f) => f,
        Err(e) => {
            assert_eq!(direct_kind(&e), Some(DirectErrorKind::Unsupported), "{e}");
            println!("/dev/shm: {e}");
            return;
        }
    };
    let pool = BufferPool::new();
    match read_all_and_check(&f, &pool, 256 * 1024, len, "o_direct_on_dev_shm") {
        Some(sizes) => println!(
            "/dev/shm takes O_DIRECT: alignment {}, {len} bytes read in {} reads, last {}",
            f.alignment(),
            sizes.len(),
            sizes.last().unwrap()
        ),
        None => println!("/dev/shm took the O_DIRECT open but refused the reads"),
    }
}

/// Drops `path`'s clean pages from the page cache.
fn evict(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: a plain advice call on a descriptor we hold open.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise: {}", io::Error::from_raw_os_error(rc));
}

/// tmpfs (`TMPFS_MAGIC`) keeps its pages: nothing there is evicted.
fn on_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `statfs` fills the zeroed struct we own and reads the C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers are valid for the call.
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    #[allow(clippy::unnecessary_cast)] // `f_type`'s type differs between targets
    let magic = st.f_type as i64;
    magic == 0x0102_1994
}

#[test]
fn cached_reads_read_what_read_at_reads_up_to_the_end() {
    let file = pattern_file(&target_tmp(), "direct-cached", FILE_LEN);
    let f = DirectFile::open_buffered(&file.0).unwrap();
    let pool = BufferPool::new();
    let expected = pattern_bytes(FILE_LEN);
    let mut offset = 0;
    loop {
        let mut buf = pool.allocate_page_size_buffer(MIB).unwrap();
        buf.as_max_slice_mut().fill(0xee);
        // Just written: every page is cached.
        let n = f.try_read_cached_at(&mut buf, offset as u64).unwrap();
        let n = n.expect("a file just written is in the page cache");
        assert_eq!(buf.len(), n, "the length is set to the bytes read");
        assert!(buf[..] == expected[offset..offset + n], "bytes at {offset}");
        offset += n;
        if n < MIB {
            break;
        }
    }
    assert_eq!(offset, FILE_LEN, "whole chunks, then the 123-byte tail");
    let mut buf = pool.allocate_page_size_buffer(4096).unwrap();
    assert_eq!(
        f.try_read_cached_at(&mut buf, FILE_LEN as u64).unwrap(),
        Some(0)
    );
    assert_eq!(f.try_read_cached_at(&mut buf, 1 << 40).unwrap(), Some(0));
}

/// A read that finds pages missing starts their readahead, which a fast
/// disk can finish before the read looks again (it then serves them), so
/// the file is evicted and read up to 8 times until one read is refused.
#[test]
fn a_cached_read_refuses_what_only_the_disk_has() {
    let test = "a_cached_read_refuses_what_only_the_disk_has";
    let file = pattern_file(&target_tmp(), "direct-uncached", MIB);
    if on_tmpfs(&file.0) {
        println!("SKIPPED: {test}: not run, tmpfs keeps its pages in memory");
        return;
    }
    let f = DirectFile::open_buffered(&file.0).unwrap();
    let pool = BufferPool::new();
    let mut buf = pool.allocate_page_size_buffer(MIB).unwrap();
    let mut results = Vec::new();
    for _ in 0..8 {
        buf.as_max_slice_mut()[..8].copy_from_slice(b"leftover");
        buf.set_len(8).unwrap();
        evict(&file.0);
        let got = f.try_read_cached_at(&mut buf, 0).unwrap();
        results.push(got);
        match got {
            None => {
                assert_eq!(buf.len(), 0, "a refused read leaves an empty buffer");
                break;
            }
            Some(n) => assert!(n == MIB && buf[..] == pattern_bytes(MIB)[..]),
        }
    }
    assert_eq!(results.last(), Some(&None), "results: {results:?}");
    // A read that may wait brings the pages in; then the cached read serves.
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), MIB);
    assert_eq!(f.try_read_cached_at(&mut buf, 0).unwrap(), Some(MIB));
    assert!(buf[..] == pattern_bytes(MIB)[..]);
}

#[test]
fn a_cached_read_of_an_o_direct_file_is_refused_and_checked() {
    let test = "a_cached_read_of_an_o_direct_file_is_refused_and_checked";
    let file = pattern_file(&target_tmp(), "direct-cached-odirect", MIB);
    let Some(f) = open_or_skip(&file.0, test) else {
        return;
    };
    let pool = BufferPool::new();
    let mut buf = pool.allocate_page_size_buffer(MIB).unwrap();
    assert_eq!(f.try_read_cached_at(&mut buf, 0).unwrap(), None);
    // The alignment checks come first, as for `read_at`.
    let e = f.try_read_cached_at(&mut buf, 1).unwrap_err();
    assert!(
        matches!(
            direct_kind(&e),
            Some(DirectErrorKind::MisalignedOffset { .. })
        ),
        "{e}"
    );
}
