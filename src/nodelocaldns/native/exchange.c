/* NX, the plain forward exchange: the worker's I/O side. An index miss its zone row forwards is
 * sent on a connected UDP socket to the chosen upstream with a fresh random ID; the reply (or a
 * timeout, or the socket's error) becomes a result for Python, which keeps every decision: what
 * is cached, the metrics, health and failover. The pure checks are in nx.c. Runs on the worker
 * thread only, except the consumer's peek/release. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <unistd.h>

#include "udp.h"

int nld_nx_init(nld_worker *w, size_t ring) {
    nld_nx *x = &w->nx;
    x->ep = epoll_create1(EPOLL_CLOEXEC);
    x->first = x->last = -1;
    x->mask = ring - 1;
    x->npool = ring < 65535 ? ring : 65535;
    /* malloc'd, not touched: pages appear only once queries are exchanged */
    x->ring = malloc(ring * sizeof(nld_nx_result));
    x->pend = malloc(x->npool * sizeof(nld_nx_pend));
    x->freel = malloc(x->npool * sizeof(int32_t));
    x->tosend = malloc(w->batch * sizeof(int32_t));
    x->run = malloc(w->batch * sizeof(int32_t));
    x->mm = malloc(w->batch * sizeof(struct mmsghdr));
    x->iov = malloc(w->batch * sizeof(struct iovec));
    x->by_id = calloc(65536, sizeof(uint16_t));
    x->rbuf = malloc((size_t)NLD_NX_RBATCH * 65536); /* virtual: a reply touches its own pages */
    x->timeout = 2.0;
    x->expire = 10.0;
    if (x->ep < 0 || !x->ring || !x->pend || !x->freel || !x->tosend || !x->run || !x->mm || !x->iov || !x->by_id || !x->rbuf)
        return errno ? errno : ENOMEM;
    return 0; /* slots below x->used are in use or on the free list; the rest were never touched */
}

void nld_nx_free(nld_worker *w) {
    nld_nx *x = &w->nx;
    if (x->ring != NULL) /* the thread is joined: results Python never took */
        for (size_t t = atomic_load(&x->tail), h = atomic_load(&x->head); t != h; t++)
            free(x->ring[t & x->mask].reply);
    while (x->socks != NULL) {
        nld_nx_sock *s = x->socks;
        x->socks = s->next;
        close(s->fd);
        free(s);
    }
    if (x->ep >= 0)
        close(x->ep);
    free(x->ring);
    free(x->pend);
    free(x->freel);
    free(x->tosend);
    free(x->run);
    free(x->mm);
    free(x->iov);
    free(x->by_id);
    free(x->rbuf);
    free(x->cur);
    free(x->rr);
}

static void fifo_unlink(nld_nx *x, int32_t i) {
    nld_nx_pend *p = &x->pend[i];
    if (p->prev >= 0)
        x->pend[p->prev].next = p->next;
    else
        x->first = p->next;
    if (p->next >= 0)
        x->pend[p->next].prev = p->prev;
    else
        x->last = p->prev;
}

/* Pending slot i is done: its result goes to Python. The ring always has room: a query is only
 * taken while pending + results fit in it. */
static void complete(nld_worker *w, int32_t i, const uint8_t *reply, size_t rlen, int err, double now) {
    nld_nx *x = &w->nx;
    nld_nx_pend *p = &x->pend[i];
    size_t head = atomic_load_explicit(&x->head, memory_order_relaxed);
    nld_nx_result *r = &x->ring[head & x->mask];
    int room = head - atomic_load_explicit(&x->tail, memory_order_acquire) <= x->mask;
    if (room) {
        r->reply = NULL;
        r->rlen = 0;
        if (reply != NULL && (r->reply = malloc(rlen)) == NULL)
            err = ENOMEM;
        if (r->reply != NULL) {
            memcpy(r->reply, reply, rlen);
            nld_nx_set_id(r->reply, p->cid);
            r->rlen = (uint32_t)rlen;
        }
        r->err = err;
        r->uid = p->uid;
        r->qlen = p->qlen;
        memcpy(r->q, p->q, p->qlen);
        nld_nx_set_id(r->q, p->cid); /* the query as the client sent it */
        r->seconds = now - p->sent;
        r->alen = p->alen;
        memcpy(&r->addr, &p->addr, sizeof(r->addr));
        atomic_store_explicit(&x->head, head + 1, memory_order_release);
        x->woke = 1;
    }
    if (err != ECANCELED) /* the worker's own stop: no exchange failed */
        nld_bump(err == 0 ? &w->c.nx_replies : err == ETIMEDOUT ? &w->c.nx_timeouts : &w->c.nx_errors, 1);
    fifo_unlink(x, i);
    x->by_id[p->id] = 0;
    if (p->s != NULL)
        p->s->npend--;
    p->state = 0;
    x->freel[x->nfree++] = i;
    x->npending--;
}

/* The worker stops (a reload's new index, multisocket shrinking, shutdown): every query still in
 * flight becomes an ECANCELED result, which Python answers on its own path, so the client is not
 * left to time out and retry. The ring has room for each (a query is only taken while it does). */
void nld_nx_cancel(nld_worker *w, double now) {
    nld_nx *x = &w->nx;
    while (x->first >= 0)
        complete(w, x->first, NULL, 0, ECANCELED, now);
    x->ntosend = 0;
}

static void drop_cur(nld_nx *x, const nld_nx_sock *s) {
    for (size_t i = 0; i < x->ncur; i++)
        if (x->cur[i] == s)
            x->cur[i] = NULL;
}

/* An error on s (ECONNREFUSED from an ICMP port unreachable, ...): every query on it fails now
 * and the socket is closed; the next query to that upstream opens a new one. */
static void fail_sock(nld_worker *w, nld_nx_sock *s, int err, double now) {
    nld_nx *x = &w->nx;
    for (int32_t i = x->first, next; i >= 0; i = next) {
        next = x->pend[i].next;
        if (x->pend[i].s == s)
            complete(w, i, NULL, 0, err, now);
    }
    s->dead = 1;
    drop_cur(x, s);
}

static int same_addr(const nld_nx_sock *s, const nld_nx_up *u) {
    return s->alen == u->alen && memcmp(&s->addr, &u->addr, u->alen) == 0;
}

/* A new table (or none): keep the sockets whose upstream is still listed, retire the others. */
static void sync_table(nld_worker *w, const nld_fwd *t) {
    nld_nx *x = &w->nx;
    size_t nups = t != NULL ? t->nups : 0, nz = t != NULL ? t->nzones : 0;
    x->gen = t != NULL ? t->gen : 0;
    free(x->cur);
    free(x->rr);
    x->cur = nups ? calloc(nups, sizeof(*x->cur)) : NULL;
    x->rr = nz ? calloc(nz, sizeof(*x->rr)) : NULL;
    x->ncur = x->cur != NULL ? nups : 0; /* no memory: ncur != nups, nothing is taken */
    x->nrr = x->rr != NULL ? nz : 0;
    if (t != NULL) {
        x->timeout = t->timeout;
        x->expire = t->expire;
        x->max_pending = t->max_pending;
    }
    for (nld_nx_sock *s = x->socks; s != NULL; s = s->next) {
        int kept = 0;
        for (size_t i = 0; !s->dead && !s->retired && i < x->ncur; i++)
            if (same_addr(s, &t->ups[i])) {
                x->cur[i] = s;
                kept = 1;
            }
        if (!kept)
            s->retired = 1;
    }
}

static nld_nx_sock *sock_open(nld_nx *x, const nld_nx_up *u, double now, int *err) {
    nld_nx_sock *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        *err = ENOMEM;
        return NULL;
    }
    s->fd = socket(u->addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
    /* connect: the kernel picks a random source port and drops datagrams from anyone else */
    if (s->fd < 0 || connect(s->fd, (const struct sockaddr *)&u->addr, u->alen) != 0 ||
        epoll_ctl(x->ep, EPOLL_CTL_ADD, s->fd, &ev) != 0) {
        *err = errno ? errno : EIO;
        if (s->fd >= 0)
            close(s->fd);
        free(s);
        return NULL;
    }
    s->born = now;
    s->alen = u->alen;
    memcpy(&s->addr, &u->addr, u->alen);
    s->next = x->socks;
    x->socks = s;
    return s;
}

/* A fresh unpredictable ID no query of this worker has in flight (getrandom, 128 at a time: a
 * request of 256 bytes is never cut short). -1: none (the query goes to Python). */
static int fresh_id(nld_nx *x) {
    for (int tries = 0; tries < 8; tries++) {
        if (x->nids == 0) {
            if (getrandom(x->ids, sizeof(x->ids), 0) != (ssize_t)sizeof(x->ids))
                return -1;
            x->nids = sizeof(x->ids) / sizeof(x->ids[0]);
        }
        uint16_t id = x->ids[--x->nids];
        if (x->by_id[id] == 0)
            return id;
    }
    return -1;
}

int nld_nx_take(nld_worker *w, const uint8_t *pkt, size_t len, const struct sockaddr_storage *a,
                socklen_t alen, int known, double now) {
    nld_nx *x = &w->nx;
    const nld_fwd *t = w->ix->fwd; /* under the index's read lock: set_forward swaps it under the write lock */
    if ((t != NULL ? t->gen : 0) != x->gen)
        sync_table(w, t);
    size_t qend;
    int edns;
    if (t == NULL || known || len > NLD_NX_QMAX || atomic_load_explicit(&w->shed, memory_order_relaxed) ||
        !nld_nx_plain(pkt, len, &qend, &edns))
        return 0;
    long z = nld_nx_route(t, pkt + 12, qend - 16, (uint16_t)((pkt[qend - 4] << 8) | pkt[qend - 3]));
    if (z < 0 || t->zones[z].n == 0)
        return 0;
    size_t results = atomic_load_explicit(&x->head, memory_order_relaxed) -
                     atomic_load_explicit(&x->tail, memory_order_acquire);
    if ((x->nfree == 0 && x->used == x->npool) || x->npending + results > x->mask || (x->max_pending && x->npending >= x->max_pending) ||
        x->ncur != t->nups || x->nrr != t->nzones || x->ntosend >= w->batch)
        return 0;
    int id = fresh_id(x);
    if (id < 0)
        return 0;
    const nld_nx_zone *zr = &t->zones[z];
    size_t u = zr->first;
    if (zr->policy == NLD_NX_RANDOM)
        u += nld_rand16(&w->rng) % zr->n;
    else if (zr->policy == NLD_NX_ROUND_ROBIN)
        u += x->rr[z]++ % zr->n;
    nld_nx_sock *s = x->cur[u];
    if (s != NULL && now - s->born >= x->expire) { /* no new query: closed when its last is done */
        s->retired = 1;
        drop_cur(x, s);
        s = NULL;
    }
    int err = 0;
    if (s == NULL && (s = sock_open(x, &t->ups[u], now, &err)) != NULL)
        x->cur[u] = s;
    int32_t i = x->nfree ? x->freel[--x->nfree] : (int32_t)x->used++;
    nld_nx_pend *p = &x->pend[i];
    memcpy(p->q, pkt, len);
    p->cid = nld_nx_id(pkt);
    p->id = (uint16_t)id;
    nld_nx_set_id(p->q, p->id);
    p->qlen = (uint16_t)len;
    p->qend = (uint16_t)qend;
    p->uid = t->ups[u].uid;
    p->s = s;
    p->sent = now;
    p->alen = alen;
    memcpy(&p->addr, a, alen <= sizeof(p->addr) ? alen : sizeof(p->addr));
    p->state = 1;
    p->next = -1;
    p->prev = x->last;
    if (x->last >= 0)
        x->pend[x->last].next = i;
    else
        x->first = i;
    x->last = i;
    x->by_id[p->id] = (uint16_t)(i + 1);
    x->npending++;
    if (s == NULL)
        complete(w, i, NULL, 0, err, now); /* no socket to it (EMFILE, ENETUNREACH): an error now */
    else {
        s->npend++;
        x->tosend[x->ntosend++] = i;
    }
    return 1;
}

static int transient(int e) {
    return e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS || e == ENOMEM || e == EMSGSIZE;
}

/* What this batch took, one sendmmsg per upstream socket. */
void nld_nx_flush(nld_worker *w, double now) {
    nld_nx *x = &w->nx;
    uint64_t sent = 0;
    for (unsigned k = 0; k < x->ntosend; k++) {
        nld_nx_sock *s = x->pend[x->tosend[k]].s;
        if (x->pend[x->tosend[k]].state != 1) /* sent with an earlier run, or failed since */
            continue;
        unsigned m = 0;
        for (unsigned j = k; j < x->ntosend; j++) {
            nld_nx_pend *p = &x->pend[x->tosend[j]];
            if (p->state != 1 || p->s != s)
                continue;
            x->run[m] = x->tosend[j];
            x->iov[m] = (struct iovec){.iov_base = p->q, .iov_len = p->qlen};
            x->mm[m].msg_hdr = (struct msghdr){.msg_iov = &x->iov[m], .msg_iovlen = 1};
            m++;
        }
        for (unsigned off = 0; off < m && !s->dead;) {
            int r = sendmmsg(s->fd, x->mm + off, m - off, MSG_DONTWAIT);
            if (r > 0) {
                for (int d = 0; d < r; d++)
                    x->pend[x->run[off + (unsigned)d]].state = 2;
                sent += (uint64_t)r;
                off += (unsigned)r;
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            int e = r < 0 ? errno : EIO;
            if (transient(e)) { /* this datagram only: the socket is fine */
                complete(w, x->run[off], NULL, 0, e, now);
                off++;
            } else {
                fail_sock(w, s, e, now); /* ECONNREFUSED left by an earlier ICMP, ...: all of them */
            }
        }
    }
    x->ntosend = 0;
    nld_bump(&w->c.nx_sent, sent);
    atomic_store_explicit(&w->c.nx_pending, x->npending, memory_order_relaxed);
}

/* Up to 8 rounds of NLD_NX_RBATCH replies (then back to the clients; epoll reports the rest
 * again). Each buffer holds any UDP datagram whole; only the pages a reply touches are resident. */
static void read_sock(nld_worker *w, nld_nx_sock *s, double now) {
    nld_nx *x = &w->nx;
    uint64_t bad = 0;
    for (int round = 0; round < 8; round++) {
        for (unsigned j = 0; j < NLD_NX_RBATCH; j++) {
            x->riov[j] = (struct iovec){.iov_base = x->rbuf + (size_t)j * 65536, .iov_len = 65536};
            x->rmm[j].msg_hdr = (struct msghdr){.msg_iov = &x->riov[j], .msg_iovlen = 1};
        }
        int r = recvmmsg(s->fd, x->rmm, NLD_NX_RBATCH, MSG_DONTWAIT, NULL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fail_sock(w, s, errno, now);
            break;
        }
        for (int j = 0; j < r; j++) {
            const uint8_t *b = x->rbuf + (size_t)j * 65536;
            size_t n = x->rmm[j].msg_len;
            uint16_t at = n >= 12 ? x->by_id[nld_nx_id(b)] : 0;
            nld_nx_pend *p = at ? &x->pend[at - 1] : NULL;
            if (p == NULL || p->s != s || p->state != 2 || (x->rmm[j].msg_hdr.msg_flags & MSG_TRUNC) ||
                !nld_nx_reply_ok(b, n, p->q, p->qend)) {
                bad++; /* late (timed out), spoofed, or not the reply to this question */
                continue;
            }
            complete(w, at - 1, b, n, 0, now);
        }
        if (r < (int)NLD_NX_RBATCH) /* drained: no EAGAIN round trip */
            break;
    }
    nld_bump(&w->c.nx_mismatched, bad);
}

void nld_nx_io(nld_worker *w, double now, int polled) {
    nld_nx *x = &w->nx;
    if (x->socks == NULL && x->first < 0)
        return;
    /* While queries are in flight, or when the idle poll saw the set readable (a late reply, an
     * idle socket's error): a batch of hits alone pays no syscall here. */
    if (x->first >= 0 || polled) {
        struct epoll_event ev[32];
        int n = epoll_wait(x->ep, ev, 32, 0);
        for (int i = 0; i < n; i++) {
            nld_nx_sock *s = ev[i].data.ptr;
            if (!s->dead) /* freed only below, after every event of this call */
                read_sock(w, s, now);
        }
    }
    while (x->first >= 0 && now - x->pend[x->first].sent >= x->timeout)
        complete(w, x->first, NULL, 0, ETIMEDOUT, now);
    for (nld_nx_sock **pp = &x->socks; *pp != NULL;) {
        nld_nx_sock *s = *pp;
        if (s->npend == 0 && (s->dead || s->retired || now - s->born >= x->expire)) {
            drop_cur(x, s);
            *pp = s->next;
            close(s->fd); /* also leaves the epoll set */
            free(s);
        } else {
            pp = &s->next;
        }
    }
    atomic_store_explicit(&w->c.nx_pending, x->npending, memory_order_relaxed);
}

int nld_nx_poll_ms(nld_worker *w, double now) {
    nld_nx *x = &w->nx;
    double at = -1.0; /* the next deadline: the oldest query's, else the oldest idle socket's close */
    if (x->first >= 0)
        at = x->pend[x->first].sent + x->timeout;
    else
        for (nld_nx_sock *s = x->socks; s != NULL; s = s->next)
            if (at < 0 || s->born + x->expire < at)
                at = s->born + x->expire;
    if (at < 0)
        return -1;
    double left = at - now;
    return left <= 0 ? 0 : left > 86400.0 ? 86400000 : (int)(left * 1000.0) + 1;
}

const nld_nx_result *nld_nx_peek(nld_worker *w) {
    size_t tail = atomic_load_explicit(&w->nx.tail, memory_order_relaxed);
    size_t head = atomic_load_explicit(&w->nx.head, memory_order_acquire);
    return tail == head ? NULL : &w->nx.ring[tail & w->nx.mask];
}

void nld_nx_release(nld_worker *w) {
    size_t tail = atomic_load_explicit(&w->nx.tail, memory_order_relaxed);
    nld_nx_result *r = &w->nx.ring[tail & w->nx.mask];
    free(r->reply);
    r->reply = NULL;
    atomic_store_explicit(&w->nx.tail, tail + 1, memory_order_release);
}
