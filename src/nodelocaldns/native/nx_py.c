/* Index.set_forward: the NX table (nx.h) the workers forward index misses by. */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "pymod.h"
#include "nx.h"

static uint64_t generation; /* under the GIL: each table a worker sees is a new one */

static int bad(const char *why) {
    PyErr_SetString(PyExc_ValueError, why);
    return -1;
}

static int parse_up(PyObject *item, nld_nx_up *u) {
    int uid, port;
    const char *host;
    if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "isi", &uid, &host, &port))
        return PyErr_Occurred() ? -1 : bad("an upstream is (uid, host, port)");
    if (uid < 0 || uid > 65535 || port < 1 || port > 65535)
        return bad("an upstream's uid must be 0..65535 and its port 1..65535");
    memset(u, 0, sizeof(*u));
    u->uid = (uint16_t)uid;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&u->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&u->addr;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        u->alen = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        u->alen = sizeof(*v6);
    } else {
        PyErr_Format(PyExc_ValueError, "upstream host %R is not an IPv4 or IPv6 address", PyTuple_GET_ITEM(item, 1));
        return -1;
    }
    return 0;
}

/* Row z of rows into t->zones[z] and its upstreams from t->ups[*nup]. */
static int parse_row(PyObject *row, nld_fwd *t, size_t z, size_t *nup) {
    Py_buffer name;
    PyObject *ups;
    int policy;
    if (!PyTuple_Check(row) || !PyArg_ParseTuple(row, "y*O!i", &name, &PyList_Type, &ups, &policy))
        return PyErr_Occurred() ? -1 : bad("a row is (zone_wire, upstreams, policy)");
    nld_nx_zone *zr = &t->zones[z];
    int rc = 0;
    if (!nld_nx_name_valid(name.buf, (size_t)name.len))
        rc = bad("a zone must be a wire name (labels of 1..63 bytes, the root last, 255 bytes at most)");
    else if (policy < NLD_NX_RANDOM || policy > NLD_NX_SEQUENTIAL)
        rc = bad("policy must be 0 (random), 1 (round_robin) or 2 (sequential)");
    else if (PyList_GET_SIZE(ups) > 65535)
        rc = bad("too many upstreams");
    if (rc == 0) {
        const uint8_t *n = name.buf;
        for (Py_ssize_t i = 0; i < name.len; i++) /* folded here: the route compares folded too */
            zr->name[i] = n[i] >= 'A' && n[i] <= 'Z' ? (uint8_t)(n[i] + 32) : n[i];
        zr->len = (uint16_t)name.len;
        zr->policy = (uint8_t)policy;
        zr->first = (uint16_t)*nup;
        zr->n = (uint16_t)PyList_GET_SIZE(ups);
        for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(ups); i++)
            rc = parse_up(PyList_GET_ITEM(ups, i), &t->ups[(*nup)++]);
    }
    PyBuffer_Release(&name);
    return rc;
}

PyObject *nld_index_set_forward(PyObject *obj, PyObject *args, PyObject *kw) {
    static char *names[] = {"table", "timeout", "expire", "max_pending", NULL};
    IndexObject *self = (IndexObject *)obj;
    PyObject *table;
    double timeout, expire;
    Py_ssize_t max_pending;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O$ddn", names, &table, &timeout, &expire, &max_pending))
        return NULL;
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Index not initialised");
        return NULL;
    }
    if (!isfinite(timeout) || timeout <= 0 || timeout > 3600 || !isfinite(expire) || expire < 0 || max_pending < 0) {
        PyErr_SetString(PyExc_ValueError, "timeout must be 0..3600 s (not 0), expire >= 0 and max_pending >= 0");
        return NULL;
    }
    nld_fwd *t = NULL;
    if (table != Py_None) {
        if (!PyList_Check(table)) {
            PyErr_SetString(PyExc_TypeError, "table must be a list of rows or None");
            return NULL;
        }
        size_t nz = (size_t)PyList_GET_SIZE(table), nups = 0;
        for (size_t z = 0; z < nz; z++) {
            PyObject *row = PyList_GET_ITEM(table, z);
            PyObject *ups = PyTuple_Check(row) && PyTuple_GET_SIZE(row) == 3 ? PyTuple_GET_ITEM(row, 1) : NULL;
            if (ups == NULL || !PyList_Check(ups)) {
                PyErr_SetString(PyExc_ValueError, "a row is (zone_wire, upstreams: list, policy)");
                return NULL;
            }
            nups += (size_t)PyList_GET_SIZE(ups);
        }
        if (nups > 65535) {
            PyErr_SetString(PyExc_ValueError, "too many upstreams");
            return NULL;
        }
        if (nz > 0) {
            t = calloc(1, sizeof(*t) + nups * sizeof(nld_nx_up) + nz * sizeof(nld_nx_zone));
            if (t == NULL)
                return PyErr_NoMemory();
            t->ups = (nld_nx_up *)(t + 1);
            t->zones = (nld_nx_zone *)(t->ups + nups);
            t->nzones = nz;
            t->nups = nups;
            size_t at = 0;
            for (size_t z = 0; z < nz; z++)
                if (parse_row(PyList_GET_ITEM(table, z), t, z, &at) < 0) {
                    free(t);
                    return NULL;
                }
            t->timeout = timeout;
            t->expire = expire;
            t->max_pending = (size_t)max_pending;
            t->gen = ++generation;
        }
    }
    nld_fwd *old;
    Py_BEGIN_ALLOW_THREADS pthread_rwlock_wrlock(&self->ix.lock); /* no worker is inside a batch */
    old = self->ix.fwd;
    self->ix.fwd = t;
    pthread_rwlock_unlock(&self->ix.lock);
    Py_END_ALLOW_THREADS free(old); /* the workers keep no pointer into it */
    Py_RETURN_NONE;
}
