//! Serves pagepool's Prometheus metrics while a small workload runs, so a real
//! Prometheus (or `curl | promtool check metrics`) can scrape it.
//!
//! ```text
//! cargo run --release --example metrics_server -- --listen 127.0.0.1:9187 --seconds 30
//! curl -s http://127.0.0.1:9187/metrics
//! ```
//!
//! Without `--seconds` it runs until killed.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use pagepool::{BufferPool, Error};

struct Args {
    listen: SocketAddr,
    seconds: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:9187".parse().expect("a valid default address"),
        seconds: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                args.listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "--seconds" => {
                let v = value()?;
                args.seconds = Some(v.parse().map_err(|e| format!("--seconds {v}: {e}"))?);
            }
            "-h" | "--help" => {
                return Err("usage: metrics_server [--listen ADDR] [--seconds N]".to_owned())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
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
