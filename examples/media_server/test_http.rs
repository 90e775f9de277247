//! `GET /media/{name}` over a real connection: validators, conditional
//! requests, range units in any case.

use crate::harness::{block_on, get, metric, request, Server, TempDir};

#[test]
fn conditional_requests_and_ranges() {
    let dir = TempDir::new("http");
    let bytes = dir.file("clip.ts", 300_000);
    let server = Server::start(&dir.0, &[]);
    let addr = server.addr;
    block_on(async {
        let path = "/media/clip.ts";
        let whole = get(addr, path, &[]).await;
        assert_eq!(whole.status, 200);
        assert!(whole.is_whole() && whole.body == bytes);
        let etag = whole.header("etag").expect("an ETag").to_owned();
        let modified = whole
            .header("last-modified")
            .expect("a Last-Modified")
            .to_owned();
        assert!(etag.starts_with('"'), "a strong entity tag, not {etag:?}");

        // Case-insensitive range units.
        let part = get(addr, path, &[("range", "Bytes=0-99")]).await;
        assert_eq!(part.status, 206);
        assert_eq!(part.body, bytes[..100]);
        assert_eq!(part.header("content-range"), Some("bytes 0-99/300000"));

        // Revalidation.
        for cond in [
            ("if-none-match", etag.as_str()),
            ("if-modified-since", &modified),
        ] {
            let r = get(addr, path, &[cond]).await;
            assert_eq!(r.status, 304, "{cond:?}");
            assert!(r.body.is_empty());
            assert_eq!(r.header("etag"), Some(etag.as_str()));
        }
        let r = get(addr, path, &[("if-none-match", "\"other\"")]).await;
        assert_eq!(r.status, 200);
        assert!(r.is_whole());

        // If-Range: the range while the file is the same, else all of it.
        let range = ("range", "bytes=1000-1999");
        let r = get(addr, path, &[range, ("if-range", &etag)]).await;
        assert_eq!((r.status, r.body.as_slice()), (206, &bytes[1000..2000]));
        let r = get(addr, path, &[range, ("if-range", "\"old\"")]).await;
        assert_eq!(r.status, 200);
        assert!(r.is_whole() && r.body == bytes);
        let r = get(addr, path, &[range, ("if-range", &modified)]).await;
        assert_eq!(r.status, 206);

        // If-Match: 412 unless the tag is the file's.
        let r = get(addr, path, &[("if-match", "\"old\"")]).await;
        assert_eq!(r.status, 412);
        let r = get(addr, path, &[("if-match", &etag), range]).await;
        assert_eq!(r.status, 206);

        // HEAD: the same validators, no body.
        let r = request(addr, "HEAD", path, &[]).await;
        assert_eq!((r.status, r.body.len()), (200, 0));
        assert_eq!(r.header("etag"), Some(etag.as_str()));

        // A rewritten file gets a new tag: the old one no longer revalidates
        // nor resumes a download.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let changed = dir.file("clip.ts", 300_001);
        let r = get(addr, path, &[("if-none-match", &etag)]).await;
        assert_eq!(r.status, 200);
        assert!(r.body == changed);
        assert_ne!(r.header("etag"), Some(etag.as_str()));
        let r = get(addr, path, &[range, ("if-range", &etag)]).await;
        assert_eq!((r.status, r.body.len()), (200, 300_001));
    });
    drop(server);
}

/// The read path each response names: `blocking` when asked for; with
/// feature `io-uring`, `io_uring` by default where the kernel allows it and
/// the directory takes `O_DIRECT`; `page_cache` for a buffered file (below
/// `--direct-min-size`) whose first chunk the page cache holds. The bytes
/// are the file's either way, ranges at odd offsets and the unaligned tail
/// included.
#[test]
fn read_paths() {
    let dir = TempDir::new("paths");
    let bytes = dir.file("clip.ts", (3 << 20) + 4321);
    let buffered = &["--direct-min-size", "4M"][..];
    for flags in [&["--read-path", "blocking"][..], &[], buffered] {
        let server = Server::start(&dir.0, flags);
        let addr = server.addr;
        let path = block_on(async {
            let whole = get(addr, "/media/clip.ts", &[]).await;
            assert!(whole.status == 200 && whole.body == bytes);
            let r = get(addr, "/media/clip.ts", &[("range", "bytes=4097-3000000")]).await;
            assert_eq!(
                (r.status, r.body.as_slice()),
                (206, &bytes[4097..=3_000_000])
            );
            let r = get(addr, "/media/clip.ts", &[("range", "bytes=-5000")]).await;
            assert_eq!(r.body, bytes[bytes.len() - 5000..]);
            let path = whole.header("x-pagepool-read-path").map(str::to_owned);
            let mode = whole.header("x-pagepool-read-mode").map(str::to_owned);
            (path, mode)
        });
        drop(server);
        let (path, mode) = path;
        let path = path.expect("an x-pagepool-read-path header");
        if flags == buffered {
            assert_eq!(mode.as_deref(), Some("buffered"));
            assert_eq!(path, "page_cache", "the file was just written");
        } else if flags.is_empty() {
            let uring = mode.as_deref() == Some("direct") && io_uring_here();
            if uring {
                assert_eq!(path, "io_uring");
            } else {
                eprintln!("read_paths: io_uring not available here; {path} ran");
            }
        } else {
            assert_eq!(path, "blocking");
        }
    }
}

/// A buffered file the page cache does not hold is read where a read may
/// wait: io_uring where it runs, else the blocking pool. A read that finds
/// pages missing starts their readahead, which a fast disk can finish
/// before the read looks again (it then serves from the cache), so the file
/// is evicted and fetched up to 8 times until one read takes the disk path.
#[test]
fn an_evicted_file_is_read_where_a_read_may_wait() {
    let dir = TempDir::new("evicted");
    let bytes = dir.file("clip.ts", 1 << 20);
    let clip = dir.0.join("clip.ts");
    let server = Server::start(&dir.0, &["--direct-min-size", "4M"]);
    let mut paths = Vec::new();
    for _ in 0..8 {
        if !evict(&clip) {
            eprintln!("SKIPPED: the temp dir is tmpfs, which keeps its pages in memory");
            return;
        }
        let whole = block_on(get(server.addr, "/media/clip.ts", &[]));
        assert!(whole.status == 200 && whole.body == bytes);
        let path = whole.header("x-pagepool-read-path").expect("a read path");
        paths.push(path.to_owned());
        if path != "page_cache" {
            break;
        }
    }
    let last = paths.last().map(String::as_str);
    assert!(
        matches!(last, Some("io_uring" | "blocking")),
        "paths: {paths:?}"
    );
}

/// Drops `path`'s pages from the page cache (the file is synced first);
/// `false` on tmpfs, whose pages are the file and stay.
fn evict(path: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: `fstatfs` fills the zeroed struct we own; the descriptor is open.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) }, 0);
    #[allow(clippy::unnecessary_cast)] // `f_type`'s type differs between targets
    if st.f_type as i64 == 0x0102_1994 {
        return false; // TMPFS_MAGIC
    }
    f.sync_all().unwrap();
    // SAFETY: a plain advice call on a descriptor we hold open.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(
        rc,
        0,
        "posix_fadvise: {}",
        std::io::Error::from_raw_os_error(rc)
    );
    true
}

/// Whether this build and kernel can set up a registry.
fn io_uring_here() -> bool {
    #[cfg(feature = "io-uring")]
    return pagepool::uring::Registry::new(&pagepool::BufferPool::new()).is_ok();
    #[cfg(not(feature = "io-uring"))]
    return false;
}

/// A file cut short while it is sent: the response is aborted (the client
/// sees the connection end before `Content-Length` bytes) and counted as
/// failed, never as a 200.
#[test]
fn a_response_cut_short_is_a_failure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = TempDir::new("shrink");
    dir.sparse("long.bin", 200 << 20);
    let server = Server::start(&dir.0, &[]);
    let addr = server.addr;
    block_on(async {
        let labels = ["route=\"media\"", "reason=\"file_shrank\""];
        let ok = ["route=\"media\"", "status=\"200\""];
        let failed_before = metric(addr, "media_server_responses_failed_total", &labels).await;
        let ok_before = metric(addr, "media_server_requests_total", &ok).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /media/long.bin HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("send");
        let mut buf = vec![0u8; 1 << 20];
        let mut got = s.read(&mut buf).await.expect("the response starts");
        std::fs::File::options()
            .write(true)
            .open(dir.0.join("long.bin"))
            .and_then(|f| f.set_len(1 << 20))
            .expect("truncate");
        let read_rest = async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got += n,
                }
            }
        };
        let got = tokio::time::timeout(std::time::Duration::from_secs(30), read_rest)
            .await
            .expect("the server ended the response");
        assert!(got < 200 << 20, "the whole file came ({got} bytes)");
        // The connection's end is seen before its accounting; give it a moment.
        let mut failed = 0.0;
        for _ in 0..40 {
            failed = metric(addr, "media_server_responses_failed_total", &labels).await;
            if failed > failed_before {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(failed - failed_before, 1.0);
        assert_eq!(
            metric(addr, "media_server_requests_total", &ok).await,
            ok_before
        );
    });
    drop(server);
}
