//! Leak tracking: who holds which buffer, since when, allocated where.
//!
//! With [`LeakTracking::CallSite`] (the default) every allocation records, in
//! its slot's own metadata line, the `#[track_caller]` location of the
//! `allocate_page_size_buffer` call, the allocating thread and the time (from
//! a coarse clock that advances every 5 ms): four relaxed stores and no shared
//! write. [`LeakTracking::Backtrace`] also captures a full
//! [`std::backtrace::Backtrace`] for one allocation in N, which costs
//! microseconds each.
//!
//! Reading is off the hot path: [`BufferPool::outstanding`],
//! [`BufferPool::leak_report`] and the background metrics publisher (for
//! `pagepool_leak_suspects`) walk the slot metadata under the slab lock.
//!
//! [`BufferPool::outstanding`]: crate::BufferPool::outstanding
//! [`BufferPool::leak_report`]: crate::BufferPool::leak_report

use std::collections::BTreeMap;
use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock;
use crate::pool::PoolInner;
use crate::slab::{Slot, HAS_BACKTRACE, IN_USE};
use crate::BufferPool;

/// What a pool records about each outstanding buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LeakTracking {
    /// Counts only: `outstanding()` lists buffers without site, age or thread.
    Off,
    /// The allocation's `#[track_caller]` location, time and thread, for every
    /// buffer, at a few nanoseconds per allocation. The default.
    #[default]
    CallSite,
    /// `CallSite`, plus a captured backtrace for one allocation in
    /// `sample_every` (1 = every allocation; 0 = none). Capturing costs
    /// microseconds: sample in production.
    Backtrace {
        /// Capture for one allocation in this many.
        sample_every: u32,
    },
}

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
    /// Where it was allocated (`None` without tracking).
    pub allocated_at: Option<&'static Location<'static>>,
    /// The allocating thread's name (or `#N` for an unnamed thread).
    pub thread: Option<String>,
    /// The allocation's backtrace, for sampled allocations with
    /// [`LeakTracking::Backtrace`].
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
    /// The site (`None`: buffers allocated without tracking).
    pub location: Option<&'static Location<'static>>,
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
        let mut by_site: BTreeMap<Option<(&'static str, u32, u32)>, LeakSite> = BTreeMap::new();
        for b in buffers.into_iter().filter(|b| b.age >= min_age) {
            let key = b.allocated_at.map(|l| (l.file(), l.line(), l.column()));
            let site = by_site.entry(key).or_insert_with(|| LeakSite {
                location: b.allocated_at,
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
            let site = match s.location {
                Some(l) => l.to_string(),
                None => "(allocation site not tracked)".to_owned(),
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

/// A guard for tests: fails if buffers allocated since its creation are
/// still out. Made by [`BufferPool::leak_check`](crate::BufferPool::leak_check).
///
/// ```
/// let pool = pagepool::BufferPool::new();
/// let check = pool.leak_check();
/// let buf = pool.allocate_page_size_buffer(100)?;
/// drop(buf);
/// check.finish().expect("nothing leaked");
/// # Ok::<(), pagepool::Error>(())
/// ```
///
/// Dropped without [`finish`](Self::finish) (and not during a panic), it
/// panics with the report if anything allocated since its creation is out.
#[derive(Debug)]
#[must_use = "a LeakCheck checks when it is finished or dropped"]
pub struct LeakCheck {
    pool: BufferPool,
    epoch: u32,
    done: bool,
}

impl LeakCheck {
    pub(crate) fn new(pool: BufferPool, epoch: u32) -> Self {
        LeakCheck {
            pool,
            epoch,
            done: false,
        }
    }

    /// `Ok` when every buffer allocated since the check began is back;
    /// otherwise the report of those still out.
    pub fn finish(mut self) -> Result<(), LeakReport> {
        self.done = true;
        self.check()
    }

    fn check(&self) -> Result<(), LeakReport> {
        let report = self.pool.leak_report_since(self.epoch);
        if report.is_empty() {
            Ok(())
        } else {
            Err(report)
        }
    }
}

impl Drop for LeakCheck {
    fn drop(&mut self) {
        if !self.done && !std::thread::panicking() {
            if let Err(report) = self.check() {
                panic!("LeakCheck: buffers allocated during the check are still out\n{report}");
            }
        }
    }
}

/// Names of threads that allocated, by `thread_id`: at most this many kept.
const MAX_THREAD_NAMES: usize = 65_536;

fn thread_names() -> &'static Mutex<BTreeMap<u32, Arc<str>>> {
    static NAMES: OnceLock<Mutex<BTreeMap<u32, Arc<str>>>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

/// A small process-unique number for the calling thread (never 0); its name
/// is registered the first time.
#[inline]
pub(crate) fn thread_id() -> u32 {
    thread_local! {
        static ID: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    ID.with(|id| match id.get() {
        0 => {
            let n = register_thread();
            id.set(n);
            n
        }
        n => n,
    })
}

#[cold]
fn register_thread() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Relaxed).max(1);
    let current = std::thread::current();
    let name: Arc<str> = match current.name() {
        Some(name) => name.into(),
        None => format!("#{n}").into(),
    };
    let mut names = thread_names().lock();
    names.insert(n, name);
    while names.len() > MAX_THREAD_NAMES {
        names.pop_first();
    }
    n
}

/// The name of thread `id`, if known.
pub(crate) fn thread_name(id: u32) -> Option<String> {
    (id != 0).then(|| {
        thread_names()
            .lock()
            .get(&id)
            .map_or_else(|| format!("#{id}"), |n| n.to_string())
    })
}

impl BufferPool {
    /// Every buffer of this pool that is out now, in address order. Walks
    /// the slot metadata under the slab lock: for reports, not hot paths.
    pub fn outstanding(&self) -> Vec<OutstandingBuffer> {
        self.inner.collect_outstanding(|_| true)
    }

    /// The outstanding buffers at least `min_age` old, grouped by allocation
    /// site (see [`LeakReport`]).
    pub fn leak_report(&self, min_age: Duration) -> LeakReport {
        LeakReport::new(self.name(), min_age, self.outstanding())
    }

    /// A guard that fails if buffers allocated from now on are still out when
    /// it is finished or dropped (see [`LeakCheck`]). Works with every
    /// [`LeakTracking`] mode; sites are named unless tracking is off.
    pub fn leak_check(&self) -> LeakCheck {
        let epoch = self.inner.leak_epoch.fetch_add(1, Relaxed).wrapping_add(1);
        LeakCheck::new(self.clone(), epoch)
    }

    /// Buffers allocated at or after leak-check `epoch` still out.
    pub(crate) fn leak_report_since(&self, epoch: u32) -> LeakReport {
        let since = |s: &Slot| (s.epoch.load(Relaxed).wrapping_sub(epoch) as i32) >= 0;
        LeakReport::new(
            self.name(),
            Duration::ZERO,
            self.inner.collect_outstanding(since),
        )
    }

    /// Counts the outstanding buffers older than the pool's
    /// [`leak_age_threshold`](crate::PoolBuilder::leak_age_threshold) now (0
    /// without leak tracking), and stores the count in
    /// [`PoolStats::leak_suspects`](crate::PoolStats::leak_suspects).
    pub fn leak_suspects(&self) -> usize {
        self.inner.refresh_leak_suspects()
    }
}

impl PoolInner {
    /// Describes the in-use slots that `keep` accepts.
    pub(crate) fn collect_outstanding(
        &self,
        keep: impl Fn(&Slot) -> bool,
    ) -> Vec<OutstandingBuffer> {
        let now = clock::coarse_nanos();
        let slabs = self.slabs.lock();
        let mut out = Vec::new();
        for (class, list) in slabs.iter().enumerate() {
            let slot_len = self.classes.slot_bytes(class);
            for s in list.iter().flat_map(|slab| slab.slots()) {
                if s.state.load(Relaxed) != IN_USE || !keep(s) {
                    continue;
                }
                let at = s.allocated_at.load(Relaxed);
                let backtrace = (s.flags.load(Relaxed) & HAS_BACKTRACE != 0)
                    .then(|| {
                        let addr = s.data().as_ptr() as usize;
                        self.backtraces.lock().get(&addr).map(|bt| bt.to_string())
                    })
                    .flatten();
                out.push(OutstandingBuffer {
                    address: s.data().as_ptr() as usize,
                    max_len: s.max_len.load(Relaxed) as usize,
                    slot_len,
                    age: Duration::from_nanos(if at == 0 { 0 } else { now.saturating_sub(at) }),
                    allocated_at: s.site(),
                    thread: thread_name(s.thread.load(Relaxed)),
                    backtrace,
                });
            }
        }
        out.sort_by_key(|b| b.address);
        out
    }

    /// Recounts the leak suspects (a walk of the slot metadata).
    pub(crate) fn refresh_leak_suspects(&self) -> usize {
        let n = if self.config.tracking == LeakTracking::Off {
            0
        } else {
            let threshold = self.config.leak_age.as_nanos().min(u64::MAX as u128) as u64;
            let now = clock::coarse_nanos();
            let slabs = self.slabs.lock();
            slabs
                .iter()
                .flatten()
                .flat_map(|slab| slab.slots())
                .filter(|s| {
                    let at = s.allocated_at.load(Relaxed);
                    s.state.load(Relaxed) == IN_USE && at != 0 && now.saturating_sub(at) > threshold
                })
                .count()
        };
        self.counters.leak_suspects.store(n, Relaxed);
        n
    }
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
            thread: Some("main".into()),
            backtrace: None,
        }
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

    #[test]
    fn thread_ids_are_stable_and_named() {
        let here = thread_id();
        assert_ne!(here, 0);
        assert_eq!(thread_id(), here);
        let (id, name) = std::thread::Builder::new()
            .name("leak-test-thread".into())
            .spawn(|| (thread_id(), thread_name(thread_id())))
            .unwrap()
            .join()
            .unwrap();
        assert_ne!(id, here);
        assert_eq!(name.as_deref(), Some("leak-test-thread"));
        assert_eq!(thread_name(0), None);
    }
}
