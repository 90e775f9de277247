//! The live-range map: the address range of every live buffer's slot, so a
//! slot handed out twice while live is caught.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Slots can be up to `max_size` rounded up; shards cover `1 << SHARD_SHIFT`
/// bytes of address space each, and a slot is entered in every shard its
/// range touches, so two overlapping slots always meet in one shard.
const SHARD_SHIFT: u32 = 22;
const SHARDS: usize = 256;

/// Address ranges (`start -> (end, id)`) of every live buffer's slot.
pub struct LiveRanges {
    shards: Vec<Mutex<BTreeMap<usize, (usize, u64)>>>,
}

impl LiveRanges {
    pub fn new() -> Self {
        LiveRanges {
            shards: (0..SHARDS).map(|_| Mutex::new(BTreeMap::new())).collect(),
        }
    }

    fn shards_of(start: usize, end: usize) -> impl Iterator<Item = usize> {
        let (first, last) = (start >> SHARD_SHIFT, (end - 1) >> SHARD_SHIFT);
        let mut idx: Vec<usize> = (first..=last).map(|r| r % SHARDS).collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
    }

    /// Enters `start..end` (buffer `id`); returns the live range it
    /// overlaps, if any (a double hand-out). The range is entered anyway.
    pub fn insert(&self, start: usize, end: usize, id: u64) -> Option<(usize, usize, u64)> {
        let mut clash = None;
        for s in Self::shards_of(start, end) {
            let mut map = self.shards[s].lock().unwrap();
            // Ranges in a shard are disjoint unless a clash was already
            // reported, so only the last one starting before `end` can overlap.
            if let Some((&s0, &(e0, id0))) = map.range(..end).next_back() {
                if e0 > start && clash.is_none() {
                    clash = Some((s0, e0, id0));
                }
            }
            map.insert(start, (end, id));
        }
        clash
    }

    /// Removes buffer `id`'s range; `false` if it was not there.
    pub fn remove(&self, start: usize, end: usize, id: u64) -> bool {
        let mut ok = true;
        for s in Self::shards_of(start, end) {
            let mut map = self.shards[s].lock().unwrap();
            match map.get(&start) {
                Some(&(e, i)) if e == end && i == id => {
                    map.remove(&start);
                }
                _ => ok = false,
            }
        }
        ok
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}
