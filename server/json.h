/* Small helpers over jansson: strict reading of request bodies (field by
 * field, with a reason that names the field) and writing of the value kinds
 * the shim emits (64-bit ids, cluster timestamps). */
#ifndef TN_JSON_H_
#define TN_JSON_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Outcome of a jsonGet*() call. A JSON null counts as absent. */
enum json_get {
    JSON_GET_OK = 0,
    JSON_GET_ABSENT,
    JSON_GET_TYPE,  /* wrong JSON type: malformed request (400) */
    JSON_GET_RANGE, /* right type, value out of range (422) */
};

/* The first key of @obj not in the NULL-terminated list @allowed, or NULL
 * when every key is allowed. */
const char *jsonUnknownKey(const json_t *obj, const char *const *allowed);

/* An integer field within [min, max]. */
enum json_get jsonGetU32(const json_t *obj,
                         const char *key,
                         uint32_t min,
                         uint32_t max,
                         uint32_t *out);

/* A 64-bit id within [min, max]: a JSON integer, or a string of decimal
 * digits (for ids beyond 2^53 that JavaScript cannot hold). */
enum json_get jsonGetU64(const json_t *obj,
                         const char *key,
                         uint64_t min,
                         uint64_t max,
                         uint64_t *out);

/* A string field of @min..@max bytes; *out is borrowed from @obj. */
enum json_get jsonGetString(const json_t *obj,
                            const char *key,
                            size_t min,
                            size_t max,
                            const char **out);

/* Set @key to @v as a JSON integer, or as a decimal string when @v does not
 * fit in a json_int_t. Returns 0 or -1 (out of memory). */
int jsonSetU64(json_t *obj, const char *key, uint64_t v);

/* Set @key to a C string (copied); NULL sets null. Returns 0 or -1. */
int jsonSetStr(json_t *obj, const char *key, const char *s);

/* Format @ms (milliseconds since the Unix epoch, UTC) as RFC 3339 with
 * milliseconds, "2026-01-02T03:04:05.678Z", into @buf (>= 32 bytes). */
void jsonFormatTimeMs(uint64_t ms, char *buf, size_t size);

/* Set @key to the RFC 3339 form of @ms, and "<key>_ms" to @ms itself. A zero
 * @ms sets both to null. Returns 0 or -1. */
int jsonSetTimeMs(json_t *obj, const char *key, uint64_t ms);

/* Serialize compactly (no indentation, keys in insertion order). Returns a
 * malloc'd buffer or NULL; *len is set without the terminator. */
char *jsonDump(const json_t *v, size_t *len);

#endif /* TN_JSON_H_ */
