//! The command line (see the example's docs, and `--help`).

use pagepool::{DebugLevel, GuardMechanism};

use super::common::cli::{self, Long, Short, Stop};
use super::common::size::parse_size;
use super::report::SoakConfig;

pub const HELP: &str = "\
soak: many threads allocate, stamp, hand over, verify and release pooled buffers

usage: soak [OPTIONS]

  --threads N            workers (default: available parallelism)
  --ops M                operations in all, 0 = unlimited (default 10000000)
  --seconds S            stop after S seconds (default: no limit)
  --max-bytes B          the pool's byte cap (default 512MiB)
  --max-size B           largest buffer (default 4MiB)
  --guard-mechanism M    auto | mprotect | off (default auto)
  --debug L              off | standard | paranoid (default standard)
  --no-thread-cache      turn the pool's thread caches off (default: on)
  --seed X               random seed (default 1)
  --quiet                no progress lines on stderr (default: one every 5 s)
  -h, --help             this text

Sizes are bytes, or with a suffix: K, M, G (or KiB, MiB, GiB) are powers of
1024, KB, MB, GB powers of 1000.
Exit code: 0 when every check passed, 1 on any failure, 2 for bad arguments.
";

/// Parses the options into a config (progress on unless `--quiet`).
pub fn parse_args(mut p: cli::Parser) -> Result<SoakConfig, Stop> {
    let mut cfg = SoakConfig {
        progress: true,
        ..SoakConfig::default()
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("threads") => cfg.threads = cli::value(&mut p, "--threads")?,
            Long("ops") => cfg.ops = cli::value(&mut p, "--ops")?,
            Long("seconds") => {
                let s: f64 = cli::value(&mut p, "--seconds")?;
                if !(s > 0.0 && s.is_finite()) {
                    return Err("--seconds must be positive".into());
                }
                cfg.seconds = Some(s);
            }
            Long("max-bytes") => {
                cfg.max_bytes = cli::value_with(&mut p, "--max-bytes", parse_size)?
            }
            Long("max-size") => cfg.max_size = cli::value_with(&mut p, "--max-size", parse_size)?,
            Long("guard-mechanism") => {
                cfg.guards = cli::value_with(&mut p, "--guard-mechanism", |v| match v {
                    "auto" => Ok(Some(GuardMechanism::Auto)),
                    "mprotect" => Ok(Some(GuardMechanism::Mprotect)),
                    "off" | "none" => Ok(None),
                    _ => Err("expected auto, mprotect or off"),
                })?
            }
            Long("debug") => {
                cfg.debug = cli::value_with(&mut p, "--debug", |v| match v {
                    "off" => Ok(DebugLevel::Off),
                    "standard" => Ok(DebugLevel::Standard),
                    "paranoid" => Ok(DebugLevel::Paranoid),
                    _ => Err("expected off, standard or paranoid"),
                })?
            }
            Long("no-thread-cache") => cfg.thread_cache = false,
            Long("quiet") => cfg.progress = false,
            Long("seed") => cfg.seed = cli::value(&mut p, "--seed")?,
            Long("help") | Short('h') => return Err(Stop::Help),
            _ => return Err(arg.unexpected().into()),
        }
    }
    if cfg.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    if cfg.max_size == 0 {
        return Err("--max-size must be at least 1".into());
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<SoakConfig, Stop> {
        parse_args(cli::parser(args))
    }

    #[test]
    fn defaults() {
        let cfg = parse(&[]).unwrap();
        assert_eq!(
            (cfg.ops, cfg.max_bytes, cfg.max_size),
            (10_000_000, 512 << 20, 4 << 20)
        );
        assert_eq!(cfg.guards, Some(GuardMechanism::Auto));
        assert_eq!(cfg.debug, DebugLevel::Standard);
        assert!(cfg.thread_cache && cfg.progress && cfg.seconds.is_none());
    }

    /// The flags `.ci/valgrind` passes.
    #[test]
    fn valgrind_flags() {
        let cfg = parse(&[
            "--threads",
            "2",
            "--max-size",
            "262144",
            "--quiet",
            "--ops",
            "1000000",
            "--guard-mechanism",
            "off",
            "--debug",
            "off",
            "--no-thread-cache",
        ])
        .unwrap();
        assert_eq!(
            (cfg.threads, cfg.max_size, cfg.ops),
            (2, 262_144, 1_000_000)
        );
        assert_eq!((cfg.guards, cfg.debug), (None, DebugLevel::Off));
        assert!(!cfg.thread_cache && !cfg.progress);
        let cfg = parse(&["--guard-mechanism=mprotect", "--debug=paranoid"]).unwrap();
        assert_eq!(cfg.guards, Some(GuardMechanism::Mprotect));
        assert_eq!(cfg.debug, DebugLevel::Paranoid);
    }

    #[test]
    fn every_flag_in_the_help_parses() {
        cli::assert_every_flag_parses(
            HELP,
            |flag| match flag {
                "--guard-mechanism" => Some("off"),
                "--debug" => Some("off"),
                "--max-bytes" | "--max-size" => Some("1M"),
                "--no-thread-cache" | "--quiet" => None,
                _ => Some("3"),
            },
            parse,
        );
    }

    #[test]
    fn bad_arguments() {
        for args in [
            &["--threads", "0"][..],
            &["--ops", "many"],
            &["--ops"],
            &["--seconds", "-1"],
            &["--max-size", "3X"],
            &["--guard-mechanism", "madvise"],
            &["--frobnicate"],
            &["extra"],
        ] {
            assert!(matches!(parse(args), Err(Stop::Bad(_))), "{args:?}");
        }
    }
}
