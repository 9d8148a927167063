/* libFuzzer harness for NX's pure parts (native/nx.c): the plain-query check, zone routing with
 * the DS rule, reply matching and the ID patch, each checked against an obvious reference.
 *
 * Input: nz(1) then nz zones, each len(1) name(len) nups(1); then qlen(2) query(qlen) | reply.
 * Zones that are no wire name are skipped (set_forward refuses them). Every check also runs on
 * the reply the worker would accept for the query (QR set, another ID, the name in another case).
 * Build and run: `make fuzz` (FUZZ_SECONDS=60 by default).
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "nld.h"
#include "nx.h"

#define MAX_ZONES 8

static uint8_t low(uint8_t c) { return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c; }

static int same(const uint8_t *a, const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (low(a[i]) != low(b[i]))
            return 0;
    return 1;
}

/* Router.route, spelled out: every label boundary, longest suffix first, DS to the parent. */
static long route_ref(const nld_fwd *t, const uint8_t *name, size_t n, uint16_t qtype) {
    size_t offs[NLD_MAX_NAME + 1], k = 0, off = 0;
    for (;;) {
        offs[k++] = off;
        if (name[off] == 0)
            break;
        off += (size_t)name[off] + 1;
    }
    int skipped = 0;
    for (size_t i = 0; i < k; i++) {
        size_t o = offs[i];
        for (size_t z = 0; z < t->nzones; z++) {
            if (t->zones[z].len != n - o || !same(t->zones[z].name, name + o, n - o))
                continue;
            if (i == 0 && qtype == 43 && n > 1 && !skipped) {
                skipped = 1;
                long parent = -1;
                for (size_t j = 1; j < k && parent < 0; j++)
                    for (size_t y = 0; y < t->nzones && parent < 0; y++)
                        if (t->zones[y].len == n - offs[j] && same(t->zones[y].name, name + offs[j], n - offs[j]))
                            parent = (long)y;
                return parent >= 0 ? parent : (long)z;
            }
            return (long)z;
        }
    }
    return -1;
}

static void check_plain(const uint8_t *q, size_t n, size_t qend, int edns) {
    assert(qend >= 17 && qend <= n && n < NLD_UDP_BUF);
    assert(q[qend - 5] == 0 && nld_nx_name_valid(q + 12, qend - 16));
    assert(q[2] < 8 && q[4] == 0 && q[5] == 1 && q[11] == edns);
    assert(edns ? n >= qend + NLD_OPT_LEN && q[qend + 2] == 41 : n == qend);
}

static void check_reply(const uint8_t *q, size_t qend, const uint8_t *r, size_t rn) {
    int ok = nld_nx_reply_ok(r, rn, q, qend);
    int ref = rn >= qend && (r[2] & 0x80) && r[4] == 0 && r[5] == 1 && same(r + 12, q + 12, qend - 16) &&
              memcmp(r + qend - 4, q + qend - 4, 4) == 0;
    assert(ok == ref);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    size_t at = 1, nz = data[0] % (MAX_ZONES + 1), nups = 0;
    struct {
        nld_fwd t;
        nld_nx_zone zones[MAX_ZONES];
        nld_nx_up ups[MAX_ZONES * 4];
    } tab;
    memset(&tab, 0, sizeof(tab));
    tab.t.zones = tab.zones;
    tab.t.ups = tab.ups;
    for (size_t z = 0; z < nz; z++) {
        if (at >= size)
            return 0;
        size_t len = data[at++];
        if (len > size - at || len > 255 || at + len >= size)
            return 0;
        const uint8_t *name = data + at;
        at += len;
        unsigned n = data[at++] % 4;
        if (!nld_nx_name_valid(name, len))
            continue;
        nld_nx_zone *zr = &tab.zones[tab.t.nzones++];
        memcpy(zr->name, name, len);
        zr->len = (uint16_t)len;
        zr->first = (uint16_t)nups;
        zr->n = (uint16_t)n;
        nups += n;
    }
    tab.t.nups = nups;
    if (size - at < 2)
        return 0;
    size_t qlen = ((size_t)data[at] << 8 | data[at + 1]);
    at += 2;
    if (qlen > size - at)
        qlen = size - at;
    /* copies, so that ASan sees every read past the end the functions might make */
    uint8_t *q = malloc(qlen ? qlen : 1), *r = malloc(size - at - qlen + 1);
    memcpy(q, data + at, qlen);
    size_t rn = size - at - qlen;
    memcpy(r, data + at + qlen, rn);

    size_t qend = 0;
    int edns = -1;
    if (nld_nx_plain(q, qlen, &qend, &edns)) {
        check_plain(q, qlen, qend, edns);
        uint16_t qtype = (uint16_t)(q[qend - 4] << 8 | q[qend - 3]);
        long got = nld_nx_route(&tab.t, q + 12, qend - 16, qtype);
        assert(got == route_ref(&tab.t, q + 12, qend - 16, qtype));
        assert(got < (long)tab.t.nzones);
        check_reply(q, qend, r, rn);
        /* the reply the worker accepts: our ID, QR set, the name in another case, anything after */
        uint8_t *good = malloc(qlen + 8);
        memcpy(good, q, qlen);
        nld_nx_set_id(good, (uint16_t)(nld_nx_id(q) ^ 0xA5A5));
        assert(nld_nx_id(good) == (uint16_t)(nld_nx_id(q) ^ 0xA5A5));
        good[2] |= 0x80;
        for (size_t i = 12; i < qend - 4; i++)
            if ((good[i] | 0x20) >= 'a' && (good[i] | 0x20) <= 'z' && (i & 1))
                good[i] ^= 0x20;
        memcpy(good + qlen, "\x00\x00\x00\x00\x00\x00\x00\x00", 8);
        assert(nld_nx_reply_ok(good, qlen + 8, q, qend) == 1 && nld_nx_reply_ok(good, qend, q, qend) == 1);
        assert(nld_nx_reply_ok(good, qend - 1, q, qend) == 0);
        good[qend - 1] ^= 1; /* another class */
        assert(nld_nx_reply_ok(good, qlen, q, qend) == 0);
        free(good);
    } else {
        size_t z = 12;
        while (z < qlen && q[z] != 0 && q[z] < 64)
            z += (size_t)q[z] + 1;
        /* what refuse() also turns away: never a header that says "plain" with a clean name and end */
        assert(!(qlen >= 17 && qlen < NLD_UDP_BUF && q[2] < 8 && q[4] == 0 && q[5] == 1 && q[6] == 0 && q[7] == 0 &&
                 q[8] == 0 && q[9] == 0 && q[10] == 0 && q[11] == 0 && z < qlen && q[z] == 0 && z - 12 < 255 &&
                 qlen == z + 5));
    }
    /* the reply bytes as a question of their own: the checks never read past what they are given */
    if (nld_nx_plain(r, rn, &qend, &edns)) {
        check_plain(r, rn, qend, edns);
        long got = nld_nx_route(&tab.t, r + 12, qend - 16, 43);
        assert(got == route_ref(&tab.t, r + 12, qend - 16, 43));
        check_reply(r, qend, q, qlen);
    }
    free(q);
    free(r);
    return 0;
}
