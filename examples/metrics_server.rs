//! Serves pagepool's Prometheus metrics while a small workload runs, so a real
//! Prometheus (or `curl | promtool check metrics`) can scrape it.
//!
//! ```text
//! cargo run --release --example metrics_server -- --listen 127.0.0.1:9187 --seconds 30
//! curl -s http://127.0.0.1:9187/metrics
//! ```
//!
//! ```text
//! --listen ADDR    address of the metrics listener (default 127.0.0.1:9187)
//! --seconds N      stop after N seconds (default: run until killed)
//! ```
//!
//! `--help` prints them and exits 0; bad arguments exit 2.

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use pagepool::{BufferPool, Error};

use common::cli::{self, Long, Short, Stop};

const HELP: &str = "\
metrics_server: serves pagepool's Prometheus metrics while a small workload runs

usage: metrics_server [OPTIONS]

  --listen ADDR    address of the metrics listener (default 127.0.0.1:9187)
  --seconds N      stop after N seconds (default: run until killed)
  -h, --help       this text

Exit code: 0 after --seconds, 1 when the listener or a pool fails, 2 for bad arguments.
";

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    seconds: Option<u64>,
}

fn parse_args(mut p: cli::Parser) -> Result<Args, Stop> {
    let mut args = Args {
        listen: "127.0.0.1:9187".parse().expect("a valid default address"),
        seconds: None,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("listen") => args.listen = cli::value(&mut p, "--listen")?,
            Long("seconds") => args.seconds = Some(cli::value(&mut p, "--seconds")?),
            Long("help") | Short('h') => return Err(Stop::Help),
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match cli::parse("metrics_server", HELP, parse_args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metrics_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Error> {
    pagepool::prometheus::install(args.listen)?;
    println!("serving metrics on http://{}/metrics", args.listen);

    // Two pools: video-on-demand reads (large buffers, capped) and live packets.
    let vod = BufferPool::builder()
        .name("vod")
        .max_bytes(32 << 20)
        .build()?;
    let live = BufferPool::builder().name("live").build()?;
    let deadline = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));

    let workers: Vec<_> = [(vod, 1usize << 20), (live, 1500)]
        .into_iter()
        .map(|(pool, top)| {
            thread::spawn(move || -> Result<(), Error> {
                let mut held = Vec::new();
                let mut i = 0usize;
                while deadline.is_none_or(|d| Instant::now() < d) {
                    i += 1;
                    // Sizes cycle through several classes; every 64th request
                    // is over the top class of the vod pool's cap.
                    let size = 1 + (i * 7919) % top;
                    match pool.allocate_page_size_buffer(size) {
                        Ok(mut buf) => {
                            buf.as_max_slice_mut()[0] = i as u8;
                            held.push(buf);
                        }
                        Err(Error::Exhausted { .. }) => held.clear(),
                        Err(e) => return Err(e),
                    }
                    if held.len() > 40 {
                        held.drain(..20);
                    }
                    if i.is_multiple_of(1000) {
                        thread::sleep(Duration::from_millis(5));
                        if i.is_multiple_of(50_000) {
                            pool.trim();
                        }
                    }
                }
                drop(held);
                pool.publish_metrics();
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker panicked")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, Stop> {
        parse_args(cli::parser(args))
    }

    /// Defaults, what `.ci/scrape-check` and `.ci/run` pass, and bad ones.
    #[test]
    fn arguments() {
        let a = parse(&[]).unwrap();
        assert_eq!(
            (a.listen.to_string().as_str(), a.seconds),
            ("127.0.0.1:9187", None)
        );
        let a = parse(&["--listen", "127.0.0.1:4000", "--seconds", "20"]).unwrap();
        assert_eq!((a.listen.port(), a.seconds), (4000, Some(20)));
        assert_eq!(parse(&["--help"]).unwrap_err(), Stop::Help);
        for bad in [
            &["--listen", "nowhere"][..],
            &["--seconds", "-1"],
            &["--seconds"],
            &["-x"],
        ] {
            assert!(matches!(parse(bad), Err(Stop::Bad(_))), "{bad:?}");
        }
        for flag in cli::flags_in(HELP) {
            assert!(
                ["--listen", "--seconds", "--help"].contains(&flag),
                "{flag}"
            );
        }
    }
}
