/* libFuzzer harness for the native hot path: nld_match/nld_render on arbitrary packets, and the
 * index (insert, replace, remove, lookup, full table) checked against a shadow list of keys.
 *
 * Input: ctl(1) orig(2) now(2) bodylen/2(1) noffs(1) body offs(noffs) | query (the rest).
 * ctl bit 0 keepttl, bit 1 tcp, bits 2-3 how many extra keys to churn, bits 4-7 seed for heads.
 * An odd seed (ctl bit 4) makes a loadbalance entry (NLD_FL_SHUFFLE): its heads carry the
 * records the body holds, split into sections by orig's low bits, and every shuffled reply is
 * checked against the plain one: same bytes outside the runs, each run a permutation of its
 * records, the OPT moved whole. Seed bit 1: a loadbalance entry's heads kept whole (the plan then
 * follows them), else heads as the cache makes them, kept as one header (bits 2-3: AD).
 * Half the entries (orig bit 1 clear) are in a serve_stale block (slot 1: window and TTL from the
 * time bytes): an expired one inside the window must come back from nld_stale, never a fresh one.
 * Build and run: `make fuzz` (FUZZ_SECONDS=60 by default).
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "nld.h"

/* The key nld_match builds for q, built the slow, obvious way (so a hit is likely). */
static size_t query_key(const uint8_t *q, size_t n, uint8_t *key) {
    if (n < 17)
        return 0;
    size_t z = 12;
    while (z < n && q[z] != 0)
        z++;
    size_t qend = z + 5;
    if (z >= n || qend > n || qend - 12 + 1 > NLD_MAX_KEY)
        return 0;
    size_t len = qend - 12;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = q[12 + i];
        key[i] = (i < len - 4 && c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
    }
    int cd = (q[3] & 0x10) != 0;
    int do_bit = n >= qend + 11 && (q[qend + 7] & 0x80);
    if (cd || do_bit)
        key[len++] = (uint8_t)(do_bit | (cd << 1));
    return len;
}

/* Records in body as a plain walk sees them (names: labels, then a zero or a pointer), and
 * their TTL offsets (at most 256) in ttls when not NULL. */
static size_t count_records(const uint8_t *b, size_t n, uint16_t *ttls) {
    size_t off = 0, k = 0;
    while (off < n && k < 256) {
        while (off < n && b[off] != 0 && (b[off] & 0xC0) != 0xC0)
            off += 1 + (size_t)b[off];
        if (off >= n)
            return k;
        off += b[off] == 0 ? 1 : 2;
        if (off + 10 > n)
            return k;
        if (ttls != NULL)
            ttls[k] = (uint16_t)(off + 4);
        off += 10 + (((size_t)b[off + 8] << 8) | b[off + 9]);
        if (off > n)
            return k;
        k++;
    }
    return k;
}

/* Heads as the cache writes them: QR|AA|RA (+RD, AD), rcode, QD=1, the sections, +1 AR for OPT. */
static void lb_heads(uint8_t *heads, const uint8_t *body, size_t bodylen, uint32_t orig) {
    size_t t = count_records(body, bodylen, NULL);
    size_t ns = (orig & 3) < t ? (orig & 3) : t;
    size_t ar = ((orig >> 2) & 3) < t - ns ? ((orig >> 2) & 3) : t - ns;
    size_t an = t - ns - ar;
    for (unsigned i = 0; i < NLD_HEADS; i++) {
        uint8_t *h = heads + i * NLD_HEAD_LEN;
        h[0] = (uint8_t)(0x84 | (i & 1));
        h[1] = (uint8_t)(0x80 | ((i & 2) ? 0x20 : 0) | ((orig >> 4) & 1 ? 3 : 0));
        h[2] = 0;
        h[3] = 1;
        h[4] = (uint8_t)(an >> 8);
        h[5] = (uint8_t)an;
        h[6] = (uint8_t)(ns >> 8);
        h[7] = (uint8_t)ns;
        h[8] = (uint8_t)((ar + (i >= 4)) >> 8);
        h[9] = (uint8_t)(ar + (i >= 4));
    }
}

static nld_entry *make(const uint8_t *key, size_t keylen, const uint8_t *body, size_t bodylen,
                       const uint16_t *offs, size_t noffs, double stored, uint32_t orig, unsigned fl,
                       uint8_t seed, const uint8_t *qcased, size_t qclen) {
    uint8_t heads[NLD_HEADS * NLD_HEAD_LEN];
    for (size_t i = 0; i < sizeof(heads); i++)
        heads[i] = (uint8_t)(seed * 31 + i);
    if (fl & NLD_FL_SHUFFLE) {
        lb_heads(heads, body, bodylen, orig);
        if (seed & 2) /* AD without AD asked: heads that follow no head_index rule, kept whole */
            heads[NLD_HEAD_LEN + 1] |= 0x20;
    } else if (seed & 2) {
        /* Heads as the cache makes them (entry.head_index: RD, AD if asked, +1 additional record
         * for the OPT), which the index keeps as one header; the others are kept whole. */
        heads[0] &= 0xFE;
        heads[1] &= (seed & 4) ? 0xFF : 0xDF;
        for (unsigned idx = 1; idx < NLD_HEADS; idx++) {
            uint8_t *h = heads + idx * NLD_HEAD_LEN;
            memcpy(h, heads, NLD_HEAD_LEN);
            if (idx & 1)
                h[0] |= 0x01;
            if ((idx & 2) && (seed & 8))
                h[1] |= 0x20;
            if (idx & 4) {
                unsigned ar = ((unsigned)h[8] << 8 | h[9]) + 1;
                h[8] = (uint8_t)(ar >> 8);
                h[9] = (uint8_t)ar;
            }
        }
    }
    const char *why = NULL;
    nld_entry *e = nld_entry_new(key, keylen, heads, sizeof(heads), body, bodylen, offs, noffs, stored, orig,
                                 fl, qcased, qclen, &why);
    assert(e != NULL || why != NULL);
    if (e != NULL) { /* the compact layout: everything found from the lengths, inside the entry */
        const nld_lb *lb = nld_e_lb(e);
        const uint8_t *end = (const uint8_t *)e + e->size;
        assert(memcmp(nld_e_key(e), key, keylen) == 0 && memcmp(nld_e_body(e), body, bodylen) == 0);
        assert(nld_e_body(e) + bodylen + e->qclen <= end);
        if (lb != NULL) {
            assert((fl & NLD_FL_SHUFFLE) && ((uintptr_t)lb & 1) == 0);
            size_t nrec = 0;
            for (unsigned k = 0; k < lb->nruns; k++)
                nrec += lb->runs[k].n + 1u;
            assert((const uint8_t *)(lb->offs + nrec) == end);
        }
        for (unsigned idx = 0; idx < NLD_HEADS; idx++) {
            uint8_t h[NLD_HEAD_LEN];
            nld_e_head(e, idx, h);
            assert(memcmp(h, heads + idx * NLD_HEAD_LEN, NLD_HEAD_LEN) == 0);
        }
    }
    return e;
}

/* The length of the record at p (a walk nld_lb_plan accepted, so it is well formed). */
static size_t record_len(const uint8_t *p) {
    size_t off = 0;
    while (p[off] != 0 && (p[off] & 0xC0) != 0xC0)
        off += 1 + (size_t)p[off];
    off += p[off] == 0 ? 1 : 2;
    return off + 10 + (((size_t)p[off + 8] << 8) | p[off + 9]);
}

/* shuf is plain with each run permuted and (EDNS) the OPT moved in front of body[opt_at]. */
static void check_shuffled(const nld_hit *h, const uint8_t *plain, const uint8_t *shuf) {
    const nld_entry *e = h->e;
    const nld_lb *lb = nld_e_lb(e);
    size_t base = h->qend, bl = e->bodylen;
    assert(memcmp(plain, shuf, base) == 0);
    uint8_t *undo = malloc(h->len);
    assert(undo != NULL);
    memcpy(undo, shuf, h->len);
    if (h->edns && lb->opt_at < bl) {
        assert(memcmp(shuf + base + lb->opt_at, plain + base + bl, NLD_OPT_LEN) == 0);
        memmove(undo + base + lb->opt_at, shuf + base + lb->opt_at + NLD_OPT_LEN, bl - lb->opt_at);
        memcpy(undo + base + bl, plain + base + bl, NLD_OPT_LEN);
    }
    for (unsigned k = 0; k < lb->nruns; k++) {
        const uint16_t *o = lb->offs + lb->runs[k].first;
        unsigned n = lb->runs[k].n;
        assert(n >= 2 && n <= NLD_LB_MAX_RECS && o[0] < o[n] && o[n] <= bl);
        uint8_t used[NLD_LB_MAX_RECS] = {0};
        size_t pos = o[0];
        for (unsigned i = 0; i < n; i++) { /* each record of the shuffled run is one of the plain run */
            size_t len = record_len(undo + base + pos);
            unsigned j = 0;
            while (j < n && (used[j] || (size_t)(o[j + 1] - o[j]) != len ||
                             memcmp(plain + base + o[j], undo + base + pos, len) != 0))
                j++;
            assert(j < n);
            used[j] = 1;
            pos += len;
        }
        assert(pos == o[n]);
        memcpy(undo + base + o[0], plain + base + o[0], (size_t)(o[n] - o[0]));
    }
    assert(memcmp(undo, plain, h->len) == 0); /* nothing else moved */
    free(undo);
}

static uint64_t rng = 0x853c49e6748fea9bULL;

static void check_reply(const nld_index *ix, const uint8_t *q, size_t n, double now, int tcp) {
    nld_hit h;
    if (!nld_match(ix, q, n, now, tcp, &h)) {
        /* serve_stale: only an expired entry inside its window, answered with the slot's TTL */
        if (!nld_stale(ix, &h, now))
            return;
        assert(h.expired && h.e->stale != 0 && h.ttl == ix->stale[h.e->stale].ttl);
        assert(now - (h.e->stored + (double)h.e->orig) < ix->stale[h.e->stale].window);
    } else {
        assert(!h.expired && nld_stale(ix, &h, now) == 0); /* a fresh hit is never stale */
    }
    assert(h.len <= NLD_REPLY_MAX && h.qend <= n);
    assert(tcp || h.len <= 512 || h.len <= 65535);
    uint8_t *out = malloc(h.len); /* exact size: ASan catches any write past it */
    assert(out != NULL);
    nld_render(&h, q, out);
    assert(out[0] == q[0] && out[1] == q[1]);
    assert(memcmp(out + 12, q + 12, h.qend - 12) == 0);
    if (h.edns) /* the OPT echoes the client's size, never above the entry's bufsize cap */
        assert((((unsigned)out[h.len - 8] << 8) | out[h.len - 7]) <= h.e->cap);
    if (nld_e_lb(h.e) != NULL) {
        uint8_t *shuf = malloc(h.len), *scratch = malloc(h.len);
        assert(shuf != NULL && scratch != NULL);
        for (int round = 0; round < 3; round++) {
            nld_render(&h, q, shuf);
            nld_shuffle(&h, shuf, &rng, scratch);
            check_shuffled(&h, out, shuf);
        }
        free(shuf);
        free(scratch);
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 7)
        return 0;
    uint8_t ctl = data[0];
    uint32_t orig = ((uint32_t)data[1] << 8) | data[2];
    double now = 1000.0 + (double)(((unsigned)data[3] << 8) | data[4]) / 64.0 - 200.0;
    size_t bodylen = (size_t)data[5] * 2, noffs = data[6];
    size_t off = 7;
    if (size - off < bodylen)
        bodylen = size - off;
    const uint8_t *body = data + off;
    off += bodylen;
    uint16_t offs[256];
    size_t k = 0;
    for (; k < noffs && off < size; k++, off++)
        offs[k] = bodylen >= 4 ? (uint16_t)(data[off] % (bodylen - 3)) : data[off];
    noffs = k;
    const uint8_t *q = data + off;
    size_t n = size - off;

    nld_index ix;
    if (nld_index_init(&ix, 8, 1 << 16) != 0)
        return 0;
    ix.k0 = 1; /* reproducible probe sequences for a given input */
    ix.k1 = 2;
    /* serve_stale: a window of 0.25..64 s and a response TTL from the time bytes (now's range
     * runs from 200 s before the store to 823 s after it, so entries expire inside and past it). */
    assert(nld_stale_set(&ix, 1, (double)((data[4] & 0xFF) + 1) / 4.0, (uint32_t)data[3] * 7) == 0);
    assert(nld_stale_set(&ix, 0, 1.0, 0) != 0 && nld_stale_set(&ix, NLD_STALE_CFGS, 1.0, 0) != 0);
    uint8_t key[NLD_MAX_KEY];
    size_t keylen = query_key(q, n, key);
    /* Half the time the entry keeps the query's own case as its stored question (Entry.q). */
    const uint8_t *zk = keylen ? memchr(key, 0, keylen) : NULL;
    size_t qclen = (ctl & 8) && zk != NULL ? (size_t)(zk - key) + 5 : 0;
    if (qclen > n - 12 || n < 12)
        qclen = 0;
    unsigned fl = (ctl & 1) | ((ctl & 0x10) ? NLD_FL_SHUFFLE : 0);
    if (fl & NLD_FL_SHUFFLE) /* the cache patches exactly the TTL fields (a shuffle moves them) */
        noffs = count_records(body, bodylen, offs);
    nld_entry *e = make(key, keylen, body, bodylen, offs, noffs, 1000.0, orig, fl, ctl >> 4,
                        qclen ? q + 12 : NULL, qclen);
    int present = 0;
    if (e != NULL && (orig & 1)) /* odd TTLs: a bufsize block's cap, 512..4111 */
        e->cap = (uint16_t)(512 + (orig >> 1) % 3600);
    if (e != NULL && !(orig & 2)) /* half the entries in a serve_stale block */
        e->stale = 1;
    if (e != NULL)
        present = nld_index_insert(&ix, e) == 0;
    check_reply(&ix, q, n, now, (ctl >> 1) & 1);
    check_reply(&ix, q, n, now, !((ctl >> 1) & 1));

    /* Churn: keys cut from the query at every offset collide in 16 slots; the shadow list says
     * which must be found. Removing some exercises backward-shift deletion. */
    const uint8_t *shadow[40];
    size_t shadow_len[40], ns = 0;
    size_t churn = 4 + 8 * ((ctl >> 2) & 3);
    for (size_t i = 0; i < churn && i + 5 <= n; i++) {
        size_t len = n - i < NLD_MAX_KEY ? n - i : NLD_MAX_KEY;
        nld_entry *x = make(q + i, len, body, bodylen > 8 ? 8 : bodylen, NULL, 0, 0.0, 1, 0, (uint8_t)i, NULL, 0);
        if (x == NULL || nld_index_insert(&ix, x) != 0)
            continue;
        int dup = 0;
        for (size_t j = 0; j < ns; j++)
            dup |= shadow_len[j] == len && memcmp(shadow[j], q + i, len) == 0;
        if (!dup) {
            shadow[ns] = q + i;
            shadow_len[ns++] = len;
        }
    }
    for (size_t j = 0; j < ns; j += 2) {
        assert(nld_index_remove(&ix, shadow[j], shadow_len[j]) == 1);
        assert(nld_index_get(&ix, shadow[j], shadow_len[j]) == NULL);
    }
    for (size_t j = 1; j < ns; j += 2) {
        const nld_entry *got = nld_index_get(&ix, shadow[j], shadow_len[j]);
        assert(got != NULL && got->keylen == shadow_len[j]);
    }
    assert(ix.count <= ix.capacity);
    check_reply(&ix, q, n, now + 1.5, 0);
    check_reply(&ix, q, n, now + 30.0, 0);
    /* The refresh set: one claim per name until cleared; a cleared name may be claimed again. */
    if (e != NULL && present && nld_index_get(&ix, key, keylen) == e) {
        int first = nld_pending_take(&ix, e);
        assert(first == 1 && nld_pending_take(&ix, e) == 0);
        assert(nld_pending_clear(&ix, key, keylen) == 1 && nld_pending_clear(&ix, key, keylen) == 0);
        assert(nld_pending_take(&ix, e) == 1 && nld_pending_clear(&ix, key, keylen) == 1);
    }
    /* The query's key may also have come back as one of the churned keys: remove it either way. */
    int removed = keylen ? nld_index_remove(&ix, key, keylen) : 0;
    assert(!present || removed || ns > 0);
    assert(nld_index_get(&ix, key, keylen) == NULL);
    nld_index_clear(&ix);
    assert(ix.count == 0 && ix.bytes == 0);
    nld_index_destroy(&ix);
    return 0;
}
