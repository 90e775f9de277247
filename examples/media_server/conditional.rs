//! A media file's validators (a strong `ETag`, `Last-Modified`) and the
//! conditional requests on them (RFC 9110 §13): `If-Match` and
//! `If-Unmodified-Since` (412), `If-None-Match` and `If-Modified-Since`
//! (304), `If-Range` (the range, or the whole file). The header syntax and
//! the comparisons are the `headers` crate's; the order of evaluation is
//! RFC 9110 §13.2.2.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::SystemTime;

use headers::{
    ETag, HeaderMapExt, IfMatch, IfModifiedSince, IfNoneMatch, IfRange, IfUnmodifiedSince,
    LastModified,
};
use hyper::HeaderMap;

/// What identifies one version of a file.
#[derive(Debug, Clone)]
pub struct Validators {
    /// Strong: inode, size and modification time to the nanosecond, so a
    /// file rewritten in place (or replaced by a rename) gets a new one.
    pub etag: ETag,
    pub modified: SystemTime,
}

impl Validators {
    pub fn of(meta: &Metadata) -> Validators {
        let mtime_ns = (meta.mtime() as i128) * 1_000_000_000 + meta.mtime_nsec() as i128;
        let etag = format!("\"{:x}-{:x}-{:x}\"", meta.ino(), meta.size(), mtime_ns)
            .parse()
            .expect("hex digits and dashes in quotes make a strong entity tag");
        Validators {
            etag,
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }

    /// Sets `ETag` and `Last-Modified`.
    pub fn insert(&self, h: &mut HeaderMap) {
        h.typed_insert(self.etag.clone());
        h.typed_insert(LastModified::from(self.modified));
    }
}

/// What the conditional headers of a `GET` or `HEAD` decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the file; `range` tells whether a `Range` header applies (no
    /// `If-Range`, or one that matches).
    Send { range: bool },
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    PreconditionFailed,
}

/// Evaluates the request's preconditions against `v` (RFC 9110 §13.2.2).
/// A header that does not parse is ignored, as if absent.
pub fn evaluate(h: &HeaderMap, v: &Validators) -> Verdict {
    if let Some(m) = h.typed_get::<IfMatch>() {
        if !m.precondition_passes(&v.etag) {
            return Verdict::PreconditionFailed;
        }
    } else if let Some(u) = h.typed_get::<IfUnmodifiedSince>() {
        if !u.precondition_passes(v.modified) {
            return Verdict::PreconditionFailed;
        }
    }
    if let Some(n) = h.typed_get::<IfNoneMatch>() {
        if !n.precondition_passes(&v.etag) {
            return Verdict::NotModified;
        }
    } else if let Some(s) = h.typed_get::<IfModifiedSince>() {
        if !s.is_modified(v.modified) {
            return Verdict::NotModified;
        }
    }
    let range = match h.typed_get::<IfRange>() {
        Some(r) => !r.is_modified(Some(&v.etag), Some(&LastModified::from(v.modified))),
        None => true,
    };
    Verdict::Send { range }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn validators() -> Validators {
        Validators {
            etag: "\"1-2-3\"".parse().unwrap(),
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    fn verdict(headers: &[(&str, &str)]) -> Verdict {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        evaluate(&h, &validators())
    }

    const DATE: &str = "Tue, 14 Nov 2023 22:13:20 GMT"; // the modification time
    const BEFORE: &str = "Tue, 14 Nov 2023 22:13:19 GMT";

    #[test]
    fn unconditional() {
        assert_eq!(verdict(&[]), Verdict::Send { range: true });
    }

    #[test]
    fn if_none_match_and_if_modified_since() {
        use Verdict::*;
        assert_eq!(verdict(&[("if-none-match", "\"1-2-3\"")]), NotModified);
        assert_eq!(verdict(&[("if-none-match", "W/\"1-2-3\"")]), NotModified);
        assert_eq!(
            verdict(&[("if-none-match", "\"x\", \"1-2-3\"")]),
            NotModified
        );
        assert_eq!(verdict(&[("if-none-match", "*")]), NotModified);
        assert_eq!(
            verdict(&[("if-none-match", "\"other\"")]),
            Send { range: true }
        );
        assert_eq!(verdict(&[("if-modified-since", DATE)]), NotModified);
        assert_eq!(
            verdict(&[("if-modified-since", BEFORE)]),
            Send { range: true }
        );
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            verdict(&[("if-none-match", "\"other\""), ("if-modified-since", DATE)]),
            Send { range: true }
        );
    }

    #[test]
    fn if_match_and_if_unmodified_since() {
        use Verdict::*;
        assert_eq!(verdict(&[("if-match", "\"1-2-3\"")]), Send { range: true });
        assert_eq!(verdict(&[("if-match", "*")]), Send { range: true });
        // Strong comparison: a weak tag never matches.
        assert_eq!(verdict(&[("if-match", "W/\"1-2-3\"")]), PreconditionFailed);
        assert_eq!(verdict(&[("if-match", "\"old\"")]), PreconditionFailed);
        assert_eq!(
            verdict(&[("if-unmodified-since", BEFORE)]),
            PreconditionFailed
        );
        assert_eq!(
            verdict(&[("if-unmodified-since", DATE)]),
            Send { range: true }
        );
    }

    #[test]
    fn if_range() {
        use Verdict::*;
        assert_eq!(verdict(&[("if-range", "\"1-2-3\"")]), Send { range: true });
        assert_eq!(verdict(&[("if-range", "\"old\"")]), Send { range: false });
        // A weak tag never matches (If-Range compares strongly).
        assert_eq!(
            verdict(&[("if-range", "W/\"1-2-3\"")]),
            Send { range: false }
        );
        assert_eq!(verdict(&[("if-range", DATE)]), Send { range: true });
        assert_eq!(verdict(&[("if-range", BEFORE)]), Send { range: false });
    }

    #[test]
    fn the_etag_changes_with_the_file() {
        let dir = std::env::temp_dir().join(format!("pagepool-etag-{}", std::process::id()));
        std::fs::write(&dir, b"one").unwrap();
        let a = Validators::of(&std::fs::metadata(&dir).unwrap());
        std::fs::write(&dir, b"three").unwrap();
        let b = Validators::of(&std::fs::metadata(&dir).unwrap());
        std::fs::remove_file(&dir).unwrap();
        assert!(!a.etag.is_weak());
        assert_ne!(a.etag, b.etag);
    }
}
