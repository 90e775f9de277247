//! Outstanding buffers by allocation site, with bounded cardinality: the
//! top sites by bytes get `pagepool_site_bytes` / `pagepool_site_buffers`
//! series of their own, every other site adds to `site="other"`.
//!
//! Fed plain data (site words and slot sizes) by the publisher's tick,
//! never by the hot path. A site that drops out of the top is set to zero
//! once and its handles dropped: the recorder no longer sees it updated, so
//! an exporter that expires idle gauges (the `prometheus` module's does)
//! removes the series, and at most `top + 1` series are ever non-zero.

use std::collections::HashMap;

use ::metrics::{gauge, Gauge};

use crate::site::SiteRef;
use crate::sync::Mutex;

/// `pagepool_site_bytes{pool, site}`: the top sites only.
pub const SITE_BYTES: &str = "pagepool_site_bytes";
/// `pagepool_site_buffers{pool, site}`: the top sites only.
pub const SITE_BUFFERS: &str = "pagepool_site_buffers";

/// The `site` label of everything outside the top.
pub(crate) const OTHER: &str = "other";

/// The sites shown, each as (label, bytes, buffers), biggest first, and
/// (bytes, buffers) of the rest.
pub(crate) type TopSites = (Vec<(String, usize, usize)>, (usize, usize));

/// Sites added up in [`SiteTotals`]' small cache before its map.
const RECENT: usize = 16;

/// Outstanding bytes and buffers by site word ([`SiteRef::raw`]), as one
/// walk of the slots adds them up. A program has few allocation sites, so
/// a small cache of the last sites seen, searched linearly, takes nearly
/// every slot; only the sites it evicts touch the map.
#[derive(Debug, Default)]
pub(crate) struct SiteTotals {
    by_site: HashMap<usize, (usize, usize), rapidhash::fast::RandomState>,
    /// (site word, bytes, buffers) of recent sites; `buffers == 0`: empty.
    recent: [(usize, usize, usize); RECENT],
    /// The cache entry to evict next.
    next: usize,
}

impl SiteTotals {
    /// Counts one outstanding buffer of `slot_bytes` allocated at `site`.
    #[inline]
    pub(crate) fn add(&mut self, site: SiteRef, slot_bytes: usize) {
        let site = site.raw();
        if let Some(e) = self.recent.iter_mut().find(|e| e.0 == site && e.2 != 0) {
            e.1 += slot_bytes;
            e.2 += 1;
            return;
        }
        let i = self.next;
        self.next = (i + 1) % RECENT;
        let evicted = std::mem::replace(&mut self.recent[i], (site, slot_bytes, 1));
        self.flush(evicted);
    }

    /// Adds one cache entry to the map.
    fn flush(&mut self, (site, bytes, buffers): (usize, usize, usize)) {
        if buffers != 0 {
            let e = self.by_site.entry(site).or_default();
            e.0 += bytes;
            e.1 += buffers;
        }
    }

    /// The `top` sites by bytes (ties by site word, so the order is
    /// stable), each as (label, bytes, buffers), biggest first, and the
    /// bytes and buffers of the rest (untracked buffers included).
    pub(crate) fn top(mut self, top: usize) -> TopSites {
        for e in std::mem::take(&mut self.recent) {
            self.flush(e);
        }
        let mut all: Vec<(usize, (usize, usize))> = self.by_site.into_iter().collect();
        let key = |&(site, (bytes, _)): &(usize, (usize, usize))| (std::cmp::Reverse(bytes), site);
        let untracked = SiteRef::NONE.raw();
        let mut rest = (0, 0);
        all.retain(|&(site, (bytes, buffers))| {
            let keep = site != untracked;
            if !keep {
                rest = (rest.0 + bytes, rest.1 + buffers);
            }
            keep
        });
        if all.len() > top {
            if top > 0 {
                all.select_nth_unstable_by_key(top - 1, key);
            }
            for &(_, (bytes, buffers)) in &all[top..] {
                rest = (rest.0 + bytes, rest.1 + buffers);
            }
            all.truncate(top);
        }
        all.sort_unstable_by_key(key);
        let shown = all
            .into_iter()
            .map(|(site, (bytes, buffers))| {
                // SAFETY: every word was read from a slot's `site`, which
                // only ever holds `SiteRef::raw` words.
                let label = unsafe { SiteRef::from_raw(site) }
                    .get()
                    .map_or_else(|| OTHER.to_owned(), |d| d.to_string());
                (label, bytes, buffers)
            })
            .collect();
        (shown, rest)
    }
}

/// The bytes and buffers gauges of one site.
#[derive(Debug)]
struct Pair {
    bytes: Gauge,
    buffers: Gauge,
}

impl Pair {
    fn register(pool: &str, site: &str) -> Pair {
        Pair {
            bytes: gauge!(SITE_BYTES, "pool" => pool.to_owned(), "site" => site.to_owned()),
            buffers: gauge!(SITE_BUFFERS, "pool" => pool.to_owned(), "site" => site.to_owned()),
        }
    }

    fn set(&self, bytes: usize, buffers: usize) {
        self.bytes.set(bytes as f64);
        self.buffers.set(buffers as f64);
    }
}

/// One pool's site gauges: `site="other"` always, and the sites shown at
/// the last publish.
#[derive(Debug)]
pub(crate) struct SiteGauges {
    pool: String,
    /// How many sites get series of their own.
    top: usize,
    other: Pair,
    /// By label, the sites shown now.
    shown: Mutex<HashMap<String, Pair>>,
}

impl SiteGauges {
    /// Registers `site="other"` for `pool`, which shows its `top` sites.
    pub(crate) fn register(pool: &str, top: usize) -> SiteGauges {
        SiteGauges {
            pool: pool.to_owned(),
            top,
            other: Pair::register(pool, OTHER),
            shown: Mutex::default(),
        }
    }

    /// How many sites get series of their own.
    pub(crate) fn top(&self) -> usize {
        self.top
    }

    /// Publishes the top sites, as [`SiteTotals::top`] gives them: their
    /// gauges set (registered, with the recorder current now, if new), the
    /// sites that dropped out zeroed and forgotten, `rest` in `other`.
    pub(crate) fn publish(&self, top: Vec<(String, usize, usize)>, rest: (usize, usize)) {
        let mut shown = self.shown.lock();
        let mut next = HashMap::with_capacity(top.len());
        for (label, bytes, buffers) in top {
            let pair = shown
                .remove(&label)
                .unwrap_or_else(|| Pair::register(&self.pool, &label));
            pair.set(bytes, buffers);
            next.insert(label, pair);
        }
        for gone in shown.values() {
            gone.set(0, 0);
        }
        *shown = next;
        self.other.set(rest.0, rest.1);
    }

    /// Zeroes every series (the pool shut down) and forgets the shown sites.
    pub(crate) fn clear(&self) {
        self.publish(Vec::new(), (0, 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::Location;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn top_keeps_the_biggest_and_adds_up_the_rest() {
        #[track_caller]
        fn here() -> &'static Location<'static> {
            Location::caller()
        }
        let l = [here(), here(), here()];
        let mut t = SiteTotals::default();
        t.add(SiteRef::rust(l[0]), 100);
        t.add(SiteRef::rust(l[1]), 300);
        t.add(SiteRef::rust(l[1]), 300);
        t.add(SiteRef::rust(l[2]), 50);
        t.add(SiteRef::NONE, 7);
        let (shown, rest) = t.top(1);
        assert_eq!(shown, vec![(l[1].to_string(), 600, 2)]);
        assert_eq!(rest, (157, 3));
    }

    #[test]
    fn ten_thousand_sites_over_a_run_keep_at_most_top_plus_one_series_nonzero() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let gauges =
            metrics::with_local_recorder(&recorder, || SiteGauges::register("cardinality", 10));
        for round in 0..1000usize {
            // Ten new sites each round, 10,000 in all, each in the top once.
            let top = (0..10)
                .map(|i| (format!("site-{}", round * 10 + i), 4096 * (i + 1), 1))
                .collect();
            metrics::with_local_recorder(&recorder, || gauges.publish(top, (4096, 1)));
            assert!(gauges.shown.lock().len() <= 10);
        }
        let nonzero = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(k, _, _, v)| {
                k.key().name() == SITE_BYTES && !matches!(v, DebugValue::Gauge(g) if g.0 == 0.0)
            })
            .count();
        assert!(nonzero <= 11, "{nonzero} non-zero site series");
    }
}
