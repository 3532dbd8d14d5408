/*
 * module.c: the Python module linkage._dicekernel: its method table and initialisation.
 *
 * The module is private: Python code reaches it through linkage/kernel.py, which falls back
 * to linkage/_portable.py (the same functions in numpy, same results) when this extension is
 * missing or JIGSAW_PORTABLE_KERNEL=1 is set.  The functions live in the other files of this
 * folder, one purpose each (kernel.h lists them).  Initialisation only reads the CPU's
 * features (dice.c); the module keeps no other state.
 */
#include "kernel.h"

static PyMethodDef methods[] = {
    {"kernel_name", py_kernel_name, METH_NOARGS, "Name of the fastest CPU path on this machine."},
    {"hmac_paths", py_hmac_paths, METH_NOARGS,
     "((name, supported), ...) of hmac_words' SHA-256 paths, by index (the optional path "
     "argument); -1 picks the fastest supported one."},
    {"available_kernels", py_available_kernels, METH_NOARGS,
     "Names of the CPU paths this machine can run, slowest first (ids are the positions in "
     "('portable', 'popcnt', 'avx512-vpopcntdq'))."},
    {"popcounts", py_popcounts, METH_VARARGS,
     "popcounts(filters, out, kernel): out[i] = number of set bits of filters[i]."},
    {"scan", py_scan, METH_VARARGS,
     "scan(...) -> (count, next_block, next_query): thresholded Dice, resumable."},
    {"pairs", py_pairs, METH_VARARGS,
     "pairs(left, left_popcounts, right, right_popcounts, left_idx, right_idx, start, stop, "
     "out, kernel): Dice of explicit pairs."},
    {"diffuse", py_diffuse, METH_VARARGS,
     "diffuse(filters, table, out): out bit j = XOR of the input bits table[j, :]."},
    {"blip_mask", py_blip_mask, METH_VARARGS,
     "blip_mask(seeds, threshold, out): keyed BLIP flip mask from one seed per row."},
    {"hmac_words", py_hmac_words, METH_VARARGS,
     "hmac_words(key, data, offsets, blocks, counter, out): out[i, 8b:8b+8] = the "
     "little-endian uint32 words of HMAC-SHA256(key, bytes([b]) + message i) with counter, "
     "of HMAC-SHA256(key, message i) without (then blocks = 1); message i = "
     "data[offsets[i]:offsets[i+1]]."},
    {"token_filters", py_token_filters, METH_VARARGS,
     "token_filters(key, prefixes, prefix_offsets, tokens, token_offsets, value_tokens, "
     "combo_value, combo_prefix, hashes, bits, out[, path]): out[c] = the Bloom filter of "
     "the tokens of value combo_value[c], each prefixed with prefix combo_prefix[c], under "
     "key (the positions of token_positions)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_dicekernel",
    "Compiled kernels of Jigsaw: Dice popcounts, hardening loops, HMAC token hashing "
    "(callers use linkage.kernel).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__dicekernel(void) {
    dice_detect_cpu();
    return PyModule_Create(&module);
}
