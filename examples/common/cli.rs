//! The examples' command lines, on `lexopt`: every example parses its flags
//! with [`lexopt::Parser`] in a function of its own and hands it to
//! [`parse`], so they all behave alike:
//!
//! - `--help` (or `-h`) prints the example's help, every option with its
//!   default, to stdout and exits 0;
//! - a bad argument prints one line, `NAME: what is wrong (try --help)`, to
//!   stderr and exits 2;
//! - `--flag value` and `--flag=value` are the same.

use std::fmt::Display;
use std::process::ExitCode;
use std::str::FromStr;

pub use lexopt::prelude::*;
pub use lexopt::Parser;

/// Why parsing stopped before it gave the arguments.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// `--help` or `-h`.
    Help,
    /// A bad argument, in words.
    Bad(String),
}

impl From<lexopt::Error> for Stop {
    fn from(e: lexopt::Error) -> Stop {
        Stop::Bad(e.to_string())
    }
}

impl From<String> for Stop {
    fn from(e: String) -> Stop {
        Stop::Bad(e)
    }
}

impl From<&str> for Stop {
    fn from(e: &str) -> Stop {
        Stop::Bad(e.to_owned())
    }
}

/// The value of `flag` (the option just read) as a string.
pub fn string(p: &mut Parser, flag: &str) -> Result<String, Stop> {
    p.value()?
        .into_string()
        .map_err(|v| Stop::Bad(format!("{flag}: not UTF-8: {v:?}")))
}

/// The value of `flag`, converted by `f`; an error names the flag and the value.
pub fn value_with<T, E: Display>(
    p: &mut Parser,
    flag: &str,
    f: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, Stop> {
    let v = string(p, flag)?;
    f(&v).map_err(|e| Stop::Bad(format!("{flag} {v}: {e}")))
}

/// The value of `flag`, parsed with `FromStr`.
pub fn value<T: FromStr>(p: &mut Parser, flag: &str) -> Result<T, Stop>
where
    T::Err: Display,
{
    value_with(p, flag, str::parse::<T>)
}

/// Runs `parse` on the process's arguments. `Err` carries the exit code
/// once `--help` was printed (0) or a bad argument reported (2).
pub fn parse<T>(
    name: &str,
    help: &str,
    parse: impl FnOnce(Parser) -> Result<T, Stop>,
) -> Result<T, ExitCode> {
    match parse(Parser::from_env()) {
        Ok(args) => Ok(args),
        Err(Stop::Help) => {
            print!("{help}");
            Err(ExitCode::SUCCESS)
        }
        Err(Stop::Bad(why)) => {
            eprintln!("{name}: {why} (try --help)");
            Err(ExitCode::from(2))
        }
    }
}

/// A parser over `args` (without the program name), for tests.
#[cfg(test)]
pub fn parser(args: &[&str]) -> Parser {
    Parser::from_args(args.iter().copied())
}

/// Every `--flag` the help text names, for tests that check each one parses.
#[cfg(test)]
pub fn flags_in(help: &str) -> Vec<&str> {
    help.split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .collect()
}

/// Checks that every `--flag` of `help` parses, given the value
/// `value_of(flag)` (`None`: a flag that takes none), and that `--help`
/// stops with [`Stop::Help`].
#[cfg(test)]
pub fn assert_every_flag_parses<T: std::fmt::Debug>(
    help: &str,
    value_of: impl Fn(&str) -> Option<&'static str>,
    parse: impl Fn(&[&str]) -> Result<T, Stop>,
) {
    for flag in flags_in(help) {
        let value = if flag == "--help" {
            None
        } else {
            value_of(flag)
        };
        let args: Vec<&str> = [flag].into_iter().chain(value).collect();
        let got = parse(&args);
        if flag == "--help" {
            assert_eq!(got.unwrap_err(), Stop::Help);
        } else {
            assert!(got.is_ok(), "{args:?}: {got:?}");
        }
    }
}
