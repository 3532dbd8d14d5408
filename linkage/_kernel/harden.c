/*
 * harden.c: the hardening loops of linkage/harden.py, on packed filter batches.
 *
 * Role: the keyed material (diffusion table, one seed per row) is derived in Python from
 * HMAC-SHA256 (linkage/harden.py says how); these loops only apply it, row by row, without
 * the GIL.  Both are deterministic functions of their arguments, and the plain numpy
 * references blip_flip_mask_reference and diffuse_reference in linkage/harden.py are the
 * specification the tests hold them to.
 */
#include "kernel.h"

/*
 * diffuse(filters, table, out): keyed diffusion of packed filters (linkage.harden.diffuse).
 * filters (rows, in_words) uint64; table (out_bits, t) int64 of input bit positions, each in
 * [0, 64 * in_words); out (rows, out_bits / 64) uint64, written. Output bit j of a row is the
 * XOR of its input bits table[j, 0..t-1]; bit i of a filter is bit i % 64 of word i / 64.
 */
PyObject *py_diffuse(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *filters_object, *table_object, *out_object;
    if (!PyArg_ParseTuple(args, "OOO", &filters_object, &table_object, &out_object)) {
        return NULL;
    }
    Py_buffer views[3];
    if (!acquire(filters_object, &views[0], "filters", KIND_U64, 2, 0)) {
        return NULL;
    }
    if (!acquire(table_object, &views[1], "table", KIND_I64, 2, 0)) {
        release_all(views, 1);
        return NULL;
    }
    if (!acquire(out_object, &views[2], "out", KIND_U64, 2, 1)) {
        release_all(views, 2);
        return NULL;
    }
    Py_ssize_t rows = views[0].shape[0];
    Py_ssize_t in_words = views[0].shape[1];
    Py_ssize_t out_bits = views[1].shape[0];
    Py_ssize_t t = views[1].shape[1];
    Py_ssize_t out_words = views[2].shape[1];
    if (views[2].shape[0] != rows || out_words * 64 != out_bits) {
        release_all(views, 3);
        PyErr_SetString(PyExc_ValueError,
                        "out: expected one row per filter and table rows / 64 words");
        return NULL;
    }
    const int64_t *table = (const int64_t *)views[1].buf;
    for (Py_ssize_t k = 0; k < out_bits * t; k++) {
        if (table[k] < 0 || table[k] >= in_words * 64) {
            release_all(views, 3);
            PyErr_SetString(PyExc_ValueError, "table: expected input bit positions");
            return NULL;
        }
    }
    const uint64_t *filters = (const uint64_t *)views[0].buf;
    uint64_t *out = (uint64_t *)views[2].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++) {
        const uint64_t *in_row = filters + r * in_words;
        uint64_t *out_row = out + r * out_words;
        const int64_t *entry = table;
        for (Py_ssize_t w = 0; w < out_words; w++) {
            uint64_t word = 0;
            for (int b = 0; b < 64; b++) {
                uint64_t bit = 0;
                for (Py_ssize_t k = 0; k < t; k++) {
                    int64_t position = entry[k];
                    bit ^= in_row[position >> 6] >> (position & 63);
                }
                word |= (bit & 1u) << b;
                entry += t;
            }
            out_row[w] = word;
        }
    }
    Py_END_ALLOW_THREADS
    release_all(views, 3);
    Py_RETURN_NONE;
}

/*
 * blip_mask(seeds, threshold, out): the BLIP flip mask of linkage.harden.blip_flip_mask.
 * seeds (rows,) uint64 (one keyed seed per row); out (rows, words) uint64, written. Random
 * word c (c = 1, 2, ...) of a row is splitmix64_mix(seed + c * 0x9E3779B97F4A7C15); its four
 * 16-bit lanes, lowest first, decide bits 4 (c - 1) .. 4 (c - 1) + 3: a bit flips when its lane
 * is below threshold.
 */
PyObject *py_blip_mask(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *seeds_object, *out_object;
    unsigned long long threshold;
    if (!PyArg_ParseTuple(args, "OKO", &seeds_object, &threshold, &out_object)) {
        return NULL;
    }
    Py_buffer views[2];
    if (!acquire(seeds_object, &views[0], "seeds", KIND_U64, 1, 0)) {
        return NULL;
    }
    if (!acquire(out_object, &views[1], "out", KIND_U64, 2, 1)) {
        release_all(views, 1);
        return NULL;
    }
    Py_ssize_t rows = views[0].shape[0];
    Py_ssize_t words = views[1].shape[1];
    if (views[1].shape[0] != rows) {
        release_all(views, 2);
        PyErr_SetString(PyExc_ValueError, "out: expected one row per seed");
        return NULL;
    }
    const uint64_t *seeds = (const uint64_t *)views[0].buf;
    uint64_t *out = (uint64_t *)views[1].buf;
    const uint64_t gamma = 0x9E3779B97F4A7C15ull;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++) {
        uint64_t counter = 0;
        for (Py_ssize_t w = 0; w < words; w++) {
            uint64_t word = 0;
            for (int j = 0; j < 16; j++) {
                counter++;
                uint64_t z = seeds[r] + counter * gamma;
                z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
                z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
                z ^= z >> 31;
                for (int lane = 0; lane < 4; lane++) {
                    if (((z >> (16 * lane)) & 0xFFFFu) < threshold) {
                        word |= 1ull << (4 * j + lane);
                    }
                }
            }
            out[r * words + w] = word;
        }
    }
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    Py_RETURN_NONE;
}
