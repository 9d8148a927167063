/* The native UDP worker: one thread per SO_REUSEPORT socket, never touching Python. */
#ifndef NLD_UDP_H
#define NLD_UDP_H

#include <stdatomic.h>
#include <sys/socket.h>

#include "nld.h"

/* One packet handed to Python: what recvmmsg read and who sent it. A query fits in the slot
 * (every slot is written as misses cycle through the ring, so a 4 KB slot each would keep ~1 MB
 * per worker resident); a longer datagram (up to the 4097-byte buffer) gets its own malloc'd copy,
 * which the consumer frees when it releases the slot. */
#define NLD_RING_INLINE 512
typedef struct {
    uint16_t len;
    socklen_t alen;
    uint8_t *big; /* len > NLD_RING_INLINE: the bytes (the consumer frees them), else NULL */
    struct sockaddr_storage addr;
    uint8_t data[NLD_RING_INLINE];
} nld_ring_slot;

static inline const uint8_t *nld_ring_data(const nld_ring_slot *s) { return s->big != NULL ? s->big : s->data; }

/* Single writer (the worker thread) per counter: relaxed stores there, relaxed loads in Python. */
typedef struct {
    /* refused: answered REFUSED because the ring was full; dropped: not even that (not a plain query) */
    _Atomic uint64_t packets, hits, handed, refused, dropped, send_errors, recv_errors, batches;
    /* stale: answered by serve_stale here; refreshes: of those, names whose refresh went to Python */
    _Atomic uint64_t stale, refreshes;
} nld_counters;

/* Hits by the key dnsstats' fast counters use (entry stat | request size << 3 | DO << 1 | EDNS),
 * with the time they took: a fixed open-addressing table written only by the worker (relaxed
 * atomics, no lock), read by Python at scrape time. A key that finds no free slot makes the
 * packet a miss, so Python's fast path answers and counts it: no hit is ever left uncounted. */
#define NLD_STATS 8192 /* slots; filled to 3/4 at most */
typedef struct {
    _Atomic uint64_t key; /* 0: empty (a real key always carries a request size >= 17) */
    _Atomic uint64_t hits, ns;
} nld_stat_slot;

/* Names answered stale whose refresh Python starts: the query as the client sent it (a plain
 * query fits; a longer one is left to Python whole). Small: one per name in flight (pending). */
#define NLD_REFRESH 64
#define NLD_STALE_STATS 1024 /* stale answers by counter key, as stats[] (3/4 used at most) */
typedef struct {
    uint16_t len;
    uint8_t data[NLD_RING_INLINE];
} nld_refresh_slot;

typedef struct nld_worker {
    int fd;     /* borrowed: the Python socket outlives the worker */
    int stopfd; /* eventfd: wakes the worker's poll on stop */
    int wakefd; /* eventfd: readable when misses wait in the ring */
    nld_index *ix;
    unsigned batch;
    size_t ring_mask;
    nld_ring_slot *ring;
    _Atomic size_t head, tail; /* SPSC: worker writes head, the one Python consumer writes tail */
    _Atomic int armed;         /* the consumer waits: the next push must write wakefd */
    _Atomic int stop;
    _Atomic int shed; /* Python's queue is full: names the index does not hold get REFUSED here */
    _Atomic uint64_t pinned; /* bits of a double: the injected clock's time; 0: CLOCK_MONOTONIC */
    _Atomic int running;
    nld_counters c;
    nld_stat_slot *stats;
    size_t nstats; /* slots in use (worker-private) */
    nld_stat_slot **hitslot; /* per batch: the slot of each hit, for the time share */
    pthread_t thread;
    int started;
    struct mmsghdr *in, *out;
    struct iovec *iin, *iout;
    struct sockaddr_storage *addrs;
    uint8_t *inbuf, *outbuf;
    uint8_t *scratch; /* loadbalance: one run's records while they are permuted */
    uint64_t rng;     /* loadbalance draws, this worker's alone */
    nld_refresh_slot *refresh; /* SPSC as the ring: the worker writes rhead, Python rtail */
    _Atomic size_t rhead, rtail;
    nld_stat_slot *stale_stats; /* stale answers, counted apart: they are no cache hits */
    size_t nstale;
} nld_worker;

#define NLD_OUT_CAP 65536 /* a UDP reply never exceeds the client's 16-bit EDNS size */

/* batch: datagrams per recvmmsg (1..1024); ring: handed-off slots (power of two, 2..65536). */
nld_worker *nld_worker_new(int fd, nld_index *ix, unsigned batch, size_t ring, int *err);
int nld_worker_start(nld_worker *w);
void nld_worker_stop(nld_worker *w); /* idempotent; joins the thread */
void nld_worker_free(nld_worker *w);
/* The consumer side (one caller at a time): peek the oldest miss, release it when copied. */
const nld_ring_slot *nld_worker_peek(nld_worker *w);
void nld_worker_release(nld_worker *w);
void nld_worker_rearm(nld_worker *w); /* after a drain: make sure the next miss wakes wakefd */
/* The oldest refresh request (a query answered stale), or NULL; release it when copied. */
const nld_refresh_slot *nld_worker_refresh_peek(nld_worker *w);
void nld_worker_refresh_release(nld_worker *w);
uint64_t nld_ld(_Atomic uint64_t *c);

#endif
