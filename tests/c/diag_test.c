/*
 * The C ABI's diagnostics, one case per run: `diag_test CASE`. Built and run
 * by tests/capi.rs, which checks each case's exit (0, or the signal a crash
 * case dies of) and what it wrote to stderr. A case prints "diag: CASE ok"
 * when it ends normally, and "diag: faulting" before an access meant to
 * fault.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "pagepool.h"

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "diag: check failed at %s:%d: %s\n", __FILE__,   \
                    __LINE__, #cond);                                        \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

#define EXPECT(call, code) CHECK((call) == (code))

static size_t page;

/* Says a fault is next, so the parent knows the case got that far. */
static void faulting(void) {
    printf("diag: faulting\n");
    fflush(stdout);
}

/* A debug allocator: `debug_level`, quarantine of every release when
 * `quarantine` is set. */
static pagepool_allocator *debug_allocator(const char *name, int32_t level, int quarantine) {
    pagepool_config c;
    EXPECT(pagepool_config_init(&c, sizeof c), S_OK);
    c.debug_level = level;
    if (quarantine) {
        c.quarantine_every = 1;
        c.quarantine_slots = 16;
    }
    pagepool_allocator *a = NULL;
    EXPECT(pagepool_allocator_create_ex(name, &c, &a), S_OK);
    return a;
}

static uint8_t *data_of(pagepool_buffer *b) {
    uint8_t *d = NULL;
    EXPECT(pagepool_buffer_get_buffer(b, &d), S_OK);
    return d;
}

/* pagepool_config_init and create_ex: defaults, every setting, every
 * refusal. */
static void config(void) {
    pagepool_config c;
    memset(&c, 0xab, sizeof c);
    EXPECT(pagepool_config_init(NULL, sizeof c), E_POINTER);
    EXPECT(pagepool_config_init(&c, 8), E_INVALIDARG);
    EXPECT(pagepool_config_init(&c, sizeof c), S_OK);
    CHECK(c.size == sizeof c && c.debug_level == PAGEPOOL_DEBUG_STANDARD);
    CHECK(c.quarantine_every == PAGEPOOL_FROM_LEVEL && c.zeroing == PAGEPOOL_FROM_LEVEL);
    CHECK(c.poison_every == PAGEPOOL_FROM_LEVEL && c.guard_pages == 1);
    CHECK(c.max_bytes == 0 && c.max_buffer_size == 0 && c.reserved == 0);

    pagepool_allocator *a = (pagepool_allocator *)0x1;
    EXPECT(pagepool_allocator_create_ex("c-cfg", NULL, &a), E_POINTER);
    CHECK(a == NULL);
    EXPECT(pagepool_allocator_create_ex("c-cfg", &c, NULL), E_POINTER);

    /* Out of range, one field at a time. */
    int32_t *bad[] = {&c.debug_level, &c.zeroing, &c.on_corruption, &c.leak_tracking,
                      &c.guard_pages};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t keep = *bad[i];
        *bad[i] = 7;
        EXPECT(pagepool_allocator_create_ex("c-cfg", &c, &a), E_INVALIDARG);
        CHECK(a == NULL);
        *bad[i] = keep;
    }
    c.poison_every = -2;
    EXPECT(pagepool_allocator_create_ex("c-cfg", &c, &a), E_INVALIDARG);
    c.poison_every = PAGEPOOL_FROM_LEVEL;
    c.reserved = 1;
    EXPECT(pagepool_allocator_create_ex("c-cfg", &c, &a), E_INVALIDARG);
    c.reserved = 0;
    /* A quarantine needs guard pages. */
    c.guard_pages = 0;
    c.quarantine_every = 1;
    EXPECT(pagepool_allocator_create_ex("c-cfg", &c, &a), E_INVALIDARG);
    c.guard_pages = 1;
    c.quarantine_every = PAGEPOOL_FROM_LEVEL;
    /* A cap too small for one buffer. */
    c.max_bytes = 1;
    EXPECT(pagepool_allocator_create_ex("c-cfg", &c, &a), E_INVALIDARG);
    c.max_bytes = 0;

    /* Versions: too small a size is refused, a larger one is read up to
     * what this library knows if the rest is zero. */
    struct {
        pagepool_config c;
        uint64_t newer;
    } big;
    EXPECT(pagepool_config_init(&big.c, sizeof big), S_OK);
    CHECK(big.c.size == sizeof big && big.newer == 0);
    EXPECT(pagepool_allocator_create_ex("c-cfg", &big.c, &a), S_OK);
    EXPECT(pagepool_allocator_destroy(a), S_OK);
    big.newer = 1;
    EXPECT(pagepool_allocator_create_ex("c-cfg", &big.c, &a), E_INVALIDARG);
    c.size = 8;
    EXPECT(pagepool_allocator_create_ex("c-cfg", &c, &a), E_INVALIDARG);
    c.size = sizeof c;

    /* The settings take effect: largest buffer, cap, every preset. */
    c.max_buffer_size = 65536;
    c.max_bytes = 64u << 20;
    c.zeroing = PAGEPOOL_ZERO_ON_ALLOCATE;
    c.poison_every = 1;
    c.poison_bytes = UINT64_MAX;
    EXPECT(pagepool_allocator_create_ex(NULL, &c, &a), S_OK);
    pagepool_buffer *b = NULL;
    EXPECT(pagepool_allocate_page_size_buffer(a, 65537, &b), E_INVALIDARG);
    EXPECT(pagepool_allocate_page_size_buffer(a, 65536, &b), S_OK);
    uint8_t *d = data_of(b);
    memset(d, 7, 65536);
    EXPECT(pagepool_buffer_release(b, NULL), S_OK);
    EXPECT(pagepool_allocate_page_size_buffer(a, 65536, &b), S_OK);
    d = data_of(b);
    CHECK(d[0] == 0 && d[65535] == 0); /* zeroed on allocate */
    pagepool_stats s;
    EXPECT(pagepool_allocator_stats(a, &s), S_OK);
    CHECK(s.bytes_limit == (64u << 20));
    EXPECT(pagepool_buffer_release(b, NULL), S_OK);
    EXPECT(pagepool_allocator_destroy(a), S_OK);
    int32_t levels[] = {PAGEPOOL_DEBUG_OFF, PAGEPOOL_DEBUG_STANDARD, PAGEPOOL_DEBUG_PARANOID};
    for (size_t i = 0; i < 3; i++) {
        a = debug_allocator("c-level", levels[i], 0);
        EXPECT(pagepool_allocate_buffer(a, 1500, &b), S_OK);
        EXPECT(pagepool_buffer_release(b, NULL), S_OK);
        EXPECT(pagepool_allocator_destroy(a), S_OK);
    }
    EXPECT(pagepool_install_fault_handler(), S_OK);
    EXPECT(pagepool_install_fault_handler(), S_OK); /* once; later calls do nothing */
}

/* A write one page past a one-page buffer: the guard page. */
static void next_page(void) {
    EXPECT(pagepool_install_fault_handler(), S_OK);
    pagepool_allocator *a = debug_allocator("c-next-page", PAGEPOOL_DEBUG_STANDARD, 0);
    pagepool_buffer *b = NULL;
    EXPECT(pagepool_allocate_page_size_buffer(a, (uint32_t)page, &b), S_OK); /* site: next_page */
    volatile uint8_t *d = data_of(b);
    faulting();
    d[page] = 1;
}

/* A write one byte before a buffer: the guard page before it. */
static void byte_before(void) {
    EXPECT(pagepool_install_fault_handler(), S_OK);
    pagepool_allocator *a = debug_allocator("c-before", PAGEPOOL_DEBUG_STANDARD, 0);
    pagepool_buffer *b = NULL;
    EXPECT(pagepool_allocate_page_size_buffer(a, 100, &b), S_OK); /* site: byte_before */
    volatile uint8_t *d = data_of(b);
    faulting();
    d[-1] = 1;
}

/* A write after release into a quarantined buffer faults at once. */
static void quarantined(void) {
    EXPECT(pagepool_install_fault_handler(), S_OK);
    pagepool_allocator *a = debug_allocator("c-quarantine", PAGEPOOL_DEBUG_STANDARD, 1);
    pagepool_buffer *b = NULL;
    EXPECT(pagepool_allocate_page_size_buffer(a, 8192, &b), S_OK); /* site: quarantined */
    volatile uint8_t *d = data_of(b);
    d[0] = 1;
    EXPECT(pagepool_buffer_release(b, NULL), S_OK); /* site: quarantined_release */
    faulting();
    d[100] = 1;
}

/* A 16 MiB buffer (the default largest): its last byte is writable, the
 * next one faults. */
static void big_buffer(void) {
    EXPECT(pagepool_install_fault_handler(), S_OK);
    pagepool_allocator *a = debug_allocator("c-16mib", PAGEPOOL_DEBUG_STANDARD, 0);
    pagepool_buffer *b = NULL;
    uint32_t size = 16u << 20;
    EXPECT(pagepool_allocate_page_size_buffer(a, size, &b), S_OK); /* site: big_buffer */
    volatile uint8_t *d = data_of(b);
    d[0] = 1;
    d[size - 1] = 1;
    faulting();
    d[size] = 1;
}

static pagepool_stats_ex stats_of(pagepool_allocator *a) {
    pagepool_stats_ex s;
    memset(&s, 0xab, sizeof s);
    s.size = sizeof s;
    EXPECT(pagepool_allocator_stats_ex(a, &s), S_OK);
    CHECK(s.size == sizeof s && s.reserved == 0);
    return s;
}

/* One byte past max_len, inside the page: the slack canary, found at
 * release, counted by kind; pagepool_allocator_stats_ex's versioning. */
static void past_max_len(void) {
    pagepool_allocator *a = debug_allocator("c-past-max", PAGEPOOL_DEBUG_STANDARD, 0);
    pagepool_buffer *b = NULL;
    EXPECT(pagepool_allocate_page_size_buffer(a, 100, &b), S_OK); /* site: past_max_len */
    uint8_t *d = data_of(b);
    d[100] ^= 0xff; /* changed whatever the canary byte was */
    EXPECT(pagepool_buffer_release(b, NULL), S_OK);
    pagepool_stats_ex s = stats_of(a);
    CHECK(s.corruptions == 1 && s.corruptions_slack_canary == 1);
    CHECK(s.corruptions_edge_canary == 0 && s.corruptions_poison == 0);
    CHECK(s.buffers_in_use == 0 && s.unguarded_slots == 0);
    /* Versions: a newer caller's larger struct gets zeros past our fields. */
    struct {
        pagepool_stats_ex s;
        uint64_t newer;
    } big;
    memset(&big, 0xab, sizeof big);
    big.s.size = sizeof big;
    EXPECT(pagepool_allocator_stats_ex(a, &big.s), S_OK);
    CHECK(big.s.size == sizeof big && big.newer == 0 && big.s.corruptions == 1);
    big.s.size = 8;
    EXPECT(pagepool_allocator_stats_ex(a, &big.s), E_INVALIDARG);
    EXPECT(pagepool_allocator_stats_ex(a, NULL), E_POINTER);
    s.size = sizeof s;
    EXPECT(pagepool_allocator_stats_ex(NULL, &s), E_HANDLE);
    EXPECT(pagepool_allocator_destroy(a), S_OK);
}

/* A packet (allocate_buffer) of exactly its 64-byte class: the byte before
 * it and the byte after it are red zone, checked at release. */
static void red_zone(int after) {
    pagepool_allocator *a = debug_allocator(after ? "c-rz-after" : "c-rz-before",
                                            PAGEPOOL_DEBUG_STANDARD, 0);
    pagepool_buffer *b = NULL;
    EXPECT(pagepool_allocate_buffer(a, 64, &b), S_OK); /* site: red_zone */
    uint8_t *d = data_of(b);
    if (after) {
        d[64] ^= 0xff;
    } else {
        d[-1] ^= 0xff;
    }
    EXPECT(pagepool_buffer_release(b, NULL), S_OK);
    pagepool_stats_ex s = stats_of(a);
    CHECK(s.corruptions == 1 && s.corruptions_edge_canary == 1);
    EXPECT(pagepool_allocator_destroy(a), S_OK);
}

static void red_zone_before(void) { red_zone(0); }
static void red_zone_after(void) { red_zone(1); }

/* A write after release at the standard level (one release in 64
 * poisoned): repeated until the poison check at the next hand-out finds it. */
static void poison_sampled(void) {
    pagepool_allocator *a = debug_allocator("c-poison", PAGEPOOL_DEBUG_STANDARD, 0);
    int rounds = 0;
    while (stats_of(a).corruptions_poison == 0) {
        CHECK(++rounds < 100000);
        pagepool_buffer *b = NULL;
        EXPECT(pagepool_allocate_page_size_buffer(a, 4096, &b), S_OK); /* site: poison */
        uint8_t *d = data_of(b);
        EXPECT(pagepool_buffer_release(b, NULL), S_OK); /* site: poison_release */
        d[10] = 0x42; /* after release */
    }
    pagepool_stats_ex s = stats_of(a);
    CHECK(s.corruptions == 1 && s.corruptions_poison == 1);
    printf("diag: caught after %d rounds\n", rounds);
    EXPECT(pagepool_allocator_destroy(a), S_OK);
}

/* What the report callback saw. */
static struct {
    int calls;
    uint32_t kind;
    uintptr_t address;
    char text[1024];
    void *user;
} seen;

static void on_report(void *user, uint32_t kind, const char *text, uintptr_t address) {
    seen.calls++;
    seen.kind = kind;
    seen.address = address;
    seen.user = user;
    snprintf(seen.text, sizeof seen.text, "%s", text);
}

/* The callback gets each report (and stderr none of it); NULL restores
 * stderr. */
static void callback(void) {
    int token;
    EXPECT(pagepool_set_report_callback(on_report, &token), S_OK);
    pagepool_allocator *a = debug_allocator("c-cb", PAGEPOOL_DEBUG_STANDARD, 0);
    pagepool_buffer *b = NULL;
    EXPECT(pagepool_allocate_page_size_buffer(a, 100, &b), S_OK);
    uint8_t *d = data_of(b);
    d[101] ^= 0xff;
    EXPECT(pagepool_buffer_release(b, NULL), S_OK);
    CHECK(seen.calls == 1 && seen.kind == PAGEPOOL_REPORT_SLACK_CANARY);
    CHECK(seen.address == (uintptr_t)d && seen.user == &token);
    CHECK(strstr(seen.text, "write past max_len") && strstr(seen.text, "\"c-cb\""));
    CHECK(strstr(seen.text, "offset 101 (1 past max_len)"));
    /* Back to stderr: the Rust side sees this one there. */
    EXPECT(pagepool_set_report_callback(NULL, NULL), S_OK);
    EXPECT(pagepool_allocate_page_size_buffer(a, 200, &b), S_OK);
    d = data_of(b);
    d[200] ^= 0xff;
    EXPECT(pagepool_buffer_release(b, NULL), S_OK);
    CHECK(seen.calls == 1);
    /* A leak at destroy, to the callback: kind LEAK, no one address. */
    EXPECT(pagepool_set_report_callback(on_report, NULL), S_OK);
    EXPECT(pagepool_allocate_page_size_buffer(a, 200, &b), S_OK);
    EXPECT(pagepool_allocator_destroy(a), S_OK);
    CHECK(seen.calls == 2 && seen.kind == PAGEPOOL_REPORT_LEAK && seen.address == 0);
    CHECK(strstr(seen.text, "\"c-cb\": 1 buffer (4096 bytes)"));
    EXPECT(pagepool_buffer_release(b, NULL), S_OK);
    EXPECT(pagepool_set_report_callback(NULL, NULL), S_OK);
}

/* pagepool_leak_report on request (its size protocol, its refusals), and
 * the report at destroy with buffers out. */
static void leak(void) {
    pagepool_allocator *a = debug_allocator("c-leak", PAGEPOOL_DEBUG_STANDARD, 0);
    size_t needed = 0;
    EXPECT(pagepool_leak_report(a, NULL, 0, &needed), S_OK);
    CHECK(needed > 1);
    char small[5];
    memset(small, 'x', sizeof small);
    EXPECT(pagepool_leak_report(a, small, sizeof small, NULL), S_OK);
    CHECK(strlen(small) == 4 && memcmp(small, "page", 4) == 0);
    EXPECT(pagepool_leak_report(a, NULL, 5, &needed), E_POINTER);
    EXPECT(pagepool_leak_report(NULL, small, sizeof small, &needed), E_HANDLE);

    pagepool_buffer *b[3] = {0};
    EXPECT(pagepool_allocate_page_size_buffer(a, 4096, &b[0]), S_OK); /* site: leak_a */
    EXPECT(pagepool_allocate_page_size_buffer(a, 4000, &b[1]), S_OK); /* site: leak_b */
    EXPECT(pagepool_leak_report(a, NULL, 0, &needed), S_OK);
    char *text = malloc(needed);
    CHECK(text != NULL);
    size_t again = 0;
    EXPECT(pagepool_leak_report(a, text, needed, &again), S_OK);
    CHECK(again == needed && strlen(text) == needed - 1);
    CHECK(strstr(text, "2 buffers (8192 bytes)"));
    printf("%s", text);
    free(text);

    EXPECT(pagepool_allocate_page_size_buffer(a, 100, &b[2]), S_OK); /* site: leak_c */
    EXPECT(pagepool_allocator_destroy(a), S_OK); /* reports 3 buffers */
    for (int i = 0; i < 3; i++) {
        EXPECT(pagepool_buffer_release(b[i], NULL), S_OK);
    }
}

/* A double release and a use after the last release: E_HANDLE, and a
 * report naming the buffer; also once the handle's entry is reused. */
static void double_release(void) {
    pagepool_allocator *a = debug_allocator("c-double", PAGEPOOL_DEBUG_STANDARD, 0);
    pagepool_buffer *b = NULL;
    EXPECT(pagepool_allocate_page_size_buffer(a, 4096, &b), S_OK); /* site: double */
    uint8_t *d = data_of(b);
    EXPECT(pagepool_buffer_release(b, NULL), S_OK); /* site: double_release */
    EXPECT(pagepool_buffer_release(b, NULL), E_HANDLE); /* to stderr */
    EXPECT(pagepool_set_report_callback(on_report, NULL), S_OK);
    uint8_t *none = NULL;
    EXPECT(pagepool_buffer_get_buffer(b, &none), E_HANDLE);
    CHECK(seen.calls == 1 && seen.kind == PAGEPOOL_REPORT_STALE_HANDLE);
    CHECK(seen.address == (uintptr_t)d);
    CHECK(strstr(seen.text, "pagepool_buffer_get_buffer with stale buffer handle"));
    CHECK(strstr(seen.text, "(a use after the last release)"));
    CHECK(strstr(seen.text, "\"c-double\", max_len 4096"));
    /* The entry is reused by a new buffer: the old handle is still known. */
    pagepool_buffer *c = NULL;
    EXPECT(pagepool_allocate_page_size_buffer(a, 100, &c), S_OK);
    CHECK(c != b);
    EXPECT(pagepool_buffer_set_length(b, 1), E_HANDLE);
    CHECK(seen.calls == 2 && strstr(seen.text, "pagepool_buffer_set_length"));
    /* Forged and wrong-kind handles are refused without a report. */
    EXPECT(pagepool_buffer_release((pagepool_buffer *)0x1234, NULL), E_HANDLE);
    EXPECT(pagepool_buffer_release((pagepool_buffer *)a, NULL), E_HANDLE);
    CHECK(seen.calls == 2);
    EXPECT(pagepool_buffer_release(c, NULL), S_OK);
    EXPECT(pagepool_set_report_callback(NULL, NULL), S_OK);
    EXPECT(pagepool_allocator_destroy(a), S_OK);
}

static volatile uint8_t *stale;

static void *write_stale(void *arg) {
    (void)arg;
    faulting();
    stale[8] = 1;
    return NULL;
}

/* A write after release from another thread, into the quarantine: the
 * fault is reported from that thread. */
static void other_thread(void) {
    EXPECT(pagepool_install_fault_handler(), S_OK);
    pagepool_allocator *a = debug_allocator("c-thread", PAGEPOOL_DEBUG_STANDARD, 1);
    pagepool_buffer *b = NULL;
    EXPECT(pagepool_allocate_page_size_buffer(a, 4096, &b), S_OK); /* site: other_thread */
    stale = data_of(b);
    EXPECT(pagepool_buffer_release(b, NULL), S_OK); /* site: other_thread_release */
    pthread_t t;
    CHECK(pthread_create(&t, NULL, write_stale, NULL) == 0);
    pthread_join(t, NULL);
}

/* PAGEPOOL_ON_CORRUPTION_ABORT: the report, then abort(). */
static void abort_on_corruption(void) {
    pagepool_config c;
    EXPECT(pagepool_config_init(&c, sizeof c), S_OK);
    c.on_corruption = PAGEPOOL_ON_CORRUPTION_ABORT;
    pagepool_allocator *a = NULL;
    EXPECT(pagepool_allocator_create_ex("c-abort", &c, &a), S_OK);
    pagepool_buffer *b = NULL;
    EXPECT(pagepool_allocate_page_size_buffer(a, 100, &b), S_OK);
    data_of(b)[100] ^= 0xff; /* changed whatever the canary byte was */
    faulting();
    pagepool_buffer_release(b, NULL);
}

/* The plain functions, called around the header's macros (as through
 * dlsym): their sites are return addresses. */
static void plain_calls(void) {
    pagepool_allocator *a = debug_allocator("c-plain", PAGEPOOL_DEBUG_STANDARD, 0);
    pagepool_buffer *b = NULL;
    EXPECT((pagepool_allocate_page_size_buffer)(a, 4096, &b), S_OK);
    pagepool_buffer *p = NULL;
    EXPECT((pagepool_allocate_buffer)(a, 100, &p), S_OK);
    char text[4096];
    EXPECT(pagepool_leak_report(a, text, sizeof text, NULL), S_OK);
    printf("%s", text);
    EXPECT((pagepool_buffer_release)(p, NULL), S_OK);
    EXPECT((pagepool_buffer_release)(b, NULL), S_OK);
    EXPECT((pagepool_buffer_release)(b, NULL), E_HANDLE); /* to stderr */
    /* A NULL file records no site. */
    EXPECT(pagepool_allocate_page_size_buffer_at(a, 4096, NULL, 0, NULL, &b), S_OK);
    EXPECT(pagepool_leak_report(a, text, sizeof text, NULL), S_OK);
    printf("%s", text);
    EXPECT(pagepool_buffer_release_at(b, NULL, 0, NULL, NULL), S_OK);
    EXPECT(pagepool_allocator_destroy(a), S_OK);
}

static const struct {
    const char *name;
    void (*run)(void);
} cases[] = {
    {"config", config},
    {"next_page", next_page},
    {"byte_before", byte_before},
    {"quarantined", quarantined},
    {"big_buffer", big_buffer},
    {"past_max_len", past_max_len},
    {"red_zone_before", red_zone_before},
    {"red_zone_after", red_zone_after},
    {"poison_sampled", poison_sampled},
    {"callback", callback},
    {"leak", leak},
    {"double_release", double_release},
    {"other_thread", other_thread},
    {"abort_on_corruption", abort_on_corruption},
    {"plain_calls", plain_calls},
};

int main(int argc, char **argv) {
    /* A crash case must not leave a core file behind. */
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
    page = (size_t)sysconf(_SC_PAGESIZE);
    if (argc != 2) {
        fprintf(stderr, "usage: diag_test CASE\n");
        return 2;
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (strcmp(argv[1], cases[i].name) == 0) {
            cases[i].run();
            printf("diag: %s ok\n", argv[1]);
            return 0;
        }
    }
    fprintf(stderr, "diag: no case %s\n", argv[1]);
    return 2;
}
