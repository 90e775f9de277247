//! # Design notes (documentation only)
//!
//! ## The pieces
//!
//! ```text
//!  thread T ── FAST (last pool, its Entry) ─┐  no RefCell, no search on the hot path
//!           └ thread-local ThreadCaches ── Entry(pool id) ── bins[c]: LIFO Vec<SlotRef>
//!                                                         └─ Tally: T's hits/releases  (cache.rs)
//!       │ refill / spill in half-stack batches
//!       ▼
//!  BufferPool (Arc handle) ──► PoolInner ◄── Arc ── Anchor (per thread) ◄── Slot.anchor
//!                               │                                  PageBuffer { ptr, slot }
//!                               ├─ SizeClasses      64 .. 2048 B packed (allocate_buffer),
//!                               │                   then 1,2,3,4,5,6,7,8,10,.. pages  (class.rs)
//!                               ├─ ClassState[c]    one per class, cache-padded
//!                               │    ├─ FreeList    lock-free SegQueue of SlotRef      (cache.rs)
//!                               │    └─ counters    slow-path and cross-thread counts (stats.rs)
//!                               ├─ Mutex<slabs>     per class, sorted by address       (pool.rs)
//!                               │    └─ Slab        one mapping, its slots and guards  (slab.rs)
//!                               │         └─ Slot   64-byte metadata line per slot:
//!                               │                   state, len, max_len, anchor, site,
//!                               │                   time, thread, canary record, flags (slab.rs)
//!                               ├─ Quarantine       sealed released slots             (debug/)
//!                               ├─ PoolMetrics      handles + publisher thread        (metrics.rs)
//!                               └─ fault table      lock-free slab registry for the
//!                                                   SIGSEGV handler (static)          (debug/fault.rs)
//! ```
//!
//! ## One slab
//!
//! A slab is one anonymous mapping that holds `n` slots of one size class
//! (`P` pages each). With guard pages on, every slot has an inaccessible page
//! directly before it and directly after its last page; neighbours share the
//! guard between them:
//!
//! ```text
//!   base                                                               base + (n(P+1)+1) pages
//!   │                                                                              │
//!   ▼                                                                              ▼
//!   ┌────┬───────────────────┬────┬───────────────────┬────┬─── ─ ─ ───┬────┐
//!   │ G  │ slot 0: P pages   │ G  │ slot 1: P pages   │ G  │    ...    │ G  │
//!   └────┴───────────────────┴────┴───────────────────┴────┴─── ─ ─ ───┴────┘
//!        ▲                   ▲                                             ▲
//!        │                   └ as_ptr() + P*page faults (overflow)         └ last guard
//!        └ as_ptr(): page-aligned; as_ptr() - 1 faults (underflow)
//!
//!   PageBuffer { ptr, slot }: two words; len ≤ max_len ≤ P*page and the
//!   anchor live in the slot's metadata line
//!   bytes [max_len, P*page) of the slot: slack inside the last page(s)
//! ```
//!
//! A small class's slab (`allocate_buffer` up to 2 KiB) packs sub-page slots
//! between 64-byte red zones of canary, with a guard page only at each end:
//!
//! ```text
//!   ┌────┬────┬──────────┬────┬──────────┬────┬─ ─ ─┬──────────┬────┬─────┬────┐
//!   │ G  │ rz │ slot 0   │ rz │ slot 1   │ rz │ ... │ slot n-1 │ rz │ pad │ G  │
//!   └────┴────┴──────────┴────┴──────────┴────┴─ ─ ─┴──────────┴────┴─────┴────┘
//!             ▲ 64-byte aligned; stride = slot + 64
//! ```
//!
//! Every release checks the 16 bytes of red zone on each side of its slot
//! (two word compares; all 64 with the full canary), whatever the debug
//! level: a write just past or before a packet is reported with the
//! buffer's allocation site, and the zone repaired. A write that jumps the
//! last red zone lands in the end guard page and faults at once. Packed
//! slots are never quarantined (a slot smaller than a page cannot be sealed
//! alone) and never counted as unguarded.
//!
//! Guards are placed once, when the slab is mapped, with
//! `madvise(MADV_GUARD_INSTALL)` (Linux 6.13+: no extra kernel memory areas,
//! so any number of slots can be guarded) or, failing that, `mprotect`,
//! which splits the mapping into separate areas; pagepool spends at most half
//! of `vm.max_map_count` on those, process-wide. A guard that cannot be
//! placed leaves its page readable and writable: the 64 bytes at each end of
//! it then hold an address-dependent canary that is checked when a
//! neighbouring slot is released, the slot is counted in
//! `PoolStats::unguarded_slots`, and one warning is logged. Allocation never
//! fails for want of a guard.
//!
//! ## Size classes and waste
//!
//! Classes of 1–4 pages are exact; above that each doubling is split into four
//! steps (see `class.rs`), so the slot exceeds the request by less than one
//! page up to four pages and by less than a fifth of the slot above that. With
//! guards, address space (not memory) grows by one page per slot.
//!
//! ## Hot path
//!
//! `allocate_page_size_buffer` (inlined into the caller): one comparison for
//! both size bounds, the class index (one shift and a table load), the
//! thread-local shortcut to this thread's cache entry for the pool (one load
//! relative to the thread pointer, one compare), the entry's flush epoch
//! against the pool's, its sampling countdown (`sample.rs`: one compare and
//! a decrement stand for the histograms, sampled poisoning and sampled
//! backtraces together), a pop from the class's LIFO bin, a single-writer
//! counter store, a plain increment of this thread's count on its anchor
//! (which keeps the pool alive for the buffer), one test of the slot's
//! `flags` together with `max_len & alloc_mask` (a buffer with slack to
//! guard, a poisoned slot, a sampled duty, zeroing), and plain stores into
//! the slot's metadata line (state, len, max_len, anchor, leak epoch; with
//! call-site tracking also site, coarse time, thread). Everything rarer (an
//! empty bin, another pool, a flush request, a sampled allocation, a debug
//! step) is out of line: `acquire_slow`, `allocate_checked`.
//!
//! `drop(PageBuffer)`: one test of `flags | edges` (a canary to check, red
//! zones, poisoning or zeroing due, a sampled hold time), one load of
//! `detours` (quarantine, waiters, a closed pool), a plain store of the
//! state, a push onto this thread's bin, a single-writer counter store and
//! a plain decrement of the anchor count. The releasing thread and site are
//! stored only by a release that poisons or quarantines the slot: the
//! reports of a later use after release are their only readers. A slot
//! whose only duty is its standard canary (and red zones, if packed) takes
//! one out-of-line call that compares three words (seven with the red
//! zones) and goes on to the same push (`release_flagged`); the allocation
//! of a slot that serves the same size again, its canary in place, stays on
//! the plain path. Everything else is out of line (`release_checks`,
//! `release_detour`). The buffer
//! itself is two words, so it is returned and moved in registers. No lock,
//! no system call, and no atomic read-modify-write on the same-thread path;
//! a buffer released on another thread costs one atomic decrement of its
//! anchor's count. The shared `SegQueue` is touched once per half stack
//! when a thread's stack runs empty or full. Per allocate + write +
//! release (callgrind, the benchmark's loop included): about 122
//! instructions at 4 KiB with every default feature on, 112 with all of
//! them off; 230 for a 1500-byte page buffer with its slack canary, 263 for
//! a 1500-byte packet with its red zones.
//!
//! ## Who keeps a pool alive
//!
//! `BufferPool` handles hold an `Arc` of the pool; so does each thread's
//! anchor (see `anchor.rs`), and each buffer points to the anchor it was
//! issued through, counted there with a reference count biased towards the
//! anchor's thread. When the last handle drops, the pool is *closed*: no
//! allocation can follow, and `detours` is raised for good, so that every
//! release after it takes the detour that checks for the last buffer. Once
//! no buffer is out (checked at close, by every release after it, and by
//! the metrics publisher), it *shuts down*: every
//! slab is unmapped, the metrics get their final values, and the quarantine
//! is emptied. The pool's header lives on until every anchor is retired (its
//! thread exits, or creates a cache entry for another pool), holding no
//! mapped memory. `closed` is read with `Acquire`: it is stored after every
//! handle's drop, so whoever sees it also sees every allocation's count, and
//! shutdown acts only when the raw totals of allocations and releases are
//! equal (a stale read that shows more releases never counts as idle). A
//! release racing with the close may still miss the shutdown; the metrics
//! publisher's next tick catches it, and without metrics the slabs stay
//! mapped until the pool's header is dropped (when the last thread that
//! used it retires its anchor).
//!
//! The slow path (`refill`) takes the pool's slab lock (a `parking_lot`
//! mutex; it cannot be poisoned), pops once more (another thread may have
//! refilled the list), computes how many slots fit under `max_bytes`, trims
//! idle slabs of other classes if none fit, and maps a slab. Every change of
//! `bytes_reserved` happens under that lock, so the cap holds under any
//! number of threads.
//!
//! ## Waiting for a buffer
//!
//! `allocate_page_size_buffer_timeout` counts itself in `waiters` (and in
//! `detours`, the one word every release loads) and asks every thread to
//! flush its cache. While it is not zero, releases skip the thread cache:
//! the slot goes to the shared free list and the waiters are woken through a
//! `parking_lot` condition variable, with a generation counter under its
//! mutex so that a waiter that saw a release since its last try does not
//! sleep. The release's check of `detours` is a relaxed load, so a release
//! racing with a waiter's arrival can miss it; the waiter therefore never
//! sleeps more than a millisecond between tries, which bounds a lost
//! wake-up's cost. A waiter's retries are not counted as more `exhausted`
//! refusals.
//!
//! ## The C ABI's handles
//!
//! `capi.rs` never dereferences a pointer C passes as a handle: handles are
//! `(index + 1) << half | generation` into one mutex-protected table, and
//! every call checks index, generation and kind before it touches the
//! `BufferPool` or `PageBuffer` stored there. Buffers are moved out of the
//! table before they are dropped, so no pool code runs under the table's
//! lock.
//!
//! ## Why the orderings are enough
//!
//! pagepool relies on `crossbeam`'s queue for every hand-over of a slot:
//!
//! - **No two owners.** At any time a slot is in exactly one place: owned by
//!   one `PageBuffer`, on one thread's stack, on its class's shared
//!   `SegQueue`, in the quarantine, or in transit inside one of the pool's
//!   functions that took it from one of those (a refill batch, `trim`'s
//!   drained list, a spill). Every move takes it out of the old place before
//!   it enters the new one: `SegQueue::pop` hands each pushed element to
//!   exactly one popper (crossbeam's guarantee), a stack is touched by its
//!   thread alone, the quarantine is a mutex-protected queue, and a buffer
//!   gives its slot back exactly once (its `Drop`, or `release`, which skips
//!   the `Drop`).
//! - **Contents are handed over.** Each move between threads goes through a
//!   release/acquire pair: the `SegQueue`'s push and pop, the quarantine's
//!   mutex, the user's own synchronisation when a buffer (`Send`) is moved to
//!   another thread and dropped there, the `Arc` inside `SharedBuffer` (its
//!   last drop follows every reader's accesses), and the anchor's
//!   `fetch_sub(Release)` with `fence(Acquire)` before it is freed. So every
//!   write by the previous owner happens before every access by the next.
//! - **Thread stacks are private.** A stack is reachable only through its
//!   thread's `thread_local!`, so its pushes and pops need no ordering; a slot
//!   moves between threads only through the `SegQueue` (spill on one thread,
//!   refill on another), which provides the hand-over above. A stack's entry
//!   is keyed by the pool's process-unique id and holds the thread's anchor
//!   (and through it an `Arc` of the pool); it is retired when the thread
//!   exits, or when the thread makes an entry for another pool and finds
//!   this one's pool closed.
//! - **Counters are `Relaxed`.** They order nothing. Shared ones are atomic
//!   read-modify-writes, so no increment is lost; a thread's own tally is
//!   written by that thread alone (load, add, store), so nothing is lost
//!   either, and `stats()` reads every tally under the registry lock that an
//!   exiting thread also takes to fold its tally into the shared counters:
//!   no count is seen twice or missed. Snapshots are documented as exact only
//!   once every thread that used the pool is synchronised with the reader
//!   (joined, or through a lock or channel). The slot metadata (state, site, time) is
//!   likewise written with relaxed stores by the slot's single owner and read
//!   by reports, which tolerate a torn view of a slot changing hands.
//! - **Unmapping is safe.** A slab is unmapped only by `trim`, under the slab
//!   lock, after *all* of its slots were popped from the shared free list by
//!   the trimming thread itself; no buffer can own one of them then, no other
//!   thread can pop one, and no thread stack holds one (a stacked slot is not
//!   on the shared list, so its slab never looks idle). Shutdown unmaps
//!   every slab only when no buffer is out and none can be made (no handle
//!   is left); the slot pointers left in thread stacks are only ever pushed
//!   back onto the shared lists, never dereferenced. Buffers reach the pool
//!   through their anchor, which outlives them (see `anchor.rs`).
