//! # Design notes (documentation only)
//!
//! ## The layers
//!
//! Each file is one concept, and each layer imports only the layers below
//! it. `.ci/run` checks the part a tool can: `../shared/tools/modgraph.py
//! src` finds no import cycle (weaker than the layering itself, which
//! review keeps), and no file is over 600 lines. Observers receive plain data (a `&Slot`, a slab's
//! description, counters), never the pool.
//!
//! ```text
//!  public surface   buffer_pool (BufferPool)  buffer (PageBuffer, SharedBuffer)
//!                   future (Allocate)  quota (Quota)  builder  leak  debug
//!                   metrics  io  bytes (+ buf_mut, cursor)  direct
//!                   prometheus  capi (+ capi/handles, allocator, buffer, stats)
//!                   uring (+ builder, registry, table, ring, read)
//!  ───────────────────────────────────────────────────────────────── may import ↓ all
//!  pool/            mod (PoolInner)  allocate  release  map  wait  cap
//!                   quarantine  quotas  close  stats  leak  events
//!  ───────────────────────────────────────────────────────────────── may import ↓
//!  observe/         checks  report  quarantine  leak  metrics
//!                   fault (+ fault/table: a slab-event subscriber, fault/report)
//!  ───────────────────────────────────────────────────────────────── may import ↓
//!  free/            anchor  depot  bin  cache  sample     (never calls the pool)
//!  ───────────────────────────────────────────────────────────────── may import ↓
//!  mem/             slot  slab  slabs (events)  backing  guard  canary  poison
//!  ───────────────────────────────────────────────────────────────── may import ↓
//!  leaves           error  clock  limits  class  config  stats  sync  threads
//!                   waitlist
//! ```
//!
//! | layer | may import | holds |
//! |---|---|---|
//! | leaves | other leaves (`config` uses `limits` and `error`) | `SIZE_LIMIT` and the other limits, `ClassIdx` (a class index always below its table's length), the checked `Config` and every `DEFAULT_*`, counters and snapshots, thread numbers, the locks and atomics shim (`sync`) that loom and Miri swap, the first-come-first-served `WaitList` of wakers, holding a lock across `fork` (`forklock`) |
//! | `mem` | leaves | `Slot` (one 64-byte metadata line) with its typed `SlotState`, `SlotFlags` and `Edges`; `SlotRef`; `Slab` and its `Layout`; `SlabSet`, which raises the `mapped`/`unmapped` events (`SlabEvents`); the `Backing` seam (anonymous mappings, optionally `MADV_DONTFORK`); guard pages; the canary and poison patterns |
//! | `free` | `mem`, leaves | the anchor's biased count (`Anchor<P>`, seen below the pool as `AnchorRef`); the `Depot` (class free lists and counters, flush epoch, cache limits, abandoned flag, the `WaitList` of waiters for room, thread-counter registry); per-thread bins over the depot, which report `Taken` and `Released` instead of calling the pool; the sampling countdown |
//! | `observe` | `mem`, `free`'s types, leaves | debug checks of one slot and their `Corruption` report; the quarantine queue; the fault handler and its slab table (subscribed to slab events); leak descriptions and reports; metric handles; the process's one publisher thread and its timer heap of `Periodic` targets (`publisher`); the top-N site totals and their gauges (`sites`) |
//! | `pool` | everything below | `PoolInner`: allocate and release over the layers below, mapping under the cap and trimming (`map`), decay and the `min_buffers` floor (`decay`), one poll of a wait for room (`wait`), the run-time cap and closing (`cap`), quota accounts and the book of live accounts (`quotas`), sealing into the quarantine, abandoning and shutdown, slab-event subscriptions (`events`), the live-pool registry and `pthread_atfork` handlers (`fork`) |
//! | public surface | everything below, and each other without a cycle | the API |
//!
//! The words used across the layers:
//!
//! - a *bin* is one thread's LIFO stack of free slots of one class;
//! - `FAST` is the thread-local pointer to the calling thread's most recent
//!   cache entry;
//! - a buffer's *duties* are the rare work sampled or configured for it
//!   (record the histograms, poison at release, capture a backtrace, zero):
//!   the sampler picks the sampled ones (`SampledDuties`), and the slot
//!   carries all of them to its release as `SlotFlags`;
//! - a *detour* is a reason every release must leave the thread cache (the
//!   quarantine, a wait for room, a closed pool), counted in one word;
//! - a pool is *closed* once `BufferPool::close` or its last handle's drop
//!   refused new buffers, and *abandoned* once its last handle is gone
//!   (then it shuts down when its last buffer is back);
//! - a release is *settled* when the buffer's reference on its anchor was
//!   taken back on the owning thread's plain count (`Released::Settled`),
//!   and *remote* otherwise (`Released::Remote`: one atomic decrement).
//!
//! ## The pieces
//!
//! ```text
//!  thread T ── FAST (depot, its Entry) ─┐  no RefCell, no search on the hot path
//!           └ thread-local ThreadCaches ── Entry(depot id) ── bins[c]: LIFO Vec<SlotRef>
//!                                                         └─ ThreadCounters: T's hits/releases
//!       │ refill / spill in half-bin batches                               (free/cache.rs)
//!       ▼
//!  BufferPool (Arc handle) ──► PoolInner ◄── Arc ── Anchor<PoolInner> (per thread) ◄── Slot.anchor
//!                               │                                  PageBuffer { ptr, slot }
//!                               ├─ SizeClasses   64 .. 2048 B packed (allocate_buffer),
//!                               │                then 1,2,3,4,5,6,7,8,10,.. pages   (class.rs)
//!                               ├─ Depot         per class (cache-padded): FreeList (a
//!                               │                lock-free SegQueue of single SlotRefs,
//!                               │                a leaf Mutex of spilled batches) and its
//!                               │                ClassCounters; flush epoch, abandoned,
//!                               │                waiters for room              (free/depot.rs)
//!                               ├─ Mutex<SlabSet> per class, sorted by address; raises
//!                               │                mapped/unmapped to its subscribers (mem/slabs.rs)
//!                               │    └─ Slab     one mapping from a Backing, its slots
//!                               │                and guards                          (mem/slab.rs)
//!                               │         └─ Slot 64-byte metadata line per slot:
//!                               │                state, len, max_len, anchor, site,
//!                               │                time, thread, canary record, flags  (mem/slot.rs)
//!                               ├─ Checks        debug settings and corruption counts (observe/)
//!                               ├─ Quarantine    sealed released slots              (observe/)
//!                               ├─ PoolMetrics   handles, ticked by the publisher   (observe/)
//!                               └─ FaultTable    the SIGSEGV handler's lock-free slab
//!                                                registry (static), a subscriber     (observe/fault/)
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
//! thread-local `FAST` to this thread's cache entry for the pool (one load
//! relative to the thread pointer, one compare), the entry's flush epoch
//! against the pool's, its sampling countdown (`free/sample.rs`: one compare and
//! a decrement stand for the histograms, sampled poisoning and sampled
//! backtraces together), a pop from the class's LIFO bin, a single-writer
//! counter store, a plain increment of this thread's count on its anchor
//! (which keeps the pool alive for the buffer), one test of the slot's
//! `flags` together with `max_len & alloc_mask` (a buffer with slack to
//! guard, a poisoned slot, a sampled duty, zeroing), and plain stores into
//! the slot's metadata line (state, len, max_len, anchor, leak epoch; with
//! call-site tracking also site, coarse time, and the thread's number, which
//! the cache entry keeps beside the anchor). Everything rarer (an
//! empty bin, another pool, a flush request, a sampled allocation, a debug
//! step) is out of line: `allocate_slow`, `allocate_checked`.
//!
//! `drop(PageBuffer)`: one test of `flags | edges` (a canary to check, red
//! zones, poisoning or zeroing due, a sampled hold time), one load of
//! `detours` (quarantine, waiters, a closed pool), a plain store of the
//! state, a push onto this thread's bin, a single-writer counter store and
//! a plain decrement of the anchor count. The releasing thread and site are
//! stored only by a release that poisons or quarantines the slot: the
//! reports of a later use after release are their only readers. A slot
//! whose only duty is its standard canary (and red zones, if packed) calls
//! an out-of-line leaf comparing three words (seven with the red zones),
//! then the same inline push (`flagged_checks_pass`); the allocation
//! of a slot that serves the same size again, its canary in place, stays on
//! the plain path. Everything else is out of line (`Checks::on_release`,
//! `release_detour`). The buffer itself is two words, returned and moved in
//! registers. No lock, no system call, no atomic read-modify-write on the
//! same-thread path; a buffer released on another thread takes the same
//! inline path into that thread's bin, plus one atomic decrement of its
//! anchor's count. A bin that runs full spills its older half as one batch
//! (its own `Vec`, under the class's leaf lock) that an empty bin takes
//! whole (`free/depot.rs`), so producer → consumers moves a bin's worth of
//! slots in two steps.
//!
//! Two layout choices the instruction counts showed: `cache::acquire`
//! writes out the `FAST` and flush-epoch test that `ready_entry` makes for
//! the release paths (through the helper: four more instructions), and
//! `allocate` tail-calls `allocate_slow` with the whole rest of the
//! allocation rather than returning into the inline path, so the request's
//! size need not survive a call and stays in a scratch register (one
//! instruction less per allocation). An anchor's pool `Arc` is its first
//! field, so an `AnchorRef` is also the `&Arc<PoolInner>` a release needs.
//!
//! Per allocate + write + release (`--bench instructions`, callgrind, the
//! loop included, with the Prometheus recorder installed):
//!
//! | case | instructions |
//! |---|---:|
//! | 4 KiB, every default on | 123.4 |
//! | 4 KiB, every default on, `allocate_page_size_buffer_async` polled once | 147.4 |
//! | 4 KiB, bare (no guards, debug, tracking or metrics) | 104.0 |
//! | 4 KiB, bare, the async call polled once | 128.0 |
//! | 1500-byte page buffer, its slack canary checked | 177.3 |
//! | 1500-byte packet (`allocate_buffer`), its red zones checked | 189.7 |
//! | producer → two consumers, per buffer, 4 KiB / 64 KiB (the hand-off alone: 18) | 174 / 221 |
//!
//! The async call's first poll is the immediate call inlined; its 24 more
//! instructions are its `Poll<Result<PageBuffer, Error>>` written to the
//! stack and read back (the cold wait path returns it through memory too)
//! and the future's fields. A `Quota`'s cycle: `benches/README.md`.
//!
//! ## Who keeps a pool alive
//!
//! `BufferPool` handles hold an `Arc` of the pool; so does each thread's
//! anchor (see `free/anchor.rs`), and each buffer points to the anchor it was
//! issued through, counted there with a reference count biased towards the
//! anchor's thread. When the last handle drops, the pool is *abandoned* (and
//! closed, if `close` did not close it already): no
//! allocation can follow, and `detours` is raised for good, so that every
//! release after it takes the detour that checks for the last buffer. Once
//! no buffer is out (checked then, by every release after it, and by
//! the metrics publisher), it *shuts down*: every
//! slab is unmapped, the metrics get their final values, and the quarantine
//! is emptied. The pool's header lives on until every anchor is retired (its
//! thread exits, or creates a cache entry for another pool), holding no
//! mapped memory. `abandoned` is read with `Acquire`: it is stored after every
//! handle's drop, so whoever sees it also sees every allocation's count, and
//! shutdown acts only when the raw totals of allocations and releases are
//! equal (a stale read that shows more releases never counts as idle). A
//! release racing with the last drop may still miss the shutdown; the metrics
//! publisher's next tick catches it, and without metrics the slabs stay
//! mapped until the pool's header is dropped (when the last thread that
//! used it retires its anchor).
//!
//! The slow path (`pool/map.rs`, `map_slab`) takes the pool's slab lock (a `parking_lot`
//! mutex; it cannot be poisoned), pops once more (another thread may have
//! refilled the list), computes how many slots fit under `max_bytes`, trims
//! idle slabs of other classes if none fit, and maps a slab. Every change of
//! `bytes_reserved` happens under that lock, so the cap holds under any
//! number of threads.
//!
//! ## Waiting for a buffer
//!
//! Every wait, async (`Allocate`, `QuotaAllocate`) or blocking (the
//! `_timeout` forms, which poll the same future on a parked thread with a
//! waker that unparks it), queues in one `WaitList` per pool (in the depot),
//! first come, first served:
//!
//! - **First try.** A future's first poll is the immediate call, inlined: if
//!   room is free it resolves there. If the pool says `Exhausted` (or its
//!   gate refused: see below) the wait *joins* the list with its waker,
//!   counts a detour (so releases come to the depot and wake the list), asks
//!   every thread to flush its cache, and tries once more if it is at the
//!   head (closing the race with a release that landed meanwhile).
//! - **In turn.** Only the head tries for room, marked by the thread-local
//!   `HEAD_TRY` so its try passes the gate and is not counted as another
//!   refusal. Waiters behind it wait whatever their size: a large request at
//!   the head holds back smaller ones, as tokio's `Semaphore` does for
//!   `acquire_many`, which is what keeps a stream of small requests from
//!   starving it. Releases of any class help the head: a slot of its class
//!   serves it, and slabs of other classes left idle are unmapped by its try
//!   (`map_slab` trims) to make room under the cap. A request that even an
//!   empty pool could not hold under the cap is refused at once instead of
//!   blocking the line for ever.
//! - **The gate.** While anyone waits, an allocation that misses its
//!   thread's cache (`take_slow`) and is not the head's try is refused with
//!   `Exhausted`, and its thread's cached slots go to the depot: immediate
//!   calls cannot take what the head waits for. Thread caches are flushed
//!   when a wait joins (the flush epoch), so they hold nothing back either.
//! - **Wake-ups.** Whoever returns slots to the depot (a release while anyone
//!   waits, a cache flush, a bin's spill, a thread's exit), trims, raises the
//!   cap or credits a quota wakes the head. A waiter counts itself, fences,
//!   then tries; whoever makes room does so, fences, then reads the count
//!   (`WaitList::any`): one of the two sees the other, so no wake-up is lost
//!   to that race. A slot released into a bin by a thread that had not yet
//!   seen the waiter reaches the depot at that thread's next call (its flush
//!   epoch moved), or at its exit.
//! - **Leaving.** A wait that ends (served, failed, timed out, or dropped
//!   mid-wait) leaves the list; if it was the head it wakes the next one, so
//!   a wake-up that reached a future dropped before it could use it is
//!   passed on (the race tokio-uring fixed in its `FixedBufPool`, issue
//!   #280). A wait holds no slot while it waits (the head takes one only in
//!   the try that resolves it), so dropping one can leak nothing.
//! - **Close.** `BufferPool::close` (and the last handle's drop) sets
//!   `closed`, bumps the flush epoch so every thread's next allocation takes
//!   the slow path (which refuses with `Closed`), and wakes every waiter of
//!   the pool and of its quotas; each ends with `Closed`. Releases to a
//!   closed pool go to the depot, never to a bin, which a closed pool never
//!   serves again.
//!
//! ## Near the cap, and scans
//!
//! - **No stranded slots.** While the room under the cap is less than one
//!   standard slab (`update_near_cap`, recomputed under the slab lock
//!   whenever `reserved` or the cap changes), the depot's `near_cap` is set
//!   and a detour is counted: releases go to the shared free lists, refills
//!   take one slot instead of half a bin, and the flush epoch moves when it
//!   turns on. So a thread that goes idle holds no free slot another thread
//!   needs, and `trim` reaches every free slot. Far from the cap, caches
//!   work as before.
//! - **Refusals are O(1).** A refusal at the cap trims idle slabs of other
//!   classes only if slots came back to the free lists since the last trim
//!   that freed nothing (`Depot::returns`, bumped by every
//!   `notify_room`): a slab can only become idle when a slot comes back.
//! - **Scans do not hold the slab lock.** Leak reports and the publisher's
//!   suspect count list the slabs under the slab lock, take `mapped` (a
//!   read-write lock) shared, let the slab lock go, and walk the slot
//!   metadata. Unmapping takes `mapped` exclusively, under the slab lock, so
//!   a trim waits for a walk in progress, and allocations that map a slab
//!   do not.
//!
//! ## Decay
//!
//! What a burst mapped goes back to the OS once no class needed it for the
//! decay period (`PoolBuilder::decay`, 10 s by default), as jemalloc's and
//! mimalloc's decay and Netty's trim interval do, without a word on the hot
//! path:
//!
//! - **When.** The pool's tick (`PoolInner::tick`, on the process's
//!   publisher thread, with metrics off too) calls `decay_idle` once per
//!   tick; it does something at most once a quarter period. Each time it
//!   writes a *mark*: per class, the buffers in use and the allocations so
//!   far (`class_stats`, which thread caches already count into).
//! - **How much.** Since a mark, a class cannot have handed out more than
//!   `in_use + allocations since` distinct slots. From the newest mark at
//!   least one period old, every slot beyond that count, and beyond the
//!   class's `min_buffers`, lay free for the whole period: the idle slabs
//!   among them are unmapped with trim's `unmap_idle_locked` (which drains the
//!   class's free list under the slab lock, as `trim` does) and counted in
//!   `decayed_bytes`. A slab goes between one period and one period plus a
//!   quarter (plus two ticks) after its class last needed it. A class in
//!   steady use keeps what a period of its use can touch: with FIFO free
//!   lists those slots do cycle through use.
//! - **What it never touches.** Buffers in use; quarantined slots (only
//!   `trim` lets the quarantine go); the `min_buffers` floor; slots in a
//!   thread's cache. When a whole slab's worth of surplus stays mapped
//!   (each slab holds a slot in use, cached or quarantined), decay moves
//!   the flush epoch, so threads return their cached slots at their next
//!   call and the next look finds those slabs idle. A thread that makes no
//!   call keeps its cache (at most 1 MiB or 64 slots per class, see
//!   `PoolBuilder::thread_cache`) until it does or exits; near the cap
//!   caches hold nothing (above).
//! - **Cost.** A look reads the counters under the thread-counter lock;
//!   only a surplus takes the slab lock (allocations of that class wait, as
//!   under `trim`) and walks a free list (`benches/decay.rs`).
//! - **Free slots' pages.** `trim` and decay `madvise(MADV_DONTNEED)` free
//!   page slots of slabs left mapped (`Slab::discard_free_slots`): they read
//!   zeros and lose `POISONED` and `CANARY`, so a write after release into
//!   one escapes the poison check (`PoolStats::discarded_bytes`).
//!
//! ## Periodic work
//!
//! - **One thread per process.** `observe::publisher` keeps a timer heap of
//!   weak references to every pool with metrics or decay on, each due at its own
//!   `publish_interval`; one thread (`pagepool-ticker`) pops what is due,
//!   ticks it with no publisher lock held, and pushes it back an interval
//!   later (a late round does not make up for lost ticks). 10,000 pools
//!   cost one thread and a 10,000-entry heap. A pool is never kept alive by
//!   the heap; its shutdown cancels its entry.
//! - **`PoolInner::tick`** is the one place for a pool's periodic duties:
//!   the shutdown of an abandoned pool whose last release raced the last
//!   handle's drop, and `publish_metrics` (one walk of the slot metadata,
//!   as in "scans" above, for the leak suspects and the site totals, then
//!   the counters copied into the handles).
//! - **What the tick costs the hot path: nothing.** Counters and gauges are
//!   copies of the atomics the pool keeps anyway. Waits are counted when a
//!   wait ends, on the wait path. The reserved high-water mark is a
//!   `fetch_max` where a slab is mapped; the in-use one is sampled (each
//!   snapshot, each slab mapping), never on allocate or release, so a burst
//!   between two samples that maps no slab is missed. Site totals are the
//!   tick's walk of the slot metadata, aggregated outside the slab lock
//!   into a map by site word; only the top `site_metrics` sites are turned
//!   into labels.
//! - **Bounded series.** A site leaving the top is set to zero once and
//!   its handles dropped; the `prometheus` module's exporter expires gauges
//!   idle for `GAUGE_IDLE_TIMEOUT`, so the scraped label set stays at the
//!   sites in the top now plus those that left it within the timeout.
//!   Site series are registered when a site enters the top, with the
//!   recorder current on the publishing thread (the publisher thread's is
//!   the global one).
//!
//! ## Quotas
//!
//! A `Quota` is a handle with an account (`pool/quotas.rs`): a cap, the
//! slot bytes its live buffers hold, and a `WaitList` of its own. An
//! allocation reserves its slot's bytes (its size class) with one
//! compare-and-swap, then allocates from the pool (waiting there, in the
//! pool's line, if the async form must); a buffer it makes holds a counted
//! reference to the account in its slot (`release_site`, tagged, unused
//! while it lives) and is flagged `SlotFlags::QUOTA`, so its release, on
//! whatever path and whenever the last `Bytes` or `SharedBuffer` clone of
//! it drops, takes `release_slow`, which credits the account and wakes its
//! head waiter.
//! Buffers outside quotas never touch an account: their release tests the
//! same flag byte it always tested. A reservation that does not become a
//! buffer (the pool refused, or the future was dropped) is given back.
//!
//! ## The C ABI's handles
//!
//! `capi.rs` never dereferences a pointer C passes as a handle: handles are
//! `(index + 1) << half | generation` into one mutex-protected table, and
//! every call checks index, generation and kind before it touches the
//! `BufferPool` or `PageBuffer` stored there. Buffers are moved out of the
//! table before they are dropped, so no pool code runs under the table's
//! lock.
//! A buffer handle's last release leaves a grave (the handle, its buffer's
//! address, pool, site and threads) in a ring of the last 4096, which a
//! later use of the handle is reported with.
//!
//! ## Reports to C
//!
//! `observe/sink.rs` is a process-wide seam: a report (corruption, leak)
//! is handed to an installed sink as plain data, a kind, its text and the
//! buffer's address, beside the `tracing` event. Observers and the pool
//! call it; only the C ABI installs a sink (the first allocator C creates),
//! which writes stderr or calls the C program's callback, so neither layer
//! imports the other.
//!
//! ## The fault handler's stack
//!
//! The SIGSEGV handler runs on the faulting thread's alternate signal stack.
//! std gives each thread it spawns `max(SIGSTKSZ, AT_MINSIGSTKSZ)` bytes
//! (8 KiB on x86-64), and the kernel's signal frame takes its top (2,944
//! bytes with AVX-512): about 5 KiB is left for our handler and the one
//! chained after it. So the report goes through a static buffer, taken
//! with a try-lock (a second faulting thread writes straight to fd 2), and
//! the chaining (`observe/fault/chain.rs`: the saved signal mask, the
//! `sigaction` calls) is in functions of their own, off the stack while
//! the report is written. The handler pagepool's chains to runs on the same
//! stack, below pagepool's frames: the saved dispositions and the masks
//! they run under are computed at install and leaked, so the chained path
//! holds one `sigset_t` (128 bytes) for the mask it restores. Measured by
//! painting the alt stack (`cargo test [--release] --test fault_threads
//! handler_stack -- --nocapture`): 1,168 bytes in a debug build and 289 in
//! release, the previous handler called 681 and 289 bytes below the signal
//! frame, against 4,792 and 2,544 with the 2 KiB buffer on the stack
//! before.
//!
//! ## Fork
//!
//! A child of `fork()` has one thread, the one that forked, and a copy of
//! the parent's memory, locks included. A lock some other thread held at
//! that moment (the publisher in the middle of a scan, say) would be held
//! in the child for ever. So the first pool built registers
//! `pthread_atfork` handlers (`pool/fork.rs`), and every pool joins a
//! registry of weak references. The prepare handler takes, pool by pool,
//! every lock in the order the code nests them: `slabs`, `mapped`
//! (exclusively, so it waits for a running scan), the cap, the backtraces
//! map, the quarantine, the quota book (accounts, each account's waiters),
//! the depot (thread-counter registry, waiters), and each
//! slab-event subscriber's own locks (an io_uring registry's table, taken
//! under the slab lock); then the process-wide metric-name, thread-name and
//! call-site registries and the fault handler's install lock, which pool
//! code takes under its own locks or alone; last the leaves that layers
//! above add (`forklock::add_leaf`: the C ABI's handle table and report
//! callback), under which no other lock is taken. Nothing holds two pools'
//! locks at once or a pool lock while it takes the registry, so the order
//! has no inversion.
//! The parent's handler unlocks them; the child's resets each lock to its
//! initial state (`forklock.rs`), since a parent thread parked on one left
//! a "parked" bit that an ordinary unlock would answer by handing the lock
//! to that thread, which the child lacks. The fault table is lock-free.
//!
//! What a child inherits, with the default `inherit_on_fork(true)`:
//!
//! - **Buffers.** A child may read, write and drop buffers it inherited
//!   (copy-on-write: the parent never sees its writes); a dropped one's
//!   slot returns to the child's copy of the pool, and new allocations and
//!   `trim` work as in the parent.
//! - **Other threads' caches.** They went with their threads: their cached
//!   free slots are lost to the child's pool (counted as cached, never
//!   handed out, unmapped only with the pool). Nothing is flushed at the
//!   fork; the forking thread's own cache is the child's.
//! - **Waiters.** The parent's waiters for room (the pool's and every
//!   quota account's) are not in the child, and its copy of each list
//!   forgets them (their wakers leaked, never woken or dropped), or the
//!   child's allocations would queue behind them for ever. Their detours
//!   stay counted, so in such a child every release takes the slow path:
//!   slower, never wrong. A wait of the forking thread itself (an async
//!   allocation polled before the fork) joins the list anew when polled.
//! - **The publisher.** One thread per process ticks every pool (see
//!   "Periodic work" below). Its timer heap's lock is held across the fork
//!   like a pool lock; the child handler notes that the thread is gone,
//!   and the child's first `stats`, `publish_metrics`, slab mapping or
//!   pool build starts a new one, which ticks the inherited pools too.
//!   Its lock and condition variable are `std`'s futexes, not the parking
//!   lot's: the thread is parked on them at nearly every fork, and the
//!   parking lot's copied wait queue then listed a dead thread whose stack
//!   the child's new thread reused (a child aborted in `parking_lot_core`).
//!   The coarse clock's thread is gone for good, so buffer ages
//!   (`leak_report`, suspects) stop advancing.
//! - **io_uring registries.** The child's copy of a `Registry` is the
//!   parent's: its rings are the parent's kernel rings (shared through the
//!   inherited descriptors) and their tables point at the parent's pages.
//!   The child handler marks it inherited: no index is handed out, no ring
//!   is entered or locked (`Error::Os`), slabs the child maps or trims
//!   update no table, and its drop unregisters nothing. Without that, a
//!   child's new slab took indices the parent was using, and its drop
//!   cleared the parent's table (`tests/fork.rs`).
//! - **Limits.** A `crossbeam` free list whose push another thread had
//!   half done at the fork would leave that slot unpoppable in the child;
//!   the window is a few instructions, and no handler can close it. The
//!   parking lot's queue in the child still lists the parent threads that
//!   were parked on a pool lock; the reset keeps a lone child thread clear
//!   of them, but child threads that later contend for that lock may be
//!   queued behind them (and one unlock's hand-off may go to one), and a
//!   child thread built on such a thread's recycled stack overwrites its
//!   queue entry. Only a parent thread blocked on a pool lock during the
//!   prepare handler leaves one; the publisher, which sleeps between
//!   ticks, does not (above).
//!   `tests/fork.rs` measures why the reset is needed: with ordinary
//!   unlocks in the child, 12 to 30 of 30 children hung.
//!
//! With `inherit_on_fork(false)` every slab is mapped and then marked
//! `MADV_DONTFORK` (`mem/backing.rs`, `NotInherited`): the child has no
//! mapping there, so touching an inherited buffer's bytes is a `SIGSEGV`.
//! The slot metadata lives on the heap and is inherited, but the child's
//! handler closes that pool in the child (allocations fail with
//! `Error::Closed`), since its free slots are in the missing pages. The
//! child must not drop inherited buffers either (a release may read or
//! write the slot's canaries, poison or guard pages): `std::mem::forget`
//! them, or leave with `_exit`.
//!
//! ## How the concurrency is checked
//!
//! - **loom** (`--cfg pagepool_loom`, `free::loom_models`) explores every
//!   interleaving of the anchor's biased count and the depot's flags.
//! - **Miri** (`cargo +nightly miri test --test miri`, with
//!   `-Zmiri-strict-provenance`) runs small concurrent workloads through the
//!   real pool without guard pages, checking data races, aliasing and
//!   provenance. `parking_lot_core` stores thread pointers in a `usize`,
//!   which strict provenance rejects, so under Miri `sync` swaps the locks for
//!   `sync::spin`'s: same `lock_api` API, same one-atomic layout, no pointers.
//!   What that leaves unchecked is `parking_lot` itself, not pagepool's use of it.
//! - **ThreadSanitizer** (nightly, `-Zsanitizer=thread -Zbuild-std`) runs the
//!   threads, trim-race, close-race and async-wait tests with std
//!   instrumented too, so `Arc` and channels are seen as they are and no
//!   suppressions are needed. TSan does not model fences: the anchor's
//!   freeing thread acquires with a load, as std's `Arc` does under TSan.
//!
//! `.ci/run` runs all three.
//!
//! ## Why the orderings are enough
//!
//! pagepool relies on `crossbeam`'s queue and the batch lock for every
//! hand-over of a slot:
//!
//! - **No two owners.** At any time a slot is in exactly one place: owned by
//!   one `PageBuffer`, in one thread's bin, on its class's depot
//!   `SegQueue` or in one of its batches, in the quarantine, or in transit inside one of the pool's
//!   functions that took it from one of those (a refill batch, `trim`'s
//!   drained list, a spill). Every move takes it out of the old place before
//!   it enters the new one: `SegQueue::pop` hands each pushed element to
//!   exactly one popper (crossbeam's guarantee), a batch is taken (whole, or
//!   one slot) under its lock, a bin is touched by its
//!   thread alone, the quarantine is a mutex-protected queue, and a buffer
//!   gives its slot back exactly once (its `Drop`, or `release`, which skips
//!   the `Drop`).
//! - **Contents are handed over.** Each move between threads goes through a
//!   release/acquire pair: the `SegQueue`'s push and pop, the batch lock, the quarantine's
//!   mutex, the user's own synchronisation when a buffer (`Send`) is moved to
//!   another thread and dropped there, the `Arc` inside `SharedBuffer` (its
//!   last drop follows every reader's accesses), and the anchor's
//!   `fetch_sub(Release)` with a load `Acquire` before it is freed. So every
//!   write by the previous owner happens before every access by the next.
//! - **Bins are private.** A bin is reachable only through its
//!   thread's `thread_local!`, so its pushes and pops need no ordering; a slot
//!   moves between threads only through the depot's free list (spill on one
//!   thread, refill on another), which provides the hand-over above. A bin's entry
//!   is keyed by the pool's process-unique id and holds the thread's anchor
//!   (and through it an `Arc` of the pool); it is retired when the thread
//!   exits, or when the thread makes an entry for another pool and finds
//!   this one's pool closed.
//! - **Counters are `Relaxed`.** They order nothing. Shared ones are atomic
//!   read-modify-writes, so no increment is lost; a thread's own `ThreadCounters` are
//!   written by that thread alone (load, add, store), so nothing is lost
//!   either, and `stats()` reads every thread's counters under the depot's registry
//!   lock that an exiting thread also takes to fold its own into the shared ones:
//!   no count is seen twice or missed. Snapshots are documented as exact only
//!   once every thread that used the pool is synchronised with the reader
//!   (joined, or through a lock or channel). The slot metadata (state, site, time) is
//!   likewise written with relaxed stores by the slot's single owner and read
//!   by reports, which tolerate a torn view of a slot changing hands.
//! - **Unmapping is safe.** A slab is unmapped only by `trim` (or decay, which
//!   calls the same `unmap_idle_locked`), under the slab
//!   lock, after *all* of its slots were popped from the shared free list by
//!   the trimming thread itself; no buffer can own one of them then, no other
//!   thread can pop one, and no bin holds one (a binned slot is not
//!   on the shared list, so its slab never looks idle). Shutdown unmaps
//!   every slab only when no buffer is out and none can be made (no handle
//!   is left); the slot pointers left in bins are only ever pushed
//!   back onto the shared lists, never dereferenced. Buffers reach the pool
//!   through their anchor, which outlives them (see `free/anchor.rs`).
//! - **Unmapping is announced first.** `SlabSet` tells every subscriber of
//!   an unmapping before the memory goes (the fault table drops its entry),
//!   and of a mapping before any slot of it is handed out.
