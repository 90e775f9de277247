//! Model-based property tests: random programs of pool operations, checked
//! step by step against a simple model of what the pool must hold.
//!
//! A program runs over one or two pools (guard pages off, on with guard
//! markers, or on with `mprotect`; a small `max_bytes` or none; thread caches
//! on or off; `DebugLevel::Off` or `Standard`; slabs of one slot, 16 KiB or
//! 1 MiB of slots; three largest-buffer sizes) and mixes: allocation (on this
//! thread or a helper thread) of 0, 1, page-1, page, page+1, a few pages ±1,
//! random sizes up to 4 pages, rarely up to 1 MiB, and past the largest
//! buffer; `set_len` (valid and invalid), `extend_from_slice`, restamping;
//! release (drop, `release()`, or on a helper thread that is then joined);
//! `freeze`, clone, `slice`, `try_unwrap` and dropping of `SharedBuffer`
//! handles (the last one possibly on a helper thread); `trim`; and "cap
//! changes".
//!
//! A pool's cap cannot change in place (there is no setter), so a cap change
//! builds a fresh pool with the same settings and another cap and moves new
//! allocations there. The old pool is *retired*: its buffers stay live, are
//! checked, and return to it; its handle is kept (and its stats checked)
//! until a later step drops it, after which its buffers must still be intact
//! and releasable.
//!
//! The model knows every slab the pool mapped: a miss hands out the first slot
//! of a new slab, so the slab's place and slot count follow from the buffer's
//! address and the change in `bytes_reserved`. Then, for every operation on
//! the test's own thread, the model predicts **exactly** whether an
//! allocation is a hit, a miss (and how many slots the new slab gets under
//! the cap), or `Exhausted` after unmapping idle slabs of other classes; and
//! how many bytes `trim` gives back. That is exact because no other thread
//! holds cached slots between steps (helper threads are joined, which runs
//! their thread-cache destructors). The one case where exact prediction is
//! impossible by design is an allocation on a helper thread with thread
//! caches on: free slots in *this* thread's cache are invisible to the helper
//! (documented at `PoolBuilder::thread_cache`), so it may map a new slab, or
//! fail with `Exhausted`, although the model has a free slot. There the model
//! only checks the weaker invariants (a hit only if a free slot existed, the
//! cap holds, the counters agree with each other) and learns the outcome
//! from the stats; if that allocation unmapped slabs, it resynchronises with
//! a `trim` (after which the idle slabs are gone in both).
//!
//! After every step, for every pool with a handle: `stats()` equals the model
//! field by field (in use, bytes in use, cached, reserved ≤ cap, slabs,
//! allocations = hits + misses, releases, exhausted, rejected, trimmed bytes,
//! no OS error, no corruption), `class_stats()` agrees per class, and
//! `outstanding()` lists exactly the live buffers. For every live buffer of
//! every pool: its bytes hold its stamp, it lies on a slot boundary of a slab
//! of its class, and no two live buffers' slots overlap. At the end
//! everything is released and `trim` brings `bytes_reserved` to 0.
//!
//! Cases: 512 by default (about 7 s in a debug build on two cores; the
//! coverage counters print with `--nocapture`); `PROPTEST_CASES=10000 cargo
//! test --release --test model` for more (about 12 s). Failing
//! seeds are saved to `tests/model.proptest-regressions` and replayed first.

mod common;

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use common::{first_mismatch, stamp, stamp_byte};
use pagepool::{
    page_size, BufferPool, DebugLevel, Error, GuardMechanism, PageBuffer, SharedBuffer, SMALL_MAX,
    SMALL_SIZES,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Bytes of canary between packed small slots (`slab::REDZONE`).
const REDZONE: usize = 64;
/// The most bytes of slots in one small-class slab (`pool::SMALL_SLAB_BYTES`).
const SMALL_SLAB_BYTES: usize = 64 << 10;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// `MAX_SLOTS_PER_SLAB` in builder.rs (documented at `PoolBuilder::slab_size`).
const MAX_SLOTS_PER_SLAB: usize = 4096;
/// Buffers above this many bytes have every 61st word of their stamp checked
/// after each step (and all of it before release), to keep debug builds quick.
const FULL_CHECK_BYTES: usize = 64 * KIB;

const DEFAULT_CASES: u32 = 512;

// ---------------------------------------------------------------------------
// The programs.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guards {
    Off,
    Auto,
    Mprotect,
}

#[derive(Debug, Clone)]
struct PoolCfg {
    guards: Guards,
    /// `max_bytes` in pages.
    cap_pages: Option<usize>,
    thread_cache: bool,
    debug: DebugLevel,
    slab_size: usize,
    max_buffer_size: usize,
    metrics: bool,
}

#[derive(Debug, Clone, Copy)]
enum Size {
    Zero,
    One,
    PageMinus1,
    Page,
    PagePlus1,
    Pages {
        k: u8,
        delta: i8,
    },
    Small(u32),
    /// Up to `SMALL_MAX`: a packet, for the small classes.
    Packet(u16),
    Big(u32),
    AboveMax,
}

impl Size {
    fn resolve(self, page: usize, max_buffer_size: usize) -> usize {
        match self {
            Size::Zero => 0,
            Size::One => 1,
            Size::PageMinus1 => page - 1,
            Size::Page => page,
            Size::PagePlus1 => page + 1,
            Size::Pages { k, delta } => (k as usize * page).wrapping_add_signed(delta as isize),
            Size::Small(r) => 1 + r as usize % (4 * page),
            Size::Packet(r) => 1 + r as usize % SMALL_MAX,
            Size::Big(r) => 1 + r as usize % MIB,
            Size::AboveMax => max_buffer_size + 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum LenSel {
    Zero,
    Max,
    Within(Index),
    /// `max_len + 1 + n`.
    Over(u16),
    UsizeMax,
}

#[derive(Debug, Clone, Copy)]
enum How {
    Drop,
    Release,
    OnThread,
}

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        pool: Index,
        size: Size,
        on_thread: bool,
        /// `allocate_buffer` (small classes up to `SMALL_MAX`) rather than
        /// `allocate_page_size_buffer`.
        unaligned: bool,
    },
    SetLen {
        buf: Index,
        len: LenSel,
    },
    Extend {
        buf: Index,
        n: u16,
    },
    Restamp {
        buf: Index,
    },
    Release {
        buf: Index,
        how: How,
    },
    Freeze {
        buf: Index,
    },
    CloneHandle {
        sh: Index,
        handle: Index,
    },
    Slice {
        sh: Index,
        handle: Index,
        from: Index,
        to: Index,
    },
    BadSlice {
        sh: Index,
        handle: Index,
    },
    DropHandle {
        sh: Index,
        handle: Index,
        on_thread: bool,
    },
    TryUnwrap {
        sh: Index,
        handle: Index,
    },
    Trim {
        pool: Index,
    },
    ReplacePool {
        pool: Index,
        cap_pages: Option<u16>,
    },
    DropRetiredHandles,
}

fn pool_cfg() -> impl Strategy<Value = PoolCfg> {
    (
        prop_oneof![
            Just(Guards::Off),
            Just(Guards::Auto),
            Just(Guards::Mprotect)
        ],
        prop_oneof![
            2 => Just(None),
            1 => Just(Some(24usize)),
            1 => Just(Some(64usize)),
            1 => Just(Some(512usize)),
        ],
        any::<bool>(),
        prop_oneof![Just(DebugLevel::Off), Just(DebugLevel::Standard)],
        prop_oneof![Just(1usize), Just(16 * KIB), Just(MIB)],
        prop_oneof![
            3 => Just(pagepool::DEFAULT_MAX_BUFFER_SIZE),
            1 => Just(MIB),
            1 => Just(9 * 4096 - 5),
        ],
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(guards, cap_pages, thread_cache, debug, slab_size, max_buffer_size, metrics)| {
                PoolCfg {
                    guards,
                    cap_pages,
                    thread_cache,
                    debug,
                    slab_size,
                    max_buffer_size,
                    metrics,
                }
            },
        )
}

fn size() -> impl Strategy<Value = Size> {
    prop_oneof![
        1 => Just(Size::Zero),
        4 => Just(Size::One),
        4 => Just(Size::PageMinus1),
        4 => Just(Size::Page),
        4 => Just(Size::PagePlus1),
        4 => (2u8..=4, -1i8..=1).prop_map(|(k, delta)| Size::Pages { k, delta }),
        12 => any::<u32>().prop_map(Size::Small),
        8 => any::<u16>().prop_map(Size::Packet),
        1 => any::<u32>().prop_map(Size::Big),
        1 => Just(Size::AboveMax),
    ]
}

fn len_sel() -> impl Strategy<Value = LenSel> {
    prop_oneof![
        Just(LenSel::Zero),
        Just(LenSel::Max),
        any::<Index>().prop_map(LenSel::Within),
        any::<u16>().prop_map(LenSel::Over),
        Just(LenSel::UsizeMax),
    ]
}

fn how() -> impl Strategy<Value = How> {
    prop_oneof![
        3 => Just(How::Drop),
        1 => Just(How::Release),
        1 => Just(How::OnThread),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let i = any::<Index>;
    prop_oneof![
        30 => (i(), size(), prop::bool::weighted(0.15), prop::bool::weighted(0.35))
            .prop_map(|(pool, size, on_thread, unaligned)| Op::Alloc {
                pool,
                size,
                on_thread,
                unaligned,
            }),
        5 => (i(), len_sel()).prop_map(|(buf, len)| Op::SetLen { buf, len }),
        3 => (i(), any::<u16>()).prop_map(|(buf, n)| Op::Extend { buf, n }),
        2 => i().prop_map(|buf| Op::Restamp { buf }),
        18 => (i(), how()).prop_map(|(buf, how)| Op::Release { buf, how }),
        5 => i().prop_map(|buf| Op::Freeze { buf }),
        4 => (i(), i()).prop_map(|(sh, handle)| Op::CloneHandle { sh, handle }),
        3 => (i(), i(), i(), i()).prop_map(|(sh, handle, from, to)| Op::Slice { sh, handle, from, to }),
        1 => (i(), i()).prop_map(|(sh, handle)| Op::BadSlice { sh, handle }),
        8 => (i(), i(), prop::bool::weighted(0.2))
            .prop_map(|(sh, handle, on_thread)| Op::DropHandle { sh, handle, on_thread }),
        3 => (i(), i()).prop_map(|(sh, handle)| Op::TryUnwrap { sh, handle }),
        3 => i().prop_map(|pool| Op::Trim { pool }),
        1 => (i(), prop::option::of(3u16..600))
            .prop_map(|(pool, cap_pages)| Op::ReplacePool { pool, cap_pages }),
        1 => Just(Op::DropRetiredHandles),
    ]
}

/// The runner's settings: `DEFAULT_CASES` unless `PROPTEST_CASES` (or any
/// other `PROPTEST_*` variable) says otherwise, and failures saved next to
/// this file, in `tests/model.proptest-regressions`, and replayed first.
fn config() -> Config {
    let mut config = proptest::test_runner::contextualize_config(Config {
        cases: DEFAULT_CASES,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    });
    config.source_file = Some(file!());
    config.test_name = Some("model::pools_agree_with_the_model");
    config
}

#[test]
fn pools_agree_with_the_model() {
    let config = config();
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let program = (vec(pool_cfg(), 1..=2), vec(op(), 1..=64));
    let result = runner.run(&program, |(cfgs, ops)| {
        let mut world = World::new(&cfgs);
        for (step, op) in ops.iter().enumerate() {
            world.step = step;
            world.apply(op);
            bump("steps");
            world.check();
        }
        world.finish();
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // What the programs covered (counted over every case run, shrinking
    // included), for the log: `cargo test --test model -- --nocapture`.
    println!("model: {cases} cases passed");
    for (name, n) in COVERAGE.iter() {
        println!("model:   {name:<34} {}", n.load(Relaxed));
    }
    let count = |name: &str| {
        COVERAGE
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| c.load(Relaxed))
    };
    if cases >= DEFAULT_CASES {
        for must in [
            "hit",
            "miss",
            "exhausted",
            "trim freed bytes",
            "unmapped to make room",
            "  of which from a small class",
        ] {
            assert!(
                count(must) > 0,
                "no case reached {must:?}: the programs are too weak"
            );
        }
    }
}

/// Event counters over the whole run.
static COVERAGE: [(&str, AtomicU64); 20] = [
    ("steps", AtomicU64::new(0)),
    ("allocate_buffer", AtomicU64::new(0)),
    ("  of which from a small class", AtomicU64::new(0)),
    ("hit", AtomicU64::new(0)),
    ("miss", AtomicU64::new(0)),
    ("exhausted", AtomicU64::new(0)),
    ("rejected", AtomicU64::new(0)),
    ("unmapped to make room", AtomicU64::new(0)),
    ("allocated on a helper thread", AtomicU64::new(0)),
    ("  of which loosely checked", AtomicU64::new(0)),
    ("  of which resynchronised by trim", AtomicU64::new(0)),
    ("released on a helper thread", AtomicU64::new(0)),
    ("trim freed bytes", AtomicU64::new(0)),
    ("set_len refused", AtomicU64::new(0)),
    ("frozen", AtomicU64::new(0)),
    ("shared slot freed by last handle", AtomicU64::new(0)),
    ("try_unwrap got the buffer back", AtomicU64::new(0)),
    ("bad slice panicked", AtomicU64::new(0)),
    ("pool replaced (cap change)", AtomicU64::new(0)),
    ("retired handle dropped", AtomicU64::new(0)),
];

fn bump(name: &str) {
    let (_, c) = COVERAGE
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no counter {name:?}"));
    c.fetch_add(1, Relaxed);
}

// ---------------------------------------------------------------------------
// The model.

/// A slab the model knows of: `n` slots of `slot` bytes, the first at `first`.
#[derive(Debug, Clone)]
struct MSlab {
    slot: usize,
    first: usize,
    n: usize,
    /// Bytes mapped, guard pages included.
    bytes: usize,
}

/// One pool and what the model expects of it.
struct PoolModel {
    name: String,
    /// `None` once the handle was dropped (its buffers may still be out).
    handle: Option<BufferPool>,
    cfg: PoolCfg,
    cap: Option<usize>,
    page: usize,
    slabs: Vec<MSlab>,
    allocations: u64,
    hits: u64,
    misses: u64,
    releases: u64,
    exhausted: u64,
    rejected: u64,
    trimmed: u64,
}

impl PoolModel {
    fn guarded(&self) -> bool {
        self.cfg.guards != Guards::Off
    }

    /// Bytes of one guard page, 0 without guards.
    fn guard(&self) -> usize {
        if self.guarded() {
            self.page
        } else {
            0
        }
    }

    /// Small classes' slabs pack their slots between 64-byte red zones,
    /// with guard pages only at the two ends.
    fn packed(&self, slot: usize) -> bool {
        slot < self.page
    }

    fn stride(&self, slot: usize) -> usize {
        if self.packed(slot) {
            slot + REDZONE
        } else {
            slot + self.guard()
        }
    }

    fn slab_bytes(&self, slot: usize, n: usize) -> usize {
        if self.packed(slot) {
            (REDZONE + n * self.stride(slot)).next_multiple_of(self.page) + 2 * self.guard()
        } else {
            n * self.stride(slot) + self.guard()
        }
    }

    fn slots_within(&self, slot: usize, bytes: usize) -> usize {
        if self.packed(slot) {
            let area = bytes.saturating_sub(2 * self.guard()) / self.page * self.page;
            area.saturating_sub(REDZONE) / self.stride(slot)
        } else {
            bytes.saturating_sub(self.guard()) / self.stride(slot)
        }
    }

    /// Slots a new slab of class `slot` wants, before the cap.
    fn wanted(&self, slot: usize) -> usize {
        let target = if self.packed(slot) {
            self.cfg.slab_size.min(SMALL_SLAB_BYTES)
        } else {
            self.cfg.slab_size
        };
        (target / slot).clamp(1, MAX_SLOTS_PER_SLAB)
    }

    fn reserved(&self) -> usize {
        self.slabs.iter().map(|s| s.bytes).sum()
    }

    /// The slab holding a slot that starts at `addr`, if any.
    fn slab_of(&self, addr: usize) -> Option<usize> {
        self.slabs.iter().position(|s| {
            addr >= s.first
                && (addr - s.first).is_multiple_of(self.stride(s.slot))
                && (addr - s.first) / self.stride(s.slot) < s.n
        })
    }

    /// How many slots a new slab of class `slot` gets with `reserved` bytes mapped.
    fn new_slab_slots(&self, slot: usize, reserved: usize) -> usize {
        let wanted = self.wanted(slot);
        match self.cap {
            None => wanted,
            Some(cap) => self
                .slots_within(slot, cap.saturating_sub(reserved))
                .min(wanted),
        }
    }
}

/// A live buffer still owned as a `PageBuffer`.
struct Owned {
    pool: usize,
    id: u64,
    slot: usize,
    len: usize,
    buf: PageBuffer,
}

/// A frozen buffer and every handle to it (`(handle, start, end)`).
struct Shared {
    pool: usize,
    id: u64,
    slot: usize,
    addr: usize,
    max_len: usize,
    frozen_len: usize,
    handles: Vec<(SharedBuffer, usize, usize)>,
}

struct World {
    page: usize,
    pools: Vec<PoolModel>,
    /// Indices into `pools` of the pools new allocations go to.
    active: Vec<usize>,
    owned: Vec<Owned>,
    shared: Vec<Shared>,
    next_id: u64,
    step: usize,
    /// Allocations whose outcome could only be checked loosely.
    loose: usize,
}

/// What the model expects of an allocation.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Hit,
    Miss { n: usize },
    Exhausted,
}

fn build(cfg: &PoolCfg, cap: Option<usize>, name: &str) -> BufferPool {
    let mut b = BufferPool::builder()
        .name(name)
        .thread_cache(cfg.thread_cache)
        .debug(cfg.debug)
        .slab_size(cfg.slab_size)
        .max_buffer_size(cfg.max_buffer_size)
        .metrics(cfg.metrics)
        // The model has no decay: a slow run (sanitizers) must not see
        // slabs go by themselves.
        .decay(None);
    b = match cfg.guards {
        Guards::Off => b.guard_pages(false),
        Guards::Auto => b.guard_pages(true),
        Guards::Mprotect => b.guard_mechanism(GuardMechanism::Mprotect),
    };
    if let Some(cap) = cap {
        b = b.max_bytes(cap);
    }
    b.build().expect("valid configuration")
}

fn pool_name() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("model-{}", N.fetch_add(1, Ordering::Relaxed))
}

impl World {
    fn new(cfgs: &[PoolCfg]) -> World {
        let page = page_size();
        let mut w = World {
            page,
            pools: Vec::new(),
            active: Vec::new(),
            owned: Vec::new(),
            shared: Vec::new(),
            next_id: 1,
            step: 0,
            loose: 0,
        };
        for cfg in cfgs {
            let cap = cfg.cap_pages.map(|p| p * page);
            let idx = w.add_pool(cfg.clone(), cap);
            w.active.push(idx);
        }
        w
    }

    fn add_pool(&mut self, cfg: PoolCfg, cap: Option<usize>) -> usize {
        let name = pool_name();
        let handle = build(&cfg, cap, &name);
        self.pools.push(PoolModel {
            name,
            handle: Some(handle),
            cfg,
            cap,
            page: self.page,
            slabs: Vec::new(),
            allocations: 0,
            hits: 0,
            misses: 0,
            releases: 0,
            exhausted: 0,
            rejected: 0,
            trimmed: 0,
        });
        self.pools.len() - 1
    }

    fn ctx(&self) -> String {
        format!("step {}", self.step)
    }

    /// Every live buffer of pool `p`: (address, slot bytes).
    fn live_of(&self, p: usize) -> Vec<(usize, usize)> {
        let owned = self
            .owned
            .iter()
            .filter(|o| o.pool == p)
            .map(|o| (o.buf.as_ptr() as usize, o.slot));
        let shared = self
            .shared
            .iter()
            .filter(|s| s.pool == p)
            .map(|s| (s.addr, s.slot));
        owned.chain(shared).collect()
    }

    /// Free slots of class `slot` in pool `p`.
    fn free_in_class(&self, p: usize, slot: usize) -> usize {
        let live = self.live_of(p);
        let pm = &self.pools[p];
        pm.slabs
            .iter()
            .filter(|s| s.slot == slot)
            .map(|s| {
                let used = live
                    .iter()
                    .filter(|(a, _)| pm.slab_of(*a).is_some_and(|i| pm.slabs[i].first == s.first))
                    .count();
                s.n - used
            })
            .sum()
    }

    /// Indices (into `pools[p].slabs`) of slabs with no live buffer, except
    /// those of class `except`.
    fn idle_slabs(&self, p: usize, except: Option<usize>) -> Vec<usize> {
        let pm = &self.pools[p];
        let live = self.live_of(p);
        let mut busy = vec![false; pm.slabs.len()];
        for (a, _) in &live {
            let i = pm
                .slab_of(*a)
                .expect("every live buffer is in a known slab");
            busy[i] = true;
        }
        (0..pm.slabs.len())
            .filter(|&i| !busy[i] && Some(pm.slabs[i].slot) != except)
            .collect()
    }

    /// Forgets the slabs at `idx`; returns their bytes.
    fn unmap(&mut self, p: usize, idx: &[usize]) -> usize {
        let pm = &mut self.pools[p];
        let mut bytes = 0;
        let mut i = 0;
        pm.slabs.retain(|s| {
            let gone = idx.contains(&i);
            i += 1;
            if gone {
                bytes += s.bytes;
            }
            !gone
        });
        bytes
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Alloc {
                pool,
                size,
                on_thread,
                unaligned,
            } => {
                let p = self.active[pool.index(self.active.len())];
                self.alloc(p, size, on_thread, unaligned);
            }
            Op::SetLen { buf, len } => {
                if self.owned.is_empty() {
                    return;
                }
                let i = buf.index(self.owned.len());
                let o = &mut self.owned[i];
                let max = o.buf.max_len();
                let want = match len {
                    LenSel::Zero => 0,
                    LenSel::Max => max,
                    LenSel::Within(i) => i.index(max + 1),
                    LenSel::Over(n) => max + 1 + n as usize,
                    LenSel::UsizeMax => usize::MAX,
                };
                match o.buf.set_len(want) {
                    Ok(()) => {
                        assert!(want <= max, "set_len({want}) past max_len {max} succeeded");
                        o.len = want;
                    }
                    Err(Error::LengthExceedsMax { requested, max: m }) => {
                        assert!(want > max, "set_len({want}) within {max} failed");
                        bump("set_len refused");
                        assert_eq!((requested, m), (want, max));
                    }
                    Err(e) => panic!("set_len gave {e:?}"),
                }
                assert_eq!(o.buf.len(), o.len, "failed set_len left the length alone");
            }
            Op::Extend { buf, n } => {
                if self.owned.is_empty() {
                    return;
                }
                let i = buf.index(self.owned.len());
                let o = &mut self.owned[i];
                let (len, max, n) = (o.len, o.buf.max_len(), n as usize);
                // The stamp's own bytes, so a successful append keeps it.
                let data: Vec<u8> = (len..len + n).map(|off| stamp_byte(o.id, off)).collect();
                match o.buf.extend_from_slice(&data) {
                    Ok(()) => {
                        assert!(len + n <= max);
                        o.len = len + n;
                    }
                    Err(Error::LengthExceedsMax { requested, max: m }) => {
                        assert!(len + n > max);
                        assert_eq!((requested, m), (len + n, max));
                    }
                    Err(e) => panic!("extend_from_slice gave {e:?}"),
                }
                assert_eq!(o.buf.len(), o.len);
            }
            Op::Restamp { buf } => {
                if self.owned.is_empty() {
                    return;
                }
                let id = self.next_id;
                self.next_id += 1;
                let i = buf.index(self.owned.len());
                let o = &mut self.owned[i];
                o.id = id;
                stamp(o.buf.as_max_slice_mut(), id);
            }
            Op::Release { buf, how } => {
                if self.owned.is_empty() {
                    return;
                }
                let o = self.owned.swap_remove(buf.index(self.owned.len()));
                verify_full(o.buf.as_max_slice(), o.id, &self.ctx());
                let p = o.pool;
                match how {
                    How::Drop => drop(o.buf),
                    How::Release => o.buf.release(),
                    How::OnThread => {
                        bump("released on a helper thread");
                        on_helper(move || drop(o.buf))
                    }
                }
                self.released(p);
            }
            Op::Freeze { buf } => {
                if self.owned.is_empty() {
                    return;
                }
                let o = self.owned.swap_remove(buf.index(self.owned.len()));
                let addr = o.buf.as_ptr() as usize;
                let max_len = o.buf.max_len();
                let sb = o.buf.freeze();
                bump("frozen");
                assert_eq!((sb.as_ptr() as usize, sb.len()), (addr, o.len));
                assert_eq!(sb.max_len(), max_len);
                assert_eq!(sb.ref_count(), 1);
                self.shared.push(Shared {
                    pool: o.pool,
                    id: o.id,
                    slot: o.slot,
                    addr,
                    max_len,
                    frozen_len: o.len,
                    handles: vec![(sb, 0, o.len)],
                });
            }
            Op::CloneHandle { sh, handle } => {
                if self.shared.is_empty() {
                    return;
                }
                let i = sh.index(self.shared.len());
                let s = &mut self.shared[i];
                let (h, a, b) = &s.handles[handle.index(s.handles.len())];
                let c = (h.clone(), *a, *b);
                s.handles.push(c);
            }
            Op::Slice {
                sh,
                handle,
                from,
                to,
            } => {
                if self.shared.is_empty() {
                    return;
                }
                let i = sh.index(self.shared.len());
                let s = &mut self.shared[i];
                let (h, a, b) = &s.handles[handle.index(s.handles.len())];
                let len = b - a;
                let f = from.index(len + 1);
                let t = f + to.index(len - f + 1);
                let sub = h.slice(f..t);
                s.handles.push((sub, a + f, a + t));
            }
            Op::BadSlice { sh, handle } => {
                if self.shared.is_empty() {
                    return;
                }
                let s = &self.shared[sh.index(self.shared.len())];
                let (h, _, _) = &s.handles[handle.index(s.handles.len())];
                let len = h.len();
                for bad in [(0, len + 1), (len + 1, len + 1), (1, 0)] {
                    if bad.0 <= bad.1 && bad.1 <= len {
                        continue;
                    }
                    let r = quietly(|| h.slice(bad.0..bad.1));
                    assert!(r.is_err(), "slice {bad:?} of {len} bytes did not panic");
                    bump("bad slice panicked");
                }
                assert_eq!(
                    h.ref_count(),
                    s.handles.len(),
                    "a failed slice leaks no handle"
                );
            }
            Op::DropHandle {
                sh,
                handle,
                on_thread,
            } => {
                if self.shared.is_empty() {
                    return;
                }
                let si = sh.index(self.shared.len());
                let s = &mut self.shared[si];
                let (h, _, _) = s.handles.swap_remove(handle.index(s.handles.len()));
                let last = s.handles.is_empty();
                if last {
                    verify_full(raw_bytes(s.addr, s.max_len, &h), s.id, "last handle");
                }
                if last {
                    bump("shared slot freed by last handle");
                }
                if on_thread {
                    bump("released on a helper thread");
                    on_helper(move || drop(h));
                } else {
                    drop(h);
                }
                if last {
                    let s = self.shared.swap_remove(si);
                    self.released(s.pool);
                }
            }
            Op::TryUnwrap { sh, handle } => {
                if self.shared.is_empty() {
                    return;
                }
                let si = sh.index(self.shared.len());
                let s = &mut self.shared[si];
                let (h, a, b) = s.handles.swap_remove(handle.index(s.handles.len()));
                let others = s.handles.len();
                match h.try_unwrap() {
                    Ok(buf) => {
                        bump("try_unwrap got the buffer back");
                        assert_eq!(
                            others, 0,
                            "try_unwrap succeeded with {others} other handles"
                        );
                        let s = self.shared.swap_remove(si);
                        assert_eq!(buf.as_ptr() as usize, s.addr);
                        assert_eq!((buf.len(), buf.max_len()), (s.frozen_len, s.max_len));
                        self.owned.push(Owned {
                            pool: s.pool,
                            id: s.id,
                            slot: s.slot,
                            len: s.frozen_len,
                            buf,
                        });
                    }
                    Err(h) => {
                        assert!(others > 0, "try_unwrap of the only handle failed");
                        assert_eq!(h.ref_count(), others + 1);
                        s.handles.push((h, a, b));
                    }
                }
            }
            Op::Trim { pool } => {
                let p = self.pool_with_handle(pool);
                let idle = self.idle_slabs(p, None);
                let expected = self.unmap(p, &idle);
                let got = self.pools[p].handle.as_ref().unwrap().trim();
                assert_eq!(
                    got,
                    expected,
                    "{}: trim gave back the idle slabs",
                    self.ctx()
                );
                if got > 0 {
                    bump("trim freed bytes");
                }
                self.pools[p].trimmed += got as u64;
            }
            Op::ReplacePool { pool, cap_pages } => {
                let slot = pool.index(self.active.len());
                let old = self.active[slot];
                let cfg = self.pools[old].cfg.clone();
                let cap = cap_pages.map(|p| p as usize * self.page);
                let min = if cfg.guards == Guards::Off { 1 } else { 3 } * self.page;
                let cap = cap.map(|c| c.max(min));
                let new = self.add_pool(cfg, cap);
                self.active[slot] = new;
                bump("pool replaced (cap change)");
            }
            Op::DropRetiredHandles => {
                for p in 0..self.pools.len() {
                    if !self.active.contains(&p) && self.pools[p].handle.is_some() {
                        self.pools[p].handle = None;
                        bump("retired handle dropped");
                        self.forget_if_gone(p);
                    }
                }
            }
        }
    }

    /// A pool that has a handle: an active one, or a retired one still held.
    fn pool_with_handle(&self, i: Index) -> usize {
        let with: Vec<usize> = (0..self.pools.len())
            .filter(|&p| self.pools[p].handle.is_some())
            .collect();
        with[i.index(with.len())]
    }

    /// Counts a release into pool `p`.
    fn released(&mut self, p: usize) {
        self.pools[p].releases += 1;
        self.forget_if_gone(p);
    }

    /// A pool without handles and buffers is gone, and its slabs unmapped.
    fn forget_if_gone(&mut self, p: usize) {
        if self.pools[p].handle.is_none() && self.live_of(p).is_empty() {
            self.pools[p].slabs.clear();
        }
    }

    fn alloc(&mut self, p: usize, size: Size, on_thread: bool, unaligned: bool) {
        let ctx = self.ctx();
        let pool = self.pools[p]
            .handle
            .clone()
            .expect("active pools have handles");
        let max = pool.max_buffer_size();
        let size = size.resolve(self.page, max);
        if unaligned {
            bump("allocate_buffer");
        }
        // Slots of a class: in use, cached or quarantined.
        let slots_of = |pool: &BufferPool, slot: usize| {
            pool.class_stats()
                .iter()
                .find(|c| c.slot_bytes == slot)
                .map_or(0, |c| {
                    c.buffers_in_use + c.buffers_cached + c.buffers_quarantined
                })
        };
        let small = unaligned && (1..=SMALL_MAX.min(max)).contains(&size);
        if small {
            bump("  of which from a small class");
        }
        let predicted_slot = if small {
            SMALL_SIZES.iter().copied().find(|&s| s >= size)
        } else {
            pool.slot_size_for(size)
        };
        let slots_before = predicted_slot.map_or(0, |slot| slots_of(&pool, slot));
        let before = pool.stats();
        let allocate = move |pool: &BufferPool| {
            if unaligned {
                pool.allocate_buffer(size)
            } else {
                pool.allocate_page_size_buffer(size)
            }
        };
        let result = if on_thread {
            let helper = pool.clone();
            std::thread::scope(|s| {
                s.spawn(move || allocate(&helper))
                    .join()
                    .expect("helper thread")
            })
        } else {
            allocate(&pool)
        };
        let after = pool.stats();

        let Some(slot) = predicted_slot else {
            match result {
                Err(Error::ZeroSize) => assert_eq!(size, 0),
                Err(Error::TooLarge { requested, max: m }) => {
                    assert_eq!((requested, m), (size, max), "{ctx}")
                }
                other => panic!("{ctx}: size {size} (max {max}) gave {other:?}"),
            }
            self.pools[p].rejected += 1;
            bump("rejected");
            return;
        };
        assert!(slot >= size);
        assert!(if small {
            slot < self.page
        } else {
            slot.is_multiple_of(self.page)
        });

        // The prediction, and the slabs unmapping would take.
        let reserved = self.pools[p].reserved();
        let free = self.free_in_class(p, slot);
        let mut to_trim = Vec::new();
        let expect = if free > 0 {
            Expect::Hit
        } else {
            let mut n = self.pools[p].new_slab_slots(slot, reserved);
            if n == 0 {
                to_trim = self.idle_slabs(p, Some(slot));
                let freed: usize = to_trim.iter().map(|&i| self.pools[p].slabs[i].bytes).sum();
                n = self.pools[p].new_slab_slots(slot, reserved - freed);
            }
            if n == 0 {
                Expect::Exhausted
            } else {
                Expect::Miss { n }
            }
        };
        let loose = on_thread && self.pools[p].cfg.thread_cache;
        if on_thread {
            bump("allocated on a helper thread");
        }
        if loose {
            bump("  of which loosely checked");
        }

        let d_trim = (after.trimmed_bytes - before.trimmed_bytes) as usize;
        let observed = match &result {
            Ok(_) if after.misses == before.misses => Expect::Hit,
            Ok(_) => {
                let mapped = after.bytes_reserved + d_trim - before.bytes_reserved;
                // The new slab's slots: the class grew by exactly one slab
                // (trimming takes other classes' slabs only).
                let n = slots_of(&pool, slot) - slots_before;
                assert_eq!(
                    self.pools[p].slab_bytes(slot, n),
                    mapped,
                    "{ctx}: a slab of {n} slots of {slot} bytes"
                );
                Expect::Miss { n }
            }
            Err(Error::Exhausted { requested, limit }) => {
                assert_eq!(
                    (*requested, Some(*limit)),
                    (size, self.pools[p].cap),
                    "{ctx}: Exhausted names the request and the cap"
                );
                Expect::Exhausted
            }
            Err(e) => panic!("{ctx}: allocating {size} gave {e:?}"),
        };
        if !loose {
            assert_eq!(
                observed, expect,
                "{ctx}: allocation of {size} (slot {slot}, {free} free, {reserved} reserved)"
            );
            let expected_trim: usize = to_trim.iter().map(|&i| self.pools[p].slabs[i].bytes).sum();
            assert_eq!(d_trim, expected_trim, "{ctx}: bytes unmapped to make room");
            self.unmap(p, &to_trim);
            self.pools[p].trimmed += d_trim as u64;
        } else {
            self.loose += 1;
            // A helper cannot see this thread's cached slots, so it may miss
            // or be refused where the model has a free slot; but a hit needs
            // a free slot, and a new slab must fit the cap and the slab size.
            match observed {
                Expect::Hit => assert!(free > 0, "{ctx}: a hit with no free slot"),
                Expect::Miss { n } => {
                    let wanted = self.pools[p].wanted(slot);
                    assert!((1..=wanted).contains(&n), "{ctx}: slab of {n} slots");
                }
                Expect::Exhausted => assert!(self.pools[p].cap.is_some()),
            }
        }

        // A helper that unmapped slabs unmapped some of those the model
        // thinks idle (those none of whose free slots sat in this thread's
        // cache); which ones is not observable. Forget every idle slab now
        // (before the new one, which may reuse a forgotten one's addresses)
        // and let a trim below unmap the rest: then both agree again.
        bump(match observed {
            Expect::Hit => "hit",
            Expect::Miss { .. } => "miss",
            Expect::Exhausted => "exhausted",
        });
        if d_trim > 0 {
            bump("unmapped to make room");
        }
        let resync = if loose && d_trim > 0 {
            bump("  of which resynchronised by trim");
            let idle = self.idle_slabs(p, None);
            Some(self.unmap(p, &idle))
        } else {
            if loose {
                assert_eq!(d_trim, 0);
            }
            None
        };
        let pm = &mut self.pools[p];
        match observed {
            Expect::Hit => {
                pm.hits += 1;
                pm.allocations += 1;
            }
            Expect::Miss { n } => {
                let first = result.as_ref().map(|b| b.as_ptr() as usize).unwrap();
                let new = MSlab {
                    slot,
                    first,
                    n,
                    bytes: pm.slab_bytes(slot, n),
                };
                pm.misses += 1;
                pm.allocations += 1;
                pm.slabs.push(new);
            }
            Expect::Exhausted => pm.exhausted += 1,
        }
        if let Some(idle_bytes) = resync {
            let got = pool.trim();
            assert_eq!(
                d_trim + got,
                idle_bytes,
                "{ctx}: the helper's and our trim together unmapped every idle slab"
            );
            self.pools[p].trimmed += (d_trim + got) as u64;
        }
        if let Some(cap) = self.pools[p].cap {
            assert!(after.bytes_reserved <= cap, "{ctx}: reserved past the cap");
        }

        if let Ok(mut buf) = result {
            let align = if small { 64 } else { self.page };
            assert_eq!(buf.as_ptr() as usize % align, 0, "{ctx}: {align}-aligned");
            assert_eq!((buf.len(), buf.max_len(), buf.slot_len()), (0, size, slot));
            assert_eq!(buf.pool_name(), self.pools[p].name);
            let id = self.next_id;
            self.next_id += 1;
            stamp(buf.as_max_slice_mut(), id);
            self.owned.push(Owned {
                pool: p,
                id,
                slot,
                len: 0,
                buf,
            });
        }
        // Slot-level checks (the buffer's slab, overlap) run in `check`.
    }

    /// The per-step checks.
    fn check(&self) {
        let ctx = self.ctx();
        // Every live buffer: in a known slab of its class, on a slot boundary,
        // overlapping no other live buffer, holding its stamp.
        let mut ranges: Vec<(usize, usize, u64)> = Vec::new();
        for o in &self.owned {
            let addr = o.buf.as_ptr() as usize;
            ranges.push((addr, addr + o.slot, o.id));
            assert_eq!(o.buf.len(), o.len, "{ctx}");
            verify_sampled(o.buf.as_max_slice(), o.id, &ctx);
        }
        for s in &self.shared {
            ranges.push((s.addr, s.addr + s.slot, s.id));
            let n = s.handles.len();
            for (h, a, b) in &s.handles {
                assert_eq!(h.ref_count(), n, "{ctx}: every handle counts the others");
                assert_eq!((h.as_ptr() as usize, h.len()), (s.addr + a, b - a), "{ctx}");
                assert_eq!(h.max_len(), s.max_len);
            }
            let (h, _, _) = &s.handles[0];
            verify_sampled(raw_bytes(s.addr, s.max_len, h), s.id, &ctx);
        }
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "{ctx}: live buffers overlap: {:#x}..{:#x} (id {}) and {:#x}..{:#x} (id {})",
                w[0].0,
                w[0].1,
                w[0].2,
                w[1].0,
                w[1].1,
                w[1].2
            );
        }
        for (p, pm) in self.pools.iter().enumerate() {
            let live = self.live_of(p);
            for &(addr, slot) in &live {
                let i = pm.slab_of(addr).unwrap_or_else(|| {
                    panic!("{ctx}: buffer {addr:#x} of pool {p} is in no slab the pool mapped")
                });
                assert_eq!(
                    pm.slabs[i].slot, slot,
                    "{ctx}: buffer in a slab of another class"
                );
            }
            let Some(pool) = &pm.handle else { continue };
            let s = pool.stats();
            let in_use = live.len();
            let bytes_in_use: usize = live.iter().map(|(_, slot)| slot).sum();
            let slots: usize = pm.slabs.iter().map(|s| s.n).sum();
            let slot_bytes: usize = pm.slabs.iter().map(|s| s.n * s.slot).sum();
            let got = (
                s.buffers_in_use,
                s.bytes_in_use,
                s.buffers_cached,
                s.bytes_cached,
                s.bytes_reserved,
                s.slabs,
            );
            let want = (
                in_use,
                bytes_in_use,
                slots - in_use,
                slot_bytes - bytes_in_use,
                pm.reserved(),
                pm.slabs.len(),
            );
            assert_eq!(
                got, want,
                "{ctx}: pool {p} (in_use, bytes_in_use, cached, bytes_cached, reserved, slabs)\n{s:?}"
            );
            let got = (
                s.allocations,
                s.hits,
                s.misses,
                s.releases,
                s.exhausted,
                s.rejected,
                s.trimmed_bytes,
            );
            let want = (
                pm.allocations,
                pm.hits,
                pm.misses,
                pm.releases,
                pm.exhausted,
                pm.rejected,
                pm.trimmed,
            );
            assert_eq!(
                got, want,
                "{ctx}: pool {p} (allocations, hits, misses, releases, exhausted, rejected, trimmed)\n{s:?}"
            );
            assert_eq!(s.allocations, s.hits + s.misses);
            assert_eq!(s.buffers_in_use as u64, s.allocations - s.releases);
            assert_eq!(s.bytes_limit, pm.cap);
            if let Some(cap) = pm.cap {
                assert!(s.bytes_reserved <= cap, "{ctx}: reserved past the cap");
            }
            assert_eq!(
                (
                    s.os_errors,
                    s.corruptions,
                    s.buffers_quarantined,
                    s.unguarded_slots
                ),
                (0, 0, 0, 0),
                "{ctx}: {s:?}"
            );
            // Per class.
            for c in pool.class_stats() {
                let live_c = live
                    .iter()
                    .filter(|(_, slot)| *slot == c.slot_bytes)
                    .count();
                let slabs_c: Vec<&MSlab> =
                    pm.slabs.iter().filter(|m| m.slot == c.slot_bytes).collect();
                let slots_c: usize = slabs_c.iter().map(|m| m.n).sum();
                assert_eq!(
                    (c.buffers_in_use, c.buffers_cached, c.slabs),
                    (live_c, slots_c - live_c, slabs_c.len()),
                    "{ctx}: class {} of pool {p}",
                    c.slot_bytes
                );
            }
            // Leak tracking sees exactly the live buffers.
            let out: BTreeSet<usize> = pool.outstanding().iter().map(|b| b.address).collect();
            let want: BTreeSet<usize> = live.iter().map(|(a, _)| *a).collect();
            assert_eq!(out, want, "{ctx}: outstanding() of pool {p}");
        }
    }

    /// Releases everything; every pool with a handle then trims to nothing.
    fn finish(mut self) {
        for o in std::mem::take(&mut self.owned) {
            verify_full(o.buf.as_max_slice(), o.id, "finish");
            self.pools[o.pool].releases += 1;
        }
        for s in std::mem::take(&mut self.shared) {
            self.pools[s.pool].releases += 1;
        }
        for pm in &self.pools {
            let Some(pool) = &pm.handle else { continue };
            let s = pool.stats();
            assert_eq!((s.buffers_in_use, s.bytes_in_use), (0, 0), "{s:?}");
            assert_eq!((s.allocations, s.releases), (pm.allocations, pm.releases));
            assert!(pool.outstanding().is_empty());
            assert_eq!(pool.trim(), s.bytes_reserved, "every slab is idle");
            let s = pool.stats();
            assert_eq!(
                (s.bytes_reserved, s.slabs, s.buffers_cached),
                (0, 0, 0),
                "{s:?}"
            );
            // Still usable.
            let b = pool.allocate_page_size_buffer(1).expect("a fresh slab");
            drop(b);
        }
    }
}

/// `catch_unwind` without the panic message (and backtrace) on stderr: the
/// panics caught here are expected. Only this test runs in this binary, so
/// swapping the process-wide hook races with no other panic.
fn quietly<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    r
}

/// Runs `f` on a new thread and joins it (so its thread-local cache is
/// flushed back to the pool before we look).
fn on_helper(f: impl FnOnce() + Send) {
    std::thread::scope(|s| s.spawn(f).join().expect("helper thread"));
}

/// All `max_len` bytes of a frozen buffer, borrowed through one of its handles.
fn raw_bytes(addr: usize, max_len: usize, alive: &SharedBuffer) -> &[u8] {
    assert_eq!(alive.max_len(), max_len);
    // SAFETY: `alive` keeps the frozen buffer (and its slot) alive for the
    // returned lifetime; the buffer's first `max_len` bytes from `addr` are
    // initialised, and a frozen buffer is never written.
    unsafe { std::slice::from_raw_parts(addr as *const u8, max_len) }
}

#[track_caller]
fn verify_full(bytes: &[u8], id: u64, ctx: &str) {
    if let Some(off) = first_mismatch(bytes, id) {
        panic!(
            "{ctx}: buffer {id} ({} bytes at {:p}) lost its stamp at offset {off}",
            bytes.len(),
            bytes.as_ptr()
        );
    }
}

/// The whole stamp of small buffers; of large ones, the first and last 4 KiB
/// and every 61st word in between.
#[track_caller]
fn verify_sampled(bytes: &[u8], id: u64, ctx: &str) {
    if bytes.len() <= FULL_CHECK_BYTES {
        return verify_full(bytes, id, ctx);
    }
    let edge = 4 * KIB;
    verify_full(&bytes[..edge], id, ctx);
    let tail = bytes.len() - edge;
    for (k, &b) in bytes[tail..].iter().enumerate() {
        assert_eq!(
            b,
            stamp_byte(id, tail + k),
            "{ctx}: buffer {id} at {}",
            tail + k
        );
    }
    for off in (edge..tail).step_by(61 * 8) {
        assert_eq!(
            bytes[off],
            stamp_byte(id, off),
            "{ctx}: buffer {id} at {off}"
        );
    }
}

/// The model's end-of-program invariant (everything released, then `trim`
/// unmaps everything) for a configuration the model leaves out: quarantine
/// (`DebugLevel::Paranoid`). A quarantined slot is on no free list, so its
/// slab looks idle only once `trim` (or an allocation at the cap) empties the
/// quarantine first; without that, a capped pool would answer `Exhausted`
/// with nothing in use.
#[test]
fn trim_unmaps_everything_once_released_even_with_quarantine() {
    let page = page_size();
    let pool = BufferPool::builder()
        .name("model-quarantine")
        .debug(DebugLevel::Paranoid)
        // One slab of four guarded one-page slots (9 pages) and one of a
        // single 40-page slot (42 pages) do not fit together.
        .max_bytes(48 * page)
        .slab_size(4 * page)
        .build()
        .unwrap();
    // Quarantine a few one-page slots.
    let bufs: Vec<_> = (0..4)
        .map(|_| pool.allocate_page_size_buffer(page).unwrap())
        .collect();
    drop(bufs);
    let s = pool.stats();
    assert_eq!((s.buffers_in_use, s.buffers_quarantined), (0, 4), "{s:?}");
    // Nothing is in use, so a buffer of another class that fits the cap
    // on its own must be served (idle slabs are unmapped to make room) ...
    let big = pool.allocate_page_size_buffer(40 * page);
    assert!(big.is_ok(), "nothing in use, yet {:?}", big.err());
    drop(big);
    // ... and trim gives every byte back.
    pool.trim();
    let s = pool.stats();
    assert_eq!((s.bytes_reserved, s.slabs), (0, 0), "{s:?}");
}
