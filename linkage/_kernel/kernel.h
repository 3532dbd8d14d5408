/*
 * kernel.h: what the source files of the extension linkage._dicekernel share.
 *
 * One extension module is built from these sources (setup.py); each file owns one purpose:
 *   module.c   the Python module: method table and initialisation
 *   buffers.c  argument checking of the buffers every entry point takes
 *   dice.c     popcounts and Dice scores with run-time CPU dispatch (linkage/similarity.py)
 *   harden.c   the hardening loops diffuse and blip_mask (linkage/harden.py)
 *   hmac.c     HMAC-SHA256 of many messages under one key, on OpenSSL's libcrypto (the
 *              interface tokens.c uses is in hmac.h)
 *   tokens.c   Bloom filters straight from tokens (linkage/encode/encoder.py)
 *
 * Contract shared by every entry point: buffers are C-contiguous and owned by the caller; a
 * bad argument raises TypeError (not a buffer) or ValueError / IndexError naming the
 * argument and the expectation, never its contents; loops over data run without the GIL; no
 * state is kept besides what initialisation reads off the CPU.  linkage/_portable.py is the
 * same API in numpy, and the tests hold the two to identical results.
 *
 * Data layout (the library-wide contract): a packed Bloom filter of filter_bits bits (a
 * multiple of 64) is filter_bits / 64 little-endian 64-bit words; bit i lives in word i / 64
 * at bit i % 64.  A batch of n filters is a row-major (n, words) buffer of uint64.
 */
#ifndef JIGSAW_KERNEL_H
#define JIGSAW_KERNEL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- buffers.c */

typedef enum { KIND_U64, KIND_U32, KIND_I64, KIND_F64 } buffer_kind;

/* Acquire a C-contiguous buffer of the given kind and number of dimensions (2-D buffers need
 * at least one column).  On failure sets TypeError or ValueError naming the argument and
 * returns 0 with nothing held. */
int acquire(PyObject *object, Py_buffer *view, const char *name, buffer_kind kind, int ndim,
            int writable);
void release_all(Py_buffer *views, int count);
/* offsets[0..count] ascending, each within [0, length]: the parts of a blob. */
int offsets_valid(const int64_t *offsets, Py_ssize_t count, Py_ssize_t length);

/* ---------------------------------------------------------------- dice.c */

/* Read the CPU's features and pick the fastest popcount path (once, at module init). */
void dice_detect_cpu(void);
PyObject *py_kernel_name(PyObject *self, PyObject *unused);
PyObject *py_available_kernels(PyObject *self, PyObject *unused);
PyObject *py_popcounts(PyObject *self, PyObject *args);
PyObject *py_scan(PyObject *self, PyObject *args);
PyObject *py_pairs(PyObject *self, PyObject *args);

/* ---------------------------------------------------------------- harden.c */

PyObject *py_diffuse(PyObject *self, PyObject *args);
PyObject *py_blip_mask(PyObject *self, PyObject *args);

/* ---------------------------------------------------------------- hmac.c */

PyObject *py_hmac_paths(PyObject *self, PyObject *unused);
PyObject *py_hmac_words(PyObject *self, PyObject *args);

/* ---------------------------------------------------------------- tokens.c */

PyObject *py_token_filters(PyObject *self, PyObject *args);

#endif /* JIGSAW_KERNEL_H */
