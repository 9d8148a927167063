/* nodelocaldns native hot path: shared declarations (pure C, no Python; the fuzzer links these). */
#ifndef NLD_H
#define NLD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define NLD_MAX_NAME 255
#define NLD_MAX_KEY (NLD_MAX_NAME + 5) /* name + type + class + the DO/CD byte */
#define NLD_MAX_BODY 65535
#define NLD_HEAD_LEN 10 /* flags, qd, an, ns, ar: everything after the ID */
#define NLD_HEADS 8     /* RD x AD x OPT, indexed as entry.head_index() in Python */
#define NLD_UDP_BUF 4097 /* a datagram this long filled the buffer: cut short (listener._UDP_BUF) */
#define NLD_OPT_LEN 11
#define NLD_REPLY_MAX (12 + NLD_MAX_KEY + NLD_MAX_BODY + NLD_OPT_LEN)

#define NLD_FL_KEEPTTL 1
#define NLD_FL_AA 2
#define NLD_FL_SHUFFLE 4 /* loadbalance round_robin: permute the entry's address/MX runs per reply */

#define NLD_LB_RUNS 6         /* answer, authority, additional: an address run and an MX run each */
#define NLD_LB_MAX_RECS 256   /* records in one run; more: refused (the Python fast path shuffles) */

/* Where an entry's records move on a reply (nld_lb_plan): body offsets, fixed at insert time. */
typedef struct {
    uint16_t n;     /* records in the run (>= 2) */
    uint16_t first; /* its n + 1 offsets (each record's start, then the run's end) in offs[] */
} nld_lb_run;

typedef struct nld_lb {
    uint16_t opt_at; /* EDNS replies: the body offset the OPT goes to (bodylen: it stays last) */
    uint16_t nruns;
    nld_lb_run runs[NLD_LB_RUNS];
    uint16_t offs[];
} nld_lb;

/* One cached answer, immutable once published: writers replace, never edit.
 *
 * Compact on purpose (four full caches hold ~80k): everything variable-length lives in data[],
 * found from the lengths (nld_e_* below), and the eight header variants are one stored header
 * plus a bit whenever they follow entry.head_index (RD, AD-if-asked, +1 additional record for
 * the OPT), which every entry the cache makes does; other heads are kept whole (NLD_FL_HEADS). */
#define NLD_FL_ADQ 0x40   /* internal: AD is set for a client asking with AD (heads[2] has it) */
#define NLD_FL_HEADS 0x80 /* internal: the 8 heads are stored whole after the cased question */
#define NLD_FL_LB 0x20    /* internal: a loadbalance plan (nld_lb) follows everything else */
typedef struct nld_entry {
    double stored;  /* monotonic seconds at store time (Entry.stored) */
    uint64_t stat;  /* zone id | stat id, as dnsstats packs them; the worker counts hits under it */
    uint32_t orig;  /* the item TTL every record carries (Entry.orig) */
    uint32_t size;  /* bytes charged to the index budget */
    uint16_t keylen, bodylen, noffs;
    uint16_t cap;   /* the block's UDP size cap (bufsize: fast_path_udp_max); 65535: none */
    uint16_t qclen; /* length of the stored question when its name has capitals (Entry.q), else 0 */
    uint8_t head[NLD_HEAD_LEN]; /* heads[0]: no RD, no AD asked, no OPT */
    uint8_t fl;
    uint8_t stale; /* the index's serve_stale slot (nld_stale_cfg) for this entry's block; 0: none */
    uint8_t data[]; /* TTL offsets (uint16, aligned), key, body (every TTL = orig), cased question,
                     * the 8 heads (NLD_FL_HEADS), the lb plan at an even offset (NLD_FL_LB) */
} nld_entry;

static inline const uint16_t *nld_e_offs(const nld_entry *e) { return (const uint16_t *)(const void *)e->data; }
static inline const uint8_t *nld_e_key(const nld_entry *e) { return e->data + 2u * e->noffs; }
static inline const uint8_t *nld_e_body(const nld_entry *e) { return nld_e_key(e) + e->keylen; }
static inline const uint8_t *nld_e_qcased(const nld_entry *e) {
    return e->qclen ? nld_e_body(e) + e->bodylen : NULL;
}
/* The loadbalance plan of an NLD_FL_SHUFFLE entry with records to move, else NULL. Last in
 * data[], so the other accessors (the hot path's) never pay for it. */
static inline const nld_lb *nld_e_lb(const nld_entry *e) {
    if (!(e->fl & NLD_FL_LB))
        return NULL;
    size_t at = 2u * e->noffs + e->keylen + e->bodylen + e->qclen +
                ((e->fl & NLD_FL_HEADS) ? (size_t)NLD_HEADS * NLD_HEAD_LEN : 0);
    return (const nld_lb *)(const void *)(e->data + ((at + 1) & ~(size_t)1));
}
/* The 10 header bytes after the ID for head index idx (RD | AD asked << 1 | OPT << 2). */
void nld_e_head(const nld_entry *e, unsigned idx, uint8_t out[NLD_HEAD_LEN]);

typedef struct {
    uint64_t hash;
    nld_entry *e; /* NULL: empty */
} nld_slot;

/* Fixed-size open-addressing table (linear probing, backward-shift deletion: no tombstones),
 * so neither the slot array nor the probe lengths grow after construction. */
/* serve_stale for one block (immediate mode, no prefer_positive): an entry expired for less than
 * window seconds is answered with every TTL = ttl (stale.c). Set before any entry uses the slot. */
#define NLD_STALE_CFGS 16 /* slot 0 means "none": at most 15 such blocks per index, the rest Python's */
typedef struct {
    double window;
    uint32_t ttl;
} nld_stale_cfg;
/* Names whose stale refresh was handed to Python and has not finished: a direct-mapped set of
 * key hashes (| 1), claimed by a worker with a CAS, cleared by Python when the refresh is done. */
#define NLD_PENDING 1024

typedef struct nld_index {
    pthread_rwlock_t lock;
    nld_slot *slots;
    size_t mask;
    size_t count, capacity;
    size_t bytes, max_bytes;
    uint64_t k0, k1; /* per-index SipHash key: names come from the network */
    nld_stale_cfg stale[NLD_STALE_CFGS];
    _Atomic uint64_t pending[NLD_PENDING];
    struct nld_fwd *fwd; /* NX (nx.h): the forward table, NULL: none; swapped under the write lock */
} nld_index;

/* A lookup result: everything nld_render needs, valid while the read lock is held. */
typedef struct {
    const nld_entry *e;
    size_t qend;
    size_t len;
    uint32_t ttl;
    int edns;
    int do_bit;
    unsigned osize; /* the size the reply's OPT echoes: the client's, lowered to the entry's cap */
    int known;      /* set even on "not mine": the index holds this key (expired, or another case) */
    int expired;    /* "not mine" only because the entry expired: every other field is filled */
} nld_hit;

uint64_t nld_siphash13(uint64_t k0, uint64_t k1, const uint8_t *p, size_t n);

int nld_index_init(nld_index *ix, size_t capacity, size_t max_bytes);
void nld_index_destroy(nld_index *ix);
/* A cache key the fast path can ever build: lowercase uncompressed name, its only zero byte the
 * root label, then type and class, then an optional DO/CD byte of 1..3. */
int nld_key_valid(const uint8_t *key, size_t n);
/* Validates and copies everything; NULL with *why set on bad input or no memory. qcased (qclen
 * bytes, or NULL/0) is the stored question when its name has capitals: it must lowercase to the
 * key's question. Owner names keep that case, so only a client asking exactly so is answered. */
nld_entry *nld_entry_new(const uint8_t *key, size_t keylen, const uint8_t *heads, size_t headslen,
                         const uint8_t *body, size_t bodylen, const uint16_t *offs, size_t noffs,
                         double stored, uint32_t orig, unsigned fl, const uint8_t *qcased,
                         size_t qclen, const char **why);
/* Take the write lock, publish e (replacing an entry with the same key). 0 ok, -1 full: e freed. */
int nld_index_insert(nld_index *ix, nld_entry *e);
int nld_index_remove(nld_index *ix, const uint8_t *key, size_t n); /* 1 removed, 0 absent */
void nld_index_clear(nld_index *ix);
size_t nld_index_len(nld_index *ix);
/* Readers: hold the read lock around nld_index_get/nld_match/nld_render. */
void nld_index_rdlock(nld_index *ix);
void nld_index_unlock(nld_index *ix);
const nld_entry *nld_index_get(const nld_index *ix, const uint8_t *key, size_t n);

/* plugins/cache/fastpath.answer for one packet: 1 = a fresh hit (h filled), 0 = not mine.
 * tcp=0 adds the UDP rules (4097-byte buffer, no reply over both 512 and the client's size). */
int nld_match(const nld_index *ix, const uint8_t *q, size_t n, double now, int tcp, nld_hit *h);
/* serve_stale (stale.c). After nld_match said "not mine" with h->expired: 1 = the entry is inside
 * its block's stale window (h->ttl is now the stale answer's TTL; nld_render writes it), else 0. */
int nld_stale(const nld_index *ix, nld_hit *h, double now);
/* Configure slot 1..NLD_STALE_CFGS-1 (takes the write lock). 0 ok, -1 bad slot or values. */
int nld_stale_set(nld_index *ix, unsigned slot, double window, uint32_t ttl);
/* The refresh of e's name: 1 = the caller claimed it (hand it to Python), 0 = already pending,
 * -1 = its pending slot holds another name (no room: let Python serve this one). */
int nld_pending_take(nld_index *ix, const nld_entry *e);
/* Python finished (or dropped) the refresh of key: 1 = it was pending, 0 = it was not. */
int nld_pending_clear(nld_index *ix, const uint8_t *key, size_t n);
/* Write the h->len reply bytes for q into out. */
void nld_render(const nld_hit *h, const uint8_t *q, uint8_t *out);

/* loadbalance (lb.c). The plan for an NLD_FL_SHUFFLE entry: 1 = *out (malloc'd, *outsize bytes),
 * 0 = nothing ever moves (serve it plain), -1 = refused (*why): the reference's order or its
 * compression pointers would not survive moving wire slices. */
int nld_lb_plan(const uint8_t *key, size_t keylen, const uint8_t *heads, const uint8_t *body,
                size_t bodylen, nld_lb **out, size_t *outsize, const char **why);
/* After nld_render of a hit whose entry has a plan: permute its runs in out (and move the OPT
 * where the reference puts it). scratch: at least h->len bytes. */
void nld_shuffle(const nld_hit *h, uint8_t *out, uint64_t *rng, uint8_t *scratch);
uint16_t nld_rand16(uint64_t *state); /* per-caller PRNG (SplitMix64), seeded from getrandom */

#endif
