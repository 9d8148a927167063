/* ThreadSanitizer stress for the index's locking: two readers answer packets (as UDP workers do,
 * one read lock per batch) while a writer inserts, replaces, removes and clears (as the Python
 * cache does). Every other entry is a loadbalance one the readers shuffle with their own PRNG.
 * Readers also answer the entries stale and claim their refresh while the writer clears it.
 * Run by `make fuzz` for a few seconds; any data race or a torn reply fails it.
 */
#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nld.h"

static nld_index ix;
static atomic_int done;
static const uint8_t KEY[] = {7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'o', 'r', 'g', 0, 0, 1, 0, 1};
static const uint8_t QUERY[] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7, 'e', 'x', 'a', 'm', 'p',
                                'l', 'e', 3, 'o', 'r', 'g', 0, 0, 1, 0, 1};

static nld_entry *entry(uint8_t fill, size_t bodylen) {
    uint8_t heads[NLD_HEADS * NLD_HEAD_LEN], body[256];
    memset(heads, fill, sizeof(heads));
    memset(body, fill, bodylen);
    uint16_t offs[1] = {0};
    const char *why = NULL;
    nld_entry *e = nld_entry_new(KEY, sizeof(KEY), heads, sizeof(heads), body, bodylen, offs, 1, 0.0, 100,
                                 0, NULL, 0, &why);
    assert(e != NULL);
    return e;
}

/* n A records owned by the question, rdata fill fill fill i: shuffled per reply. */
static nld_entry *lb_entry(uint8_t fill, unsigned n) {
    uint8_t heads[NLD_HEADS * NLD_HEAD_LEN], body[16 * 16];
    uint16_t offs[16];
    for (unsigned i = 0; i < NLD_HEADS; i++) {
        uint8_t h[NLD_HEAD_LEN] = {0x84, 0x80, 0, 1, 0, (uint8_t)n, 0, 0, 0, (uint8_t)(i >= 4)};
        memcpy(heads + i * NLD_HEAD_LEN, h, NLD_HEAD_LEN);
    }
    for (unsigned i = 0; i < n; i++) {
        uint8_t r[16] = {0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 100, 0, 4, fill, fill, fill, (uint8_t)i};
        memcpy(body + 16 * i, r, 16);
        offs[i] = (uint16_t)(16 * i + 6);
    }
    const char *why = NULL;
    nld_entry *e = nld_entry_new(KEY, sizeof(KEY), heads, sizeof(heads), body, 16 * n, offs, n, 0.0, 100,
                                 NLD_FL_SHUFFLE, NULL, 0, &why);
    assert(e != NULL && nld_e_lb(e) != NULL);
    return e;
}

static void check_lb(const uint8_t *out, size_t len) {
    size_t qend = sizeof(QUERY);
    unsigned n = out[7], seen = 0;
    assert(len == qend + 16 * n);
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *r = out + qend + 16 * i;
        assert(r[0] == 0xC0 && r[12] == out[qend + 12] && r[13] == r[12] && r[15] < n);
        seen |= 1u << r[15];
    }
    assert(seen == (1u << n) - 1); /* each record once */
}

static void *reader(void *arg) {
    uint64_t rng = (uint64_t)(uintptr_t)arg;
    uint8_t out[NLD_REPLY_MAX], scratch[NLD_REPLY_MAX];
    unsigned long hits = 0;
    while (!atomic_load(&done)) {
        nld_index_rdlock(&ix);
        for (int i = 0; i < 32; i++) {
            nld_hit h;
            if (nld_match(&ix, QUERY, sizeof(QUERY), 5.0, 0, &h)) {
                nld_render(&h, QUERY, out);
                if (nld_e_lb(h.e) != NULL) {
                    nld_shuffle(&h, out, &rng, scratch);
                    check_lb(out, h.len);
                    hits++;
                    continue;
                }
                /* One entry's bytes, never a mix: head and body carry the same fill byte. */
                uint8_t fill = out[2];
                size_t qend = sizeof(QUERY);
                for (size_t j = qend + 4; j < h.len; j++)
                    assert(out[j] == fill);
                hits++;
            }
            /* serve_stale: the same entries 50 s past expiry, and the refresh set the writer clears */
            if (!nld_match(&ix, QUERY, sizeof(QUERY), 150.0, 0, &h) && nld_stale(&ix, &h, 150.0)) {
                assert(h.ttl == 3);
                nld_render(&h, QUERY, out);
                if (nld_e_lb(h.e) != NULL) {
                    nld_shuffle(&h, out, &rng, scratch);
                    check_lb(out, h.len);
                }
                (void)nld_pending_take(&ix, h.e);
                hits++;
            }
        }
        nld_index_unlock(&ix);
    }
    return (void *)hits;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    if (nld_index_init(&ix, 64, 0) != 0 || nld_stale_set(&ix, 1, 100.0, 3) != 0)
        return 1;
    pthread_t r[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&r[i], NULL, reader, (void *)(uintptr_t)(i + 1));
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long writes = 0;
    do {
        uint8_t fill = (uint8_t)(writes % 200 + 1);
        nld_entry *e = writes % 2 ? lb_entry(fill, 2 + writes % 14) : entry(fill, 8 + writes % 200);
        e->stale = 1;
        nld_index_insert(&ix, e);
        nld_pending_clear(&ix, KEY, sizeof(KEY)); /* Python's refresh_done: no lock, a CAS */
        if (writes % 7 == 0)
            nld_index_remove(&ix, KEY, sizeof(KEY));
        if (writes % 101 == 0)
            nld_index_clear(&ix);
        writes++;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) * 1e-9 < seconds);
    atomic_store(&done, 1);
    unsigned long hits = 0;
    for (int i = 0; i < 2; i++) {
        void *h;
        pthread_join(r[i], &h);
        hits += (unsigned long)h;
    }
    nld_index_destroy(&ix);
    printf("stress_index: %lu writes, %lu hits, no race\n", writes, hits);
    return hits > 0 && writes > 0 ? 0 : 1;
}
