/* NX's pure parts: which queries the worker may forward, which zone row routes them, whether a
 * datagram is the reply to one. Every read is bounds-checked: these see network bytes. */
#include <string.h>

#include "nld.h"
#include "nx.h"

int nld_nx_plain(const uint8_t *q, size_t n, size_t *qend, int *edns) {
    static const uint8_t counts[7] = {0, 1, 0, 0, 0, 0, 0};
    if (n < 17 || n >= NLD_UDP_BUF || (q[2] & 0xF8) || memcmp(q + 4, counts, 7) != 0 || q[11] > 1)
        return 0;
    size_t i = 12;
    while (q[i] != 0) {
        if (q[i] > 63 || i + q[i] + 1 >= n || i + q[i] + 1 - 12 > NLD_MAX_NAME - 1)
            return 0;
        i += (size_t)q[i] + 1;
    }
    size_t end = i + 5;
    if (end > n)
        return 0;
    if (q[11]) {
        if (n < end + NLD_OPT_LEN || q[end] != 0 || q[end + 1] != 0 || q[end + 2] != 41 ||
            n != end + NLD_OPT_LEN + (((size_t)q[end + 9] << 8) | q[end + 10]))
            return 0;
    } else if (n != end) {
        return 0;
    }
    *qend = end;
    *edns = q[11];
    return 1;
}

int nld_nx_name_valid(const uint8_t *name, size_t n) {
    size_t i = 0;
    while (i < n && name[i] != 0) {
        if (name[i] > 63 || i + 1 + name[i] >= n)
            return 0;
        i += 1 + (size_t)name[i];
    }
    return i + 1 == n && n <= NLD_MAX_NAME;
}

static uint8_t lower(uint8_t c) { return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c; }

/* Length bytes are <= 63, below 'A': folding every byte compares names exactly. */
static int same_name(const uint8_t *a, const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (lower(a[i]) != lower(b[i]))
            return 0;
    return 1;
}

static long find(const nld_fwd *t, const uint8_t *s, size_t n) {
    for (size_t z = 0; z < t->nzones; z++)
        if (t->zones[z].len == n && same_name(t->zones[z].name, s, n))
            return (long)z;
    return -1;
}

long nld_nx_route(const nld_fwd *t, const uint8_t *name, size_t n, uint16_t qtype) {
    long found = -1;
    size_t off = 0;
    while (off < n) {
        long hit = find(t, name + off, n - off);
        if (hit >= 0) {
            if (qtype == 43 && off == 0 && found < 0 && n > 1)
                found = hit; /* DS: the parent side of the cut, if there is one */
            else
                return hit;
        }
        if (name[off] == 0)
            break;
        off += (size_t)name[off] + 1;
    }
    return found;
}

int nld_nx_reply_ok(const uint8_t *r, size_t n, const uint8_t *q, size_t qend) {
    if (n < 12 || n < qend || qend < 17 || !(r[2] & 0x80) || r[4] != 0 || r[5] != 1)
        return 0;
    return same_name(r + 12, q + 12, qend - 16) && memcmp(r + qend - 4, q + qend - 4, 4) == 0;
}
