//! The operations and the harnesses that time them, one per kind of group:
//! [`SingleThread`] (`overhead`, `touch_all`, `packet`), [`CrossThread`]
//! (`cross_thread`) and [`Contended`] with [`share_nothing`] (`contended`,
//! `contended_1thread`).

use std::hint::black_box;
use std::sync::mpsc::sync_channel;
use std::sync::Barrier;
use std::time::Instant;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};

use crate::contenders::{BareFreeList, Bytes, Contender, Visit};

/// The stride of `touch_all`: one write per 4 KiB page.
const TOUCH_STRIDE: usize = 4096;
/// Depth of the `cross_thread` channel.
pub(crate) const CHANNEL_DEPTH: usize = 32;
/// The share-nothing loop's id in the `contended` groups.
pub(crate) const SHARE_NOTHING: &str = "share_nothing";

/// Allocate, write the first byte, release.
#[inline]
pub(crate) fn cycle<C: Contender>(c: &C, size: usize) {
    let mut buf = c.alloc(size);
    let bytes = buf.bytes();
    bytes[0] = 1;
    black_box(bytes);
}

/// Allocate, write one byte per 4 KiB page, release.
#[inline]
pub(crate) fn touch_all<C: Contender>(c: &C, size: usize) {
    let mut buf = c.alloc(size);
    let bytes = buf.bytes();
    for i in (0..size).step_by(TOUCH_STRIDE) {
        bytes[i] = 1;
    }
    black_box(bytes);
}

pub(crate) struct SingleThread<'g, 'c> {
    pub(crate) group: &'g mut BenchmarkGroup<'c, WallTime>,
    pub(crate) size: usize,
    pub(crate) touch: bool,
}

impl Visit for SingleThread<'_, '_> {
    fn visit<C: Contender>(&mut self, name: &str, c: &C) {
        let size = self.size;
        if self.touch {
            self.group
                .bench_function(name, |b| b.iter(|| touch_all(c, size)));
        } else {
            self.group
                .bench_function(name, |b| b.iter(|| cycle(c, size)));
        }
    }
}

pub(crate) struct CrossThread<'g, 'c> {
    pub(crate) group: &'g mut BenchmarkGroup<'c, WallTime>,
    pub(crate) size: usize,
}

impl Visit for CrossThread<'_, '_> {
    fn visit<C: Contender>(&mut self, name: &str, c: &C) {
        let size = self.size;
        let group = &mut *self.group;
        std::thread::scope(|s| {
            // `None` asks the consumer to confirm that it has dropped
            // everything sent before.
            let (tx, rx) = sync_channel::<Option<C::Buf<'_>>>(CHANNEL_DEPTH);
            let (ack_tx, ack_rx) = sync_channel::<()>(1);
            s.spawn(move || {
                while let Ok(item) = rx.recv() {
                    match item {
                        Some(buf) => drop(buf),
                        None => {
                            if ack_tx.send(()).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let mut buf = c.alloc(size);
                        buf.bytes()[0] = 1;
                        tx.send(Some(buf)).expect("consumer alive");
                    }
                    tx.send(None).expect("consumer alive");
                    ack_rx.recv().expect("consumer alive");
                    start.elapsed()
                })
            });
            drop(tx);
        });
    }
}

pub(crate) struct Contended<'g, 'c> {
    pub(crate) group: &'g mut BenchmarkGroup<'c, WallTime>,
    pub(crate) size: usize,
    pub(crate) two_threads: bool,
}

pub(crate) fn cycles<C: Contender>(c: &C, size: usize, n: u64) {
    for _ in 0..n {
        cycle(c, size);
    }
}

impl Visit for Contended<'_, '_> {
    fn visit<C: Contender>(&mut self, name: &str, c: &C) {
        let size = self.size;
        one_or_two_threads(
            self.group,
            name,
            self.two_threads,
            |n| cycles(c, size, n),
            || move |n| cycles(c, size, n),
        );
    }
}

/// The `contended` groups, one contender at a time: its one-thread run
/// (`contended_1thread/{label}`) and at once its two-thread run
/// (`contended/{label}`).
pub(crate) struct ContendedPairs<'c> {
    pub(crate) c: &'c mut Criterion,
    pub(crate) label: &'static str,
    pub(crate) size: usize,
}

impl ContendedPairs<'_> {
    /// Both kinds of group, in turn, each with whatever `bench` adds.
    fn pair(&mut self, mut bench: impl FnMut(&mut BenchmarkGroup<'_, WallTime>, bool)) {
        for (kind, two_threads) in [("contended_1thread", false), ("contended", true)] {
            let mut group = self.c.benchmark_group(format!("{kind}/{}", self.label));
            bench(&mut group, two_threads);
            group.finish();
        }
    }

    /// `share_nothing`'s pair.
    pub(crate) fn share_nothing(&mut self) {
        let size = self.size;
        self.pair(|group, two_threads| share_nothing(group, size, two_threads));
    }
}

impl Visit for ContendedPairs<'_> {
    fn visit<C: Contender>(&mut self, name: &str, c: &C) {
        let size = self.size;
        self.pair(|group, two_threads| {
            Contended {
                group,
                size,
                two_threads,
            }
            .visit(name, c)
        });
    }
}

/// `share_nothing` in the `contended` groups: [`Contended`]'s harness with
/// each thread on its own [`BareFreeList`].
pub(crate) fn share_nothing(
    group: &mut BenchmarkGroup<'_, WallTime>,
    size: usize,
    two_threads: bool,
) {
    let mine = BareFreeList::new(size);
    one_or_two_threads(
        group,
        SHARE_NOTHING,
        two_threads,
        |n| (0..n).for_each(|_| mine.cycle()),
        move || {
            let theirs = BareFreeList::new(size);
            move |n| (0..n).for_each(|_| theirs.cycle())
        },
    );
}

/// The `contended` harness: `main(n)` runs `n` cycles on the benchmark's
/// thread; with `two_threads`, a helper thread runs `n` more at the same
/// time through the runner `helper()` builds there, and the time is that of
/// both. The helper thread lives as long as the benchmark, so no spawn is
/// timed.
fn one_or_two_threads<H: Fn(u64)>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    two_threads: bool,
    main: impl Fn(u64),
    helper: impl FnOnce() -> H + Send,
) {
    if !two_threads {
        // The baseline: the same harness on one thread.
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                main(iters);
                start.elapsed()
            })
        });
        return;
    }
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let (go_tx, go_rx) = sync_channel::<u64>(0);
        let (done_tx, done_rx) = sync_channel::<()>(0);
        let barrier = &barrier;
        s.spawn(move || {
            let run = helper();
            while let Ok(n) = go_rx.recv() {
                barrier.wait();
                run(n);
                if done_tx.send(()).is_err() {
                    break;
                }
            }
        });
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                go_tx.send(iters).expect("helper alive");
                barrier.wait();
                let start = Instant::now();
                main(iters);
                done_rx.recv().expect("helper alive");
                start.elapsed()
            })
        });
        drop(go_tx);
    });
}
