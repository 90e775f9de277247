/*
 * pagepool.h: the C ABI of pagepool (Rust crate feature `capi`), mirroring
 * IWMSBufferAllocator and INSSBuffer with HRESULT-style return codes.
 *
 * Link libpagepool.a (plus -lpthread -ldl -lm -lgcc_s) or libpagepool.so.
 * Handles are opaque and validated by every call: a null, forged, stale or
 * wrong-kind handle gives E_HANDLE and leaves the allocator usable. A failed
 * create or allocation leaves NULL in its out pointer, as COM does.
 * See the Rust docs of `pagepool::capi` for the details.
 *
 * tests/capi.rs checks that this header and src/capi.rs agree.
 */
#ifndef PAGEPOOL_H
#define PAGEPOOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t HRESULT;

#ifndef S_OK
#define S_OK ((HRESULT)0x00000000)
#endif
#ifndef E_POINTER
#define E_POINTER ((HRESULT)0x80004003)
#endif
#ifndef E_HANDLE
#define E_HANDLE ((HRESULT)0x80070006)
#endif
#ifndef E_INVALIDARG
#define E_INVALIDARG ((HRESULT)0x80070057)
#endif
#ifndef E_OUTOFMEMORY
#define E_OUTOFMEMORY ((HRESULT)0x8007000E)
#endif
#ifndef E_FAIL
#define E_FAIL ((HRESULT)0x80004005)
#endif
#ifndef E_UNEXPECTED
#define E_UNEXPECTED ((HRESULT)0x8000FFFF)
#endif

/* IWMSBufferAllocator: a pool of guarded buffers. */
typedef struct pagepool_allocator pagepool_allocator;
/* INSSBuffer: one buffer, reference counted. */
typedef struct pagepool_buffer pagepool_buffer;

/* An allocator's counters. */
typedef struct pagepool_stats {
    uint64_t buffers_in_use;
    uint64_t bytes_in_use;
    uint64_t bytes_reserved;
    uint64_t bytes_limit; /* 0: no cap */
    uint64_t exhausted;
    uint64_t rejected;
} pagepool_stats;

/* ---- Allocators ---- */

/* Creates an allocator named `name` (UTF-8; NULL for "capi") whose mapped
 * bytes stay within `max_bytes` (0: no cap). */
HRESULT pagepool_allocator_create(const char *name, uint64_t max_bytes,
                                  pagepool_allocator **out);

/* A knob that takes the value its debug_level preset gives it. */
#define PAGEPOOL_FROM_LEVEL (-1)
/* debug_level */
#define PAGEPOOL_DEBUG_OFF 0      /* no canary, poison, zeroing, quarantine */
#define PAGEPOOL_DEBUG_STANDARD 1 /* slack canary, poison 1 release in 64 */
#define PAGEPOOL_DEBUG_PARANOID 2 /* full canary, poison and quarantine all */
/* zeroing */
#define PAGEPOOL_ZERO_OFF 0
#define PAGEPOOL_ZERO_ON_RELEASE 1
#define PAGEPOOL_ZERO_ON_ALLOCATE 2
/* on_corruption */
#define PAGEPOOL_ON_CORRUPTION_REPORT 0 /* report, count, repair, go on */
#define PAGEPOOL_ON_CORRUPTION_ABORT 1  /* report (to the callback or stderr),
                                           then abort() */
/* leak_tracking */
#define PAGEPOOL_LEAK_TRACKING_OFF 0       /* counts only */
#define PAGEPOOL_LEAK_TRACKING_CALL_SITE 1 /* site, time, thread per buffer */

/* The settings of pagepool_allocator_create_ex, versioned by `size`: fill it
 * with pagepool_config_init(&c, sizeof c), then change what you need. A
 * library reads the fields it knows up to `size`; fields added later take
 * their defaults when zero. */
typedef struct pagepool_config {
    uint32_t size;             /* sizeof(pagepool_config) */
    int32_t debug_level;       /* PAGEPOOL_DEBUG_*; default STANDARD */
    int32_t quarantine_every;  /* quarantine 1 release in N (0: none;
                                  needs guard pages); FROM_LEVEL */
    uint32_t quarantine_slots; /* its slots, if quarantine_every is set; 256 */
    int32_t zeroing;           /* PAGEPOOL_ZERO_*; FROM_LEVEL */
    int32_t poison_every;      /* poison 1 release in N (0: none); FROM_LEVEL */
    uint64_t poison_bytes;     /* bytes poisoned from the start, UINT64_MAX:
                                  all, if poison_every is set; 256 */
    int32_t on_corruption;     /* PAGEPOOL_ON_CORRUPTION_*; default REPORT */
    int32_t leak_tracking;     /* PAGEPOOL_LEAK_TRACKING_*; default CALL_SITE */
    int32_t guard_pages;       /* 1: a guard page each side (default); 0 */
    uint32_t reserved;         /* 0 */
    uint64_t max_buffer_size;  /* the largest buffer; 0: 16 MiB */
    uint64_t max_bytes;        /* cap on mapped bytes; 0: none */
} pagepool_config;

/* Fills the `size` bytes of *config with the defaults; E_INVALIDARG when
 * `size` is below the first version's. */
HRESULT pagepool_config_init(pagepool_config *config, uint32_t size);
/* Creates an allocator with the settings in *config. E_INVALIDARG for a
 * value out of range, a config->size too small (or larger, with nonzero
 * fields this library does not know), or a quarantine without guard pages. */
HRESULT pagepool_allocator_create_ex(const char *name, const pagepool_config *config,
                                     pagepool_allocator **out);
/* Destroys an allocator; its buffers stay valid until released. With
 * buffers still out, a leak report (PAGEPOOL_REPORT_LEAK: counts and bytes
 * by allocation site) goes to stderr or the report callback. */
HRESULT pagepool_allocator_destroy(pagepool_allocator *allocator);

/* ---- Counters ---- */

/* An allocator's counters with the diagnostics, versioned by `size` as
 * pagepool_config is: set `size = sizeof(pagepool_stats_ex)` before the call. */
typedef struct pagepool_stats_ex {
    uint32_t size;     /* sizeof(pagepool_stats_ex), set by the caller */
    uint32_t reserved; /* 0 */
    uint64_t buffers_in_use;
    uint64_t bytes_in_use;
    uint64_t bytes_reserved;
    uint64_t bytes_limit; /* 0: no cap */
    uint64_t exhausted;
    uint64_t rejected;
    uint64_t corruptions;              /* every kind */
    uint64_t corruptions_slack_canary; /* writes past max_len */
    uint64_t corruptions_edge_canary;  /* writes into a packet's red zone */
    uint64_t corruptions_poison;       /* writes after release */
    uint64_t unguarded_slots;          /* slots missing a guard page */
    uint64_t buffers_quarantined;
} pagepool_stats_ex;

/* The allocator's counters. */
HRESULT pagepool_allocator_stats(pagepool_allocator *allocator, pagepool_stats *out);
/* The counters with corruptions by kind: writes the out->size bytes the
 * caller's struct has (zero past the fields this library knows), keeping
 * out->size. E_INVALIDARG when out->size is below the first version's. */
HRESULT pagepool_allocator_stats_ex(pagepool_allocator *allocator, pagepool_stats_ex *out);

/* ---- Diagnostics ---- */

/* Installs the SIGSEGV/SIGBUS handler (once per process): a fault on a guard
 * page or a quarantined buffer is reported to stderr (kind, offset, pool,
 * max_len, allocation site), then the process dies of the signal as before.
 * E_FAIL when the OS refuses (sigaltstack, mmap, sigaction). */
HRESULT pagepool_install_fault_handler(void);

/* Report kinds, for the report callback. */
#define PAGEPOOL_REPORT_SLACK_CANARY 1 /* a write past max_len */
#define PAGEPOOL_REPORT_EDGE_CANARY 2  /* a write into a packet's red zone */
#define PAGEPOOL_REPORT_POISON 3       /* a write after release */
#define PAGEPOOL_REPORT_LEAK 4         /* buffers still out at destroy */
#define PAGEPOOL_REPORT_STALE_HANDLE 5 /* a buffer handle used after its
                                          last release */

/* A report callback: `user` as given, a PAGEPOOL_REPORT_* kind, the report
 * (NUL-terminated, valid during the call) and the buffer's address (0 for a
 * leak). */
typedef void (*pagepool_report_fn)(void *user, uint32_t kind, const char *text,
                                   uintptr_t address);
/* Reports go to stderr by default, once an allocator exists (each
 * corruption a check finds, each leak at destroy, each stale handle, from
 * every pool of the process). This sends later ones to `callback`, called
 * with `user` on the thread that found the report; NULL restores stderr. The
 * callback may call pagepool functions and must not throw. Guard-page and
 * quarantine faults always go to stderr (from the signal handler). */
HRESULT pagepool_set_report_callback(pagepool_report_fn callback, void *user);

/* Writes the current leak report (every buffer out, by allocation site,
 * biggest first) into buf as a NUL-terminated string cut at len - 1 bytes;
 * *needed (unless NULL) gets the bytes the whole report needs, its NUL
 * included. buf may be NULL when len is 0. S_OK, even when cut: compare
 * *needed with len. */
HRESULT pagepool_leak_report(pagepool_allocator *allocator, char *buf, size_t len,
                             size_t *needed);

/* ---- Buffers ---- */

/* Allocation and release sites: with this header, the allocation calls and
 * pagepool_buffer_release are macros over their _at forms, which record
 * __FILE__, __LINE__ and __func__ for reports (tracking on). The plain
 * functions remain (for dlsym and other languages); they record the
 * caller's return address (x86-64, AArch64), printed symbolized where
 * dladdr can. Define PAGEPOOL_NO_SITE_MACROS before including this header
 * to call them directly; a NULL file records no site. */

/* IWMSBufferAllocator::AllocateBuffer: 64-byte aligned up to 2 KiB,
 * page-aligned above; length 0. */
HRESULT pagepool_allocate_buffer(pagepool_allocator *allocator, uint32_t max_size,
                                 pagepool_buffer **out);
/* IWMSBufferAllocator::AllocatePageSizeBuffer: page-aligned, guard pages
 * around it; length 0. */
HRESULT pagepool_allocate_page_size_buffer(pagepool_allocator *allocator,
                                           uint32_t max_size, pagepool_buffer **out);
/* The same, recording file:line in func as the allocation site. */
HRESULT pagepool_allocate_buffer_at(pagepool_allocator *allocator, uint32_t max_size,
                                    const char *file, int line, const char *func,
                                    pagepool_buffer **out);
HRESULT pagepool_allocate_page_size_buffer_at(pagepool_allocator *allocator,
                                              uint32_t max_size, const char *file,
                                              int line, const char *func,
                                              pagepool_buffer **out);

/* INSSBuffer::GetBuffer */
HRESULT pagepool_buffer_get_buffer(pagepool_buffer *buffer, uint8_t **out);
/* INSSBuffer::GetBufferAndLength */
HRESULT pagepool_buffer_get_buffer_and_length(pagepool_buffer *buffer, uint8_t **out,
                                              uint32_t *length);
/* INSSBuffer::GetLength */
HRESULT pagepool_buffer_get_length(pagepool_buffer *buffer, uint32_t *length);
/* INSSBuffer::GetMaxLength */
HRESULT pagepool_buffer_get_max_length(pagepool_buffer *buffer, uint32_t *length);
/* INSSBuffer::SetLength: E_INVALIDARG past the maximum length. */
HRESULT pagepool_buffer_set_length(pagepool_buffer *buffer, uint32_t length);
/* AddRef: the new count goes to *count unless count is NULL. */
HRESULT pagepool_buffer_add_ref(pagepool_buffer *buffer, uint32_t *count);
/* Release: at zero the buffer returns to its pool and the handle dies. A
 * later call with a dead handle (a double release, a use after the last
 * release) gives E_HANDLE and, for the last 4096 handles released, a report
 * (PAGEPOOL_REPORT_STALE_HANDLE) naming the buffer it was, its pool,
 * allocation site and releasing thread. */
HRESULT pagepool_buffer_release(pagepool_buffer *buffer, uint32_t *count);
/* The same, recording file:line in func as the release site (named by
 * reports of a later write after release). */
HRESULT pagepool_buffer_release_at(pagepool_buffer *buffer, const char *file, int line,
                                   const char *func, uint32_t *count);

#ifndef PAGEPOOL_NO_SITE_MACROS
#define pagepool_allocate_buffer(allocator, max_size, out) \
    pagepool_allocate_buffer_at((allocator), (max_size), __FILE__, __LINE__, __func__, (out))
#define pagepool_allocate_page_size_buffer(allocator, max_size, out)                    \
    pagepool_allocate_page_size_buffer_at((allocator), (max_size), __FILE__, __LINE__, \
                                          __func__, (out))
#define pagepool_buffer_release(buffer, count) \
    pagepool_buffer_release_at((buffer), __FILE__, __LINE__, __func__, (count))
#endif

#ifdef __cplusplus
}
#endif

#endif /* PAGEPOOL_H */
