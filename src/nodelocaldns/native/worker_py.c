/* nodelocaldns._native.Worker: a started native UDP worker as seen from Python. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <math.h>
#include <poll.h>
#include <string.h>

#include "pymod.h"
#include "udp.h"

typedef struct {
    PyObject_HEAD nld_worker *w;
    PyObject *index; /* keeps the index alive while the thread reads it */
} WorkerObject;

PyObject *nld_serve_udp(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kw) {
    static char *names[] = {"fd", "index", "batch", "ring", NULL};
    int fd;
    PyObject *index;
    unsigned int batch = 32;
    Py_ssize_t ring = 1024;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iO!|In", names, &fd, &IndexType, &index, &batch, &ring))
        return NULL;
    IndexObject *ix = (IndexObject *)index;
    if (!ix->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Index not initialised");
        return NULL;
    }
    if (fd < 0 || ring < 2) {
        PyErr_SetString(PyExc_ValueError, "fd must be an open socket and ring >= 2");
        return NULL;
    }
    int err = 0;
    nld_worker *w = nld_worker_new(fd, &ix->ix, batch, (size_t)ring, &err);
    if (w == NULL) {
        if (err == EINVAL)
            PyErr_SetString(PyExc_ValueError, "batch must be 1..1024, ring a power of two 2..65536");
        else {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
        }
        return NULL;
    }
    WorkerObject *self = PyObject_New(WorkerObject, &WorkerType);
    if (self == NULL) {
        nld_worker_free(w);
        return NULL;
    }
    self->w = w;
    self->index = Py_NewRef(index);
    int rc = nld_worker_start(w);
    if (rc != 0) {
        Py_DECREF(self);
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return (PyObject *)self;
}

static void Worker_dealloc(WorkerObject *self) {
    if (self->w != NULL) {
        Py_BEGIN_ALLOW_THREADS nld_worker_free(self->w);
        Py_END_ALLOW_THREADS
    }
    Py_XDECREF(self->index);
    PyObject_Free(self);
}

/* Append item (a new reference, or NULL after a failed build) to out; on failure both are released
 * and -1 returned with the exception set. */
static int append_new(PyObject *out, PyObject *item) {
    if (item == NULL || PyList_Append(out, item) < 0) {
        Py_XDECREF(item);
        Py_DECREF(out);
        return -1;
    }
    Py_DECREF(item);
    return 0;
}

static PyObject *Worker_stop(WorkerObject *self, PyObject *Py_UNUSED(ignored)) {
    Py_BEGIN_ALLOW_THREADS nld_worker_stop(self->w);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *address(const struct sockaddr_storage *a) {
    char host[INET6_ADDRSTRLEN];
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)a;
        inet_ntop(AF_INET, &s->sin_addr, host, sizeof(host));
        return Py_BuildValue("(si)", host, ntohs(s->sin_port));
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)a;
        inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof(host));
        return Py_BuildValue("(siII)", host, ntohs(s->sin6_port), ntohl(s->sin6_flowinfo), s->sin6_scope_id);
    }
    return Py_BuildValue("(si)", "", 0);
}

/* drain() and exchanged(): read their max=64 argument into *max and return the empty list the
 * batch goes into (NULL with the exception set on a bad argument or no memory). */
static PyObject *batch_of(PyObject *args, PyObject *kw, Py_ssize_t *max) {
    static char *names[] = {"max", NULL};
    *max = 64;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|n", names, max))
        return NULL;
    return PyList_New(0);
}

/* The one consumer: drain() never releases the GIL, so two Python threads cannot interleave. */
static PyObject *Worker_drain(WorkerObject *self, PyObject *args, PyObject *kw) {
    Py_ssize_t max;
    PyObject *out = batch_of(args, kw, &max);
    if (out == NULL)
        return NULL;
    const nld_ring_slot *s;
    while (PyList_GET_SIZE(out) < max && (s = nld_worker_peek(self->w)) != NULL) {
        PyObject *item = Py_BuildValue("(y#N)", (const char *)nld_ring_data(s), (Py_ssize_t)s->len, address(&s->addr));
        nld_worker_release(self->w);
        if (append_new(out, item) < 0)
            return NULL;
    }
    nld_worker_rearm(self->w);
    return out;
}

static PyObject *Worker_wait(WorkerObject *self, PyObject *args) {
    double timeout;
    if (!PyArg_ParseTuple(args, "d", &timeout))
        return NULL;
    /* misses or NX results (not refreshes: a consumer of misses alone would spin on those) */
    if (nld_worker_peek(self->w) != NULL || nld_nx_peek(self->w) != NULL)
        Py_RETURN_TRUE;
    struct pollfd p = {.fd = self->w->wakefd, .events = POLLIN};
    int ms = (timeout < 0 || timeout > 86400.0) ? -1 : (int)(timeout * 1000.0); /* keeps the cast defined */
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = poll(&p, 1, ms);
    Py_END_ALLOW_THREADS if (rc < 0 && errno != EINTR) return PyErr_SetFromErrno(PyExc_OSError);
    return PyBool_FromLong(nld_worker_peek(self->w) != NULL || nld_nx_peek(self->w) != NULL);
}

/* NX results, oldest first: (query, client address, reply or None, uid, seconds, errno). One
 * consumer under the GIL, as drain(); re-arms the eventfd both rings share. */
static PyObject *Worker_exchanged(WorkerObject *self, PyObject *args, PyObject *kw) {
    Py_ssize_t max;
    PyObject *out = batch_of(args, kw, &max);
    if (out == NULL)
        return NULL;
    const nld_nx_result *r;
    while (PyList_GET_SIZE(out) < max && (r = nld_nx_peek(self->w)) != NULL) {
        PyObject *reply = r->reply != NULL ? PyBytes_FromStringAndSize((const char *)r->reply, r->rlen)
                                           : Py_NewRef(Py_None);
        PyObject *item = reply == NULL ? NULL
                                       : Py_BuildValue("(y#NNidi)", (const char *)r->q, (Py_ssize_t)r->qlen,
                                                       address(&r->addr), reply, (int)r->uid, r->seconds, r->err);
        nld_nx_release(self->w);
        if (append_new(out, item) < 0)
            return NULL;
    }
    nld_worker_rearm(self->w);
    return out;
}

/* (host, port) or (host, port, flowinfo, scope_id), as address() writes them. */
static int sockaddr_of(PyObject *t, struct sockaddr_storage *a, socklen_t *alen) {
    const char *host;
    int port;
    unsigned int flow = 0, scope = 0;
    if (!PyTuple_Check(t) || !PyArg_ParseTuple(t, "si|II", &host, &port, &flow, &scope))
        goto bad;
    if (port < 0 || port > 65535)
        goto bad;
    memset(a, 0, sizeof(*a));
    struct sockaddr_in *v4 = (struct sockaddr_in *)a;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)a;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *alen = sizeof(*v4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        v6->sin6_flowinfo = htonl(flow);
        v6->sin6_scope_id = scope;
        *alen = sizeof(*v6);
        return 0;
    }
bad:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "an address is (host, port) or (host, port, flowinfo, scope_id)");
    return -1;
}

/* sendmmsg of (reply, client address) pairs on the worker's socket, GIL released: the number that
 * failed (counted in send_errors too). */
static PyObject *Worker_send(WorkerObject *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "send() takes a list of (reply, address)");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), got = 0;
    Py_buffer *bufs = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_buffer));
    struct mmsghdr *m = PyMem_Calloc((size_t)(n ? n : 1), sizeof(struct mmsghdr));
    struct iovec *iov = PyMem_Calloc((size_t)(n ? n : 1), sizeof(struct iovec));
    struct sockaddr_storage *as = PyMem_Calloc((size_t)(n ? n : 1), sizeof(struct sockaddr_storage));
    PyObject *result = NULL;
    if (bufs == NULL || m == NULL || iov == NULL || as == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        PyObject *it = PySequence_Fast_GET_ITEM(seq, got);
        if (!PyTuple_Check(it) || PyTuple_GET_SIZE(it) != 2) {
            PyErr_SetString(PyExc_ValueError, "send() takes (reply, address) pairs");
            goto done;
        }
        socklen_t alen;
        if (sockaddr_of(PyTuple_GET_ITEM(it, 1), &as[got], &alen) < 0)
            goto done;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(it, 0), &bufs[got], PyBUF_SIMPLE) < 0)
            goto done;
        iov[got].iov_base = bufs[got].buf;
        iov[got].iov_len = (size_t)bufs[got].len;
        m[got].msg_hdr.msg_iov = &iov[got];
        m[got].msg_hdr.msg_iovlen = 1;
        m[got].msg_hdr.msg_name = &as[got];
        m[got].msg_hdr.msg_namelen = alen;
    }
    uint64_t failed = 0;
    int fd = self->w->fd;
    Py_BEGIN_ALLOW_THREADS for (Py_ssize_t sent = 0; sent < n;) {
        unsigned chunk = n - sent > 1024 ? 1024 : (unsigned)(n - sent);
        int r = sendmmsg(fd, m + sent, chunk, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) { /* this datagram is lost (full buffer, bad address); the rest go on */
            failed++;
            sent++;
        } else {
            sent += r;
        }
    }
    Py_END_ALLOW_THREADS atomic_fetch_add_explicit(&self->w->c.py_send_errors, failed, memory_order_relaxed);
    result = PyLong_FromUnsignedLongLong(failed);
done:
    for (Py_ssize_t i = 0; bufs != NULL && i < got; i++)
        PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
    PyMem_Free(m);
    PyMem_Free(iov);
    PyMem_Free(as);
    Py_DECREF(seq);
    return result;
}

static PyObject *Worker_fileno(WorkerObject *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromLong(self->w->wakefd);
}

static PyObject *Worker_counters(WorkerObject *self, PyObject *Py_UNUSED(ignored)) {
    nld_counters *c = &self->w->c;
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsK}", "packets", nld_ld(&c->packets), "hits",
                         nld_ld(&c->hits), "handed", nld_ld(&c->handed), "refused", nld_ld(&c->refused),
                         "dropped", nld_ld(&c->dropped), "send_errors",
                         nld_ld(&c->send_errors) + nld_ld(&c->py_send_errors), "recv_errors",
                         nld_ld(&c->recv_errors), "batches", nld_ld(&c->batches), "stale", nld_ld(&c->stale),
                         "refreshes", nld_ld(&c->refreshes), "nx_sent", nld_ld(&c->nx_sent), "nx_replies",
                         nld_ld(&c->nx_replies), "nx_timeouts", nld_ld(&c->nx_timeouts), "nx_errors",
                         nld_ld(&c->nx_errors), "nx_mismatched", nld_ld(&c->nx_mismatched), "nx_pending",
                         nld_ld(&c->nx_pending));
}

static PyObject *Worker_pin(WorkerObject *self, PyObject *arg) {
    uint64_t bits = 0;
    if (arg != Py_None) {
        double t = PyFloat_AsDouble(arg);
        if (t == -1.0 && PyErr_Occurred())
            return NULL;
        if (!isfinite(t) || t == 0.0) {
            PyErr_SetString(PyExc_ValueError, "pin() needs a finite, non-zero time or None");
            return NULL;
        }
        memcpy(&bits, &t, sizeof(bits));
    }
    atomic_store_explicit(&self->w->pinned, bits, memory_order_relaxed);
    Py_RETURN_NONE;
}

/* Racy by design: a slot read while the worker bumps it is at most one batch behind. */
static PyObject *stat_items(nld_stat_slot *t, size_t size) {
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < size; i++) {
        nld_stat_slot *s = &t[i];
        uint64_t key = atomic_load_explicit(&s->key, memory_order_acquire);
        uint64_t hits = nld_ld(&s->hits);
        if (key == 0 || hits == 0)
            continue;
        PyObject *item = Py_BuildValue("(KKK)", key, hits, nld_ld(&s->ns));
        if (append_new(out, item) < 0)
            return NULL;
    }
    return out;
}

static PyObject *Worker_stats(WorkerObject *self, PyObject *Py_UNUSED(ignored)) {
    return stat_items(self->w->stats, NLD_STATS);
}

static PyObject *Worker_stale_stats(WorkerObject *self, PyObject *Py_UNUSED(ignored)) {
    return stat_items(self->w->stale_stats, NLD_STALE_STATS);
}

/* The queries answered stale whose refresh Python is to start (their names are pending in the
 * index until Index.refresh_done). One consumer, under the GIL, as drain(). */
static PyObject *Worker_refreshes(WorkerObject *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    const nld_refresh_slot *s;
    while ((s = nld_worker_refresh_peek(self->w)) != NULL) {
        PyObject *item = PyBytes_FromStringAndSize((const char *)s->data, (Py_ssize_t)s->len);
        nld_worker_refresh_release(self->w);
        if (append_new(out, item) < 0)
            return NULL;
    }
    return out;
}

static PyObject *Worker_get_running(WorkerObject *self, void *Py_UNUSED(c)) {
    return PyBool_FromLong(atomic_load(&self->w->running));
}

static PyObject *Worker_shed(WorkerObject *self, PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    atomic_store_explicit(&self->w->shed, on, memory_order_relaxed);
    Py_RETURN_NONE;
}

static PyMethodDef Worker_methods[] = {
    {"stop", (PyCFunction)Worker_stop, METH_NOARGS, "stop() -> None: end the thread and join it"},
    {"drain", (PyCFunction)(void (*)(void))Worker_drain, METH_VARARGS | METH_KEYWORDS,
     "drain(max=64) -> list[(bytes, address)]: handed-off packets, oldest first"},
    {"exchanged", (PyCFunction)(void (*)(void))Worker_exchanged, METH_VARARGS | METH_KEYWORDS,
     "exchanged(max=64) -> list[(query, address, reply | None, uid, seconds, errno)]: NX results"},
    {"send", (PyCFunction)Worker_send, METH_O,
     "send(replies: list[(bytes, address)]) -> int: sendmmsg on the worker's socket; how many failed"},
    {"wait", (PyCFunction)Worker_wait, METH_VARARGS, "wait(timeout) -> bool: misses are waiting"},
    {"fileno", (PyCFunction)Worker_fileno, METH_NOARGS, "fileno() -> int: eventfd, readable on misses"},
    {"counters", (PyCFunction)Worker_counters, METH_NOARGS, "counters() -> dict[str, int]"},
    {"pin", (PyCFunction)Worker_pin, METH_O,
     "pin(now: float | None) -> None: answer as of ``now`` (an injected clock); None: CLOCK_MONOTONIC"},
    {"shed", (PyCFunction)Worker_shed, METH_O,
     "shed(on: bool) -> None: on: REFUSED at once to names the index does not hold (Python is full)"},
    {"stats", (PyCFunction)Worker_stats, METH_NOARGS,
     "stats() -> list[(key, hits, ns)]: hits by entry stat | request size << 3 | DO << 1 | EDNS"},
    {"stale_stats", (PyCFunction)Worker_stale_stats, METH_NOARGS,
     "stale_stats() -> list[(key, answers, ns)]: serve_stale answers, keyed as stats()"},
    {"refreshes", (PyCFunction)Worker_refreshes, METH_NOARGS,
     "refreshes() -> list[bytes]: queries answered stale here whose refresh Python starts"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Worker_getset[] = {
    {"running", (getter)Worker_get_running, NULL, "the thread is serving", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject WorkerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "nodelocaldns._native.Worker",
    .tp_basicsize = sizeof(WorkerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A native UDP worker started by serve_udp()",
    .tp_dealloc = (destructor)Worker_dealloc,
    .tp_methods = Worker_methods,
    .tp_getset = Worker_getset,
};
