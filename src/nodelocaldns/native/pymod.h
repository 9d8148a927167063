/* CPython glue shared by the module's two types. */
#ifndef NLD_PYMOD_H
#define NLD_PYMOD_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "nld.h"

typedef struct {
    PyObject_HEAD nld_index ix;
    int ready;
    uint64_t rng; /* loadbalance draws for answer()/lookup() (callers hold the GIL) */
} IndexObject;

extern PyTypeObject IndexType;
extern PyTypeObject WorkerType;

PyObject *nld_serve_udp(PyObject *self, PyObject *args, PyObject *kw);
PyObject *nld_index_set_forward(PyObject *self, PyObject *args, PyObject *kw); /* nx_py.c */

#endif
