/*
 * hmac.c: HMAC-SHA256 of many short messages under one key, on OpenSSL's libcrypto.
 *
 * Role: the encoder's token hashing (linkage/encode/hashing.py) and tokens.c call HMAC once
 * per (token, block); this file makes the key ready once per call and hashes every message
 * without the GIL.
 *
 * Contract: HMAC as RFC 2104 specifies it over SHA-256 (a key longer than the 64-byte block
 * is hashed first, then zero-padded; inner = SHA256(K ^ ipad || m), outer = SHA256(K ^ opad
 * || inner)).  The SHA-256 itself is OpenSSL's, which runs the CPU's SHA instructions where
 * it has them.  tests/linkage/test_hmac_kernel.py holds the output to the RFC 4231 test vectors and
 * to Python's hmac module.
 *
 * Entry points:
 *   hmac_words(key, data, offsets[n + 1] i64, blocks, counter, out[n, 8 * blocks] u32
 *              [, path]) -> None
 *      out[i, 8b:8b+8] = the little-endian uint32 words of HMAC-SHA256(key, bytes([b]) +
 *      message i) with counter, of HMAC-SHA256(key, message i) without (then blocks = 1);
 *      message i = data[offsets[i]:offsets[i + 1]].
 *   hmac_paths() -> (("openssl", True),)
 *      The SHA-256 implementations a path argument can name, by index; -1 (the default)
 *      picks the first.  OpenSSL chooses its own code for the CPU, so there is one.
 */
#include "hmac.h"

#include <string.h>

#define SHA256_BLOCK 64

static const char *const hmac_path_names[] = {"openssl"};
#define HMAC_PATH_COUNT ((int)(sizeof(hmac_path_names) / sizeof(hmac_path_names[0])))

void hmac_key_init(hmac_key *key, const uint8_t *bytes, size_t length) {
    uint8_t padded[SHA256_BLOCK], pad_block[SHA256_BLOCK];
    memset(padded, 0, sizeof(padded));
    if (length > SHA256_BLOCK) {
        SHA256(bytes, length, padded);
    } else if (length > 0) {
        memcpy(padded, bytes, length);
    }
    for (int i = 0; i < SHA256_BLOCK; i++) {
        pad_block[i] = padded[i] ^ 0x36;
    }
    SHA256_Init(&key->inner);
    SHA256_Update(&key->inner, pad_block, SHA256_BLOCK);
    for (int i = 0; i < SHA256_BLOCK; i++) {
        pad_block[i] = padded[i] ^ 0x5c;
    }
    SHA256_Init(&key->outer);
    SHA256_Update(&key->outer, pad_block, SHA256_BLOCK);
    OPENSSL_cleanse(padded, sizeof(padded));
    OPENSSL_cleanse(pad_block, sizeof(pad_block));
}

int hmac_path_valid(int path, const char *function) {
    if (path == -1 || (path >= 0 && path < HMAC_PATH_COUNT)) {
        return 1;
    }
    PyErr_Format(PyExc_ValueError,
                 "%s: path must be -1 (the fastest) or the index of a path in hmac_paths() "
                 "that this CPU supports",
                 function);
    return 0;
}

PyObject *py_hmac_paths(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    PyObject *result = PyTuple_New(HMAC_PATH_COUNT);
    if (result == NULL) {
        return NULL;
    }
    for (int p = 0; p < HMAC_PATH_COUNT; p++) {
        PyObject *entry = Py_BuildValue("(sO)", hmac_path_names[p], Py_True);
        if (entry == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, p, entry);
    }
    return result;
}

PyObject *py_hmac_words(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer key, data;
    PyObject *offsets_object, *out_object;
    int blocks, counter, path = -1;
    if (!PyArg_ParseTuple(args, "y*y*OipO|i", &key, &data, &offsets_object, &blocks, &counter,
                          &out_object, &path)) {
        return NULL;
    }
    Py_buffer views[2];
    if (!hmac_path_valid(path, "hmac_words")) {
        PyBuffer_Release(&key);
        PyBuffer_Release(&data);
        return NULL;
    }
    if (!acquire(offsets_object, &views[0], "offsets", KIND_I64, 1, 0)) {
        PyBuffer_Release(&key);
        PyBuffer_Release(&data);
        return NULL;
    }
    if (!acquire(out_object, &views[1], "out", KIND_U32, 2, 1)) {
        release_all(views, 1);
        PyBuffer_Release(&key);
        PyBuffer_Release(&data);
        return NULL;
    }
    Py_ssize_t messages = views[0].shape[0] - 1;
    const int64_t *offsets = (const int64_t *)views[0].buf;
    int ok = blocks >= 1 && blocks <= 255 && (counter || blocks == 1) &&
             offsets_valid(offsets, messages, data.len) && views[1].shape[0] == messages &&
             views[1].shape[1] == (Py_ssize_t)blocks * 8;
    if (!ok) {
        release_all(views, 2);
        PyBuffer_Release(&key);
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError,
                        "hmac_words: expected 1..255 blocks (1 without a counter), offsets[n + 1] "
                        "ascending within data, and out of shape (n, 8 * blocks)");
        return NULL;
    }
    hmac_key prepared;
    hmac_key_init(&prepared, (const uint8_t *)key.buf, (size_t)key.len);
    const uint8_t *bytes = (const uint8_t *)data.buf;
    uint32_t *out = (uint32_t *)views[1].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < messages; i++) {
        for (int b = 0; b < blocks; b++) {
            uint8_t counter_byte = (uint8_t)b;
            const uint8_t *parts[2] = {&counter_byte, bytes + offsets[i]};
            size_t lengths[2] = {counter ? 1 : 0, (size_t)(offsets[i + 1] - offsets[i])};
            hmac_words_of(&prepared, parts, lengths, 2, out + i * (Py_ssize_t)blocks * 8 + b * 8);
        }
    }
    Py_END_ALLOW_THREADS
    OPENSSL_cleanse(&prepared, sizeof(prepared));
    release_all(views, 2);
    PyBuffer_Release(&key);
    PyBuffer_Release(&data);
    Py_RETURN_NONE;
}
