/* The native cache index: key -> immutable entry, bounded in entries and bytes.
 *
 * Locking: one pthread rwlock per index, writer-preferring. Readers (UDP workers) take it once
 * per recvmmsg batch, so its cost is amortised over up to a batch of packets; writers (the Python
 * cache plugin, one insert per stored answer) wait at most one batch. A seqlock would let readers
 * run lock-free, but entries are variable-length and freed on replace/remove, so readers could
 * copy from freed memory without an epoch/RCU reclamation scheme; the rwlock keeps that simple.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "nld.h"

int nld_index_init(nld_index *ix, size_t capacity, size_t max_bytes) {
    memset(ix, 0, sizeof(*ix));
    if (capacity < 1 || capacity > ((size_t)1 << 26))
        return EINVAL;
    size_t n = 16;
    /* Load factor <= 3/4 when full (linear probing stays short; backward-shift deletion keeps it
     * free of tombstones): 16 bytes of slot per entry, not 32, for caches that are always full. */
    while (n < capacity + capacity / 3)
        n <<= 1;
    ix->slots = calloc(n, sizeof(nld_slot));
    if (ix->slots == NULL)
        return ENOMEM;
    ix->mask = n - 1;
    ix->capacity = capacity;
    ix->max_bytes = max_bytes;
    uint64_t k[2] = {0x0123456789abcdefULL, 0xfedcba9876543210ULL};
    if (getrandom(k, sizeof(k), GRND_NONBLOCK) != (ssize_t)sizeof(k)) {
        /* Early boot without entropy: keep the fixed key; probing stays correct, just predictable. */
    }
    ix->k0 = k[0];
    ix->k1 = k[1];
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&ix->lock, &a);
    pthread_rwlockattr_destroy(&a);
    if (rc != 0) {
        free(ix->slots);
        ix->slots = NULL;
    }
    return rc;
}

static void free_all(nld_index *ix) {
    for (size_t i = 0; i <= ix->mask; i++) {
        free(ix->slots[i].e);
        ix->slots[i].e = NULL;
    }
    ix->count = 0;
    ix->bytes = 0;
}

void nld_index_destroy(nld_index *ix) {
    if (ix->slots == NULL)
        return;
    free_all(ix);
    free(ix->slots);
    ix->slots = NULL;
    free(ix->fwd); /* one block (nx.h) */
    ix->fwd = NULL;
    pthread_rwlock_destroy(&ix->lock);
}

int nld_key_valid(const uint8_t *key, size_t n) {
    size_t off = 0;
    while (off < n && key[off] != 0) {
        size_t len = key[off];
        if (len > 63 || off + 1 + len >= n)
            return 0;
        for (size_t i = off + 1; i <= off + len; i++)
            if (key[i] == 0 || (key[i] >= 'A' && key[i] <= 'Z'))
                return 0;
        off += 1 + len;
    }
    if (off >= n || off + 1 > NLD_MAX_NAME)
        return 0;
    size_t rest = n - off - 1; /* after the root label: type, class and maybe the flag byte */
    if (rest == 4)
        return 1;
    return rest == 5 && key[n - 1] >= 1 && key[n - 1] <= 3;
}

/* The eight heads as entry.Entry builds them from heads[0] and whether AD answers an AD query. */
static void heads_expand(const uint8_t head0[NLD_HEAD_LEN], int adq, uint8_t out[NLD_HEADS][NLD_HEAD_LEN]) {
    for (unsigned idx = 0; idx < NLD_HEADS; idx++) {
        memcpy(out[idx], head0, NLD_HEAD_LEN);
        if (idx & 1)
            out[idx][0] |= 0x01; /* RD */
        if ((idx & 2) && adq)
            out[idx][1] |= 0x20; /* AD */
        if (idx & 4) {
            unsigned ar = ((unsigned)out[idx][8] << 8 | out[idx][9]) + 1;
            out[idx][8] = (uint8_t)(ar >> 8);
            out[idx][9] = (uint8_t)ar;
        }
    }
}

void nld_e_head(const nld_entry *e, unsigned idx, uint8_t out[NLD_HEAD_LEN]) {
    idx &= NLD_HEADS - 1;
    if (e->fl & NLD_FL_HEADS) {
        memcpy(out, nld_e_body(e) + e->bodylen + e->qclen + idx * NLD_HEAD_LEN, NLD_HEAD_LEN);
        return;
    }
    memcpy(out, e->head, NLD_HEAD_LEN);
    if (idx & 1)
        out[0] |= 0x01;
    if ((idx & 2) && (e->fl & NLD_FL_ADQ))
        out[1] |= 0x20;
    if (idx & 4) {
        unsigned ar = ((unsigned)out[8] << 8 | out[9]) + 1;
        out[8] = (uint8_t)(ar >> 8);
        out[9] = (uint8_t)ar;
    }
}

nld_entry *nld_entry_new(const uint8_t *key, size_t keylen, const uint8_t *heads, size_t headslen,
                         const uint8_t *body, size_t bodylen, const uint16_t *offs, size_t noffs,
                         double stored, uint32_t orig, unsigned fl, const uint8_t *qcased,
                         size_t qclen, const char **why) {
    if (!nld_key_valid(key, keylen)) {
        *why = "not a fast-path cache key";
        return NULL;
    }
    if (qclen) {
        /* The key is name, type, class and an optional flag byte; the question is the first three. */
        const uint8_t *z = memchr(key, 0, keylen);
        size_t qlen = z == NULL ? 0 : (size_t)(z - key) + 5;
        int same = qcased != NULL && qclen == qlen && qlen <= keylen;
        for (size_t i = 0; same && i < qlen; i++) {
            uint8_t c = qcased[i];
            same = ((i + 4 < qlen && c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c) == key[i];
        }
        if (!same) {
            *why = "the cased question does not match the key";
            return NULL;
        }
    }
    if (headslen != NLD_HEADS * NLD_HEAD_LEN) {
        *why = "heads must be 8 x 10 bytes";
        return NULL;
    }
    if (bodylen > NLD_MAX_BODY || noffs > bodylen / 4) {
        *why = "body or TTL offsets too long";
        return NULL;
    }
    for (size_t i = 0; i < noffs; i++) {
        if ((size_t)offs[i] + 4 > bodylen) {
            *why = "TTL offset outside the body";
            return NULL;
        }
    }
    if (!(stored == stored) || stored > 1e15 || stored < -1e15) {
        *why = "stored time out of range";
        return NULL;
    }
    if (fl & ~(unsigned)(NLD_FL_KEEPTTL | NLD_FL_AA | NLD_FL_SHUFFLE)) {
        *why = "unknown entry flags";
        return NULL;
    }
    uint8_t derived[NLD_HEADS][NLD_HEAD_LEN];
    int adq = (heads[2 * NLD_HEAD_LEN + 1] & 0x20) != 0;
    heads_expand(heads, adq, derived);
    int compact = memcmp(derived, heads, sizeof(derived)) == 0;
    nld_lb *lb = NULL;
    size_t lbsize = 0;
    if ((fl & NLD_FL_SHUFFLE) && nld_lb_plan(key, keylen, heads, body, bodylen, &lb, &lbsize, why) < 0)
        return NULL;
    /* The plan goes last (nld_e_lb), at an even offset: its fields are uint16. */
    size_t at = noffs * 2 + keylen + bodylen + qclen + (compact ? 0 : sizeof(derived));
    size_t lbat = (at + 1) & ~(size_t)1;
    size_t size = offsetof(nld_entry, data) + (lb != NULL ? lbat + lbsize : at);
    nld_entry *e = malloc(size);
    if (e == NULL) {
        free(lb);
        *why = "out of memory";
        return NULL;
    }
    e->stored = stored;
    e->orig = orig;
    e->keylen = (uint16_t)keylen;
    e->bodylen = (uint16_t)bodylen;
    e->noffs = (uint16_t)noffs;
    e->qclen = (uint16_t)qclen;
    e->fl = (uint8_t)(fl | (adq ? NLD_FL_ADQ : 0) | (compact ? 0 : NLD_FL_HEADS) | (lb != NULL ? NLD_FL_LB : 0));
    e->stale = 0;
    e->cap = 65535;
    e->stat = 0;
    memcpy(e->head, heads, NLD_HEAD_LEN);
    e->size = (uint32_t)size;
    uint8_t *p = e->data;
    if (noffs)
        memcpy(p, offs, noffs * 2);
    p += noffs * 2;
    memcpy(p, key, keylen);
    p += keylen;
    if (bodylen)
        memcpy(p, body, bodylen);
    p += bodylen;
    if (qclen) {
        memcpy(p, qcased, qclen);
        p += qclen;
    }
    if (!compact)
        memcpy(p, heads, sizeof(derived));
    if (lb != NULL) {
        if (lbat != at)
            e->data[at] = 0;
        memcpy(e->data + lbat, lb, lbsize);
        free(lb);
    }
    return e;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t find(const nld_index *ix, uint64_t h, const uint8_t *key, size_t n) {
    size_t i = h & ix->mask;
    for (;;) {
        const nld_slot *s = &ix->slots[i];
        if (s->e == NULL)
            return i;
        if (s->hash == h && s->e->keylen == n && memcmp(nld_e_key(s->e), key, n) == 0)
            return i;
        i = (i + 1) & ix->mask;
    }
}

const nld_entry *nld_index_get(const nld_index *ix, const uint8_t *key, size_t n) {
    if (ix->count == 0)
        return NULL;
    uint64_t h = nld_siphash13(ix->k0, ix->k1, key, n);
    return ix->slots[find(ix, h, key, n)].e;
}

int nld_index_insert(nld_index *ix, nld_entry *e) {
    const uint8_t *ek = nld_e_key(e);
    uint64_t h = nld_siphash13(ix->k0, ix->k1, ek, e->keylen);
    nld_entry *old = NULL;
    int rc = 0;
    pthread_rwlock_wrlock(&ix->lock);
    size_t i = find(ix, h, ek, e->keylen);
    old = ix->slots[i].e;
    size_t bytes = ix->bytes - (old ? old->size : 0) + e->size;
    if ((old == NULL && ix->count >= ix->capacity) || (ix->max_bytes && bytes > ix->max_bytes)) {
        rc = -1;
        old = e; /* refused: freed below, the old entry stays */
    } else {
        ix->slots[i].hash = h;
        ix->slots[i].e = e;
        ix->bytes = bytes;
        if (old == NULL)
            ix->count++;
    }
    pthread_rwlock_unlock(&ix->lock);
    free(old);
    return rc;
}

/* Backward-shift deletion: pull later members of the probe run into the hole. */
static void delete_at(nld_index *ix, size_t i) {
    size_t j = i;
    for (;;) {
        j = (j + 1) & ix->mask;
        nld_slot *s = &ix->slots[j];
        if (s->e == NULL)
            break;
        size_t home = s->hash & ix->mask;
        /* s may move to i only if its home is not cyclically within (i, j]. */
        int stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (stays)
            continue;
        ix->slots[i] = *s;
        i = j;
    }
    ix->slots[i].e = NULL;
    ix->slots[i].hash = 0;
}

int nld_index_remove(nld_index *ix, const uint8_t *key, size_t n) {
    uint64_t h = nld_siphash13(ix->k0, ix->k1, key, n);
    nld_entry *old;
    pthread_rwlock_wrlock(&ix->lock);
    size_t i = find(ix, h, key, n);
    old = ix->slots[i].e;
    if (old != NULL) {
        ix->bytes -= old->size;
        ix->count--;
        delete_at(ix, i);
    }
    pthread_rwlock_unlock(&ix->lock);
    free(old);
    return old != NULL;
}

void nld_index_clear(nld_index *ix) {
    pthread_rwlock_wrlock(&ix->lock);
    free_all(ix);
    pthread_rwlock_unlock(&ix->lock);
}

size_t nld_index_len(nld_index *ix) {
    pthread_rwlock_rdlock(&ix->lock);
    size_t n = ix->count;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

void nld_index_rdlock(nld_index *ix) { pthread_rwlock_rdlock(&ix->lock); }

void nld_index_unlock(nld_index *ix) { pthread_rwlock_unlock(&ix->lock); }
