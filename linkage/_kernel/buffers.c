/*
 * buffers.c: argument checking shared by every entry point of linkage._dicekernel.
 *
 * Contract: acquire() hands a loop a buffer only when it is C-contiguous, of the expected
 * item type (native byte order; '<' accepted on little-endian machines), number of
 * dimensions and writability, and names the argument in the TypeError or ValueError it
 * raises otherwise.  Messages state shapes and formats, never buffer contents (the buffers
 * hold encodings of identifiers).
 */
#include "kernel.h"

static const char *kind_label(buffer_kind kind) {
    switch (kind) {
    case KIND_U64:
        return "uint64";
    case KIND_U32:
        return "uint32";
    case KIND_I64:
        return "int64";
    default:
        return "float64";
    }
}

static int format_matches(const char *format, buffer_kind kind, Py_ssize_t itemsize) {
    if (format == NULL) {
        format = "B";
    }
    if (format[0] == '@' || format[0] == '=') {
        format++;
    } else if (format[0] == '<') {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        format++;
#else
        return 0;
#endif
    }
    if (format[0] == '\0' || format[1] != '\0') {
        return 0;
    }
    switch (kind) {
    case KIND_U64:
        return itemsize == 8 && (format[0] == 'Q' || format[0] == 'L');
    case KIND_U32:
        return itemsize == 4 && (format[0] == 'I' || format[0] == 'L');
    case KIND_I64:
        return itemsize == 8 && (format[0] == 'q' || format[0] == 'l');
    default:
        return itemsize == 8 && format[0] == 'd';
    }
}

/*
 * Acquire a C-contiguous buffer of the given kind and number of dimensions.
 * On failure sets TypeError (not a buffer) or ValueError (wrong format, shape or layout),
 * naming the argument, and returns 0 with nothing held.
 */
int acquire(PyObject *object, Py_buffer *view, const char *name, buffer_kind kind, int ndim,
            int writable) {
    if (!PyObject_CheckBuffer(object)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a %s buffer, got %s", name, kind_label(kind),
                     Py_TYPE(object)->tp_name);
        return 0;
    }
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s: expected a C-contiguous%s %s buffer", name,
                     writable ? " writable" : "", kind_label(kind));
        return 0;
    }
    if (!format_matches(view->format, kind, view->itemsize)) {
        PyErr_Format(PyExc_ValueError, "%s: expected %s items, got format '%s'", name,
                     kind_label(kind), view->format ? view->format : "B");
        PyBuffer_Release(view);
        return 0;
    }
    if (view->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d dimension(s), got %d", name, ndim,
                     view->ndim);
        PyBuffer_Release(view);
        return 0;
    }
    if (ndim == 2 && view->shape[1] < 1) {
        PyErr_Format(PyExc_ValueError, "%s: expected at least one 64-bit word per filter",
                     name);
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

void release_all(Py_buffer *views, int count) {
    for (int i = 0; i < count; i++) {
        PyBuffer_Release(&views[i]);
    }
}

int offsets_valid(const int64_t *offsets, Py_ssize_t count, Py_ssize_t length) {
    if (count < 0) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (offsets[i] < 0 || offsets[i] > offsets[i + 1] || offsets[i + 1] > length) {
            return 0;
        }
    }
    return 1;
}
