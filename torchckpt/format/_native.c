/* torchckpt.format._native: copy a payload and compute its CRC-32C in one pass.
 *
 * Optional accelerator of torchckpt/format/_io.py: restores copy from the mapped
 * data file (copy_crc32c, copy_many_crc32c to tensors' addresses), saves gather
 * small payloads from tensors' addresses into one buffer (gather_crc32c). Where
 * this module is missing or ACCELERATED is false (a CPU without AVX2 +
 * VPCLMULQDQ + SSE4.2, or a build for another architecture), the reader falls
 * back to preadv + the `crc32c` package, and both sides to buffer views.
 *
 * Why: restoring into existing tensors is bounded by one copy per byte from
 * the page cache (~7-10 GB/s per core on 2-core machines). Copying with
 * preadv and then checksumming reads every byte twice and spends ~0.1 core-s
 * per GiB on the CRC (SSE4.2 `crc32` instruction, ~14-20 GB/s), +30-50% on
 * a restore. Here the source is mapped (mmap) by the caller and each 128-byte
 * step is loaded once, stored to the destination and folded into the CRC with
 * carry-less multiplies on 256-bit registers (~20 GB/s on its own): the
 * folding hides behind the copy's memory traffic, so a verified restore costs
 * what an unverified one does.
 *
 * CRC-32C here is the plain (unmasked) CRC of zlib/`crc32c` conventions:
 * crc32c(b"123456789") == 0xE3069283; TF's masking is done in Python.
 *
 * Folding (reflected CRC; Intel, "Fast CRC Computation for Generic Polynomials
 * Using PCLMULQDQ"): a 128-bit lane A = L * x^64 + H (L = its first 8 bytes,
 * the high-degree half) that sits D bits before lane B is replaced by
 * L * (x^(D+64) mod P) + H * (x^D mod P) and xored into B. In the reflected
 * domain a carry-less product carries one extra factor x, so the constants
 * are reflect64(x^(D+63) mod P) and reflect64(x^(D-1) mod P), computed at
 * import by init_constants. The last 16 bytes are reduced with two `crc32`
 * instructions, which compute exactly (crc * x^64 + data * x^32) mod P.
 * Checked against the `crc32c` package by tests/format/test_native.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86 1
#include <immintrin.h>
#else
#define HAVE_X86 0
#endif

#define POLY 0x82F63B78u /* Castagnoli, reflected */

#if HAVE_X86

#define TARGET __attribute__((target("avx2,vpclmulqdq,pclmul,sse4.2")))

/* Fold constants for D = 1024 (four registers of two lanes, 128 bytes apart),
 * 256 (one register to the next) and 128 bits (one lane to the next). */
static uint64_t k1024_l, k1024_h, k256_l, k256_h, k128_l, k128_h;

/* a(x) * b(x) mod P, both 32-bit reflected (bit 31 = x^0). */
static uint32_t multmodp(uint32_t a, uint32_t b) {
    uint32_t p = 0;
    for (int i = 0; i < 32; i++) {
        if (a & 0x80000000u) p ^= b;
        a <<= 1;
        b = (b & 1) ? (b >> 1) ^ POLY : b >> 1;
    }
    return p;
}

/* x^n mod P, 32-bit reflected. */
static uint32_t xpow_mod(uint64_t n) {
    uint32_t r = 0x80000000u, sq = 0x40000000u; /* x^0, x^1 */
    for (; n; n >>= 1) {
        if (n & 1) r = multmodp(r, sq);
        sq = multmodp(sq, sq);
    }
    return r;
}

/* reflect64(x^n mod P): the 32-bit reflected form puts x^j at bit 31-j, the
 * 64-bit lane form at bit 63-j, hence the shift. */
static uint64_t lane_constant(uint64_t n) { return (uint64_t)xpow_mod(n) << 32; }

static void init_constants(void) {
    k1024_l = lane_constant(1024 + 63);
    k1024_h = lane_constant(1024 - 1);
    k256_l = lane_constant(256 + 63);
    k256_h = lane_constant(256 - 1);
    k128_l = lane_constant(128 + 63);
    k128_h = lane_constant(128 - 1);
}

TARGET static uint32_t crc_bytes(uint32_t crc, const uint8_t *p, size_t n) {
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        crc = (uint32_t)_mm_crc32_u64(crc, v);
    }
    while (n--) crc = _mm_crc32_u8(crc, *p++);
    return crc;
}

TARGET static inline __m256i fold256(__m256i a, __m256i k) {
    return _mm256_xor_si256(_mm256_clmulepi64_epi128(a, k, 0x00),
                            _mm256_clmulepi64_epi128(a, k, 0x11));
}

TARGET static inline __m128i fold128(__m128i a, __m128i k) {
    return _mm_xor_si128(_mm_clmulepi64_si128(a, k, 0x00), _mm_clmulepi64_si128(a, k, 0x11));
}

TARGET static inline __m256i lane_pair(uint64_t lo, uint64_t hi) {
    return _mm256_set_epi64x((long long)hi, (long long)lo, (long long)hi, (long long)lo);
}

/* Copy n bytes src -> dst and return the CRC register (no pre/post inversion)
 * continuing from `crc`. */
TARGET static uint32_t copy_crc(uint32_t crc, uint8_t *dst, const uint8_t *src, size_t n) {
    if (n < 256) {
        memcpy(dst, src, n);
        return crc_bytes(crc, src, n);
    }
    const __m256i k1024 = lane_pair(k1024_l, k1024_h), k256 = lane_pair(k256_l, k256_h);
    __m256i x0 = _mm256_loadu_si256((const __m256i *)src);
    __m256i x1 = _mm256_loadu_si256((const __m256i *)(src + 32));
    __m256i x2 = _mm256_loadu_si256((const __m256i *)(src + 64));
    __m256i x3 = _mm256_loadu_si256((const __m256i *)(src + 96));
    _mm256_storeu_si256((__m256i *)dst, x0);
    _mm256_storeu_si256((__m256i *)(dst + 32), x1);
    _mm256_storeu_si256((__m256i *)(dst + 64), x2);
    _mm256_storeu_si256((__m256i *)(dst + 96), x3);
    x0 = _mm256_xor_si256(x0, _mm256_set_epi64x(0, 0, 0, (long long)crc));
    src += 128, dst += 128, n -= 128;
    for (; n >= 128; src += 128, dst += 128, n -= 128) {
        __m256i y0 = _mm256_loadu_si256((const __m256i *)src);
        __m256i y1 = _mm256_loadu_si256((const __m256i *)(src + 32));
        __m256i y2 = _mm256_loadu_si256((const __m256i *)(src + 64));
        __m256i y3 = _mm256_loadu_si256((const __m256i *)(src + 96));
        _mm256_storeu_si256((__m256i *)dst, y0);
        _mm256_storeu_si256((__m256i *)(dst + 32), y1);
        _mm256_storeu_si256((__m256i *)(dst + 64), y2);
        _mm256_storeu_si256((__m256i *)(dst + 96), y3);
        x0 = _mm256_xor_si256(fold256(x0, k1024), y0);
        x1 = _mm256_xor_si256(fold256(x1, k1024), y1);
        x2 = _mm256_xor_si256(fold256(x2, k1024), y2);
        x3 = _mm256_xor_si256(fold256(x3, k1024), y3);
    }
    x1 = _mm256_xor_si256(fold256(x0, k256), x1);
    x2 = _mm256_xor_si256(fold256(x1, k256), x2);
    x3 = _mm256_xor_si256(fold256(x2, k256), x3);
    memcpy(dst, src, n); /* the tail, under 128 bytes */
    for (; n >= 32; src += 32, n -= 32)
        x3 = _mm256_xor_si256(fold256(x3, k256), _mm256_loadu_si256((const __m256i *)src));
    const __m128i k128 = _mm_set_epi64x((long long)k128_h, (long long)k128_l);
    __m128i y = _mm_xor_si128(fold128(_mm256_castsi256_si128(x3), k128),
                              _mm256_extracti128_si256(x3, 1));
    for (; n >= 16; src += 16, n -= 16)
        y = _mm_xor_si128(fold128(y, k128), _mm_loadu_si128((const __m128i *)src));
    uint32_t c = (uint32_t)_mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(y));
    c = (uint32_t)_mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(y, 1));
    return crc_bytes(c, src, n);
}

static int cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("vpclmulqdq") &&
           __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.2");
}

#else /* !HAVE_X86: the module imports, reports ACCELERATED = 0, and is not used */

static int cpu_supported(void) { return 0; }
static void init_constants(void) {}
static uint32_t copy_crc(uint32_t crc, uint8_t *dst, const uint8_t *src, size_t n) {
    (void)crc, (void)dst, (void)src, (void)n;
    return 0;
}

#endif

static int accelerated = 0;

PyDoc_STRVAR(copy_crc32c_doc,
             "copy_crc32c(dest, src) -> int\n\n"
             "Copy the buffer `src` into the writable buffer `dest` (same size) and\n"
             "return the CRC-32C of the bytes, in one pass over memory; the GIL is\n"
             "released. Meant for `src` mapped from a file, so that a restore reads\n"
             "each byte once.");

static PyObject *py_copy_crc32c(PyObject *self, PyObject *args) {
    Py_buffer dst, src;
    (void)self;
    if (!accelerated) {
        PyErr_SetString(PyExc_RuntimeError, "copy_crc32c: this CPU lacks AVX2/VPCLMULQDQ");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "w*y*:copy_crc32c", &dst, &src)) return NULL;
    if (dst.len != src.len) {
        PyBuffer_Release(&dst);
        PyBuffer_Release(&src);
        PyErr_SetString(PyExc_ValueError, "copy_crc32c: buffers differ in size");
        return NULL;
    }
    uint32_t crc;
    Py_BEGIN_ALLOW_THREADS
    crc = ~copy_crc(~0u, (uint8_t *)dst.buf, (const uint8_t *)src.buf, (size_t)src.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    return PyLong_FromUnsignedLong(crc);
}

/* Read one sequence of integers into a new C array; NULL with an exception set. */
static int64_t *int64_array(PyObject *seq, Py_ssize_t n, const char *what) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL) return NULL;
    if (PySequence_Fast_GET_SIZE(fast) != n) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "%s has another length", what);
        return NULL;
    }
    int64_t *out = PyMem_Malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (out == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    PyObject **items = PySequence_Fast_ITEMS(fast);
    for (Py_ssize_t i = 0; i < n; i++) {
        /* addresses above 2**63 do not occur in user space on x86-64 */
        out[i] = (int64_t)PyLong_AsLongLong(items[i]);
        if (out[i] == -1 && PyErr_Occurred()) {
            PyMem_Free(out);
            Py_DECREF(fast);
            return NULL;
        }
    }
    Py_DECREF(fast);
    return out;
}

PyDoc_STRVAR(copy_many_crc32c_doc,
             "copy_many_crc32c(src, offsets, addresses, sizes, stored) -> int\n\n"
             "For each i, copy sizes[i] bytes of the buffer `src` from offsets[i] to the\n"
             "memory at the integer address addresses[i], computing the CRC-32C in the\n"
             "same pass, and compare its TF mask with stored[i]. Returns the first i\n"
             "whose CRC differs, or -1 (always -1 where `stored` is None). The GIL is\n"
             "released during the copies.\n\n"
             "The caller guarantees that every [address, address + size) is writable\n"
             "memory it keeps alive during the call (a tensor's own storage); ranges\n"
             "of `src` are checked here.");

static PyObject *py_copy_many_crc32c(PyObject *self, PyObject *args) {
    Py_buffer src;
    PyObject *offsets_seq, *addresses_seq, *sizes_seq, *stored_seq;
    (void)self;
    if (!accelerated) {
        PyErr_SetString(PyExc_RuntimeError, "copy_many_crc32c: this CPU lacks AVX2/VPCLMULQDQ");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*OOOO:copy_many_crc32c", &src, &offsets_seq, &addresses_seq,
                          &sizes_seq, &stored_seq))
        return NULL;
    int64_t *offsets = NULL, *addresses = NULL, *sizes = NULL, *stored = NULL;
    Py_ssize_t n = PyObject_Length(offsets_seq);
    Py_ssize_t bad = -1;
    if (n < 0) goto done;
    if ((offsets = int64_array(offsets_seq, n, "offsets")) == NULL) goto done;
    if ((addresses = int64_array(addresses_seq, n, "addresses")) == NULL) goto done;
    if ((sizes = int64_array(sizes_seq, n, "sizes")) == NULL) goto done;
    if (stored_seq != Py_None && (stored = int64_array(stored_seq, n, "stored")) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (offsets[i] < 0 || sizes[i] < 0 || offsets[i] > (int64_t)src.len - sizes[i] ||
            (sizes[i] > 0 && addresses[i] == 0)) {
            PyErr_Format(PyExc_ValueError, "copy_many_crc32c: payload %zd lies outside the "
                         "source or has no destination", i);
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t crc = ~copy_crc(~0u, (uint8_t *)(uintptr_t)addresses[i],
                                 (const uint8_t *)src.buf + offsets[i], (size_t)sizes[i]);
        uint32_t masked = ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
        if (stored != NULL && (int64_t)masked != stored[i]) {
            bad = i;
            break;
        }
    }
    Py_END_ALLOW_THREADS
done:
    PyMem_Free(offsets);
    PyMem_Free(addresses);
    PyMem_Free(sizes);
    PyMem_Free(stored);
    PyBuffer_Release(&src);
    if (PyErr_Occurred()) return NULL;
    return PyLong_FromSsize_t(bad);
}

PyDoc_STRVAR(gather_crc32c_doc,
             "gather_crc32c(addresses, sizes, alignment) -> (bytes, list)\n\n"
             "Copy sizes[i] bytes from the memory at each integer address into one new\n"
             "bytes object, in order, each followed by zeros up to a multiple of\n"
             "`alignment` bytes, and return it with the TF-masked CRC-32C of each\n"
             "payload, computed in the same pass. The GIL is released during the copies.\n\n"
             "The caller guarantees that every [address, address + size) is readable\n"
             "memory it keeps alive during the call (a tensor's own storage).");

static PyObject *py_gather_crc32c(PyObject *self, PyObject *args) {
    PyObject *addresses_seq, *sizes_seq;
    Py_ssize_t alignment;
    (void)self;
    if (!accelerated) {
        PyErr_SetString(PyExc_RuntimeError, "gather_crc32c: this CPU lacks AVX2/VPCLMULQDQ");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOn:gather_crc32c", &addresses_seq, &sizes_seq, &alignment))
        return NULL;
    if (alignment < 1) {
        PyErr_SetString(PyExc_ValueError, "gather_crc32c: alignment must be >= 1");
        return NULL;
    }
    PyObject *blob = NULL, *crcs = NULL, *result = NULL;
    int64_t *addresses = NULL, *sizes = NULL;
    uint32_t *masked = NULL;
    Py_ssize_t n = PyObject_Length(addresses_seq);
    if (n < 0) goto done;
    if ((addresses = int64_array(addresses_seq, n, "addresses")) == NULL) goto done;
    if ((sizes = int64_array(sizes_seq, n, "sizes")) == NULL) goto done;
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (sizes[i] < 0 || (sizes[i] > 0 && addresses[i] == 0) ||
            sizes[i] > PY_SSIZE_T_MAX / 2 - total) {
            PyErr_Format(PyExc_ValueError, "gather_crc32c: payload %zd has no memory or a "
                         "size out of range", i);
            goto done;
        }
        total += sizes[i];
        total += (alignment - total % alignment) % alignment;
    }
    if ((masked = PyMem_Malloc(sizeof(uint32_t) * (size_t)(n ? n : 1))) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if ((blob = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total)) == NULL) goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(blob);
    Py_BEGIN_ALLOW_THREADS
    int64_t at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t crc = ~copy_crc(~0u, out + at, (const uint8_t *)(uintptr_t)addresses[i],
                                 (size_t)sizes[i]);
        masked[i] = ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
        at += sizes[i];
        int64_t pad = (alignment - at % alignment) % alignment;
        memset(out + at, 0, (size_t)pad);
        at += pad;
    }
    Py_END_ALLOW_THREADS
    if ((crcs = PyList_New(n)) == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLong(masked[i]);
        if (v == NULL) goto done;
        PyList_SET_ITEM(crcs, i, v);
    }
    result = PyTuple_Pack(2, blob, crcs);
done:
    PyMem_Free(addresses);
    PyMem_Free(sizes);
    PyMem_Free(masked);
    Py_XDECREF(blob);
    Py_XDECREF(crcs);
    return result;
}

static PyMethodDef methods[] = {
    {"copy_crc32c", py_copy_crc32c, METH_VARARGS, copy_crc32c_doc},
    {"copy_many_crc32c", py_copy_many_crc32c, METH_VARARGS, copy_many_crc32c_doc},
    {"gather_crc32c", py_gather_crc32c, METH_VARARGS, gather_crc32c_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "torchckpt.format._native",
    "Copy and CRC-32C in one pass (carry-less multiply), for verified reads and writes.", -1,
    methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    accelerated = cpu_supported();
    if (accelerated) init_constants();
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "ACCELERATED", accelerated) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
