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

/* Creates an allocator named `name` (UTF-8; NULL for "capi") whose mapped
 * bytes stay within `max_bytes` (0: no cap). */
HRESULT pagepool_allocator_create(const char *name, uint64_t max_bytes,
                                  pagepool_allocator **out);
/* Destroys an allocator; its buffers stay valid until released. */
HRESULT pagepool_allocator_destroy(pagepool_allocator *allocator);
/* The allocator's counters. */
HRESULT pagepool_allocator_stats(pagepool_allocator *allocator, pagepool_stats *out);

/* IWMSBufferAllocator::AllocateBuffer: 64-byte aligned up to 2 KiB,
 * page-aligned above; length 0. */
HRESULT pagepool_allocate_buffer(pagepool_allocator *allocator, uint32_t max_size,
                                 pagepool_buffer **out);
/* IWMSBufferAllocator::AllocatePageSizeBuffer: page-aligned, guard pages
 * around it; length 0. */
HRESULT pagepool_allocate_page_size_buffer(pagepool_allocator *allocator,
                                           uint32_t max_size, pagepool_buffer **out);

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
/* Release: at zero the buffer returns to its pool and the handle dies. */
HRESULT pagepool_buffer_release(pagepool_buffer *buffer, uint32_t *count);

#ifdef __cplusplus
}
#endif

#endif /* PAGEPOOL_H */
