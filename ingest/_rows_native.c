/*
 * ingest._rows_native: the inner loop of ingest.rows._map_array in C.
 *
 * Why: every attribute of every span is stored in a Map(String, String), so
 * the pipeline flattens ~20 (key, value) pairs a span into Arrow's keys,
 * values and offsets, turning each non-text value into its text. In Python
 * that loop was the largest single cost of building the spans table.
 *
 * flatten_maps(maps, to_text) -> (offsets, keys, values), where for each dict
 * in maps its keys are appended as they are and its values as text:
 *   str -> itself; True/False -> "true"/"false"; int -> str(int);
 *   float -> repr(float); anything else (bytes, lists, dicts, None,
 *   subclasses) -> to_text(value), which must return a str.
 * That is exactly ingest.rows' Python path (tests/test_rows_native.py checks
 * the two agree), which stays the fallback where no compiler built this.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *text_true, *text_false;

static PyObject *value_text(PyObject *value, PyObject *to_text) {
    if (PyUnicode_CheckExact(value)) {
        Py_INCREF(value);
        return value;
    }
    if (value == Py_True) {
        Py_INCREF(text_true);
        return text_true;
    }
    if (value == Py_False) {
        Py_INCREF(text_false);
        return text_false;
    }
    if (PyLong_CheckExact(value) || PyFloat_CheckExact(value)) return PyObject_Repr(value);
    PyObject *text = PyObject_CallOneArg(to_text, value);
    if (text != NULL && !PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "to_text returned %.80s, not str", Py_TYPE(text)->tp_name);
        Py_CLEAR(text);
    }
    return text;
}

static int append_new(PyObject *list, PyObject *item) {
    if (item == NULL) return -1;
    int failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed;
}

static PyObject *flatten_maps(PyObject *self, PyObject *args) {
    PyObject *maps, *to_text;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &maps, &to_text)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(maps);
    PyObject *offsets = PyList_New(n + 1), *keys = PyList_New(0), *values = PyList_New(0);
    if (offsets == NULL || keys == NULL || values == NULL) goto fail;
    PyList_SET_ITEM(offsets, 0, PyLong_FromLong(0));
    /* The same dict again (a resource shared by its spans): reuse its texts. */
    PyObject *previous = NULL;
    Py_ssize_t previous_start = 0, previous_end = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *mapping = PyList_GET_ITEM(maps, i);
        if (!PyDict_Check(mapping)) {
            PyErr_Format(PyExc_TypeError, "maps[%zd] is %.80s, not dict", i,
                         Py_TYPE(mapping)->tp_name);
            goto fail;
        }
        Py_ssize_t start = PyList_GET_SIZE(keys);
        if (mapping == previous) {
            for (Py_ssize_t j = previous_start; j < previous_end; j++) {
                if (PyList_Append(keys, PyList_GET_ITEM(keys, j)) < 0 ||
                    PyList_Append(values, PyList_GET_ITEM(values, j)) < 0)
                    goto fail;
            }
        } else {
            Py_ssize_t pos = 0;
            PyObject *key, *value;
            while (PyDict_Next(mapping, &pos, &key, &value)) {
                if (PyList_Append(keys, key) < 0 ||
                    append_new(values, value_text(value, to_text)) < 0)
                    goto fail;
            }
        }
        previous = mapping;
        previous_start = start;
        previous_end = PyList_GET_SIZE(keys);
        PyObject *offset = PyLong_FromSsize_t(previous_end);
        if (offset == NULL) goto fail;
        PyList_SET_ITEM(offsets, i + 1, offset);
    }
    return Py_BuildValue("(NNN)", offsets, keys, values);
fail:
    Py_XDECREF(offsets);
    Py_XDECREF(keys);
    Py_XDECREF(values);
    return NULL;
}

static PyMethodDef methods[] = {
    {"flatten_maps", flatten_maps, METH_VARARGS,
     "flatten_maps(maps, to_text) -> (offsets, keys, values): dicts flattened for an "
     "Arrow MapArray, values as text."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rows_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__rows_native(void) {
    text_true = PyUnicode_InternFromString("true");
    text_false = PyUnicode_InternFromString("false");
    if (text_true == NULL || text_false == NULL) return NULL;
    return PyModule_Create(&module);
}
