//! The contenders behind one interface: each hands out buffers through
//! [`Contender`], their bytes through [`Bytes`]; [`for_each_contender`]
//! visits them in the tables' order. Beside them, outside the trait, the
//! bare free list [`BareFreeList`] (`arrayqueue_usize`).

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::ptr::NonNull;

use crossbeam_queue::ArrayQueue;
use mimalloc::MiMalloc;
use pagepool::{BufferPool, PageBuffer};
use region::Protection;

/// Every buffer of the page-aligned contenders is aligned to this.
pub(crate) const ALIGN: usize = 4096;
/// Alignment of the heap contenders in the `packet` group.
const PACKET_ALIGN: usize = 64;

/// The writable bytes of a buffer, whatever its type.
pub(crate) trait Bytes {
    fn bytes(&mut self) -> &mut [u8];
}

/// Something that hands out buffers of a given size; dropping the buffer
/// releases it, from any thread.
pub(crate) trait Contender: Sync {
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
pub(crate) struct StdAlloc;

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
pub(crate) struct HeapBuf<'a, A: GlobalAlloc> {
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
pub(crate) struct Packets<'p>(pub(crate) &'p BufferPool);

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
pub(crate) struct Heap<A>(pub(crate) A, pub(crate) usize);

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
pub(crate) struct MmapGuard {
    pub(crate) page: usize,
}

pub(crate) struct MmapBuf {
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
pub(crate) const BARE_FREE_LIST: &str = "arrayqueue_usize";

/// `arrayqueue_usize`: the address of one pre-touched page-aligned buffer in
/// an `ArrayQueue<usize>`; `_buf` owns the block.
pub(crate) struct BareFreeList {
    queue: ArrayQueue<usize>,
    _buf: HeapBuf<'static, StdAlloc>,
}

impl BareFreeList {
    pub(crate) fn new(size: usize) -> Self {
        let mut buf = HeapBuf::new(&STD, size);
        buf.bytes().fill(0);
        let queue = ArrayQueue::new(1);
        let _ = queue.push(buf.ptr.as_ptr() as usize);
        BareFreeList { queue, _buf: buf }
    }

    /// Pop, write one byte, push.
    #[inline]
    pub(crate) fn cycle(&self) {
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
pub(crate) struct ChannelOnly;

pub(crate) struct NoBuf([u8; 1]);

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
pub(crate) trait Visit {
    fn visit<C: Contender>(&mut self, name: &str, contender: &C);
}

pub(crate) fn for_each_contender(
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
