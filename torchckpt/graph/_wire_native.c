/* torchckpt.graph._wire_native: the TrackableObjectGraph wire format in C.
 *
 * Optional accelerator of torchckpt/graph/wire.py, which has the same two
 * functions in Python and is used where this module is missing.
 *
 * Why: a model of 50,000 tensors is a graph of 50,000 nodes. Encoding or
 * decoding it with one Python operation per field costs 3-7 us a node, as
 * much as writing or reading the tensors themselves; here it costs ~0.1 us.
 *
 * encode_graph(children, attributes, slots, flags) -> bytes
 *     The same bytes as wire.encode_graph (which equal protobuf's serializer).
 * decode_graph(data, GraphNode, ChildRef, Attribute, SlotRef, full_names=True) -> list | None
 *     The nodes, each a GraphNode made without its __init__ (its five fields
 *     set: children, attributes, slot_variables as tuples of the given tuple
 *     subclasses, has_checkpoint_values, registered_saver name; attributes' full_name
 *     "" unless full_names, and not checked), when every node id
 *     referred to is in range and there is a root (ObjectGraph._check's rules).
 *     Returns None for anything this decoder does not take exactly as protobuf
 *     would (malformed bytes, invalid UTF-8, wire-type mismatches, groups,
 *     over-long varints): the caller then decodes with protobuf, which
 *     reports the error or handles the rare case. Never reads past `data`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- encoding ------------------------------------------------------------------------- */

static Py_ssize_t vlen(uint64_t v) {
    Py_ssize_t n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}

static char *put_varint(char *p, uint64_t v) {
    while (v >= 0x80) { *p++ = (char)((v & 0x7F) | 0x80); v >>= 7; }
    *p++ = (char)v;
    return p;
}

/* An int32 field's value as protobuf writes it: negative numbers sign-extended to 64 bits. */
static int get_int(PyObject *o, uint64_t *out) {
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = (uint64_t)v;
    return 0;
}

static int get_str(PyObject *o, const char **s, Py_ssize_t *n) {
    if (!PyUnicode_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "graph names and keys must be str");
        return -1;
    }
    *s = PyUnicode_AsUTF8AndSize(o, n);
    return *s == NULL ? -1 : 0;
}

static Py_ssize_t str_field_len(Py_ssize_t n) { return n ? 1 + vlen((uint64_t)n) + n : 0; }
static Py_ssize_t int_field_len(uint64_t v) { return v ? 1 + vlen(v) : 0; }

static char *put_str_field(char *p, char tag, const char *s, Py_ssize_t n) {
    if (!n) return p;
    *p++ = tag;
    p = put_varint(p, (uint64_t)n);
    memcpy(p, s, (size_t)n);
    return p + n;
}

static char *put_int_field(char *p, char tag, uint64_t v) {
    if (!v) return p;
    *p++ = tag;
    return put_varint(p, v);
}

/* One record (child reference, attribute or slot reference), as its body length and, when
 * `p` is not NULL, its bytes written at `p`. kind: 0 child, 1 attribute, 2 slot. */
static Py_ssize_t record(PyObject *rec, int kind, char **p) {
    if (!PyTuple_Check(rec) || PyTuple_GET_SIZE(rec) != (kind == 0 ? 2 : 3)) {
        PyErr_SetString(PyExc_TypeError, "graph records must be tuples of the record's fields");
        return -1;
    }
    const char *s1, *s2, *s3;
    Py_ssize_t n1, n2, n3;
    uint64_t a, b;
    Py_ssize_t body;
    if (kind == 0) {  /* (node_id, local_name) */
        if (get_int(PyTuple_GET_ITEM(rec, 0), &a) < 0 ||
            get_str(PyTuple_GET_ITEM(rec, 1), &s1, &n1) < 0) return -1;
        body = int_field_len(a) + str_field_len(n1);
        if (p) {
            char *q = *p;
            *q++ = 0x0a;
            q = put_varint(q, (uint64_t)body);
            q = put_int_field(q, 0x08, a);
            *p = put_str_field(q, 0x12, s1, n1);
        }
    } else if (kind == 1) {  /* (name, checkpoint_key, full_name) -> fields 1, 3, 2 */
        if (get_str(PyTuple_GET_ITEM(rec, 0), &s1, &n1) < 0 ||
            get_str(PyTuple_GET_ITEM(rec, 1), &s3, &n3) < 0 ||
            get_str(PyTuple_GET_ITEM(rec, 2), &s2, &n2) < 0) return -1;
        body = str_field_len(n1) + str_field_len(n2) + str_field_len(n3);
        if (p) {
            char *q = *p;
            *q++ = 0x12;
            q = put_varint(q, (uint64_t)body);
            q = put_str_field(q, 0x0a, s1, n1);
            q = put_str_field(q, 0x12, s2, n2);
            *p = put_str_field(q, 0x1a, s3, n3);
        }
    } else {  /* (original_variable_node_id, slot_name, slot_variable_node_id) */
        if (get_int(PyTuple_GET_ITEM(rec, 0), &a) < 0 ||
            get_str(PyTuple_GET_ITEM(rec, 1), &s1, &n1) < 0 ||
            get_int(PyTuple_GET_ITEM(rec, 2), &b) < 0) return -1;
        body = int_field_len(a) + str_field_len(n1) + int_field_len(b);
        if (p) {
            char *q = *p;
            *q++ = 0x1a;
            q = put_varint(q, (uint64_t)body);
            q = put_int_field(q, 0x08, a);
            q = put_str_field(q, 0x12, s1, n1);
            *p = put_int_field(q, 0x18, b);
        }
    }
    return 1 + vlen((uint64_t)body) + body;
}

/* A node's body length (p == NULL) or bytes. */
static Py_ssize_t node_body(PyObject *lists[3], PyObject *flag, char **p) {
    Py_ssize_t total = 0;
    for (int kind = 0; kind < 3; kind++) {
        PyObject *seq = PySequence_Fast(lists[kind], "graph node fields must be sequences");
        if (seq == NULL) return -1;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        PyObject **items = PySequence_Fast_ITEMS(seq);
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t r = record(items[i], kind, p);
            if (r < 0) { Py_DECREF(seq); return -1; }
            total += r;
        }
        Py_DECREF(seq);
    }
    if (flag == Py_True) {
        if (p) { memcpy(*p, "\x2a\x02\x08\x01", 4); *p += 4; }
        total += 4;
    } else if (flag == Py_False) {
        if (p) { memcpy(*p, "\x2a\x00", 2); *p += 2; }
        total += 2;
    } else if (flag != Py_None) {
        PyErr_SetString(PyExc_TypeError, "has_checkpoint_values must be True, False or None");
        return -1;
    }
    return total;
}

static PyObject *encode_graph(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *in[4];
    if (!PyArg_ParseTuple(args, "OOOO:encode_graph", &in[0], &in[1], &in[2], &in[3]))
        return NULL;
    PyObject *seqs[4] = {NULL, NULL, NULL, NULL};
    PyObject *out = NULL;
    Py_ssize_t *bodies = NULL;
    for (int k = 0; k < 4; k++) {
        seqs[k] = PySequence_Fast(in[k], "encode_graph takes four sequences");
        if (seqs[k] == NULL) goto done;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seqs[0]);
    for (int k = 1; k < 4; k++) {
        if (PySequence_Fast_GET_SIZE(seqs[k]) != n) {
            PyErr_SetString(PyExc_ValueError, "encode_graph: the four sequences differ in length");
            goto done;
        }
    }
    bodies = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));
    if (bodies == NULL) { PyErr_NoMemory(); goto done; }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *lists[3] = {PySequence_Fast_GET_ITEM(seqs[0], i),
                              PySequence_Fast_GET_ITEM(seqs[1], i),
                              PySequence_Fast_GET_ITEM(seqs[2], i)};
        Py_ssize_t b = node_body(lists, PySequence_Fast_GET_ITEM(seqs[3], i), NULL);
        if (b < 0) goto done;
        bodies[i] = b;
        total += 1 + vlen((uint64_t)b) + b;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) goto done;
    char *p = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *lists[3] = {PySequence_Fast_GET_ITEM(seqs[0], i),
                              PySequence_Fast_GET_ITEM(seqs[1], i),
                              PySequence_Fast_GET_ITEM(seqs[2], i)};
        *p++ = 0x0a;
        p = put_varint(p, (uint64_t)bodies[i]);
        if (node_body(lists, PySequence_Fast_GET_ITEM(seqs[3], i), &p) < 0) {
            Py_CLEAR(out);
            goto done;
        }
    }
done:
    PyMem_Free(bodies);
    for (int k = 0; k < 4; k++) Py_XDECREF(seqs[k]);
    return out;
}

/* ---- decoding ------------------------------------------------------------------------- */

typedef struct { const uint8_t *p, *end; } cursor;

/* The smallest and largest node id any record refers to, for the range check. */
typedef struct { int32_t lo, hi; } id_range;

static void note_id(id_range *ids, int32_t id) {
    if (id < ids->lo) ids->lo = id;
    if (id > ids->hi) ids->hi = id;
}


/* 0 on success; -1 when the varint is truncated or longer than 10 bytes. */
static int get_varint(cursor *c, uint64_t *v) {
    uint64_t r = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (c->p >= c->end) return -1;
        uint8_t b = *c->p++;
        if (shift == 63 && b > 1) return -1;
        r |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) { *v = r; return 0; }
    }
    return -1;
}

/* A length-delimited field's bytes: a sub-cursor; -1 when it runs past the end. */
static int get_sub(cursor *c, cursor *sub) {
    uint64_t n;
    if (get_varint(c, &n) < 0 || n > (uint64_t)(c->end - c->p)) return -1;
    sub->p = c->p;
    sub->end = c->p + n;
    c->p += n;
    return 0;
}

/* Skip an unknown field of wire type `wt`; -1 for groups and malformed fields. */
static int skip(cursor *c, int wt) {
    uint64_t v;
    cursor sub;
    switch (wt) {
    case 0: return get_varint(c, &v);
    case 1: if (c->end - c->p < 8) return -1; c->p += 8; return 0;
    case 2: return get_sub(c, &sub);
    case 5: if (c->end - c->p < 4) return -1; c->p += 4; return 0;
    default: return -1;
    }
}

/* The next field's number and wire type; -1 on a malformed tag. */
static int get_tag(cursor *c, uint64_t *field, int *wt) {
    uint64_t t;
    if (get_varint(c, &t) < 0 || (t >> 3) == 0 || (t >> 3) > 0x1FFFFFFF) return -1;
    *field = t >> 3;
    *wt = (int)(t & 7);
    return 0;
}

/* Replace *slot with a new str of a string field (strict UTF-8); 1 on success, 0 for
 * invalid UTF-8 (the Python error is cleared: protobuf reports it), -1 on memory errors. */
static int set_str(cursor *sub, PyObject **slot) {
    PyObject *s = PyUnicode_DecodeUTF8((const char *)sub->p, sub->end - sub->p, "strict");
    if (s == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) { PyErr_Clear(); return 0; }
        return -1;
    }
    Py_XSETREF(*slot, s);
    return 1;
}

/* Short ASCII strings met before in this decode, by a hash of their bytes: the names a
 * graph repeats on every node ("VARIABLE_VALUE", "exp_avg", ...) are made once, not once
 * per node (fewer objects, less fresh memory to fault in). */
#define RECENT_SLOTS 64
#define RECENT_MAX_LEN 32
typedef struct {
    PyObject *str[RECENT_SLOTS];
    int full_names;  /* decode attributes' full_name (else ""): ObjectGraph's full_names */
} decoder;

/* set_str, through the decoder's recent strings. */
static int set_str_recent(decoder *d, cursor *sub, PyObject **slot) {
    Py_ssize_t n = sub->end - sub->p;
    if (n == 0 || n > RECENT_MAX_LEN) return set_str(sub, slot);
    unsigned h = (unsigned)n;
    for (Py_ssize_t i = 0; i < n; i++) h = h * 31u + sub->p[i];
    PyObject **hit = &d->str[h % RECENT_SLOTS];
    PyObject *s = *hit;
    if (s != NULL && PyUnicode_GET_LENGTH(s) == n && memcmp(PyUnicode_DATA(s), sub->p, n) == 0) {
        Py_INCREF(s);
        Py_XSETREF(*slot, s);
        return 1;
    }
    int r = set_str(sub, slot);
    if (r == 1 && PyUnicode_IS_ASCII(*slot)) {  /* then its data are the bytes compared above */
        Py_INCREF(*slot);
        Py_XSETREF(*hit, *slot);
    }
    return r;
}

static void decoder_clear(decoder *d) {
    for (int i = 0; i < RECENT_SLOTS; i++) Py_CLEAR(d->str[i]);
}

/* A new record of tuple subclass `type` (a named tuple) with room for n items, to be set
 * with PyTuple_SET_ITEM, made as tuple.__new__(type, ...) makes it, without a named
 * tuple's Python __new__; finish_record makes it whole. */
static PyObject *new_record(PyTypeObject *type, Py_ssize_t n) {
#if PY_VERSION_HEX < 0x030E0000
    return type->tp_alloc(type, n);  /* what tuple_subtype_new allocates */
#else
    (void)type;
    return PyTuple_New(n);  /* newer tuples carry more state: tuple.__new__ sets it up */
#endif
}

static PyObject *finish_record(PyTypeObject *type, PyObject *t) {
#if PY_VERSION_HEX < 0x030E0000
    (void)type;
    return t;
#else
    PyObject *call_args = PyTuple_Pack(1, t);
    Py_DECREF(t);
    if (call_args == NULL) return NULL;
    PyObject *obj = PyTuple_Type.tp_new(type, call_args, NULL);
    Py_DECREF(call_args);
    return obj;
#endif
}

#define FAIL_SOFT 0   /* not decodable here: the caller falls back to protobuf */
#define FAIL_HARD -1  /* a Python error is set */

/* Decode one record message into a new tuple of `type` (2 or 3 items). Field layout:
 * ints[k] is the field number of an int32 item k, strs[k] of a string item k (0: none). */
static int decode_record(cursor *c, PyTypeObject *type, int nitems, const int *ints,
                         const int *strs, int skipped, decoder *d, id_range *ids,
                         PyObject **out) {
    PyObject *items[3] = {NULL, NULL, NULL};
    int32_t ivals[3] = {0, 0, 0};
    int rc = FAIL_SOFT;
    while (c->p < c->end) {
        uint64_t field, v;
        int wt, k, known = 0;
        if (get_tag(c, &field, &wt) < 0) goto fail;
        for (k = 0; k < nitems; k++) {
            if (ints[k] && (uint64_t)ints[k] == field) {
                if (wt != 0) goto fail;
                if (get_varint(c, &v) < 0) goto fail;
                ivals[k] = (int32_t)(uint32_t)v;
                known = 1;
                break;
            }
            if (strs[k] && (uint64_t)strs[k] == field) {
                cursor sub;
                if (wt != 2 || get_sub(c, &sub) < 0) goto fail;
                if (strs[k] == skipped) { known = 1; break; }  /* left "" */
                int r = set_str_recent(d, &sub, &items[k]);
                if (r <= 0) { rc = r == 0 ? FAIL_SOFT : FAIL_HARD; goto fail; }
                known = 1;
                break;
            }
        }
        if (!known && skip(c, wt) < 0) goto fail;
    }
    PyObject *t = new_record(type, nitems);
    if (t == NULL) { rc = FAIL_HARD; goto fail; }
    for (int k = 0; k < nitems; k++) {
        PyObject *item = items[k];
        if (ints[k]) {
            note_id(ids, ivals[k]);
            item = PyLong_FromLong(ivals[k]);
        } else if (item == NULL) {
            item = PyUnicode_FromStringAndSize("", 0);
        }
        if (item == NULL) { Py_DECREF(t); rc = FAIL_HARD; goto fail; }
        items[k] = NULL;
        PyTuple_SET_ITEM(t, k, item);
    }
    *out = finish_record(type, t);
    return *out == NULL ? FAIL_HARD : 1;
fail:
    for (int k = 0; k < 3; k++) Py_XDECREF(items[k]);
    return rc;
}

static const int CHILD_INTS[2] = {1, 0}, CHILD_STRS[2] = {0, 2};
/* Attribute(name=1, checkpoint_key=3, full_name=2) */
static const int ATTR_INTS[3] = {0, 0, 0}, ATTR_STRS[3] = {1, 3, 2};
static const int SLOT_INTS[3] = {1, 0, 3}, SLOT_STRS[3] = {0, 2, 0};
#define ATTR_FULL_NAME 2  /* Attribute.full_name's field number */

/* A node's records of one kind, gathered until they become its tuple: a few in place, more
 * in a growing array (no list object per node). */
typedef struct {
    PyObject *local[4];
    PyObject **items;
    Py_ssize_t n, cap;
} records;

static void records_init(records *r) {
    r->items = r->local;
    r->n = 0;
    r->cap = 4;
}

/* Append `item` (stolen); -1 with an error set. */
static int records_push(records *r, PyObject *item) {
    if (r->n == r->cap) {
        Py_ssize_t cap = r->cap * 2;
        PyObject **grown = r->items == r->local
            ? PyMem_Malloc((size_t)cap * sizeof *grown)
            : PyMem_Realloc(r->items, (size_t)cap * sizeof *grown);
        if (grown == NULL) { Py_DECREF(item); PyErr_NoMemory(); return -1; }
        if (r->items == r->local) memcpy(grown, r->local, (size_t)r->n * sizeof *grown);
        r->items = grown;
        r->cap = cap;
    }
    r->items[r->n++] = item;
    return 0;
}

/* The records as a new tuple (moved into it), or NULL with an error set. */
static PyObject *records_tuple(records *r) {
    PyObject *t = PyTuple_New(r->n);
    if (t != NULL) {
        for (Py_ssize_t i = 0; i < r->n; i++) PyTuple_SET_ITEM(t, i, r->items[i]);
        r->n = 0;
    }
    return t;
}

static void records_clear(records *r) {
    for (Py_ssize_t i = 0; i < r->n; i++) Py_DECREF(r->items[i]);
    r->n = 0;
    if (r->items != r->local) PyMem_Free(r->items);
    r->items = r->local;
}

/* Append a decoded record to `out`. */
static int add_record(cursor *c, PyTypeObject *type, int nitems, const int *ints,
                      const int *strs, int skipped, decoder *d, id_range *ids, records *out) {
    cursor sub;
    PyObject *rec = NULL;
    if (get_sub(c, &sub) < 0) return FAIL_SOFT;
    int r = decode_record(&sub, type, nitems, ints, strs, skipped, d, ids, &rec);
    if (r <= 0) return r;
    return records_push(out, rec) < 0 ? FAIL_HARD : 1;
}

/* A submessage's string field `want` (RegisteredSaver.name) or BoolValue.value (want 0). */
static int decode_small(cursor *c, int want, PyObject **name, int *flag) {
    cursor sub;
    if (get_sub(c, &sub) < 0) return FAIL_SOFT;
    while (sub.p < sub.end) {
        uint64_t field, v;
        int wt;
        if (get_tag(&sub, &field, &wt) < 0) return FAIL_SOFT;
        if (want == 0 && field == 1) {
            if (wt != 0 || get_varint(&sub, &v) < 0) return FAIL_SOFT;
            *flag = v != 0;
        } else if (want && field == (uint64_t)want) {
            cursor s;
            if (wt != 2 || get_sub(&sub, &s) < 0) return FAIL_SOFT;
            int r = set_str(&s, name);
            if (r <= 0) return r;
        } else if (skip(&sub, wt) < 0) {
            return FAIL_SOFT;
        }
    }
    return 1;
}

/* The attributes of a node object, interned at module init. */
static PyObject *node_fields[5];

/* One TrackableObject -> a new `node_type` object with the node_fields set, or a soft fail. */
static int decode_node(cursor *c, PyTypeObject *types[3], PyTypeObject *node_type,
                       decoder *d, id_range *ids, PyObject **out) {
    records recs[3];
    for (int k = 0; k < 3; k++) records_init(&recs[k]);
    PyObject *saver = NULL;
    int flag = -1, r = FAIL_SOFT;
    while (c->p < c->end) {
        uint64_t field;
        int wt;
        r = FAIL_SOFT;
        if (get_tag(c, &field, &wt) < 0) goto fail;
        if (field >= 1 && field <= 5 && wt != 2) goto fail;
        switch (field) {
        case 1: r = add_record(c, types[0], 2, CHILD_INTS, CHILD_STRS, 0, d, ids, &recs[0]);
                break;
        case 2: r = add_record(c, types[1], 3, ATTR_INTS, ATTR_STRS,
                               d->full_names ? 0 : ATTR_FULL_NAME, d, ids, &recs[1]);
                break;
        case 3: r = add_record(c, types[2], 3, SLOT_INTS, SLOT_STRS, 0, d, ids, &recs[2]);
                break;
        case 4: r = decode_small(c, 1, &saver, &flag); break;
        case 5: if (flag < 0) flag = 0;  /* present: false unless its value says true */
                r = decode_small(c, 0, NULL, &flag); break;
        default: r = skip(c, wt) < 0 ? FAIL_SOFT : 1;
        }
        if (r <= 0) goto fail;
    }
    PyObject *values[5] = {NULL, NULL, NULL, NULL, NULL};
    for (int k = 0; k < 3; k++) {
        values[k] = records_tuple(&recs[k]);
        records_clear(&recs[k]);
    }
    values[3] = flag < 0 ? Py_None : flag ? Py_True : Py_False;
    Py_INCREF(values[3]);
    values[4] = saver != NULL ? saver : PyUnicode_FromStringAndSize("", 0);
    saver = NULL;
    PyObject *node = values[0] && values[1] && values[2] && values[4]
        ? node_type->tp_alloc(node_type, 0) : NULL;
    for (int k = 0; k < 5 && node != NULL; k++) {
        if (PyObject_SetAttr(node, node_fields[k], values[k]) < 0) Py_CLEAR(node);
    }
    for (int k = 0; k < 5; k++) Py_XDECREF(values[k]);
    if (node == NULL) { r = FAIL_HARD; goto fail; }
    *out = node;
    return 1;
fail:
    for (int k = 0; k < 3; k++) records_clear(&recs[k]);
    Py_XDECREF(saver);
    return r;
}

static PyObject *decode_graph(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    PyObject *t0, *t1, *t2, *tn;
    int full_names = 1;
    if (!PyArg_ParseTuple(args, "y*OOOO|p:decode_graph", &view, &tn, &t0, &t1, &t2, &full_names))
        return NULL;
    PyTypeObject *types[3] = {(PyTypeObject *)t0, (PyTypeObject *)t1, (PyTypeObject *)t2};
    for (int k = 0; k < 3; k++) {
        if (!PyType_Check(types[k]) || !PyType_IsSubtype(types[k], &PyTuple_Type)) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_TypeError, "decode_graph: record types must be tuple types");
            return NULL;
        }
    }
    if (!PyType_Check(tn)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "decode_graph: the node type must be a type");
        return NULL;
    }
    PyTypeObject *node_type = (PyTypeObject *)tn;
    cursor c = {(const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
#ifndef Py_GIL_DISABLED
    /* Collections triggered by the ~8 objects made per node would otherwise take half
     * the time. No other thread runs while this call holds the GIL, and the collector
     * is enabled again before it returns, so no one can observe the switch. */
    int gc_was_enabled = PyGC_Disable();
#endif
    PyObject *nodes = PyList_New(0);
    int r = nodes == NULL ? FAIL_HARD : 1;
    id_range ids = {0, 0};
    decoder d;
    memset(&d, 0, sizeof d);
    d.full_names = full_names;
    while (r > 0 && c.p < c.end) {
        uint64_t field;
        int wt;
        cursor sub;
        if (get_tag(&c, &field, &wt) < 0) { r = FAIL_SOFT; break; }
        if (field != 1) { r = skip(&c, wt) < 0 ? FAIL_SOFT : 1; continue; }
        if (wt != 2 || get_sub(&c, &sub) < 0) { r = FAIL_SOFT; break; }
        PyObject *node = NULL;
        r = decode_node(&sub, types, node_type, &d, &ids, &node);
        if (r > 0) {
            if (PyList_Append(nodes, node) < 0) r = FAIL_HARD;
            Py_DECREF(node);
        }
    }
    PyBuffer_Release(&view);
    decoder_clear(&d);
#ifndef Py_GIL_DISABLED
    if (gc_was_enabled) PyGC_Enable();
#endif
    /* every reference in range and a root present, as ObjectGraph._check requires; other
     * graphs go to protobuf and that check, which names the bad reference */
    if (r > 0 && (PyList_GET_SIZE(nodes) == 0 || ids.lo < 0
                  || (Py_ssize_t)ids.hi >= PyList_GET_SIZE(nodes)))
        r = FAIL_SOFT;
    if (r > 0) return nodes;
    Py_XDECREF(nodes);
    if (r == FAIL_HARD) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"encode_graph", encode_graph, METH_VARARGS,
     "encode_graph(children, attributes, slots, flags) -> bytes (see torchckpt.graph.wire)"},
    {"decode_graph", decode_graph, METH_VARARGS,
     "decode_graph(data, GraphNode, ChildRef, Attribute, SlotRef, full_names=True) -> list of "
     "nodes, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_wire_native",
    "The TrackableObjectGraph wire format in C (see torchckpt/graph/wire.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__wire_native(void) {
    static const char *names[5] = {"children", "attributes", "slot_variables",
                                   "has_checkpoint_values", "registered_saver"};
    for (int k = 0; k < 5; k++) {
        if (node_fields[k] == NULL && (node_fields[k] = PyUnicode_InternFromString(names[k])) == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
