/* serve_stale in the native worker: the block's stale window and TTL per index slot, and the set
 * of names whose refresh Python is running (at most one per name in flight, as the cache's
 * `refreshing` flag keeps it on the Python path).
 *
 * The reference is plugins/cache/fastpath.answer with ``stale`` (what plugins/cache/handler's
 * _serve_stale sends in immediate mode): expired (TTL <= 0) and now - (stored + orig) < window, every
 * TTL set to the stale response TTL. The comparison is the same double arithmetic as Python's.
 */
#include <math.h>

#include "nld.h"

int nld_stale(const nld_index *ix, nld_hit *h, double now) {
    if (!h->expired || h->e == NULL || !isfinite(now))
        return 0;
    unsigned slot = h->e->stale;
    if (slot == 0 || slot >= NLD_STALE_CFGS)
        return 0;
    const nld_stale_cfg *c = &ix->stale[slot];
    double expires = h->e->stored + (double)h->e->orig; /* Cached.expires */
    if (!(c->window > 0.0) || !(now - expires < c->window))
        return 0;
    h->ttl = c->ttl;
    return 1;
}

int nld_stale_set(nld_index *ix, unsigned slot, double window, uint32_t ttl) {
    if (slot == 0 || slot >= NLD_STALE_CFGS || !isfinite(window) || window < 0.0)
        return -1;
    pthread_rwlock_wrlock(&ix->lock); /* no worker reads a half-written slot */
    ix->stale[slot].window = window;
    ix->stale[slot].ttl = ttl;
    pthread_rwlock_unlock(&ix->lock);
    return 0;
}

static _Atomic uint64_t *pending_slot(nld_index *ix, const uint8_t *key, size_t n, uint64_t *h) {
    *h = nld_siphash13(ix->k0, ix->k1, key, n) | 1; /* never 0: 0 marks a free slot */
    return &ix->pending[(*h >> 1) & (NLD_PENDING - 1)];
}

int nld_pending_take(nld_index *ix, const nld_entry *e) {
    uint64_t h;
    _Atomic uint64_t *p = pending_slot(ix, nld_e_key(e), e->keylen, &h);
    uint64_t cur = 0;
    if (atomic_compare_exchange_strong(p, &cur, h))
        return 1;
    return cur == h ? 0 : -1;
}

int nld_pending_clear(nld_index *ix, const uint8_t *key, size_t n) {
    uint64_t h;
    _Atomic uint64_t *p = pending_slot(ix, key, n, &h);
    uint64_t cur = h;
    return atomic_compare_exchange_strong(p, &cur, 0) ? 1 : 0;
}
