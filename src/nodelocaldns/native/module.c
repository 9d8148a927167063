/* nodelocaldns._native: the Index type (driven by the Python cache) and the module itself. */
#include <string.h>
#include <sys/random.h>

#include "pymod.h"

/* nld_render, then loadbalance's shuffle when the entry has one. -1: no memory (exception set). */
static int render(IndexObject *self, const nld_hit *h, const uint8_t *q, uint8_t *out) {
    nld_render(h, q, out);
    if (nld_e_lb(h->e) == NULL)
        return 0;
    uint8_t *scratch = PyMem_RawMalloc(h->len);
    if (scratch == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    nld_shuffle(h, out, &self->rng, scratch);
    PyMem_RawFree(scratch);
    return 0;
}

/* A hit rendered into a new bytes object (NULL with an exception set). */
static PyObject *rendered(IndexObject *self, const nld_hit *h, const uint8_t *q) {
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)h->len);
    if (b != NULL && render(self, h, q, (uint8_t *)PyBytes_AS_STRING(b)) < 0)
        Py_CLEAR(b);
    return b;
}

/* The answer to q at now (stale: only an expired entry inside its block's stale window), or None;
 * releases q. */
static PyObject *answer_for(IndexObject *self, Py_buffer *q, double now, int tcp, int stale) {
    nld_hit h;
    nld_index_rdlock(&self->ix);
    int ok = nld_match(&self->ix, q->buf, (size_t)q->len, now, tcp, &h);
    if (stale)
        ok = !ok && nld_stale(&self->ix, &h, now) && h.len <= 65536;
    PyObject *out = ok ? rendered(self, &h, q->buf) : Py_NewRef(Py_None);
    nld_index_unlock(&self->ix);
    PyBuffer_Release(q);
    return out;
}

/* An optional ``stored`` argument: 0 when None (no check), 1 with *stored set, -1 on error. */
static int stored_arg(PyObject *obj, double *stored) {
    if (obj == Py_None)
        return 0;
    *stored = PyFloat_AsDouble(obj);
    return *stored == -1.0 && PyErr_Occurred() ? -1 : 1;
}

/* key's entry, unless absent or (check) stored at another time: another entry. Under the lock. */
static const nld_entry *held(IndexObject *self, const Py_buffer *key, int check, double stored) {
    const nld_entry *e = nld_index_get(&self->ix, key->buf, (size_t)key->len);
    return e == NULL || (check && e->stored != stored) ? NULL : e;
}

static int Index_init(IndexObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"capacity", "max_bytes", NULL};
    Py_ssize_t capacity, max_bytes = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "n|n", names, &capacity, &max_bytes))
        return -1;
    if (self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Index already initialised");
        return -1;
    }
    if (capacity < 1 || capacity > (1 << 26) || max_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "capacity must be 1..2**26 and max_bytes >= 0 (0: no byte cap)");
        return -1;
    }
    int rc = nld_index_init(&self->ix, (size_t)capacity, (size_t)max_bytes);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (getrandom(&self->rng, sizeof(self->rng), GRND_NONBLOCK) != (ssize_t)sizeof(self->rng))
        self->rng = (uint64_t)(uintptr_t)self ^ 0x2545F4914F6CDD1DULL; /* no entropy yet: still a shuffle */
    self->ready = 1;
    return 0;
}

static void Index_dealloc(IndexObject *self) {
    if (self->ready)
        nld_index_destroy(&self->ix);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ready(IndexObject *self) {
    if (!self->ready)
        PyErr_SetString(PyExc_RuntimeError, "Index not initialised");
    return self->ready;
}

static PyObject *Index_insert(IndexObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"key", "heads", "body", "offs", "stored", "orig", "flags", "q", "cap", "stat", "stale", NULL};
    Py_buffer key, heads, body, qc = {0};
    PyObject *offs;
    double stored;
    unsigned long long orig;
    unsigned int fl = 0;
    unsigned int cap = 65535;
    unsigned long long stat = 0;
    unsigned int stale = 0;
    if (!ready(self) || !PyArg_ParseTupleAndKeywords(args, kw, "y*y*y*OdK|Iz*IKI", names, &key, &heads, &body,
                                                     &offs, &stored, &orig, &fl, &qc, &cap, &stat, &stale))
        return NULL;
    PyObject *result = NULL;
    uint16_t *o = NULL;
    PyObject *seq = PySequence_Fast(offs, "offs must be a sequence of ints");
    if (seq == NULL)
        goto done;
    Py_ssize_t noffs = PySequence_Fast_GET_SIZE(seq);
    o = PyMem_Malloc((size_t)(noffs ? noffs : 1) * sizeof(uint16_t));
    if (o == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < noffs; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred())
            goto done;
        if (v < 0 || v > 65535) {
            PyErr_SetString(PyExc_ValueError, "TTL offset outside the body");
            goto done;
        }
        o[i] = (uint16_t)v;
    }
    if (orig > 0xFFFFFFFFULL || fl > 255 || cap < 512 || cap > 65535 || (stat & 0xFFFFF) ||
        stale >= NLD_STALE_CFGS) {
        PyErr_SetString(PyExc_ValueError, "orig must fit 32 bits, flags 8 bits, cap 512..65535, stat leave "
                                          "the low 20 bits 0 and stale be a slot below 16");
        goto done;
    }
    const char *why = "bad entry";
    nld_entry *e = nld_entry_new(key.buf, (size_t)key.len, heads.buf, (size_t)heads.len, body.buf,
                                 (size_t)body.len, o, (size_t)noffs, stored, (uint32_t)orig, fl,
                                 qc.buf, qc.buf ? (size_t)qc.len : 0, &why);
    if (e == NULL) {
        PyErr_SetString(PyExc_ValueError, why);
        goto done;
    }
    e->cap = (uint16_t)cap;
    e->stat = (uint64_t)stat;
    e->stale = (uint8_t)stale;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = nld_index_insert(&self->ix, e); /* may wait for a worker's batch */
    Py_END_ALLOW_THREADS result = PyBool_FromLong(rc == 0);
done:
    Py_XDECREF(seq);
    PyMem_Free(o);
    PyBuffer_Release(&key);
    PyBuffer_Release(&heads);
    PyBuffer_Release(&body);
    if (qc.obj != NULL)
        PyBuffer_Release(&qc);
    return result;
}

static PyObject *Index_remove(IndexObject *self, PyObject *arg) {
    Py_buffer key;
    if (!ready(self) || PyObject_GetBuffer(arg, &key, PyBUF_SIMPLE) < 0)
        return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = nld_index_remove(&self->ix, key.buf, (size_t)key.len);
    Py_END_ALLOW_THREADS PyBuffer_Release(&key);
    return PyBool_FromLong(rc);
}

static PyObject *Index_clear(IndexObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!ready(self))
        return NULL;
    Py_BEGIN_ALLOW_THREADS nld_index_clear(&self->ix);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *Index_answer(IndexObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"query", "now", "tcp", NULL};
    Py_buffer q;
    double now;
    int tcp = 0;
    if (!ready(self) || !PyArg_ParseTupleAndKeywords(args, kw, "y*d|p", names, &q, &now, &tcp))
        return NULL;
    return answer_for(self, &q, now, tcp, 0);
}

/* answer() plus the key the worker would count the hit under (stat | size << 3 | DO << 1 | EDNS). */
static PyObject *Index_lookup(IndexObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"query", "now", "tcp", NULL};
    Py_buffer q;
    double now;
    int tcp = 0;
    if (!ready(self) || !PyArg_ParseTupleAndKeywords(args, kw, "y*d|p", names, &q, &now, &tcp))
        return NULL;
    PyObject *out = NULL;
    nld_hit h;
    nld_index_rdlock(&self->ix);
    if (nld_match(&self->ix, q.buf, (size_t)q.len, now, tcp, &h)) {
        uint64_t key = h.e->stat | ((uint64_t)q.len << 3) | ((uint64_t)h.do_bit << 1) | (uint64_t)(h.edns ? 1 : 0);
        PyObject *b = rendered(self, &h, q.buf);
        if (b != NULL)
            out = Py_BuildValue("(NK)", b, (unsigned long long)key);
    } else {
        out = Py_NewRef(Py_None);
    }
    nld_index_unlock(&self->ix);
    PyBuffer_Release(&q);
    return out;
}

/* The records section of key's entry with every TTL set to ttl (< 0: as stored, the original),
 * or None when the index holds no such entry, or (stored given) holds a different one. This is
 * how a mirrored Python entry (plugins/cache/entry.Mirrored) reads its bytes: the index holds
 * the only copy. */
static PyObject *Index_body(IndexObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"key", "ttl", "stored", NULL};
    Py_buffer key;
    long long ttl = -1;
    PyObject *stored_obj = Py_None;
    if (!ready(self) || !PyArg_ParseTupleAndKeywords(args, kw, "y*|LO", names, &key, &ttl, &stored_obj))
        return NULL;
    double stored = 0.0;
    int check = stored_arg(stored_obj, &stored);
    if (check < 0) {
        PyBuffer_Release(&key);
        return NULL;
    }
    if (ttl > 0xFFFFFFFFLL) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "ttl must fit 32 bits");
        return NULL;
    }
    PyObject *out = NULL;
    nld_index_rdlock(&self->ix);
    const nld_entry *e = held(self, &key, check, stored);
    if (e == NULL) {
        out = Py_NewRef(Py_None);
    } else {
        out = PyBytes_FromStringAndSize((const char *)nld_e_body(e), (Py_ssize_t)e->bodylen);
        if (out != NULL && ttl >= 0 && (uint32_t)ttl != e->orig) {
            uint8_t *b = (uint8_t *)PyBytes_AS_STRING(out);
            uint32_t v = (uint32_t)ttl;
            uint8_t t[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
            const uint16_t *offs = nld_e_offs(e);
            for (size_t i = 0; i < e->noffs; i++)
                memcpy(b + offs[i], t, 4);
        }
    }
    nld_index_unlock(&self->ix);
    PyBuffer_Release(&key);
    return out;
}

/* serve_stale (stale.c): configure a slot entries name at insert; tell the workers a refresh is done;
 * and answer(), but for an expired entry inside its window, as a worker would (no refresh claimed). */
static PyObject *Index_set_stale(IndexObject *self, PyObject *args) {
    unsigned int slot;
    double window;
    unsigned long long ttl;
    if (!ready(self) || !PyArg_ParseTuple(args, "IdK", &slot, &window, &ttl))
        return NULL;
    if (ttl > 0xFFFFFFFFULL || nld_stale_set(&self->ix, slot, window, (uint32_t)ttl) != 0) {
        PyErr_SetString(PyExc_ValueError, "slot must be 1..15, window finite and >= 0, ttl 32 bits");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Index_refresh_done(IndexObject *self, PyObject *arg) {
    Py_buffer key;
    if (!ready(self) || PyObject_GetBuffer(arg, &key, PyBUF_SIMPLE) < 0)
        return NULL;
    int rc = nld_pending_clear(&self->ix, key.buf, (size_t)key.len);
    PyBuffer_Release(&key);
    return PyBool_FromLong(rc);
}

static PyObject *Index_stale_answer(IndexObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"query", "now", NULL};
    Py_buffer q;
    double now;
    if (!ready(self) || !PyArg_ParseTupleAndKeywords(args, kw, "y*d", names, &q, &now))
        return NULL;
    return answer_for(self, &q, now, 0, 1);
}

/* Everything but the bytes of key's entry, as entry.Mirrored reads it back: (heads: the 8 x 10
 * header variants, TTL offsets, orig, stat, flags (KEEPTTL | AA), cased question or None), or
 * None when absent or (stored given) another entry. The Python store keeps only stored and key. */
static PyObject *Index_meta(IndexObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"key", "stored", NULL};
    Py_buffer key;
    PyObject *stored_obj = Py_None;
    if (!ready(self) || !PyArg_ParseTupleAndKeywords(args, kw, "y*|O", names, &key, &stored_obj))
        return NULL;
    double stored = 0.0;
    int check = stored_arg(stored_obj, &stored);
    if (check < 0) {
        PyBuffer_Release(&key);
        return NULL;
    }
    PyObject *out = NULL;
    nld_index_rdlock(&self->ix);
    const nld_entry *e = held(self, &key, check, stored);
    if (e == NULL) {
        out = Py_NewRef(Py_None);
    } else {
        uint8_t heads[NLD_HEADS * NLD_HEAD_LEN];
        for (unsigned i = 0; i < NLD_HEADS; i++)
            nld_e_head(e, i, heads + i * NLD_HEAD_LEN);
        PyObject *offs = PyTuple_New(e->noffs);
        const uint16_t *o = nld_e_offs(e);
        for (size_t i = 0; offs != NULL && i < e->noffs; i++) {
            PyObject *v = PyLong_FromLong(o[i]);
            if (v == NULL)
                Py_CLEAR(offs);
            else
                PyTuple_SET_ITEM(offs, (Py_ssize_t)i, v);
        }
        if (offs != NULL) {
            const uint8_t *qc = nld_e_qcased(e);
            out = Py_BuildValue("(y#NkKiy#)", (const char *)heads, (Py_ssize_t)sizeof(heads), offs,
                                (unsigned long)e->orig, (unsigned long long)e->stat,
                                (int)(e->fl & (NLD_FL_KEEPTTL | NLD_FL_AA)), (const char *)qc,
                                (Py_ssize_t)(qc != NULL ? e->qclen : 0));
        }
    }
    nld_index_unlock(&self->ix);
    PyBuffer_Release(&key);
    return out;
}

static Py_ssize_t Index_len(IndexObject *self) {
    if (!ready(self))
        return -1;
    return (Py_ssize_t)nld_index_len(&self->ix);
}

static PyObject *Index_get_bytes(IndexObject *self, void *Py_UNUSED(c)) {
    if (!ready(self))
        return NULL;
    nld_index_rdlock(&self->ix);
    size_t b = self->ix.bytes;
    nld_index_unlock(&self->ix);
    return PyLong_FromSize_t(b);
}

static PyObject *Index_get_capacity(IndexObject *self, void *Py_UNUSED(c)) {
    if (!ready(self))
        return NULL;
    return PyLong_FromSize_t(self->ix.capacity);
}

static PyMethodDef Index_methods[] = {
    {"insert", (PyCFunction)(void (*)(void))Index_insert, METH_VARARGS | METH_KEYWORDS,
     "insert(key, heads, body, offs, stored, orig, flags=0, q=None, cap=65535, stat=0) -> bool: publish one "
     "entry (False: full)"},
    {"remove", (PyCFunction)Index_remove, METH_O, "remove(key) -> bool"},
    {"body", (PyCFunction)(void (*)(void))Index_body, METH_VARARGS | METH_KEYWORDS,
     "body(key, ttl=-1, stored=None) -> bytes | None: the entry's records with every TTL = ttl "
     "(-1: the original); None if absent or (stored given) another entry"},
    {"meta", (PyCFunction)(void (*)(void))Index_meta, METH_VARARGS | METH_KEYWORDS,
     "meta(key, stored=None) -> (heads, offs, orig, stat, flags, q) | None: the entry without its "
     "records; None if absent or (stored given) another entry"},
    {"clear", (PyCFunction)Index_clear, METH_NOARGS, "clear() -> None"},
    {"answer", (PyCFunction)(void (*)(void))Index_answer, METH_VARARGS | METH_KEYWORDS,
     "answer(query, now, tcp=False) -> bytes | None: the fast-path reply for a fresh hit"},
    {"set_stale", (PyCFunction)Index_set_stale, METH_VARARGS,
     "set_stale(slot, window, ttl) -> None: serve_stale slot 1..15 (entries inserted with stale=slot)"},
    {"refresh_done", (PyCFunction)Index_refresh_done, METH_O,
     "refresh_done(key) -> bool: the stale refresh of key finished (a worker may hand the next one)"},
    {"stale_answer", (PyCFunction)(void (*)(void))Index_stale_answer, METH_VARARGS | METH_KEYWORDS,
     "stale_answer(query, now) -> bytes | None: a worker's serve_stale answer (UDP) to query"},
    {"set_forward", (PyCFunction)(void (*)(void))nld_index_set_forward, METH_VARARGS | METH_KEYWORDS,
     "set_forward(table, *, timeout, expire, max_pending) -> None: the zones whose misses the workers forward"},
    {"lookup", (PyCFunction)(void (*)(void))Index_lookup, METH_VARARGS | METH_KEYWORDS,
     "lookup(query, now, tcp=False) -> (bytes, key) | None: answer() and the hit's counter key"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Index_getset[] = {
    {"bytes", (getter)Index_get_bytes, NULL, "bytes held by entries", NULL},
    {"capacity", (getter)Index_get_capacity, NULL, "maximum number of entries", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Index_seq = {.sq_length = (lenfunc)Index_len};

PyTypeObject IndexType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "nodelocaldns._native.Index",
    .tp_basicsize = sizeof(IndexObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Index(capacity, max_bytes=0): bounded native cache index keyed by cache-key bytes",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Index_init,
    .tp_dealloc = (destructor)Index_dealloc,
    .tp_methods = Index_methods,
    .tp_getset = Index_getset,
    .tp_as_sequence = &Index_seq,
};

static PyMethodDef module_methods[] = {
    {"serve_udp", (PyCFunction)(void (*)(void))nld_serve_udp, METH_VARARGS | METH_KEYWORDS,
     "serve_udp(fd, index, batch=32, ring=1024) -> Worker: start a GIL-free UDP worker on fd"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "nodelocaldns._native",
    .m_doc = "Native cache index and UDP hot path.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&IndexType) < 0 || PyType_Ready(&WorkerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Index", (PyObject *)&IndexType) < 0 ||
        PyModule_AddObjectRef(m, "Worker", (PyObject *)&WorkerType) < 0 ||
        PyModule_AddIntConstant(m, "HEADS_LEN", NLD_HEADS * NLD_HEAD_LEN) < 0 ||
        PyModule_AddIntConstant(m, "UDP_BUF", NLD_UDP_BUF) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_KEEPTTL", NLD_FL_KEEPTTL) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_AA", NLD_FL_AA) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_SHUFFLE", NLD_FL_SHUFFLE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
