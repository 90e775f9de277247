//! The `Range` header of `GET /media/{name}`: the syntax is
//! `http-range-header`'s, what a range means for a file of some size is ours.

use http_range_header::{parse_range_header, EndPosition, RangeUnsatisfiableError, StartPosition};

/// The range unit and its separator, as `http-range-header` expects them.
const UNIT: &str = "bytes=";

/// What a `Range` header asks of a file of some size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// No (usable) range: the whole file, 200.
    Whole,
    /// Bytes `first..=last`, 206.
    Part { first: u64, last: u64 },
    /// 416.
    Unsatisfiable,
}

/// Reads a single-range `Range` header (`bytes=a-b`, `bytes=a-`,
/// `bytes=-n`; the unit in any case, as RFC 9110 has it, which
/// `http-range-header` does not: the unit is lower-cased for it). Anything else (other units, several ranges, bad syntax) is
/// ignored, as RFC 9110 allows: the whole file is served. An end past the
/// file and a suffix longer than it are clamped to the file; a start at or
/// past its end, and the empty suffix `-0`, are unsatisfiable.
pub fn parse_range(header: Option<&str>, size: u64) -> Wanted {
    let Some(header) = header.map(str::trim) else {
        return Wanted::Whole;
    };
    if header.contains(',') {
        return Wanted::Whole;
    }
    let lowered;
    let header = match header.get(..UNIT.len()) {
        Some(unit) if unit != UNIT && unit.eq_ignore_ascii_case(UNIT) => {
            lowered = format!("{UNIT}{}", &header[UNIT.len()..]);
            lowered.as_str()
        }
        _ => header,
    };
    let range = match parse_range_header(header) {
        Ok(parsed) => match parsed.ranges.as_slice() {
            [one] => *one,
            _ => return Wanted::Whole,
        },
        Err(RangeUnsatisfiableError::ZeroSuffix) => return Wanted::Unsatisfiable,
        Err(_) => return Wanted::Whole,
    };
    match range.start {
        StartPosition::FromLast(n) => {
            if size == 0 {
                return Wanted::Unsatisfiable;
            }
            let n = n.min(size);
            Wanted::Part {
                first: size - n,
                last: size - 1,
            }
        }
        StartPosition::Index(first) => {
            let last = match range.end {
                EndPosition::LastByte => u64::MAX,
                EndPosition::Index(last) if last >= first => last,
                EndPosition::Index(_) => return Wanted::Whole,
            };
            if first >= size {
                return Wanted::Unsatisfiable;
            }
            Wanted::Part {
                first,
                last: last.min(size - 1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use Wanted::*;
        assert_eq!(parse_range(None, 10), Whole);
        assert_eq!(
            parse_range(Some("bytes=2-4"), 10),
            Part { first: 2, last: 4 }
        );
        assert_eq!(
            parse_range(Some("bytes=2-"), 10),
            Part { first: 2, last: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Part { first: 7, last: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            Part { first: 0, last: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-100"), 10),
            Part { first: 5, last: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), Whole);
        // Range units are case-insensitive (RFC 9110 §14.1).
        assert_eq!(
            parse_range(Some("Bytes=0-3"), 10),
            Part { first: 0, last: 3 }
        );
        assert_eq!(
            parse_range(Some("BYTES=-2"), 10),
            Part { first: 8, last: 9 }
        );
        assert_eq!(parse_range(Some("bytes=+1-2"), 10), Whole);
    }

    #[test]
    fn edges() {
        use Wanted::*;
        // An empty file has no byte to give.
        assert_eq!(parse_range(Some("bytes=-1"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        // Surrounding spaces are fine.
        assert_eq!(
            parse_range(Some(" bytes=3-3 "), 10),
            Part { first: 3, last: 3 }
        );
        // Several ranges are served whole, even with an empty suffix among
        // them.
        assert_eq!(parse_range(Some("bytes=0-1,-0"), 10), Whole);
        // The crate's stricter syntax: no spaces inside, no leading zeros
        // (RFC 9110 allows `007`; ignoring such a header is also allowed).
        assert_eq!(parse_range(Some("bytes= 1-2"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=007-8"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=x-"), 10), Whole);
        assert_eq!(parse_range(Some("bytes="), 10), Whole);
    }
}
