//! The command line (see the example's docs, and `--help`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::cli::{self, Long, Short, Stop};
use crate::common::size::parse_size;
use crate::read_path::Choice;

pub const HELP: &str = "\
media_server: files read with O_DIRECT into pooled buffers, live channels, metrics

usage: media_server [OPTIONS]

  --listen ADDR       address to serve on (default 127.0.0.1:8080; port 0 picks one)
  --media-dir DIR     files to serve (default: generate samples in a temp dir, removed at exit)
  --max-bytes N       cap on pooled memory (default 256MiB): 7/8 for the \"media\" pool,
                      1/8 for the \"live\" pool
  --chunk-size N      bytes per file read, a multiple of the page size (default 256KiB)
  --live-rate N       frames per second per live channel (default 500, about 5.3 Mbit/s)
  --direct-min-size N read files smaller than N through the page cache, not O_DIRECT
                      (default one chunk, as nginx's `directio` reads a file, or
                      its tail, shorter than its output buffer; 0: every file O_DIRECT)
  --read-path P       auto, io_uring or blocking (default auto: io_uring where the build
                      has feature io-uring, the kernel allows it and O_DIRECT is on)
  --pool-wait SECS    how long a media read waits for pool room before failing (default 5)
  --response-quota N  slot bytes one media response may hold (default four chunks)
  --open-files N      media files kept open between requests, each checked against
                      a statx of its path on every request (default 256; 0: none)
  --reads-in-flight N file reads in flight at once per read path; the others wait,
                      those a response waits on and younger responses' first (default 32)
  --send-timeout SECS close a client to which no byte could be sent for SECS
                      (default 10; 0: never)
  --min-send-rate N   close a client reading slower than N bytes/s, averaged over
                      windows of --send-timeout, 10 s if 0 (default 16KiB; 0: no minimum)
  --decay SECS        give a pool's free slabs back to the OS once unneeded for SECS
                      (the pools' decay; default 30; 0: never)
  --grace SECS        how long shutdown lets responses in flight finish (default 5)
  --seconds N         shut down by itself after N seconds (default: run until a signal)
  -h, --help          this text

Sizes are bytes, or with a suffix: K, M, G (or KiB, MiB, GiB) are powers of
1024, KB, MB, GB powers of 1000.
Exit code: 0 after a clean shutdown, 1 when the server cannot start, 2 for bad arguments.
";

#[derive(Debug)]
pub struct Args {
    pub listen: SocketAddr,
    pub media_dir: Option<PathBuf>,
    pub max_bytes: usize,
    pub chunk: usize,
    pub live_rate: u32,
    pub pool_wait: Duration,
    /// `None`: four chunks.
    pub response_quota: Option<usize>,
    pub grace: Duration,
    pub seconds: Option<u64>,
    /// `None`: never.
    pub send_timeout: Option<Duration>,
    /// Bytes per second; 0: no minimum.
    pub min_send_rate: u64,
    /// The pools' decay period; `None`: never.
    pub decay: Option<Duration>,
    pub read_path: Choice,
    /// Files smaller than this are read through the page cache; `None`:
    /// one chunk.
    pub direct_min_size: Option<u64>,
    /// File reads in flight at once per read path (at least 1).
    pub reads_in_flight: usize,
    /// Media files kept open (0: none).
    pub open_files: usize,
}

fn seconds(p: &mut cli::Parser, flag: &str) -> Result<Duration, Stop> {
    cli::value(p, flag).map(Duration::from_secs)
}

pub fn parse_args(mut p: cli::Parser) -> Result<Args, Stop> {
    let mut a = Args {
        listen: "127.0.0.1:8080".parse().expect("a valid default address"),
        media_dir: None,
        max_bytes: 256 << 20,
        chunk: 256 << 10,
        live_rate: 500,
        pool_wait: Duration::from_secs(5),
        response_quota: None,
        grace: Duration::from_secs(5),
        seconds: None,
        send_timeout: Some(Duration::from_secs(10)),
        min_send_rate: 16 << 10,
        decay: Some(Duration::from_secs(30)),
        read_path: Choice::Auto,
        reads_in_flight: 32,
        open_files: 256,
        direct_min_size: None,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("listen") => {
                a.listen = cli::value_with(&mut p, "--listen", |v| {
                    v.parse::<SocketAddr>()
                        .map_err(|_| "not an IP:PORT address")
                })?
            }
            Long("media-dir") => a.media_dir = Some(p.value()?.into()),
            Long("max-bytes") => a.max_bytes = cli::value_with(&mut p, "--max-bytes", parse_size)?,
            Long("chunk-size") => a.chunk = cli::value_with(&mut p, "--chunk-size", parse_size)?,
            Long("live-rate") => a.live_rate = cli::value(&mut p, "--live-rate")?,
            Long("pool-wait") => a.pool_wait = seconds(&mut p, "--pool-wait")?,
            Long("response-quota") => {
                a.response_quota = Some(cli::value_with(&mut p, "--response-quota", parse_size)?)
            }
            Long("grace") => a.grace = seconds(&mut p, "--grace")?,
            Long("send-timeout") => {
                a.send_timeout = Some(seconds(&mut p, "--send-timeout")?).filter(|d| !d.is_zero())
            }
            Long("direct-min-size") => {
                a.direct_min_size =
                    Some(cli::value_with(&mut p, "--direct-min-size", parse_size)? as u64)
            }
            Long("reads-in-flight") => a.reads_in_flight = cli::value(&mut p, "--reads-in-flight")?,
            Long("open-files") => a.open_files = cli::value(&mut p, "--open-files")?,
            Long("read-path") => a.read_path = cli::value(&mut p, "--read-path")?,
            Long("decay") => a.decay = Some(seconds(&mut p, "--decay")?).filter(|d| !d.is_zero()),
            Long("min-send-rate") => {
                a.min_send_rate = cli::value_with(&mut p, "--min-send-rate", parse_size)? as u64
            }
            Long("seconds") => a.seconds = Some(cli::value(&mut p, "--seconds")?),
            Long("help") | Short('h') => return Err(Stop::Help),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let page = pagepool::page_size();
    if a.chunk == 0 || !a.chunk.is_multiple_of(page) || a.chunk > pagepool::DEFAULT_MAX_BUFFER_SIZE
    {
        return Err(format!(
            "--chunk-size must be a multiple of the page size ({page}) up to 16MiB"
        )
        .into());
    }
    if a.max_bytes / 8 * 7 < 4 * (a.chunk + 2 * page) || a.max_bytes / 8 < 64 * 2 * page {
        return Err(format!(
            "--max-bytes {} is too small for --chunk-size {} (it needs room for a few chunks)",
            a.max_bytes, a.chunk
        )
        .into());
    }
    if a.response_quota.is_some_and(|q| q < a.chunk) {
        return Err(format!(
            "--response-quota must hold one chunk (--chunk-size {})",
            a.chunk
        )
        .into());
    }
    if a.reads_in_flight == 0 {
        return Err("--reads-in-flight must be at least 1".into());
    }
    if a.live_rate == 0 || a.live_rate > 100_000 {
        return Err("--live-rate must be between 1 and 100000".into());
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, Stop> {
        parse_args(cli::parser(args))
    }

    #[test]
    fn defaults() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            (a.max_bytes, a.chunk, a.live_rate),
            (256 << 20, 256 << 10, 500)
        );
        assert_eq!(
            (a.pool_wait, a.grace),
            (Duration::from_secs(5), Duration::from_secs(5))
        );
        assert_eq!(
            (a.media_dir, a.response_quota, a.seconds),
            (None, None, None)
        );
        assert_eq!(
            (a.send_timeout, a.min_send_rate),
            (Some(Duration::from_secs(10)), 16 << 10)
        );
    }

    #[test]
    fn slow_client_limits() {
        let a = parse(&["--send-timeout", "0", "--min-send-rate", "0"]).unwrap();
        assert_eq!((a.send_timeout, a.min_send_rate), (None, 0));
        assert_eq!(a.decay, Some(Duration::from_secs(30)));
        assert_eq!(parse(&["--decay", "0"]).unwrap().decay, None);
        assert_eq!(a.read_path, Choice::Auto);
        assert_eq!(
            parse(&["--read-path", "io_uring"]).unwrap().read_path,
            Choice::IoUring
        );
        let a = parse(&["--send-timeout=3", "--min-send-rate=1M"]).unwrap();
        assert_eq!(
            (a.send_timeout, a.min_send_rate),
            (Some(Duration::from_secs(3)), 1 << 20)
        );
    }

    /// What `.ci/run` and `.ci/prometheus-check` pass, and the sizes as the
    /// docs spell them.
    #[test]
    fn ci_flags_and_sizes() {
        let a = parse(&["--listen", "127.0.0.1:0", "--seconds", "3"]).unwrap();
        assert_eq!((a.listen.port(), a.seconds), (0, Some(3)));
        let a = parse(&[
            "--max-bytes=1G",
            "--chunk-size",
            "1MiB",
            "--response-quota",
            "8M",
            "--media-dir",
            "/srv/media",
            "--live-rate",
            "50",
            "--pool-wait",
            "1",
            "--grace=2",
        ])
        .unwrap();
        assert_eq!(
            (a.max_bytes, a.chunk, a.response_quota),
            (1 << 30, 1 << 20, Some(8 << 20))
        );
        assert_eq!(a.media_dir, Some(PathBuf::from("/srv/media")));
        assert_eq!(
            (a.live_rate, a.pool_wait, a.grace),
            (50, Duration::from_secs(1), Duration::from_secs(2))
        );
    }

    #[test]
    fn every_flag_in_the_help_parses() {
        cli::assert_every_flag_parses(
            HELP,
            |flag| match flag {
                "--listen" => Some("127.0.0.1:0"),
                "--media-dir" => Some("/tmp"),
                "--max-bytes" => Some("64M"),
                "--chunk-size" | "--response-quota" | "--min-send-rate" | "--direct-min-size" => {
                    Some("256K")
                }
                "--read-path" => Some("blocking"),
                _ => Some("3"),
            },
            parse,
        );
    }

    #[test]
    fn bad_arguments() {
        for args in [
            &["--listen", "localhost:80"][..],
            &["--chunk-size", "1000"],
            &["--chunk-size", "32M"],
            &["--max-bytes", "1M"],
            &["--response-quota", "4K"],
            &["--live-rate", "0"],
            &["--live-rate", "5000000000"],
            &["--grace", "soon"],
            &["--send-timeout", "-1"],
            &["--min-send-rate", "fast"],
            &["--read-path", "aio"],
            &["--reads-in-flight", "0"],
            &["--seconds"],
            &["--port", "80"],
        ] {
            assert!(matches!(parse(args), Err(Stop::Bad(_))), "{args:?}");
        }
    }
}
