/* The native UDP worker: one thread per SO_REUSEPORT socket, never touching Python. */
#ifndef NLD_UDP_H
#define NLD_UDP_H

#include <stdatomic.h>
#include <sys/socket.h>

#include "nld.h"
#include "nx.h"

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
    /* NX: queries sent upstream, replies matched, timeouts, errors (each pending query an error
     * fails), datagrams dropped as no reply of ours; pending: in flight now */
    _Atomic uint64_t nx_sent, nx_replies, nx_timeouts, nx_errors, nx_mismatched, nx_pending;
    _Atomic uint64_t py_send_errors; /* Worker.send's failures: Python's thread writes this one */
} nld_counters;

/* NX (exchange.c): one connected UDP socket to an upstream, shared by every query in flight to
 * it until it is older than the table's expire (retired: closed when its last query is done). */
typedef struct nld_nx_sock {
    int fd;
    int dead, retired;
    size_t npend;
    double born;
    socklen_t alen;
    struct sockaddr_storage addr;
    struct nld_nx_sock *next;
} nld_nx_sock;

/* A query in flight: the bytes sent (the client's with our ID), for whom, on which socket. The
 * pending list is in send order; with one timeout for all, its head has the next deadline. */
typedef struct {
    uint8_t q[NLD_NX_QMAX];
    uint16_t qlen, qend, id, cid, uid;
    uint8_t state; /* 0 free, 1 queued to send, 2 sent */
    int32_t prev, next;
    nld_nx_sock *s;
    double sent;
    socklen_t alen;
    struct sockaddr_storage addr;
} nld_nx_pend;

/* A finished exchange for Python (Worker.exchanged): the client's query and address, the reply
 * (malloc'd, client ID restored; the consumer frees it) or NULL and an errno. */
typedef struct {
    uint16_t qlen, uid;
    int err;
    uint32_t rlen;
    uint8_t *reply;
    double seconds;
    socklen_t alen;
    struct sockaddr_storage addr;
    uint8_t q[NLD_NX_QMAX];
} nld_nx_result;

#define NLD_NX_RBATCH 8
typedef struct {
    nld_nx_result *ring; /* as many slots as the miss ring; SPSC: worker head, Python tail */
    size_t mask;
    _Atomic size_t head, tail;
    nld_nx_pend *pend; /* the pool: min(ring, 65535) */
    size_t npool, npending, nfree, used;
    int32_t *freel, *tosend, *run, first, last;
    struct mmsghdr *mm; /* one sendmmsg per upstream socket and batch */
    struct iovec *iov;
    unsigned ntosend;
    uint16_t *by_id; /* pending ID -> pool slot + 1 (IDs are unique across the worker's sockets) */
    nld_nx_sock *socks, **cur; /* cur[i]: the socket for the table's upstream i (NULL: none yet) */
    uint32_t *rr;              /* round_robin position per zone row */
    size_t ncur, nrr;
    uint64_t gen; /* the table the worker's socket map follows (0: none) */
    double timeout, expire;
    size_t max_pending;
    int ep;        /* epoll over the upstream sockets */
    uint8_t *rbuf; /* NLD_NX_RBATCH replies of up to 64 KiB, read by one recvmmsg */
    struct mmsghdr rmm[NLD_NX_RBATCH];
    struct iovec riov[NLD_NX_RBATCH];
    uint16_t ids[128];
    unsigned nids;
    int woke; /* results pushed since the last wake-up */
} nld_nx;

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
    nld_nx nx;
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
int nld_worker_pending(nld_worker *w); /* a miss, a refresh or an NX result waits */
/* The oldest refresh request (a query answered stale), or NULL; release it when copied. */
const nld_refresh_slot *nld_worker_refresh_peek(nld_worker *w);
void nld_worker_refresh_release(nld_worker *w);
uint64_t nld_ld(_Atomic uint64_t *c);
void nld_bump(_Atomic uint64_t *c, uint64_t by); /* single writer: relaxed load + store */

/* exchange.c. The worker thread's side: take (under the index read lock) forwards one miss or
 * says no; flush sends what this batch took; io reads replies, fails timeouts, closes sockets;
 * poll_ms is the poll timeout the next deadline allows (-1: none). */
int nld_nx_init(nld_worker *w, size_t ring);
void nld_nx_free(nld_worker *w);
int nld_nx_take(nld_worker *w, const uint8_t *pkt, size_t len, const struct sockaddr_storage *a,
                socklen_t alen, int known, double now);
void nld_nx_flush(nld_worker *w, double now);
void nld_nx_cancel(nld_worker *w, double now); /* on the worker thread, as it ends */
void nld_nx_io(nld_worker *w, double now, int polled); /* polled: the epoll set was readable */
int nld_nx_poll_ms(nld_worker *w, double now);
/* The consumer's side (under the GIL, like drain): the oldest result, then release it. */
const nld_nx_result *nld_nx_peek(nld_worker *w);
void nld_nx_release(nld_worker *w);

#endif
