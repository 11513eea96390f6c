/* Small helpers over jansson for the HTTP shim. */
#include "json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *jsonUnknownKey(const json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *value;

    /* json_object_foreach wants a non-const object; it does not modify. */
    json_object_foreach ((json_t *)obj, key, value) {
        const char *const *a;
        bool found = false;
        (void)value;
        for (a = allowed; *a != NULL; a++) {
            if (strcmp(*a, key) == 0) {
                found = true;
                break;
            }
        }
        if (!found) {
            return key;
        }
    }
    return NULL;
}

enum json_get jsonGetU32(const json_t *obj,
                         const char *key,
                         uint32_t min,
                         uint32_t max,
                         uint32_t *out)
{
    const json_t *v = json_object_get(obj, key);
    json_int_t i;

    if (v == NULL || json_is_null(v)) {
        return JSON_GET_ABSENT;
    }
    if (!json_is_integer(v)) {
        return JSON_GET_TYPE;
    }
    i = json_integer_value(v);
    if (i < (json_int_t)min || i > (json_int_t)max) {
        return JSON_GET_RANGE;
    }
    *out = (uint32_t)i;
    return JSON_GET_OK;
}

enum json_get jsonGetU64(const json_t *obj,
                         const char *key,
                         uint64_t min,
                         uint64_t max,
                         uint64_t *out)
{
    const json_t *v = json_object_get(obj, key);
    uint64_t x;

    if (v == NULL || json_is_null(v)) {
        return JSON_GET_ABSENT;
    }
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0) {
            return JSON_GET_RANGE;
        }
        x = (uint64_t)i;
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        size_t k;
        if (n == 0) {
            return JSON_GET_TYPE;
        }
        for (k = 0; k < n; k++) {
            if (s[k] < '0' || s[k] > '9') {
                return JSON_GET_TYPE;
            }
        }
        x = 0;
        for (k = 0; k < n; k++) {
            unsigned d = (unsigned)(s[k] - '0');
            if (x > (UINT64_MAX - d) / 10) {
                return JSON_GET_RANGE;
            }
            x = x * 10 + d;
        }
    } else {
        return JSON_GET_TYPE;
    }
    if (x < min || x > max) {
        return JSON_GET_RANGE;
    }
    *out = x;
    return JSON_GET_OK;
}

enum json_get jsonGetString(const json_t *obj,
                            const char *key,
                            size_t min,
                            size_t max,
                            const char **out)
{
    const json_t *v = json_object_get(obj, key);
    size_t n;

    if (v == NULL || json_is_null(v)) {
        return JSON_GET_ABSENT;
    }
    if (!json_is_string(v)) {
        return JSON_GET_TYPE;
    }
    n = json_string_length(v);
    if (n < min || n > max) {
        return JSON_GET_RANGE;
    }
    /* jansson strings may hold \u0000; callers want C strings. */
    if (strlen(json_string_value(v)) != n) {
        return JSON_GET_RANGE;
    }
    *out = json_string_value(v);
    return JSON_GET_OK;
}

int jsonSetU64(json_t *obj, const char *key, uint64_t v)
{
    json_t *j;

    if (v <= (uint64_t)INT64_MAX) {
        j = json_integer((json_int_t)v);
    } else {
        char buf[24];
        snprintf(buf, sizeof buf, "%" PRIu64, v);
        j = json_string(buf);
    }
    if (j == NULL) {
        return -1;
    }
    return json_object_set_new(obj, key, j);
}

int jsonSetStr(json_t *obj, const char *key, const char *s)
{
    json_t *j = s != NULL ? json_string(s) : json_null();
    if (j == NULL) {
        /* Not valid UTF-8 (cannot happen for strings we validated). */
        j = json_null();
    }
    return json_object_set_new(obj, key, j);
}

void jsonFormatTimeMs(uint64_t ms, char *buf, size_t size)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    char date[24];

    gmtime_r(&secs, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, size, "%s.%03uZ", date, (unsigned)(ms % 1000));
}

int jsonSetTimeMs(json_t *obj, const char *key, uint64_t ms)
{
    char name[64];
    char buf[40];
    int rv;

    snprintf(name, sizeof name, "%s_ms", key);
    if (ms == 0) {
        rv = json_object_set_new(obj, key, json_null());
        return rv != 0 ? rv : json_object_set_new(obj, name, json_null());
    }
    jsonFormatTimeMs(ms, buf, sizeof buf);
    rv = json_object_set_new(obj, key, json_string(buf));
    return rv != 0 ? rv : jsonSetU64(obj, name, ms);
}

char *jsonDump(const json_t *v, size_t *len)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (s != NULL) {
        *len = strlen(s);
    }
    return s;
}
