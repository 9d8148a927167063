/* NX, the plain forward exchange: its pure parts (no sockets, no clock; the fuzzer links them).
 * The worker (exchange.c) sends an index miss to an upstream itself when its zone row says so. */
#ifndef NLD_NX_H
#define NLD_NX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define NLD_NX_QMAX 512 /* the longest query the worker forwards (the classic UDP size) */
#define NLD_NX_RANDOM 0
#define NLD_NX_ROUND_ROBIN 1
#define NLD_NX_SEQUENTIAL 2

typedef struct {
    uint16_t uid; /* Python's id for this upstream: it comes back with each result */
    socklen_t alen;
    struct sockaddr_storage addr;
} nld_nx_up;

typedef struct {
    uint8_t name[256]; /* lowercase wire name */
    uint16_t len;
    uint16_t first, n; /* its upstreams: ups[first .. first + n); n == 0: not exchanged here */
    uint8_t policy;
} nld_nx_zone;

/* One Index.set_forward table, immutable once published (ix->fwd, swapped under the write lock;
 * gen tells a worker its cached socket map is stale). One malloc'd block: free() releases it. */
typedef struct nld_fwd {
    uint64_t gen;
    double timeout, expire;
    size_t max_pending; /* 0: no limit but the result ring's room */
    size_t nzones, nups;
    nld_nx_zone *zones;
    nld_nx_up *ups;
} nld_fwd;

/* A plain query as refuse() answers it: QR and opcode 0, qd=1, an=ns=0, ar<=1 with one OPT that
 * ends the packet, one uncompressed name of at most 255 bytes. 1 with *qend (the question's end)
 * and *edns set, else 0. Reads only q[0..n). */
int nld_nx_plain(const uint8_t *q, size_t n, size_t *qend, int *edns);
/* A lowercase-able wire name of exactly n bytes (labels of 1..63, the root last). */
int nld_nx_name_valid(const uint8_t *name, size_t n);
/* The zone row for a question name (name[0..n), a valid wire name) as server/listener.Router.route
 * finds it: the longest suffix on label boundaries, ASCII case-insensitive; a DS query (qtype 43)
 * for a name that is itself a zone (not the root) goes to the parent zone. -1: no zone. */
long nld_nx_route(const nld_fwd *t, const uint8_t *name, size_t n, uint16_t qtype);
/* A reply r[0..n) to the query q (its question ending at qend): at least a header, QR set,
 * qdcount 1, the same question (the name ASCII case-insensitive, type and class exact). The ID
 * is the caller's check. */
int nld_nx_reply_ok(const uint8_t *r, size_t n, const uint8_t *q, size_t qend);
static inline void nld_nx_set_id(uint8_t *p, uint16_t id) {
    p[0] = (uint8_t)(id >> 8);
    p[1] = (uint8_t)id;
}
static inline uint16_t nld_nx_id(const uint8_t *p) { return (uint16_t)(((unsigned)p[0] << 8) | p[1]); }

#endif
