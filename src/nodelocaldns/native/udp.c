/* The native UDP worker loop: recvmmsg a batch, answer fresh hits from the index under one read
 * lock, sendmmsg the replies, push everything else into a bounded ring for Python (full: REFUSED
 * to a plain query, drop anything else; both counted), and wake the Python consumer once per batch
 * through an eventfd. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "udp.h"

uint64_t nld_ld(_Atomic uint64_t *c) { return atomic_load_explicit(c, memory_order_relaxed); }

void nld_bump(_Atomic uint64_t *c, uint64_t by) {
    if (by)
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by, memory_order_relaxed);
}

nld_worker *nld_worker_new(int fd, nld_index *ix, unsigned batch, size_t ring, int *err) {
    if (batch < 1 || batch > 1024 || ring < 2 || ring > 65536 || (ring & (ring - 1))) {
        *err = EINVAL;
        return NULL;
    }
    nld_worker *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        *err = ENOMEM;
        return NULL;
    }
    w->nx.ep = -1;
    w->fd = fd;
    w->ix = ix;
    w->batch = batch;
    w->ring_mask = ring - 1;
    w->stopfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->ring = malloc(ring * sizeof(nld_ring_slot));
    w->in = calloc(batch, sizeof(struct mmsghdr));
    w->out = calloc(batch, sizeof(struct mmsghdr));
    w->iin = calloc(batch, sizeof(struct iovec));
    w->iout = calloc(batch, sizeof(struct iovec));
    w->addrs = calloc(batch, sizeof(struct sockaddr_storage));
    w->inbuf = malloc((size_t)batch * NLD_UDP_BUF);
    w->outbuf = malloc((size_t)batch * NLD_OUT_CAP); /* virtual until a big reply touches it */
    w->stats = calloc(NLD_STATS, sizeof(nld_stat_slot));
    w->hitslot = calloc(batch, sizeof(nld_stat_slot *));
    w->scratch = malloc(NLD_OUT_CAP); /* virtual until a shuffled reply touches it */
    w->refresh = malloc(NLD_REFRESH * sizeof(nld_refresh_slot));
    w->stale_stats = calloc(NLD_STALE_STATS, sizeof(nld_stat_slot));
    if (getrandom(&w->rng, sizeof(w->rng), GRND_NONBLOCK) != (ssize_t)sizeof(w->rng))
        w->rng = (uint64_t)(uintptr_t)w ^ 0x2545F4914F6CDD1DULL; /* no entropy yet: still a shuffle */
    atomic_init(&w->armed, 1);
    int nxerr = nld_nx_init(w, ring);
    if (nxerr != 0) {
        *err = nxerr;
        nld_worker_free(w);
        return NULL;
    }
    if (w->stopfd < 0 || w->wakefd < 0 || !w->ring || !w->in || !w->out || !w->iin || !w->iout ||
        !w->addrs || !w->inbuf || !w->outbuf || !w->stats || !w->hitslot || !w->scratch || !w->refresh || !w->stale_stats) {
        *err = errno ? errno : ENOMEM;
        nld_worker_free(w);
        return NULL;
    }
    for (unsigned i = 0; i < batch; i++) {
        w->iin[i].iov_base = w->inbuf + (size_t)i * NLD_UDP_BUF;
        w->in[i].msg_hdr.msg_iov = &w->iin[i];
        w->in[i].msg_hdr.msg_iovlen = 1;
        w->in[i].msg_hdr.msg_name = &w->addrs[i];
        w->out[i].msg_hdr.msg_iov = &w->iout[i];
        w->out[i].msg_hdr.msg_iovlen = 1;
    }
    return w;
}

/* The last quarter of the ring is kept for names the index holds (expired: serve_stale or a
 * refresh), as UDPWorker's first lane: a flood of names nobody asked before cannot crowd them out.
 * While Python says its queue is full (shed), such names are not pushed at all: the caller answers
 * REFUSED at line rate, where Python would spend a slow-path wake-up on each. */
static int push(nld_worker *w, const uint8_t *data, size_t len, const struct sockaddr_storage *a,
                socklen_t alen, int known) {
    if (!known && atomic_load_explicit(&w->shed, memory_order_relaxed))
        return 0;
    size_t head = atomic_load_explicit(&w->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&w->tail, memory_order_acquire);
    if (head - tail > w->ring_mask)
        return 0;
    if (!known && head - tail >= (w->ring_mask + 1) - (w->ring_mask + 1) / 4)
        return 0;
    nld_ring_slot *s = &w->ring[head & w->ring_mask];
    s->big = NULL;
    if (len > NLD_RING_INLINE && (s->big = malloc(len)) == NULL)
        return 0; /* as a full ring: REFUSED or dropped, counted */
    s->len = (uint16_t)len;
    s->alen = alen;
    memcpy(&s->addr, a, alen <= sizeof(s->addr) ? alen : sizeof(s->addr));
    memcpy(s->big != NULL ? s->big : s->data, data, len);
    atomic_store_explicit(&w->head, head + 1, memory_order_release);
    return 1;
}

/* The ring is full: REFUSED, as the server answers past forward's max_concurrent (wire.error_reply:
 * the client's ID, RD and CD, its question, its OPT echoed with its size and DO, nothing else).
 * Only for a plain query (QR and opcode 0, one question of uncompressed labels, nothing after it
 * but one OPT that ends the packet): anything else gets 0 and is dropped, as the slow path would
 * FORMERR or drop it and a flood of those is not worth a reply. Writes at most 12 + 259 + 11. */
static size_t refuse(const uint8_t *q, size_t n, uint8_t *out) {
    size_t qend;
    int edns;
    if (!nld_nx_plain(q, n, &qend, &edns))
        return 0;
    static const uint8_t head[6] = {0, 1, 0, 0, 0, 0};
    out[0] = q[0];
    out[1] = q[1];
    out[2] = (uint8_t)(0x80 | (q[2] & 0x01));
    out[3] = (uint8_t)((q[3] & 0x10) | 5);
    memcpy(out + 4, head, 6);
    out[10] = 0;
    out[11] = (uint8_t)edns;
    memcpy(out + 12, q + 12, qend - 12);
    if (!edns)
        return qend;
    uint8_t *o = out + qend;
    static const uint8_t opt[11] = {0, 0, 41, 0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(o, opt, NLD_OPT_LEN);
    o[3] = q[qend + 3];
    o[4] = q[qend + 4];
    o[7] = q[qend + 7] & 0x80;
    return qend + NLD_OPT_LEN;
}

/* The counter slot for key in table t of size slots (a power of two; claimed if new), or NULL
 * when the table is at its 3/4 bound. */
static nld_stat_slot *slot_in(nld_stat_slot *t, size_t size, size_t *used, uint64_t key) {
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ULL) >> 51) & (size - 1);
    for (;;) {
        nld_stat_slot *s = &t[i];
        uint64_t k = atomic_load_explicit(&s->key, memory_order_relaxed);
        if (k == key)
            return s;
        if (k == 0) {
            if (*used >= size / 4 * 3)
                return NULL;
            (*used)++;
            atomic_store_explicit(&s->key, key, memory_order_release);
            return s;
        }
        i = (i + 1) & (size - 1);
    }
}

static nld_stat_slot *stat_slot(nld_worker *w, uint64_t key) { return slot_in(w->stats, NLD_STATS, &w->nstats, key); }

static uint64_t hit_key(const nld_hit *h, size_t len) {
    return h->e->stat | ((uint64_t)len << 3) | ((uint64_t)h->do_bit << 1) | (uint64_t)(h->edns ? 1 : 0);
}

static int push_refresh(nld_worker *w, const uint8_t *data, size_t len) {
    size_t head = atomic_load_explicit(&w->rhead, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&w->rtail, memory_order_acquire);
    if (head - tail >= NLD_REFRESH || len > NLD_RING_INLINE)
        return 0;
    nld_refresh_slot *s = &w->refresh[head & (NLD_REFRESH - 1)];
    s->len = (uint16_t)len;
    memcpy(s->data, data, len);
    atomic_store_explicit(&w->rhead, head + 1, memory_order_release);
    return 1;
}

/* h: an expired entry (nld_match's "not mine" with h->expired). 1 = serve_stale answers it here
 * (*st: its counter slot, *refresh: its refresh was handed to Python); 0 = hand the packet to
 * Python, which serves it stale itself: no counter room, no room for the refresh request, or its
 * pending slot held by another name. Nothing is claimed when 0 is returned. */
static int stale_here(nld_worker *w, nld_hit *h, const uint8_t *pkt, size_t len, double now,
                      nld_stat_slot **st, int *refresh) {
    if (!nld_stale(w->ix, h, now) || h->len > NLD_OUT_CAP)
        return 0;
    *st = slot_in(w->stale_stats, NLD_STALE_STATS, &w->nstale, hit_key(h, len));
    if (*st == NULL)
        return 0;
    int took = nld_pending_take(w->ix, h->e);
    if (took < 0)
        return 0;
    *refresh = took;
    if (took && !push_refresh(w, pkt, len)) {
        nld_pending_clear(w->ix, nld_e_key(h->e), h->e->keylen);
        return 0;
    }
    return 1;
}

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* time.monotonic() and the event loop's clock */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void send_all(nld_worker *w, unsigned k, uint64_t *errs) {
    unsigned sent = 0;
    while (sent < k) {
        int r = sendmmsg(w->fd, w->out + sent, k - sent, MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            (*errs)++; /* this datagram is lost (full buffer, unreachable peer); go on */
            sent++;
        } else {
            sent += (unsigned)r;
        }
    }
}

/* Wake the Python consumer once, if it armed the eventfd (misses, refreshes and NX results). */
static void wake(nld_worker *w) {
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_exchange(&w->armed, 0)) {
        uint64_t one = 1;
        (void)!write(w->wakefd, &one, sizeof(one));
    }
}

static void *run(void *arg) {
    nld_worker *w = arg;
    struct pollfd pfd[3] = {{.fd = w->fd, .events = POLLIN}, {.fd = w->stopfd, .events = POLLIN},
                            {.fd = w->nx.ep, .events = POLLIN}};
    int idle = 1; /* the last batch was short: the queue is likely empty, so poll before reading */
    while (!atomic_load_explicit(&w->stop, memory_order_acquire)) {
        if (idle) {
            /* returns at once when datagrams wait: one syscall, not an EAGAIN; else at the next
             * NX deadline (the oldest query in flight times out) */
            pfd[0].revents = pfd[2].revents = 0;
            poll(pfd, 3, nld_nx_poll_ms(w, monotonic()));
            nld_nx_io(w, monotonic(), pfd[2].revents != 0);
            if (w->nx.woke) {
                w->nx.woke = 0;
                wake(w);
            }
            idle = pfd[0].revents == 0;
            continue;
        }
        for (unsigned i = 0; i < w->batch; i++) {
            w->iin[i].iov_len = NLD_UDP_BUF;
            w->in[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
        }
        int n = recvmmsg(w->fd, w->in, w->batch, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
                idle = 1;
            } else if (errno != EINTR) {
                nld_bump(&w->c.recv_errors, 1);
                if (errno == EBADF || errno == ENOTSOCK)
                    break; /* the socket went away under us: nothing left to serve */
            }
            continue;
        }
        idle = (unsigned)n < w->batch;
        double now = monotonic(), real = now; /* the exchange's timeouts are real time */
        uint64_t pin = atomic_load_explicit(&w->pinned, memory_order_relaxed);
        if (pin) /* an injected clock (tests, a server not on the monotonic clock) sets the time */
            memcpy(&now, &pin, sizeof(now));
        unsigned k = 0;
        uint64_t handed = 0, refused = 0, dropped = 0, errs = 0, stale = 0, refreshes = 0;
        nld_index_rdlock(w->ix);
        for (int i = 0; i < n; i++) {
            const uint8_t *pkt = w->iin[i].iov_base;
            size_t len = w->in[i].msg_len;
            nld_hit h;
            h.known = 0;
            nld_stat_slot *st = NULL;
            int refresh = 0, answer = 0;
            if (nld_match(w->ix, pkt, len, now, 0, &h)) {
                answer = h.len <= NLD_OUT_CAP && (st = stat_slot(w, hit_key(&h, len))) != NULL;
            } else if (h.expired && stale_here(w, &h, pkt, len, now, &st, &refresh)) {
                answer = 1; /* serve_stale, immediate: the answer now, the refresh in Python */
                stale++;
                refreshes += (uint64_t)refresh;
            }
            if (answer) {
                uint8_t *o = w->outbuf + (size_t)k * NLD_OUT_CAP;
                nld_render(&h, pkt, o);
                if (nld_e_lb(h.e) != NULL)
                    nld_shuffle(&h, o, &w->rng, w->scratch);
                w->iout[k].iov_base = o;
                w->iout[k].iov_len = h.len;
                w->out[k].msg_hdr.msg_name = &w->addrs[i];
                w->out[k].msg_hdr.msg_namelen = w->in[i].msg_hdr.msg_namelen;
                w->hitslot[k] = st;
                k++;
            } else if (nld_nx_take(w, pkt, len, &w->addrs[i], w->in[i].msg_hdr.msg_namelen, h.known, real)) {
                continue; /* sent upstream after the batch; its result comes back to Python */
            } else if (push(w, pkt, len, &w->addrs[i], w->in[i].msg_hdr.msg_namelen, h.known)) {
                handed++;
            } else {
                uint8_t *o = w->outbuf + (size_t)k * NLD_OUT_CAP;
                size_t rl = refuse(pkt, len, o);
                if (rl) { /* sent with the hits: one sendmmsg, and the time share is the hits' only */
                    w->iout[k].iov_base = o;
                    w->iout[k].iov_len = rl;
                    w->out[k].msg_hdr.msg_name = &w->addrs[i];
                    w->out[k].msg_hdr.msg_namelen = w->in[i].msg_hdr.msg_namelen;
                    w->hitslot[k] = NULL;
                    k++;
                    refused++;
                } else {
                    dropped++;
                }
            }
        }
        nld_index_unlock(w->ix);
        if (k > refused) {
            /* Each hit's duration is its share of the batch (what Python's per-hit timer sums to). */
            double spent = pin ? 0.0 : monotonic() - now;
            uint64_t share = (uint64_t)(spent * 1e9) / (k - refused);
            for (unsigned j = 0; j < k; j++) {
                if (w->hitslot[j] == NULL) /* a REFUSED, not a hit */
                    continue;
                nld_bump(&w->hitslot[j]->hits, 1);
                nld_bump(&w->hitslot[j]->ns, share);
            }
        }
        /* Counted before the write, like the Python path: a scrape after the answer sees it. */
        nld_bump(&w->c.packets, (uint64_t)n);
        nld_bump(&w->c.hits, k - refused - stale);
        nld_bump(&w->c.stale, stale);
        nld_bump(&w->c.refreshes, refreshes);
        nld_bump(&w->c.handed, handed);
        nld_bump(&w->c.refused, refused);
        nld_bump(&w->c.dropped, dropped);
        nld_bump(&w->c.batches, 1);
        if (k)
            send_all(w, k, &errs);
        nld_bump(&w->c.send_errors, errs);
        nld_nx_flush(w, real);
        nld_nx_io(w, real, 0);
        if (handed || refreshes || w->nx.woke) {
            w->nx.woke = 0;
            wake(w);
        }
    }
    /* Nothing is in flight once the thread ends: what was pending is handed back to Python. */
    nld_nx_cancel(w, monotonic());
    atomic_store_explicit(&w->c.nx_pending, 0, memory_order_relaxed);
    atomic_store(&w->running, 0);
    return NULL;
}

int nld_worker_start(nld_worker *w) {
    if (w->started)
        return EALREADY;
    atomic_store(&w->running, 1);
    /* The thread inherits a full signal mask: signals go to Python's threads, never here. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&w->thread, NULL, run, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0)
        w->started = 1;
    else
        atomic_store(&w->running, 0);
    return rc;
}

void nld_worker_stop(nld_worker *w) {
    atomic_store_explicit(&w->stop, 1, memory_order_release);
    if (!w->started)
        return;
    uint64_t one = 1;
    (void)!write(w->stopfd, &one, sizeof(one));
    pthread_join(w->thread, NULL);
    w->started = 0;
}

void nld_worker_free(nld_worker *w) {
    if (w == NULL)
        return;
    nld_worker_stop(w);
    if (w->stopfd >= 0)
        close(w->stopfd);
    if (w->wakefd >= 0)
        close(w->wakefd);
    if (w->ring != NULL) /* the thread is joined: what Python never drained */
        for (size_t t = atomic_load(&w->tail), h = atomic_load(&w->head); t != h; t++)
            free(w->ring[t & w->ring_mask].big);
    free(w->ring);
    free(w->in);
    free(w->out);
    free(w->iin);
    free(w->iout);
    free(w->addrs);
    free(w->inbuf);
    free(w->outbuf);
    free(w->stats);
    free(w->hitslot);
    free(w->scratch);
    free(w->refresh);
    free(w->stale_stats);
    nld_nx_free(w);
    free(w);
}

const nld_ring_slot *nld_worker_peek(nld_worker *w) {
    size_t tail = atomic_load_explicit(&w->tail, memory_order_relaxed);
    size_t head = atomic_load_explicit(&w->head, memory_order_acquire);
    return tail == head ? NULL : &w->ring[tail & w->ring_mask];
}

void nld_worker_release(nld_worker *w) {
    size_t tail = atomic_load_explicit(&w->tail, memory_order_relaxed);
    nld_ring_slot *s = &w->ring[tail & w->ring_mask];
    free(s->big); /* before the slot goes back to the worker */
    s->big = NULL;
    atomic_store_explicit(&w->tail, tail + 1, memory_order_release);
}

int nld_worker_pending(nld_worker *w) {
    return nld_worker_peek(w) != NULL || nld_worker_refresh_peek(w) != NULL || nld_nx_peek(w) != NULL;
}

void nld_worker_rearm(nld_worker *w) {
    uint64_t v;
    (void)!read(w->wakefd, &v, sizeof(v)); /* consume the wake-up this drain answered */
    uint64_t one = 1;
    if (nld_worker_pending(w)) { /* more waits: stay readable */
        (void)!write(w->wakefd, &one, sizeof(one));
        return;
    }
    atomic_store(&w->armed, 1);
    atomic_thread_fence(memory_order_seq_cst);
    if (nld_worker_pending(w) && atomic_exchange(&w->armed, 0)) /* raced with a push */
        (void)!write(w->wakefd, &one, sizeof(one));
}

const nld_refresh_slot *nld_worker_refresh_peek(nld_worker *w) {
    size_t tail = atomic_load_explicit(&w->rtail, memory_order_relaxed);
    size_t head = atomic_load_explicit(&w->rhead, memory_order_acquire);
    return tail == head ? NULL : &w->refresh[tail & (NLD_REFRESH - 1)];
}

void nld_worker_refresh_release(nld_worker *w) {
    size_t tail = atomic_load_explicit(&w->rtail, memory_order_relaxed);
    atomic_store_explicit(&w->rtail, tail + 1, memory_order_release);
}
