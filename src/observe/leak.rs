//! Leak reports from plain slot data: what an outstanding buffer looks
//! like ([`OutstandingBuffer`]), and the report that groups them by
//! allocation site ([`LeakReport`]). The pool walks its slabs and hands
//! each in-use slot to [`describe`] and [`is_suspect`].

use std::collections::BTreeMap;
use std::fmt;
use std::panic::Location;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::mem::slot::{Slot, SlotState};
use crate::site::Site;
use crate::threads;

/// One buffer that is out, from [`BufferPool::outstanding`](crate::BufferPool::outstanding).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OutstandingBuffer {
    /// The buffer's first byte.
    pub address: usize,
    /// Its `max_len`.
    pub max_len: usize,
    /// Bytes of its slot (whole pages).
    pub slot_len: usize,
    /// Time since allocation (to within 5 ms); zero without tracking.
    pub age: Duration,
    /// Where it was allocated, by Rust (`None` without tracking, or when
    /// allocated from C).
    pub allocated_at: Option<&'static Location<'static>>,
    /// Where it was allocated, by C (`None` without tracking, or when
    /// allocated from Rust).
    pub c_site: Option<&'static Site>,
    /// The allocating thread's name (or `#N` for an unnamed thread).
    pub thread: Option<String>,
    /// The allocation's backtrace, for sampled allocations with
    /// [`LeakTracking::Backtrace`](crate::LeakTracking::Backtrace).
    pub backtrace: Option<String>,
}

/// Outstanding buffers grouped by allocation site, biggest first, from
/// [`BufferPool::leak_report`](crate::BufferPool::leak_report); its
/// `Display` is the report to log or serve.
///
/// ```text
/// pagepool "vod": 3 buffers (12288 bytes) outstanding for at least 0ns, from 2 sites
///     2 buffers      8192 bytes  age 1.20s..3.41s  src/reader.rs:88:23  threads: tokio-worker-1
///     1 buffer       4096 bytes  age 0.52s         src/live.rs:40:17    threads: main
/// ```
#[derive(Debug, Clone, Default)]
pub struct LeakReport {
    pool: String,
    min_age: Duration,
    sites: Vec<LeakSite>,
}

/// One allocation site of a [`LeakReport`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeakSite {
    /// The site, for Rust callers (`None`: buffers allocated without
    /// tracking, or from C).
    pub location: Option<&'static Location<'static>>,
    /// The site, for C callers (`None`: without tracking, or from Rust).
    pub c_site: Option<&'static Site>,
    /// Outstanding buffers from it.
    pub buffers: usize,
    /// Their slot bytes.
    pub bytes: usize,
    /// The youngest buffer's age.
    pub youngest: Duration,
    /// The oldest buffer's age.
    pub oldest: Duration,
    /// The threads that allocated them.
    pub threads: Vec<String>,
    /// One sampled backtrace, if any was captured.
    pub backtrace: Option<String>,
}

impl LeakReport {
    /// Groups `buffers` by site, keeping those at least `min_age` old.
    pub(crate) fn new(pool: &str, min_age: Duration, buffers: Vec<OutstandingBuffer>) -> Self {
        // A C site is one interned record: its address tells it apart.
        type Key = Option<(&'static str, u32, u32, usize)>;
        let mut by_site: BTreeMap<Key, LeakSite> = BTreeMap::new();
        for b in buffers.into_iter().filter(|b| b.age >= min_age) {
            let key = match (b.allocated_at, b.c_site) {
                (Some(l), _) => Some((l.file(), l.line(), l.column(), 0)),
                (None, Some(c)) => Some((
                    c.file().unwrap_or(""),
                    c.line(),
                    0,
                    c as *const Site as usize,
                )),
                (None, None) => None,
            };
            let site = by_site.entry(key).or_insert_with(|| LeakSite {
                location: b.allocated_at,
                c_site: b.c_site,
                buffers: 0,
                bytes: 0,
                youngest: b.age,
                oldest: b.age,
                threads: Vec::new(),
                backtrace: None,
            });
            site.buffers += 1;
            site.bytes += b.slot_len;
            site.youngest = site.youngest.min(b.age);
            site.oldest = site.oldest.max(b.age);
            if let Some(t) = b.thread {
                if !site.threads.contains(&t) {
                    site.threads.push(t);
                }
            }
            if site.backtrace.is_none() {
                site.backtrace = b.backtrace;
            }
        }
        let mut sites: Vec<LeakSite> = by_site.into_values().collect();
        sites.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.buffers.cmp(&a.buffers)));
        LeakReport {
            pool: pool.to_owned(),
            min_age,
            sites,
        }
    }

    /// Whether no buffer is reported.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// Buffers reported.
    pub fn buffers(&self) -> usize {
        self.sites.iter().map(|s| s.buffers).sum()
    }

    /// Their slot bytes.
    pub fn bytes(&self) -> usize {
        self.sites.iter().map(|s| s.bytes).sum()
    }

    /// The sites, biggest first.
    pub fn sites(&self) -> &[LeakSite] {
        &self.sites
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.buffers();
        writeln!(
            f,
            "pagepool {:?}: {n} buffer{} ({} bytes) outstanding for at least {:?}, from {} site{}",
            self.pool,
            if n == 1 { "" } else { "s" },
            self.bytes(),
            self.min_age,
            self.sites.len(),
            if self.sites.len() == 1 { "" } else { "s" },
        )?;
        for s in &self.sites {
            let age = if s.youngest == s.oldest {
                format!("{:.2?}", s.oldest)
            } else {
                format!("{:.2?}..{:.2?}", s.youngest, s.oldest)
            };
            let site = match (s.location, s.c_site) {
                (Some(l), _) => l.to_string(),
                (None, Some(c)) => c.to_string(),
                (None, None) => "(allocation site not tracked)".to_owned(),
            };
            write!(
                f,
                "    {:>6} buffer{} {:>12} bytes  age {age:<18} {site}",
                s.buffers,
                if s.buffers == 1 { " " } else { "s" },
                s.bytes,
            )?;
            if !s.threads.is_empty() {
                write!(f, "  threads: {}", s.threads.join(", "))?;
            }
            writeln!(f)?;
            if let Some(bt) = &s.backtrace {
                for line in bt.lines() {
                    writeln!(f, "        {line}")?;
                }
            }
        }
        Ok(())
    }
}

impl std::error::Error for LeakReport {}

/// Describes in-use slot `s` (of `slot_len` bytes) at coarse time `now`,
/// with `backtrace` if one was captured for it.
pub(crate) fn describe(
    s: &Slot,
    slot_len: usize,
    now: u64,
    backtrace: Option<String>,
) -> OutstandingBuffer {
    let at = s.allocated_at.load(Relaxed);
    OutstandingBuffer {
        address: s.data().as_ptr() as usize,
        max_len: s.max_len.load(Relaxed) as usize,
        slot_len,
        age: Duration::from_nanos(if at == 0 { 0 } else { now.saturating_sub(at) }),
        allocated_at: s.site().location(),
        c_site: s.site().c_site(),
        thread: threads::name(s.thread.load(Relaxed)),
        backtrace,
    }
}

/// Whether slot `s` holds a buffer out for longer than `threshold`
/// nanoseconds at coarse time `now` (never for an untracked one).
pub(crate) fn is_suspect(s: &Slot, now: u64, threshold: u64) -> bool {
    let at = s.allocated_at.load(Relaxed);
    s.state.load() == SlotState::InUse && at != 0 && now.saturating_sub(at) > threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(age_ms: u64, at: Option<&'static Location<'static>>, len: usize) -> OutstandingBuffer {
        OutstandingBuffer {
            address: 0,
            max_len: len,
            slot_len: len,
            age: Duration::from_millis(age_ms),
            allocated_at: at,
            c_site: None,
            thread: Some("main".into()),
            backtrace: None,
        }
    }

    #[test]
    fn c_sites_group_by_record_and_print() {
        let c = Site::source("a.c", 9, "f");
        let mut b = buf(20, None, 4096);
        b.c_site = Some(c);
        let r = LeakReport::new("p", Duration::ZERO, vec![b.clone(), b, buf(30, None, 64)]);
        assert_eq!(r.sites().len(), 2);
        assert!(std::ptr::eq(r.sites()[0].c_site.unwrap(), c));
        assert_eq!((r.sites()[0].location, r.sites()[0].buffers), (None, 2));
        let text = r.to_string();
        assert!(text.contains(" a.c:9 (f) "), "{text}");
        assert!(text.contains("(allocation site not tracked)"), "{text}");
    }

    #[test]
    fn report_groups_by_site_biggest_first() {
        let a = Location::caller();
        let b = Location::caller();
        let r = LeakReport::new(
            "p",
            Duration::from_millis(10),
            vec![
                buf(5, Some(a), 4096),
                buf(20, Some(a), 4096),
                buf(30, Some(b), 8192),
                buf(40, Some(b), 8192),
                buf(50, Some(a), 4096),
            ],
        );
        assert_eq!((r.buffers(), r.bytes()), (4, 4096 * 2 + 8192 * 2));
        assert_eq!(r.sites()[0].location, Some(b));
        assert_eq!(r.sites()[0].buffers, 2);
        assert_eq!(r.sites()[1].youngest, Duration::from_millis(20));
        assert_eq!(r.sites()[1].oldest, Duration::from_millis(50));
        let text = r.to_string();
        assert!(
            text.starts_with("pagepool \"p\": 4 buffers (24576 bytes)"),
            "{text}"
        );
        assert!(
            text.contains(&b.to_string()) && text.contains("threads: main"),
            "{text}"
        );
    }
}
