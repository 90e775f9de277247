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
/// the directory takes `O_DIRECT`, for page-cache reads too (a file below
/// `--direct-min-size`). The bytes are the file's either way, ranges at odd
/// offsets and the unaligned tail included.
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
            if io_uring_here() {
                assert_eq!(path, "io_uring");
            }
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
