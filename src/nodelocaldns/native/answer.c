/* Packet -> reply for a fresh cache hit: plugins/cache/fastpath.answer, byte for byte.
 *
 * Every read is bounds-checked against n. Anything the Python fast path hands to the slow path
 * is "not mine" (0) here too, so the slow path stays the reference for everything unusual.
 */
#include <math.h>
#include <string.h>

#include "nld.h"

/* Seconds of TTL left, as Entry.body computes it (origTTL - floor(elapsed)), 0 when expired.
 * The first second (or, with keepttl, the whole original TTL) is served from the stored memo,
 * which is why those cases compare against stored + 1 / stored + orig exactly like memo_until. */
static int fresh_ttl(const nld_entry *e, double now, uint32_t *ttl) {
    if (!isfinite(now))
        return 0;
    double limit = (e->fl & NLD_FL_KEEPTTL) ? e->stored + (double)e->orig : e->stored + 1.0;
    if (now < limit) {
        *ttl = e->orig;
        return 1;
    }
    double elapsed = now - e->stored;
    if (elapsed >= 8589934592.0) /* 2^33 s: past any uint32 TTL, and keeps the cast defined */
        return 0;
    int64_t left = (int64_t)e->orig - (int64_t)elapsed; /* C truncates toward zero, as int() */
    if (left <= 0)
        return 0;
    *ttl = (e->fl & NLD_FL_KEEPTTL) ? e->orig : (uint32_t)left;
    return 1;
}

int nld_match(const nld_index *ix, const uint8_t *q, size_t n, double now, int tcp, nld_hit *h) {
    static const uint8_t counts[7] = {0, 1, 0, 0, 0, 0, 0};
    h->expired = 0;
    if (n < 12 || memcmp(q + 4, counts, 7) != 0 || q[11] > 1)
        return 0;
    int edns = q[11];
    if (!tcp && n >= NLD_UDP_BUF)
        return 0;
    if (q[2] & 0xFE) /* QR, opcode, AA or TC set */
        return 0;
    const uint8_t *z = memchr(q + 12, 0, n - 12);
    if (z == NULL)
        return 0;
    size_t qend = (size_t)(z - q) + 5;
    if (qend > n || qend - 12 + 1 > NLD_MAX_KEY)
        return 0;
    uint8_t key[NLD_MAX_KEY];
    size_t qlen = qend - 12;
    for (size_t i = 0; i < qlen - 4; i++) {
        uint8_t c = q[12 + i];
        key[i] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
    }
    memcpy(key + qlen - 4, q + qend - 4, 4);
    int do_bit = 0;
    size_t limit = 512, osize = 0;
    if (edns) {
        if (n < qend + NLD_OPT_LEN || q[qend] != 0 || q[qend + 1] != 0 || q[qend + 2] != 41 || q[qend + 6])
            return 0;
        if (n != qend + NLD_OPT_LEN + (((size_t)q[qend + 9] << 8) | q[qend + 10]))
            return 0;
        do_bit = (q[qend + 7] & 0x80) != 0;
        /* The reply's OPT echoes the client's size as sent (CoreDNS SizeAndDo), even below 512;
         * as a limit, below 512 means 512. */
        osize = limit = ((size_t)q[qend + 3] << 8) | q[qend + 4];
        if (limit < 512)
            limit = 512;
    } else if (n != qend) {
        return 0;
    }
    size_t keylen = qlen;
    int cd = (q[3] & 0x10) != 0;
    if (do_bit || cd)
        key[keylen++] = (uint8_t)(do_bit | (cd << 1));
    const nld_entry *e = nld_index_get(ix, key, keylen);
    if (e == NULL)
        return 0;
    h->known = 1;
    /* Owner names keep their stored case and the body points into the question: only a client
     * that wrote the name exactly as stored is spliced (fastpath.answer); the chain does the rest. */
    const uint8_t *qc = nld_e_qcased(e);
    if (qc == NULL ? memcmp(q + 12, key, qlen) != 0 : memcmp(q + 12, qc, qlen) != 0)
        return 0;
    int fresh = fresh_ttl(e, now, &h->ttl);
    if (!fresh && !isfinite(now))
        return 0;
    if (edns && osize > e->cap) /* bufsize: the chain sees (and echoes) the lowered size */
        osize = limit = e->cap;
    size_t len = 12 + qlen + e->bodylen + (edns ? NLD_OPT_LEN : 0);
    if (!tcp && len > 512 && len > limit) /* the slow path truncates; the fast path never does */
        return 0;
    h->e = e;
    h->qend = qend;
    h->len = len;
    h->edns = edns;
    h->do_bit = do_bit;
    h->osize = (unsigned)osize;
    /* Expired, but a hit in every other respect: serve_stale may still answer it (nld_stale). */
    h->expired = !fresh;
    return fresh;
}

void nld_render(const nld_hit *h, const uint8_t *q, uint8_t *out) {
    const nld_entry *e = h->e;
    size_t qlen = h->qend - 12;
    out[0] = q[0];
    out[1] = q[1];
    unsigned idx = (q[2] & 1u) | ((q[3] & 0x20u) >> 4) | (h->edns ? 4u : 0u);
    nld_e_head(e, idx, out + 2);
    memcpy(out + 12, q + 12, qlen); /* the client's question, its case kept */
    uint8_t *body = out + 12 + qlen;
    memcpy(body, nld_e_body(e), e->bodylen);
    if (h->ttl != e->orig) {
        uint8_t t[4] = {(uint8_t)(h->ttl >> 24), (uint8_t)(h->ttl >> 16), (uint8_t)(h->ttl >> 8),
                        (uint8_t)h->ttl};
        const uint16_t *offs = nld_e_offs(e);
        for (size_t i = 0; i < e->noffs; i++)
            memcpy(body + offs[i], t, 4);
    }
    if (h->edns) {
        /* Name ".", type OPT, the client's size echoed (capped), ext-rcode/version 0, only DO, no rdata. */
        uint8_t *o = body + e->bodylen;
        o[0] = 0;
        o[1] = 0;
        o[2] = 41;
        o[3] = (uint8_t)(h->osize >> 8);
        o[4] = (uint8_t)h->osize;
        o[5] = 0;
        o[6] = 0;
        o[7] = h->do_bit ? 0x80 : 0;
        o[8] = 0;
        o[9] = 0;
        o[10] = 0;
    }
}
