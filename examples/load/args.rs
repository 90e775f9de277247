//! The command line (see the example's docs, and `--help`).

use crate::common::cli::{self, Long, Short, Stop};

pub const HELP: &str = "\
load: load generator and end-to-end checker for the media_server example

usage: load [OPTIONS]

  --target URL          server base URL, http only (default http://127.0.0.1:8080)
  --clients N           concurrent clients (default 8)
  --live-clients M      of which live subscribers (default N/4, at least 1 when N >= 2)
  --channels K          live channels to spread them over (default 2)
  --seconds S           how long to run (default 10)
  --wait S              how long to wait for the server to answer at start (default 5)
  --seed X              random seed (default: from the clock)
  -h, --help            this text

Exit code: 0 when every request and check passed, 1 otherwise, 2 for bad arguments.
";

#[derive(Debug, Clone)]
pub struct Args {
    /// `host:port`.
    pub authority: String,
    pub clients: usize,
    pub live_clients: usize,
    pub channels: usize,
    pub seconds: u64,
    pub wait: u64,
    pub seed: u64,
}

pub fn parse_args(mut p: cli::Parser) -> Result<Args, Stop> {
    let mut target = "http://127.0.0.1:8080".to_owned();
    let (mut clients, mut live_clients, mut channels) = (8usize, None, 2usize);
    let (mut seconds, mut wait) = (10u64, 5u64);
    let mut seed = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("target") => target = cli::string(&mut p, "--target")?,
            Long("clients") => clients = cli::value(&mut p, "--clients")?,
            Long("live-clients") => live_clients = Some(cli::value(&mut p, "--live-clients")?),
            Long("channels") => channels = cli::value(&mut p, "--channels")?,
            Long("seconds") => seconds = cli::value(&mut p, "--seconds")?,
            Long("wait") => wait = cli::value(&mut p, "--wait")?,
            Long("seed") => seed = Some(cli::value(&mut p, "--seed")?),
            Long("help") | Short('h') => return Err(Stop::Help),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let authority = target
        .strip_prefix("http://")
        .ok_or_else(|| format!("--target {target}: only http:// URLs"))?
        .trim_end_matches('/')
        .to_owned();
    if authority.is_empty() || authority.contains('/') {
        return Err(format!("--target {target}: expected http://HOST:PORT").into());
    }
    let authority = if authority.contains(':') {
        authority
    } else {
        format!("{authority}:80")
    };
    if clients == 0 || clients > 10_000 {
        return Err("--clients must be between 1 and 10000".into());
    }
    let live_clients = live_clients.unwrap_or(if clients >= 2 {
        (clients / 4).max(1)
    } else {
        0
    });
    if live_clients > clients {
        return Err("--live-clients cannot exceed --clients".into());
    }
    if channels == 0 {
        return Err("--channels must be at least 1".into());
    }
    if seconds == 0 {
        return Err("--seconds must be at least 1".into());
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    Ok(Args {
        authority,
        clients,
        live_clients,
        channels,
        seconds,
        wait,
        seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, Stop> {
        parse_args(cli::parser(args))
    }

    #[test]
    fn defaults() {
        let a = parse(&["--seed", "9"]).unwrap();
        assert_eq!(a.authority, "127.0.0.1:8080");
        assert_eq!((a.clients, a.live_clients, a.channels), (8, 2, 2));
        assert_eq!((a.seconds, a.wait, a.seed), (10, 5, 9));
    }

    /// What `.ci/prometheus-check` passes.
    #[test]
    fn ci_flags() {
        let a = parse(&[
            "--target",
            "http://127.0.0.1:4567",
            "--clients",
            "8",
            "--seconds",
            "20",
        ])
        .unwrap();
        assert_eq!(
            (a.authority.as_str(), a.clients, a.seconds),
            ("127.0.0.1:4567", 8, 20)
        );
        let a = parse(&["--target=http://localhost/", "--clients=1"]).unwrap();
        assert_eq!((a.authority.as_str(), a.live_clients), ("localhost:80", 0));
    }

    #[test]
    fn every_flag_in_the_help_parses() {
        cli::assert_every_flag_parses(
            HELP,
            |flag| match flag {
                "--target" => Some("http://127.0.0.1:1"),
                _ => Some("1"),
            },
            parse,
        );
    }

    #[test]
    fn bad_arguments() {
        for args in [
            &["--target", "https://x:1"][..],
            &["--target", "http://x:1/path"],
            &["--clients", "0"],
            &["--clients", "-3"],
            &["--clients", "4", "--live-clients", "5"],
            &["--channels", "0"],
            &["--seconds", "0"],
            &["--wait"],
            &["--bogus"],
        ] {
            assert!(matches!(parse(args), Err(Stop::Bad(_))), "{args:?}");
        }
    }
}
