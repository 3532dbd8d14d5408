/*
 * tokens.c: Bloom filters straight from tokens (linkage/encode/encoder.py).
 *
 * token_filters(key, prefixes, prefix_offsets[np + 1] i64, tokens, token_offsets[nt + 1] i64,
 *               value_tokens[nv + 1] i64, combo_value[nc] i64, combo_prefix[nc] i64, hashes,
 *               bits, out[nc, words] u64[, path]) -> None
 *
 * The Bloom filter of each (prefix, value) combination: combination c sets, for every token t
 * of value combo_value[c], the positions of the message prefix[combo_prefix[c]] || token t:
 * words[h] % bits for h < hashes, where words are the little-endian uint32 words of
 * HMAC-SHA256(key, bytes([b]) + message) for b = 0, 1, ... (8 words per b), the positions of
 * token_positions() in linkage/encode/hashing.py, which the tests check this against.  Value
 * v's tokens are tokens[token_offsets[value_tokens[v]] .. token_offsets[value_tokens[v + 1]]],
 * one per token_offsets step; prefix p is prefixes[prefix_offsets[p] ..
 * prefix_offsets[p + 1]].  out is overwritten whole.  Every index and offset is checked
 * before the loop, which runs without the GIL and needs no memory of its own.
 */
#include "hmac.h"

#include <string.h>

PyObject *py_token_filters(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer key, prefixes, tokens;
    PyObject *objects[6];
    int hashes, path = -1;
    long long bits;
    if (!PyArg_ParseTuple(args, "y*y*Oy*OOOOiLO|i", &key, &prefixes, &objects[0], &tokens,
                          &objects[1], &objects[2], &objects[3], &objects[4], &hashes, &bits,
                          &objects[5], &path)) {
        return NULL;
    }
    Py_buffer buffers[3] = {key, prefixes, tokens};
    if (!hmac_path_valid(path, "token_filters")) {
        release_all(buffers, 3);
        return NULL;
    }
    static const char *const names[6] = {"prefix_offsets", "token_offsets", "value_tokens",
                                         "combo_value",    "combo_prefix",  "out"};
    Py_buffer views[6];
    for (int i = 0; i < 6; i++) {
        int is_out = i == 5;
        if (!acquire(objects[i], &views[i], names[i], is_out ? KIND_U64 : KIND_I64,
                     is_out ? 2 : 1, is_out)) {
            release_all(views, i);
            release_all(buffers, 3);
            return NULL;
        }
    }
    const int64_t *prefix_offsets = (const int64_t *)views[0].buf;
    const int64_t *token_offsets = (const int64_t *)views[1].buf;
    const int64_t *value_tokens = (const int64_t *)views[2].buf;
    const int64_t *combo_value = (const int64_t *)views[3].buf;
    const int64_t *combo_prefix = (const int64_t *)views[4].buf;
    Py_ssize_t n_prefixes = views[0].shape[0] - 1, n_tokens = views[1].shape[0] - 1;
    Py_ssize_t n_values = views[2].shape[0] - 1, combos = views[3].shape[0];
    Py_ssize_t words = views[5].shape[1];
    int ok = hashes >= 1 && hashes <= 255 * 8 && bits >= 1 && bits <= (long long)words * 64 &&
             offsets_valid(prefix_offsets, n_prefixes, prefixes.len) &&
             offsets_valid(token_offsets, n_tokens, tokens.len) &&
             offsets_valid(value_tokens, n_values, n_tokens) && views[4].shape[0] == combos &&
             views[5].shape[0] == combos;
    for (Py_ssize_t c = 0; ok && c < combos; c++) {
        ok = combo_value[c] >= 0 && combo_value[c] < n_values && combo_prefix[c] >= 0 &&
             combo_prefix[c] < n_prefixes;
    }
    if (!ok) {
        release_all(views, 6);
        release_all(buffers, 3);
        PyErr_SetString(PyExc_ValueError,
                        "token_filters: expected 1..2040 hashes, 1 <= bits <= 64 * out words, "
                        "ascending offsets within their blobs (value_tokens within the "
                        "tokens), combo_value and combo_prefix of one length within range, "
                        "and out of shape (combinations, words)");
        return NULL;
    }
    hmac_key prepared;
    hmac_key_init(&prepared, (const uint8_t *)key.buf, (size_t)key.len);
    const uint8_t *prefix_bytes = (const uint8_t *)prefixes.buf;
    const uint8_t *token_bytes = (const uint8_t *)tokens.buf;
    uint64_t *out = (uint64_t *)views[5].buf;
    uint64_t modulus = (uint64_t)bits;
    int blocks = (hashes + 7) / 8;
    Py_BEGIN_ALLOW_THREADS
    memset(out, 0, (size_t)combos * (size_t)words * sizeof(uint64_t));
    for (Py_ssize_t c = 0; c < combos; c++) {
        uint64_t *row = out + c * words;
        int64_t p = combo_prefix[c], v = combo_value[c];
        for (int64_t t = value_tokens[v]; t < value_tokens[v + 1]; t++) {
            for (int b = 0; b < blocks; b++) {
                uint8_t counter_byte = (uint8_t)b;
                const uint8_t *parts[3] = {&counter_byte, prefix_bytes + prefix_offsets[p],
                                           token_bytes + token_offsets[t]};
                size_t lengths[3] = {1, (size_t)(prefix_offsets[p + 1] - prefix_offsets[p]),
                                     (size_t)(token_offsets[t + 1] - token_offsets[t])};
                uint32_t digest_words[8];
                hmac_words_of(&prepared, parts, lengths, 3, digest_words);
                int used = hashes - 8 * b < 8 ? hashes - 8 * b : 8;
                for (int h = 0; h < used; h++) {
                    uint64_t position = digest_words[h] % modulus;
                    row[position >> 6] |= (uint64_t)1 << (position & 63);
                }
            }
        }
    }
    Py_END_ALLOW_THREADS
    OPENSSL_cleanse(&prepared, sizeof(prepared));
    release_all(views, 6);
    release_all(buffers, 3);
    Py_RETURN_NONE;
}
