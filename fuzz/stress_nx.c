/* ThreadSanitizer stress for NX (exchange.c): two real workers forward every miss to real UDP
 * upstreams on 127.0.0.1 (threads here that answer most queries, ignore some, and send some
 * garbage), a consumer thread drains both rings as Python does, and the main thread swaps the
 * forward table (upstream A, upstream B, none) under the index's write lock as set_forward
 * does. Run by `make fuzz` for a few seconds; any data race, leak of a slot or lost result fails it.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "udp.h"

static nld_index ix;
static atomic_int done;
static nld_worker *workers[2];
static struct sockaddr_in srv[2], ups[2];
static atomic_ulong results, replies;

static int udp_on(struct sockaddr_in *a) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    memset(a, 0, sizeof(*a));
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(*a);
    assert(fd >= 0 && bind(fd, (struct sockaddr *)a, sizeof(*a)) == 0);
    assert(getsockname(fd, (struct sockaddr *)a, &len) == 0);
    struct timeval tv = {0, 20000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* An upstream: echo the query as its reply (QR set), but ignore every 7th and garble every 11th. */
static void *upstream(void *arg) {
    int fd = (int)(intptr_t)arg;
    uint8_t buf[600];
    unsigned long n = 0;
    while (!atomic_load(&done)) {
        struct sockaddr_in from;
        socklen_t flen = sizeof(from);
        ssize_t r = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
        if (r < 12 || ++n % 7 == 0)
            continue;
        buf[2] |= 0x80;
        if (n % 11 == 0)
            buf[1] ^= 0xFF; /* another ID: mismatched */
        sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&from, flen);
    }
    close(fd);
    return NULL;
}

static void *client(void *arg) {
    (void)arg;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    uint8_t q[64] = {0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 4, 'n', 0, 0, 0, 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0, 0, 1, 0, 1};
    unsigned long i = 0;
    while (!atomic_load(&done)) {
        q[0] = (uint8_t)(i >> 8);
        q[1] = (uint8_t)i;
        q[14] = (uint8_t)('a' + i % 26);
        q[15] = (uint8_t)('a' + i / 26 % 26);
        q[16] = (uint8_t)('a' + i / 676 % 26);
        sendto(fd, q, 30, 0, (struct sockaddr *)&srv[i % 2], sizeof(srv[0]));
        if (++i % 16 == 0)
            usleep(500);
    }
    close(fd);
    return NULL;
}

/* Python's side: drain the misses and the results of both workers, re-arm, check each result. */
static void *consumer(void *arg) {
    (void)arg;
    while (!atomic_load(&done)) {
        for (int k = 0; k < 2; k++) {
            nld_worker *w = workers[k];
            while (nld_worker_peek(w) != NULL)
                nld_worker_release(w);
            const nld_nx_result *r;
            while ((r = nld_nx_peek(w)) != NULL) {
                assert(r->qlen == 30 && (r->uid == 1 || r->uid == 2));
                assert(r->reply != NULL ? r->err == 0 && r->rlen == 30 && memcmp(r->reply, r->q, 2) == 0 : r->err != 0);
                atomic_fetch_add(&results, 1);
                if (r->reply != NULL)
                    atomic_fetch_add(&replies, 1);
                nld_nx_release(w);
            }
            nld_worker_rearm(w);
        }
        usleep(200);
    }
    return NULL;
}

static nld_fwd *table(int which, uint64_t gen) {
    nld_fwd *t = calloc(1, sizeof(*t) + sizeof(nld_nx_up) + sizeof(nld_nx_zone));
    t->ups = (nld_nx_up *)(t + 1);
    t->zones = (nld_nx_zone *)(t->ups + 1);
    t->nzones = t->nups = 1;
    t->zones[0] = (nld_nx_zone){.name = {0}, .len = 1, .first = 0, .n = 1, .policy = NLD_NX_SEQUENTIAL};
    t->ups[0].uid = (uint16_t)(which + 1);
    t->ups[0].alen = sizeof(struct sockaddr_in);
    memcpy(&t->ups[0].addr, &ups[which], sizeof(ups[which]));
    t->timeout = 0.05;
    t->expire = (gen % 3) * 0.01; /* 0: a socket per query, else rotated every 10-20 ms */
    t->max_pending = gen % 5 ? 0 : 4;
    t->gen = gen;
    return t;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    assert(nld_index_init(&ix, 64, 0) == 0);
    pthread_t th[5];
    int fds[2];
    for (int k = 0; k < 2; k++) {
        pthread_create(&th[k], NULL, upstream, (void *)(intptr_t)udp_on(&ups[k]));
        fds[k] = udp_on(&srv[k]);
        int err = 0;
        workers[k] = nld_worker_new(fds[k], &ix, 8, 64, &err);
        assert(workers[k] != NULL && nld_worker_start(workers[k]) == 0);
    }
    pthread_create(&th[2], NULL, client, NULL);
    pthread_create(&th[3], NULL, consumer, NULL);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t gen = 0;
    do {
        gen++;
        nld_fwd *next = gen % 9 == 0 ? NULL : table((int)(gen % 2), gen);
        pthread_rwlock_wrlock(&ix.lock); /* as Index.set_forward */
        nld_fwd *old = ix.fwd;
        ix.fwd = next;
        pthread_rwlock_unlock(&ix.lock);
        free(old);
        usleep(2000);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) * 1e-9 < seconds);
    uint64_t sent = 0, mism = 0, tmo = 0;
    for (int k = 0; k < 2; k++) {
        nld_worker_stop(workers[k]); /* with queries in flight and results undrained */
        sent += nld_ld(&workers[k]->c.nx_sent);
        mism += nld_ld(&workers[k]->c.nx_mismatched);
        tmo += nld_ld(&workers[k]->c.nx_timeouts);
    }
    atomic_store(&done, 1);
    for (int k = 0; k < 4; k++)
        pthread_join(th[k], NULL);
    for (int k = 0; k < 2; k++) {
        nld_worker_free(workers[k]);
        close(fds[k]);
    }
    nld_index_destroy(&ix);
    printf("stress_nx: %lu table swaps, %lu sent, %lu results (%lu replies, %lu timeouts), %lu mismatched, no race\n",
           (unsigned long)gen, (unsigned long)sent, atomic_load(&results), atomic_load(&replies), (unsigned long)tmo,
           (unsigned long)mism);
    return sent > 0 && atomic_load(&replies) > 0 && tmo > 0 ? 0 : 1;
}
