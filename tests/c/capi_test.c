/*
 * Every function of include/pagepool.h and every error path the C ABI
 * promises, checked from C. Built and run by tests/capi.rs; prints
 * "capi: N checks passed" and exits 0, or names the first failed check and
 * exits 1.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pagepool.h"

static int checks;

#define CHECK(cond)                                                          \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            fprintf(stderr, "capi: check failed at %s:%d: %s\n", __FILE__,   \
                    __LINE__, #cond);                                        \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

#define EXPECT(call, code) CHECK((call) == (code))

static uint64_t in_use(pagepool_allocator *a) {
    pagepool_stats s;
    EXPECT(pagepool_allocator_stats(a, &s), S_OK);
    return s.buffers_in_use;
}

static void round_trip(void) {
    long page = sysconf(_SC_PAGESIZE);
    pagepool_allocator *a = NULL;
    EXPECT(pagepool_allocator_create("c-test", 0, &a), S_OK);
    CHECK(a != NULL);

    /* AllocatePageSizeBuffer: page-aligned, writable for max_len bytes. */
    pagepool_buffer *b = NULL;
    EXPECT(pagepool_allocate_page_size_buffer(a, 65536, &b), S_OK);
    uint8_t *data = NULL;
    EXPECT(pagepool_buffer_get_buffer(b, &data), S_OK);
    CHECK(data != NULL && (uintptr_t)data % (uintptr_t)page == 0);
    memset(data, 0x5a, 65536);
    uint32_t len = 99, max = 0;
    EXPECT(pagepool_buffer_get_length(b, &len), S_OK);
    CHECK(len == 0);
    EXPECT(pagepool_buffer_get_max_length(b, &max), S_OK);
    CHECK(max == 65536);
    EXPECT(pagepool_buffer_set_length(b, 1000), S_OK);
    uint8_t *again = NULL;
    EXPECT(pagepool_buffer_get_buffer_and_length(b, &again, &len), S_OK);
    CHECK(again == data && len == 1000);
    EXPECT(pagepool_buffer_set_length(b, 65536), S_OK);
    EXPECT(pagepool_buffer_set_length(b, 65537), E_INVALIDARG);
    EXPECT(pagepool_buffer_get_length(b, &len), S_OK);
    CHECK(len == 65536); /* unchanged by the refused SetLength */
    CHECK(data[0] == 0x5a && data[65535] == 0x5a);

    /* AllocateBuffer: a packet, 64-byte aligned. */
    pagepool_buffer *p = NULL;
    EXPECT(pagepool_allocate_buffer(a, 1500, &p), S_OK);
    uint8_t *pd = NULL;
    EXPECT(pagepool_buffer_get_buffer(p, &pd), S_OK);
    CHECK(pd != NULL && (uintptr_t)pd % 64 == 0);
    memset(pd, 0x80, 1500);
    EXPECT(pagepool_buffer_get_max_length(p, &max), S_OK);
    CHECK(max == 1500);
    CHECK(in_use(a) == 2);

    /* AddRef / Release: counted, the last one returns the slot. */
    uint32_t count = 0;
    EXPECT(pagepool_buffer_add_ref(p, &count), S_OK);
    CHECK(count == 2);
    EXPECT(pagepool_buffer_add_ref(p, NULL), S_OK);
    EXPECT(pagepool_buffer_release(p, &count), S_OK);
    CHECK(count == 2);
    EXPECT(pagepool_buffer_release(p, NULL), S_OK);
    EXPECT(pagepool_buffer_release(p, &count), S_OK);
    CHECK(count == 0);
    CHECK(in_use(a) == 1);
    /* A double Release, and any use after the last one: E_HANDLE. */
    EXPECT(pagepool_buffer_release(p, &count), E_HANDLE);
    EXPECT(pagepool_buffer_get_buffer(p, &pd), E_HANDLE);
    EXPECT(pagepool_buffer_set_length(p, 1), E_HANDLE);

    EXPECT(pagepool_buffer_release(b, NULL), S_OK);
    CHECK(in_use(a) == 0);
    EXPECT(pagepool_allocator_destroy(a), S_OK);
}

static void null_pointers(void) {
    pagepool_allocator *a = NULL;
    EXPECT(pagepool_allocator_create("c-null", 0, NULL), E_POINTER);
    EXPECT(pagepool_allocator_create(NULL, 0, &a), S_OK); /* default name */
    pagepool_buffer *b = NULL;
    EXPECT(pagepool_allocate_buffer(a, 100, NULL), E_POINTER);
    EXPECT(pagepool_allocate_page_size_buffer(a, 100, NULL), E_POINTER);
    EXPECT(pagepool_allocate_page_size_buffer(a, 100, &b), S_OK);
    uint8_t *d = NULL;
    uint32_t n = 0;
    EXPECT(pagepool_buffer_get_buffer(b, NULL), E_POINTER);
    EXPECT(pagepool_buffer_get_buffer_and_length(b, NULL, &n), E_POINTER);
    EXPECT(pagepool_buffer_get_buffer_and_length(b, &d, NULL), E_POINTER);
    EXPECT(pagepool_buffer_get_length(b, NULL), E_POINTER);
    EXPECT(pagepool_buffer_get_max_length(b, NULL), E_POINTER);
    EXPECT(pagepool_allocator_stats(a, NULL), E_POINTER);
    /* Null handles. */
    EXPECT(pagepool_buffer_get_buffer(NULL, &d), E_HANDLE);
    EXPECT(pagepool_buffer_set_length(NULL, 0), E_HANDLE);
    EXPECT(pagepool_buffer_add_ref(NULL, &n), E_HANDLE);
    EXPECT(pagepool_buffer_release(NULL, &n), E_HANDLE);
    pagepool_buffer *refused = b;
    EXPECT(pagepool_allocate_buffer(NULL, 100, &refused), E_HANDLE);
    CHECK(refused == NULL); /* a failed call leaves NULL */
    EXPECT(pagepool_allocator_destroy(NULL), E_HANDLE);
    /* Still usable. */
    CHECK(in_use(a) == 1);
    EXPECT(pagepool_buffer_release(b, NULL), S_OK);
    EXPECT(pagepool_allocator_destroy(a), S_OK);
}

static void forged_handles(void) {
    pagepool_allocator *a = NULL;
    EXPECT(pagepool_allocator_create("c-forged", 0, &a), S_OK);
    pagepool_buffer *b = NULL;
    EXPECT(pagepool_allocate_buffer(a, 4096, &b), S_OK);
    int on_stack = 0;
    void *heap = malloc(64);
    void *forged[] = {(void *)0x1234, (void *)&on_stack, heap, (void *)-1,
                      (void *)((uintptr_t)b ^ 1), (void *)((uintptr_t)b + 4096)};
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
        pagepool_buffer *f = (pagepool_buffer *)forged[i];
        uint8_t *d;
        uint32_t n;
        EXPECT(pagepool_buffer_get_buffer(f, &d), E_HANDLE);
        EXPECT(pagepool_buffer_get_length(f, &n), E_HANDLE);
        EXPECT(pagepool_buffer_set_length(f, 0), E_HANDLE);
        EXPECT(pagepool_buffer_release(f, &n), E_HANDLE);
        pagepool_buffer *none = NULL;
        EXPECT(pagepool_allocate_buffer((pagepool_allocator *)forged[i], 10, &none), E_HANDLE);
        CHECK(none == NULL);
    }
    free(heap);
    CHECK(on_stack == 0);
    /* The wrong kind of handle each way. */
    uint32_t n;
    EXPECT(pagepool_buffer_get_length((pagepool_buffer *)a, &n), E_HANDLE);
    EXPECT(pagepool_allocator_destroy((pagepool_allocator *)b), E_HANDLE);
    pagepool_buffer *other = b;
    EXPECT(pagepool_allocate_buffer((pagepool_allocator *)b, 10, &other), E_HANDLE);
    CHECK(other == NULL);
    /* b is intact through all of it. */
    EXPECT(pagepool_buffer_get_max_length(b, &n), S_OK);
    CHECK(n == 4096);
    EXPECT(pagepool_buffer_release(b, NULL), S_OK);
    EXPECT(pagepool_allocator_destroy(a), S_OK);
}

static void sizes_and_cap(void) {
    long page = sysconf(_SC_PAGESIZE);
    pagepool_allocator *a = NULL;
    /* Room for one slab of four guarded one-page slots: 9 pages. */
    EXPECT(pagepool_allocator_create("c-cap", (uint64_t)(9 * page), &a), S_OK);
    pagepool_buffer *b[5] = {0};
    EXPECT(pagepool_allocate_page_size_buffer(a, 0, &b[0]), E_INVALIDARG);
    EXPECT(pagepool_allocate_buffer(a, 0, &b[0]), E_INVALIDARG);
    EXPECT(pagepool_allocate_page_size_buffer(a, UINT32_MAX, &b[0]), E_INVALIDARG);
    for (int i = 0; i < 4; i++) {
        EXPECT(pagepool_allocate_page_size_buffer(a, (uint32_t)page, &b[i]), S_OK);
    }
    b[4] = (pagepool_buffer *)0x1; /* a failed call must leave NULL */
    EXPECT(pagepool_allocate_page_size_buffer(a, (uint32_t)page, &b[4]), E_OUTOFMEMORY);
    CHECK(b[4] == NULL);
    pagepool_stats s;
    EXPECT(pagepool_allocator_stats(a, &s), S_OK);
    CHECK(s.buffers_in_use == 4 && s.exhausted == 1 && s.rejected == 3);
    CHECK(s.bytes_reserved <= s.bytes_limit && s.bytes_limit == (uint64_t)(9 * page));
    /* Usable once one comes back. */
    EXPECT(pagepool_buffer_release(b[2], NULL), S_OK);
    EXPECT(pagepool_allocate_page_size_buffer(a, (uint32_t)page, &b[2]), S_OK);
    /* Destroying the allocator with buffers out: they stay valid. */
    EXPECT(pagepool_allocator_destroy(a), S_OK);
    EXPECT(pagepool_allocator_stats(a, &s), E_HANDLE);
    for (int i = 0; i < 4; i++) {
        uint8_t *d = NULL;
        EXPECT(pagepool_buffer_get_buffer(b[i], &d), S_OK);
        memset(d, i, (size_t)page);
        EXPECT(pagepool_buffer_set_length(b[i], (uint32_t)page), S_OK);
        EXPECT(pagepool_buffer_release(b[i], NULL), S_OK);
    }
}

static void limits(void) {
    uint32_t page = (uint32_t)sysconf(_SC_PAGESIZE);
    uint32_t max = 16u << 20; /* the default largest buffer */
    pagepool_allocator *a = NULL;
    EXPECT(pagepool_allocator_create("c-limits", 0, &a), S_OK);
    uint32_t sizes[] = {1, 63, 64, 65, 2047, 2048, 2049, page - 1, page, page + 1, max};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (int aligned = 0; aligned < 2; aligned++) {
            pagepool_buffer *b = NULL;
            HRESULT hr = aligned ? pagepool_allocate_page_size_buffer(a, sizes[i], &b)
                                 : pagepool_allocate_buffer(a, sizes[i], &b);
            EXPECT(hr, S_OK);
            uint8_t *d = NULL;
            uint32_t n = 0;
            EXPECT(pagepool_buffer_get_buffer(b, &d), S_OK);
            uintptr_t align = (aligned || sizes[i] > 2048) ? page : 64;
            CHECK((uintptr_t)d % align == 0);
            EXPECT(pagepool_buffer_get_max_length(b, &n), S_OK);
            CHECK(n == sizes[i]);
            d[0] = 1;
            d[sizes[i] - 1] = 2;
            EXPECT(pagepool_buffer_set_length(b, sizes[i]), S_OK);
            EXPECT(pagepool_buffer_set_length(b, sizes[i] + 1), E_INVALIDARG);
            EXPECT(pagepool_buffer_set_length(b, UINT32_MAX), E_INVALIDARG);
            EXPECT(pagepool_buffer_release(b, NULL), S_OK);
        }
    }
    pagepool_buffer *b = NULL;
    EXPECT(pagepool_allocate_page_size_buffer(a, max + 1, &b), E_INVALIDARG);
    EXPECT(pagepool_allocate_buffer(a, max + 1, &b), E_INVALIDARG);
    EXPECT(pagepool_allocate_buffer(a, UINT32_MAX, &b), E_INVALIDARG);
    CHECK(b == NULL);
    pagepool_allocator *none = (pagepool_allocator *)0x1;
    EXPECT(pagepool_allocator_create("\xff\xfe not UTF-8", 0, &none), E_INVALIDARG);
    CHECK(none == NULL);
    CHECK(in_use(a) == 0);
    EXPECT(pagepool_allocator_destroy(a), S_OK);
}

int main(void) {
    round_trip();
    limits();
    null_pointers();
    forged_handles();
    sizes_and_cap();
    printf("capi: %d checks passed\n", checks);
    return 0;
}
