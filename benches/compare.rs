//! pagepool against its peers, in one run, one thread unless said otherwise,
//! nanoseconds per operation:
//!
//! - `overhead/{4KiB,64KiB,1MiB}`: allocate a buffer, write its first byte,
//!   release it;
//! - `touch_all/{4KiB,64KiB,1MiB}`: allocate, write one byte per 4 KiB page,
//!   release;
//! - `packet/1500B`: `overhead` for an RTP packet: pagepool through
//!   `allocate_buffer` (a small class, 64-byte aligned), the heaps with
//!   64-byte alignment;
//! - `cross_thread/{4KiB,64KiB}`: a producer allocates, writes the first byte
//!   and sends the buffer over a bounded channel (`sync_channel`, 32 deep) to
//!   a consumer thread that drops it (the media-server pattern); the time of
//!   N items end to end, per item. `channel_only` sends a one-byte value and
//!   is the floor the channel alone costs;
//! - `contended/4KiB`: two threads allocate and release on one shared pool
//!   at once, each doing N operations; the wall time of those N, per
//!   operation. `contended_1thread/4KiB` is the same harness on one thread.
//!   The scaling factor is (two-thread ops/s) ÷ (one-thread ops/s), 2.0 at
//!   best. `share_nothing` runs the same harness with each thread cycling
//!   its own `arrayqueue_usize` (nothing shared): the machine's own scaling
//!   in that run, which the pool's is divided by.
//!
//! The contenders:
//!
//! | id | what |
//! |---|---|
//! | `pagepool_default` | `BufferPool` defaults (guard pages, call-site leak tracking, `DebugLevel::Standard`, metrics) with the Prometheus recorder installed |
//! | `pagepool_bare` | no guard pages, `DebugLevel::Off`, `LeakTracking::Off`, metrics off |
//! | `std_alloc` | `std::alloc::alloc`/`dealloc` with a 4096-aligned `Layout` (the global allocator here: glibc malloc) |
//! | `std_alloc_mmap` | `std_alloc` at 1 MiB in a child process started with `MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=131072` (glibc's mmap and trim thresholds pinned at their defaults): every buffer is a fresh mapping, as a process's first big block is |
//! | `mimalloc` | `mimalloc::MiMalloc` called as a value through `GlobalAlloc`, 4096-aligned (not the global allocator) |
//! | `mmap_guard` | per buffer, `mmap` of size + 2 pages, `mprotect` of the first and last page to `PROT_NONE`, `munmap` on drop |
//! | `arrayqueue_usize` | the bare free list (`overhead` and `contended` only): a `crossbeam_queue::ArrayQueue<usize>` holding the address of one pre-touched, page-aligned buffer of the size; per operation pop, write one byte through the address, push. No trait, no `Option`, no drop guard |
//! | `arrayqueue` (wrapped) | a `crossbeam_queue::ArrayQueue` of `HeapBuf` values behind the `Contender` trait, in an `Option` taken on drop: pop, write, push. Its wrapper costs what `arrayqueue_usize` does not |
//! | `object_pool` | `object_pool::Pool<Vec<u8>>` of pre-sized vectors: `pull`, write, drop (not page-aligned) |
//! | `byte_pool` | `byte_pool::BytePool<Vec<u8>>::alloc(size)`, write, drop (not page-aligned) |
//! | `opool` | `opool::Pool` with a `Vec<u8>` allocator of the size: `get`, write, drop (not page-aligned) |
//!
//! Each pool-like peer is built per size and per group, holding as many
//! buffers as the group keeps in flight (1; 2 for `contended`; the channel's
//! depth + 2 for `cross_thread`), and falls back to allocating when empty.
//!
//! At the end it prints, from criterion's saved estimates, a markdown table of
//! the means, the ratios `pagepool_default ÷ peer` (below 1: pagepool is
//! faster) and the contended scaling factors. Before criterion runs it
//! counts page faults (`getrusage`) over 1,000,000 warm
//! allocate + write + release cycles.
//!
//! ```text
//! cargo bench -p pagepool-benches --bench compare
//! ```
//!
//! # Counting system calls
//!
//! With `PAGEPOOL_SYSCALL_PROBE=1` the binary runs only this: install the
//! Prometheus recorder, build a default pool, warm it with 1,000,000 cycles
//! at 4 KiB and at 64 KiB (and drain the recorder once, as its upkeep
//! would), write `PAGEPOOL_PROBE_BEGIN` to stderr, run
//! `PAGEPOOL_PROBE_CYCLES` (default 1,000,000) more cycles at each size,
//! write `PAGEPOOL_PROBE_END`, exit. Compare a run with 0 cycles against one
//! with 1,000,000; `strace` without `-f` follows only the main thread, the one
//! that runs the loop (with `-f` the pool's 5 ms coarse-clock thread and its
//! metrics publisher show up too, in proportion to the run's wall time, not
//! to the number of operations):
//!
//! ```text
//! cargo bench -p pagepool-benches --bench compare --no-run
//! BIN=$(ls -t target/release/deps/compare-* | grep -v '\.d$' | head -1)
//! PAGEPOOL_SYSCALL_PROBE=1 PAGEPOOL_PROBE_CYCLES=0       strace -c -o /tmp/sys0 $BIN
//! PAGEPOOL_SYSCALL_PROBE=1 PAGEPOOL_PROBE_CYCLES=1000000 strace -c -o /tmp/sys1 $BIN
//! # Every thread, with the main thread's calls between the two markers:
//! PAGEPOOL_SYSCALL_PROBE=1 strace -f -o /tmp/trace $BIN
//! ```
//!
//! or `perf stat -e 'raw_syscalls:sys_enter' --per-thread` where tracepoints
//! are available. `PAGEPOOL_PROBE_METRICS=0` builds the probe's pool with
//! metrics off (the rest still default), to tell the recorder's share of any
//! page fault from the pool's.

#[path = "support/estimates.rs"]
mod estimates;
#[path = "support/pools.rs"]
mod pools;

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::io::Write;
use std::ptr::NonNull;
use std::sync::mpsc::sync_channel;
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use crossbeam_queue::ArrayQueue;
use metrics_exporter_prometheus::PrometheusHandle;
use mimalloc::MiMalloc;
use pagepool::{BufferPool, PageBuffer};
use region::Protection;

/// The stride of `touch_all`: one write per 4 KiB page.
const TOUCH_STRIDE: usize = 4096;
/// Every buffer of the page-aligned contenders is aligned to this.
const ALIGN: usize = 4096;
/// Depth of the `cross_thread` channel.
const CHANNEL_DEPTH: usize = 32;
/// Cycles per size in the page-fault and system-call probes.
const PROBE_CYCLES: u64 = 1_000_000;

const KIB: usize = 1024;
const SIZES: [(&str, usize); 3] = [("4KiB", 4 * KIB), ("64KiB", 64 * KIB), ("1MiB", 1024 * KIB)];
const CROSS_SIZES: [(&str, usize); 2] = [("4KiB", 4 * KIB), ("64KiB", 64 * KIB)];
const CONTENDED_SIZES: [(&str, usize); 1] = [("4KiB", 4 * KIB)];
/// The `packet` group: an RTP packet from `allocate_buffer` (a small class,
/// 64-byte aligned), against the allocators at that alignment.
const PACKET_SIZES: [(&str, usize); 1] = [("1500B", 1500)];
/// Alignment of the heap contenders in the `packet` group.
const PACKET_ALIGN: usize = 64;

/// The contenders in table order; the first is the one the ratios are about.
const CONTENDERS: [&str; 10] = [
    "pagepool_default",
    "pagepool_bare",
    BARE_FREE_LIST,
    "std_alloc",
    "mimalloc",
    "mmap_guard",
    "arrayqueue",
    "object_pool",
    "byte_pool",
    "opool",
];
/// Peers whose crate did not build here (none at the time of writing); they
/// are listed in the report rather than silently missing.
const SKIPPED: [(&str, &str); 0] = [];
/// Peers whose buffers are not page-aligned (`Vec<u8>` from the global
/// allocator).
const NOT_ALIGNED: [&str; 3] = ["object_pool", "byte_pool", "opool"];

// ---------------------------------------------------------------------------
// The contenders behind one interface.

/// The writable bytes of a buffer, whatever its type.
trait Bytes {
    fn bytes(&mut self) -> &mut [u8];
}

/// Something that hands out buffers of a given size; dropping the buffer
/// releases it, from any thread.
trait Contender: Sync {
    type Buf<'a>: Bytes + Send
    where
        Self: 'a;
    fn alloc(&self, size: usize) -> Self::Buf<'_>;
}

impl Bytes for PageBuffer {
    #[inline]
    fn bytes(&mut self) -> &mut [u8] {
        self.as_max_slice_mut()
    }
}

impl Contender for BufferPool {
    type Buf<'a> = PageBuffer;
    #[inline]
    fn alloc(&self, size: usize) -> PageBuffer {
        self.allocate_page_size_buffer(size)
            .expect("pool allocation")
    }
}

/// `std::alloc::alloc`/`dealloc` (the global allocator) as a `GlobalAlloc`
/// value, so that it and mimalloc share one code path.
struct StdAlloc;

// SAFETY: forwards to the global allocator with the caller's layout.
unsafe impl GlobalAlloc for StdAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { std::alloc::alloc(layout) }
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { std::alloc::dealloc(ptr, layout) }
    }
}

/// A page-aligned block from a `GlobalAlloc`, freed on drop.
struct HeapBuf<'a, A: GlobalAlloc> {
    heap: &'a A,
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the block is owned by this value alone; the allocators used here
// (glibc, mimalloc) free from any thread.
unsafe impl<A: GlobalAlloc + Sync> Send for HeapBuf<'_, A> {}

impl<'a, A: GlobalAlloc> HeapBuf<'a, A> {
    #[inline]
    fn new(heap: &'a A, size: usize) -> Self {
        Self::aligned(heap, size, ALIGN)
    }

    #[inline]
    fn aligned(heap: &'a A, size: usize, align: usize) -> Self {
        let layout = Layout::from_size_align(size, align).expect("valid layout");
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { heap.alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        HeapBuf { heap, ptr, layout }
    }
}

impl<A: GlobalAlloc> Bytes for HeapBuf<'_, A> {
    #[inline]
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live allocation of `layout.size()` bytes owned
        // by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl<A: GlobalAlloc> Drop for HeapBuf<'_, A> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: allocated by `heap` with `layout` and not freed before.
        unsafe { self.heap.dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// pagepool through `allocate_buffer` (small classes up to 2 KiB).
struct Packets<'p>(&'p BufferPool);

impl Contender for Packets<'_> {
    type Buf<'a>
        = PageBuffer
    where
        Self: 'a;
    #[inline]
    fn alloc(&self, size: usize) -> PageBuffer {
        self.0.allocate_buffer(size).expect("pool allocation")
    }
}

/// `std_alloc` and `mimalloc`: one allocator call each way, page-aligned
/// (64-byte aligned in the `packet` group, like `allocate_buffer`).
struct Heap<A>(A, usize);

impl<A: GlobalAlloc + Sync> Contender for Heap<A> {
    type Buf<'a>
        = HeapBuf<'a, A>
    where
        Self: 'a;
    #[inline]
    fn alloc(&self, size: usize) -> HeapBuf<'_, A> {
        HeapBuf::aligned(&self.0, size, self.1)
    }
}

/// `mmap_guard`: a mapping per buffer with a `PROT_NONE` page on each side.
struct MmapGuard {
    page: usize,
}

struct MmapBuf {
    _map: region::Allocation,
    data: *mut u8,
    size: usize,
}

// SAFETY: the mapping is owned by this value alone; `munmap` works from any
// thread.
unsafe impl Send for MmapBuf {}

impl Bytes for MmapBuf {
    #[inline]
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `data..data + size` is the read-write middle of the mapping
        // this value owns.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.size) }
    }
}

impl Contender for MmapGuard {
    type Buf<'a> = MmapBuf;
    #[inline]
    fn alloc(&self, size: usize) -> MmapBuf {
        let page = self.page;
        let size = size.div_ceil(page) * page;
        let mut map = region::alloc(size + 2 * page, Protection::READ_WRITE).expect("mmap");
        let base = map.as_mut_ptr::<u8>();
        // SAFETY: both ranges are whole pages inside the mapping just made.
        let data = unsafe {
            region::protect(base, page, Protection::NONE).expect("mprotect");
            region::protect(base.add(page + size), page, Protection::NONE).expect("mprotect");
            base.add(page)
        };
        MmapBuf {
            _map: map,
            data,
            size,
        }
    }
}

/// `arrayqueue`: a free list of pre-touched page-aligned buffers of one size.
struct FreeList {
    queue: ArrayQueue<HeapBuf<'static, StdAlloc>>,
    size: usize,
}

static STD: StdAlloc = StdAlloc;

impl FreeList {
    fn new(size: usize, buffers: usize) -> Self {
        let queue = ArrayQueue::new(buffers);
        for _ in 0..buffers {
            let mut buf = HeapBuf::new(&STD, size);
            buf.bytes().fill(0);
            let _ = queue.push(buf);
        }
        FreeList { queue, size }
    }
}

struct FreeListBuf<'a> {
    list: &'a FreeList,
    buf: Option<HeapBuf<'static, StdAlloc>>,
}

impl Bytes for FreeListBuf<'_> {
    #[inline]
    fn bytes(&mut self) -> &mut [u8] {
        self.buf.as_mut().expect("held until drop").bytes()
    }
}

impl Drop for FreeListBuf<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            // A full queue hands the buffer back, and dropping it frees it.
            let _ = self.list.queue.push(buf);
        }
    }
}

impl Contender for FreeList {
    type Buf<'a> = FreeListBuf<'a>;
    #[inline]
    fn alloc(&self, size: usize) -> FreeListBuf<'_> {
        debug_assert_eq!(size, self.size);
        let buf = self
            .queue
            .pop()
            .unwrap_or_else(|| HeapBuf::new(&STD, self.size));
        FreeListBuf {
            list: self,
            buf: Some(buf),
        }
    }
}

/// The bare free list's id.
const BARE_FREE_LIST: &str = "arrayqueue_usize";
/// The share-nothing loop's id in the `contended` groups.
const SHARE_NOTHING: &str = "share_nothing";

/// `arrayqueue_usize`: the address of one pre-touched page-aligned buffer in
/// an `ArrayQueue<usize>`; `_buf` owns the block.
struct BareFreeList {
    queue: ArrayQueue<usize>,
    _buf: HeapBuf<'static, StdAlloc>,
}

impl BareFreeList {
    fn new(size: usize) -> Self {
        let mut buf = HeapBuf::new(&STD, size);
        buf.bytes().fill(0);
        let queue = ArrayQueue::new(1);
        let _ = queue.push(buf.ptr.as_ptr() as usize);
        BareFreeList { queue, _buf: buf }
    }

    /// Pop, write one byte, push.
    #[inline]
    fn cycle(&self) {
        let addr = self.queue.pop().expect("one buffer, one user");
        // SAFETY: `addr` is the start of `_buf`, alive as long as `self`,
        // and popping it gave this call sole use of the block.
        unsafe { *(black_box(addr) as *mut u8) = 1 };
        let _ = self.queue.push(addr);
    }
}

/// `object_pool`: `Pool<Vec<u8>>` of pre-sized vectors.
struct ObjectPool {
    pool: object_pool::Pool<Vec<u8>>,
    size: usize,
}

impl ObjectPool {
    fn new(size: usize, buffers: usize) -> Self {
        ObjectPool {
            pool: object_pool::Pool::new(buffers, || vec![0u8; size]),
            size,
        }
    }
}

impl Bytes for object_pool::Reusable<'_, Vec<u8>> {
    #[inline]
    fn bytes(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl Contender for ObjectPool {
    type Buf<'a> = object_pool::Reusable<'a, Vec<u8>>;
    #[inline]
    fn alloc(&self, size: usize) -> Self::Buf<'_> {
        debug_assert_eq!(size, self.size);
        self.pool.pull(|| vec![0u8; self.size])
    }
}

/// `byte_pool`: `BytePool<Vec<u8>>::alloc(size)`, seeded with `buffers`
/// blocks of the size.
struct BytePool(byte_pool::BytePool<Vec<u8>>);

impl BytePool {
    fn new(size: usize, buffers: usize) -> Self {
        let pool = byte_pool::BytePool::<Vec<u8>>::new();
        let seed: Vec<_> = (0..buffers).map(|_| pool.alloc(size)).collect();
        drop(seed);
        BytePool(pool)
    }
}

impl Bytes for byte_pool::Block<'_, Vec<u8>> {
    #[inline]
    fn bytes(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl Contender for BytePool {
    type Buf<'a> = byte_pool::Block<'a, Vec<u8>>;
    #[inline]
    fn alloc(&self, size: usize) -> Self::Buf<'_> {
        self.0.alloc(size)
    }
}

/// `opool`: a concurrent `opool::Pool` whose allocator makes `Vec<u8>`s of
/// one size.
struct VecOfSize(usize);

impl opool::PoolAllocator<Vec<u8>> for VecOfSize {
    #[inline]
    fn allocate(&self) -> Vec<u8> {
        vec![0u8; self.0]
    }
}

struct OPool {
    pool: opool::Pool<VecOfSize, Vec<u8>>,
    size: usize,
}

impl OPool {
    fn new(size: usize, buffers: usize) -> Self {
        OPool {
            pool: opool::Pool::new_prefilled(buffers, VecOfSize(size)),
            size,
        }
    }
}

impl Bytes for opool::RefGuard<'_, VecOfSize, Vec<u8>> {
    #[inline]
    fn bytes(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl Contender for OPool {
    type Buf<'a> = opool::RefGuard<'a, VecOfSize, Vec<u8>>;
    #[inline]
    fn alloc(&self, size: usize) -> Self::Buf<'_> {
        debug_assert_eq!(size, self.size);
        self.pool.get()
    }
}

/// `channel_only` (cross_thread only): no allocation, a one-byte value
/// through the same channel.
struct ChannelOnly;

struct NoBuf([u8; 1]);

impl Bytes for NoBuf {
    #[inline]
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Contender for ChannelOnly {
    type Buf<'a> = NoBuf;
    #[inline]
    fn alloc(&self, _size: usize) -> NoBuf {
        NoBuf([0])
    }
}

/// Runs `visit` on each contender, the pools first, the peers built for
/// `size` holding `buffers` buffers.
trait Visit {
    fn visit<C: Contender>(&mut self, name: &str, contender: &C);
}

fn for_each_contender(
    pools: &[(&str, &BufferPool)],
    size: usize,
    buffers: usize,
    v: &mut impl Visit,
) {
    for (name, pool) in pools {
        v.visit(name, *pool);
    }
    let align = if size <= pagepool::SMALL_MAX {
        PACKET_ALIGN
    } else {
        ALIGN
    };
    v.visit("std_alloc", &Heap(StdAlloc, align));
    v.visit("mimalloc", &Heap(MiMalloc, align));
    v.visit(
        "mmap_guard",
        &MmapGuard {
            page: pagepool::page_size(),
        },
    );
    v.visit("arrayqueue", &FreeList::new(size, buffers));
    v.visit("object_pool", &ObjectPool::new(size, buffers));
    v.visit("byte_pool", &BytePool::new(size, buffers));
    v.visit("opool", &OPool::new(size, buffers));
}

// ---------------------------------------------------------------------------
// The operations.

/// Allocate, write the first byte, release.
#[inline]
fn cycle<C: Contender>(c: &C, size: usize) {
    let mut buf = c.alloc(size);
    let bytes = buf.bytes();
    bytes[0] = 1;
    black_box(bytes);
}

/// Allocate, write one byte per 4 KiB page, release.
#[inline]
fn touch_all<C: Contender>(c: &C, size: usize) {
    let mut buf = c.alloc(size);
    let bytes = buf.bytes();
    for i in (0..size).step_by(TOUCH_STRIDE) {
        bytes[i] = 1;
    }
    black_box(bytes);
}

struct SingleThread<'g, 'c> {
    group: &'g mut BenchmarkGroup<'c, WallTime>,
    size: usize,
    touch: bool,
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

struct CrossThread<'g, 'c> {
    group: &'g mut BenchmarkGroup<'c, WallTime>,
    size: usize,
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

struct Contended<'g, 'c> {
    group: &'g mut BenchmarkGroup<'c, WallTime>,
    size: usize,
    two_threads: bool,
}

fn cycles<C: Contender>(c: &C, size: usize, n: u64) {
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

/// `share_nothing` in the `contended` groups: [`Contended`]'s harness with
/// each thread on its own [`BareFreeList`].
fn share_nothing(group: &mut BenchmarkGroup<'_, WallTime>, size: usize, two_threads: bool) {
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

// ---------------------------------------------------------------------------
// Page faults and system calls.

#[derive(Clone, Copy)]
struct Usage {
    minflt: i64,
    majflt: i64,
    nvcsw: i64,
    nivcsw: i64,
}

fn usage(who: libc::c_int) -> Usage {
    // SAFETY: `getrusage` fills the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        let rc = libc::getrusage(who, &mut ru);
        assert_eq!(rc, 0, "getrusage");
        ru
    };
    Usage {
        minflt: ru.ru_minflt as i64,
        majflt: ru.ru_majflt as i64,
        nvcsw: ru.ru_nvcsw as i64,
        nivcsw: ru.ru_nivcsw as i64,
    }
}

/// The header of the tables [`fault_row`] fills.
fn fault_table_header() {
    println!(
        "| contender | size | cycles | minor faults, process | major faults, process | \
         minor faults, this thread | ctx switches vol / invol, this thread | ns/op |"
    );
    println!("|---|---|---|---|---|---|---|---|");
}

/// Page faults (process and calling thread) and context switches of `n`
/// cycles of `c` at `size`, printed as one markdown row.
fn fault_row<C: Contender>(name: &str, c: &C, label: &str, size: usize, n: u64) {
    fault_row_of(name, c, label, size, n, cycle);
}

/// [`fault_row`] for `n` runs of `op` (`cycle` or `touch_all`).
fn fault_row_of<C: Contender>(
    name: &str,
    c: &C,
    label: &str,
    size: usize,
    n: u64,
    op: fn(&C, usize),
) {
    let (p0, t0) = (usage(libc::RUSAGE_SELF), usage(libc::RUSAGE_THREAD));
    let start = Instant::now();
    for _ in 0..n {
        op(c, size);
    }
    let elapsed = start.elapsed();
    let (p1, t1) = (usage(libc::RUSAGE_SELF), usage(libc::RUSAGE_THREAD));
    let per = |a: i64, b: i64| (b - a) as f64 / n as f64;
    println!(
        "| {name} | {label} | {n} | {} ({:.6}/op) | {} ({:.6}/op) | {} ({:.6}/op) | {} / {} | {:.1} |",
        p1.minflt - p0.minflt,
        per(p0.minflt, p1.minflt),
        p1.majflt - p0.majflt,
        per(p0.majflt, p1.majflt),
        t1.minflt - t0.minflt,
        per(t0.minflt, t1.minflt),
        t1.nvcsw - t0.nvcsw,
        t1.nivcsw - t0.nivcsw,
        elapsed.as_nanos() as f64 / n as f64,
    );
}

/// Warms `pool` at both probe sizes with `PROBE_CYCLES` cycles each, then
/// lets the recorder drain its histogram samples, as its upkeep does.
fn warm_for_probe(pool: &BufferPool, prometheus: Option<&PrometheusHandle>) {
    for (_, size) in CROSS_SIZES {
        cycles(pool, size, PROBE_CYCLES);
    }
    if let Some(handle) = prometheus {
        handle.run_upkeep();
    }
}

fn fault_probe(pools: &[(&str, &BufferPool)], prometheus: &PrometheusHandle) {
    println!("\n## Page faults per operation once warm (getrusage)\n");
    println!(
        "Each pool warmed with {PROBE_CYCLES} cycles per size and one recorder upkeep; then \
         {PROBE_CYCLES} allocate + write first byte + release cycles on this thread. \
         `mmap_guard` is the control (one fault per op expected).\n"
    );
    fault_table_header();
    for (name, pool) in pools {
        warm_for_probe(pool, Some(prometheus));
        for (label, size) in CROSS_SIZES {
            fault_row(name, *pool, label, size, PROBE_CYCLES);
        }
    }
    let mmap = MmapGuard {
        page: pagepool::page_size(),
    };
    cycles(&mmap, 4 * KIB, 1000);
    fault_row("mmap_guard", &mmap, "4KiB", 4 * KIB, 10_000);
}

/// `PAGEPOOL_SYSCALL_PROBE=1`: only the warm loop between two markers on
/// stderr, for `strace`.
fn syscall_probe() {
    let n: u64 = std::env::var("PAGEPOOL_PROBE_CYCLES")
        .ok()
        .map(|v| v.parse().expect("PAGEPOOL_PROBE_CYCLES: a number"))
        .unwrap_or(PROBE_CYCLES);
    let handle = pagepool::prometheus::builder()
        .install_recorder()
        .expect("no other recorder in this process");
    // PAGEPOOL_PROBE_METRICS=0: the same pool without metrics, to tell the
    // recorder's share from the pool's.
    let metrics = std::env::var("PAGEPOOL_PROBE_METRICS").map_or(true, |v| v != "0");
    let pool = BufferPool::builder()
        .name("compare_probe")
        .metrics(metrics)
        .build()
        .expect("default configuration");
    warm_for_probe(&pool, Some(&handle));
    // Each marker is one write(2), the last system call before the loop and
    // the first after it.
    let begin = format!("PAGEPOOL_PROBE_BEGIN cycles={n} per size\n");
    let mut stderr = std::io::stderr().lock();
    let before = usage(libc::RUSAGE_THREAD);
    stderr.write_all(begin.as_bytes()).expect("stderr");
    let start = Instant::now();
    for (_, size) in CROSS_SIZES {
        cycles(&pool, size, n);
    }
    let elapsed = start.elapsed();
    stderr.write_all(b"PAGEPOOL_PROBE_END\n").expect("stderr");
    let after = usage(libc::RUSAGE_THREAD);
    drop(stderr);
    println!(
        "syscall probe: {n} cycles at each of 4 KiB and 64 KiB in {:.1} ms ({:.1} ns/op); \
         this thread: {} minor / {} major faults, {} / {} context switches",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_nanos() as f64 / (2 * n).max(1) as f64,
        after.minflt - before.minflt,
        after.majflt - before.majflt,
        after.nvcsw - before.nvcsw,
        after.nivcsw - before.nivcsw,
    );
}

// ---------------------------------------------------------------------------
// The report.

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    // Other work on the machine skews one-thread numbers on 2 cores: say so.
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into());
    format!("{cpu}, nproc {cores}, Linux {kernel}, load average {load}")
}

/// Today's date (UTC) as YYYY-MM-DD, from the Unix clock.
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Howard Hinnant's civil_from_days.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn fmt_ns(ns: Option<f64>) -> String {
    match ns {
        Some(ns) if ns >= 100.0 => format!("{ns:.0}"),
        Some(ns) => format!("{ns:.1}"),
        None => "—".into(),
    }
}

/// Two decimals, or three significant digits below 0.1.
fn fmt_ratio(r: f64) -> String {
    if r >= 0.1 {
        format!("{r:.2}x")
    } else {
        let digits = (2 - r.log10().floor() as i32).clamp(2, 8) as usize;
        format!("{r:.digits$}x")
    }
}

fn report(total: Duration) {
    let mut rows: Vec<(String, String)> = Vec::new();
    for (kind, sizes) in [
        ("overhead", &SIZES[..]),
        ("touch_all", &SIZES[..]),
        ("packet", &PACKET_SIZES[..]),
        ("cross_thread", &CROSS_SIZES[..]),
        ("contended", &CONTENDED_SIZES[..]),
    ] {
        for (label, _) in sizes {
            let group = format!("{kind}/{label}");
            let row = if kind == "contended" {
                format!("{group} (2 threads)")
            } else {
                group.clone()
            };
            rows.push((group, row));
        }
    }

    println!(
        "\n## pagepool vs peers: mean ns per operation, one thread ({}; {})\n",
        machine(),
        today()
    );
    let header: Vec<String> = CONTENDERS
        .iter()
        .map(|c| {
            if NOT_ALIGNED.contains(c) {
                format!("{c}†")
            } else {
                (*c).to_owned()
            }
        })
        .collect();
    println!("| group/size | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(CONTENDERS.len()));
    for (group, row) in &rows {
        let cells: Vec<String> = CONTENDERS
            .iter()
            .map(|c| fmt_ns(estimates::mean_ns(group, c)))
            .collect();
        println!("| {row} | {} |", cells.join(" | "));
    }
    println!(
        "\n† not page-aligned (`Vec<u8>` from the global allocator). `cross_thread`: ns per item \
         end to end, producer → bounded channel ({CHANNEL_DEPTH}) → consumer drops; \
         `contended`: wall ns per operation with each of two threads doing N operations \
         on one shared contender."
    );
    for (label, _) in CROSS_SIZES {
        if let Some(ns) = estimates::mean_ns(&format!("cross_thread/{label}"), "channel_only") {
            println!("`cross_thread/{label}` channel_only floor (no allocation): {ns:.1} ns/item.");
        }
    }
    for (peer, why) in SKIPPED {
        println!("Skipped {peer}: {why}");
    }

    println!("\n## pagepool_default ÷ peer (mean time; below 1.00x pagepool_default is faster)\n");
    let peers = &CONTENDERS[1..];
    let header: Vec<String> = peers.iter().map(|p| format!("vs {p}")).collect();
    println!("| group/size | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(peers.len()));
    for (group, row) in &rows {
        let base = estimates::mean_ns(group, CONTENDERS[0]);
        let cells: Vec<String> = peers
            .iter()
            .map(|p| match (base, estimates::mean_ns(group, p)) {
                (Some(b), Some(ns)) => fmt_ratio(b / ns),
                _ => "—".into(),
            })
            .collect();
        println!("| {row} | {} |", cells.join(" | "));
    }

    println!(
        "\n## contended/4KiB scaling: two-thread total ops/s ÷ one-thread ops/s (2.00 = perfect)\n"
    );
    println!("| contender | 1 thread ns/op | 2 threads wall ns/op/thread | 1 thread Mops/s | 2 threads Mops/s | scaling | ÷ {SHARE_NOTHING} scaling |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, _) in CONTENDED_SIZES {
        let scaling = |c: &str| {
            let one = estimates::mean_ns(&format!("contended_1thread/{label}"), c)?;
            let two = estimates::mean_ns(&format!("contended/{label}"), c)?;
            Some((one, two, 2.0 * one / two))
        };
        let floor = scaling(SHARE_NOTHING).map(|(_, _, s)| s);
        for c in CONTENDERS.iter().chain(&[SHARE_NOTHING]) {
            if let Some((one, two, s)) = scaling(c) {
                let relative = floor.map_or("—".into(), |f| fmt_ratio(s / f));
                println!(
                    "| {c} | {one:.1} | {two:.1} | {:.1} | {:.1} | {s:.2} | {relative} |",
                    1e3 / one,
                    2e3 / two,
                );
            }
        }
    }
    println!(
        "\n#20's targets: `pagepool_default ÷ {BARE_FREE_LIST}` ≤ 1.50x in `overhead` \
         (the `vs {BARE_FREE_LIST}` column above); pagepool_default's scaling \
         ÷ {SHARE_NOTHING}'s ≥ 0.85x."
    );
    println!("\n## glibc with its mmap and trim thresholds pinned ({GLIBC_PINNED})\n");
    println!("| group/size | {GLIBC_PINNED} | pagepool_default | pagepool_default ÷ it |");
    println!("|---|---:|---:|---:|");
    for kind in ["overhead", "touch_all"] {
        let group = format!("{kind}/1MiB");
        let base = estimates::mean_ns(&group, CONTENDERS[0]);
        let pinned = estimates::mean_ns(&group, GLIBC_PINNED);
        let ratio = match (base, pinned) {
            (Some(b), Some(p)) => fmt_ratio(b / p),
            _ => "—".into(),
        };
        println!(
            "| {group} | {} | {} | {ratio} |",
            fmt_ns(pinned),
            fmt_ns(base)
        );
    }
    println!(
        "\ncompare: criterion groups took {:.0} s in all",
        total.as_secs_f64()
    );
}

/// The contender of [`glibc_pinned`].
const GLIBC_PINNED: &str = "std_alloc_mmap";

/// Set in the child process that measures [`GLIBC_PINNED`].
const GLIBC_CHILD: &str = "PAGEPOOL_GLIBC_PINNED_CHILD";

/// Runs the [`GLIBC_PINNED`] groups in a child process of this binary, with
/// the same arguments: glibc with `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD`
/// pinned at their default, 128 KiB, by `MALLOC_MMAP_THRESHOLD_=131072
/// MALLOC_TRIM_THRESHOLD_=131072` from the start of the process. glibc then
/// maps every larger block afresh (a page fault on each first touch) and
/// unmaps it on free, as any process does for its first such block. Left
/// alone (the `std_alloc` column), glibc raises both thresholds after the
/// first free of a mapped block and serves later 1 MiB blocks from its heap,
/// already faulted in. A child, because the setting must hold from the
/// first allocation and would change every other glibc column.
fn glibc_pinned() {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(GLIBC_CHILD, "1")
        .env("MALLOC_MMAP_THRESHOLD_", "131072")
        .env("MALLOC_TRIM_THRESHOLD_", "131072")
        .status()
        .expect("start the glibc child");
    assert!(status.success(), "the glibc child failed: {status}");
}

/// The child of [`glibc_pinned`]: its page-fault row and its two groups.
fn glibc_pinned_child(bench_mode: bool) {
    const MIB: usize = 1 << 20;
    let heap = Heap(StdAlloc, ALIGN);
    if bench_mode {
        println!("\n## Page faults per operation, {GLIBC_PINNED} (getrusage)\n");
        fault_table_header();
        fault_row(GLIBC_PINNED, &heap, "1MiB", MIB, 1000);
        fault_row_of(GLIBC_PINNED, &heap, "1MiB, touch_all", MIB, 200, touch_all);
    }
    let mut c = criterion();
    for (kind, touch) in [("overhead", false), ("touch_all", true)] {
        let mut group = c.benchmark_group(format!("{kind}/1MiB"));
        SingleThread {
            group: &mut group,
            size: MIB,
            touch,
        }
        .visit(GLIBC_PINNED, &heap);
        group.finish();
    }
    c.final_summary();
}

/// The criterion settings of every group.
fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(600))
        .measurement_time(Duration::from_millis(1600))
        .configure_from_args()
}

// ---------------------------------------------------------------------------

fn main() {
    if std::env::var_os("PAGEPOOL_SYSCALL_PROBE").is_some_and(|v| v != "0") {
        syscall_probe();
        return;
    }
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`)
    // criterion runs each benchmark once as a test, and the probe and the
    // report are skipped.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    if std::env::var_os(GLIBC_CHILD).is_some() {
        glibc_pinned_child(bench_mode);
        return;
    }

    // The recorder before any pool is built, so that `pagepool_default`
    // registers its handles with it; its upkeep on a thread of its own, as
    // the exporter would run it.
    let prometheus = pools::install_prometheus();

    let default = pools::default_pool("compare_default");
    let bare = pools::bare_pool("compare_bare");
    let pools = [("pagepool_default", &default), ("pagepool_bare", &bare)];

    if bench_mode {
        fault_probe(&pools, &prometheus);
    }

    let mut c = criterion();
    let start = Instant::now();

    for (kind, touch) in [("overhead", false), ("touch_all", true)] {
        for (label, size) in SIZES {
            let mut group = c.benchmark_group(format!("{kind}/{label}"));
            if !touch {
                let list = BareFreeList::new(size);
                group.bench_function(BARE_FREE_LIST, |b| b.iter(|| list.cycle()));
            }
            for_each_contender(
                &pools,
                size,
                1,
                &mut SingleThread {
                    group: &mut group,
                    size,
                    touch,
                },
            );
            group.finish();
        }
    }
    for (label, size) in PACKET_SIZES {
        let mut group = c.benchmark_group(format!("packet/{label}"));
        let packets = [
            ("pagepool_default", Packets(&default)),
            ("pagepool_bare", Packets(&bare)),
        ];
        let mut v = SingleThread {
            group: &mut group,
            size,
            touch: false,
        };
        for (name, p) in &packets {
            v.visit(name, p);
        }
        for_each_contender(&[], size, 1, &mut v);
        group.finish();
    }
    for (label, size) in CROSS_SIZES {
        let mut group = c.benchmark_group(format!("cross_thread/{label}"));
        let mut v = CrossThread {
            group: &mut group,
            size,
        };
        for_each_contender(&pools, size, CHANNEL_DEPTH + 2, &mut v);
        v.visit("channel_only", &ChannelOnly);
        group.finish();
    }
    for (label, size) in CONTENDED_SIZES {
        for (kind, two_threads) in [("contended_1thread", false), ("contended", true)] {
            let mut group = c.benchmark_group(format!("{kind}/{label}"));
            // First, next to `pagepool_default`: the load on this shared
            // VM moves between groups, and the two scalings are compared.
            share_nothing(&mut group, size, two_threads);
            for_each_contender(
                &pools,
                size,
                2,
                &mut Contended {
                    group: &mut group,
                    size,
                    two_threads,
                },
            );
            group.finish();
        }
    }

    c.final_summary();
    glibc_pinned();
    if bench_mode {
        report(start.elapsed());
    }
}
