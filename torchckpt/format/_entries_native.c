/* torchckpt.format._entries_native: where the payloads of plain bundle entries lie, and
 * the entries of an index's data blocks, in C.
 *
 * Optional accelerator of torchckpt/format/_fast_entries.py: its plain_payloads uses
 * this module where it is built and TORCHCKPT_NO_NATIVE is unset, and its Python path
 * otherwise. That Python path is the reference: this one gives the same answer for
 * every input (tests/format/test_entries_native.py checks it on writer output, mutated
 * and random bytes).
 *
 * Why: restoring 50,000 small tensors in place locates 50,000 payloads from their
 * BundleEntryProto bytes. In Python that costs ~2 us an entry, as much as the rest of
 * the restore; here it costs ~0.1 us.
 *
 * plain_payloads(raws, location_type, itemsizes) -> list
 *     Per element of `raws` (a sequence), location_type(dtype, shape, shard_id,
 *     offset, size, crc32c) for a plain entry of a fixed-width dtype whose size is
 *     its shape's, else None: for None, for an element that is not bytes, and for
 *     any other entry (the caller's general path decodes or reports it).
 *     location_type is a tuple subclass (a named tuple), made without calling it;
 *     shape is a tuple of ints. itemsizes[d] is the element size in bytes of
 *     fixed-width dtype d, 0 for the others (built from dtypes.FIXED_WIDTH).
 *
 * block_items(contents, previous, budget) -> (items, last key, budget left) | None
 *     A table data block's (key, value) pairs as table.block_items gives them (keys
 *     strictly increasing after `previous`, their bytes taken from `budget`), or None
 *     for any block that function refuses: it then reads the block again and raises
 *     the error (tests/format/test_block_items_native.py compares the two).
 *
 * A plain entry is exactly what the Python path accepts:
 *     08 dtype 12 L dims [18 shard_id] [20 offset] [28 size] [35 crc32c]
 *     dims = (12 l [08 dim])*           dtype, L, l < 0x80 (one byte each)
 * The dtype, L and l are one-byte varints and the shape field is present (also for a
 * scalar: 12 00); a zero dim is 12 00 or 12 02 08 00. The optional fields come once
 * each, in this order; every varint has at most 10 bytes and a value below 2**63
 * (canonical or not); the CRC, when present, ends the entry; and size equals the
 * element size times the product of the dims, which must stay below 2**63. Anything
 * else (slices, unknown fields, other wire types, repeats) is not plain.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_RANK 254              /* records.MAX_RANK: TensorShape::MaxDimensions() */
#define INT63 ((uint64_t)1 << 63)
#define HEAD_SLOTS 64             /* distinct heads remembered per call (a power of two) */

/* ---- decoding --------------------------------------------------------------------------- */

/* A varint of at most 10 bytes and value below 2**63 at *p (before end): 1, with the value
 * in *out and *p moved past it; 0 when it is truncated, longer, or 2**63 or more. */
static int get_varint63(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    const uint8_t *q = *p;
    uint64_t v = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
        if (q >= end) return 0;
        uint8_t b = *q++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            if (shift == 63 && b != 0) return 0;  /* a 10th byte holds bits 63 and up */
            *p = q;
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* The dims of a shape written as (12 l [08 dim])* between p and end: 1 with the rank in
 * *rank, 0 for any other shape message (names, unknown_rank, long dims, other fields). */
static int parse_shape(const uint8_t *p, const uint8_t *end, uint64_t *dims, Py_ssize_t *rank) {
    Py_ssize_t n = 0;
    while (p < end) {
        if (end - p < 2 || p[0] != 0x12 || p[1] >= 0x80) return 0;
        const uint8_t *stop = p + 2 + p[1];
        if (stop > end) return 0;
        uint64_t d = 0;  /* an empty Dim: size omitted, 0 */
        if (stop > p + 2) {
            const uint8_t *q = p + 3;
            if (p[2] != 0x08 || !get_varint63(&q, stop, &d) || q != stop) return 0;
        }
        if (n == MAX_RANK) return 0;
        dims[n++] = d;
        p = stop;
    }
    *rank = n;
    return 1;
}

/* The varint field of this one-byte tag at *p, if there is one: 1 when it is absent (*v
 * unchanged) or read (*v set, *p moved past it); 0 when its varint is not acceptable. */
static int optional_varint(const uint8_t **p, const uint8_t *end, uint8_t tag, uint64_t *v) {
    if (*p == end || **p != tag) return 1;
    ++*p;
    return get_varint63(p, end, v);
}

/* itemsize * (product of dims), or -1 when that is 2**63 or more (as the Python path
 * computes it: with a zero dim the product is 0 whatever the other dims are). */
static int64_t payload_size(uint64_t itemsize, const uint64_t *dims, Py_ssize_t rank) {
    uint64_t size = itemsize;
    int over = 0;  /* past 2**63 - 1 already: only a later zero dim changes the answer */
    for (Py_ssize_t i = 0; i < rank; i++) {
        if (dims[i] == 0) return 0;
        if (over || size > (INT63 - 1) / dims[i]) over = 1;
        else size *= dims[i];
    }
    return over ? -1 : (int64_t)size;
}

/* ---- heads ------------------------------------------------------------------------------ */

/* The decoded `08 dtype 12 L dims` head of a plain entry, shared by the entries that have
 * the same head bytes (a model has a few hundred distinct heads for 50,000 tensors). */
typedef struct {
    const uint8_t *key;   /* the head bytes, inside a bytes object this call holds */
    Py_ssize_t len;       /* 0: an empty slot */
    PyObject *dtype;      /* int */
    PyObject *shape;      /* tuple of ints */
    PyObject *size;       /* int: the payload size the dtype and shape require */
    uint64_t want;        /* the same, as a number */
} head_info;

typedef struct {
    head_info slots[HEAD_SLOTS];
    const uint8_t *itemsizes;
    Py_ssize_t n_itemsizes;
} head_cache;

static void clear_slot(head_info *h) {
    Py_CLEAR(h->dtype);
    Py_CLEAR(h->shape);
    Py_CLEAR(h->size);
    h->len = 0;
}

/* Decode the head into *h: 1; 0 when it is not the head of a plain fixed-width entry;
 * -1 with a Python error (memory). */
static int decode_head(const head_cache *c, const uint8_t *head, Py_ssize_t len, head_info *h) {
    uint64_t dims[MAX_RANK];
    Py_ssize_t rank;
    uint8_t dtype = head[1];
    uint64_t itemsize = dtype < c->n_itemsizes ? c->itemsizes[dtype] : 0;
    if (itemsize == 0 || !parse_shape(head + 4, head + len, dims, &rank)) return 0;
    int64_t want = payload_size(itemsize, dims, rank);
    if (want < 0) return 0;
    PyObject *shape = PyTuple_New(rank);
    if (shape == NULL) return -1;
    for (Py_ssize_t i = 0; i < rank; i++) {
        PyObject *d = PyLong_FromUnsignedLongLong(dims[i]);
        if (d == NULL) { Py_DECREF(shape); return -1; }
        PyTuple_SET_ITEM(shape, i, d);
    }
    PyObject *dt = PyLong_FromLong(dtype), *size = PyLong_FromLongLong(want);
    if (dt == NULL || size == NULL) {
        Py_XDECREF(dt);
        Py_XDECREF(size);
        Py_DECREF(shape);
        return -1;
    }
    *h = (head_info){head, len, dt, shape, size, (uint64_t)want};
    return 1;
}

/* The cached info of these head bytes in *out, decoded on a miss (replacing the head
 * that had the slot): 1; 0 when the head is not plain; -1 with a Python error set. */
static int find_head(head_cache *c, const uint8_t *head, Py_ssize_t len, head_info **out) {
    uint32_t hash = 2166136261u;  /* FNV-1a */
    for (Py_ssize_t i = 0; i < len; i++) hash = (hash ^ head[i]) * 16777619u;
    head_info *slot = &c->slots[hash & (HEAD_SLOTS - 1)];
    if (slot->len != len || memcmp(slot->key, head, (size_t)len) != 0) {
        head_info fresh;
        int r = decode_head(c, head, len, &fresh);
        if (r <= 0) return r;
        clear_slot(slot);
        *slot = fresh;
    }
    *out = slot;
    return 1;
}

/* ---- locations -------------------------------------------------------------------------- */

/* A location_type instance of the six items (references stolen; NULL items are allowed
 * only on failure, when the references are dropped and NULL returned), made as
 * tuple.__new__(location_type, items) makes it. */
static PyObject *new_location(PyTypeObject *type, PyObject *items[6]) {
    for (int k = 0; k < 6; k++) {
        if (items[k] == NULL) {
            for (int j = 0; j < 6; j++) Py_XDECREF(items[j]);
            return NULL;
        }
    }
#if PY_VERSION_HEX < 0x030E0000
    /* what tuple_subtype_new does: allocate the subtype, move the items in, track it */
    PyObject *obj = type->tp_alloc(type, 6);
    if (obj == NULL) {
        for (int k = 0; k < 6; k++) Py_DECREF(items[k]);
        return NULL;
    }
    for (int k = 0; k < 6; k++) PyTuple_SET_ITEM(obj, k, items[k]);
    if (!PyObject_GC_IsTracked(obj)) PyObject_GC_Track(obj);
    return obj;
#else  /* newer tuples carry more state (a hash cache): let tuple.__new__ set it up */
    PyObject *t = PyTuple_New(6);
    if (t == NULL) {
        for (int k = 0; k < 6; k++) Py_DECREF(items[k]);
        return NULL;
    }
    for (int k = 0; k < 6; k++) PyTuple_SET_ITEM(t, k, items[k]);
    PyObject *call_args = PyTuple_Pack(1, t);
    Py_DECREF(t);
    if (call_args == NULL) return NULL;
    PyObject *obj = PyTuple_Type.tp_new(type, call_args, NULL);
    Py_DECREF(call_args);
    return obj;
#endif
}

/* The location of one entry's payload (a new reference): a location_type instance for a
 * plain entry, None for any other; NULL with a Python error (memory). */
static PyObject *locate(head_cache *c, PyTypeObject *type, const uint8_t *b, Py_ssize_t n) {
    /* 08 dtype 12 L, each one byte, then the L bytes of dims */
    if (n < 4 || b[0] != 0x08 || b[1] >= 0x80 || b[2] != 0x12 || b[3] >= 0x80 || 4 + b[3] > n)
        Py_RETURN_NONE;
    head_info *h;
    int found = find_head(c, b, 4 + b[3], &h);
    if (found < 0) return NULL;
    if (found == 0) Py_RETURN_NONE;
    const uint8_t *p = b + 4 + b[3], *end = b + n;
    uint64_t shard = 0, offset = 0, size = 0;
    uint32_t crc = 0;
    if (!optional_varint(&p, end, 0x18, &shard) || !optional_varint(&p, end, 0x20, &offset)
        || !optional_varint(&p, end, 0x28, &size))
        Py_RETURN_NONE;
    if (end - p == 5 && *p == 0x35) {  /* fixed32, little-endian, ending the entry */
        crc = (uint32_t)p[1] | (uint32_t)p[2] << 8 | (uint32_t)p[3] << 16 | (uint32_t)p[4] << 24;
        p = end;
    }
    if (p != end || size != h->want) Py_RETURN_NONE;
    Py_INCREF(h->dtype);
    Py_INCREF(h->shape);
    Py_INCREF(h->size);
    PyObject *items[6] = {h->dtype, h->shape, PyLong_FromUnsignedLongLong(shard),
                          PyLong_FromUnsignedLongLong(offset), h->size,
                          PyLong_FromUnsignedLong(crc)};
    return new_location(type, items);
}

static PyObject *plain_payloads(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *raws, *type_obj;
    const char *itemsizes;
    Py_ssize_t n_itemsizes;
    if (!PyArg_ParseTuple(args, "OOy#:plain_payloads", &raws, &type_obj, &itemsizes,
                          &n_itemsizes))
        return NULL;
    if (!PyType_Check(type_obj) || !PyType_IsSubtype((PyTypeObject *)type_obj, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "plain_payloads: location_type must be a tuple type");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)type_obj;
    /* a tuple of the entries: it holds them (and so the head bytes the cache points into)
     * until the call ends, whatever happens to the caller's list meanwhile */
    PyObject *entries = PySequence_Tuple(raws);
    if (entries == NULL) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(entries);
    PyObject *out = PyList_New(n);
    head_cache *cache = PyMem_Calloc(1, sizeof(head_cache));
    if (out == NULL || cache == NULL) {
        Py_XDECREF(out);
        PyMem_Free(cache);
        Py_DECREF(entries);
        return cache == NULL ? PyErr_NoMemory() : NULL;
    }
    cache->itemsizes = (const uint8_t *)itemsizes;
    cache->n_itemsizes = n_itemsizes;
#ifndef Py_GIL_DISABLED
    /* Collections triggered by the location tuples made here would otherwise take a third
     * of the time. No other thread runs while this call holds the GIL, and the collector
     * is enabled again before it returns, so no one can observe the switch. */
    int gc_was_enabled = PyGC_Disable();
#endif
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *raw = PyTuple_GET_ITEM(entries, i);
        PyObject *loc;
        if (PyBytes_Check(raw)) {
            loc = locate(cache, type, (const uint8_t *)PyBytes_AS_STRING(raw),
                         PyBytes_GET_SIZE(raw));
        } else {
            loc = Py_NewRef(Py_None);
        }
        if (loc == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, loc);
    }
#ifndef Py_GIL_DISABLED
    if (gc_was_enabled) PyGC_Enable();
#endif
    for (int k = 0; k < HEAD_SLOTS; k++) clear_slot(&cache->slots[k]);
    PyMem_Free(cache);
    Py_DECREF(entries);
    return out;
}

/* ---- table blocks ------------------------------------------------------------------- */

/* A block entry's length varint (at most 5 bytes, as block.py reads them) at *p before
 * end: 1 with the value, 0 when truncated or longer. */
static int get_varint35(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    const uint8_t *q = *p;
    uint64_t v = 0;
    for (int shift = 0; shift < 35; shift += 7) {
        if (q >= end) return 0;
        uint8_t b = *q++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) { *p = q; *out = v; return 1; }
    }
    return 0;
}

/* Whether key a (na bytes) sorts after key b (nb bytes), bytewise. */
static int sorts_after(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    int c = memcmp(a, b, na < nb ? na : nb);
    return c > 0 || (c == 0 && na > nb);
}

/* block_items(contents, previous, budget): see the module's Python twin, table.py's
 * _block_items. Returns (items, last key, budget left), or None for anything the
 * Python path would refuse (it then reads the block again and names the error). */
static PyObject *block_items(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    PyObject *previous;
    long long budget;
    if (!PyArg_ParseTuple(args, "y*OL:block_items", &view, &previous, &budget)) return NULL;
    const uint8_t *b = (const uint8_t *)view.buf;
    Py_ssize_t n = view.len;
    const uint8_t *prev = NULL;  /* the key before the next one: the caller's, then ours */
    size_t nprev = 0;
    if (previous != Py_None) {
        if (!PyBytes_Check(previous)) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_TypeError, "block_items: previous must be bytes or None");
            return NULL;
        }
        prev = (const uint8_t *)PyBytes_AS_STRING(previous);
        nprev = (size_t)PyBytes_GET_SIZE(previous);
    }
    PyObject *items = NULL, *last = NULL, *out = NULL;
    uint8_t *key = NULL;
    size_t nkey = 0, cap = 0;
    if (n < 4) goto soft;
    uint32_t restarts = (uint32_t)b[n - 4] | (uint32_t)b[n - 3] << 8 | (uint32_t)b[n - 2] << 16
                        | (uint32_t)b[n - 1] << 24;
    if ((uint64_t)restarts > (uint64_t)(n - 4) / 4) goto soft;
    const uint8_t *p = b, *limit = b + (n - 4 * ((Py_ssize_t)restarts + 1));
    if ((items = PyList_New(0)) == NULL) goto done;
    cap = 64;  /* never NULL: an empty key is a key too (the bundle header's) */
    if ((key = PyMem_Malloc(cap)) == NULL) { PyErr_NoMemory(); goto done; }
    while (p < limit) {
        uint64_t shared, non_shared, value_len;
        if (limit - p >= 3 && p[0] < 0x80 && p[1] < 0x80 && p[2] < 0x80) {
            shared = p[0]; non_shared = p[1]; value_len = p[2];
            p += 3;
        } else if (!get_varint35(&p, limit, &shared) || !get_varint35(&p, limit, &non_shared)
                   || !get_varint35(&p, limit, &value_len)) {
            goto soft;
        }
        if (shared > nkey || non_shared + value_len > (uint64_t)(limit - p)) goto soft;
        size_t nnew = (size_t)(shared + non_shared);
        budget -= (long long)nnew;
        if (budget < 0) goto soft;
        if (prev != NULL) {  /* strictly increasing: across blocks too */
            int after;
            if (prev == key) {  /* within the block: the new key shares `shared` bytes */
                after = sorts_after(p, (size_t)non_shared, key + shared, nkey - (size_t)shared);
            } else {
                uint8_t *tmp = PyMem_Malloc(nnew ? nnew : 1);
                if (tmp == NULL) { PyErr_NoMemory(); goto done; }
                if (shared) memcpy(tmp, key, (size_t)shared);
                if (non_shared) memcpy(tmp + shared, p, (size_t)non_shared);
                after = sorts_after(tmp, nnew, prev, nprev);
                PyMem_Free(tmp);
            }
            if (!after) goto soft;
        }
        if (nnew > cap) {
            size_t grown = cap;
            while (grown < nnew) grown *= 2;
            uint8_t *k = PyMem_Realloc(key, grown);
            if (k == NULL) { PyErr_NoMemory(); goto done; }
            key = k;
            cap = grown;
        }
        if (non_shared) memcpy(key + shared, p, (size_t)non_shared);
        nkey = nnew;
        prev = key;
        nprev = nkey;
        p += non_shared;
        PyObject *pair = Py_BuildValue("(y#y#)", (const char *)key, (Py_ssize_t)nkey,
                                       (const char *)p, (Py_ssize_t)value_len);
        if (pair == NULL) goto done;
        int e = PyList_Append(items, pair);
        Py_DECREF(pair);
        if (e < 0) goto done;
        p += value_len;
    }
    if (prev == key) {
        last = PyBytes_FromStringAndSize((const char *)key, (Py_ssize_t)nkey);
    } else {
        last = previous;
        Py_INCREF(last);
    }
    if (last != NULL) out = Py_BuildValue("(OOL)", items, last, budget);
    goto done;
soft:
    out = Py_None;
    Py_INCREF(out);
done:
    Py_XDECREF(items);
    Py_XDECREF(last);
    PyMem_Free(key);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"plain_payloads", plain_payloads, METH_VARARGS,
     "plain_payloads(raws, location_type, itemsizes) -> list of locations or None "
     "(see torchckpt.format._fast_entries)"},
    {"block_items", block_items, METH_VARARGS,
     "block_items(contents, previous, budget) -> (items, last key, budget left) or None "
     "(see torchckpt.format.table)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_entries_native",
    "Payload locations of plain bundle entries and table block items in C (see "
    "torchckpt/format/_fast_entries.py and table.py).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__entries_native(void) {
    return PyModule_Create(&module);
}
