/*
 * ingest._otlp_native: protobuf ExportTraceServiceRequest bytes -> the span
 * records of ingest.otlp.decode_protobuf, built straight from the wire.
 *
 * Why: through upb, every attribute costs a KeyValue wrapper, an AnyValue
 * wrapper and two field reads before Python sees a string; decoding was the
 * largest share of the collector's CPU. Here each attribute costs two
 * strings and a dict insert.
 *
 * Scope: the canonical encoding every OTLP exporter writes. Anything else
 * (a singular field given twice, a field this file does not know, a wire
 * type that does not match the schema, bad UTF-8, truncation, nesting deeper
 * than MAX_DEPTH) makes decode() return None, and the caller decodes the body
 * with upb, which either accepts it or raises the canonical error. So this
 * module never accepts what upb rejects, and where it answers, it answers
 * what the upb path answers (tests/test_otlp_native.py checks both ways).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 32 /* AnyValue nesting; upb's own limit (100) is never reached first */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Buf;

/* Interned record keys and the enum names handed in by the caller. */
static PyObject *k_trace_id, *k_span_id, *k_parent_span_id, *k_name, *k_kind, *k_start_ns,
    *k_end_ns, *k_status, *k_status_message, *k_attributes, *k_resource, *k_events,
    *k_scope_name, *k_time_ns;

/* ------------------------------------------------------------ wire reading */

static int read_varint(Buf *b, uint64_t *out) {
    uint64_t value = 0;
    for (int shift = 0; shift < 70 && b->p < b->end; shift += 7) {
        uint8_t byte = *b->p++;
        value |= (uint64_t)(byte & 0x7f) << shift; /* bits past 64 dropped, as upb does */
        if (!(byte & 0x80)) {
            *out = value;
            return 0;
        }
    }
    return -1; /* truncated, or longer than 10 bytes */
}

/* Next field: its number, wire type, and for wire type 2 its bytes. */
typedef struct {
    uint32_t number;
    int wire_type;
    uint64_t varint; /* wire types 0, 1 (raw 64 bits) and 5 (raw 32 bits) */
    Buf bytes;       /* wire type 2 */
} Field;

enum { VARINT = 0, FIXED64 = 1, LEN = 2, FIXED32 = 5 };

static int next_field(Buf *b, Field *f) {
    uint64_t tag;
    if (read_varint(b, &tag) < 0 || tag > UINT32_MAX || (tag >> 3) == 0) return -1;
    f->number = (uint32_t)(tag >> 3);
    f->wire_type = (int)(tag & 7);
    switch (f->wire_type) {
    case VARINT:
        return read_varint(b, &f->varint);
    case FIXED64:
        if (b->end - b->p < 8) return -1;
        memcpy(&f->varint, b->p, 8);
        b->p += 8;
        return 0;
    case FIXED32: {
        uint32_t v;
        if (b->end - b->p < 4) return -1;
        memcpy(&v, b->p, 4);
        f->varint = v;
        b->p += 4;
        return 0;
    }
    case LEN: {
        uint64_t n;
        if (read_varint(b, &n) < 0 || n > (uint64_t)(b->end - b->p)) return -1;
        f->bytes.p = b->p;
        f->bytes.end = b->p + n;
        b->p += n;
        return 0;
    }
    default:
        return -1; /* groups (3, 4) and invalid types (6, 7) */
    }
}

/* A singular field may appear once: `seen` holds one bit per field number. */
static int first_time(uint32_t *seen, uint32_t number) {
    uint32_t bit = 1u << number; /* numbers here are < 32 */
    if (*seen & bit) return 0;
    *seen |= bit;
    return 1;
}

static PyObject *utf8(Buf s) {
    if (s.p == s.end) return PyUnicode_New(0, 0); /* absent or empty: "" */
    return PyUnicode_DecodeUTF8((const char *)s.p, s.end - s.p, NULL);
}

/* Attribute keys repeat in every span (the same twenty names), and so do many
 * short values (provider, model, team, route). A small direct-mapped cache per
 * kind hands back the str made for the same bytes last time: no allocation, a
 * hash Python already computed, and, for keys, an interned object, so the
 * pipeline's lookups with literal keys match by identity. ASCII only (the
 * slot is compared as bytes); a slot is simply replaced on a miss, so unique
 * values (ids, content) cost one hash and compare each. */
#define CACHE_SLOTS 4096 /* a power of two */
#define KEY_MAX_LEN 128
#define VALUE_MAX_LEN 48
static PyObject *key_cache[CACHE_SLOTS], *value_cache[CACHE_SLOTS];

static PyObject *cached_utf8(Buf s, PyObject **cache, Py_ssize_t max_len, int intern) {
    Py_ssize_t n = s.end - s.p;
    if (n == 0 || n > max_len) return utf8(s);
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const uint8_t *p = s.p; p < s.end; p++) h = (h ^ *p) * 16777619u;
    PyObject **slot = &cache[h & (CACHE_SLOTS - 1)];
    PyObject *hit = *slot;
    if (hit != NULL && PyUnicode_GET_LENGTH(hit) == n && PyUnicode_IS_ASCII(hit) &&
        memcmp(PyUnicode_1BYTE_DATA(hit), s.p, n) == 0) {
        Py_INCREF(hit);
        return hit;
    }
    PyObject *text = utf8(s);
    if (text == NULL || !PyUnicode_IS_ASCII(text)) return text;
    if (intern) PyUnicode_InternInPlace(&text);
    (void)PyObject_Hash(text); /* computed once, kept on the object */
    Py_INCREF(text);
    Py_XSETREF(*slot, text);
    return text;
}

/* Check a string field we do not keep: upb rejects bad UTF-8 anywhere. */
static int valid_utf8(Buf s) {
    if (s.p == s.end) return 0;
    PyObject *text = utf8(s);
    if (text == NULL) return -1;
    Py_DECREF(text);
    return 0;
}

static PyObject *hex(Buf s) {
    static const char digits[] = "0123456789abcdef";
    Py_ssize_t n = s.end - s.p;
    PyObject *out = PyUnicode_New(2 * n, 127);
    if (out == NULL) return NULL;
    Py_UCS1 *dst = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        dst[2 * i] = digits[s.p[i] >> 4];
        dst[2 * i + 1] = digits[s.p[i] & 15];
    }
    return out;
}

static int all_zero(Buf s) {
    for (const uint8_t *p = s.p; p < s.end; p++)
        if (*p) return 0;
    return 1;
}

/* ------------------------------------------------------- values and maps */

static int decode_kv_into(Buf b, PyObject *dict, int depth);

static PyObject *decode_any(Buf b, int depth) {
    if (depth > MAX_DEPTH) return NULL;
    Field f, member;
    int members = 0;
    while (b.p < b.end) {
        if (next_field(&b, &f) < 0) return NULL;
        static const int wire_types[8] = {-1, LEN, VARINT, VARINT, FIXED64, LEN, LEN, LEN};
        if (f.number > 7 || f.wire_type != wire_types[f.number]) return NULL;
        if (++members > 1) return NULL; /* one member of the oneof, once */
        member = f;
    }
    if (members == 0) Py_RETURN_NONE;
    switch (member.number) {
    case 1:
        return cached_utf8(member.bytes, value_cache, VALUE_MAX_LEN, 0);
    case 2:
        return PyBool_FromLong(member.varint != 0);
    case 3:
        return PyLong_FromLongLong((long long)(int64_t)member.varint);
    case 4: {
        double d;
        memcpy(&d, &member.varint, 8);
        return PyFloat_FromDouble(d);
    }
    case 5: { /* ArrayValue { repeated AnyValue values = 1; } */
        PyObject *list = PyList_New(0);
        if (list == NULL) return NULL;
        Buf items = member.bytes;
        while (items.p < items.end) {
            PyObject *item;
            if (next_field(&items, &f) < 0 || f.number != 1 || f.wire_type != LEN ||
                (item = decode_any(f.bytes, depth + 1)) == NULL) {
                Py_DECREF(list);
                return NULL;
            }
            int failed = PyList_Append(list, item);
            Py_DECREF(item);
            if (failed) {
                Py_DECREF(list);
                return NULL;
            }
        }
        return list;
    }
    case 6: { /* KeyValueList { repeated KeyValue values = 1; } */
        PyObject *dict = PyDict_New();
        if (dict == NULL) return NULL;
        Buf items = member.bytes;
        while (items.p < items.end) {
            if (next_field(&items, &f) < 0 || f.number != 1 || f.wire_type != LEN ||
                decode_kv_into(f.bytes, dict, depth + 1) < 0) {
                Py_DECREF(dict);
                return NULL;
            }
        }
        return dict;
    }
    default: /* 7 */
        return PyBytes_FromStringAndSize((const char *)member.bytes.p,
                                         member.bytes.end - member.bytes.p);
    }
}

/* KeyValue { string key = 1; AnyValue value = 2; } -> dict[key] = value */
static int decode_kv_into(Buf b, PyObject *dict, int depth) {
    Field f;
    Buf key = {NULL, NULL}, value = {NULL, NULL};
    uint32_t seen = 0;
    while (b.p < b.end) {
        if (next_field(&b, &f) < 0 || f.wire_type != LEN || f.number > 2 ||
            !first_time(&seen, f.number))
            return -1;
        if (f.number == 1)
            key = f.bytes;
        else
            value = f.bytes;
    }
    PyObject *k = cached_utf8(key, key_cache, KEY_MAX_LEN, 1);
    if (k == NULL) return -1;
    PyObject *v = (seen & (1u << 2)) ? decode_any(value, depth) : (Py_INCREF(Py_None), Py_None);
    if (v == NULL) {
        Py_DECREF(k);
        return -1;
    }
    int failed = PyDict_SetItem(dict, k, v);
    Py_DECREF(k);
    Py_DECREF(v);
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------ the messages */

/* Resource { repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; } */
static PyObject *decode_resource(Buf b) {
    PyObject *attributes = PyDict_New();
    if (attributes == NULL) return NULL;
    Field f;
    uint32_t seen = 0;
    while (b.p < b.end) {
        if (next_field(&b, &f) < 0) goto fail;
        if (f.number == 1 && f.wire_type == LEN) {
            if (decode_kv_into(f.bytes, attributes, 0) < 0) goto fail;
        } else if (!(f.number == 2 && f.wire_type == VARINT && first_time(&seen, 2))) {
            goto fail;
        }
    }
    return attributes;
fail:
    Py_DECREF(attributes);
    return NULL;
}

/* InstrumentationScope -> its name; version and attributes are checked, not kept. */
static PyObject *decode_scope_name(Buf b) {
    Field f;
    Buf name = {NULL, NULL};
    uint32_t seen = 0;
    while (b.p < b.end) {
        if (next_field(&b, &f) < 0) return NULL;
        if (f.number == 3 && f.wire_type == LEN) {
            PyObject *ignored = PyDict_New();
            if (ignored == NULL) return NULL;
            int failed = decode_kv_into(f.bytes, ignored, 0);
            Py_DECREF(ignored);
            if (failed) return NULL;
            continue;
        }
        static const int wire_types[5] = {-1, LEN, LEN, -1, VARINT};
        if (f.number > 4 || f.wire_type != wire_types[f.number] || !first_time(&seen, f.number))
            return NULL;
        if (f.number == 1) name = f.bytes;
        if (f.number == 2 && valid_utf8(f.bytes) < 0) return NULL;
    }
    return utf8(name);
}

/* Span.Link: nothing is kept, but upb checks it, so do we. */
static int check_link(Buf b) {
    Field f;
    uint32_t seen = 0;
    while (b.p < b.end) {
        if (next_field(&b, &f) < 0) return -1;
        if (f.number == 4 && f.wire_type == LEN) {
            PyObject *ignored = PyDict_New();
            if (ignored == NULL) return -1;
            int failed = decode_kv_into(f.bytes, ignored, 0);
            Py_DECREF(ignored);
            if (failed) return -1;
            continue;
        }
        static const int wire_types[7] = {-1, LEN, LEN, LEN, -1, VARINT, FIXED32};
        if (f.number > 6 || f.wire_type != wire_types[f.number] || !first_time(&seen, f.number))
            return -1;
        if (f.number == 3 && valid_utf8(f.bytes) < 0) return -1;
    }
    return 0;
}

/* Span.Event -> {"name", "time_ns", "attributes"} */
static PyObject *decode_event(Buf b) {
    PyObject *attributes = PyDict_New();
    if (attributes == NULL) return NULL;
    Field f;
    Buf name = {NULL, NULL};
    uint64_t time_ns = 0;
    uint32_t seen = 0;
    while (b.p < b.end) {
        if (next_field(&b, &f) < 0) goto fail;
        if (f.number == 3 && f.wire_type == LEN) {
            if (decode_kv_into(f.bytes, attributes, 0) < 0) goto fail;
            continue;
        }
        static const int wire_types[5] = {-1, FIXED64, LEN, -1, VARINT};
        if (f.number > 4 || f.wire_type != wire_types[f.number] || !first_time(&seen, f.number))
            goto fail;
        if (f.number == 1) time_ns = f.varint;
        if (f.number == 2) name = f.bytes;
    }
    PyObject *event = Py_BuildValue("{sNsKsO}", "name", utf8(name), "time_ns",
                                    (unsigned long long)time_ns, "attributes", attributes);
    Py_DECREF(attributes);
    return event;
fail:
    Py_DECREF(attributes);
    return NULL;
}

/* Status { string message = 2; StatusCode code = 3; } */
static int decode_status(Buf b, Buf *message, int32_t *code) {
    Field f;
    uint32_t seen = 0;
    while (b.p < b.end) {
        if (next_field(&b, &f) < 0 || !first_time(&seen, f.number & 31)) return -1;
        if (f.number == 2 && f.wire_type == LEN)
            *message = f.bytes;
        else if (f.number == 3 && f.wire_type == VARINT)
            *code = (int32_t)f.varint; /* enums are int32 on the wire */
        else
            return -1;
    }
    return 0;
}

typedef struct {
    PyObject *spans;     /* list of span records */
    Py_ssize_t rejected; /* spans dropped for bad ids */
    int reasons[3];      /* rejection codes in first-seen order, -1 = none */
    PyObject *kinds;     /* tuple of 6 names; [0] is the default */
    PyObject *statuses;  /* tuple of 3 names; [0] is the default */
} Ctx;

static void note_rejection(Ctx *ctx, int code) {
    ctx->rejected++;
    for (int i = 0; i < 3; i++) {
        if (ctx->reasons[i] == code) return;
        if (ctx->reasons[i] < 0) {
            ctx->reasons[i] = code;
            return;
        }
    }
}

static PyObject *enum_name(PyObject *names, int32_t value) {
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    PyObject *name = PyTuple_GET_ITEM(names, (value >= 0 && value < n) ? value : 0);
    Py_INCREF(name);
    return name;
}

/* One Span: appended to ctx->spans, or counted as rejected. */
static int decode_span(Buf b, Ctx *ctx, PyObject *resource, PyObject *scope_name) {
    static const int wire_types[17] = {-1,  LEN,     LEN, LEN,    LEN, LEN,    VARINT,
                                       FIXED64, FIXED64, LEN, VARINT, LEN, VARINT, LEN,
                                       VARINT, LEN, FIXED32};
    Buf trace_id = {NULL, NULL}, span_id = {NULL, NULL}, parent = {NULL, NULL};
    Buf name = {NULL, NULL}, status_message = {NULL, NULL};
    uint64_t start_ns = 0, end_ns = 0;
    int32_t kind = 0, status_code = 0;
    uint32_t seen = 0;
    PyObject *attributes = PyDict_New(), *events = PyList_New(0);
    if (attributes == NULL || events == NULL) goto fail;
    Field f;
    while (b.p < b.end) {
        if (next_field(&b, &f) < 0 || f.number > 16 || f.wire_type != wire_types[f.number])
            goto fail;
        switch (f.number) {
        case 9:
            if (decode_kv_into(f.bytes, attributes, 0) < 0) goto fail;
            continue;
        case 11: {
            PyObject *event = decode_event(f.bytes);
            if (event == NULL) goto fail;
            int failed = PyList_Append(events, event);
            Py_DECREF(event);
            if (failed) goto fail;
            continue;
        }
        case 13:
            if (check_link(f.bytes) < 0) goto fail;
            continue;
        }
        if (!first_time(&seen, f.number)) goto fail;
        switch (f.number) {
        case 1: trace_id = f.bytes; break;
        case 2: span_id = f.bytes; break;
        case 3: if (valid_utf8(f.bytes) < 0) goto fail; break;
        case 4: parent = f.bytes; break;
        case 5: name = f.bytes; break;
        case 6: kind = (int32_t)f.varint; break;
        case 7: start_ns = f.varint; break;
        case 8: end_ns = f.varint; break;
        case 15: if (decode_status(f.bytes, &status_message, &status_code) < 0) goto fail; break;
        }
    }
    Py_ssize_t trace_len = trace_id.end - trace_id.p, span_len = span_id.end - span_id.p;
    Py_ssize_t parent_len = parent.end - parent.p;
    int reason = -1;
    if (trace_len != 16 || all_zero(trace_id))
        reason = 0;
    else if (span_len != 8 || all_zero(span_id))
        reason = 1;
    else if (parent_len != 0 && parent_len != 8)
        reason = 2;
    if (reason >= 0) {
        /* The name and status text are still checked: upb reads every field. */
        if (valid_utf8(name) < 0 || valid_utf8(status_message) < 0) goto fail;
        note_rejection(ctx, reason);
        Py_DECREF(attributes);
        Py_DECREF(events);
        return 0;
    }
    PyObject *record = PyDict_New();
    if (record == NULL) goto fail;
    /* Same keys, same order as ingest.otlp.decode_protobuf's records. */
    PyObject *keys[13] = {k_trace_id, k_span_id, k_parent_span_id, k_name, k_kind,
                          k_start_ns, k_end_ns, k_status, k_status_message, k_attributes,
                          k_resource, k_events, k_scope_name};
    PyObject *values[13] = {hex(trace_id),
                            hex(span_id),
                            hex(parent),
                            cached_utf8(name, value_cache, VALUE_MAX_LEN, 0),
                            enum_name(ctx->kinds, kind),
                            PyLong_FromUnsignedLongLong(start_ns),
                            PyLong_FromUnsignedLongLong(end_ns),
                            enum_name(ctx->statuses, status_code),
                            utf8(status_message),
                            attributes,
                            resource,
                            events,
                            scope_name};
    Py_INCREF(resource);
    Py_INCREF(scope_name);
    attributes = events = NULL; /* owned by values[] now */
    int failed = 0;
    for (int i = 0; i < 13; i++) {
        if (values[i] == NULL || (!failed && PyDict_SetItem(record, keys[i], values[i]) < 0))
            failed = 1;
        Py_XDECREF(values[i]);
    }
    if (failed || PyList_Append(ctx->spans, record) < 0) {
        Py_DECREF(record);
        return -1;
    }
    Py_DECREF(record);
    return 0;
fail:
    Py_XDECREF(attributes);
    Py_XDECREF(events);
    return -1;
}

/* ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
 * Two passes: the scope may follow its spans on the wire. */
static int decode_scope_spans(Buf b, Ctx *ctx, PyObject *resource) {
    Field f;
    Buf scope = {NULL, NULL};
    uint32_t seen = 0;
    for (Buf scan = b; scan.p < scan.end;) {
        if (next_field(&scan, &f) < 0 || f.wire_type != LEN || f.number > 3) return -1;
        if (f.number == 2) continue;
        if (!first_time(&seen, f.number)) return -1;
        if (f.number == 1) scope = f.bytes;
        if (f.number == 3 && valid_utf8(f.bytes) < 0) return -1;
    }
    PyObject *scope_name = decode_scope_name(scope);
    if (scope_name == NULL) return -1;
    int failed = 0;
    while (!failed && b.p < b.end) {
        failed = next_field(&b, &f) < 0 ||
                 (f.number == 2 && decode_span(f.bytes, ctx, resource, scope_name) < 0);
    }
    Py_DECREF(scope_name);
    return failed ? -1 : 0;
}

/* ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; string schema_url = 3; } */
static int decode_resource_spans(Buf b, Ctx *ctx) {
    Field f;
    Buf resource_bytes = {NULL, NULL};
    uint32_t seen = 0;
    for (Buf scan = b; scan.p < scan.end;) {
        if (next_field(&scan, &f) < 0 || f.wire_type != LEN || f.number > 3) return -1;
        if (f.number == 2) continue;
        if (!first_time(&seen, f.number)) return -1;
        if (f.number == 1) resource_bytes = f.bytes;
        if (f.number == 3 && valid_utf8(f.bytes) < 0) return -1;
    }
    /* One dict for every span of this resource, as the upb path shares it. */
    PyObject *resource = decode_resource(resource_bytes);
    if (resource == NULL) return -1;
    int failed = 0;
    while (!failed && b.p < b.end) {
        failed = next_field(&b, &f) < 0 ||
                 (f.number == 2 && decode_scope_spans(f.bytes, ctx, resource) < 0);
    }
    Py_DECREF(resource);
    return failed ? -1 : 0;
}

/* decode(body, kinds, statuses) -> (spans, rejected, [reason codes]) or None */
static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer body;
    Ctx ctx = {NULL, 0, {-1, -1, -1}, NULL, NULL};
    if (!PyArg_ParseTuple(args, "y*O!O!", &body, &PyTuple_Type, &ctx.kinds, &PyTuple_Type,
                          &ctx.statuses))
        return NULL;
    if (PyTuple_GET_SIZE(ctx.kinds) == 0 || PyTuple_GET_SIZE(ctx.statuses) == 0) {
        PyBuffer_Release(&body);
        PyErr_SetString(PyExc_ValueError, "kinds and statuses must not be empty");
        return NULL;
    }
    ctx.spans = PyList_New(0);
    if (ctx.spans == NULL) {
        PyBuffer_Release(&body);
        return NULL;
    }
    Buf b = {(const uint8_t *)body.buf, (const uint8_t *)body.buf + body.len};
    int failed = 0;
    Field f;
    while (!failed && b.p < b.end) {
        failed = next_field(&b, &f) < 0 || f.number != 1 || f.wire_type != LEN ||
                 decode_resource_spans(f.bytes, &ctx) < 0;
    }
    PyBuffer_Release(&body);
    if (failed) {
        /* Not the canonical encoding (or not valid at all): upb decides. */
        PyErr_Clear();
        Py_DECREF(ctx.spans);
        Py_RETURN_NONE;
    }
    PyObject *reasons = PyList_New(0);
    for (int i = 0; reasons != NULL && i < 3 && ctx.reasons[i] >= 0; i++) {
        PyObject *code = PyLong_FromLong(ctx.reasons[i]);
        if (code == NULL || PyList_Append(reasons, code) < 0) Py_CLEAR(reasons);
        Py_XDECREF(code);
    }
    if (reasons == NULL) {
        Py_DECREF(ctx.spans);
        return NULL;
    }
    return Py_BuildValue("(NnN)", ctx.spans, ctx.rejected, reasons);
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(body, kinds, statuses) -> (spans, rejected, reason codes), or None when the "
     "body is not in the canonical encoding (decode it with upb then)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otlp_native", NULL, -1, methods};

static int intern(PyObject **slot, const char *text) {
    *slot = PyUnicode_InternFromString(text);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__otlp_native(void) {
#if PY_BIG_ENDIAN
    /* Fixed-width fields are copied as little-endian bytes. */
    PyErr_SetString(PyExc_ImportError, "_otlp_native supports little-endian machines only");
    return NULL;
#endif
    if (intern(&k_trace_id, "trace_id") || intern(&k_span_id, "span_id") ||
        intern(&k_parent_span_id, "parent_span_id") || intern(&k_name, "name") ||
        intern(&k_kind, "kind") || intern(&k_start_ns, "start_ns") ||
        intern(&k_end_ns, "end_ns") || intern(&k_status, "status") ||
        intern(&k_status_message, "status_message") || intern(&k_attributes, "attributes") ||
        intern(&k_resource, "resource") || intern(&k_events, "events") ||
        intern(&k_scope_name, "scope_name") || intern(&k_time_ns, "time_ns"))
        return NULL;
    return PyModule_Create(&module);
}
