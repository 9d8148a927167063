/* loadbalance round_robin on a native hit: the address and MX runs of an entry permuted per reply.
 *
 * The reference is plugins/loadbalance (shuffle.apply, CoreDNS loadbalance.go): in each section of
 * more than one record, CNAMEs, then other types, then A/AAAA shuffled, then MX shuffled; a reply
 * with an OPT has it in the additional section, where it counts as "other". Shuffling wire slices
 * gives the reference's bytes only when the entry is already in that order and no compression
 * pointer refers to bytes that move, so nld_lb_plan works that out once, at insert time, and
 * refuses the rest (the Python fast path then serves them). Python also checks that its encoder
 * writes the reply back unchanged (plugins/loadbalance/fast.native_ok): moving records then never
 * changes how the reference compresses them.
 */
#include <stdlib.h>
#include <string.h>

#include "nld.h"

enum { CL_CNAME, CL_OTHER, CL_ADDR, CL_MX };

static int rr_class(unsigned t) {
    return t == 5 ? CL_CNAME : (t == 1 || t == 28) ? CL_ADDR : t == 15 ? CL_MX : CL_OTHER;
}

/* rdata with names, as plugins/../dns/message.py reads them: bytes before, names, bytes after. */
static int rdata_names(unsigned t, unsigned *before, unsigned *names, unsigned *after) {
    *before = *after = 0;
    *names = 1;
    switch (t) {
    case 2: case 3: case 4: case 5: case 7: case 8: case 9: case 12: case 39:
        return 1;
    case 6: *names = 2; *after = 20; return 1;  /* SOA */
    case 14: *names = 2; return 1;              /* MINFO */
    case 15: *before = 2; return 1;             /* MX */
    case 33: *before = 6; return 1;             /* SRV */
    default: return 0;
    }
}

typedef struct {
    size_t base;        /* message offset of body[0]: 12 + the question's length */
    size_t *at, *to;    /* per compression pointer: where it is and where it points (message) */
    size_t nptr, cap;
} ptrs;

/* Skip one name at body[*off] (ending by *end), noting its pointer. 0: malformed. */
static int name(const uint8_t *b, size_t *off, size_t end, ptrs *p) {
    size_t o = *off;
    for (;;) {
        if (o >= end)
            return 0;
        uint8_t c = b[o];
        if (c == 0) {
            *off = o + 1;
            return 1;
        }
        if ((c & 0xC0) == 0xC0) {
            if (o + 2 > end || p->nptr == p->cap)
                return 0;
            p->at[p->nptr] = p->base + o;
            p->to[p->nptr++] = ((size_t)(c & 0x3F) << 8) | b[o + 1];
            *off = o + 2;
            return 1;
        }
        if (c & 0xC0) /* the 0x40/0x80 label types: nothing we shuffle */
            return 0;
        o += 1 + (size_t)c;
    }
}

/* The section's records [lo, hi) are in reference order: cnames, other, addresses, MX. */
static int ordered(const uint8_t *cls, size_t lo, size_t hi) {
    for (size_t i = lo + 1; i < hi; i++)
        if (cls[i] < cls[i - 1])
            return 0;
    return 1;
}

int nld_lb_plan(const uint8_t *key, size_t keylen, const uint8_t *heads, const uint8_t *body,
                size_t bodylen, nld_lb **out, size_t *outsize, const char **why) {
    *out = NULL;
    *outsize = 0;
    const uint8_t *z = memchr(key, 0, keylen);
    if (z == NULL || (size_t)(z - key) + 5 > keylen) {
        *why = "not a fast-path cache key";
        return -1;
    }
    size_t qlen = (size_t)(z - key) + 5;
    unsigned qtype = ((unsigned)key[qlen - 4] << 8) | key[qlen - 3];
    const uint8_t *h0 = heads;
    for (unsigned i = 1; i < NLD_HEADS; i++) {
        const uint8_t *h = heads + i * NLD_HEAD_LEN;
        unsigned ar0 = ((unsigned)h0[8] << 8) | h0[9], ar = ((unsigned)h[8] << 8) | h[9];
        if ((h[1] & 0xF) != (h0[1] & 0xF) || memcmp(h + 2, h0 + 2, 6) != 0 || ar != ar0 + (i >= 4)) {
            *why = "loadbalance: the entry's headers disagree";
            return -1;
        }
    }
    unsigned qd = ((unsigned)h0[2] << 8) | h0[3];
    size_t cnt[3] = {((size_t)h0[4] << 8) | h0[5], ((size_t)h0[6] << 8) | h0[7], ((size_t)h0[8] << 8) | h0[9]};
    /* What the reference returns untouched, undecoded: not NOERROR, a zone transfer, too few records. */
    if ((h0[1] & 0xF) || qtype == 251 || qtype == 252 || (cnt[0] <= 1 && cnt[1] <= 1 && cnt[2] == 0))
        return 0;
    if (qd != 1) {
        *why = "loadbalance: not one question";
        return -1;
    }
    size_t total = cnt[0] + cnt[1] + cnt[2];
    if (total > bodylen / 11) {
        *why = "loadbalance: more records than the body holds";
        return -1;
    }
    /* Every record's start (and the end), its class, and every compression pointer. */
    size_t *start = malloc((total + 1) * sizeof(size_t));
    uint8_t *cls = malloc(total ? total : 1);
    ptrs p = {.base = 12 + qlen, .cap = bodylen / 2 + 1};
    p.at = malloc(p.cap * sizeof(size_t));
    p.to = malloc(p.cap * sizeof(size_t));
    int rc = -1;
    *why = "out of memory";
    if (start == NULL || cls == NULL || p.at == NULL || p.to == NULL)
        goto done;
    *why = "loadbalance: a record the shuffle cannot walk";
    size_t off = 0;
    for (size_t r = 0; r < total; r++) {
        start[r] = off;
        if (!name(body, &off, bodylen, &p) || bodylen - off < 10)
            goto done;
        unsigned t = ((unsigned)body[off] << 8) | body[off + 1];
        size_t rdlen = ((size_t)body[off + 8] << 8) | body[off + 9];
        off += 10;
        if (bodylen - off < rdlen || t == 41) /* an OPT inside the body: the Python path's */
            goto done;
        size_t end = off + rdlen;
        unsigned before, names, after;
        if (rdata_names(t, &before, &names, &after)) {
            if (rdlen < before)
                goto done;
            size_t o = off + before;
            for (unsigned k = 0; k < names; k++)
                if (!name(body, &o, end, &p))
                    goto done;
            if (o + after != end)
                goto done;
        }
        cls[r] = (uint8_t)rr_class(t);
        off = end;
    }
    start[total] = off;
    if (off != bodylen)
        goto done;
    nld_lb plan;
    memset(&plan, 0, sizeof(plan));
    plan.opt_at = (uint16_t)bodylen;
    size_t nrec = 0, lo = 0;
    size_t run_lo[NLD_LB_RUNS];
    *why = "loadbalance: a section not in shuffle order (cnames, others, addresses, MX)";
    for (int s = 0; s < 3; s++) {
        size_t hi = lo + cnt[s];
        if (cnt[s] >= 2 && !ordered(cls, lo, hi))
            goto done;
        if (s == 2 && cnt[s] >= 1) {
            /* With an OPT (an "other") the additional section is partitioned: it goes in front of
             * the addresses and MX. Without one a single record stays as it is. */
            for (size_t i = lo; i < hi; i++)
                if (cls[i] >= CL_ADDR) {
                    plan.opt_at = (uint16_t)start[i];
                    break;
                }
        }
        for (int c = CL_ADDR; cnt[s] >= 2 && c <= CL_MX; c++) {
            size_t a = lo;
            while (a < hi && cls[a] != c)
                a++;
            size_t b = a;
            while (b < hi && cls[b] == c)
                b++;
            if (b - a < 2)
                continue;
            if (b - a > NLD_LB_MAX_RECS) {
                *why = "loadbalance: too many records to shuffle natively";
                goto done;
            }
            plan.runs[plan.nruns].n = (uint16_t)(b - a);
            plan.runs[plan.nruns].first = (uint16_t)nrec;
            run_lo[plan.nruns++] = a;
            nrec += b - a + 1;
        }
        lo = hi;
    }
    if (plan.nruns == 0 && plan.opt_at == bodylen) {
        rc = 0; /* nothing moves: the plain render is the reference's reply */
        goto done;
    }
    if (12 + qlen + bodylen + NLD_OPT_LEN >= 0x4000) {
        /* The reference encoder stops remembering names past 16 KiB: moving a record there could
         * change how a later name is compressed. */
        *why = "loadbalance: reply too long to shuffle natively";
        goto done;
    }
    /* No pointer may point at bytes that move (or forward, or into the header). */
    *why = "loadbalance: a compression pointer refers to records that move";
    for (size_t i = 0; i < p.nptr; i++) {
        size_t to = p.to[i];
        if (to < 12 || to >= p.at[i])
            goto done;
        if (to >= p.base + plan.opt_at && plan.opt_at < bodylen)
            goto done;
        for (unsigned k = 0; k < plan.nruns; k++) {
            size_t a = p.base + start[run_lo[k]], b = p.base + start[run_lo[k] + plan.runs[k].n];
            if (to >= a && to < b)
                goto done;
        }
    }
    size_t size = sizeof(nld_lb) + nrec * sizeof(uint16_t);
    nld_lb *lb = malloc(size);
    if (lb == NULL) {
        *why = "out of memory";
        goto done;
    }
    memcpy(lb, &plan, sizeof(plan));
    for (unsigned k = 0; k < plan.nruns; k++)
        for (size_t i = 0; i <= plan.runs[k].n; i++)
            lb->offs[plan.runs[k].first + i] = (uint16_t)start[run_lo[k] + i];
    *out = lb;
    *outsize = size;
    rc = 1;
done:
    free(start);
    free(cls);
    free(p.at);
    free(p.to);
    return rc;
}

uint16_t nld_rand16(uint64_t *s) {
    /* SplitMix64: one add and a few multiplies per draw; the top 16 bits, like dns.Id() */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return (uint16_t)((z ^ (z >> 31)) >> 48);
}

void nld_shuffle(const nld_hit *h, uint8_t *out, uint64_t *rng, uint8_t *scratch) {
    const nld_entry *e = h->e;
    const nld_lb *lb = nld_e_lb(e);
    uint8_t *body = out + h->qend;
    for (unsigned k = 0; k < lb->nruns; k++) {
        const uint16_t *o = lb->offs + lb->runs[k].first;
        unsigned n = lb->runs[k].n;
        uint16_t perm[NLD_LB_MAX_RECS];
        for (unsigned i = 0; i < n; i++)
            perm[i] = (uint16_t)i;
        /* CoreDNS roundRobinShuffle: two records swap on an even draw; more, a Fisher-Yates walk. */
        if (n == 2) {
            if (nld_rand16(rng) % 2 == 0) {
                perm[0] = 1;
                perm[1] = 0;
            }
        } else {
            for (unsigned j = 0; j < n; j++) {
                unsigned q = j + nld_rand16(rng) % (n - j);
                uint16_t t = perm[j];
                perm[j] = perm[q];
                perm[q] = t;
            }
        }
        memcpy(scratch, body + o[0], (size_t)(o[n] - o[0]));
        size_t pos = o[0];
        for (unsigned i = 0; i < n; i++) {
            size_t len = (size_t)(o[perm[i] + 1] - o[perm[i]]);
            memcpy(body + pos, scratch + (o[perm[i]] - o[0]), len);
            pos += len;
        }
    }
    if (h->edns && lb->opt_at < e->bodylen) {
        uint8_t opt[NLD_OPT_LEN];
        memcpy(opt, body + e->bodylen, NLD_OPT_LEN);
        memmove(body + lb->opt_at + NLD_OPT_LEN, body + lb->opt_at, e->bodylen - lb->opt_at);
        memcpy(body + lb->opt_at, opt, NLD_OPT_LEN);
    }
}
